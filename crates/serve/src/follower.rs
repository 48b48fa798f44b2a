//! The catalog follower: what another replica (or a CLI process on the same data dir) changes in
//! the catalog reaches this server's caches within [`FOLLOW_EVERY`] — API keys, feature groups,
//! views, deployments, recommenders, monitors' schedules (every replica schedules every
//! monitor, and the catalog's claims run each slot on one) and the pipelines whose partitions
//! replicas share (Kafka sources and HTTP streams on a Kafka log, with checkpoints in a
//! bucket; file sources run where they were started). It reads the catalog's change log (a
//! cheap indexed read) and hands each kind of change to its owner; every handler is
//! idempotent, so a change this server made itself, or one read twice after an error, changes
//! nothing. A follower that fell further behind than the catalog keeps changes for reloads
//! everything.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use kairos_catalog::Changes;
use kairos_catalog::kind;
use kairos_deploy::Deployments;
use kairos_monitor::Monitors;
use kairos_pipeline::Pipelines;
use kairos_recommend::Recommenders;
use kairos_store::FeatureStore;

use crate::access::Access;

/// How often the follower reads the catalog's change log.
pub const FOLLOW_EVERY: Duration = Duration::from_millis(500);

/// Changes the follower applied, by kind (`/metrics`).
pub(crate) const CHANGES: &str = "kairos_catalog_changes_followed_total";

pub(crate) struct Follower {
    pub(crate) access: Arc<Access>,
    pub(crate) store: FeatureStore,
    pub(crate) deployments: Arc<Deployments>,
    pub(crate) recommenders: Recommenders,
    pub(crate) monitors: Monitors,
    pub(crate) pipelines: Arc<Pipelines>,
}

impl Follower {
    /// Follows the change log until the task is dropped. The first pass goes over every change
    /// the catalog keeps — whatever happened between the store's opening and the services'
    /// loading is caught that way, at the cost of handlers finding nothing to do — and is not
    /// counted on `/metrics`.
    pub(crate) async fn run(self) {
        let mut tick = tokio::time::interval(FOLLOW_EVERY);
        let mut seen = 0;
        loop {
            tick.tick().await;
            seen = self.follow(seen, seen > 0).await;
        }
    }

    /// Applies the changes after `seen`; returns how far it got. On an error it stays where it
    /// was, to apply the same changes again next time.
    async fn follow(&self, seen: i64, count: bool) -> i64 {
        // The catalog's calls block (a PostgreSQL round trip): off the async workers.
        let store = self.store.clone();
        let read = tokio::task::spawn_blocking(move || store.catalog().changes_since(seen)).await;
        let changes = match read {
            Ok(Ok(changes)) => changes,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot read the catalog's changes");
                return seen;
            }
            Err(e) => {
                tracing::warn!(error = %e, "the catalog read stopped");
                return seen;
            }
        };
        match self.apply(&changes).await {
            Ok(()) => {
                for change in changes.changes.iter().filter(|_| count) {
                    metrics::counter!(CHANGES, "kind" => change.kind.clone()).increment(1);
                }
                changes.changes.last().map_or(seen, |last| last.seq)
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot follow the catalog's changes");
                seen
            }
        }
    }

    async fn apply(&self, changes: &Changes) -> Result<(), String> {
        let everything = !changes.complete;
        let changed = |k: &str| everything || changes.changes.iter().any(|c| c.kind == k);
        if changed(&kind::service(kairos_auth::KIND)) {
            let access = self.access.clone();
            tokio::task::spawn_blocking(move || access.reload_keys())
                .await
                .map_err(|e| e.to_string())??;
        }
        if changed(kind::FEATURE_GROUP) {
            self.store
                .follow_groups()
                .await
                .map_err(|e| e.to_string())?;
        }
        if changed(kind::FEATURE_VIEW) {
            self.store.forget_views();
        }
        // Deployments, recommenders, monitors and pipelines are followed one name at a time;
        // after a gap, every name this server serves or the catalog lists.
        let recommender_kind = kind::service(kairos_recommend::service::KIND);
        let monitor_kind = kind::service(kairos_monitor::service::KIND);
        let (deployments, recommenders, monitors, pipelines) = if everything {
            self.every_name().await?
        } else {
            (
                touched(changes, kind::DEPLOYMENT),
                touched(changes, &recommender_kind),
                touched(changes, &monitor_kind),
                touched(changes, kind::PIPELINE)
                    .into_iter()
                    .chain(touched(changes, &kind::service(kairos_pipeline::RUN_KIND)))
                    .collect(),
            )
        };
        for name in deployments {
            self.deployments
                .follow(&name)
                .await
                .map_err(|e| e.to_string())?;
        }
        for name in recommenders {
            self.recommenders
                .follow(&name)
                .await
                .map_err(|e| e.to_string())?;
        }
        for name in pipelines {
            self.pipelines
                .follow(&name)
                .await
                .map_err(|e| e.to_string())?;
        }
        if !monitors.is_empty() {
            let this = self.monitors.clone();
            tokio::task::spawn_blocking(move || {
                monitors.iter().try_for_each(|name| this.follow(name))
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Every deployment, recommender, monitor and pipeline name this server serves (or
    /// schedules, or runs) or the catalog lists.
    async fn every_name(&self) -> Result<(Names, Names, Names, Names), String> {
        let store = self.store.clone();
        let (mut deployments, mut recommenders, mut monitors, mut pipelines) =
            tokio::task::spawn_blocking(move || -> Result<_, String> {
                let catalog = store.catalog();
                let deployments = catalog.list_deployments().map_err(|e| e.to_string())?;
                let documents = |kind: &str| -> Result<Names, String> {
                    let listed = catalog
                        .list_service_documents(kind)
                        .map_err(|e| e.to_string())?;
                    Ok(listed.into_iter().map(|(name, _, _)| name).collect())
                };
                let pipelines = catalog.list_pipelines().map_err(|e| e.to_string())?;
                Ok((
                    deployments
                        .into_iter()
                        .map(|d| d.spec.name)
                        .collect::<Names>(),
                    documents(kairos_recommend::service::KIND)?,
                    documents(kairos_monitor::service::KIND)?,
                    pipelines
                        .into_iter()
                        .map(|p| p.spec.name)
                        .collect::<Names>(),
                ))
            })
            .await
            .map_err(|e| e.to_string())??;
        deployments.extend(
            self.deployments
                .list()
                .iter()
                .map(|l| l.deployment.spec.name.clone()),
        );
        recommenders.extend(self.recommenders.list().into_iter().map(|r| r.spec.name));
        monitors.extend(self.monitors.scheduled());
        pipelines.extend(self.pipelines.running().await);
        Ok((deployments, recommenders, monitors, pipelines))
    }
}

type Names = BTreeSet<String>;

/// The names of `kind` that `changes` touch.
fn touched(changes: &Changes, kind: &str) -> BTreeSet<String> {
    changes
        .changes
        .iter()
        .filter(|c| c.kind == kind)
        .map(|c| c.name.clone())
        .collect()
}
