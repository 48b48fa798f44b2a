//! `Recommenders`: the service every transport calls. Definitions are catalog service documents
//! (kind `recommender`), so a restarted server loads them again; the live ones sit in one
//! immutable map behind an `ArcSwap`, so an apply swaps a recommender whole and a request
//! finishes on the one it started with.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use kairos_store::{FeatureStore, InsertAck, InsertOptions, StoreError};
use kairos_types::ingest::Format;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{DeployError, Result};
use crate::live::{Live, RecommendRequest, RecommendResponse};
use crate::spec::RecommenderSpec;

/// The catalog's service-document kind of recommenders.
pub const KIND: &str = "recommender";

/// A recommender as the API describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RecommenderStatus {
    pub spec: RecommenderSpec,
    /// The catalog document's version: one more at each apply of a changed definition.
    pub revision: u32,
    /// (name, version) of the models serving: user tower, item tower, ranker.
    #[schema(value_type = Vec<Object>)]
    pub models: Vec<(String, u32)>,
    /// The interactions log rows the history has folded in (in a log of one partition, the
    /// offset up to which it has).
    pub history_position: u64,
}

/// An interaction posted back: the interactions group's columns (the user and item at least;
/// the event time is now when left out).
pub type InteractionEvent = serde_json::Map<String, serde_json::Value>;

/// The live recommenders by name, each with its revision.
type LiveMap = HashMap<String, (u32, Arc<Live>)>;

#[derive(Clone)]
pub struct Recommenders {
    store: FeatureStore,
    live: Arc<ArcSwap<LiveMap>>,
    applying: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for Recommenders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recommenders")
            .field("live", &self.live.load().keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Recommenders {
    pub fn new(store: FeatureStore) -> Recommenders {
        Recommenders {
            store,
            live: Arc::new(ArcSwap::from_pointee(HashMap::new())),
            applying: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// Loads every recommender the catalog holds; one that cannot load is logged and left out.
    pub async fn start_all(&self) {
        // A follower's load of the same recommender waits, and then finds it served.
        let _one_at_a_time = self.applying.lock().await;
        let documents = match self.store.catalog().list_service_documents(KIND) {
            Ok(documents) => documents,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the recommenders");
                return;
            }
        };
        for (name, revision, body) in documents {
            let loaded = match serde_json::from_value::<RecommenderSpec>(body) {
                Ok(spec) => Live::load(&self.store, spec).await,
                Err(e) => Err(DeployError::Invalid(e.to_string())),
            };
            match loaded {
                Ok(live) => self.publish(name, revision, Some(live)).await,
                Err(e) => tracing::warn!(recommender = name, error = %e, "not loaded"),
            }
        }
    }

    /// Swaps `live` in (or takes the recommender out, when `None`); the one it replaces stops
    /// following the interactions log.
    async fn publish(&self, name: String, revision: u32, live: Option<Live>) {
        let mut map = HashMap::clone(&self.live.load());
        let replaced = match live {
            Some(live) => map.insert(name, (revision, Arc::new(live))),
            None => map.remove(&name),
        };
        self.live.store(Arc::new(map));
        if let Some((_, replaced)) = replaced {
            replaced.stop().await;
        }
    }

    /// Brings one recommender in line with the catalog after another replica (or process)
    /// applied or deleted it: loads the catalog's revision when this server serves another one
    /// or none, and takes it out when the catalog no longer has it.
    pub async fn follow(&self, name: &str) -> Result<()> {
        let _one_at_a_time = self.applying.lock().await;
        let recorded = self
            .store
            .catalog()
            .get_service_document(KIND, name, None)
            .map_err(StoreError::from)?;
        let serving = self.live.load().get(name).map(|(revision, _)| *revision);
        match recorded {
            None if serving.is_some() => self.publish(name.to_string(), 0, None).await,
            Some((revision, body)) if serving != Some(revision) => {
                let spec: RecommenderSpec = serde_json::from_value(body)
                    .map_err(|e| DeployError::Invalid(e.to_string()))?;
                let live = Live::load(&self.store, spec).await?;
                self.publish(name.to_string(), revision, Some(live)).await;
                tracing::info!(recommender = %name, revision, "recommender loaded: applied elsewhere");
            }
            _ => {}
        }
        Ok(())
    }

    /// Loads the recommender whole (models, groups, history) and only then records and swaps
    /// it in; a failure anywhere leaves the serving one as it was.
    pub async fn apply(&self, spec: RecommenderSpec) -> Result<RecommenderStatus> {
        spec.validate()?;
        let _one_at_a_time = self.applying.lock().await;
        let live = Live::load(&self.store, spec.clone()).await?;
        let body = serde_json::to_value(&spec).map_err(DeployError::internal)?;
        let revision = self
            .store
            .catalog()
            .put_service_document(KIND, &spec.name, &body)
            .map_err(StoreError::from)?;
        self.publish(spec.name.clone(), revision, Some(live)).await;
        self.status(&spec.name)
    }

    fn get(&self, name: &str) -> Result<(u32, Arc<Live>)> {
        self.live
            .load()
            .get(name)
            .cloned()
            .ok_or_else(|| DeployError::NotFound(format!("recommender '{name}' is not deployed")))
    }

    pub fn status(&self, name: &str) -> Result<RecommenderStatus> {
        let (revision, live) = self.get(name)?;
        Ok(RecommenderStatus {
            spec: live.spec.clone(),
            revision,
            models: live.models.clone(),
            history_position: live.history_position(),
        })
    }

    pub fn list(&self) -> Vec<RecommenderStatus> {
        let mut names: Vec<String> = self.live.load().keys().cloned().collect();
        names.sort();
        names.iter().filter_map(|n| self.status(n).ok()).collect()
    }

    pub async fn recommend(
        &self,
        name: &str,
        request: &RecommendRequest,
    ) -> Result<RecommendResponse> {
        let (_, live) = self.get(name)?;
        live.recommend(&self.store, request).await
    }

    /// Appends interactions to the recommender's interactions group, refused whole if any is
    /// bad; they take effect in its history once the log follower reads them.
    pub async fn interact(&self, name: &str, events: Vec<InteractionEvent>) -> Result<InsertAck> {
        let (_, live) = self.get(name)?;
        let group = &live.spec.interactions.group;
        let now = chrono::Utc::now().to_rfc3339();
        let mut body = String::new();
        for (row, mut event) in events.into_iter().enumerate() {
            for column in [&live.spec.interactions.user, &live.spec.interactions.item] {
                if !event.contains_key(column.as_str()) {
                    return Err(DeployError::BadRequest(format!(
                        "interaction {row}: '{column}' is missing"
                    )));
                }
            }
            event
                .entry(live.interactions_time.clone())
                .or_insert_with(|| now.clone().into());
            body.push_str(&serde_json::Value::Object(event).to_string());
            body.push('\n');
        }
        if body.is_empty() {
            return Err(DeployError::BadRequest("no interactions given".into()));
        }
        Ok(self
            .store
            .insert(
                group,
                None,
                Format::JsonLines,
                Bytes::from(body),
                InsertOptions::default(),
            )
            .await?)
    }

    /// Stops every recommender's log follower (each holds the store) and waits for them.
    pub async fn close(&self) {
        let live = self.live.swap(Arc::new(HashMap::new()));
        for (_, recommender) in live.values() {
            recommender.stop().await;
        }
    }
}
