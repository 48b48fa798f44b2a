//! Where a pipeline keeps its partitions' checkpoints (the protocol itself is
//! `kairos_stream::checkpoint`'s): one store per source partition of a pipeline version,
//! holding the partition's last checkpoint metadata and its live windows' state.
//!
//! - [`LocalCheckpoints`]: a redb file in the data dir, the embedded default. Its file lock is
//!   the partition's ownership token among the processes of one machine.
//! - [`SharedCheckpoints`]: objects in the cluster's bucket, which whichever replica takes a
//!   partition over can read. Ownership there is an *owner epoch* in the partition's head
//!   object, raised by each new owner and checked by every commit (a conditional PUT on the
//!   head's ETag), so a stale owner is fenced at its next commit rather than trusted to have
//!   stopped.
//!
//! Both keep the window state log-structured: each checkpoint writes its delta (windows changed
//! and removed) as one record, and the records are folded into a base once they add up.

mod local;
mod shared;

use std::collections::BTreeMap;

use kairos_store::{Result, StoreError};
use kairos_stream::StateDelta;
use kairos_stream::checkpoint::CheckpointMeta;
use serde::{Deserialize, Serialize};

pub use local::{FOLD_AT, LocalCheckpoints};
pub use shared::SharedCheckpoints;

/// A loaded checkpoint: its metadata and its window states (state key, encoded window).
pub type Loaded = (CheckpointMeta, Vec<(Vec<u8>, Vec<u8>)>);

/// What became of a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Committed {
    /// Durable: the checkpoint is the partition's last.
    Written,
    /// Refused whole: another worker has taken the partition over since this one did, so this
    /// one must let it go (and deliver nothing of the refused checkpoint).
    Fenced(String),
}

/// One partition's checkpoint store.
#[derive(Debug)]
pub enum Checkpoints {
    Local(LocalCheckpoints),
    Shared(SharedCheckpoints),
}

impl Checkpoints {
    /// The last checkpoint, if any.
    pub async fn load(&self) -> Result<Option<Loaded>> {
        match self {
            Checkpoints::Local(store) => store.load(),
            Checkpoints::Shared(store) => store.load().await,
        }
    }

    /// Writes a checkpoint whole, or nothing of it.
    pub async fn commit(&mut self, meta: &CheckpointMeta, delta: &StateDelta) -> Result<Committed> {
        match self {
            Checkpoints::Local(store) => store.commit(meta, delta).map(|()| Committed::Written),
            Checkpoints::Shared(store) => store.commit(meta, delta).await,
        }
    }
}

/// One checkpoint's change to the window state, as stored.
#[derive(Serialize, Deserialize)]
struct DeltaRecord {
    puts: Vec<(Vec<u8>, Vec<u8>)>,
    deletes: Vec<Vec<u8>>,
}

impl DeltaRecord {
    fn of(delta: &StateDelta) -> DeltaRecord {
        DeltaRecord {
            puts: delta.puts.clone(),
            deletes: delta.deletes.clone(),
        }
    }
}

fn internal(e: impl std::fmt::Display) -> StoreError {
    StoreError::Internal(format!("checkpoint store: {e}"))
}

fn decode_delta(bytes: &[u8]) -> Result<DeltaRecord> {
    postcard::from_bytes(bytes).map_err(|e| internal(format!("a delta does not decode: {e}")))
}

fn apply(windows: &mut BTreeMap<Vec<u8>, Vec<u8>>, record: DeltaRecord) {
    for (k, v) in record.puts {
        windows.insert(k, v);
    }
    for k in record.deletes {
        windows.remove(&k);
    }
}

#[cfg(test)]
mod test_support {
    use std::collections::BTreeMap;

    use kairos_stream::StateDelta;
    use kairos_stream::checkpoint::CheckpointMeta;
    use rand::Rng;

    pub(super) fn meta(epoch: u64) -> CheckpointMeta {
        CheckpointMeta {
            partition: 0,
            epoch,
            position: epoch * 10,
            max_event_time: 0,
            counts: Default::default(),
            malformed: 0,
            pending: None,
        }
    }

    /// A random delta over a small key space, applied to `expected` as well.
    pub(super) fn random_delta(
        rng: &mut impl Rng,
        expected: &mut BTreeMap<Vec<u8>, Vec<u8>>,
    ) -> StateDelta {
        let mut delta = StateDelta::default();
        for _ in 0..rng.random_range(0..40) {
            let key = vec![rng.random_range(0..50u8)];
            // A key is put or deleted once in a delta, as the operator writes a window's last
            // state only.
            delta.deletes.retain(|k| *k != key);
            delta.puts.retain(|(k, _)| *k != key);
            if rng.random_bool(0.3) {
                expected.remove(&key);
                delta.deletes.push(key);
            } else {
                let value = vec![rng.random::<u8>(); rng.random_range(1..64)];
                expected.insert(key.clone(), value.clone());
                delta.puts.push((key, value));
            }
        }
        delta
    }
}
