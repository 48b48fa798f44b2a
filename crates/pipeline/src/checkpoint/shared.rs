//! A partition's checkpoints as objects in the cluster's bucket, in the partition's folder:
//!
//! - `head`: who owns the partition (the owner epoch and a name for people), the last
//!   checkpoint's metadata, and which objects hold the window state — a base and the deltas
//!   written since, in order;
//! - `base-<owner epoch>-<epoch>`: every window as of a fold;
//! - `delta-<owner epoch>-<epoch>`: one checkpoint's change to the windows.
//!
//! The head is the commit point. A worker taking the partition on reads the head and writes
//! it back with the owner epoch raised, conditionally on the ETag it read; each commit writes
//! its delta object first (a name no other owner uses) and then the head, again conditionally
//! on the ETag of its own last write. So once a new owner has raised the epoch, every head
//! write of the old one is refused (412), whatever the old one believes: it learns it is
//! fenced at its next commit, and what it wrote for that commit is unreferenced. Objects a fold
//! or a refused commit leaves unreferenced are deleted by the owner that replaced them, or
//! left (a bucket lifecycle rule can expire them).

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use kairos_storage::object_store::path::Path;
use kairos_storage::object_store::{
    self as object_store, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload,
    UpdateVersion,
};
use kairos_store::{Result, StoreError};
use kairos_stream::StateDelta;
use kairos_stream::checkpoint::CheckpointMeta;
use serde::{Deserialize, Serialize};

use super::{Committed, DeltaRecord, FOLD_AT, Loaded, apply, decode_delta, internal};

const HEAD: &str = "head";

/// Attempts at raising the owner epoch when other workers raise it at the same moment.
const TAKEOVER_ATTEMPTS: usize = 8;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Head {
    owner_epoch: u64,
    owner: String,
    meta: Option<CheckpointMeta>,
    base: Option<String>,
    /// Delta objects since the base, oldest first, with their sizes.
    deltas: Vec<(String, u64)>,
}

/// One partition's checkpoints in a bucket, held by this worker since it raised the owner
/// epoch.
#[derive(Debug)]
pub struct SharedCheckpoints {
    /// The partition's folder.
    store: Arc<dyn ObjectStore>,
    head: Head,
    /// The head as this worker last wrote it: the condition of its next write.
    written: UpdateVersion,
    fold_at: u64,
}

impl SharedCheckpoints {
    /// Takes the partition in `store` (its folder) on for `owner`, fencing whoever held it.
    pub async fn take_over(store: Arc<dyn ObjectStore>, owner: &str) -> Result<SharedCheckpoints> {
        for _ in 0..TAKEOVER_ATTEMPTS {
            let (head, version) = match store.get(&Path::from(HEAD)).await {
                Ok(got) => {
                    let version = UpdateVersion {
                        e_tag: got.meta.e_tag.clone(),
                        version: got.meta.version.clone(),
                    };
                    let bytes = got.bytes().await.map_err(unavailable)?;
                    (decode_head(&bytes)?, Some(version))
                }
                Err(object_store::Error::NotFound { .. }) => (Head::default(), None),
                Err(e) => return Err(unavailable(e)),
            };
            let head = Head {
                owner_epoch: head.owner_epoch + 1,
                owner: owner.to_string(),
                ..head
            };
            let mode = match version {
                Some(version) => PutMode::Update(version),
                None => PutMode::Create,
            };
            match put_head(&store, &head, mode).await {
                Ok(written) => {
                    tracing::info!(
                        owner,
                        owner_epoch = head.owner_epoch,
                        "checkpoint partition taken over"
                    );
                    return Ok(SharedCheckpoints {
                        store,
                        head,
                        written,
                        fold_at: FOLD_AT,
                    });
                }
                // Another worker wrote the head between the read and the write: read again.
                Err(
                    object_store::Error::Precondition { .. }
                    | object_store::Error::AlreadyExists { .. },
                ) => continue,
                Err(e) => return Err(unavailable(e)),
            }
        }
        Err(StoreError::Conflict(format!(
            "the checkpoint head changed under each of {TAKEOVER_ATTEMPTS} attempts to take the \
             partition over"
        )))
    }

    /// Folds the deltas into a new base once they pass `bytes` (tests make it small).
    pub fn fold_at(mut self, bytes: u64) -> SharedCheckpoints {
        self.fold_at = bytes;
        self
    }

    /// The owner epoch this worker holds the partition under.
    pub fn owner_epoch(&self) -> u64 {
        self.head.owner_epoch
    }

    /// The last checkpoint, if any: the base with every delta applied in order.
    pub async fn load(&self) -> Result<Option<Loaded>> {
        let Some(meta) = self.head.meta.clone() else {
            return Ok(None);
        };
        let windows = self.windows(&self.head).await?;
        Ok(Some((meta, windows.into_iter().collect())))
    }

    async fn windows(&self, head: &Head) -> Result<BTreeMap<Vec<u8>, Vec<u8>>> {
        let mut windows = match &head.base {
            Some(base) => {
                let bytes = self.read(base).await?;
                postcard::from_bytes(&bytes)
                    .map_err(|e| internal(format!("the base {base} does not decode: {e}")))?
            }
            None => BTreeMap::new(),
        };
        for (delta, _) in &head.deltas {
            apply(&mut windows, decode_delta(&self.read(delta).await?)?);
        }
        Ok(windows)
    }

    async fn read(&self, name: &str) -> Result<Bytes> {
        let got = self
            .store
            .get(&Path::from(name))
            .await
            .map_err(unavailable)?;
        got.bytes().await.map_err(unavailable)
    }

    /// Writes a checkpoint: its delta, then the head naming it. Refused whole when another
    /// worker has raised the owner epoch since this one did.
    pub async fn commit(&mut self, meta: &CheckpointMeta, delta: &StateDelta) -> Result<Committed> {
        let mut head = self.head.clone();
        let tag = format!("{:020}-{:020}", head.owner_epoch, meta.epoch);
        if !delta.is_empty() {
            let name = format!("delta-{tag}");
            let bytes = postcard::to_allocvec(&DeltaRecord::of(delta)).map_err(internal)?;
            let size = bytes.len() as u64;
            self.store
                .put(&Path::from(name.as_str()), PutPayload::from(bytes))
                .await
                .map_err(unavailable)?;
            head.deltas.push((name, size));
        }
        head.meta = Some(meta.clone());
        let unfolded: u64 = head.deltas.iter().map(|(_, size)| size).sum();
        let mut replaced = Vec::new();
        if unfolded >= self.fold_at && !head.deltas.is_empty() {
            let windows = self.windows(&head).await?;
            let name = format!("base-{tag}");
            let bytes = postcard::to_allocvec(&windows).map_err(internal)?;
            self.store
                .put(&Path::from(name.as_str()), PutPayload::from(bytes))
                .await
                .map_err(unavailable)?;
            replaced.extend(head.base.replace(name));
            replaced.extend(head.deltas.drain(..).map(|(name, _)| name));
        }
        match put_head(&self.store, &head, PutMode::Update(self.written.clone())).await {
            Ok(written) => {
                self.head = head;
                self.written = written;
            }
            Err(object_store::Error::Precondition { .. }) => {
                return Ok(Committed::Fenced(format!(
                    "another worker took the partition over after owner epoch {}",
                    self.head.owner_epoch
                )));
            }
            Err(e) => return Err(unavailable(e)),
        }
        for name in replaced {
            if let Err(e) = self.store.delete(&Path::from(name.as_str())).await {
                tracing::warn!(object = %name, error = %e, "cannot delete a folded checkpoint object");
            }
        }
        Ok(Committed::Written)
    }
}

async fn put_head(
    store: &Arc<dyn ObjectStore>,
    head: &Head,
    mode: PutMode,
) -> std::result::Result<UpdateVersion, object_store::Error> {
    let bytes = postcard::to_allocvec(head).map_err(|e| object_store::Error::Generic {
        store: "checkpoint head",
        source: Box::new(e),
    })?;
    let options = PutOptions {
        mode,
        ..Default::default()
    };
    let put = store
        .put_opts(&Path::from(HEAD), PutPayload::from(bytes), options)
        .await?;
    Ok(UpdateVersion {
        e_tag: put.e_tag,
        version: put.version,
    })
}

fn decode_head(bytes: &[u8]) -> Result<Head> {
    postcard::from_bytes(bytes).map_err(|e| internal(format!("the head does not decode: {e}")))
}

fn unavailable(e: object_store::Error) -> StoreError {
    StoreError::Unavailable(format!("checkpoint storage: {e}"))
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{meta, random_delta};
    use super::*;
    use futures::StreamExt as _;
    use kairos_storage::object_store::memory::InMemory;
    use rand::{Rng, SeedableRng};

    /// Random puts and deletes, committed with and without folds and taken over by a new
    /// owner at random points, load what a map given the same changes holds.
    #[tokio::test]
    async fn a_loaded_checkpoint_holds_the_windows_every_delta_left_folded_or_not() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        for fold_at in [u64::MAX, 4096, 1] {
            let bucket: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
            let mut store = SharedCheckpoints::take_over(bucket.clone(), "a")
                .await
                .unwrap()
                .fold_at(fold_at);
            let mut expected = BTreeMap::new();
            for epoch in 1..=60u64 {
                let delta = random_delta(&mut rng, &mut expected);
                assert_eq!(
                    store.commit(&meta(epoch), &delta).await.unwrap(),
                    Committed::Written
                );
                if rng.random_bool(0.1) {
                    store = SharedCheckpoints::take_over(bucket.clone(), "b")
                        .await
                        .unwrap()
                        .fold_at(fold_at);
                }
                let (m, windows) = store.load().await.unwrap().unwrap();
                assert_eq!(m, meta(epoch));
                let got: BTreeMap<Vec<u8>, Vec<u8>> = windows.into_iter().collect();
                assert_eq!(got, expected, "fold at {fold_at}, epoch {epoch}");
            }
            if fold_at == 1 {
                // Folded every time: the base and the head, nothing left behind.
                let objects = bucket.list(None).collect::<Vec<_>>().await;
                assert_eq!(objects.len(), 2, "{objects:?}");
            }
        }
    }

    /// A worker that lost the partition without knowing it (paused, partitioned away) is
    /// refused at its next commit, which leaves the new owner's checkpoint as it was; the new
    /// owner carries on from there.
    #[tokio::test]
    async fn a_stale_owner_is_fenced_at_its_next_commit() {
        let bucket: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let mut expected = BTreeMap::new();
        let mut stale = SharedCheckpoints::take_over(bucket.clone(), "stale")
            .await
            .unwrap();
        let delta = random_delta(&mut rng, &mut expected);
        stale.commit(&meta(1), &delta).await.unwrap();

        let mut successor = SharedCheckpoints::take_over(bucket.clone(), "successor")
            .await
            .unwrap();
        assert_eq!(successor.owner_epoch(), stale.owner_epoch() + 1);
        let (loaded, _) = successor.load().await.unwrap().unwrap();
        assert_eq!(loaded, meta(1));

        let mut lost = expected.clone();
        let refused = stale
            .commit(&meta(2), &random_delta(&mut rng, &mut lost))
            .await
            .unwrap();
        assert!(matches!(refused, Committed::Fenced(_)), "{refused:?}");

        let delta = random_delta(&mut rng, &mut expected);
        assert_eq!(
            successor.commit(&meta(2), &delta).await.unwrap(),
            Committed::Written
        );
        let reader = SharedCheckpoints::take_over(bucket, "reader")
            .await
            .unwrap();
        let (m, windows) = reader.load().await.unwrap().unwrap();
        assert_eq!(m, meta(2));
        assert_eq!(windows.into_iter().collect::<BTreeMap<_, _>>(), expected);
    }
}
