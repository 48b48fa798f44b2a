//! The store's part of the configuration.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Which online store backs the feature groups.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(tag = "backend", rename_all = "lowercase")]
pub enum OnlineConfig {
    /// redb, in `<data_dir>/online.redb`: the embedded default.
    #[default]
    Redb,
    /// A Redis server; every key starts with `prefix`.
    Redis {
        url: String,
        #[serde(default = "default_prefix")]
        prefix: String,
    },
    /// A Redis Cluster, reached through some of its nodes (the client learns the rest); each
    /// table's keys are spread over `slots` slot groups, so over up to that many nodes.
    #[serde(rename = "redis-cluster")]
    RedisCluster {
        nodes: Vec<String>,
        #[serde(default = "default_prefix")]
        prefix: String,
        #[serde(default = "default_slots")]
        slots: u16,
    },
}

fn default_prefix() -> String {
    "kairos:".into()
}

fn default_slots() -> u16 {
    16
}

impl OnlineConfig {
    /// The key prefix of a Redis backend, if it is one.
    pub fn redis_prefix(&self) -> Option<&str> {
        match self {
            OnlineConfig::Redb => None,
            OnlineConfig::Redis { prefix, .. } | OnlineConfig::RedisCluster { prefix, .. } => {
                Some(prefix)
            }
        }
    }
}

/// Where the catalog lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct CatalogConfig {
    /// A PostgreSQL database (`postgres://user:password@host:port/database`) the replicas of a
    /// cluster share; when absent, `catalog.db` (SQLite) in the data dir.
    pub url: Option<String>,
}

/// Where the files that are neither the log nor the online store live: the offline Delta
/// tables, model artifacts, training datasets and vector-index snapshots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// An S3 bucket the replicas of a cluster share (`s3://bucket/prefix`; the endpoint,
    /// region and credentials from the `AWS_*` variables); when absent, the data dir.
    pub url: Option<String>,
}

/// Where the feature groups' logs live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum LogConfig {
    /// Segment files in `<data_dir>/logs`: the embedded default, one writer process.
    #[default]
    Segment,
    /// A Kafka topic per group version (`<topic_prefix><name>.v<version>`), which the
    /// replicas of a cluster share; made with `partitions` partitions when missing.
    Kafka {
        /// `bootstrap.servers`: `host:port,host:port`.
        brokers: String,
        #[serde(default = "default_partitions")]
        partitions: u32,
        #[serde(default = "default_topic_prefix")]
        topic_prefix: String,
        /// The replication factor of the topics it makes.
        #[serde(default = "default_replication")]
        replication: i32,
        /// How long a replica may go unheard before the others take its log partitions over
        /// (the materialisers' consumer group's `session.timeout.ms`; a Kafka broker accepts
        /// what lies within its `group.min.session.timeout.ms`, 6 s by default, and
        /// `group.max.session.timeout.ms`).
        #[serde(default = "default_session_timeout_ms")]
        session_timeout_ms: u64,
        /// How long a reader's fetch may wait at a broker for rows (`fetch.wait.max.ms`). A
        /// Kafka broker answers as soon as rows arrive, so this only paces idle reads; the
        /// development broker holds every fetch that finds nothing this long, so there it adds
        /// up to this much to each row's way to the stores.
        #[serde(default = "default_fetch_wait_ms")]
        fetch_wait_ms: u64,
    },
}

impl LogConfig {
    /// `segment` or `kafka`.
    pub fn kind(&self) -> &'static str {
        match self {
            LogConfig::Segment => "segment",
            LogConfig::Kafka { .. } => "kafka",
        }
    }
}

/// What the development broker (`kairos broker`, which has no CreateTopics) makes a topic with
/// on first use, so a topic made either way has the partitions the log expects.
fn default_partitions() -> u32 {
    4
}

fn default_topic_prefix() -> String {
    "kairos.fg.".into()
}

fn default_replication() -> i32 {
    1
}

fn default_session_timeout_ms() -> u64 {
    6_000
}

fn default_fetch_wait_ms() -> u64 {
    50
}

/// Settings of the feature store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    pub data_dir: PathBuf,
    pub catalog: CatalogConfig,
    pub storage: StorageConfig,
    pub online: OnlineConfig,
    pub log: LogConfig,
    /// A log segment is closed once it holds this many bytes.
    pub segment_bytes: u64,
    /// Segments both materialisers have passed are deleted once this many seconds old.
    pub log_retention_secs: u64,
    /// The largest insert accepted, in bytes.
    pub max_batch_bytes: usize,
    /// How much log one materialiser step takes at most.
    pub materialise_bytes: usize,
    /// Once the offline materialiser has caught up with the log, it commits what trickles in
    /// at most once per this many milliseconds (sooner when someone waits on the offline
    /// store, or a backlog builds): a Delta commit replays the table's log, so a commit per
    /// small insert would keep a core busy.
    pub offline_commit_interval_ms: u64,
    /// The Python workers that run views' Python functions (`[store.python]`).
    pub python: kairos_transform::PythonWorkersConfig,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("kairos-data"),
            catalog: CatalogConfig::default(),
            storage: StorageConfig::default(),
            online: OnlineConfig::Redb,
            log: LogConfig::Segment,
            segment_bytes: 64 << 20,
            log_retention_secs: 3600,
            max_batch_bytes: 256 << 20,
            materialise_bytes: 32 << 20,
            offline_commit_interval_ms: 1000,
            python: kairos_transform::PythonWorkersConfig::default(),
        }
    }
}

impl StoreConfig {
    pub fn with_data_dir(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            ..Self::default()
        }
    }

    pub fn log_retention(&self) -> Duration {
        Duration::from_secs(self.log_retention_secs)
    }

    /// Checks the settings before anything starts.
    pub fn validate(&self) -> Result<(), String> {
        if self.data_dir.as_os_str().is_empty() {
            return Err("data_dir: must not be empty".into());
        }
        if self.segment_bytes < 4096 {
            return Err(format!(
                "segment_bytes: {} is below the minimum of 4096",
                self.segment_bytes
            ));
        }
        if self.max_batch_bytes == 0 || self.materialise_bytes == 0 {
            return Err("max_batch_bytes and materialise_bytes must be positive".into());
        }
        let redis_url = |url: &str| {
            url.starts_with("redis://")
                || url.starts_with("rediss://")
                || url.starts_with("unix://")
        };
        match &self.online {
            OnlineConfig::Redb => {}
            OnlineConfig::Redis { url, .. } if !redis_url(url) => {
                return Err(format!("online.url: '{url}' is not a redis:// URL"));
            }
            OnlineConfig::Redis { .. } => {}
            OnlineConfig::RedisCluster { nodes, slots, .. } => {
                if nodes.is_empty() {
                    return Err("online.nodes: a Redis Cluster needs at least one node".into());
                }
                if let Some(url) = nodes.iter().find(|u| !redis_url(u)) {
                    return Err(format!("online.nodes: '{url}' is not a redis:// URL"));
                }
                if *slots == 0 {
                    return Err("online.slots: must be at least 1".into());
                }
            }
        }
        if let LogConfig::Kafka {
            brokers,
            partitions,
            replication,
            session_timeout_ms,
            fetch_wait_ms,
            ..
        } = &self.log
        {
            if *session_timeout_ms < 1_000 {
                return Err(format!(
                    "log.session_timeout_ms: {session_timeout_ms} is below 1000"
                ));
            }
            if !(1..=5_000).contains(fetch_wait_ms) {
                return Err(format!(
                    "log.fetch_wait_ms: {fetch_wait_ms} is not between 1 and 5000"
                ));
            }
            if brokers.trim().is_empty() {
                return Err("log.brokers: a Kafka log needs at least one broker".into());
            }
            if !(1..=1024).contains(partitions) {
                return Err(format!(
                    "log.partitions: {partitions} is not between 1 and 1024"
                ));
            }
            if *replication < 1 {
                return Err(format!("log.replication: {replication} is below 1"));
            }
        }
        if let Some(url) = &self.catalog.url
            && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            return Err(format!("catalog.url: '{url}' is not a postgres:// URL"));
        }
        if let Some(url) = &self.storage.url
            && !url.starts_with("s3://")
        {
            return Err(format!(
                "storage.url: '{url}' is not an s3://bucket/prefix URL"
            ));
        }
        Ok(())
    }
}
