//! The configuration tree, layered: defaults < `kairos.toml` < `KAIROS_…` environment < flags,
//! and validated before anything starts.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use kairos_store::{LogConfig, OnlineConfig, StoreConfig};
use serde::{Deserialize, Serialize};

/// Settings of the server.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: String,
    /// Host names requests may be addressed to besides the loopback names and the listen
    /// address (`*`: any). Others are refused, which defeats DNS rebinding.
    pub allowed_hosts: Vec<String>,
    /// Browser origins allowed to call the API (CORS); none by default.
    pub allowed_origins: Vec<String>,
    /// Serve other machines even with no API key configured (protected mode off).
    pub insecure: bool,
    /// HTTPS and gRPC over TLS on the same port.
    pub tls: Option<TlsConfig>,
    /// Connections open at once; more are closed as they arrive.
    pub max_connections: usize,
    /// Seconds a client has for its first byte, its TLS handshake and each request's headers.
    pub header_timeout_secs: u64,
    /// Seconds a shutdown waits for requests in flight.
    pub shutdown_grace_secs: u64,
    /// Hosts monitors' alert webhooks may call; none by default.
    pub webhook_hosts: Vec<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:7070".into(),
            allowed_hosts: Vec::new(),
            allowed_origins: Vec::new(),
            insecure: false,
            tls: None,
            max_connections: 1024,
            header_timeout_secs: 10,
            shutdown_grace_secs: 10,
            webhook_hosts: Vec::new(),
        }
    }
}

/// Settings of the CLI as a client of a server (`--url`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientConfig {
    /// The API key sent as `Authorization: Bearer …`.
    pub api_key: Option<String>,
    /// A CA certificate (PEM) to trust for a server's TLS, beside the system's.
    pub ca_cert: Option<PathBuf>,
}

/// The server's TLS: PEM files of the certificate chain and its private key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The whole configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub store: StoreConfig,
    pub client: ClientConfig,
    /// What pipelines posted to the server may read.
    pub pipelines: kairos_pipeline::SourcePolicy,
}

/// What flags can override.
#[derive(Debug, Default)]
pub struct Overrides {
    pub data_dir: Option<PathBuf>,
    pub listen: Option<String>,
    pub online_backend: Option<String>,
    pub redis_url: Option<String>,
    pub api_key: Option<String>,
    pub ca_cert: Option<PathBuf>,
    pub insecure: bool,
}

impl Config {
    /// Loads the layers. `file` is the `--config` path; without it `./kairos.toml` is read if
    /// present.
    pub fn load(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
        flags: Overrides,
    ) -> anyhow::Result<Config> {
        let mut config = match file {
            Some(path) => read_file(path)?,
            None if Path::new("kairos.toml").exists() => read_file(Path::new("kairos.toml"))?,
            None => Config::default(),
        };
        let env_overrides = Overrides {
            data_dir: env("KAIROS_DATA_DIR").map(PathBuf::from),
            listen: env("KAIROS_LISTEN"),
            online_backend: env("KAIROS_ONLINE_BACKEND"),
            redis_url: env("KAIROS_REDIS_URL"),
            api_key: env("KAIROS_API_KEY"),
            ca_cert: env("KAIROS_CA_CERT").map(PathBuf::from),
            insecure: env("KAIROS_INSECURE").is_some_and(|v| v == "1" || v == "true"),
        };
        config.apply(env_overrides)?;
        if let Some(v) = env("KAIROS_LOG_RETENTION_SECS") {
            config.store.log_retention_secs = v
                .parse()
                .context("KAIROS_LOG_RETENTION_SECS: expected seconds")?;
        }
        if let Some(url) = env("KAIROS_CATALOG_URL") {
            config.store.catalog.url = Some(url);
        }
        if let Some(url) = env("KAIROS_STORAGE_URL") {
            config.store.storage.url = Some(url);
        }
        if let Some(brokers) = env("KAIROS_KAFKA_BROKERS") {
            match &mut config.store.log {
                LogConfig::Kafka { brokers: set, .. } => *set = brokers,
                log @ LogConfig::Segment => {
                    *log = toml::from_str(&format!("kind = 'kafka'\nbrokers = {brokers:?}"))
                        .context("KAIROS_KAFKA_BROKERS")?;
                }
            }
        }
        if let Some(v) = env("KAIROS_SOURCE_DIRS") {
            config.pipelines.source_dirs = std::env::split_paths(&v).collect();
        }
        if let Some(v) = env("KAIROS_MAX_BATCH_BYTES") {
            config.store.max_batch_bytes = v
                .parse()
                .context("KAIROS_MAX_BATCH_BYTES: expected bytes")?;
        }
        config.apply(flags)?;
        config
            .store
            .validate()
            .map_err(|e| anyhow::anyhow!("invalid configuration: store.{e}"))?;
        if config.server.max_connections == 0 || config.server.header_timeout_secs == 0 {
            bail!(
                "invalid configuration: server.max_connections and server.header_timeout_secs must be positive"
            );
        }
        config
            .server
            .listen
            .parse::<std::net::SocketAddr>()
            .with_context(|| {
                format!(
                    "invalid configuration: server.listen '{}' is not host:port",
                    config.server.listen
                )
            })?;
        Ok(config)
    }

    fn apply(&mut self, o: Overrides) -> anyhow::Result<()> {
        if let Some(dir) = o.data_dir {
            self.store.data_dir = dir;
        }
        if let Some(listen) = o.listen {
            self.server.listen = listen;
        }
        if let Some(key) = o.api_key {
            self.client.api_key = Some(key);
        }
        if let Some(cert) = o.ca_cert {
            self.client.ca_cert = Some(cert);
        }
        self.server.insecure |= o.insecure;
        let backend = o.online_backend.as_deref();
        let prefix = self
            .store
            .online
            .redis_prefix()
            .unwrap_or("kairos:")
            .to_string();
        match (backend, o.redis_url) {
            (Some("redb"), _) => self.store.online = OnlineConfig::Redb,
            (Some("redis-cluster"), urls) => {
                let nodes = match (urls, &self.store.online) {
                    (Some(urls), _) => urls.split(',').map(|u| u.trim().to_string()).collect(),
                    (None, OnlineConfig::RedisCluster { nodes, .. }) => nodes.clone(),
                    (None, _) => bail!(
                        "online backend redis-cluster: give its nodes with --redis-url \
                         (comma-separated) or KAIROS_REDIS_URL"
                    ),
                };
                let slots = match &self.store.online {
                    OnlineConfig::RedisCluster { slots, .. } => *slots,
                    _ => 16,
                };
                self.store.online = OnlineConfig::RedisCluster {
                    nodes,
                    prefix,
                    slots,
                };
            }
            (Some("redis"), url) | (None, url @ Some(_)) => {
                if let (
                    None,
                    OnlineConfig::RedisCluster {
                        nodes,
                        prefix,
                        slots,
                    },
                ) = (backend, &self.store.online)
                {
                    // A URL alone keeps a configured cluster a cluster.
                    let nodes = url.map_or_else(
                        || nodes.clone(),
                        |u| u.split(',').map(|u| u.trim().to_string()).collect(),
                    );
                    let (prefix, slots) = (prefix.clone(), *slots);
                    self.store.online = OnlineConfig::RedisCluster {
                        nodes,
                        prefix,
                        slots,
                    };
                    return Ok(());
                }
                let url = url
                    .or_else(|| match &self.store.online {
                        OnlineConfig::Redis { url, .. } => Some(url.clone()),
                        _ => None,
                    })
                    .unwrap_or_else(|| "redis://127.0.0.1:6379".into());
                self.store.online = OnlineConfig::Redis { url, prefix };
            }
            (Some(other), _) => {
                bail!("online backend: expected 'redb', 'redis' or 'redis-cluster', got '{other}'")
            }
            (None, None) => {}
        }
        Ok(())
    }
}

fn read_file(path: &Path) -> anyhow::Result<Config> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_apply_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("kairos.toml");
        std::fs::write(
            &file,
            "[store]\ndata_dir = \"from-file\"\n[server]\nlisten = \"127.0.0.1:1\"\n",
        )
        .unwrap();
        let env = |k: &str| (k == "KAIROS_LISTEN").then(|| "127.0.0.1:2".to_string());
        let config = Config::load(Some(&file), env, Overrides::default()).unwrap();
        assert_eq!(config.store.data_dir, PathBuf::from("from-file"));
        assert_eq!(config.server.listen, "127.0.0.1:2");

        let flags = Overrides {
            data_dir: Some("from-flag".into()),
            ..Default::default()
        };
        let config = Config::load(Some(&file), env, flags).unwrap();
        assert_eq!(config.store.data_dir, PathBuf::from("from-flag"));
    }

    #[test]
    fn bad_settings_are_refused_before_start() {
        let env = |k: &str| (k == "KAIROS_LISTEN").then(|| "nowhere".to_string());
        let err = Config::load(None, env, Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("server.listen"), "{err}");
        let flags = Overrides {
            online_backend: Some("memcached".into()),
            ..Default::default()
        };
        assert!(Config::load(None, |_| None, flags).is_err());
        let env = |k: &str| (k == "KAIROS_CATALOG_URL").then(|| "mysql://db".to_string());
        let err = Config::load(None, env, Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("store.catalog.url"), "{err}");
    }

    #[test]
    fn the_catalog_comes_from_the_file_or_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("kairos.toml");
        std::fs::write(
            &file,
            "[store.catalog]\nurl = \"postgres://kairos@db:5432/kairos\"\n",
        )
        .unwrap();
        let config = Config::load(Some(&file), |_| None, Overrides::default()).unwrap();
        assert_eq!(
            config.store.catalog.url.as_deref(),
            Some("postgres://kairos@db:5432/kairos")
        );
        let env = |k: &str| (k == "KAIROS_CATALOG_URL").then(|| "postgresql://other/k".to_string());
        let config = Config::load(Some(&file), env, Overrides::default()).unwrap();
        assert_eq!(
            config.store.catalog.url.as_deref(),
            Some("postgresql://other/k")
        );
        let config = Config::load(None, |_| None, Overrides::default()).unwrap();
        assert_eq!(
            config.store.catalog.url, None,
            "SQLite in the data dir by default"
        );
    }

    #[test]
    fn a_redis_cluster_and_a_bucket_come_from_the_file_or_the_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("kairos.toml");
        std::fs::write(
            &file,
            "[store.online]\nbackend = \"redis-cluster\"\nnodes = [\"redis://a:7001\", \"redis://b:7001\"]\nslots = 8\n\
             [store.storage]\nurl = \"s3://features/prod\"\n",
        )
        .unwrap();
        let config = Config::load(Some(&file), |_| None, Overrides::default()).unwrap();
        assert_eq!(
            config.store.online,
            OnlineConfig::RedisCluster {
                nodes: vec!["redis://a:7001".into(), "redis://b:7001".into()],
                prefix: "kairos:".into(),
                slots: 8,
            }
        );
        assert_eq!(
            config.store.storage.url.as_deref(),
            Some("s3://features/prod")
        );

        // A URL alone keeps the configured cluster a cluster, with its slots.
        let flags = Overrides {
            redis_url: Some("redis://c:7001,redis://d:7001".into()),
            ..Default::default()
        };
        let config = Config::load(Some(&file), |_| None, flags).unwrap();
        assert!(matches!(
            &config.store.online,
            OnlineConfig::RedisCluster { nodes, slots: 8, .. } if nodes.len() == 2 && nodes[0] == "redis://c:7001"
        ));
        let flags = Overrides {
            online_backend: Some("redis-cluster".into()),
            ..Default::default()
        };
        let err = Config::load(None, |_| None, flags).unwrap_err();
        assert!(err.to_string().contains("--redis-url"), "{err}");
        let env = |k: &str| (k == "KAIROS_STORAGE_URL").then(|| "gs://elsewhere".to_string());
        let err = Config::load(None, env, Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("store.storage.url"), "{err}");
    }

    #[test]
    fn kafka_brokers_from_the_environment_put_the_log_on_kafka() {
        let env = |k: &str| (k == "KAIROS_KAFKA_BROKERS").then(|| "127.0.0.1:9092".to_string());
        let config = Config::load(None, env, Overrides::default()).unwrap();
        assert_eq!(
            config.store.log,
            LogConfig::Kafka {
                brokers: "127.0.0.1:9092".into(),
                partitions: 4,
                topic_prefix: "kairos.fg.".into(),
                replication: 1,
                session_timeout_ms: 6_000,
                fetch_wait_ms: 50,
            }
        );
        let env = |k: &str| (k == "KAIROS_KAFKA_BROKERS").then(|| " ".to_string());
        let err = Config::load(None, env, Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("log.brokers"), "{err:#}");
    }

    #[test]
    fn a_kafka_logs_waits_are_set_in_the_file_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("kairos.toml");
        let log = |settings: &str| {
            let body = format!("[store.log]\nkind = \"kafka\"\nbrokers = \"k:9092\"\n{settings}");
            std::fs::write(&file, body).unwrap();
            Config::load(Some(&file), |_| None, Overrides::default())
        };
        let config = log("session_timeout_ms = 3000\nfetch_wait_ms = 10\n").unwrap();
        assert!(matches!(
            config.store.log,
            LogConfig::Kafka {
                session_timeout_ms: 3_000,
                fetch_wait_ms: 10,
                ..
            }
        ));
        let err = log("fetch_wait_ms = 0\n").unwrap_err();
        assert!(err.to_string().contains("log.fetch_wait_ms"), "{err:#}");
        let err = log("session_timeout_ms = 500\n").unwrap_err();
        assert!(
            err.to_string().contains("log.session_timeout_ms"),
            "{err:#}"
        );
    }
}
