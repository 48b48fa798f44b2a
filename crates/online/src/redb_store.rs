//! The embedded online store on redb: one table per feature-group version, plus a table of
//! materialiser offsets written in the same transaction as the rows.
//!
//! Materialiser commits are made durable (synced) at most once every [`SYNC_EVERY`]; the ones
//! between are atomic but not synced. The store is derived from the feature-group logs, which
//! hold every acknowledged write: after a crash the store is as of its last synced commit —
//! rows and offsets together — and the materialiser applies the log again from there. A sync
//! per commit cost a small, frequent writer (a pipeline's rows every 25 ms) 30–100 ms of
//! visibility.
//!
//! Steps are written by group commit: redb has one writer at a time, and the steps that queued
//! while it was busy go into its next transaction together. A transaction rewrites every page
//! it touches, and the steps of a log's many partitions (Kafka) touch pages all over a table:
//! one transaction per step rewrote most of the table once per partition. The writer is then
//! the one thread every step waits on, so a step's rows are made ready before they queue, on the
//! caller's thread ([`Prepared`]): the writer only inserts them.

use std::ops::Range;
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
    /// The steps for the store's writer thread, which ends once every clone is dropped.
    writer: std::sync::mpsc::Sender<Queued>,
}

/// A step waiting for the writer, and where its outcome goes: done, refused, or the writer's
/// panic (which the step's caller raises again, as if it had written the step itself).
#[derive(Debug)]
struct Queued {
    table: TableId,
    step: Step,
    rows: Prepared,
    done: tokio::sync::oneshot::Sender<std::result::Result<Result<()>, String>>,
}

/// A step's rows as the writer inserts them: the latest row per key, in key order, each
/// encoded, all in one buffer (so the writer neither folds, sorts, encodes nor frees them a row
/// at a time).
#[derive(Debug, Default)]
struct Prepared {
    bytes: Vec<u8>,
    rows: Vec<PreparedRow>,
}

#[derive(Debug)]
struct PreparedRow {
    key: Range<usize>,
    row: Range<usize>,
    /// The row's [`OnlineRow::rank`], to compare with a stored row of the key.
    rank: (i64, u64),
    offset: u64,
}

impl Prepared {
    /// `rows` (in log order) folded and encoded.
    fn of(rows: Vec<KeyedRow>) -> Prepared {
        let latest = latest_per_key(rows);
        let mut prepared = Prepared {
            bytes: Vec::with_capacity(latest.len() * 128),
            rows: Vec::with_capacity(latest.len()),
        };
        for (key, row) in latest {
            let key_at = prepared.bytes.len();
            prepared.bytes.extend_from_slice(&key);
            let row_at = prepared.bytes.len();
            row.encode_onto(&mut prepared.bytes);
            prepared.rows.push(PreparedRow {
                key: key_at..row_at,
                row: row_at..prepared.bytes.len(),
                rank: row.rank(),
                offset: row.offset,
            });
        }
        prepared
    }
}

impl RedbStore {
    pub fn open(path: &Path) -> Result<Self> {
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(path)
            .map_err(err)?;
        let db = Arc::new(db);
        let synced_at = Arc::new(Mutex::new(Instant::now()));
        let (writer, steps) = std::sync::mpsc::channel();
        let (weak, synced) = (Arc::downgrade(&db), synced_at.clone());
        std::thread::Builder::new()
            .name("redb-writer".into())
            .spawn(move || RedbStore::write_steps(steps, weak, synced))
            .map_err(err)?;
        Ok(Self {
            db,
            synced_at,
            writer,
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

    /// The writer thread: takes the steps as they come, each time all that queued while it
    /// wrote, and writes them in one transaction; it ends when the last clone of the store is
    /// dropped. It holds the database only while it writes, so a store dropped once its steps
    /// are answered is closed, and can be opened again at once.
    fn write_steps(
        steps: std::sync::mpsc::Receiver<Queued>,
        db: std::sync::Weak<Database>,
        synced_at: Arc<Mutex<Instant>>,
    ) {
        while let Ok(first) = steps.recv() {
            let queued = std::iter::once(first).chain(steps.try_iter());
            let (batch, done): (Vec<_>, Vec<_>) =
                queued.map(|q| ((q.table, q.step, q.rows), q.done)).unzip();
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let db = db.upgrade().ok_or_else(|| err("the store is closed"))?;
                RedbStore::apply_blocking(&db, &synced_at, batch)
            }));
            match outcome {
                Ok(Ok(each)) => {
                    for (done, result) in done.into_iter().zip(each) {
                        let _ = done.send(Ok(result));
                    }
                }
                Ok(Err(e)) => {
                    let why = e.to_string();
                    for done in done {
                        let _ = done.send(Ok(Err(OnlineError::Redb(why.clone()))));
                    }
                }
                Err(panic) => {
                    let why = kairos_types::panic::message(panic.as_ref());
                    for done in done {
                        let _ = done.send(Err(why.clone()));
                    }
                }
            }
        }
    }

    /// Writes `steps` in one transaction: each step's rows and its partition's new offset, or,
    /// for a step whose partition moved since it was planned, nothing of it (its outcome says
    /// so, and the others are written all the same).
    fn apply_blocking(
        db: &Database,
        synced_at: &Mutex<Instant>,
        steps: Vec<(TableId, Step, Prepared)>,
    ) -> Result<Vec<Result<()>>> {
        let mut txn = db.begin_write().map_err(err)?;
        let mut synced_at = synced_at.lock().expect("lock");
        let sync = synced_at.elapsed() >= SYNC_EVERY;
        if !sync {
            txn.set_durability(Durability::None).map_err(err)?;
        }
        let mut outcomes = Vec::with_capacity(steps.len());
        {
            let mut offsets = txn.open_table(OFFSETS).map_err(err)?;
            let mut lacked: std::collections::BTreeMap<String, Vec<(Prepared, u64)>> =
                Default::default();
            for (table, step, rows) in steps {
                let name = table_name(&table);
                let offset_key = offset_key(&name, step.partition);
                let at = offsets
                    .get(offset_key.as_str())
                    .map_err(err)?
                    .map(|v| v.value());
                let lacking = match step.lacking(&table, at) {
                    Ok(Some(lacking)) => lacking,
                    Ok(None) => {
                        outcomes.push(Ok(()));
                        continue;
                    }
                    Err(refused) => {
                        outcomes.push(Err(refused));
                        continue;
                    }
                };
                offsets
                    .insert(offset_key.as_str(), step.through)
                    .map_err(err)?;
                // The latest row of a key that the store lacks supersedes what it holds, or
                // the store holds a row that does: rows before `lacking` are merged already.
                lacked.entry(name).or_default().push((rows, lacking));
                outcomes.push(Ok(()));
            }
            for (name, steps) in lacked {
                let mut stored = txn
                    .open_table(TableDefinition::<&[u8], &[u8]>::new(&name))
                    .map_err(err)?;
                // Each step's rows in key order walk the B-tree in order rather than at random.
                // The steps of one transaction hold different partitions, so different keys.
                for (prepared, lacking) in steps {
                    for row in prepared.rows.iter().filter(|row| row.offset >= lacking) {
                        let key = &prepared.bytes[row.key.clone()];
                        // Insert first and put the old row back if it was newer: one B-tree
                        // walk for the common case of a fresh or superseded key instead of a
                        // get and an insert.
                        let previous = stored
                            .insert(key, &prepared.bytes[row.row.clone()])
                            .map_err(err)?
                            .map(|old| old.value().to_vec());
                        if let Some(previous) = previous {
                            let current =
                                OnlineRow::decode(&previous).map_err(OnlineError::Corrupt)?;
                            if row.rank <= current.rank() {
                                stored.insert(key, previous.as_slice()).map_err(err)?;
                            }
                        }
                    }
                }
            }
        }
        txn.commit().map_err(err)?;
        if sync {
            *synced_at = Instant::now();
        }
        Ok(outcomes)
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
        let (done, outcome) = tokio::sync::oneshot::channel();
        let queued = Queued {
            table: table.clone(),
            step,
            rows: Prepared::of(rows),
            done,
        };
        if self.writer.send(queued).is_err() {
            return Err(err("the writer stopped"));
        }
        match outcome.await {
            Ok(Ok(result)) => result,
            Ok(Err(panicked)) => panic!("{panicked}"),
            Err(_) => Err(err("the writer stopped before it wrote the step")),
        }
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
