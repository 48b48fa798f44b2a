//! The Kairos catalog: what feature groups, feature views, training datasets, pipelines,
//! models, deployments and other services' documents (monitors) exist, at which versions, with
//! which definitions.
//!
//! [`Catalog`] is the seam; [`SqliteCatalog`] is the embedded default (one file under the data
//! dir), and a PostgreSQL implementation can follow behind the same trait.

use std::path::Path;
use std::sync::Mutex;

use kairos_model::{Deployment, DeploymentSpec, Model, ModelSpec};
use kairos_stream::spec::{PipelineDef, PipelineSpec};
use kairos_types::{FeatureGroup, FeatureGroupSpec};
use kairos_view::{FeatureView, FeatureViewSpec, TrainingDataset};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use serde::de::DeserializeOwned;

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("catalog storage error: {0}")]
    Storage(#[from] rusqlite::Error),
    #[error("catalog holds an unreadable definition for {name} v{version}: {reason}")]
    Corrupt {
        name: String,
        version: u32,
        reason: String,
    },
}

pub type Result<T, E = CatalogError> = std::result::Result<T, E>;

/// Metadata of feature groups. Versions of a name count up from 1.
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
}

/// Service documents live beside the catalog's own kinds, under a prefix no kind of its own
/// has.
fn service_kind(kind: &str) -> String {
    format!("service:{kind}")
}

/// The catalog in one SQLite file.
#[derive(Debug)]
pub struct SqliteCatalog {
    conn: Mutex<Connection>,
}

impl SqliteCatalog {
    pub fn open(path: &Path) -> Result<Self> {
        Self::init(Connection::open(path)?)
    }

    pub fn in_memory() -> Result<Self> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<Self> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS feature_groups (
                 name       TEXT    NOT NULL,
                 version    INTEGER NOT NULL,
                 spec       TEXT    NOT NULL,
                 created_at TEXT    NOT NULL,
                 PRIMARY KEY (name, version)
             );
             CREATE TABLE IF NOT EXISTS name_versions (
                 name         TEXT    PRIMARY KEY,
                 last_version INTEGER NOT NULL
             );
             CREATE TABLE IF NOT EXISTS documents (
                 kind    TEXT    NOT NULL,
                 name    TEXT    NOT NULL,
                 version INTEGER NOT NULL,
                 body    TEXT    NOT NULL,
                 PRIMARY KEY (kind, name, version)
             );
             CREATE TABLE IF NOT EXISTS document_versions (
                 kind         TEXT    NOT NULL,
                 name         TEXT    NOT NULL,
                 last_version INTEGER NOT NULL,
                 PRIMARY KEY (kind, name)
             );",
        )?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }
}

const FEATURE_VIEW: &str = "feature_view";
const TRAINING_DATASET: &str = "training_dataset";
const PIPELINE: &str = "pipeline";
const MODEL: &str = "model";
const DEPLOYMENT: &str = "deployment";

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Feature views and training datasets are versioned JSON documents: one table for both, with
/// versions counted per (kind, name) and never reused.
impl SqliteCatalog {
    fn next_version(conn: &Connection, kind: &str, name: &str) -> Result<u32> {
        let latest: Option<u32> = conn
            .query_row(
                "SELECT last_version FROM document_versions WHERE kind = ?1 AND name = ?2",
                params![kind, name],
                |r| r.get(0),
            )
            .optional()?;
        let version = latest.unwrap_or(0) + 1;
        conn.execute(
            "INSERT INTO document_versions (kind, name, last_version) VALUES (?1, ?2, ?3) \
             ON CONFLICT(kind, name) DO UPDATE SET last_version = excluded.last_version",
            params![kind, name, version],
        )?;
        Ok(version)
    }

    fn put_document(
        conn: &Connection,
        kind: &str,
        name: &str,
        version: u32,
        body: &impl Serialize,
    ) -> Result<()> {
        let json = serde_json::to_string(body).expect("documents serialize");
        conn.execute(
            "INSERT OR REPLACE INTO documents (kind, name, version, body) VALUES (?1, ?2, ?3, ?4)",
            params![kind, name, version, json],
        )?;
        Ok(())
    }

    fn get_document<T: DeserializeOwned>(
        &self,
        kind: &str,
        name: &str,
        version: Option<u32>,
    ) -> Result<Option<T>> {
        let conn = self.conn.lock().expect("catalog lock");
        let row: Option<(u32, String)> = conn
            .query_row(
                "SELECT version, body FROM documents WHERE kind = ?1 AND name = ?2 \
                 AND (?3 IS NULL OR version = ?3) ORDER BY version DESC LIMIT 1",
                params![kind, name, version],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        row.map(|(v, body)| parse_document(name, v, &body))
            .transpose()
    }

    fn list_documents<T: DeserializeOwned>(
        &self,
        kind: &str,
        name: Option<&str>,
    ) -> Result<Vec<T>> {
        let conn = self.conn.lock().expect("catalog lock");
        let mut stmt = conn.prepare(
            "SELECT name, version, body FROM documents WHERE kind = ?1 AND (?2 IS NULL OR name = ?2) \
             ORDER BY name, version",
        )?;
        let rows = stmt.query_map(params![kind, name], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, u32>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        rows.map(|row| {
            let (n, v, body) = row?;
            parse_document(&n, v, &body)
        })
        .collect()
    }
}

impl SqliteCatalog {
    fn delete_document(&self, kind: &str, name: &str, version: u32) -> Result<bool> {
        let conn = self.conn.lock().expect("catalog lock");
        let n = conn.execute(
            "DELETE FROM documents WHERE kind = ?1 AND name = ?2 AND version = ?3",
            params![kind, name, version],
        )?;
        Ok(n > 0)
    }
}

fn parse_document<T: DeserializeOwned>(name: &str, version: u32, body: &str) -> Result<T> {
    serde_json::from_str(body).map_err(|e| CatalogError::Corrupt {
        name: name.to_string(),
        version,
        reason: e.to_string(),
    })
}

fn dataset_key(view: &str, view_version: u32) -> String {
    format!("{view}@{view_version}")
}

fn row_to_group(
    name: String,
    version: u32,
    spec: String,
    created_at: String,
) -> Result<FeatureGroup> {
    let spec: FeatureGroupSpec =
        serde_json::from_str(&spec).map_err(|e| CatalogError::Corrupt {
            name: name.clone(),
            version,
            reason: e.to_string(),
        })?;
    Ok(FeatureGroup {
        spec,
        version,
        created_at,
    })
}

impl Catalog for SqliteCatalog {
    fn create_feature_group(&self, spec: &FeatureGroupSpec) -> Result<FeatureGroup> {
        let mut conn = self.conn.lock().expect("catalog lock");
        let tx = conn.transaction()?;
        // Versions are never reused, even after a delete, so old data cannot be confused with new.
        let latest: Option<u32> = tx
            .query_row(
                "SELECT last_version FROM name_versions WHERE name = ?1",
                params![spec.name],
                |r| r.get(0),
            )
            .optional()?;
        let version = latest.unwrap_or(0) + 1;
        tx.execute(
            "INSERT INTO name_versions (name, last_version) VALUES (?1, ?2) \
             ON CONFLICT(name) DO UPDATE SET last_version = excluded.last_version",
            params![spec.name, version],
        )?;
        let created_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let json = serde_json::to_string(spec).expect("specs serialize");
        tx.execute(
            "INSERT INTO feature_groups (name, version, spec, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![spec.name, version, json, created_at],
        )?;
        tx.commit()?;
        Ok(FeatureGroup {
            spec: spec.clone(),
            version,
            created_at,
        })
    }

    fn get_feature_group(&self, name: &str, version: Option<u32>) -> Result<Option<FeatureGroup>> {
        let conn = self.conn.lock().expect("catalog lock");
        let row = match version {
            Some(v) => conn
                .query_row(
                    "SELECT name, version, spec, created_at FROM feature_groups WHERE name = ?1 AND version = ?2",
                    params![name, v],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
                .optional()?,
            None => conn
                .query_row(
                    "SELECT name, version, spec, created_at FROM feature_groups WHERE name = ?1 \
                     ORDER BY version DESC LIMIT 1",
                    params![name],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
                .optional()?,
        };
        row.map(|(n, v, s, c)| row_to_group(n, v, s, c)).transpose()
    }

    fn list_feature_groups(&self) -> Result<Vec<FeatureGroup>> {
        let conn = self.conn.lock().expect("catalog lock");
        let mut stmt = conn.prepare(
            "SELECT name, version, spec, created_at FROM feature_groups ORDER BY name, version",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
        rows.map(|row| {
            let (n, v, s, c) = row?;
            row_to_group(n, v, s, c)
        })
        .collect()
    }

    fn delete_feature_group(&self, name: &str, version: u32) -> Result<bool> {
        let conn = self.conn.lock().expect("catalog lock");
        let n = conn.execute(
            "DELETE FROM feature_groups WHERE name = ?1 AND version = ?2",
            params![name, version],
        )?;
        Ok(n > 0)
    }

    fn create_feature_view(&self, spec: &FeatureViewSpec) -> Result<FeatureView> {
        let mut conn = self.conn.lock().expect("catalog lock");
        let tx = conn.transaction()?;
        let version = Self::next_version(&tx, FEATURE_VIEW, &spec.name)?;
        let view = FeatureView {
            spec: spec.clone(),
            version,
            created_at: now(),
        };
        Self::put_document(&tx, FEATURE_VIEW, &spec.name, version, &view)?;
        tx.commit()?;
        Ok(view)
    }

    fn get_feature_view(&self, name: &str, version: Option<u32>) -> Result<Option<FeatureView>> {
        self.get_document(FEATURE_VIEW, name, version)
    }

    fn list_feature_views(&self) -> Result<Vec<FeatureView>> {
        self.list_documents(FEATURE_VIEW, None)
    }

    fn delete_feature_view(&self, name: &str, version: u32) -> Result<bool> {
        let mut conn = self.conn.lock().expect("catalog lock");
        let tx = conn.transaction()?;
        let n = tx.execute(
            "DELETE FROM documents WHERE kind = ?1 AND name = ?2 AND version = ?3",
            params![FEATURE_VIEW, name, version],
        )?;
        tx.execute(
            "DELETE FROM documents WHERE kind = ?1 AND name = ?2",
            params![TRAINING_DATASET, dataset_key(name, version)],
        )?;
        tx.commit()?;
        Ok(n > 0)
    }

    fn next_training_dataset_version(&self, view: &str, view_version: u32) -> Result<u32> {
        let mut conn = self.conn.lock().expect("catalog lock");
        let tx = conn.transaction()?;
        let version = Self::next_version(&tx, TRAINING_DATASET, &dataset_key(view, view_version))?;
        tx.commit()?;
        Ok(version)
    }

    fn save_training_dataset(&self, dataset: &TrainingDataset) -> Result<()> {
        let conn = self.conn.lock().expect("catalog lock");
        Self::put_document(
            &conn,
            TRAINING_DATASET,
            &dataset_key(&dataset.view, dataset.view_version),
            dataset.version,
            dataset,
        )
    }

    fn get_training_dataset(
        &self,
        view: &str,
        view_version: u32,
        version: Option<u32>,
    ) -> Result<Option<TrainingDataset>> {
        self.get_document(TRAINING_DATASET, &dataset_key(view, view_version), version)
    }

    fn list_training_datasets(
        &self,
        view: &str,
        view_version: u32,
    ) -> Result<Vec<TrainingDataset>> {
        self.list_documents(TRAINING_DATASET, Some(&dataset_key(view, view_version)))
    }

    fn create_pipeline(&self, spec: &PipelineSpec) -> Result<PipelineDef> {
        let mut conn = self.conn.lock().expect("catalog lock");
        let tx = conn.transaction()?;
        let version = Self::next_version(&tx, PIPELINE, &spec.name)?;
        let def = PipelineDef {
            spec: spec.clone(),
            version,
            created_at: now(),
        };
        Self::put_document(&tx, PIPELINE, &spec.name, version, &def)?;
        tx.commit()?;
        Ok(def)
    }

    fn get_pipeline(&self, name: &str, version: Option<u32>) -> Result<Option<PipelineDef>> {
        self.get_document(PIPELINE, name, version)
    }

    fn list_pipelines(&self) -> Result<Vec<PipelineDef>> {
        self.list_documents(PIPELINE, None)
    }

    fn delete_pipeline(&self, name: &str, version: u32) -> Result<bool> {
        self.delete_document(PIPELINE, name, version)
    }

    fn create_model(&self, spec: &ModelSpec) -> Result<Model> {
        let mut conn = self.conn.lock().expect("catalog lock");
        let tx = conn.transaction()?;
        let version = Self::next_version(&tx, MODEL, &spec.name)?;
        let model = Model {
            spec: spec.clone(),
            version,
            created_at: now(),
        };
        Self::put_document(&tx, MODEL, &spec.name, version, &model)?;
        tx.commit()?;
        Ok(model)
    }

    fn reserve_model_version(&self, name: &str) -> Result<u32> {
        let mut conn = self.conn.lock().expect("catalog lock");
        let tx = conn.transaction()?;
        let version = Self::next_version(&tx, MODEL, name)?;
        tx.commit()?;
        Ok(version)
    }

    fn save_model(&self, model: &Model) -> Result<()> {
        let conn = self.conn.lock().expect("catalog lock");
        Self::put_document(&conn, MODEL, &model.spec.name, model.version, model)
    }

    fn get_model(&self, name: &str, version: Option<u32>) -> Result<Option<Model>> {
        self.get_document(MODEL, name, version)
    }

    fn list_models(&self) -> Result<Vec<Model>> {
        self.list_documents(MODEL, None)
    }

    fn delete_model(&self, name: &str, version: u32) -> Result<bool> {
        self.delete_document(MODEL, name, version)
    }

    fn create_deployment(&self, spec: &DeploymentSpec) -> Result<Deployment> {
        let mut conn = self.conn.lock().expect("catalog lock");
        let tx = conn.transaction()?;
        let revision = Self::next_version(&tx, DEPLOYMENT, &spec.name)?;
        let deployment = Deployment {
            spec: spec.clone(),
            revision,
            created_at: now(),
        };
        Self::put_document(&tx, DEPLOYMENT, &spec.name, revision, &deployment)?;
        tx.commit()?;
        Ok(deployment)
    }

    fn get_deployment(&self, name: &str) -> Result<Option<Deployment>> {
        self.get_document(DEPLOYMENT, name, None)
    }

    fn list_deployments(&self) -> Result<Vec<Deployment>> {
        let mut live: Vec<Deployment> = Vec::new();
        for d in self.list_documents::<Deployment>(DEPLOYMENT, None)? {
            // Listed by name then revision: a later revision replaces the one before.
            match live.last_mut() {
                Some(last) if last.spec.name == d.spec.name => *last = d,
                _ => live.push(d),
            }
        }
        Ok(live)
    }

    fn delete_deployment(&self, name: &str) -> Result<bool> {
        let conn = self.conn.lock().expect("catalog lock");
        let n = conn.execute(
            "DELETE FROM documents WHERE kind = ?1 AND name = ?2",
            params![DEPLOYMENT, name],
        )?;
        Ok(n > 0)
    }

    fn put_service_document(
        &self,
        kind: &str,
        name: &str,
        body: &serde_json::Value,
    ) -> Result<u32> {
        let kind = service_kind(kind);
        let mut conn = self.conn.lock().expect("catalog lock");
        let tx = conn.transaction()?;
        let version = Self::next_version(&tx, &kind, name)?;
        Self::put_document(&tx, &kind, name, version, body)?;
        tx.commit()?;
        Ok(version)
    }

    fn get_service_document(
        &self,
        kind: &str,
        name: &str,
        version: Option<u32>,
    ) -> Result<Option<(u32, serde_json::Value)>> {
        let conn = self.conn.lock().expect("catalog lock");
        let row: Option<(u32, String)> = conn
            .query_row(
                "SELECT version, body FROM documents WHERE kind = ?1 AND name = ?2 \
                 AND (?3 IS NULL OR version = ?3) ORDER BY version DESC LIMIT 1",
                params![service_kind(kind), name, version],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        row.map(|(v, body)| Ok((v, parse_document(name, v, &body)?)))
            .transpose()
    }

    fn list_service_documents(&self, kind: &str) -> Result<Vec<(String, u32, serde_json::Value)>> {
        let conn = self.conn.lock().expect("catalog lock");
        let mut stmt = conn.prepare(
            "SELECT name, MAX(version), body FROM documents WHERE kind = ?1 GROUP BY name \
             ORDER BY name",
        )?;
        let rows = stmt.query_map(params![service_kind(kind)], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, u32>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        rows.map(|row| {
            let (n, v, body) = row?;
            Ok((n.clone(), v, parse_document(&n, v, &body)?))
        })
        .collect()
    }

    fn delete_service_document(&self, kind: &str, name: &str) -> Result<bool> {
        let conn = self.conn.lock().expect("catalog lock");
        let n = conn.execute(
            "DELETE FROM documents WHERE kind = ?1 AND name = ?2",
            params![service_kind(kind), name],
        )?;
        Ok(n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kairos_types::{Column, FeatureType};

    fn spec(name: &str) -> FeatureGroupSpec {
        FeatureGroupSpec {
            name: name.into(),
            description: "test".into(),
            columns: vec![
                Column::new("id", FeatureType::Int64),
                Column::new("ts", FeatureType::Timestamp),
            ],
            primary_key: vec!["id".into()],
            event_time: "ts".into(),
            online: true,
            ttl_seconds: Some(60),
            vector_index: None,
            expectations: Vec::new(),
        }
    }

    #[test]
    fn versions_count_up_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.db");
        {
            let catalog = SqliteCatalog::open(&path).unwrap();
            assert_eq!(catalog.create_feature_group(&spec("a")).unwrap().version, 1);
            assert_eq!(catalog.create_feature_group(&spec("a")).unwrap().version, 2);
            assert_eq!(catalog.create_feature_group(&spec("b")).unwrap().version, 1);
        }
        let catalog = SqliteCatalog::open(&path).unwrap();
        assert_eq!(
            catalog
                .get_feature_group("a", None)
                .unwrap()
                .unwrap()
                .version,
            2
        );
        assert_eq!(
            catalog
                .get_feature_group("a", Some(1))
                .unwrap()
                .unwrap()
                .spec,
            spec("a")
        );
        assert!(catalog.get_feature_group("c", None).unwrap().is_none());
        assert_eq!(catalog.list_feature_groups().unwrap().len(), 3);

        assert!(catalog.delete_feature_group("a", 2).unwrap());
        assert!(!catalog.delete_feature_group("a", 2).unwrap());
        assert_eq!(
            catalog
                .get_feature_group("a", None)
                .unwrap()
                .unwrap()
                .version,
            1
        );
        // A deleted version's number is not handed out again.
        catalog.delete_feature_group("a", 1).unwrap();
        assert_eq!(catalog.create_feature_group(&spec("a")).unwrap().version, 3);
    }

    #[test]
    fn models_are_versioned_documents() {
        let catalog = SqliteCatalog::in_memory().unwrap();
        let spec: ModelSpec = serde_json::from_str(
            r#"{"name": "fraud", "framework": "gbdt", "artifact": "model.json",
                "signature": {"inputs": [{"name": "x", "datatype": "FP64", "shape": [-1, 3]}],
                              "outputs": [{"name": "p", "datatype": "FP64", "shape": [-1]}]}}"#,
        )
        .unwrap();
        assert_eq!(catalog.create_model(&spec).unwrap().version, 1);
        let second = catalog.create_model(&spec).unwrap();
        assert_eq!(second.version, 2);
        assert_eq!(catalog.get_model("fraud", None).unwrap().unwrap(), second);
        assert_eq!(
            catalog.get_model("fraud", Some(1)).unwrap().unwrap().spec,
            spec
        );
        assert_eq!(catalog.list_models().unwrap().len(), 2);
        assert!(catalog.delete_model("fraud", 2).unwrap());
        assert!(!catalog.delete_model("fraud", 2).unwrap());
        assert_eq!(
            catalog.get_model("fraud", None).unwrap().unwrap().version,
            1
        );
        assert_eq!(catalog.create_model(&spec).unwrap().version, 3);
    }

    #[test]
    fn deployments_list_their_live_revision() {
        let catalog = SqliteCatalog::in_memory().unwrap();
        let mut spec: DeploymentSpec =
            serde_json::from_str(r#"{"name": "fraud", "model": "m", "model_version": 1}"#).unwrap();
        catalog.create_deployment(&spec).unwrap();
        spec.model_version = Some(2);
        let live = catalog.create_deployment(&spec).unwrap();
        assert_eq!(live.revision, 2);
        let other: DeploymentSpec =
            serde_json::from_str(r#"{"name": "churn", "model": "c"}"#).unwrap();
        catalog.create_deployment(&other).unwrap();
        let listed = catalog.list_deployments().unwrap();
        assert_eq!(
            listed
                .iter()
                .map(|d| (d.spec.name.as_str(), d.revision))
                .collect::<Vec<_>>(),
            [("churn", 1), ("fraud", 2)]
        );
        assert_eq!(catalog.get_deployment("fraud").unwrap().unwrap(), live);
        assert!(catalog.delete_deployment("fraud").unwrap());
        assert!(catalog.get_deployment("fraud").unwrap().is_none());
        assert!(!catalog.delete_deployment("fraud").unwrap());
        assert_eq!(catalog.create_deployment(&spec).unwrap().revision, 3);
    }

    #[test]
    fn service_documents_are_versioned_by_kind_and_name() {
        let catalog = SqliteCatalog::in_memory().unwrap();
        let body = |n: u32| serde_json::json!({ "window": n });
        assert_eq!(
            catalog
                .put_service_document("monitor", "a", &body(1))
                .unwrap(),
            1
        );
        assert_eq!(
            catalog
                .put_service_document("monitor", "a", &body(2))
                .unwrap(),
            2
        );
        assert_eq!(
            catalog
                .put_service_document("monitor", "b", &body(3))
                .unwrap(),
            1
        );
        // Another kind, and a name the catalog's own kinds use, stay apart.
        assert_eq!(
            catalog
                .put_service_document("other", "a", &body(4))
                .unwrap(),
            1
        );
        assert_eq!(
            catalog.get_service_document("monitor", "a", None).unwrap(),
            Some((2, body(2)))
        );
        assert_eq!(
            catalog
                .get_service_document("monitor", "a", Some(1))
                .unwrap(),
            Some((1, body(1)))
        );
        assert_eq!(
            catalog.list_service_documents("monitor").unwrap(),
            [("a".to_string(), 2, body(2)), ("b".to_string(), 1, body(3))]
        );
        assert!(catalog.delete_service_document("monitor", "a").unwrap());
        assert!(
            catalog
                .get_service_document("monitor", "a", None)
                .unwrap()
                .is_none()
        );
        assert_eq!(
            catalog
                .put_service_document("monitor", "a", &body(5))
                .unwrap(),
            3
        );
        assert!(catalog.list_deployments().unwrap().is_empty());
    }
}
