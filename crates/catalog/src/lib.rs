//! The Kairos catalog: what feature groups exist, at which versions, with which schemas.
//!
//! [`Catalog`] is the seam; [`SqliteCatalog`] is the embedded default (one file under the data
//! dir), and a PostgreSQL implementation can follow behind the same trait.

use std::path::Path;
use std::sync::Mutex;

use kairos_types::{FeatureGroup, FeatureGroupSpec};
use rusqlite::{Connection, OptionalExtension, params};

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
             );",
        )?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }
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
}
