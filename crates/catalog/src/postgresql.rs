//! The cluster's catalog engine: PostgreSQL, shared by every replica.
//!
//! The synchronous `postgres` client drives a runtime of its own, which must not run inside
//! the server's async workers; so one thread per catalog owns the connection and runs each
//! call's transaction, and a call waits for its answer as it waits for SQLite's lock. A lost
//! connection is made again on the next call, with a connect timeout, so an unreachable server
//! is an error naming PostgreSQL, never a hang.

use std::sync::mpsc;
use std::time::Duration;

use postgres::{Client, NoTls};

use crate::backend::{
    Backend, Change, Changes, Doc, KEPT_CHANGES, MakeBody, StoredDoc, pending_migrations,
};
use crate::{CatalogError, Result};

/// The schema's versions, in order, recorded in `kairos_schema`.
const MIGRATIONS: &[&str] = &[
    // 1: versioned documents and the counters that hand out their versions.
    "CREATE TABLE documents (
         kind    TEXT   NOT NULL,
         name    TEXT   NOT NULL,
         version BIGINT NOT NULL,
         body    TEXT   NOT NULL,
         PRIMARY KEY (kind, name, version)
     );
     CREATE TABLE document_versions (
         kind         TEXT   NOT NULL,
         name         TEXT   NOT NULL,
         last_version BIGINT NOT NULL,
         PRIMARY KEY (kind, name)
     );",
    // 2: the change log replicas follow, and how far it was pruned.
    "CREATE TABLE changes (
         seq     BIGSERIAL PRIMARY KEY,
         kind    TEXT    NOT NULL,
         name    TEXT    NOT NULL,
         version BIGINT,
         deleted BOOLEAN NOT NULL
     );
     CREATE TABLE change_horizon (pruned_through BIGINT NOT NULL);
     INSERT INTO change_horizon VALUES (0);",
    // 3: work done once per slot among replicas (a monitor's scheduled runs): the last slot
    // claimed per name.
    "CREATE TABLE claims (
         name TEXT   PRIMARY KEY,
         slot BIGINT NOT NULL
     );",
];

/// The advisory lock replicas starting at once take to migrate one at a time.
const MIGRATION_LOCK: i64 = 0x6b61_6972_6f73; // "kairos"

/// The advisory lock a transaction holds from numbering its change until it commits, so
/// changes commit in `seq` order: without it, a reader could pass a number whose transaction
/// had not committed yet, and never see that change.
const CHANGE_LOCK: i64 = MIGRATION_LOCK + 1;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

/// An error of the server (a statement it refused) is the catalog's; anything else — refused,
/// lost or timed-out connections — means PostgreSQL cannot be reached.
fn storage(e: postgres::Error) -> CatalogError {
    if e.as_db_error().is_some() {
        CatalogError::Storage {
            engine: "postgresql",
            source: Box::new(e),
        }
    } else {
        CatalogError::Unavailable {
            engine: "postgresql",
            source: Box::new(e),
        }
    }
}

fn gone() -> CatalogError {
    CatalogError::Storage {
        engine: "postgresql",
        source: "the catalog's connection thread has stopped".into(),
    }
}

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// The catalog's documents in a PostgreSQL database.
#[derive(Debug)]
pub struct Postgres {
    jobs: mpsc::Sender<Job>,
}

/// The connection the catalog's thread owns, made again when lost.
struct Connection {
    config: postgres::Config,
    client: Option<Client>,
}

impl Connection {
    fn client(&mut self) -> Result<&mut Client> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            let mut client = self.config.connect(NoTls).map_err(storage)?;
            migrate(&mut client)?;
            self.client = Some(client);
        }
        Ok(self.client.as_mut().expect("connected above"))
    }
}

impl Postgres {
    /// Connects to `url` (`postgres://user:password@host:port/database`) and brings the schema
    /// up to date.
    pub fn connect(url: &str) -> Result<Self> {
        let mut config: postgres::Config = url.parse().map_err(|e| CatalogError::Storage {
            engine: "postgresql",
            source: format!("the catalog URL is not a PostgreSQL connection string: {e}").into(),
        })?;
        // Bounds on every wait, so a server that stops answering is an error, not a hang: the
        // connection, each statement (a lock held elsewhere included), and a peer gone
        // silently.
        config
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_user_timeout(STATEMENT_TIMEOUT)
            .keepalives_idle(CONNECT_TIMEOUT);
        let options = format!(
            "{} -c statement_timeout={}",
            config.get_options().unwrap_or_default(),
            STATEMENT_TIMEOUT.as_millis()
        );
        config.options(options.trim());
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("kairos-catalog".into())
            .spawn(move || {
                let mut connection = Connection {
                    config,
                    client: None,
                };
                // Ends when the catalog is dropped.
                for job in queue {
                    job(&mut connection);
                }
            })
            .map_err(|e| CatalogError::Storage {
                engine: "postgresql",
                source: Box::new(e),
            })?;
        let catalog = Self { jobs };
        catalog.run(|_| Ok(()))?;
        Ok(catalog)
    }

    /// Runs `work` on the connection's thread and waits for its answer.
    fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Client) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (answer, answered) = mpsc::sync_channel(1);
        self.jobs
            .send(Box::new(move |connection: &mut Connection| {
                let _ = answer.send(connection.client().and_then(work));
            }))
            .map_err(|_| gone())?;
        answered.recv().map_err(|_| gone())?
    }
}

fn migrate(client: &mut Client) -> Result<()> {
    let mut tx = client.transaction().map_err(storage)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .map_err(storage)?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS kairos_schema (version BIGINT NOT NULL)")
        .map_err(storage)?;
    let applied: i64 = tx
        .query_one("SELECT COALESCE(MAX(version), 0) FROM kairos_schema", &[])
        .map_err(storage)?
        .get(0);
    for (version, migration) in pending_migrations(applied, MIGRATIONS)? {
        tx.batch_execute(migration).map_err(storage)?;
        tx.execute(
            "INSERT INTO kairos_schema (version) VALUES ($1)",
            &[&version],
        )
        .map_err(storage)?;
    }
    tx.commit().map_err(storage)
}

fn version_of(v: i64, name: &str) -> Result<u32> {
    u32::try_from(v).map_err(|_| CatalogError::Corrupt {
        name: name.to_string(),
        version: 0,
        reason: format!("version {v} is out of range"),
    })
}

/// Records a change in the transaction that makes it, and prunes what is more than
/// [`KEPT_CHANGES`] behind it.
fn record(
    tx: &mut postgres::Transaction<'_>,
    kind: &str,
    name: &str,
    version: Option<u32>,
    deleted: bool,
) -> Result<()> {
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&CHANGE_LOCK])
        .map_err(storage)?;
    let seq: i64 = tx
        .query_one(
            "INSERT INTO changes (kind, name, version, deleted) VALUES ($1, $2, $3, $4) \
             RETURNING seq",
            &[&kind, &name, &version.map(i64::from), &deleted],
        )
        .map_err(storage)?
        .get(0);
    let horizon = seq - KEPT_CHANGES;
    if horizon > 0 {
        tx.execute("DELETE FROM changes WHERE seq <= $1", &[&horizon])
            .map_err(storage)?;
        tx.execute(
            "UPDATE change_horizon SET pruned_through = GREATEST(pruned_through, $1)",
            &[&horizon],
        )
        .map_err(storage)?;
    }
    Ok(())
}

impl Backend for Postgres {
    fn next_version(&self, kind: &str, name: &str, body: Option<MakeBody>) -> Result<u32> {
        let (kind, name) = (kind.to_string(), name.to_string());
        self.run(move |client| {
            let mut tx = client.transaction().map_err(storage)?;
            // The counter's row lock orders writers of one name: each gets its own version.
            let version: i64 = tx
                .query_one(
                    "INSERT INTO document_versions (kind, name, last_version) VALUES ($1, $2, 1) \
                     ON CONFLICT (kind, name) \
                     DO UPDATE SET last_version = document_versions.last_version + 1 \
                     RETURNING last_version",
                    &[&kind, &name],
                )
                .map_err(storage)?
                .get(0);
            let version = version_of(version, &name)?;
            if let Some(body) = body {
                tx.execute(
                    "INSERT INTO documents (kind, name, version, body) VALUES ($1, $2, $3, $4)",
                    &[&kind, &name, &i64::from(version), &body(version)],
                )
                .map_err(storage)?;
                record(&mut tx, &kind, &name, Some(version), false)?;
            }
            tx.commit().map_err(storage)?;
            Ok(version)
        })
    }

    fn put(&self, kind: &str, name: &str, version: u32, body: &str) -> Result<()> {
        let (kind, name, body) = (kind.to_string(), name.to_string(), body.to_string());
        self.run(move |client| {
            let mut tx = client.transaction().map_err(storage)?;
            tx.execute(
                "INSERT INTO documents (kind, name, version, body) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (kind, name, version) DO UPDATE SET body = excluded.body",
                &[&kind, &name, &i64::from(version), &body],
            )
            .map_err(storage)?;
            record(&mut tx, &kind, &name, Some(version), false)?;
            tx.commit().map_err(storage)
        })
    }

    fn get(&self, kind: &str, name: &str, version: Option<u32>) -> Result<Option<(u32, String)>> {
        let (kind, name) = (kind.to_string(), name.to_string());
        self.run(move |client| {
            let row = client
                .query_opt(
                    "SELECT version, body FROM documents WHERE kind = $1 AND name = $2 \
                     AND ($3::BIGINT IS NULL OR version = $3) ORDER BY version DESC LIMIT 1",
                    &[&kind, &name, &version.map(i64::from)],
                )
                .map_err(storage)?;
            row.map(|r| Ok((version_of(r.get(0), &name)?, r.get(1))))
                .transpose()
        })
    }

    fn list(&self, kind: &str, name: Option<&str>) -> Result<Vec<StoredDoc>> {
        let (kind, name) = (kind.to_string(), name.map(str::to_string));
        self.run(move |client| {
            client
                .query(
                    "SELECT name, version, body FROM documents WHERE kind = $1 \
                     AND ($2::TEXT IS NULL OR name = $2) ORDER BY name, version",
                    &[&kind, &name],
                )
                .map_err(storage)?
                .into_iter()
                .map(|r| {
                    let name: String = r.get(0);
                    let version = version_of(r.get(1), &name)?;
                    Ok((name, version, r.get(2)))
                })
                .collect()
        })
    }

    fn delete(&self, docs: &[Doc<'_>]) -> Result<bool> {
        let docs: Vec<(String, String, Option<i64>)> = docs
            .iter()
            .map(|d| {
                (
                    d.kind.to_string(),
                    d.name.to_string(),
                    d.version.map(i64::from),
                )
            })
            .collect();
        self.run(move |client| {
            let mut tx = client.transaction().map_err(storage)?;
            let mut deleted = Vec::new();
            for (kind, name, version) in &docs {
                let n = tx
                    .execute(
                        "DELETE FROM documents WHERE kind = $1 AND name = $2 \
                         AND ($3::BIGINT IS NULL OR version = $3)",
                        &[kind, name, version],
                    )
                    .map_err(storage)?;
                deleted.push(n > 0);
            }
            // Recorded last, as every write does, so the change lock is the last one taken.
            for ((kind, name, version), _) in docs.iter().zip(&deleted).filter(|(_, d)| **d) {
                let version = version.map(|v| version_of(v, name)).transpose()?;
                record(&mut tx, kind, name, version, true)?;
            }
            let first = deleted.first().copied();
            tx.commit().map_err(storage)?;
            Ok(first.unwrap_or(false))
        })
    }

    fn engine(&self) -> &'static str {
        "postgresql"
    }

    fn claim(&self, name: &str, slot: u64) -> Result<bool> {
        let name = name.to_string();
        let slot = i64::try_from(slot).map_err(|_| CatalogError::Storage {
            engine: "postgresql",
            source: format!("slot {slot} is out of range").into(),
        })?;
        self.run(move |client| {
            // The row lock of the upsert orders claimers of one name: the first moves the
            // slot, the rest find it moved.
            let advanced = client
                .execute(
                    "INSERT INTO claims (name, slot) VALUES ($1, $2) \
                     ON CONFLICT (name) DO UPDATE SET slot = EXCLUDED.slot \
                     WHERE claims.slot < EXCLUDED.slot",
                    &[&name, &slot],
                )
                .map_err(storage)?;
            Ok(advanced == 1)
        })
    }

    fn ping(&self) -> Result<()> {
        self.run(|client| client.batch_execute("SELECT 1").map_err(storage))
    }

    fn changes_since(&self, seq: i64) -> Result<Changes> {
        self.run(move |client| {
            // One snapshot for the horizon and the rows.
            let mut tx = client
                .build_transaction()
                .isolation_level(postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .map_err(storage)?;
            let pruned_through: i64 = tx
                .query_one("SELECT pruned_through FROM change_horizon", &[])
                .map_err(storage)?
                .get(0);
            let changes = tx
                .query(
                    "SELECT seq, kind, name, version, deleted FROM changes WHERE seq > $1 \
                     ORDER BY seq",
                    &[&seq],
                )
                .map_err(storage)?
                .into_iter()
                .map(|r| {
                    let name: String = r.get(2);
                    let version: Option<i64> = r.get(3);
                    let version = version.map(|v| version_of(v, &name)).transpose()?;
                    Ok(Change {
                        seq: r.get(0),
                        kind: r.get(1),
                        name,
                        version,
                        deleted: r.get(4),
                    })
                })
                .collect::<Result<_>>()?;
            tx.commit().map_err(storage)?;
            Ok(Changes {
                changes,
                complete: seq >= pruned_through,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestDatabase;

    /// Every statement of the catalog's connection is bounded, so a lock held elsewhere or a
    /// server that stops answering ends in an error.
    #[test]
    fn the_connection_bounds_its_statements() {
        let Some(db) = TestDatabase::create("kairos_catalog_unit") else {
            eprintln!("skipped: KAIROS_TEST_POSTGRES_URL is not set");
            return;
        };
        let catalog = Postgres::connect(&db.url()).unwrap();
        let timeout: String = catalog
            .run(|client| {
                Ok(client
                    .query_one("SHOW statement_timeout", &[])
                    .map_err(storage)?
                    .get(0))
            })
            .unwrap();
        assert_eq!(timeout, "30s");
    }
}
