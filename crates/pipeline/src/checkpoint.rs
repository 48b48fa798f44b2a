//! The embedded checkpoint store: one redb file per source partition of a pipeline version,
//! holding the partition's last checkpoint metadata and its live windows' state. One write
//! transaction per checkpoint, durable on commit, so a checkpoint is there whole or not at all.
//!
//! redb locks its file while it is open, which makes the file a partition's ownership token
//! among processes: a worker taking a partition over waits until the previous owner closed it
//! (let the partition go, or died), so two workers never write one partition's checkpoint.

use std::path::Path;
use std::time::{Duration, Instant};

use kairos_store::{Result, StoreError};
use kairos_stream::StateDelta;
use kairos_stream::checkpoint::CheckpointMeta;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const WINDOWS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("windows");
const LAST: &str = "last";

fn internal(e: impl std::fmt::Display) -> StoreError {
    StoreError::Internal(format!("checkpoint store: {e}"))
}

/// A loaded checkpoint: its metadata and its window states (state key, encoded window).
pub type Loaded = (CheckpointMeta, Vec<(Vec<u8>, Vec<u8>)>);

#[derive(Debug)]
pub struct CheckpointStore {
    db: Database,
}

impl CheckpointStore {
    pub fn open(path: &Path) -> Result<CheckpointStore> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(internal)?;
        }
        Ok(CheckpointStore {
            db: Database::create(path).map_err(internal)?,
        })
    }

    /// Opens `path`, waiting up to `wait` while another process holds it open.
    pub async fn open_when_free(path: &Path, wait: Duration) -> Result<CheckpointStore> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(internal)?;
            }
            match Database::create(path) {
                Ok(db) => return Ok(CheckpointStore { db }),
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

    /// The last checkpoint, if any.
    pub fn load(&self) -> Result<Option<Loaded>> {
        let txn = self.db.begin_read().map_err(internal)?;
        let meta = match txn.open_table(META) {
            Ok(t) => t.get(LAST).map_err(internal)?.map(|v| v.value().to_vec()),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(internal(e)),
        };
        let Some(meta) = meta else { return Ok(None) };
        let meta: CheckpointMeta = postcard::from_bytes(&meta)
            .map_err(|e| internal(format!("metadata does not decode: {e}")))?;
        let mut windows = Vec::new();
        match txn.open_table(WINDOWS) {
            Ok(t) => {
                for entry in t.iter().map_err(internal)? {
                    let (k, v) = entry.map_err(internal)?;
                    windows.push((k.value().to_vec(), v.value().to_vec()));
                }
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(internal(e)),
        }
        Ok(Some((meta, windows)))
    }

    /// Writes a checkpoint whole: the state delta and the metadata, in one durable commit.
    pub fn commit(&self, meta: &CheckpointMeta, delta: &StateDelta) -> Result<()> {
        let bytes = postcard::to_allocvec(meta).map_err(internal)?;
        let txn = self.db.begin_write().map_err(internal)?;
        {
            let mut windows = txn.open_table(WINDOWS).map_err(internal)?;
            for (k, v) in &delta.puts {
                windows
                    .insert(k.as_slice(), v.as_slice())
                    .map_err(internal)?;
            }
            for k in &delta.deletes {
                windows.remove(k.as_slice()).map_err(internal)?;
            }
            let mut table = txn.open_table(META).map_err(internal)?;
            table.insert(LAST, bytes.as_slice()).map_err(internal)?;
        }
        txn.commit().map_err(internal)
    }
}
