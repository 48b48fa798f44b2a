//! A cluster configuration for servers under test: a PostgreSQL database of its own, a prefix
//! of the test bucket, a Redis key prefix, and optionally the groups' logs on Kafka brokers —
//! the engines `KAIROS_TEST_*` name (`.ci/run` starts them).

use std::path::{Path, PathBuf};

use kairos_catalog::testing::TestDatabase;

pub struct ClusterConfig {
    db: Option<TestDatabase>,
    path: String,
}

impl ClusterConfig {
    /// Writes `kairos.toml` in `dir` for test `name`, with the logs on `kafka` brokers when
    /// given; `None` (and a line saying why, so the test skips) when an engine is not named.
    pub async fn create(name: &str, dir: &Path, kafka: Option<&str>) -> Option<ClusterConfig> {
        let (Some(bucket), Ok(redis)) = (
            kairos_storage::testing::s3_url(name),
            std::env::var("KAIROS_TEST_REDIS_URL"),
        ) else {
            eprintln!("skipped: KAIROS_TEST_S3_URL or KAIROS_TEST_REDIS_URL is not set");
            return None;
        };
        let database = format!("kairos_{}", name.replace('-', "_"));
        let create = move || TestDatabase::create(&database);
        let Some(db) = tokio::task::spawn_blocking(create).await.unwrap() else {
            eprintln!("skipped: KAIROS_TEST_POSTGRES_URL is not set");
            return None;
        };
        let prefix = format!(
            "kairos-{name}-{}-{}:",
            std::process::id(),
            rand::random::<u64>()
        );
        let mut toml = format!(
            "[store.catalog]\nurl = \"{}\"\n[store.storage]\nurl = \"{bucket}\"\n\
             [store.online]\nbackend = \"redis\"\nurl = \"{redis}\"\nprefix = \"{prefix}\"\n",
            db.url()
        );
        if let Some(brokers) = kafka {
            toml.push_str(&format!(
                "[store.log]\nkind = \"kafka\"\nbrokers = \"{brokers}\"\n"
            ));
        }
        let path: PathBuf = dir.join("kairos.toml");
        std::fs::write(&path, toml).unwrap();
        Some(ClusterConfig {
            db: Some(db),
            path: path.display().to_string(),
        })
    }

    /// What a server or the CLI is started with to use it.
    pub fn env(&self) -> [(&str, &str); 1] {
        [("KAIROS_CONFIG", self.path.as_str())]
    }

    /// Drops the database, off the async workers (the PostgreSQL client blocks).
    pub async fn remove(mut self) {
        let db = self.db.take();
        tokio::task::spawn_blocking(move || drop(db)).await.unwrap();
    }
}
