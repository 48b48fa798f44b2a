//! The feature store with its groups' logs on Kafka (librdkafka's mock cluster, in process):
//! rows spread over the topic's partitions by key, each partition materialised on its own, and
//! every row in both stores exactly once — with one writer, and with two stores sharing the
//! log, the catalog and both stores as two replicas do.

use std::collections::HashMap;
use std::time::Duration;

use kairos_catalog::testing::TestDatabase;
use kairos_store::{
    CatalogConfig, FeatureStore, InsertOptions, KeyStatus, LogConfig, OfflineFilter, StorageConfig,
    StoreConfig,
};
use kairos_types::Value;
use rdkafka::mocking::MockCluster;

use super::{T0, amount, batch, redis_config, spec};

/// Partitions of the topics the mock makes on first use.
const PARTITIONS: u32 = 4;

pub(super) fn kafka(brokers: String) -> LogConfig {
    LogConfig::Kafka {
        brokers,
        partitions: PARTITIONS,
        topic_prefix: format!("kairos-test-{}.", rand::random::<u32>()),
        replication: 1,
        session_timeout_ms: 6_000,
        fetch_wait_ms: 50,
    }
}

/// A store in `dir` with its log on the mock cluster.
fn on_kafka(
    cluster: &MockCluster<rdkafka::producer::DefaultProducerContext>,
    dir: &tempfile::TempDir,
) -> StoreConfig {
    StoreConfig {
        log: kafka(cluster.bootstrap_servers()),
        ..StoreConfig::with_data_dir(dir.path())
    }
}

/// 50 keys, each written `rounds` times with a rising event time: the last round wins.
fn rows(first_key: i64, rounds: i64) -> Vec<(i64, i64, f64)> {
    (0..rounds)
        .flat_map(|round| {
            (first_key..first_key + 50).map(move |k| (k, T0 + round, (k * 1000 + round) as f64))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_on_kafka_spreads_its_rows_over_partitions_and_checks_clean() {
    let cluster = MockCluster::new(1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = FeatureStore::open(on_kafka(&cluster, &dir)).await.unwrap();
    let s = spec(None);
    store.create_group(s.clone()).await.unwrap();
    let wait = InsertOptions { wait_online: true };
    for round in 0..4 {
        let ack = store
            .insert_batch("cards", None, &batch(&s, &rows(0, 1)[..]), wait)
            .await
            .unwrap();
        assert!(ack.online_visible);
        assert_eq!(ack.rows, 50);
        assert!(
            ack.partition_ends.len() > 1,
            "round {round}: 50 keys in one partition: {ack:?}"
        );
    }
    store
        .insert_batch("cards", None, &batch(&s, &rows(0, 3)), wait)
        .await
        .unwrap();
    let keys: Vec<Vec<Value>> = (0..50).map(|k| vec![Value::Int64(k)]).collect();
    let got = store.get_online("cards", None, &keys).await.unwrap();
    for (k, lookup) in got.iter().enumerate() {
        assert_eq!(lookup.status, KeyStatus::Present, "key {k}");
        assert_eq!(amount(&lookup.values), (k * 1000 + 2) as f64, "key {k}");
    }

    let status = store.describe("cards", None).await.unwrap();
    assert_eq!(status.partitions.len(), PARTITIONS as usize, "{status:?}");
    let report = store.check("cards", None).await.unwrap();
    assert!(report.clean, "{report:?}");
    assert_eq!(
        (report.offline_rows, report.offline_keys, report.online_keys),
        (350, 50, Some(50))
    );

    // A cut of the log: the offline table read as of it, and each partition's log after it.
    let cut = store.wait_materialised("cards", None).await.unwrap();
    store
        .insert_batch("cards", None, &batch(&s, &rows(0, 1)), wait)
        .await
        .unwrap();
    store.wait_materialised("cards", None).await.unwrap();
    let before = OfflineFilter {
        before: Some(cut.clone()),
        ..OfflineFilter::default()
    };
    let as_of: usize = store
        .read_offline("cards", None, before)
        .await
        .unwrap()
        .collect()
        .await
        .unwrap()
        .iter()
        .map(|b| b.num_rows())
        .sum();
    assert_eq!(as_of, 350);
    let status = store.describe("cards", None).await.unwrap();
    let mut after = 0;
    for (partition, &from) in (0..).zip(cut.ends()) {
        let end = status.partitions[partition as usize].log_end_offset;
        let mut at = from;
        while at < end {
            let read = store
                .read_log(
                    "cards",
                    None,
                    partition,
                    at,
                    1 << 20,
                    Duration::from_secs(5),
                )
                .await
                .unwrap();
            assert!(!read.is_empty(), "partition {partition}: nothing at {at}");
            // A read goes on at the next message, past the rows of this one.
            for (first, next, rows) in read {
                assert_eq!(first, at);
                assert!(next >= first + rows.num_rows() as u64);
                after += rows.num_rows();
                at = next;
            }
        }
    }
    assert_eq!(after, 50);

    // Reopened, it resumes every partition where its stores stand: nothing twice.
    store.close().await;
    let config = store.config().clone();
    drop(store);
    let store = FeatureStore::open(config).await.unwrap();
    store
        .insert_batch("cards", None, &batch(&s, &rows(0, 1)), wait)
        .await
        .unwrap();
    let report = store.check("cards", None).await.unwrap();
    assert!(report.clean, "{report:?}");
    assert_eq!(report.offline_rows, 450);

    // Deleted, it goes with its rows (the mock has no DeleteTopics: its topic stays, said).
    store.delete_group("cards", 1).await.unwrap();
    assert!(store.describe("cards", None).await.is_err());
    store.create_group(s.clone()).await.unwrap();
    let keys = [vec![Value::Int64(1)]];
    let got = store.get_online("cards", None, &keys).await.unwrap();
    assert_eq!(got[0].status, KeyStatus::NotFound);
    store.close().await;
}

/// Which partitions each store materialises, once every partition has exactly one of them.
async fn settled_ownership(stores: &[&FeatureStore]) -> Vec<Vec<u32>> {
    let started = std::time::Instant::now();
    loop {
        let mut held: Vec<Vec<u32>> = Vec::new();
        for store in stores {
            let status = store.describe("cards", None).await.unwrap();
            held.push(
                status
                    .partitions
                    .iter()
                    .filter(|p| p.materialised_here)
                    .map(|p| p.partition)
                    .collect(),
            );
        }
        let mut all: Vec<u32> = held.iter().flatten().copied().collect();
        all.sort_unstable();
        if all == (0..PARTITIONS).collect::<Vec<_>>() {
            return held;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "the partitions were not shared out: {held:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Two stores on two data dirs sharing the Kafka log, a PostgreSQL catalog, a Redis online
/// store and a bucket — two replicas. The consumer group shares the partitions out between
/// them; both write at once, and every row ends in both stores exactly once, each store
/// seeing the partitions the other materialises move too. When one leaves, the other takes its
/// partitions over and goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_writing_one_kafka_log_land_every_row_once() {
    let (Some(online), Some(bucket)) = (
        redis_config(),
        kairos_storage::testing::s3_url("store-kafka"),
    ) else {
        eprintln!("skipped: needs KAIROS_TEST_REDIS_URL and KAIROS_TEST_S3_URL");
        return;
    };
    let create = || TestDatabase::create("kairos_store_kafka");
    let Some(db) = tokio::task::spawn_blocking(create).await.unwrap() else {
        eprintln!("skipped: KAIROS_TEST_POSTGRES_URL is not set");
        return;
    };
    let cluster = MockCluster::new(1).unwrap();
    let log = kafka(cluster.bootstrap_servers());
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let config = |dir: &tempfile::TempDir| StoreConfig {
        catalog: CatalogConfig {
            url: Some(db.url()),
        },
        storage: StorageConfig {
            url: Some(bucket.clone()),
        },
        online: online.clone(),
        log: log.clone(),
        offline_commit_interval_ms: 100,
        ..StoreConfig::with_data_dir(dir.path())
    };
    let a = FeatureStore::open(config(&dir_a)).await.unwrap();
    let s = spec(None);
    a.create_group(s.clone()).await.unwrap();
    let b = FeatureStore::open(config(&dir_b)).await.unwrap();

    let held = settled_ownership(&[&a, &b]).await;
    assert!(held.iter().all(|h| !h.is_empty()), "{held:?}");

    // Disjoint keys from each, several batches each, at once.
    let write = |store: FeatureStore, first_key: i64| {
        let s = s.clone();
        async move {
            for _ in 0..5 {
                store
                    .insert_batch(
                        "cards",
                        None,
                        &batch(&s, &rows(first_key, 2)),
                        InsertOptions::default(),
                    )
                    .await
                    .unwrap();
            }
        }
    };
    tokio::join!(write(a.clone(), 0), write(b.clone(), 1000));

    for store in [&a, &b] {
        let report = match store.check("cards", None).await {
            Ok(report) => report,
            Err(e) => panic!(
                "{e}: A {:?}, B {:?}",
                a.describe("cards", None).await.unwrap().partitions,
                b.describe("cards", None).await.unwrap().partitions
            ),
        };
        assert!(report.clean, "{report:?}");
        assert_eq!(
            (report.offline_rows, report.offline_keys, report.online_keys),
            (1000, 100, Some(100))
        );
    }
    let keys: Vec<Vec<Value>> = (0..50)
        .chain(1000..1050)
        .map(|k| vec![Value::Int64(k)])
        .collect();
    let from_a = a.get_online("cards", None, &keys).await.unwrap();
    let from_b = b.get_online("cards", None, &keys).await.unwrap();
    assert_eq!(from_a, from_b);
    let amounts: HashMap<i64, f64> = keys
        .iter()
        .zip(&from_a)
        .map(|(k, lookup)| match k[0] {
            Value::Int64(k) => (k, amount(&lookup.values)),
            _ => unreachable!(),
        })
        .collect();
    assert!(amounts.iter().all(|(k, a)| *a == (k * 1000 + 1) as f64));

    b.close().await;
    let held = settled_ownership(&[&a]).await;
    assert_eq!(held[0].len(), PARTITIONS as usize);
    let ack = a
        .insert_batch(
            "cards",
            None,
            &batch(&s, &rows(2000, 1)),
            InsertOptions { wait_online: true },
        )
        .await
        .unwrap();
    assert!(ack.online_visible);
    let report = a.check("cards", None).await.unwrap();
    assert!(report.clean, "{report:?}");
    assert_eq!(report.offline_rows, 1050);
    a.close().await;
    tokio::task::spawn_blocking(move || drop(db)).await.unwrap();
}
