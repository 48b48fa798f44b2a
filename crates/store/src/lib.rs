//! The Kairos feature store: the one write path, its two materialisers, and the reads.
//!
//! [`FeatureStore`] is the service layer every transport (REST, CLI, later gRPC and Python)
//! calls. An insert is validated whole ([`kairos_types::ingest`]), appended to the group's log
//! ([`kairos_log`]) and acknowledged with its offset range once durable; the online and offline
//! materialisers ([`materialise`]) follow the log into [`kairos_online`] and [`kairos_offline`].
//! [`FeatureStore::check`] proves the two stores agree.

mod check;
pub mod config;
pub mod error;
mod log;
mod materialise;
mod ownership;
pub mod telemetry;
mod vectors;
mod views;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use kairos_catalog::Catalog;
use kairos_log::kafka::{KafkaLog, KafkaLogOptions};
use kairos_log::{FeatureLog, SegmentLog, SegmentLogOptions};
use kairos_offline::{DeltaOfflineStore, OfflineStream, ReadFilter};
use kairos_online::{OnlineBackend, OnlineStore, RedbStore, RedisStore};
use kairos_types::expectations::{self, Expectations};
use kairos_types::value::encode_key;
use kairos_types::{
    Clock, FeatureGroup, FeatureGroupSpec, Format, SystemClock, TableId, Value, ingest,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::log::{Appended, Tagged};

pub use check::CheckReport;

/// How long opening the store waits for a bucket to answer its check.
const STORAGE_CHECK_TIMEOUT: Duration = Duration::from_secs(15);

/// How long a readiness probe waits for one engine.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// One engine's answer to a readiness probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EngineStatus {
    pub engine: String,
    pub ready: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Whether `dir` takes a write: a file made there and removed (each call its own file, so
/// probes at once do not trip on each other).
fn check_writable(dir: &std::path::Path) -> std::result::Result<(), String> {
    static PROBES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let probe = dir.join(format!(".kairos-write-probe-{}-{n}", std::process::id()));
    std::fs::write(&probe, b"")
        .and_then(|()| std::fs::remove_file(&probe))
        .map_err(|e| format!("the data dir {} cannot be written: {e}", dir.display()))
}

/// A blocking probe, off the async workers.
async fn blocking(
    work: impl FnOnce() -> std::result::Result<(), String> + Send + 'static,
) -> std::result::Result<(), String> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| e.to_string())?
}

async fn probe(
    engine: String,
    answer: impl std::future::Future<Output = std::result::Result<(), String>>,
) -> EngineStatus {
    let error = match tokio::time::timeout(PROBE_TIMEOUT, answer).await {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e),
        Err(_) => Some(format!("no answer within {} s", PROBE_TIMEOUT.as_secs())),
    };
    EngineStatus {
        engine,
        ready: error.is_none(),
        error,
    }
}
pub use config::{CatalogConfig, LogConfig, OnlineConfig, StorageConfig, StoreConfig};
pub use error::{ErrorKind, Result, StoreError};
pub use kairos_offline::CompactReport;
pub use kairos_offline::ReadFilter as OfflineFilter;
pub use kairos_storage::Storage;
pub use kairos_types::LogCut;
pub use kairos_types::expectations::ValidationReport;
pub use kairos_vector::{Neighbour, SearchOutcome, SearchPath};
pub use vectors::NearestQuery;
pub use views::{
    JoinTuning, Spine, TrainingDatasetSummary, VectorAnswer, VectorResult, Vectors, ViewInputs,
    ViewStatus, request_objects,
};

/// How long a Kafka log waits for its brokers before an append or a look-up fails.
const KAFKA_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a read-your-writes insert or a check waits for the materialisers.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(60);

/// The acknowledgement of an accepted insert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InsertAck {
    /// Rows written to the group (quarantined rows are not among them).
    pub rows: u64,
    /// Log offset of the first row (in a log of several partitions, the least stored
    /// position, `offset × partitions + partition`, of the rows).
    pub first_offset: u64,
    /// One past the log offset of the last row (the greatest stored position, plus one).
    pub end_offset: u64,
    /// In a log of several partitions (Kafka), where each partition the batch touched goes on
    /// after its rows (the next message's first offset): what read-your-writes waits for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partition_ends: Vec<PartitionEnd>,
    /// Whether the online store already shows the rows (asked for with `wait_online`).
    pub online_visible: bool,
    /// What the group's expectations made of the batch, when it declares any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<ValidationReport>,
}

impl InsertAck {
    /// Where the rows reach, as (partition, one past the last row there): per partition in a
    /// log of several, the end offset in a log of one.
    pub fn ends(&self) -> Vec<(u32, u64)> {
        if self.partition_ends.is_empty() {
            vec![(0, self.end_offset)]
        } else {
            let end = |e: &PartitionEnd| (e.partition, e.end_offset);
            self.partition_ends.iter().map(end).collect()
        }
    }
}

/// One past the last row an insert wrote to one log partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PartitionEnd {
    pub partition: u32,
    pub end_offset: u64,
}

/// Where one log partition and its materialisers stand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PartitionStatus {
    pub partition: u32,
    /// Whether this process materialises the partition (the replicas share them out).
    pub materialised_here: bool,
    pub log_end_offset: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub online_offset: Option<u64>,
    pub offline_offset: u64,
}

/// Options of an insert.
#[derive(Debug, Clone, Copy, Default)]
pub struct InsertOptions {
    /// Return only once the online store shows the rows (read-your-writes).
    pub wait_online: bool,
}

/// What an online lookup found for one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum KeyStatus {
    Present,
    NotFound,
    /// A row exists, but its event time is older than the group's TTL.
    Expired,
}

/// One key's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Lookup {
    pub status: KeyStatus,
    /// Event time of the row, microseconds.
    pub event_time: Option<i64>,
    /// The features in schema order.
    pub values: Option<Vec<Value>>,
}

/// An online read as transports answer it: the column names once, then a result per key.
#[derive(Debug, Clone, PartialEq)]
pub struct OnlineAnswer {
    pub columns: Vec<String>,
    pub lookups: Vec<Lookup>,
}

/// One key's answer in an online read, as JSON carries it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OnlineResult {
    pub status: KeyStatus,
    /// RFC 3339 event time of the row.
    pub event_time: Option<String>,
    /// Feature values in the order of `columns`.
    #[schema(value_type = Option<Vec<Object>>)]
    pub values: Option<Vec<serde_json::Value>>,
}

/// An online read's answer as JSON carries it: the column names once, then one result per
/// requested key, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OnlineResponse {
    pub columns: Vec<String>,
    pub results: Vec<OnlineResult>,
}

impl From<OnlineAnswer> for OnlineResponse {
    fn from(answer: OnlineAnswer) -> Self {
        let OnlineAnswer { columns, lookups } = answer;
        let results = lookups
            .into_iter()
            .map(|l| OnlineResult {
                status: l.status,
                event_time: l.event_time.map(kairos_types::value::format_timestamp),
                values: l.values.map(|vs| vs.iter().map(Value::to_json).collect()),
            })
            .collect();
        OnlineResponse { columns, results }
    }
}

/// A feature group and where its log and materialisers stand. In a log of several partitions
/// (Kafka) the offsets are sums over them, and `partitions` has each; there an offset is a
/// message's offset and a row's place in it (`message × 65536 + row`), so only a segment log's
/// offsets count rows.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GroupStatus {
    #[serde(flatten)]
    pub group: FeatureGroup,
    pub log_end_offset: u64,
    pub online_offset: Option<u64>,
    pub offline_offset: u64,
    pub log_segments: usize,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partitions: Vec<PartitionStatus>,
    /// Set when a materialiser met a record it cannot write and stopped: why, and where.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub halted: Option<String>,
}

/// A running feature group: its log, materialiser positions and tasks.
#[derive(Debug)]
pub(crate) struct GroupRuntime {
    pub(crate) group: FeatureGroup,
    pub(crate) log: log::GroupLog,
    /// Per log partition, the offset the online store holds everything before.
    pub(crate) online_applied: Vec<watch::Sender<u64>>,
    /// Per log partition, the offset the offline table holds everything before.
    pub(crate) offline_applied: Vec<watch::Sender<u64>>,
    /// Per log partition, asks the offline materialiser to commit now rather than at its next
    /// interval.
    pub(crate) offline_wanted: Vec<tokio::sync::Notify>,
    /// Per log partition, whether this process runs its materialisers.
    pub(crate) held: Vec<AtomicBool>,
    pub(crate) shutdown: watch::Sender<bool>,
    /// Why a materialiser of this group stopped for good, once one has: a record it cannot
    /// write would otherwise be retried for ever. Waiters end with this reason.
    pub(crate) halted: watch::Sender<Option<String>>,
    /// The group's vector index, when it declares one.
    pub(crate) vectors: Option<Arc<vectors::VectorRuntime>>,
    /// The group's expectations, compiled, when it declares any.
    pub(crate) expectations: Option<Arc<Expectations>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl GroupRuntime {
    /// Refuses a write while a store holds this group beyond this process's log: another
    /// process writes the group's stores through a log of its own (two replicas of a cluster
    /// whose log is not shared, or a data dir lost under a Redis that kept its rows), and rows
    /// appended here would reach the stores under offsets that already mean other rows there.
    /// Found as each materialiser reads its store's position; until then a write passes.
    fn check_sole_writer(&self) -> Result<()> {
        // A shared log (Kafka) has no second copy to diverge from.
        let Some(log) = self.log.segment() else {
            return Ok(());
        };
        let end = log.end_offset();
        let stores = [
            ("online", *self.online_applied[0].borrow()),
            ("offline", *self.offline_applied[0].borrow()),
        ];
        for (store, position) in stores {
            if position > end {
                return Err(StoreError::Conflict(format!(
                    "feature group '{}' v{}: the {store} store holds its rows up to log offset \
                     {position}, beyond this process's log (which ends at {end}), so another \
                     process writes this group through a log of its own; write it through that \
                     process",
                    self.group.spec.name, self.group.version
                )));
            }
        }
        Ok(())
    }

    /// The segment log's offset every store has passed.
    pub(crate) fn materialised_through(&self) -> u64 {
        let mut passed = *self.offline_applied[0].borrow();
        if self.group.spec.online {
            passed = passed.min(*self.online_applied[0].borrow());
        }
        // The index in memory may be ahead of its file: a restart applies the log from the file.
        if let Some(vectors) = &self.vectors {
            passed = passed.min(vectors.saved(0));
        }
        passed
    }

    async fn stop(&self) {
        self.shutdown.send_replace(true);
        let tasks: Vec<_> = std::mem::take(&mut *self.tasks.lock().expect("lock"));
        for task in tasks {
            let _ = task.await;
        }
        self.log.close().await;
    }

    /// Waits until a store has reached each partition's end in `ends`.
    async fn wait_partitions(
        &self,
        positions: &[watch::Sender<u64>],
        ends: &[(u32, u64)],
        what: &str,
    ) -> Result<()> {
        for &(partition, end) in ends {
            wait_until(self, &positions[partition as usize], end, what).await?;
        }
        Ok(())
    }

    /// Waits until both stores hold every partition up to where it ends now; answers those
    /// ends, as (partition, end).
    async fn materialised_to_the_end(&self) -> Result<Vec<(u32, u64)>> {
        let ends = self.log.end_offsets().await?;
        for &(partition, end) in &ends {
            wait_offline(self, partition, end).await?;
        }
        if self.group.spec.online {
            self.wait_partitions(&self.online_applied, &ends, "the online store")
                .await?;
        }
        Ok(ends)
    }
}

struct Inner {
    config: StoreConfig,
    catalog: Box<dyn Catalog>,
    online: OnlineBackend,
    storage: Storage,
    offline: DeltaOfflineStore,
    clock: Arc<dyn Clock>,
    /// Running groups by name, then version.
    groups: RwLock<HashMap<String, BTreeMap<u32, Arc<GroupRuntime>>>>,
    /// Held while group versions are created, deleted or followed from the catalog.
    groups_changing: tokio::sync::Mutex<()>,
    /// Held while one group version starts, so it starts once.
    starting: Mutex<()>,
    /// User functions on-demand features may call.
    functions: kairos_transform::FunctionRegistry,
    /// Resolved views by (name, version asked for); cleared whenever a view or function changes.
    views: RwLock<views::ViewCache>,
    /// Frozen transforms by (view, view version, training dataset version).
    transforms: RwLock<HashMap<views::DatasetKey, Arc<kairos_view::TransformSet>>>,
    /// Held while a quarantine group is looked up and, if missing, created: once, not twice.
    quarantines: Mutex<()>,
}

/// The feature store service. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct FeatureStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for FeatureStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeatureStore")
            .field("data_dir", &self.inner.config.data_dir)
            .finish()
    }
}

impl FeatureStore {
    /// Opens the store in `config.data_dir` and starts the materialisers of every group.
    pub async fn open(config: StoreConfig) -> Result<FeatureStore> {
        Self::open_with_clock(config, Arc::new(SystemClock)).await
    }

    pub async fn open_with_clock(
        config: StoreConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<FeatureStore> {
        config.validate().map_err(StoreError::BadRequest)?;
        let dir = &config.data_dir;
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Internal(format!("cannot create data dir {}: {e}", dir.display()))
        })?;
        // Said up front and plainly, rather than as whichever store fails to open first.
        check_writable(dir).map_err(StoreError::Unavailable)?;
        let catalog = kairos_catalog::open(config.catalog.url.as_deref(), dir)?;
        let online = match &config.online {
            OnlineConfig::Redb => OnlineBackend::Redb(RedbStore::open(&dir.join("online.redb")).map_err(|e| {
                StoreError::Unavailable(format!(
                    "cannot open the online store in {} (is another kairos process using this data dir? \
                     then talk to it with --url): {e}",
                    dir.display()
                ))
            })?),
            OnlineConfig::Redis { url, prefix } => OnlineBackend::Redis(
                RedisStore::connect(url, prefix)
                    .await
                    .map_err(|e| StoreError::Unavailable(format!("cannot reach Redis at {url}: {e}")))?,
            ),
            OnlineConfig::RedisCluster { nodes, prefix, slots } => OnlineBackend::Redis(
                RedisStore::connect_cluster(nodes, prefix, *slots)
                    .await
                    .map_err(|e| {
                        StoreError::Unavailable(format!(
                            "cannot reach the Redis Cluster at {}: {e}",
                            nodes.join(", ")
                        ))
                    })?,
            ),
        };
        let storage = Storage::open(config.storage.url.as_deref(), dir)?;
        // Views' Python functions run in worker processes unless the host says otherwise (the
        // Python SDK runs them in its own interpreter).
        let functions = kairos_transform::FunctionRegistry::default();
        functions.set_python_host(Arc::new(kairos_transform::PythonWorkers::new(
            config.python.clone(),
        )));
        if storage.is_shared() {
            // A bucket that cannot be reached, or that would let two Delta committers
            // overwrite each other, is refused before anything is written to it.
            tokio::time::timeout(STORAGE_CHECK_TIMEOUT, storage.verify())
                .await
                .map_err(|_| {
                    StoreError::Unavailable(format!(
                        "{}: no answer within {} s",
                        storage.engine(),
                        STORAGE_CHECK_TIMEOUT.as_secs()
                    ))
                })??;
        }
        let offline = DeltaOfflineStore::new(storage.clone());
        let store = FeatureStore {
            inner: Arc::new(Inner {
                config,
                catalog,
                storage,
                online,
                offline,
                clock,
                groups: RwLock::new(HashMap::new()),
                groups_changing: tokio::sync::Mutex::new(()),
                starting: Mutex::new(()),
                functions,
                views: RwLock::new(HashMap::new()),
                transforms: RwLock::new(HashMap::new()),
                quarantines: Mutex::new(()),
            }),
        };
        for group in store.inner.catalog.list_feature_groups()? {
            store.fetch_vector_snapshot(&group).await;
            store.start(group)?;
        }
        // What a crash left half-built goes; failing to remove it is no reason not to open.
        if let Err(e) = store.sweep_unfinished_builds() {
            tracing::warn!(error = %e, "cannot sweep unfinished training datasets");
        }
        Ok(store)
    }

    pub fn config(&self) -> &StoreConfig {
        &self.inner.config
    }

    /// Where the files that are neither the log nor the online store live (model artifacts,
    /// offline tables, …): the data dir, or the cluster's bucket.
    pub fn storage(&self) -> &Storage {
        &self.inner.storage
    }

    /// The catalog, for definitions the store does not run itself (pipelines).
    pub fn catalog(&self) -> &dyn Catalog {
        self.inner.catalog.as_ref()
    }

    /// Whether each engine the store depends on answers: the catalog, the online store and
    /// the data dir (the log and the offline tables). What a replica's `/readyz` reports; each
    /// probe waits at most [`PROBE_TIMEOUT`].
    pub async fn readiness(&self) -> Vec<EngineStatus> {
        let catalog_engine = format!("catalog ({})", self.inner.catalog.engine());
        let store = self.clone();
        let catalog = blocking(move || store.catalog().ping().map_err(|e| e.to_string()));
        let online = async { self.inner.online.ping().await.map_err(|e| e.to_string()) };
        let dir = self.inner.config.data_dir.clone();
        let data_dir = blocking(move || check_writable(&dir));
        let storage = &self.inner.storage;
        let shared = async { storage.ping().await.map_err(|e| e.to_string()) };
        let (catalog, online, data_dir, shared) = tokio::join!(
            probe(catalog_engine, catalog),
            probe(
                format!("online store ({})", self.inner.online.name()),
                online
            ),
            probe("data dir".to_string(), data_dir),
            probe(format!("storage ({})", storage.engine()), shared),
        );
        let mut engines = vec![catalog, online, data_dir];
        // The data dir's probe already covers the storage when they are one.
        if storage.is_shared() {
            engines.push(shared);
        }
        engines
    }

    /// The online backend's name (`redb`, `redis` or `redis-cluster`).
    pub fn online_backend(&self) -> &'static str {
        self.inner.online.name()
    }

    fn log_dir(&self, table: &TableId) -> PathBuf {
        self.inner
            .config
            .data_dir
            .join("logs")
            .join(&table.name)
            .join(format!("v{}", table.version))
    }

    fn vector_dir(&self, table: &TableId) -> PathBuf {
        self.inner
            .config
            .data_dir
            .join("vectors")
            .join(&table.name)
            .join(format!("v{}", table.version))
    }

    /// Starts a group version's log and materialisers, or returns its runtime when it runs
    /// already (an insert making a quarantine group and the catalog follower may both ask).
    fn start(&self, group: FeatureGroup) -> Result<Arc<GroupRuntime>> {
        let table = group.id();
        let _starting = self.inner.starting.lock().expect("lock");
        if let Some(running) = self
            .inner
            .groups
            .read()
            .expect("lock")
            .get(&table.name)
            .and_then(|versions| versions.get(&table.version))
        {
            return Ok(running.clone());
        }
        let log = self.open_log(&table)?;
        let partitions = log.partitions() as usize;
        let vectors = vectors::VectorRuntime::open(
            &group,
            self.vector_dir(&table),
            log.partitions(),
            &self.inner.storage,
        )?;
        let runtime = Arc::new(GroupRuntime {
            online_applied: (0..partitions).map(|_| watch::channel(0).0).collect(),
            offline_applied: (0..partitions).map(|_| watch::channel(0).0).collect(),
            offline_wanted: (0..partitions)
                .map(|_| tokio::sync::Notify::new())
                .collect(),
            // A segment log is this process's own; a shared one's are taken as assigned.
            held: (0..partitions)
                .map(|_| AtomicBool::new(matches!(log, log::GroupLog::Segment(_))))
                .collect(),
            shutdown: watch::channel(false).0,
            halted: watch::channel(None).0,
            log,
            vectors,
            expectations: Expectations::compile(&group.spec)?.map(Arc::new),
            group,
            tasks: Mutex::new(Vec::new()),
        });
        let materialisers = ownership::Materialisers {
            online: self.inner.online.clone(),
            offline: self.inner.offline.committer(&table, &runtime.group.spec),
            max_bytes: self.inner.config.materialise_bytes,
            commit_interval: Duration::from_millis(self.inner.config.offline_commit_interval_ms),
        };
        let mut tasks = Vec::new();
        match &runtime.log {
            // One partition, this process's own: it materialises it.
            log::GroupLog::Segment(log) => {
                tasks.extend(materialisers.start(&runtime, 0, &runtime.shutdown));
                tasks.push(tokio::spawn(materialise::run_retention(
                    runtime.clone(),
                    log.clone(),
                    self.inner.online.clone(),
                    self.inner.config.log_retention(),
                    self.inner.clock.clone(),
                )));
            }
            // Shared: the replicas share the partitions out.
            log::GroupLog::Kafka(log) => {
                tasks.push(tokio::spawn(ownership::share(
                    materialisers,
                    runtime.clone(),
                    log.clone(),
                )));
            }
        }
        if let Some(index) = &runtime.vectors {
            tasks.push(tokio::spawn(vectors::run(
                index.clone(),
                runtime.clone(),
                self.inner.config.materialise_bytes,
            )));
        }
        *runtime.tasks.lock().expect("lock") = tasks;
        self.inner
            .groups
            .write()
            .expect("lock")
            .entry(table.name.clone())
            .or_default()
            .insert(table.version, runtime.clone());
        Ok(runtime)
    }

    /// Fetches a group version's vector-index snapshot from a cluster's storage before the
    /// version starts here, when this replica has none (see [`vectors::fetch_snapshot`]). One
    /// that cannot be fetched is no reason not to start: the index is then built from the log.
    async fn fetch_vector_snapshot(&self, group: &FeatureGroup) {
        let dir = self.vector_dir(&group.id());
        if let Err(e) = vectors::fetch_snapshot(&self.inner.storage, group, &dir).await {
            tracing::warn!(group = %group.id(), error = %e, "cannot fetch the vector index snapshot; building it from the log");
        }
    }

    /// Opens the topic `<topic_prefix><name>` of the log's Kafka cluster, made when missing, or
    /// `None` when the log is not on Kafka: a group version's log, or an HTTP stream in a
    /// cluster. Blocks on the brokers for up to twice the message timeout.
    pub fn kafka_topic(&self, name: &str) -> Result<Option<KafkaLog>> {
        let LogConfig::Kafka {
            brokers,
            partitions,
            topic_prefix,
            replication,
            session_timeout_ms,
            fetch_wait_ms,
        } = &self.inner.config.log
        else {
            return Ok(None);
        };
        let topic = format!("{topic_prefix}{name}");
        let mut options = KafkaLogOptions::new(brokers.clone(), *partitions);
        options.message_timeout = KAFKA_TIMEOUT;
        options.session_timeout = Duration::from_millis(*session_timeout_ms);
        options.fetch_wait = Duration::from_millis(*fetch_wait_ms);
        KafkaLog::open_or_create(&topic, options, *replication)
            .map(Some)
            .map_err(|e| StoreError::Unavailable(e.to_string()))
    }

    /// Opens a group version's log: its segment files, or its Kafka topic (made when
    /// missing). Kafka's answers block for up to twice its message timeout.
    fn open_log(&self, table: &TableId) -> Result<log::GroupLog> {
        if let Some(log) = self.kafka_topic(&format!("{}.v{}", table.name, table.version))? {
            return Ok(log::GroupLog::Kafka(Arc::new(log)));
        }
        let options = SegmentLogOptions {
            segment_bytes: self.inner.config.segment_bytes,
            ..Default::default()
        };
        let log = SegmentLog::open(self.log_dir(table), options, self.inner.clock.clone())?;
        Ok(log::GroupLog::Segment(Arc::new(log)))
    }

    fn runtime(&self, name: &str, version: Option<u32>) -> Result<Arc<GroupRuntime>> {
        let groups = self.inner.groups.read().expect("lock");
        let versions = groups
            .get(name)
            .ok_or_else(|| StoreError::NotFound(format!("feature group '{name}' not found")))?;
        let found = match version {
            Some(v) => versions.get(&v),
            None => versions.values().next_back(),
        };
        found.cloned().ok_or_else(|| match version {
            Some(v) => StoreError::NotFound(format!("feature group '{name}' has no version {v}")),
            None => StoreError::NotFound(format!("feature group '{name}' not found")),
        })
    }

    /// Creates a feature group, or the next version of an existing name.
    pub async fn create_group(&self, spec: FeatureGroupSpec) -> Result<FeatureGroup> {
        spec.validate()?;
        let _changing = self.inner.groups_changing.lock().await;
        // The quarantine group first: a group that quarantines never runs without one.
        self.quarantine_of(&spec)?;
        let group = self
            .inner
            .catalog
            .create_feature_group(&spec.normalised())?;
        self.start(group.clone())?;
        Ok(group)
    }

    /// Every version of every group.
    pub fn list_groups(&self) -> Result<Vec<FeatureGroup>> {
        Ok(self.inner.catalog.list_feature_groups()?)
    }

    /// A running group's definition (latest version unless one is given), without asking its
    /// log where it ends (on Kafka, a round trip to each partition's leader).
    pub fn group(&self, name: &str, version: Option<u32>) -> Result<FeatureGroup> {
        Ok(self.runtime(name, version)?.group.clone())
    }

    /// A group (latest version unless one is given) and its log and materialiser positions.
    pub async fn describe(&self, name: &str, version: Option<u32>) -> Result<GroupStatus> {
        let rt = self.runtime(name, version)?;
        let online = rt.group.spec.online;
        // A Kafka log's ends are a round trip to each partition's leader: off the workers.
        let partitions: Vec<PartitionStatus> = rt
            .log
            .end_offsets()
            .await?
            .into_iter()
            .map(|(p, end)| PartitionStatus {
                partition: p,
                materialised_here: rt.held[p as usize].load(Ordering::Acquire),
                log_end_offset: end,
                online_offset: online.then(|| *rt.online_applied[p as usize].borrow()),
                offline_offset: *rt.offline_applied[p as usize].borrow(),
            })
            .collect();
        let sum = |of: fn(&PartitionStatus) -> u64| partitions.iter().map(of).sum::<u64>();
        Ok(GroupStatus {
            group: rt.group.clone(),
            log_end_offset: sum(|p| p.log_end_offset),
            online_offset: online.then(|| sum(|p| p.online_offset.unwrap_or(0))),
            offline_offset: sum(|p| p.offline_offset),
            log_segments: rt.log.segment().map_or(0, |log| log.segment_count()),
            halted: rt.halted.borrow().clone(),
            partitions: if partitions.len() > 1 {
                partitions
            } else {
                Vec::new()
            },
        })
    }

    /// Deletes one version of a group with its log, online rows and offline table.
    pub async fn delete_group(&self, name: &str, version: u32) -> Result<()> {
        let _changing = self.inner.groups_changing.lock().await;
        let rt = {
            let mut groups = self.inner.groups.write().expect("lock");
            let versions = groups
                .get_mut(name)
                .ok_or_else(|| StoreError::NotFound(format!("feature group '{name}' not found")))?;
            let rt = versions.remove(&version).ok_or_else(|| {
                StoreError::NotFound(format!("feature group '{name}' has no version {version}"))
            })?;
            if versions.is_empty() {
                groups.remove(name);
            }
            rt
        };
        rt.stop().await;
        let table = rt.group.id();
        self.inner.catalog.delete_feature_group(name, version)?;
        self.inner.online.drop_table(&table).await?;
        self.inner.offline.drop_table(&table).await?;
        if let log::GroupLog::Kafka(log) = &rt.log {
            let log = log.clone();
            tokio::task::spawn_blocking(move || log.delete_topic())
                .await
                .map_err(StoreError::internal)??;
        }
        self.remove_local_files(&table)
    }

    /// Brings the running group versions in line with the catalog after another replica (or
    /// process) changed it: starts the versions the catalog lists and this store does not run,
    /// and stops those it no longer lists — their shared stores went with the deletion, so only
    /// this replica's own log and index files are removed. Returns (started, stopped).
    pub async fn follow_groups(&self) -> Result<(usize, usize)> {
        let catalog = self.clone();
        let listed =
            tokio::task::spawn_blocking(move || catalog.inner.catalog.list_feature_groups())
                .await
                .map_err(StoreError::internal)??;
        // A deletion here holds the same lock, so a version being deleted is not started again.
        let _changing = self.inner.groups_changing.lock().await;
        let running: Vec<TableId> = self
            .inner
            .groups
            .read()
            .expect("lock")
            .values()
            .flat_map(|versions| versions.values().map(|rt| rt.group.id()))
            .collect();
        let wanted: std::collections::HashSet<TableId> =
            listed.iter().map(FeatureGroup::id).collect();
        let mut started = 0;
        for group in listed {
            if !running.contains(&group.id()) {
                tracing::info!(group = %group.id(), "feature group started: made elsewhere");
                self.fetch_vector_snapshot(&group).await;
                self.start(group)?;
                started += 1;
            }
        }
        let mut stopped = 0;
        for table in running.into_iter().filter(|t| !wanted.contains(t)) {
            let rt = {
                let mut groups = self.inner.groups.write().expect("lock");
                let Some(versions) = groups.get_mut(&table.name) else {
                    continue;
                };
                let rt = versions.remove(&table.version);
                if versions.is_empty() {
                    groups.remove(&table.name);
                }
                rt
            };
            if let Some(rt) = rt {
                tracing::info!(group = %table, "feature group stopped: deleted elsewhere");
                rt.stop().await;
                self.remove_local_files(&table)?;
                stopped += 1;
            }
        }
        Ok((started, stopped))
    }

    /// Removes this store's own files of a group version: its log and its vector index.
    fn remove_local_files(&self, table: &TableId) -> Result<()> {
        for dir in [self.log_dir(table), self.vector_dir(table)] {
            if dir.exists() {
                std::fs::remove_dir_all(&dir).map_err(|e| {
                    StoreError::Internal(format!("cannot remove {}: {e}", dir.display()))
                })?;
            }
        }
        Ok(())
    }

    /// The nearest keys of a group's vector index to a vector, or to a key's own vector
    /// ("similar items"), optionally filtered by the index's attributes.
    pub fn nearest(
        &self,
        name: &str,
        version: Option<u32>,
        query: &NearestQuery,
    ) -> Result<SearchOutcome> {
        let rt = self.runtime(name, version)?;
        let Some(index) = &rt.vectors else {
            return Err(StoreError::BadRequest(format!(
                "feature group '{name}' has no vector index (declare one with 'vector_index')"
            )));
        };
        if query.k == 0 || query.k > 10_000 {
            return Err(StoreError::BadRequest(format!(
                "k must be between 1 and 10000, got {}",
                query.k
            )));
        }
        index.search(&rt.group.spec, query)
    }

    /// Waits until the group's vector index holds the rows an append acknowledged.
    pub async fn wait_indexed(
        &self,
        name: &str,
        version: Option<u32>,
        ack: &InsertAck,
    ) -> Result<()> {
        let rt = self.runtime(name, version)?;
        match &rt.vectors {
            Some(index) => {
                rt.wait_partitions(&index.applied, &ack.ends(), "the vector index")
                    .await
            }
            None => Err(StoreError::BadRequest(format!(
                "feature group '{name}' has no vector index"
            ))),
        }
    }

    /// Validates a batch in `format` and appends it to the group's log: the one write path.
    pub async fn insert(
        &self,
        name: &str,
        version: Option<u32>,
        format: Format,
        body: Bytes,
        options: InsertOptions,
    ) -> Result<InsertAck> {
        let rt = self.runtime(name, version)?;
        if body.len() > self.inner.config.max_batch_bytes {
            return Err(StoreError::BadRequest(format!(
                "batch of {} bytes is over the limit of {} bytes",
                body.len(),
                self.inner.config.max_batch_bytes
            )));
        }
        let spec = rt.group.spec.clone();
        let parsed = tokio::task::spawn_blocking(move || ingest::parse_batch(&spec, format, body))
            .await
            .map_err(StoreError::internal)?;
        let batch = parsed.inspect_err(|_| telemetry::batch_refused(&rt.group.id()))?;
        self.append(&rt, batch, None, options).await
    }

    /// Inserts a batch already in memory (the Rust API). Validated like any other insert.
    pub async fn insert_batch(
        &self,
        name: &str,
        version: Option<u32>,
        batch: &RecordBatch,
        options: InsertOptions,
    ) -> Result<InsertAck> {
        let rt = self.runtime(name, version)?;
        let batch = ingest::conform(&rt.group.spec, batch)
            .inspect_err(|_| telemetry::batch_refused(&rt.group.id()))?;
        self.append(&rt, batch, None, options).await
    }

    /// Checks a canonical batch against the group's expectations, sends what they quarantine
    /// to the quarantine group, and appends the rest, tagged with its `producer` if it has one.
    async fn append(
        &self,
        rt: &Arc<GroupRuntime>,
        batch: RecordBatch,
        tag: Option<&Tagged<'_>>,
        options: InsertOptions,
    ) -> Result<InsertAck> {
        if batch.num_rows() == 0 {
            return Err(StoreError::BadRequest(
                "empty batch: no rows to insert".into(),
            ));
        }
        let Some(expectations) = rt.expectations.clone() else {
            return self.write(rt, batch, tag, options).await;
        };
        let now = self.inner.clock.now_micros();
        let checked = tokio::task::spawn_blocking(move || expectations.check(&batch, now))
            .await
            .map_err(StoreError::internal)?;
        let table = rt.group.id();
        let report = match &checked {
            Ok(checked) => &checked.report,
            Err(refused) => &refused.report,
        };
        for result in report.results.iter().filter(|r| r.failed_rows > 0) {
            telemetry::expectation_failed(&table, &result.column, &result.rule, result.failed_rows);
        }
        let checked = checked.map_err(|refused| {
            telemetry::batch_refused(&table);
            StoreError::BadRequest(refused.message)
        })?;
        // Quarantined rows first: once the batch is acknowledged, they are kept too.
        if let Some(quarantined) = checked.quarantined {
            let quarantine = self
                .quarantine_of(&rt.group.spec)?
                .expect("a rule quarantines");
            self.write(&quarantine, quarantined, None, InsertOptions::default())
                .await?;
            telemetry::rows_quarantined(&table, checked.report.quarantined);
        }
        let mut ack = if checked.accepted.num_rows() == 0 {
            // Nothing written: the ack points where the log ends (a log of one partition).
            let end_offset = rt.log.segment().map_or(0, |log| log.end_offset());
            InsertAck {
                rows: 0,
                first_offset: end_offset,
                end_offset,
                partition_ends: Vec::new(),
                online_visible: false,
                validation: None,
            }
        } else {
            self.write(rt, checked.accepted, tag, options).await?
        };
        ack.validation = Some(checked.report);
        Ok(ack)
    }

    /// The group's quarantine group (see [`kairos_types::expectations::quarantine_spec`]),
    /// created if it is missing or no longer has the group's columns; `None` when no
    /// expectation of the group quarantines.
    fn quarantine_of(&self, spec: &FeatureGroupSpec) -> Result<Option<Arc<GroupRuntime>>> {
        let Some(wanted) = expectations::quarantine_spec(spec) else {
            return Ok(None);
        };
        let wanted = wanted.normalised();
        let _once = self.inner.quarantines.lock().expect("lock");
        let existing = self
            .inner
            .groups
            .read()
            .expect("lock")
            .get(&wanted.name)
            .and_then(|versions| {
                versions
                    .values()
                    .rev()
                    .find(|rt| rt.group.spec == wanted)
                    .cloned()
            });
        if let Some(rt) = existing {
            return Ok(Some(rt));
        }
        let group = self.inner.catalog.create_feature_group(&wanted)?;
        self.start(group).map(Some)
    }

    /// Appends a canonical, checked batch to the group's log, tagged when it is an
    /// `append_once`.
    async fn write(
        &self,
        rt: &Arc<GroupRuntime>,
        batch: RecordBatch,
        tag: Option<&Tagged<'_>>,
        options: InsertOptions,
    ) -> Result<InsertAck> {
        rt.check_sole_writer()?;
        if let Some(tag) = tag
            && let Some(tagged_rows) = tag.landed.batch_rows
            && tagged_rows as usize != batch.num_rows()
        {
            return Err(StoreError::Conflict(format!(
                "feature group {}: producer {} tagged a batch of {tagged_rows} rows in the \
                 log, and this batch has {} rows",
                rt.group.id(),
                tag.producer,
                batch.num_rows()
            )));
        }
        let now = self.inner.clock.now_micros();
        let appended = rt.log.append(&rt.group.spec, &batch, tag, now).await?;
        let written = appended.rows - tag.map_or(0, |tag| tag.landed.at.len() as u64);
        telemetry::rows_ingested(&rt.group.id(), written);
        let mut ack = acknowledge(rt, &appended);
        if options.wait_online && rt.group.spec.online {
            rt.wait_partitions(&rt.online_applied, &appended.ends, "the online store")
                .await?;
            ack.online_visible = true;
        }
        Ok(ack)
    }

    /// Appends a batch once per `producer` tag: if the group's log already holds the rows
    /// tagged so after `search_from` (per partition, the log's ends before the batch was first
    /// appended, [`FeatureStore::log_ends`]), answers their acknowledgement instead of
    /// appending them again; of a Kafka append cut short, appends only the rows that did not
    /// land. Pipelines deliver a checkpoint's rows this way, so a restart that delivers them
    /// again cannot duplicate them (see `kairos_stream::checkpoint`).
    pub async fn append_once(
        &self,
        name: &str,
        version: Option<u32>,
        batch: &RecordBatch,
        producer: &str,
        search_from: &[u64],
    ) -> Result<InsertAck> {
        let rt = self.runtime(name, version)?;
        let landed = rt
            .log
            .find_tagged(&rt.group.spec, producer, search_from)
            .await?;
        if landed.complete() {
            return Ok(acknowledge(&rt, &landed.appended(&rt.log)));
        }
        let batch = ingest::conform(&rt.group.spec, batch)
            .inspect_err(|_| telemetry::batch_refused(&rt.group.id()))?;
        let tag = Tagged { producer, landed };
        self.append(&rt, batch, Some(&tag), InsertOptions::default())
            .await
    }

    /// One past the last durable offset of each partition of the group's log, by partition:
    /// where an `append_once` made later searches from.
    pub async fn log_ends(&self, name: &str, version: Option<u32>) -> Result<Vec<u64>> {
        let rt = self.runtime(name, version)?;
        let ends = rt.log.end_offsets().await?;
        Ok(ends.into_iter().map(|(_, end)| end).collect())
    }

    /// The partitions of the group's log (one for the embedded log).
    pub fn log_partitions(&self, name: &str, version: Option<u32>) -> Result<u32> {
        Ok(self.runtime(name, version)?.log.partitions())
    }

    /// One partition's log records from `offset` on, up to about `max_bytes`, decoded:
    /// (first offset, end offset, rows), offsets of that partition. Waits up to `wait` for a
    /// record when there is none yet.
    pub async fn read_log(
        &self,
        name: &str,
        version: Option<u32>,
        partition: u32,
        offset: u64,
        max_bytes: usize,
        wait: Duration,
    ) -> Result<Vec<(u64, u64, RecordBatch)>> {
        let rt = self.runtime(name, version)?;
        if partition >= rt.log.partitions() {
            return Err(StoreError::BadRequest(format!(
                "feature group {}: no partition {partition}; its {} has {}",
                rt.group.id(),
                rt.log.describe(),
                rt.log.partitions()
            )));
        }
        let spans = rt
            .log
            .read(&rt.group.spec, partition, offset, max_bytes, wait)
            .await?;
        Ok(spans
            .into_iter()
            .map(|span| (span.first_offset, span.end_offset, span.batch))
            .collect())
    }

    /// Waits until the rows an append acknowledged are visible online (or, for an
    /// offline-only group, offline).
    pub async fn wait_visible(
        &self,
        name: &str,
        version: Option<u32>,
        ack: &InsertAck,
    ) -> Result<()> {
        let rt = self.runtime(name, version)?;
        let ends = ack.ends();
        if rt.group.spec.online {
            rt.wait_partitions(&rt.online_applied, &ends, "the online store")
                .await
        } else {
            for (partition, end) in ends {
                wait_offline(&rt, partition, end).await?;
            }
            Ok(())
        }
    }

    /// Waits until the rows an append acknowledged are in every store the group has: online
    /// (when it is online-enabled) and offline, whose materialiser is asked to commit now.
    pub async fn wait_stored(
        &self,
        name: &str,
        version: Option<u32>,
        ack: &InsertAck,
    ) -> Result<()> {
        let rt = self.runtime(name, version)?;
        let ends = ack.ends();
        if rt.group.spec.online {
            rt.wait_partitions(&rt.online_applied, &ends, "the online store")
                .await?;
        }
        for (partition, end) in ends {
            wait_offline(&rt, partition, end).await?;
        }
        Ok(())
    }

    /// The latest row of each key given as JSON (per entry an object of key columns, an array
    /// in key order, or a bare value for single-column keys), with the group's column names:
    /// what the REST API and the CLI answer. One multi-get for all keys.
    pub async fn get_online_json(
        &self,
        name: &str,
        version: Option<u32>,
        entries: &[serde_json::Value],
    ) -> Result<OnlineAnswer> {
        let rt = self.runtime(name, version)?;
        let spec = &rt.group.spec;
        let keys = entries
            .iter()
            .enumerate()
            .map(|(i, entry)| parse_key(spec, i, entry))
            .collect::<Result<Vec<_>>>()?;
        let lookups = self.lookup(&rt, &keys).await?;
        let columns = spec.columns.iter().map(|c| c.name.clone()).collect();
        Ok(OnlineAnswer { columns, lookups })
    }

    /// The latest row of each key, one multi-get for all of them.
    pub async fn get_online(
        &self,
        name: &str,
        version: Option<u32>,
        keys: &[Vec<Value>],
    ) -> Result<Vec<Lookup>> {
        let rt = self.runtime(name, version)?;
        self.lookup(&rt, keys).await
    }

    async fn lookup(&self, rt: &GroupRuntime, keys: &[Vec<Value>]) -> Result<Vec<Lookup>> {
        let spec = &rt.group.spec;
        if !spec.online {
            return Err(StoreError::BadRequest(format!(
                "feature group '{}' is not online-enabled",
                spec.name
            )));
        }
        let encoded: Vec<Vec<u8>> = keys.iter().map(|k| encode_key(k)).collect();
        let rows = self.inner.online.get_many(&rt.group.id(), &encoded).await?;
        let expired_before = spec
            .ttl_seconds
            .map(|ttl| self.inner.clock.now_micros() - (ttl as i64) * 1_000_000);
        Ok(rows
            .into_iter()
            .map(|row| match row {
                None => Lookup {
                    status: KeyStatus::NotFound,
                    event_time: None,
                    values: None,
                },
                Some(row) if expired_before.is_some_and(|limit| row.event_time < limit) => Lookup {
                    status: KeyStatus::Expired,
                    event_time: Some(row.event_time),
                    values: None,
                },
                Some(row) => Lookup {
                    status: KeyStatus::Present,
                    event_time: Some(row.event_time),
                    values: Some(row.values),
                },
            })
            .collect())
    }

    /// Streams offline rows matching `filter`, in log order.
    pub async fn read_offline(
        &self,
        name: &str,
        version: Option<u32>,
        filter: ReadFilter,
    ) -> Result<OfflineStream> {
        let rt = self.runtime(name, version)?;
        Ok(self
            .inner
            .offline
            .scan(&rt.group.id(), &rt.group.spec, filter)
            .await?)
    }

    /// Waits until both materialisers have applied everything the log held when called.
    /// Answers the log as it was then: each partition's end, which an offline read can cut at.
    pub async fn wait_materialised(&self, name: &str, version: Option<u32>) -> Result<LogCut> {
        let rt = self.runtime(name, version)?;
        let ends = rt.materialised_to_the_end().await?;
        Ok(LogCut::new(ends.into_iter().map(|(_, end)| end).collect()))
    }

    /// Compares the online store to the latest row per key of the offline store, and the
    /// offline table to the log: every row of every partition there exactly once.
    pub async fn check(&self, name: &str, version: Option<u32>) -> Result<CheckReport> {
        let rt = self.runtime(name, version)?;
        let ends = rt.materialised_to_the_end().await?;
        let ends: Vec<u64> = ends.into_iter().map(|(_, end)| end).collect();
        let log = check::LogEnds {
            ends: &ends,
            row_bits: rt.log.row_bits(),
        };
        check::run(&self.inner.online, &self.inner.offline, &rt.group, log).await
    }

    /// Rewrites the offline table's small files into large ones.
    pub async fn compact(&self, name: &str, version: Option<u32>) -> Result<CompactReport> {
        let rt = self.runtime(name, version)?;
        Ok(self.inner.offline.compact(&rt.group.id()).await?)
    }

    /// Where the group's offline Delta table lives, as any Delta reader opens it (`file://…`
    /// in the data dir, `s3://…` in a bucket).
    pub fn offline_table_url(&self, name: &str, version: Option<u32>) -> Result<url::Url> {
        let rt = self.runtime(name, version)?;
        Ok(self.inner.offline.table_url(&rt.group.id()))
    }

    /// Stops every materialiser and closes the logs; acknowledged writes are already durable.
    pub async fn close(&self) {
        let runtimes: Vec<Arc<GroupRuntime>> = {
            let mut groups = self.inner.groups.write().expect("lock");
            groups
                .drain()
                .flat_map(|(_, versions)| versions.into_values())
                .collect()
        };
        for rt in runtimes {
            rt.stop().await;
        }
    }
}

/// Waits until the offline store has applied log partition `partition` up to `offset`, asking
/// its materialiser to commit now rather than at its next interval.
pub(crate) async fn wait_offline(rt: &GroupRuntime, partition: u32, offset: u64) -> Result<()> {
    let applied = &rt.offline_applied[partition as usize];
    if *applied.borrow() < offset {
        rt.offline_wanted[partition as usize].notify_one();
    }
    wait_until(rt, applied, offset, "the offline store").await
}

/// The acknowledgement of what an append wrote. A log of one partition says it all with
/// `end_offset`; one of several adds each partition's end.
fn acknowledge(rt: &GroupRuntime, appended: &Appended) -> InsertAck {
    let partition_ends = if rt.log.partitions() > 1 {
        let end = |&(partition, end_offset)| PartitionEnd {
            partition,
            end_offset,
        };
        appended.ends.iter().map(end).collect()
    } else {
        Vec::new()
    };
    InsertAck {
        rows: appended.rows,
        first_offset: appended.first_position,
        end_offset: appended.end_position,
        partition_ends,
        online_visible: false,
        validation: None,
    }
}

/// Waits until `position` reaches `offset`. A group that stops (the store closing) ends the wait
/// at once: a waiter must not hold the store, and with it the online store's file lock, for the
/// whole timeout after a close.
async fn wait_until(
    rt: &GroupRuntime,
    position: &watch::Sender<u64>,
    offset: u64,
    what: &str,
) -> Result<()> {
    let mut rx = position.subscribe();
    let mut shutdown = rt.shutdown.subscribe();
    let mut halted = rt.halted.subscribe();
    let reached = async {
        tokio::select! {
            reached = rx.wait_for(|applied| *applied >= offset) => reached.is_ok(),
            _ = shutdown.wait_for(|stopping| *stopping) => false,
            _ = halted.wait_for(Option::is_some) => false,
        }
    };
    match tokio::time::timeout(CATCH_UP_TIMEOUT, reached).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(StoreError::Unavailable(match rt.halted.borrow().as_ref() {
            Some(why) => format!("feature group {} is halted: {why}", rt.group.id()),
            None => format!("{what} stopped before reaching offset {offset}"),
        })),
        Err(_) => Err(StoreError::Unavailable(format!(
            "{what} did not reach offset {offset} within {}s",
            CATCH_UP_TIMEOUT.as_secs()
        ))),
    }
}

fn parse_key(
    spec: &FeatureGroupSpec,
    index: usize,
    entry: &serde_json::Value,
) -> Result<Vec<Value>> {
    let bad = |m: String| StoreError::BadRequest(format!("entry {index}: {m}"));
    let key_columns: Vec<_> = spec
        .primary_key
        .iter()
        .map(|k| spec.column(k).expect("validated key"))
        .collect();
    let raw: Vec<&serde_json::Value> = match entry {
        serde_json::Value::Object(map) => {
            if let Some(extra) = map.keys().find(|k| !spec.primary_key.contains(k)) {
                return Err(bad(format!(
                    "'{extra}' is not a primary-key column; the key is ({})",
                    spec.primary_key.join(", ")
                )));
            }
            key_columns
                .iter()
                .map(|c| {
                    map.get(&c.name)
                        .ok_or_else(|| bad(format!("missing key column '{}'", c.name)))
                })
                .collect::<Result<_>>()?
        }
        serde_json::Value::Array(items) => {
            if items.len() != key_columns.len() {
                return Err(bad(format!(
                    "expected {} key values ({}), got {}",
                    key_columns.len(),
                    spec.primary_key.join(", "),
                    items.len()
                )));
            }
            items.iter().collect()
        }
        scalar if key_columns.len() == 1 => vec![scalar],
        _ => {
            return Err(bad(format!(
                "expected an object with key columns ({})",
                spec.primary_key.join(", ")
            )));
        }
    };
    key_columns
        .iter()
        .zip(raw)
        .map(|(col, json)| match Value::from_json(json, col.ty) {
            Ok(Value::Null) => Err(bad(format!("key column '{}' must not be null", col.name))),
            Ok(v) => Ok(v),
            Err(e) => Err(bad(format!("key column '{}': {e}", col.name))),
        })
        .collect()
}
