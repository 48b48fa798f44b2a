//! The Kairos catalog: what feature groups, feature views, training datasets, pipelines,
//! models, deployments and other services' documents (monitors, API keys) exist, at which
//! versions, with which definitions.
//!
//! [`Catalog`] is the seam the store and the server use. [`DocumentCatalog`] implements it once
//! over a [`Backend`], an engine that keeps versioned JSON documents: [`Sqlite`] is the embedded
//! default (one file under the data dir), [`Postgres`] the catalog a cluster's replicas share.

mod backend;
mod postgresql;
mod sqlite;
pub mod testing;

use kairos_model::{Deployment, DeploymentSpec, Model, ModelSpec};
use kairos_stream::spec::{PipelineDef, PipelineSpec};
use kairos_types::{FeatureGroup, FeatureGroupSpec};
use kairos_view::{FeatureView, FeatureViewSpec, TrainingDataset};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use backend::{Backend, Change, Changes, Doc, KEPT_CHANGES, MakeBody, StoredDoc};
pub use postgresql::Postgres;
pub use sqlite::Sqlite;

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The engine cannot be reached (a connection refused, lost or timed out).
    #[error("catalog unavailable ({engine}): {source}")]
    Unavailable {
        engine: &'static str,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("catalog storage ({engine}): {source}")]
    Storage {
        engine: &'static str,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("catalog holds an unreadable definition for {name} v{version}: {reason}")]
    Corrupt {
        name: String,
        version: u32,
        reason: String,
    },
    #[error(
        "catalog schema version {found} is newer than this build knows ({known}): \
         open it with the Kairos that wrote it"
    )]
    NewerSchema { found: usize, known: usize },
}

pub type Result<T, E = CatalogError> = std::result::Result<T, E>;

/// Every definition Kairos keeps, by kind and name. Versions of a name count up from 1.
pub trait Catalog: Send + Sync {
    /// Stores `spec` as the next version of its name (1 if the name is new).
    fn create_feature_group(&self, spec: &FeatureGroupSpec) -> Result<FeatureGroup>;

    /// The given version, or the latest one when `version` is `None`.
    fn get_feature_group(&self, name: &str, version: Option<u32>) -> Result<Option<FeatureGroup>>;

    /// Every version of every feature group, by name then version.
    fn list_feature_groups(&self) -> Result<Vec<FeatureGroup>>;

    /// Removes one version; returns whether it existed.
    fn delete_feature_group(&self, name: &str, version: u32) -> Result<bool>;

    /// Stores `spec` (its group versions pinned) as the next version of its name.
    fn create_feature_view(&self, spec: &FeatureViewSpec) -> Result<FeatureView>;

    /// The given version, or the latest one when `version` is `None`.
    fn get_feature_view(&self, name: &str, version: Option<u32>) -> Result<Option<FeatureView>>;

    /// Every version of every feature view, by name then version.
    fn list_feature_views(&self) -> Result<Vec<FeatureView>>;

    /// Removes one version of a view and its training datasets' metadata; returns whether it
    /// existed.
    fn delete_feature_view(&self, name: &str, version: u32) -> Result<bool>;

    /// Hands out the next training-dataset version of a view version; never reused.
    fn next_training_dataset_version(&self, view: &str, view_version: u32) -> Result<u32>;

    /// Records a written training dataset.
    fn save_training_dataset(&self, dataset: &TrainingDataset) -> Result<()>;

    /// One training dataset, or the latest of the view version when `version` is `None`.
    fn get_training_dataset(
        &self,
        view: &str,
        view_version: u32,
        version: Option<u32>,
    ) -> Result<Option<TrainingDataset>>;

    /// The training datasets of a view version, by version.
    fn list_training_datasets(&self, view: &str, view_version: u32)
    -> Result<Vec<TrainingDataset>>;

    /// Stores a pipeline definition as the next version of its name.
    fn create_pipeline(&self, spec: &PipelineSpec) -> Result<PipelineDef>;

    /// One version of a pipeline, or its latest when `version` is `None`.
    fn get_pipeline(&self, name: &str, version: Option<u32>) -> Result<Option<PipelineDef>>;

    /// Every version of every pipeline, by name then version.
    fn list_pipelines(&self) -> Result<Vec<PipelineDef>>;

    /// Removes one version of a pipeline; false if it did not exist.
    fn delete_pipeline(&self, name: &str, version: u32) -> Result<bool>;

    /// Registers a model definition as the next version of its name.
    fn create_model(&self, spec: &ModelSpec) -> Result<Model>;

    /// Hands out the next version of a model name without listing anything under it: its
    /// artifact is stored first and the model recorded after ([`Catalog::save_model`]), so a
    /// listed version always has its artifact. A version handed out is never reused.
    fn reserve_model_version(&self, name: &str) -> Result<u32>;

    /// Records a model under a version [`Catalog::reserve_model_version`] handed out.
    fn save_model(&self, model: &Model) -> Result<()>;

    /// One version of a model, or its latest when `version` is `None`.
    fn get_model(&self, name: &str, version: Option<u32>) -> Result<Option<Model>>;

    /// Every version of every model, by name then version.
    fn list_models(&self) -> Result<Vec<Model>>;

    /// Removes one version of a model; false if it did not exist.
    fn delete_model(&self, name: &str, version: u32) -> Result<bool>;

    /// Applies a deployment as the next revision of its name; the latest revision is live.
    fn create_deployment(&self, spec: &DeploymentSpec) -> Result<Deployment>;

    /// The live (latest) revision of a deployment.
    fn get_deployment(&self, name: &str) -> Result<Option<Deployment>>;

    /// The live revision of every deployment, by name.
    fn list_deployments(&self) -> Result<Vec<Deployment>>;

    /// Removes a deployment, every revision; false if it did not exist.
    fn delete_deployment(&self, name: &str) -> Result<bool>;

    /// Stores `body` as the next version of `name` among the documents of `kind`, for services
    /// above the store whose definitions the catalog keeps without knowing their types
    /// (monitors); returns the version.
    fn put_service_document(&self, kind: &str, name: &str, body: &serde_json::Value)
    -> Result<u32>;

    /// A version of a service document (the latest when `version` is absent).
    fn get_service_document(
        &self,
        kind: &str,
        name: &str,
        version: Option<u32>,
    ) -> Result<Option<(u32, serde_json::Value)>>;

    /// The latest version of every service document of `kind`, by name.
    fn list_service_documents(&self, kind: &str) -> Result<Vec<(String, u32, serde_json::Value)>>;

    /// Deletes every version of a service document; false when there was none.
    fn delete_service_document(&self, kind: &str, name: &str) -> Result<bool>;

    /// The changes committed after change `seq` (0: from the start), in commit order: what
    /// another process or replica changed, for caches to follow. Kinds are those of [`kind`].
    fn changes_since(&self, seq: i64) -> Result<Changes>;

    /// Claims `slot` of the work `name` (a monitor's scheduled run at a time, say): true for
    /// exactly one of the processes sharing the catalog that claim it, and for none once a
    /// later slot was claimed. Work done once per slot among replicas needs no owner.
    fn claim(&self, name: &str, slot: u64) -> Result<bool>;

    /// Whether the catalog's engine answers.
    fn ping(&self) -> Result<()>;

    /// The engine's name: `sqlite` or `postgresql`.
    fn engine(&self) -> &'static str;
}

/// The kinds of the catalog's documents, as its changes name them.
pub mod kind {
    pub const FEATURE_GROUP: &str = "feature_group";
    pub const FEATURE_VIEW: &str = "feature_view";
    /// Named `<view>@<view version>`.
    pub const TRAINING_DATASET: &str = "training_dataset";
    pub const PIPELINE: &str = "pipeline";
    pub const MODEL: &str = "model";
    pub const DEPLOYMENT: &str = "deployment";

    /// A service's documents (monitors, API keys): `service:<kind>`.
    pub fn service(kind: &str) -> String {
        format!("service:{kind}")
    }
}

use kind::{DEPLOYMENT, FEATURE_GROUP, FEATURE_VIEW, MODEL, PIPELINE, TRAINING_DATASET};

/// The embedded catalog: one SQLite file.
pub type SqliteCatalog = DocumentCatalog<Sqlite>;

impl SqliteCatalog {
    pub fn open(path: &std::path::Path) -> Result<Self> {
        Ok(Self::new(Sqlite::open(path)?))
    }

    pub fn in_memory() -> Result<Self> {
        Ok(Self::new(Sqlite::in_memory()?))
    }
}

/// Opens the catalog `url` names (a PostgreSQL database), or `catalog.db` in `data_dir` when
/// there is none.
pub fn open(url: Option<&str>, data_dir: &std::path::Path) -> Result<Box<dyn Catalog>> {
    Ok(match url {
        Some(url) => Box::new(PostgresCatalog::connect(url)?),
        None => Box::new(SqliteCatalog::open(&data_dir.join("catalog.db"))?),
    })
}

/// The catalog of a cluster: a PostgreSQL database every replica shares.
pub type PostgresCatalog = DocumentCatalog<Postgres>;

impl PostgresCatalog {
    pub fn connect(url: &str) -> Result<Self> {
        Ok(Self::new(Postgres::connect(url)?))
    }
}

/// The typed catalog over any engine's documents.
#[derive(Debug)]
pub struct DocumentCatalog<B> {
    docs: B,
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn to_json(body: &impl Serialize) -> String {
    serde_json::to_string(body).expect("catalog documents serialize")
}

fn parse_document<T: DeserializeOwned>(name: &str, version: u32, body: &str) -> Result<T> {
    serde_json::from_str(body).map_err(|e| CatalogError::Corrupt {
        name: name.to_string(),
        version,
        reason: e.to_string(),
    })
}

/// The last of each name's items, from items listed by name then version.
fn latest_per_name<T>(items: Vec<T>, name: impl Fn(&T) -> &str) -> Vec<T> {
    let mut latest: Vec<T> = Vec::new();
    for item in items {
        match latest.last_mut() {
            Some(last) if name(last) == name(&item) => *last = item,
            _ => latest.push(item),
        }
    }
    latest
}

fn dataset_key(view: &str, view_version: u32) -> String {
    format!("{view}@{view_version}")
}

impl<B: Backend> DocumentCatalog<B> {
    pub fn new(docs: B) -> Self {
        Self { docs }
    }

    /// Stores `make(version, created_at)` as the next version of `name`.
    fn create<T: Serialize>(
        &self,
        kind: &str,
        name: &str,
        make: impl Fn(u32, String) -> T + Clone + Send + 'static,
    ) -> Result<T> {
        let created_at = now();
        let body = {
            let (make, created_at) = (make.clone(), created_at.clone());
            move |version| to_json(&make(version, created_at.clone()))
        };
        let version = self.docs.next_version(kind, name, Some(Box::new(body)))?;
        Ok(make(version, created_at))
    }

    fn get<T: DeserializeOwned>(
        &self,
        kind: &str,
        name: &str,
        version: Option<u32>,
    ) -> Result<Option<T>> {
        self.docs
            .get(kind, name, version)?
            .map(|(v, body)| parse_document(name, v, &body))
            .transpose()
    }

    fn list<T: DeserializeOwned>(&self, kind: &str, name: Option<&str>) -> Result<Vec<T>> {
        self.docs
            .list(kind, name)?
            .into_iter()
            .map(|(n, v, body)| parse_document(&n, v, &body))
            .collect()
    }

    fn delete_one(&self, kind: &str, name: &str, version: Option<u32>) -> Result<bool> {
        self.docs.delete(&[Doc {
            kind,
            name,
            version,
        }])
    }
}

impl<B: Backend> Catalog for DocumentCatalog<B> {
    fn create_feature_group(&self, spec: &FeatureGroupSpec) -> Result<FeatureGroup> {
        let spec = spec.clone();
        self.create(
            FEATURE_GROUP,
            &spec.name.clone(),
            move |version, created_at| FeatureGroup {
                spec: spec.clone(),
                version,
                created_at,
            },
        )
    }

    fn get_feature_group(&self, name: &str, version: Option<u32>) -> Result<Option<FeatureGroup>> {
        self.get(FEATURE_GROUP, name, version)
    }

    fn list_feature_groups(&self) -> Result<Vec<FeatureGroup>> {
        self.list(FEATURE_GROUP, None)
    }

    fn delete_feature_group(&self, name: &str, version: u32) -> Result<bool> {
        self.delete_one(FEATURE_GROUP, name, Some(version))
    }

    fn create_feature_view(&self, spec: &FeatureViewSpec) -> Result<FeatureView> {
        let spec = spec.clone();
        self.create(
            FEATURE_VIEW,
            &spec.name.clone(),
            move |version, created_at| FeatureView {
                spec: spec.clone(),
                version,
                created_at,
            },
        )
    }

    fn get_feature_view(&self, name: &str, version: Option<u32>) -> Result<Option<FeatureView>> {
        self.get(FEATURE_VIEW, name, version)
    }

    fn list_feature_views(&self) -> Result<Vec<FeatureView>> {
        self.list(FEATURE_VIEW, None)
    }

    fn delete_feature_view(&self, name: &str, version: u32) -> Result<bool> {
        let datasets = dataset_key(name, version);
        self.docs.delete(&[
            Doc {
                kind: FEATURE_VIEW,
                name,
                version: Some(version),
            },
            Doc {
                kind: TRAINING_DATASET,
                name: &datasets,
                version: None,
            },
        ])
    }

    fn next_training_dataset_version(&self, view: &str, view_version: u32) -> Result<u32> {
        self.docs
            .next_version(TRAINING_DATASET, &dataset_key(view, view_version), None)
    }

    fn save_training_dataset(&self, dataset: &TrainingDataset) -> Result<()> {
        self.docs.put(
            TRAINING_DATASET,
            &dataset_key(&dataset.view, dataset.view_version),
            dataset.version,
            &to_json(dataset),
        )
    }

    fn get_training_dataset(
        &self,
        view: &str,
        view_version: u32,
        version: Option<u32>,
    ) -> Result<Option<TrainingDataset>> {
        self.get(TRAINING_DATASET, &dataset_key(view, view_version), version)
    }

    fn list_training_datasets(
        &self,
        view: &str,
        view_version: u32,
    ) -> Result<Vec<TrainingDataset>> {
        self.list(TRAINING_DATASET, Some(&dataset_key(view, view_version)))
    }

    fn create_pipeline(&self, spec: &PipelineSpec) -> Result<PipelineDef> {
        let spec = spec.clone();
        self.create(PIPELINE, &spec.name.clone(), move |version, created_at| {
            PipelineDef {
                spec: spec.clone(),
                version,
                created_at,
            }
        })
    }

    fn get_pipeline(&self, name: &str, version: Option<u32>) -> Result<Option<PipelineDef>> {
        self.get(PIPELINE, name, version)
    }

    fn list_pipelines(&self) -> Result<Vec<PipelineDef>> {
        self.list(PIPELINE, None)
    }

    fn delete_pipeline(&self, name: &str, version: u32) -> Result<bool> {
        self.delete_one(PIPELINE, name, Some(version))
    }

    fn create_model(&self, spec: &ModelSpec) -> Result<Model> {
        let spec = spec.clone();
        self.create(MODEL, &spec.name.clone(), move |version, created_at| {
            Model {
                spec: spec.clone(),
                version,
                created_at,
            }
        })
    }

    fn reserve_model_version(&self, name: &str) -> Result<u32> {
        self.docs.next_version(MODEL, name, None)
    }

    fn save_model(&self, model: &Model) -> Result<()> {
        self.docs
            .put(MODEL, &model.spec.name, model.version, &to_json(model))
    }

    fn get_model(&self, name: &str, version: Option<u32>) -> Result<Option<Model>> {
        self.get(MODEL, name, version)
    }

    fn list_models(&self) -> Result<Vec<Model>> {
        self.list(MODEL, None)
    }

    fn delete_model(&self, name: &str, version: u32) -> Result<bool> {
        self.delete_one(MODEL, name, Some(version))
    }

    fn create_deployment(&self, spec: &DeploymentSpec) -> Result<Deployment> {
        let spec = spec.clone();
        self.create(
            DEPLOYMENT,
            &spec.name.clone(),
            move |revision, created_at| Deployment {
                spec: spec.clone(),
                revision,
                created_at,
            },
        )
    }

    fn get_deployment(&self, name: &str) -> Result<Option<Deployment>> {
        self.get(DEPLOYMENT, name, None)
    }

    fn list_deployments(&self) -> Result<Vec<Deployment>> {
        let all = self.list::<Deployment>(DEPLOYMENT, None)?;
        Ok(latest_per_name(all, |d| &d.spec.name))
    }

    fn delete_deployment(&self, name: &str) -> Result<bool> {
        self.delete_one(DEPLOYMENT, name, None)
    }

    fn put_service_document(
        &self,
        kind: &str,
        name: &str,
        body: &serde_json::Value,
    ) -> Result<u32> {
        let body = to_json(body);
        self.docs.next_version(
            &kind::service(kind),
            name,
            Some(Box::new(move |_| body.clone())),
        )
    }

    fn get_service_document(
        &self,
        kind: &str,
        name: &str,
        version: Option<u32>,
    ) -> Result<Option<(u32, serde_json::Value)>> {
        self.docs
            .get(&kind::service(kind), name, version)?
            .map(|(v, body)| Ok((v, parse_document(name, v, &body)?)))
            .transpose()
    }

    fn list_service_documents(&self, kind: &str) -> Result<Vec<(String, u32, serde_json::Value)>> {
        let all = self.docs.list(&kind::service(kind), None)?;
        latest_per_name(all, |doc| &doc.0)
            .into_iter()
            .map(|(n, v, body)| {
                let value = parse_document(&n, v, &body)?;
                Ok((n, v, value))
            })
            .collect()
    }

    fn delete_service_document(&self, kind: &str, name: &str) -> Result<bool> {
        self.delete_one(&kind::service(kind), name, None)
    }

    fn changes_since(&self, seq: i64) -> Result<Changes> {
        self.docs.changes_since(seq)
    }

    fn claim(&self, name: &str, slot: u64) -> Result<bool> {
        self.docs.claim(name, slot)
    }

    fn ping(&self) -> Result<()> {
        self.docs.ping()
    }

    fn engine(&self) -> &'static str {
        self.docs.engine()
    }
}
