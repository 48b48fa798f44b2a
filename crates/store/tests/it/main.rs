//! The feature store through its service API, on both online backends: the write path, reads,
//! TTL, as-of reads, delete, and the Delta tables read back by another tool.

mod expectations;
mod kafka;
mod vectors;
mod views;

use std::sync::Arc;

use arrow::array::{AsArray, Float64Array, Int64Array, TimestampMicrosecondArray};
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use kairos_catalog::testing::TestDatabase;
use kairos_store::{
    CatalogConfig, FeatureStore, InsertOptions, KeyStatus, OfflineFilter, OnlineConfig,
    StoreConfig, StoreError,
};
use kairos_types::{Clock, Column, FeatureGroupSpec, FeatureType, Format, ManualClock, Value};

const T0: i64 = 1_714_521_600_000_000; // 2024-05-01T00:00:00Z
const HOUR: i64 = 3_600_000_000;

fn spec(ttl_seconds: Option<u64>) -> FeatureGroupSpec {
    FeatureGroupSpec {
        name: "cards".into(),
        description: String::new(),
        columns: vec![
            Column::new("cc_num", FeatureType::Int64),
            Column::new("ts", FeatureType::Timestamp),
            Column::new("amount", FeatureType::Float64),
        ],
        primary_key: vec!["cc_num".into()],
        event_time: "ts".into(),
        online: true,
        ttl_seconds,
        vector_index: None,
        expectations: Vec::new(),
    }
}

fn batch(spec: &FeatureGroupSpec, rows: &[(i64, i64, f64)]) -> RecordBatch {
    RecordBatch::try_new(
        spec.arrow_schema(),
        vec![
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| r.1))
                    .with_timezone("UTC"),
            ),
            Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.2))),
        ],
    )
    .unwrap()
}

struct Fixture {
    store: FeatureStore,
    clock: Arc<ManualClock>,
    dir: tempfile::TempDir,
}

async fn open(online: OnlineConfig) -> Fixture {
    open_with(|config| config.online = online).await
}

async fn open_with(configure: impl FnOnce(&mut StoreConfig)) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0 + 10 * HOUR));
    let mut config = StoreConfig::with_data_dir(dir.path());
    configure(&mut config);
    let store = FeatureStore::open_with_clock(config, clock.clone())
        .await
        .unwrap();
    Fixture { store, clock, dir }
}

/// A key prefix no other test run uses.
fn redis_prefix() -> String {
    format!(
        "kairos-store-test-{}-{}:",
        std::process::id(),
        rand::random::<u64>()
    )
}

fn redis_config() -> Option<OnlineConfig> {
    let url = std::env::var("KAIROS_TEST_REDIS_URL").ok()?;
    Some(OnlineConfig::Redis {
        url,
        prefix: redis_prefix(),
    })
}

/// The Redis Cluster `KAIROS_TEST_REDIS_CLUSTER_URL` names (comma-separated nodes), if any.
fn redis_cluster_config() -> Option<OnlineConfig> {
    let urls = std::env::var("KAIROS_TEST_REDIS_CLUSTER_URL").ok()?;
    Some(OnlineConfig::RedisCluster {
        nodes: urls.split(',').map(str::to_string).collect(),
        prefix: redis_prefix(),
        slots: 4,
    })
}

fn amount(values: &Option<Vec<Value>>) -> f64 {
    match values.as_ref().map(|v| &v[2]) {
        Some(Value::Float64(a)) => *a,
        other => panic!("no amount: {other:?}"),
    }
}

async fn write_read_and_check(f: &Fixture) {
    let store = &f.store;
    let s = spec(Some(3600));
    store.create_group(s.clone()).await.unwrap();
    let wait = InsertOptions { wait_online: true };
    let ack = store
        .insert_batch(
            "cards",
            None,
            &batch(&s, &[(1, T0, 1.0), (2, T0, 2.0)]),
            wait,
        )
        .await
        .unwrap();
    assert_eq!(
        (ack.first_offset, ack.end_offset, ack.online_visible),
        (0, 2, true)
    );
    f.clock.advance(1);
    let as_known_then = f.clock.now_micros();
    f.clock.advance(1);
    // Card 1 gets a newer row, then a late older one; card 2 is rewritten at the same event time.
    let late = batch(
        &s,
        &[(1, T0 + HOUR, 10.0), (1, T0 - HOUR, -1.0), (2, T0, 20.0)],
    );
    store
        .insert_batch("cards", None, &late, wait)
        .await
        .unwrap();
    // Card 3 is old enough to have expired under the one-hour TTL.
    store
        .insert_batch("cards", None, &batch(&s, &[(3, T0, 3.0)]), wait)
        .await
        .unwrap();

    let keys = vec![
        vec![Value::Int64(1)],
        vec![Value::Int64(2)],
        vec![Value::Int64(3)],
        vec![Value::Int64(4)],
    ];
    f.clock.set(T0 + HOUR + 60_000_000);
    let got = store.get_online("cards", None, &keys).await.unwrap();
    assert_eq!(got[0].status, KeyStatus::Present);
    assert_eq!(amount(&got[0].values), 10.0);
    assert_eq!(got[1].status, KeyStatus::Expired);
    assert_eq!(got[2].status, KeyStatus::Expired);
    assert_eq!(got[3].status, KeyStatus::NotFound);
    f.clock.set(T0 + 30 * 60_000_000);
    let got = store.get_online("cards", None, &keys).await.unwrap();
    assert_eq!(
        amount(&got[1].values),
        20.0,
        "the same event time goes to the later write"
    );
    assert_eq!(got[2].status, KeyStatus::Present);

    store.wait_materialised("cards", None).await.unwrap();
    let all = store
        .read_offline("cards", None, OfflineFilter::default())
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(all.iter().map(RecordBatch::num_rows).sum::<usize>(), 6);
    let offsets: Vec<i64> = all
        .iter()
        .flat_map(|b| {
            b.column(4)
                .as_primitive::<arrow::datatypes::Int64Type>()
                .values()
                .to_vec()
        })
        .collect();
    assert_eq!(offsets, (0..6).collect::<Vec<_>>());
    let then = OfflineFilter {
        as_of: Some(as_known_then),
        ..Default::default()
    };
    let known = store
        .read_offline("cards", None, then)
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(known.iter().map(RecordBatch::num_rows).sum::<usize>(), 2);
    let window = OfflineFilter {
        start: Some(T0),
        end: Some(T0 + HOUR),
        as_of: None,
        before: None,
    };
    let in_window = store
        .read_offline("cards", None, window)
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(
        in_window.iter().map(RecordBatch::num_rows).sum::<usize>(),
        4
    );

    let report = store.check("cards", None).await.unwrap();
    assert!(report.clean, "{report:?}");
    assert_eq!(
        (report.offline_rows, report.offline_keys, report.online_keys),
        (6, 3, Some(3))
    );
}

#[tokio::test]
async fn redb_write_read_and_check() {
    write_read_and_check(&open(OnlineConfig::Redb).await).await;
}

/// Two processes, each with a log of its own, on one Redis: once the first has written a
/// group, the second finds the online store ahead of its log and refuses writes, naming why,
/// rather than materialising its rows under offsets that already mean the first's. Its reads
/// are the first's rows.
#[tokio::test]
async fn a_second_writer_with_a_log_of_its_own_is_refused() {
    let Some(config) = redis_config() else {
        return;
    };
    let first = open(config.clone()).await;
    let second = open(config).await;
    let s = spec(None);
    first.store.create_group(s.clone()).await.unwrap();
    second.store.create_group(s.clone()).await.unwrap();
    let wait = InsertOptions { wait_online: true };
    first
        .store
        .insert_batch(
            "cards",
            None,
            &batch(&s, &[(1, T0, 1.0), (2, T0, 2.0)]),
            wait,
        )
        .await
        .unwrap();
    // The second's materialiser reads the online store's position when it (re)starts.
    second.store.close().await;
    let second = Fixture {
        store: FeatureStore::open_with_clock(second.store.config().clone(), second.clock.clone())
            .await
            .unwrap(),
        ..second
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while second
        .store
        .describe("cards", None)
        .await
        .unwrap()
        .online_offset
        != Some(2)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the materialiser never read its position"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let refused = second
        .store
        .insert_batch(
            "cards",
            None,
            &batch(&s, &[(3, T0, 3.0)]),
            InsertOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, StoreError::Conflict(m) if m.contains("another process writes this group")),
        "{refused}"
    );
    let got = second
        .store
        .get_online("cards", None, &[vec![Value::Int64(2)]])
        .await
        .unwrap();
    assert_eq!(got[0].status, KeyStatus::Present);
    first.store.delete_group("cards", 1).await.unwrap();
}

#[tokio::test]
async fn redis_cluster_write_read_and_check() {
    if let Some(config) = redis_cluster_config() {
        let f = open(config).await;
        write_read_and_check(&f).await;
        f.store.delete_group("cards", 1).await.unwrap();
    }
}

#[tokio::test]
async fn redis_write_read_and_check() {
    if let Some(config) = redis_config() {
        let f = open(config).await;
        write_read_and_check(&f).await;
        f.store.delete_group("cards", 1).await.unwrap();
    }
}

#[tokio::test]
async fn refused_batches_write_nothing() {
    let f = open(OnlineConfig::Redb).await;
    f.store.create_group(spec(None)).await.unwrap();
    let bad = Bytes::from_static(b"cc_num,ts,amount\n1,2024-01-01T00:00:00Z,1\n2,,2\n");
    let err = f
        .store
        .insert("cards", None, Format::Csv, bad, InsertOptions::default())
        .await
        .unwrap_err();
    match err {
        StoreError::BadBatch(e) => assert_eq!((e.column.as_deref(), e.row), (Some("ts"), Some(2))),
        other => panic!("expected a refused batch, got {other:?}"),
    }
    assert_eq!(
        f.store
            .describe("cards", None)
            .await
            .unwrap()
            .log_end_offset,
        0
    );
    let err = f
        .store
        .insert(
            "cards",
            Some(7),
            Format::Csv,
            Bytes::new(),
            InsertOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
}

#[tokio::test]
async fn restart_resumes_and_delete_removes_everything() {
    let Fixture { store, dir, .. } = open(OnlineConfig::Redb).await;
    let s = spec(None);
    store.create_group(s.clone()).await.unwrap();
    store
        .insert_batch(
            "cards",
            None,
            &batch(&s, &[(1, T0, 1.0)]),
            InsertOptions::default(),
        )
        .await
        .unwrap();
    store.wait_materialised("cards", None).await.unwrap();
    store.close().await;
    drop(store);

    let config = StoreConfig::with_data_dir(dir.path());
    let store = FeatureStore::open(config).await.unwrap();
    store
        .insert_batch(
            "cards",
            None,
            &batch(&s, &[(2, T0, 2.0)]),
            InsertOptions::default(),
        )
        .await
        .unwrap();
    let report = store.check("cards", None).await.unwrap();
    assert!(report.clean && report.offline_rows == 2, "{report:?}");

    let table = store
        .offline_table_url("cards", None)
        .unwrap()
        .to_file_path()
        .unwrap();
    assert!(table.exists());
    store.delete_group("cards", 1).await.unwrap();
    assert!(!table.exists());
    assert!(store.list_groups().unwrap().is_empty());
    assert!(matches!(
        store.describe("cards", None).await,
        Err(StoreError::NotFound(_))
    ));
    // The next group of that name is version 2 and starts empty.
    let group = store.create_group(s).await.unwrap();
    assert_eq!(group.version, 2);
    let got = store
        .get_online("cards", None, &[vec![Value::Int64(1)]])
        .await
        .unwrap();
    assert_eq!(got[0].status, KeyStatus::NotFound);
    store.close().await;
}

/// The offline tables are plain Delta Lake: the Python `deltalake` package (delta-rs's Python
/// binding, not this code) reads the same rows. Skipped where it is not installed, unless
/// `KAIROS_REQUIRE_INTEROP=1` (as in CI).
#[tokio::test]
async fn delta_tables_read_back_with_python_deltalake() {
    python_deltalake_reads(open(OnlineConfig::Redb).await).await;
}

/// The same for a table in a bucket (a real S3 API: moto in CI), the reader reaching it with
/// the same `AWS_*` variables.
#[tokio::test]
async fn delta_tables_in_a_bucket_read_back_with_python_deltalake() {
    let Some(url) = kairos_storage::testing::s3_url("store-python") else {
        return;
    };
    python_deltalake_reads(open_with(|config| config.storage.url = Some(url)).await).await;
}

async fn python_deltalake_reads(f: Fixture) {
    let probe = std::process::Command::new("python3")
        .args(["-c", "import deltalake, pyarrow"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        assert!(
            std::env::var("KAIROS_REQUIRE_INTEROP").is_err(),
            "python deltalake is required but missing"
        );
        eprintln!("skipped: python3 -c 'import deltalake' failed");
        return;
    }
    let s = spec(None);
    f.store.create_group(s.clone()).await.unwrap();
    let rows = [(1, T0, 1.5), (2, T0 + HOUR, 2.5), (1, T0 + 30 * HOUR, 3.5)];
    f.store
        .insert_batch("cards", None, &batch(&s, &rows), InsertOptions::default())
        .await
        .unwrap();
    f.store.wait_materialised("cards", None).await.unwrap();
    let url = f.store.offline_table_url("cards", None).unwrap();
    let script = "import sys, json, deltalake\n\
                  t = deltalake.DeltaTable(sys.argv[1]).to_pyarrow_table().sort_by('_offset')\n\
                  d = t.to_pydict()\n\
                  print(json.dumps([[d['cc_num'][i], int(d['ts'][i].timestamp() * 1e6), d['amount'][i], d['_offset'][i]] for i in range(t.num_rows)]))\n";
    // One failed read was seen once in many runs with its cause unknown; retry, but show the
    // failure so it can be diagnosed if it comes back.
    let mut out = None;
    for attempt in 1..=3 {
        let run = std::process::Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(url.as_str())
            .output()
            .unwrap();
        if run.status.success() {
            out = Some(run);
            break;
        }
        eprintln!(
            "python deltalake read failed (attempt {attempt}): {}",
            String::from_utf8_lossy(&run.stderr)
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let out = out.expect("python deltalake could not read the table in 3 attempts");
    let read: Vec<(i64, i64, f64, i64)> = serde_json::from_slice(&out.stdout).unwrap();
    let expected: Vec<(i64, i64, f64, i64)> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| (r.0, r.1, r.2, i as i64))
        .collect();
    assert_eq!(read, expected);
}

/// A materialiser that commits once per small insert compacts its table as it goes: after
/// more than two rounds of commits, an explicit compaction finds only the files since the last.
/// And it checkpoints the table every `CHECKPOINT_EVERY` commits, not Delta's 100.
#[tokio::test]
async fn the_offline_materialiser_compacts_its_small_files() {
    let f = open(OnlineConfig::Redb).await;
    f.store.create_group(spec(None)).await.unwrap();
    let s = spec(None);
    let commits = 2 * kairos_offline::COMPACT_EVERY as i64 + 5;
    for i in 0..commits {
        let rows = batch(&s, &[(i % 7, T0 + i, i as f64)]);
        f.store
            .insert_batch("cards", None, &rows, InsertOptions::default())
            .await
            .unwrap();
        f.store.wait_materialised("cards", None).await.unwrap();
    }
    let log = f
        .store
        .offline_table_url("cards", None)
        .unwrap()
        .to_file_path()
        .unwrap()
        .join("_delta_log");
    let checkpoints = std::fs::read_dir(&log)
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            name.to_string_lossy().ends_with(".checkpoint.parquet")
        })
        .count();
    // Commit versions start at 0 (the first append creates the table); a checkpoint follows
    // every CHECKPOINT_EVERY-th, and each compaction is a commit too.
    assert!(
        checkpoints as i64 >= commits / i64::from(kairos_offline::CHECKPOINT_EVERY),
        "{checkpoints} checkpoints after {commits} commits"
    );
    let report = f.store.compact("cards", None).await.unwrap();
    assert!(report.files_removed <= 6, "{report:?}");
    let check = f.store.check("cards", None).await.unwrap();
    assert!(
        check.clean && check.offline_rows == commits as u64,
        "{check:?}"
    );
    f.store.close().await;
}

/// Two stores on two data dirs sharing one PostgreSQL catalog, as two replicas do: a group
/// one defines opens in the other, and versions count on across both.
#[tokio::test]
async fn stores_sharing_a_postgres_catalog_see_each_others_groups() {
    // The synchronous client that makes the database runs a runtime of its own.
    let create = || TestDatabase::create("kairos_store_test");
    let Some(db) = tokio::task::spawn_blocking(create).await.unwrap() else {
        eprintln!("skipped: KAIROS_TEST_POSTGRES_URL is not set");
        return;
    };
    let url = db.url();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let config = |dir: &tempfile::TempDir| StoreConfig {
        catalog: CatalogConfig {
            url: Some(url.clone()),
        },
        ..StoreConfig::with_data_dir(dir.path())
    };
    let a = FeatureStore::open(config(&dir_a)).await.unwrap();
    assert_eq!(a.create_group(spec(None)).await.unwrap().version, 1);
    assert!(
        !dir_a.path().join("catalog.db").exists(),
        "no SQLite catalog beside a PostgreSQL one"
    );
    let b = FeatureStore::open(config(&dir_b)).await.unwrap();
    let listed: Vec<(String, u32)> = b
        .list_groups()
        .unwrap()
        .into_iter()
        .map(|g| (g.spec.name, g.version))
        .collect();
    assert_eq!(listed, [("cards".to_string(), 1)]);
    assert_eq!(b.create_group(spec(None)).await.unwrap().version, 2);
    a.close().await;
    b.close().await;
    tokio::task::spawn_blocking(move || drop(db)).await.unwrap();
}

/// A catalog server that cannot be reached stops the store from opening, with an error that
/// names it, instead of hanging or falling back to a local catalog.
#[tokio::test]
async fn an_unreachable_catalog_is_unavailable_naming_postgresql() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig {
        catalog: CatalogConfig {
            url: Some("postgres://kairos@127.0.0.1:1/kairos".into()),
        },
        ..StoreConfig::with_data_dir(dir.path())
    };
    let err = FeatureStore::open(config).await.err().unwrap();
    assert!(
        matches!(&err, StoreError::Unavailable(m) if m.contains("postgresql")),
        "{err:?}"
    );
}

/// Readiness names each engine; a Redis server that goes away turns the online store's probe
/// to not ready, with its error, and leaves the others ready.
#[tokio::test]
async fn readiness_names_the_engine_that_stopped_answering() {
    if std::process::Command::new("redis-server")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var("KAIROS_TEST_REDIS_URL").is_err(),
            "redis-server is required where KAIROS_TEST_REDIS_URL is set"
        );
        eprintln!("skipped: no redis-server");
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut redis = std::process::Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("redis://127.0.0.1:{port}");
    let mut f = None;
    for _ in 0..50 {
        let online = OnlineConfig::Redis {
            url: url.clone(),
            prefix: "kairos-ready:".into(),
        };
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig {
            online,
            ..StoreConfig::with_data_dir(dir.path())
        };
        if let Ok(store) = FeatureStore::open(config).await {
            f = Some((store, dir));
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (store, _dir) = f.expect("the store opens on the test's Redis");
    let ready = |s: &[kairos_store::EngineStatus]| {
        s.iter()
            .map(|e| (e.engine.clone(), e.ready))
            .collect::<Vec<_>>()
    };
    let before = store.readiness().await;
    assert_eq!(
        ready(&before),
        [
            ("catalog (sqlite)".to_string(), true),
            ("online store (redis)".to_string(), true),
            ("data dir".to_string(), true),
        ]
    );
    redis.kill().unwrap();
    redis.wait().unwrap();
    let after = store.readiness().await;
    assert_eq!(
        ready(&after),
        [
            ("catalog (sqlite)".to_string(), true),
            ("online store (redis)".to_string(), false),
            ("data dir".to_string(), true),
        ]
    );
    assert!(after[1].error.is_some());
    store.close().await;
}
