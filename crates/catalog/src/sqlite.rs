//! The embedded catalog engine: one SQLite file under the data dir.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::backend::{
    Backend, Change, Changes, Doc, KEPT_CHANGES, MakeBody, StoredDoc, pending_migrations,
};
use crate::{CatalogError, Result};

/// The schema's versions, in order; a catalog records how many it has applied in SQLite's
/// `user_version`, and opening it applies the rest in one transaction.
const MIGRATIONS: &[&str] = &[
    // 1: feature groups in a table of their own, everything else as documents.
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
    // 2: feature groups become documents too (the body is the `FeatureGroup`: its spec's
    // fields, `version` and `created_at`), so every engine keeps one kind of record.
    "INSERT INTO documents (kind, name, version, body)
         SELECT 'feature_group', name, version,
                json_patch(spec, json_object('version', version, 'created_at', created_at))
         FROM feature_groups;
     INSERT INTO document_versions (kind, name, last_version)
         SELECT 'feature_group', name, last_version FROM name_versions;
     DROP TABLE feature_groups;
     DROP TABLE name_versions;",
    // 3: the change log replicas and other processes follow, and how far it was pruned.
    "CREATE TABLE changes (
         seq     INTEGER PRIMARY KEY AUTOINCREMENT,
         kind    TEXT    NOT NULL,
         name    TEXT    NOT NULL,
         version INTEGER,
         deleted INTEGER NOT NULL
     );
     CREATE TABLE change_horizon (pruned_through INTEGER NOT NULL);
     INSERT INTO change_horizon VALUES (0);",
    // 4: work done once per slot among processes (a monitor's scheduled runs): the last slot
    // claimed per name.
    "CREATE TABLE claims (
         name TEXT    PRIMARY KEY,
         slot INTEGER NOT NULL
     );",
];

impl From<rusqlite::Error> for CatalogError {
    fn from(e: rusqlite::Error) -> Self {
        CatalogError::Storage {
            engine: "sqlite",
            source: Box::new(e),
        }
    }
}

/// The catalog's documents in one SQLite file.
#[derive(Debug)]
pub struct Sqlite {
    conn: Mutex<Connection>,
}

impl Sqlite {
    pub fn open(path: &Path) -> Result<Self> {
        Self::init(Connection::open(path)?)
    }

    pub fn in_memory() -> Result<Self> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(mut conn: Connection) -> Result<Self> {
        // Other processes (the CLI beside a server, a second server) share the file: a writer
        // waits for another's transaction instead of failing at once.
        conn.busy_timeout(BUSY_TIMEOUT)?;
        use_wal(&conn)?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        migrate(&mut conn)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().expect("catalog lock")
    }
}

/// Switches the file to write-ahead logging. The switch takes a lock SQLite does not wait for
/// (the busy handler is not called for it), so a process opening the file while another one
/// switches or migrates it retries until the busy timeout rather than failing at once.
fn use_wal(conn: &Connection) -> rusqlite::Result<()> {
    let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
    loop {
        match conn.pragma_update(None, "journal_mode", "WAL") {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            done => return done,
        }
    }
}

/// How long a write waits for another process's transaction on the file.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A transaction that takes the write lock at its start: one that read first and wrote later
/// would fail at once when another writer came between (SQLite cannot wait there without
/// risking a deadlock).
fn write_transaction(conn: &mut Connection) -> rusqlite::Result<rusqlite::Transaction<'_>> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate)
}

fn migrate(conn: &mut Connection) -> Result<()> {
    let tx = write_transaction(conn)?;
    let applied: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
    for (version, migration) in pending_migrations(applied, MIGRATIONS)? {
        tx.execute_batch(migration)?;
        tx.pragma_update(None, "user_version", version)?;
    }
    tx.commit()?;
    Ok(())
}

/// Records a change in the transaction that makes it, and prunes what is more than
/// [`KEPT_CHANGES`] behind it. SQLite's one writer at a time keeps commit order and `seq` order
/// the same.
fn record(
    tx: &rusqlite::Transaction<'_>,
    kind: &str,
    name: &str,
    version: Option<u32>,
    deleted: bool,
) -> Result<()> {
    tx.execute(
        "INSERT INTO changes (kind, name, version, deleted) VALUES (?1, ?2, ?3, ?4)",
        params![kind, name, version, deleted],
    )?;
    let horizon = tx.last_insert_rowid() - KEPT_CHANGES;
    if horizon > 0 {
        tx.execute("DELETE FROM changes WHERE seq <= ?1", params![horizon])?;
        tx.execute(
            "UPDATE change_horizon SET pruned_through = MAX(pruned_through, ?1)",
            params![horizon],
        )?;
    }
    Ok(())
}

impl Backend for Sqlite {
    fn next_version(&self, kind: &str, name: &str, body: Option<MakeBody>) -> Result<u32> {
        let mut conn = self.conn();
        let tx = write_transaction(&mut conn)?;
        let version: u32 = tx.query_row(
            "INSERT INTO document_versions (kind, name, last_version) VALUES (?1, ?2, 1) \
             ON CONFLICT(kind, name) DO UPDATE SET last_version = last_version + 1 \
             RETURNING last_version",
            params![kind, name],
            |r| r.get(0),
        )?;
        if let Some(body) = body {
            tx.execute(
                "INSERT INTO documents (kind, name, version, body) VALUES (?1, ?2, ?3, ?4)",
                params![kind, name, version, body(version)],
            )?;
            record(&tx, kind, name, Some(version), false)?;
        }
        tx.commit()?;
        Ok(version)
    }

    fn put(&self, kind: &str, name: &str, version: u32, body: &str) -> Result<()> {
        let mut conn = self.conn();
        let tx = write_transaction(&mut conn)?;
        tx.execute(
            "INSERT OR REPLACE INTO documents (kind, name, version, body) VALUES (?1, ?2, ?3, ?4)",
            params![kind, name, version, body],
        )?;
        record(&tx, kind, name, Some(version), false)?;
        tx.commit()?;
        Ok(())
    }

    fn get(&self, kind: &str, name: &str, version: Option<u32>) -> Result<Option<(u32, String)>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT version, body FROM documents WHERE kind = ?1 AND name = ?2 \
                 AND (?3 IS NULL OR version = ?3) ORDER BY version DESC LIMIT 1",
                params![kind, name, version],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    fn list(&self, kind: &str, name: Option<&str>) -> Result<Vec<StoredDoc>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT name, version, body FROM documents WHERE kind = ?1 \
             AND (?2 IS NULL OR name = ?2) ORDER BY name, version",
        )?;
        let rows = stmt.query_map(params![kind, name], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn delete(&self, docs: &[Doc<'_>]) -> Result<bool> {
        let mut conn = self.conn();
        let tx = write_transaction(&mut conn)?;
        let mut first = None;
        for doc in docs {
            let n = tx.execute(
                "DELETE FROM documents WHERE kind = ?1 AND name = ?2 \
                 AND (?3 IS NULL OR version = ?3)",
                params![doc.kind, doc.name, doc.version],
            )?;
            first.get_or_insert(n > 0);
            if n > 0 {
                record(&tx, doc.kind, doc.name, doc.version, true)?;
            }
        }
        tx.commit()?;
        Ok(first.unwrap_or(false))
    }

    fn engine(&self) -> &'static str {
        "sqlite"
    }

    fn claim(&self, name: &str, slot: u64) -> Result<bool> {
        let slot = i64::try_from(slot).map_err(|_| CatalogError::Storage {
            engine: "sqlite",
            source: format!("slot {slot} is out of range").into(),
        })?;
        let mut conn = self.conn();
        let tx = write_transaction(&mut conn)?;
        let advanced = tx.execute(
            "INSERT INTO claims (name, slot) VALUES (?1, ?2) \
             ON CONFLICT(name) DO UPDATE SET slot = excluded.slot WHERE claims.slot < excluded.slot",
            params![name, slot],
        )?;
        tx.commit()?;
        Ok(advanced == 1)
    }

    fn ping(&self) -> Result<()> {
        self.conn().query_row("SELECT 1", [], |_| Ok(()))?;
        Ok(())
    }

    fn changes_since(&self, seq: i64) -> Result<Changes> {
        let conn = self.conn();
        let pruned_through: i64 =
            conn.query_row("SELECT pruned_through FROM change_horizon", [], |r| {
                r.get(0)
            })?;
        let mut stmt = conn.prepare(
            "SELECT seq, kind, name, version, deleted FROM changes WHERE seq > ?1 ORDER BY seq",
        )?;
        let changes = stmt
            .query_map(params![seq], |r| {
                Ok(Change {
                    seq: r.get(0)?,
                    kind: r.get(1)?,
                    name: r.get(2)?,
                    version: r.get(3)?,
                    deleted: r.get(4)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(Changes {
            changes,
            complete: seq >= pruned_through,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Catalog, SqliteCatalog};

    /// A catalog written before feature groups were documents (schema 1, as every catalog
    /// made before versioned migrations has `user_version` 0) opens with its groups, their
    /// version counters and its documents intact.
    #[test]
    fn a_catalog_of_the_first_schema_migrates_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            let spec = r#"{"name":"cards","description":"","columns":[{"name":"id","type":"int64"},{"name":"ts","type":"timestamp"}],"primary_key":["id"],"event_time":"ts","online":true,"ttl_seconds":null}"#;
            for version in [1, 3] {
                conn.execute(
                    "INSERT INTO feature_groups VALUES ('cards', ?1, ?2, '2026-01-01T00:00:00.000Z')",
                    params![version, spec],
                )
                .unwrap();
            }
            conn.execute("INSERT INTO name_versions VALUES ('cards', 3)", [])
                .unwrap();
            conn.execute(
                "INSERT INTO documents VALUES ('service:monitor', 'm', 1, '{\"a\":1}')",
                [],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO document_versions VALUES ('service:monitor', 'm', 1)",
                [],
            )
            .unwrap();
        }
        let catalog = SqliteCatalog::open(&path).unwrap();
        let groups = catalog.list_feature_groups().unwrap();
        assert_eq!(
            groups
                .iter()
                .map(|g| (g.spec.name.as_str(), g.version, g.created_at.as_str()))
                .collect::<Vec<_>>(),
            [
                ("cards", 1, "2026-01-01T00:00:00.000Z"),
                ("cards", 3, "2026-01-01T00:00:00.000Z")
            ]
        );
        assert_eq!(groups[0].spec.primary_key, ["id"]);
        let next = catalog
            .create_feature_group(&groups[0].spec)
            .unwrap()
            .version;
        assert_eq!(next, 4, "a migrated name's versions go on from its last");
        assert_eq!(
            catalog.get_service_document("monitor", "m", None).unwrap(),
            Some((1, serde_json::json!({ "a": 1 })))
        );
        drop(catalog);
        let conn = Connection::open(&path).unwrap();
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
    }

    /// A reader behind the pruned part of the change log is told to read everything again.
    #[test]
    fn a_reader_behind_the_pruned_changes_is_told_so() {
        let sqlite = Sqlite::in_memory().unwrap();
        for i in 0..4 {
            sqlite
                .next_version("k", "n", Some(Box::new(move |_| i.to_string())))
                .unwrap();
        }
        // As `record` leaves it once the log is KEPT_CHANGES past change 2.
        sqlite
            .conn()
            .execute_batch(
                "DELETE FROM changes WHERE seq <= 2; UPDATE change_horizon SET pruned_through = 2",
            )
            .unwrap();
        let behind = sqlite.changes_since(1).unwrap();
        assert!(!behind.complete);
        let caught_up = sqlite.changes_since(2).unwrap();
        assert!(caught_up.complete);
        assert_eq!(
            caught_up.changes.iter().map(|c| c.seq).collect::<Vec<_>>(),
            [3, 4]
        );
    }

    #[test]
    fn a_catalog_of_a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.db");
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", MIGRATIONS.len() as i64 + 1)
            .unwrap();
        let err = Sqlite::open(&path).unwrap_err();
        assert!(
            matches!(err, CatalogError::NewerSchema { found, known } if found == known + 1),
            "{err}"
        );
    }
}
