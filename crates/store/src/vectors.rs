//! The vector materialiser: a group's embedding column followed from its log into an HNSW index
//! (kairos-vector), with the columns filters test kept beside it.
//!
//! It keeps the online store's rule — per key the row with the greatest (event time, offset)
//! wins, so a late older row changes nothing — and a null embedding takes the key out. The index
//! lives in memory and is saved with the log position it holds (per log partition) and the
//! per-key versions, in one checksummed file, at most every [`SAVE_EVERY`] and at shutdown; a
//! restart loads the file and applies only the log after its positions (no rebuild), and log
//! retention keeps every segment past the saved position. On a log of several partitions (a
//! Kafka topic) every process follows every partition into an index of its own: a key lives in
//! one partition, so its versions compare as in one log.
//!
//! In a cluster (shared storage) the saved file is also published to the storage, at most every
//! [`PUBLISH_EVERY`] and at shutdown, by whichever replica saves (each holds a whole index), and
//! a replica that starts without a file of its own fetches the last one published, so it
//! follows only the log after that snapshot's positions rather than the whole topic.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use arrow::array::{Array, ArrayRef, AsArray, Float64Array};
use arrow::datatypes::{DataType, Field, Float64Type, Schema};
use arrow::record_batch::RecordBatch;
use kairos_storage::Storage;
use kairos_transform::expr::Expr;
use kairos_types::{FeatureGroup, FeatureGroupSpec, FeatureType, TableId, Value, VectorIndexSpec};
use kairos_vector::{HnswIndex, LoadedIndex, SearchOptions, SearchOutcome};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::GroupRuntime;
use crate::error::{Result, StoreError};
use crate::log::Span;
use crate::materialise::Materialiser;
use crate::telemetry::Sink;

/// How often at most the index is saved while rows flow in.
pub(crate) const SAVE_EVERY: Duration = Duration::from_secs(5);

/// How often at most a replica publishes its saved index to the shared storage.
pub(crate) const PUBLISH_EVERY: Duration = Duration::from_secs(60);

/// Where in the storage a group version's index snapshot lives.
fn snapshot_parts(table: &TableId, column: &str) -> [String; 4] {
    [
        "vectors".to_string(),
        table.name.clone(),
        format!("v{}", table.version),
        format!("{column}.hnsw"),
    ]
}

/// Before a group version starts here: when the storage is shared, the group declares an
/// index and this replica has no file of its own, fetches the snapshot another replica
/// published into `dir`. Returns whether it did.
pub(crate) async fn fetch_snapshot(
    storage: &Storage,
    group: &FeatureGroup,
    dir: &Path,
) -> Result<bool> {
    let Some(index) = group.spec.vector_index.as_ref() else {
        return Ok(false);
    };
    let path = dir.join(format!("{}.hnsw", index.column));
    if !storage.is_shared() || path.exists() {
        return Ok(false);
    }
    let parts = snapshot_parts(&group.id(), &index.column);
    let Some(bytes) = storage.read(&parts.each_ref().map(String::as_str)).await? else {
        return Ok(false);
    };
    // Whole or not at all: a replica killed while writing it starts from the log instead. And
    // only a snapshot that loads is kept: one that does not would stop the group starting.
    let tmp = path.with_extension("fetched");
    let size = bytes.len();
    let (dir, group_id) = (dir.to_owned(), group.id());
    let kept = tokio::task::spawn_blocking(move || -> std::io::Result<bool> {
        std::fs::create_dir_all(&dir)?;
        std::fs::write(&tmp, &bytes)?;
        if let Err(e) = HnswIndex::load(&tmp) {
            tracing::warn!(group = %group_id, error = %e, "the published vector index snapshot does not load; building the index from the log");
            std::fs::remove_file(&tmp)?;
            return Ok(false);
        }
        std::fs::rename(&tmp, &path)?;
        Ok(true)
    })
    .await
    .map_err(StoreError::internal)?
    .map_err(StoreError::internal)?;
    if kept {
        tracing::info!(group = %group.id(), bytes = size, "vector index snapshot fetched from the shared storage");
    }
    Ok(kept)
}

/// A cluster's shared storage, where the index's snapshots are published.
#[derive(Debug)]
struct Published {
    storage: Storage,
    parts: [String; 4],
    last: Mutex<Option<Instant>>,
}

/// What must match the index at its saved position: each key's winning row version and the
/// attributes it had.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Keys {
    rows: HashMap<u64, KeyRow>,
}

#[derive(Debug, Serialize, Deserialize)]
struct KeyRow {
    event_time: i64,
    offset: u64,
    attributes: Vec<Value>,
}

/// The attributes as one batch (rebuilt after writes, on the next filtered search).
#[derive(Debug)]
struct AttributeTable {
    batch: RecordBatch,
    row_of: HashMap<u64, usize>,
}

/// A group version's vector index while the store runs.
#[derive(Debug)]
pub(crate) struct VectorRuntime {
    pub(crate) spec: VectorIndexSpec,
    path: PathBuf,
    index: HnswIndex,
    keys: RwLock<Keys>,
    attributes: Mutex<Option<Arc<AttributeTable>>>,
    /// Per log partition, the offset the index in memory holds everything before.
    positions: Vec<AtomicU64>,
    /// Per log partition, the offset of the last save: log retention keeps what follows it.
    saved: Vec<AtomicU64>,
    pub(crate) applied: Vec<watch::Sender<u64>>,
    /// Held by a step and by a save, so a save sees no step half-applied.
    step: Mutex<()>,
    /// When the index was last saved (by whichever partition's follower).
    last_save: Mutex<Instant>,
    /// Where the saved index is published, in a cluster.
    published: Option<Published>,
}

impl VectorRuntime {
    /// Loads the saved index, or starts an empty one, for a log of `partitions` partitions.
    pub(crate) fn open(
        group: &FeatureGroup,
        dir: PathBuf,
        partitions: u32,
        storage: &Storage,
    ) -> Result<Option<Arc<VectorRuntime>>> {
        let spec = &group.spec;
        let Some(index_spec) = spec.vector_index.clone() else {
            return Ok(None);
        };
        let dim = match spec.column(&index_spec.column).map(|c| c.ty) {
            Some(FeatureType::Embedding { dim }) => dim as usize,
            _ => {
                return Err(StoreError::internal(
                    "vector index over a column that is not an embedding",
                ));
            }
        };
        std::fs::create_dir_all(&dir).map_err(StoreError::internal)?;
        let path = dir.join(format!("{}.hnsw", index_spec.column));
        let unreadable = |e: &dyn std::fmt::Display| {
            StoreError::internal(format!(
                "{}: {e}; remove the file to rebuild the index from the log",
                path.display()
            ))
        };
        let (index, positions, keys) = if path.exists() {
            let LoadedIndex {
                index,
                position,
                extra,
            } = HnswIndex::load(&path).map_err(|e| unreadable(&e))?;
            // The key versions, then each partition's position — absent from a file saved
            // before logs had partitions, whose one position is the file's.
            let (keys, rest): (Keys, &[u8]) =
                postcard::take_from_bytes(&extra).map_err(|e| unreadable(&e))?;
            let positions: Vec<u64> = if rest.is_empty() {
                vec![position]
            } else {
                postcard::from_bytes(rest).map_err(|e| unreadable(&e))?
            };
            if positions.len() != partitions as usize {
                return Err(unreadable(&format_args!(
                    "it holds positions of {} log partitions, and the log has {partitions}",
                    positions.len()
                )));
            }
            (index, positions, keys)
        } else {
            (
                HnswIndex::new(index_spec.config(dim)).map_err(StoreError::internal)?,
                vec![0; partitions as usize],
                Keys::default(),
            )
        };
        let atomics = || positions.iter().map(|&p| AtomicU64::new(p)).collect();
        let published = storage.is_shared().then(|| Published {
            storage: storage.clone(),
            parts: snapshot_parts(&group.id(), &index_spec.column),
            last: Mutex::new(None),
        });
        Ok(Some(Arc::new(VectorRuntime {
            spec: index_spec,
            path,
            index,
            keys: RwLock::new(keys),
            attributes: Mutex::new(None),
            positions: atomics(),
            saved: atomics(),
            applied: positions.iter().map(|&p| watch::channel(p).0).collect(),
            step: Mutex::new(()),
            last_save: Mutex::new(Instant::now()),
            published,
        })))
    }

    /// The offset of `partition` the last save holds everything before.
    pub(crate) fn saved(&self, partition: u32) -> u64 {
        self.saved[partition as usize].load(Ordering::Acquire)
    }

    fn position(&self, partition: u32) -> u64 {
        self.positions[partition as usize].load(Ordering::Acquire)
    }

    /// Saves the index at the positions it holds.
    fn save(&self) -> Result<()> {
        let _step = self.step.lock().expect("lock");
        let positions: Vec<u64> = (0..self.positions.len() as u32)
            .map(|p| self.position(p))
            .collect();
        let mut extra = postcard::to_allocvec(&*self.keys.read().expect("lock"))
            .map_err(StoreError::internal)?;
        extra.extend(postcard::to_allocvec(&positions).map_err(StoreError::internal)?);
        self.index
            .save(&self.path, positions[0], &extra)
            .map_err(StoreError::internal)?;
        for (saved, position) in self.saved.iter().zip(positions) {
            saved.store(position, Ordering::Release);
        }
        Ok(())
    }

    /// Publishes the saved file to the shared storage, when there is one and the last
    /// publication is older than [`PUBLISH_EVERY`] (or `now`).
    async fn publish(&self, now: bool) -> Result<()> {
        let Some(published) = &self.published else {
            return Ok(());
        };
        if !self.path.exists() {
            return Ok(());
        }
        {
            let mut last = published.last.lock().expect("lock");
            if !now && last.is_some_and(|at| at.elapsed() < PUBLISH_EVERY) {
                return Ok(());
            }
            *last = Some(Instant::now());
        }
        // A save replaces the file by a rename, so this reads one save whole.
        let bytes = tokio::fs::read(&self.path)
            .await
            .map_err(StoreError::internal)?;
        let parts = published.parts.each_ref().map(String::as_str);
        Ok(published.storage.write(&parts, bytes.into()).await?)
    }

    /// Whether every partition's save is where its position is.
    fn all_saved(&self) -> bool {
        (0..self.positions.len() as u32).all(|p| self.saved(p) == self.position(p))
    }

    /// Applies spans of one partition's log, through `through`: the winning rows' vectors in,
    /// null or unusable ones out. A row's version is its (event time, stored position).
    fn apply(
        &self,
        group: &FeatureGroupSpec,
        spans: &[Span],
        partition: u32,
        through: u64,
    ) -> Result<()> {
        let _step = self.step.lock().expect("lock");
        let partitions = self.positions.len() as u32;
        let key_at = group.key_indices()[0];
        let time_at = group.event_time_index();
        let vector_at = group
            .columns
            .iter()
            .position(|c| c.name == self.spec.column)
            .expect("validated");
        let attribute_at: Vec<usize> = self
            .spec
            .attributes
            .iter()
            .map(|a| {
                group
                    .columns
                    .iter()
                    .position(|c| &c.name == a)
                    .expect("validated")
            })
            .collect();
        let mut keys = self.keys.write().expect("lock");
        // The records' winners are staged, then written to the index, and only then to the key
        // versions: a record that fails to decode leaves both as they were, and the retry
        // applies the same range again.
        let mut winners: HashMap<u64, Option<Vec<f32>>> = HashMap::new();
        let mut staged: HashMap<u64, KeyRow> = HashMap::new();
        for span in spans {
            {
                let batch = &span.batch;
                for row in 0..batch.num_rows() {
                    let value =
                        |at: usize| Value::from_array(batch.column(at), group.columns[at].ty, row);
                    let key = match value(key_at) {
                        Value::Int64(k) => k as u64,
                        Value::Int32(k) => i64::from(k) as u64,
                        other => {
                            return Err(StoreError::internal(format!(
                                "vector index key {other:?}"
                            )));
                        }
                    };
                    let offset = span.position(row, partitions);
                    let Value::Timestamp(event_time) = value(time_at) else {
                        return Err(StoreError::internal("row without an event time"));
                    };
                    let newer = staged
                        .get(&key)
                        .or_else(|| keys.rows.get(&key))
                        .is_none_or(|k| (event_time, offset) > (k.event_time, k.offset));
                    if newer {
                        let vector = match value(vector_at) {
                            Value::Embedding(v) if self.index.check(&v).is_ok() => Some(v),
                            Value::Embedding(_) => {
                                tracing::warn!(
                                    key,
                                    offset,
                                    "embedding the index cannot take (non-finite, or zero under cosine); key left out"
                                );
                                None
                            }
                            _ => None,
                        };
                        winners.insert(key, vector);
                        let attributes = attribute_at.iter().map(|&at| value(at)).collect();
                        staged.insert(
                            key,
                            KeyRow {
                                event_time,
                                offset,
                                attributes,
                            },
                        );
                    }
                }
            }
        }
        let upserts: Vec<(u64, &[f32])> = winners
            .iter()
            .filter_map(|(key, v)| v.as_deref().map(|v| (*key, v)))
            .collect();
        let removals: Vec<u64> = winners
            .iter()
            .filter(|(_, v)| v.is_none())
            .map(|(key, _)| *key)
            .collect();
        self.index.upsert(&upserts).map_err(StoreError::internal)?;
        self.index.remove(&removals);
        keys.rows.extend(staged);
        *self.attributes.lock().expect("lock") = None;
        self.positions[partition as usize].store(through, Ordering::Release);
        Ok(())
    }

    fn attribute_table(&self, group: &FeatureGroupSpec) -> Result<Arc<AttributeTable>> {
        let mut cached = self.attributes.lock().expect("lock");
        if let Some(table) = cached.as_ref() {
            return Ok(table.clone());
        }
        let keys = self.keys.read().expect("lock");
        let mut order: Vec<u64> = keys.rows.keys().copied().collect();
        order.sort_unstable();
        let row_of = order
            .iter()
            .enumerate()
            .map(|(row, key)| (*key, row))
            .collect();
        let mut fields = Vec::new();
        let mut columns: Vec<ArrayRef> = Vec::new();
        for (i, name) in self.spec.attributes.iter().enumerate() {
            let ty = group.column(name).expect("validated").ty;
            fields.push(Field::new(name, ty.arrow_type(), true));
            columns.push(Value::to_array(
                ty,
                order.iter().map(|key| &keys.rows[key].attributes[i]),
            ));
        }
        let batch = RecordBatch::try_new_with_options(
            Arc::new(Schema::new(fields)),
            columns,
            &arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(order.len())),
        )
        .map_err(StoreError::internal)?;
        let table = Arc::new(AttributeTable { batch, row_of });
        *cached = Some(table.clone());
        Ok(table)
    }

    /// The nearest keys to a vector or to a key's own vector, optionally only those whose
    /// attributes pass `filter`.
    pub(crate) fn search(
        &self,
        group: &FeatureGroupSpec,
        query: &NearestQuery,
    ) -> Result<SearchOutcome> {
        let mask = match &query.filter {
            None => None,
            Some(text) => Some(self.filter_mask(group, text)?),
        };
        let passes = |key: u64| {
            mask.as_ref()
                .is_some_and(|(table, mask): &(Arc<AttributeTable>, Float64Array)| {
                    table
                        .row_of
                        .get(&key)
                        .is_some_and(|&row| mask.is_valid(row) && mask.value(row) > 0.0)
                })
        };
        let options = SearchOptions {
            ef: query.ef,
            filter: mask
                .is_some()
                .then_some(&passes as &(dyn Fn(u64) -> bool + Sync)),
            force: None,
        };
        let outcome = match (&query.vector, query.key) {
            (Some(vector), None) => self.index.search(vector, query.k, options),
            (None, Some(key)) => self.index.similar(key as u64, query.k, options),
            _ => {
                return Err(StoreError::BadRequest(
                    "give either 'vector' or 'key', not both".into(),
                ));
            }
        };
        outcome.map_err(|e| match e {
            kairos_vector::VectorError::UnknownKey(key) => {
                StoreError::NotFound(format!("key {} is not in the vector index", key as i64))
            }
            e if e.is_bad_request() => StoreError::BadRequest(e.to_string()),
            e => StoreError::internal(e),
        })
    }

    fn filter_mask(
        &self,
        group: &FeatureGroupSpec,
        text: &str,
    ) -> Result<(Arc<AttributeTable>, Float64Array)> {
        let bad = |m: String| StoreError::BadRequest(format!("filter '{text}': {m}"));
        let expr = Expr::parse(text).map_err(|e| bad(e.to_string()))?;
        if let Some(unknown) = expr
            .columns()
            .into_iter()
            .find(|c| !self.spec.attributes.contains(c))
        {
            return Err(bad(format!(
                "'{unknown}' is not an attribute of the index; it keeps {:?}",
                self.spec.attributes
            )));
        }
        let table = self.attribute_table(group)?;
        let mask = expr.eval(&table.batch).map_err(|e| bad(e.to_string()))?;
        let mask = match mask.data_type() {
            DataType::Float64 => mask.as_primitive::<Float64Type>().clone(),
            other => return Err(bad(format!("gives {other}, expected a truth value"))),
        };
        Ok((table, mask))
    }
}

/// A nearest-neighbour query against a group's vector index.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NearestQuery {
    /// The query vector; or
    #[serde(default)]
    pub vector: Option<Vec<f32>>,
    /// a key whose own vector is the query, the key itself left out ("similar items").
    #[serde(default)]
    pub key: Option<i64>,
    #[serde(default = "default_k")]
    pub k: usize,
    /// Over the index's attributes, e.g. `in_stock = true AND region = 'SE'`.
    #[serde(default)]
    pub filter: Option<String>,
    /// Candidates kept while walking the graph (the index's `ef_search` when absent).
    #[serde(default)]
    pub ef: Option<usize>,
}

fn default_k() -> usize {
    10
}

/// One log partition's follower into the index.
pub(crate) struct VectorSink {
    pub(crate) runtime: Arc<VectorRuntime>,
    pub(crate) group: Arc<GroupRuntime>,
    pub(crate) partition: u32,
}

impl Materialiser for VectorSink {
    const SINK: Sink = Sink::Vectors;

    async fn position(&mut self) -> Result<u64> {
        Ok(self.runtime.position(self.partition))
    }

    async fn apply(&mut self, spans: &[Span], _from: u64, through: u64) -> Result<()> {
        let runtime = self.runtime.clone();
        let group = self.group.clone();
        let spans = spans.to_vec();
        let partition = self.partition;
        // Whichever partition's follower finds the last save old enough saves for all.
        let save = {
            let mut last = runtime.last_save.lock().expect("lock");
            let due = last.elapsed() >= SAVE_EVERY;
            if due {
                *last = Instant::now();
            }
            due
        };
        let applying = runtime.clone();
        tokio::task::spawn_blocking(move || {
            applying.apply(&group.group.spec, &spans, partition, through)?;
            if save { applying.save() } else { Ok(()) }
        })
        .await
        .map_err(StoreError::internal)??;
        if save && let Err(e) = runtime.publish(false).await {
            // The local save stands; the next save publishes again.
            tracing::warn!(error = %e, "cannot publish the vector index snapshot");
        }
        Ok(())
    }
}

/// Follows every partition of the group's log into the index until the group stops.
pub(crate) async fn run(runtime: Arc<VectorRuntime>, group: Arc<GroupRuntime>, max_bytes: usize) {
    let followers = (0..runtime.positions.len() as u32).map(|partition| {
        let published = &runtime.applied[partition as usize];
        crate::materialise::follow(
            VectorSink {
                runtime: runtime.clone(),
                group: group.clone(),
                partition,
            },
            group.clone(),
            partition,
            group.shutdown.subscribe(),
            published,
            max_bytes,
            None,
        )
    });
    futures::future::join_all(followers).await;
    // Stopped: what the index holds is saved, so the next start applies only what follows.
    if !runtime.all_saved() {
        let saving = runtime.clone();
        match tokio::task::spawn_blocking(move || saving.save()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(group = %group.group.id(), error = %e, "vector index save failed")
            }
            Err(e) => tracing::error!(error = %e, "vector index save task failed"),
        }
    }
    if let Err(e) = runtime.publish(true).await {
        tracing::warn!(group = %group.group.id(), error = %e, "cannot publish the vector index snapshot");
    }
}
