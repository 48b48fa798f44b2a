//! The embedded checkpoint store: one redb file per source partition of a pipeline version,
//! holding the partition's last checkpoint metadata and its live windows' state. One write
//! transaction per checkpoint, durable on commit, so a checkpoint is there whole or not at all.
//!
//! The window state is log-structured: a checkpoint writes its delta (windows changed and
//! removed) as one record under its epoch, and the records are folded into the base table of
//! windows once they add up to [`FOLD_AT`] bytes. Written in place, a checkpoint's changed
//! windows land on as many B-tree pages as there are windows (keys are spread over the whole
//! tree), and a 25 ms checkpoint of a thousand windows spent 15–60 ms writing and syncing
//! them; as one record it writes a few contiguous pages. A fold runs on a thread of its own:
//! it merges the records up to some epoch from a read snapshot (most of its time), then in one
//! write transaction puts the merged windows into the base and drops those records — so
//! checkpoints wait only for that last part, and a load sees the base and the records either
//! before the fold or after it.
//!
//! redb locks its file while it is open, which makes the file a partition's ownership token
//! among processes: a worker taking a partition over waits until the previous owner closed it
//! (let the partition go, or died), so two workers never write one partition's checkpoint.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kairos_store::{Result, StoreError};
use kairos_stream::StateDelta;
use kairos_stream::checkpoint::CheckpointMeta;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::{DeltaRecord, Loaded, apply, decode_delta, internal};

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// The base: state key → encoded window, as of the last fold.
const WINDOWS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("windows");
/// Epoch → the delta that checkpoint wrote after the base.
const DELTAS: TableDefinition<u64, &[u8]> = TableDefinition::new("deltas");
/// The last checkpoint's metadata.
const LAST: &str = "last-v2";
/// Where versions before output logs of several partitions kept it, in their layout
/// ([`CheckpointMeta::decode_one_partition`]); the next commit removes it.
const LAST_ONE_PARTITION: &str = "last";

/// Delta bytes past which a checkpoint folds the deltas into the base.
pub const FOLD_AT: u64 = 64 << 20;

/// What redb may cache of a checkpoint file in memory. Its default, 1 GiB, kept every delta
/// page a checkpoint wrote until the fold (up to [`FOLD_AT`] a partition): memory that grew
/// with each checkpoint in the soak and is read back only by a fold or a restart, which the
/// OS's page cache serves as well.
const CACHE_BYTES: usize = 8 << 20;

fn open_db(path: &Path) -> std::result::Result<Database, redb::DatabaseError> {
    Database::builder().set_cache_size(CACHE_BYTES).create(path)
}

#[derive(Debug)]
pub struct LocalCheckpoints {
    db: Arc<Database>,
    /// Bytes of delta records not folded into the base yet (as far as this store knows).
    unfolded: u64,
    fold_at: u64,
    /// A fold running on its thread; it answers the bytes it folded.
    folding: Option<JoinHandle<Result<u64>>>,
}

impl LocalCheckpoints {
    pub fn open(path: &Path) -> Result<LocalCheckpoints> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(internal)?;
        }
        Self::with_db(open_db(path).map_err(internal)?)
    }

    /// Opens `path`, waiting up to `wait` while another process holds it open.
    pub async fn open_when_free(path: &Path, wait: Duration) -> Result<LocalCheckpoints> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(internal)?;
            }
            match open_db(path) {
                Ok(db) => return Self::with_db(db),
                Err(redb::DatabaseError::DatabaseAlreadyOpen) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                    return Err(StoreError::Unavailable(format!(
                        "checkpoint {} is still held by another worker after {wait:?}",
                        path.display()
                    )));
                }
                Err(e) => return Err(internal(e)),
            }
        }
    }

    fn with_db(db: Database) -> Result<LocalCheckpoints> {
        let mut unfolded = 0;
        let txn = db.begin_read().map_err(internal)?;
        match txn.open_table(DELTAS) {
            Ok(t) => {
                for entry in t.iter().map_err(internal)? {
                    unfolded += entry.map_err(internal)?.1.value().len() as u64;
                }
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(internal(e)),
        }
        drop(txn);
        Ok(LocalCheckpoints {
            db: Arc::new(db),
            unfolded,
            fold_at: FOLD_AT,
            folding: None,
        })
    }

    /// Folds the deltas into the base once they pass `bytes` (tests make it small).
    pub fn fold_at(mut self, bytes: u64) -> LocalCheckpoints {
        self.fold_at = bytes;
        self
    }

    /// The last checkpoint, if any: the base with every delta applied in epoch order.
    pub fn load(&self) -> Result<Option<Loaded>> {
        let txn = self.db.begin_read().map_err(internal)?;
        let meta = match txn.open_table(META) {
            Ok(t) => match t.get(LAST).map_err(internal)? {
                Some(v) => Some(postcard::from_bytes(v.value())),
                None => t
                    .get(LAST_ONE_PARTITION)
                    .map_err(internal)?
                    .map(|v| CheckpointMeta::decode_one_partition(v.value())),
            },
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(internal(e)),
        };
        let Some(meta) = meta else { return Ok(None) };
        let meta = meta.map_err(|e| internal(format!("metadata does not decode: {e}")))?;
        let mut windows = BTreeMap::new();
        match txn.open_table(WINDOWS) {
            Ok(t) => {
                for entry in t.iter().map_err(internal)? {
                    let (k, v) = entry.map_err(internal)?;
                    windows.insert(k.value().to_vec(), v.value().to_vec());
                }
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(internal(e)),
        }
        match txn.open_table(DELTAS) {
            Ok(t) => {
                for entry in t.iter().map_err(internal)? {
                    let (_, bytes) = entry.map_err(internal)?;
                    apply(&mut windows, decode_delta(bytes.value())?);
                }
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(internal(e)),
        }
        Ok(Some((meta, windows.into_iter().collect())))
    }

    /// Writes a checkpoint whole: its delta as one record and the metadata, in one durable
    /// commit. Starts a fold when the records have grown past the fold size.
    pub fn commit(&mut self, meta: &CheckpointMeta, delta: &StateDelta) -> Result<()> {
        let meta_bytes = postcard::to_allocvec(meta).map_err(internal)?;
        let txn = self.db.begin_write().map_err(internal)?;
        let mut written = 0;
        {
            if !delta.is_empty() {
                let record = DeltaRecord::of(delta);
                let bytes = postcard::to_allocvec(&record).map_err(internal)?;
                let mut deltas = txn.open_table(DELTAS).map_err(internal)?;
                deltas
                    .insert(meta.epoch, bytes.as_slice())
                    .map_err(internal)?;
                written = bytes.len() as u64;
            }
            let mut table = txn.open_table(META).map_err(internal)?;
            table
                .insert(LAST, meta_bytes.as_slice())
                .map_err(internal)?;
            table.remove(LAST_ONE_PARTITION).map_err(internal)?;
        }
        txn.commit().map_err(internal)?;
        self.unfolded += written;
        if self.folding.as_ref().is_some_and(JoinHandle::is_finished) {
            self.finish_fold()?;
        }
        if self.folding.is_none() && self.unfolded >= self.fold_at {
            let db = self.db.clone();
            let thread = std::thread::Builder::new()
                .name("checkpoint-fold".into())
                .spawn(move || fold(&db))
                .map_err(internal)?;
            self.folding = Some(thread);
        }
        Ok(())
    }

    /// Waits for a running fold, if any.
    pub fn finish_fold(&mut self) -> Result<()> {
        if let Some(thread) = self.folding.take() {
            let folded = thread
                .join()
                .map_err(|_| internal("the fold thread panicked"))??;
            self.unfolded = self.unfolded.saturating_sub(folded);
        }
        Ok(())
    }
}

impl Drop for LocalCheckpoints {
    /// A fold holds the database; it ends before the store does, so the file is let go (and
    /// another worker can take the partition) only when nothing writes it any more.
    fn drop(&mut self) {
        if let Err(e) = self.finish_fold() {
            tracing::warn!(error = %e, "checkpoint fold failed; the deltas stay and are folded later");
        }
    }
}

/// Folds the delta records there are now into the base; returns their bytes. Each window's
/// last state only is written (most were written many times over), in key order, so the
/// base's B-tree is walked once.
fn fold(db: &Database) -> Result<u64> {
    let started = Instant::now();
    let txn = db.begin_read().map_err(internal)?;
    let mut latest: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
    let mut through = None;
    let mut bytes = 0;
    match txn.open_table(DELTAS) {
        Ok(deltas) => {
            for entry in deltas.iter().map_err(internal)? {
                let (epoch, record) = entry.map_err(internal)?;
                through = Some(epoch.value());
                bytes += record.value().len() as u64;
                let record = decode_delta(record.value())?;
                latest.extend(record.puts.into_iter().map(|(k, v)| (k, Some(v))));
                latest.extend(record.deletes.into_iter().map(|k| (k, None)));
            }
        }
        Err(redb::TableError::TableDoesNotExist(_)) => {}
        Err(e) => return Err(internal(e)),
    }
    drop(txn);
    let Some(through) = through else {
        return Ok(0);
    };
    let merged = started.elapsed();
    let txn = db.begin_write().map_err(internal)?;
    {
        let mut windows = txn.open_table(WINDOWS).map_err(internal)?;
        for (k, v) in &latest {
            match v {
                Some(v) => windows
                    .insert(k.as_slice(), v.as_slice())
                    .map(drop)
                    .map_err(internal)?,
                None => windows.remove(k.as_slice()).map(drop).map_err(internal)?,
            }
        }
        let mut deltas = txn.open_table(DELTAS).map_err(internal)?;
        deltas
            .retain(|epoch, _| epoch > through)
            .map_err(internal)?;
    }
    txn.commit().map_err(internal)?;
    tracing::debug!(
        bytes,
        windows = latest.len(),
        merge_ms = merged.as_millis() as u64,
        write_ms = (started.elapsed() - merged).as_millis() as u64,
        "checkpoint deltas folded"
    );
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{meta, random_delta};
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Random puts and deletes over a small key space, checkpointed with and without folds
    /// and reopened at random points, load what a map given the same changes holds.
    #[test]
    fn a_loaded_checkpoint_holds_the_windows_every_delta_left_folded_or_not() {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        for fold_at in [u64::MAX, 4096, 1] {
            let path = dir.path().join(format!("p{fold_at}.redb"));
            let mut store = LocalCheckpoints::open(&path).unwrap().fold_at(fold_at);
            let mut expected: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
            for epoch in 1..=60u64 {
                let delta = random_delta(&mut rng, &mut expected);
                store.commit(&meta(epoch), &delta).unwrap();
                if rng.random_bool(0.2) {
                    store.finish_fold().unwrap();
                }
                if rng.random_bool(0.1) {
                    drop(store);
                    store = LocalCheckpoints::open(&path).unwrap().fold_at(fold_at);
                }
                let (m, windows) = store.load().unwrap().unwrap();
                assert_eq!(m, meta(epoch));
                let got: BTreeMap<Vec<u8>, Vec<u8>> = windows.into_iter().collect();
                assert_eq!(got, expected, "fold at {fold_at}, epoch {epoch}");
            }
        }
    }
}
