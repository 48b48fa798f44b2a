//! The embedded online store on redb: one table per feature-group version, plus a table of
//! materialiser offsets written in the same transaction as the rows.
//!
//! Materialiser commits are made durable (synced) at most once every [`SYNC_EVERY`]; the ones
//! between are atomic but not synced. The store is derived from the feature-group logs, which
//! hold every acknowledged write: after a crash the store is as of its last synced commit —
//! rows and offsets together — and the materialiser applies the log again from there. A sync
//! per commit cost a small, frequent writer (a pipeline's rows every 25 ms) 30–100 ms of
//! visibility.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kairos_types::{OnlineRow, TableId};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, TableError};

use crate::{KeyPart, KeyedRow, OnlineError, OnlineStore, Result, Step, latest_per_key};

const OFFSETS: TableDefinition<&str, u64> = TableDefinition::new("__offsets");

fn table_name(table: &TableId) -> String {
    format!("fg/{}/v{}", table.name, table.version)
}

/// The key of a log partition's offset: the table's name for partition 0 (as before the log
/// had partitions), `<name>#<p>` for the others.
fn offset_key(name: &str, partition: u32) -> String {
    if partition == 0 {
        name.to_string()
    } else {
        format!("{name}#{partition}")
    }
}

fn err(e: impl std::fmt::Display) -> OnlineError {
    OnlineError::Redb(e.to_string())
}

/// The longest a materialiser commit stays unsynced.
pub const SYNC_EVERY: Duration = Duration::from_secs(1);

/// What redb may cache of the online store in memory: the pages of hot keys. redb's default,
/// 1 GiB, is more than a laptop-sized server should hold on its own; reads past it come from
/// the OS's page cache.
const CACHE_BYTES: usize = 256 << 20;

/// The online store in one redb file.
#[derive(Debug, Clone)]
pub struct RedbStore {
    db: Arc<Database>,
    /// When a materialiser commit was last synced.
    synced_at: Arc<Mutex<Instant>>,
}

impl RedbStore {
    pub fn open(path: &Path) -> Result<Self> {
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(path)
            .map_err(err)?;
        Ok(Self {
            db: Arc::new(db),
            synced_at: Arc::new(Mutex::new(Instant::now())),
        })
    }

    /// The read path without an executor hop: redb reads are a few microseconds.
    pub fn get_many_blocking(
        &self,
        table: &TableId,
        keys: &[Vec<u8>],
    ) -> Result<Vec<Option<OnlineRow>>> {
        let name = table_name(table);
        let txn = self.db.begin_read().map_err(err)?;
        let rows = match txn.open_table(TableDefinition::<&[u8], &[u8]>::new(&name)) {
            Ok(rows) => rows,
            Err(TableError::TableDoesNotExist(_)) => return Ok(vec![None; keys.len()]),
            Err(e) => return Err(err(e)),
        };
        keys.iter()
            .map(|key| match rows.get(key.as_slice()).map_err(err)? {
                Some(bytes) => OnlineRow::decode(bytes.value())
                    .map(Some)
                    .map_err(OnlineError::Corrupt),
                None => Ok(None),
            })
            .collect()
    }

    fn apply_blocking(&self, table: &TableId, step: Step, rows: Vec<KeyedRow>) -> Result<()> {
        let name = table_name(table);
        let offset_key = offset_key(&name, step.partition);
        let mut txn = self.db.begin_write().map_err(err)?;
        let mut synced_at = self.synced_at.lock().expect("lock");
        let sync = synced_at.elapsed() >= SYNC_EVERY;
        if !sync {
            txn.set_durability(Durability::None).map_err(err)?;
        }
        {
            let mut offsets = txn.open_table(OFFSETS).map_err(err)?;
            let at = offsets
                .get(offset_key.as_str())
                .map_err(err)?
                .map(|v| v.value());
            let Some(lacking) = step.lacking(table, at)? else {
                return Ok(());
            };
            offsets
                .insert(offset_key.as_str(), step.through)
                .map_err(err)?;
            // Key order makes a bulk upsert walk the B-tree in order rather than at random.
            let lacked = rows.into_iter().filter(|(_, row)| row.offset >= lacking);
            let mut latest: Vec<KeyedRow> = latest_per_key(lacked.collect()).into_iter().collect();
            latest.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            let mut stored = txn
                .open_table(TableDefinition::<&[u8], &[u8]>::new(&name))
                .map_err(err)?;
            for (key, row) in latest {
                // Insert first and put the old row back if it was newer: one B-tree walk for
                // the common case of a fresh or superseded key instead of a get and an insert.
                let previous = stored
                    .insert(key.as_slice(), row.encode().as_slice())
                    .map_err(err)?
                    .map(|old| old.value().to_vec());
                if let Some(previous) = previous {
                    let current = OnlineRow::decode(&previous).map_err(OnlineError::Corrupt)?;
                    if !row.supersedes(&current) {
                        stored
                            .insert(key.as_slice(), previous.as_slice())
                            .map_err(err)?;
                    }
                }
            }
        }
        txn.commit().map_err(err)?;
        if sync {
            *synced_at = Instant::now();
        }
        Ok(())
    }

    /// Syncs the commits made since the last synced one (an empty durable commit persists
    /// them all).
    pub async fn sync(&self) -> Result<()> {
        self.blocking(|store| {
            // The write transaction first, as in `apply_blocking`: one lock order.
            let txn = store.db.begin_write().map_err(err)?;
            let mut synced_at = store.synced_at.lock().expect("lock");
            txn.commit().map_err(err)?;
            *synced_at = Instant::now();
            Ok(())
        })
        .await
    }

    fn offset_blocking(&self, table: &TableId, partition: u32) -> Result<Option<u64>> {
        let txn = self.db.begin_read().map_err(err)?;
        let offsets = match txn.open_table(OFFSETS) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(err(e)),
        };
        Ok(offsets
            .get(offset_key(&table_name(table), partition).as_str())
            .map_err(err)?
            .map(|v| v.value()))
    }

    fn scan_blocking(&self, table: &TableId, part: KeyPart) -> Result<Vec<KeyedRow>> {
        let name = table_name(table);
        let txn = self.db.begin_read().map_err(err)?;
        let rows = match txn.open_table(TableDefinition::<&[u8], &[u8]>::new(&name)) {
            Ok(rows) => rows,
            Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(err(e)),
        };
        let mut held = Vec::new();
        for entry in rows.iter().map_err(err)? {
            let (key, value) = entry.map_err(err)?;
            if part.holds(key.value()) {
                let row = OnlineRow::decode(value.value()).map_err(OnlineError::Corrupt)?;
                held.push((key.value().to_vec(), row));
            }
        }
        Ok(held)
    }

    fn drop_blocking(&self, table: &TableId) -> Result<()> {
        let name = table_name(table);
        let txn = self.db.begin_write().map_err(err)?;
        txn.delete_table(TableDefinition::<&[u8], &[u8]>::new(&name))
            .map_err(err)?;
        {
            let mut offsets = txn.open_table(OFFSETS).map_err(err)?;
            offsets.remove(name.as_str()).map_err(err)?;
            // The other partitions' keys: `<name>#…`, all before `<name>$`.
            let (first, end) = (format!("{name}#"), format!("{name}$"));
            offsets
                .retain_in(first.as_str()..end.as_str(), |_, _| false)
                .map_err(err)?;
        }
        txn.commit().map_err(err)
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(RedbStore) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || f(store))
            .await
            .map_err(err)?
    }
}

impl OnlineStore for RedbStore {
    async fn apply(&self, table: &TableId, step: Step, rows: Vec<KeyedRow>) -> Result<()> {
        let table = table.clone();
        self.blocking(move |s| s.apply_blocking(&table, step, rows))
            .await
    }

    async fn get_many(&self, table: &TableId, keys: &[Vec<u8>]) -> Result<Vec<Option<OnlineRow>>> {
        self.get_many_blocking(table, keys)
    }

    async fn offset(&self, table: &TableId, partition: u32) -> Result<Option<u64>> {
        self.offset_blocking(table, partition)
    }

    async fn scan(&self, table: &TableId, part: KeyPart) -> Result<Vec<KeyedRow>> {
        let table = table.clone();
        self.blocking(move |s| s.scan_blocking(&table, part)).await
    }

    async fn drop_table(&self, table: &TableId) -> Result<()> {
        let table = table.clone();
        self.blocking(move |s| s.drop_blocking(&table)).await
    }
}
