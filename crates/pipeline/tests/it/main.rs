//! The pipeline runtime end to end on the embedded store: file replay into a created feature
//! group, malformed and too-late events to the dead-letter file, stop and resume without loss
//! or duplicates, HTTP push streams with early emission and freshness, chained pipelines.

use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::util::display::array_value_to_string;
use bytes::Bytes;
use kairos_pipeline::{Pipelines, RunState};
use kairos_store::{FeatureStore, LogConfig, OfflineFilter, StoreConfig};
use kairos_stream::PipelineSpec;
use kairos_types::Value;

const SPEC: &str = r#"
name = "card_10m"
checkpoint_interval = "20ms"
[source]
kind = "file"
path = "PATH"
[input]
key = "cc_num"
event_time = "ts"
columns = [
  { name = "cc_num", type = "int64" },
  { name = "ts", type = "timestamp" },
  { name = "amount", type = "float64" },
]
[window]
kind = "tumbling"
size = "10m"
out_of_orderness = "1m"
[output]
feature_group = "card_amount_10m"
[[aggregations]]
name = "avg_amount_10m"
agg = "avg"
column = "amount"
[[aggregations]]
name = "n_10m"
agg = "count"
[[aggregations]]
name = "max_amount_10m"
agg = "max"
column = "amount"
"#;

async fn open(dir: &std::path::Path) -> FeatureStore {
    open_on(dir, &Placement::default()).await
}

/// Where a store keeps what is not in its data dir.
#[derive(Default)]
struct Placement {
    /// The bucket of its files (pipeline checkpoints among them).
    storage: Option<String>,
    /// Its groups' logs on Kafka brokers.
    kafka: Option<String>,
}

async fn open_on(dir: &std::path::Path, placement: &Placement) -> FeatureStore {
    let mut config = StoreConfig::with_data_dir(dir);
    config.storage.url = placement.storage.clone();
    if let Some(brokers) = &placement.kafka {
        config.log = LogConfig::Kafka {
            brokers: brokers.clone(),
            partitions: 4,
            topic_prefix: "kairos.fg.".into(),
            replication: 1,
            session_timeout_ms: 6_000,
            fetch_wait_ms: 50,
        };
    }
    FeatureStore::open(config).await.unwrap()
}

/// `n` events over 3 hours for 20 cards, in time order but for a shuffle within 30 seconds:
/// (card, event time in seconds).
fn events(n: usize) -> impl Iterator<Item = (usize, i64)> {
    (0..n).map(move |i| {
        let t = 1_700_000_000 + (i as i64 * 10_800 / n as i64) - ((i * 7919) % 30) as i64;
        (i % 20, t)
    })
}

fn events_csv(n: usize, malformed: bool) -> String {
    let mut out = String::from("cc_num,ts,amount,merchant\n");
    for (i, (card, t)) in events(n).enumerate() {
        out.push_str(&format!(
            "{card},{t},{}.{:02},m{}\n",
            (i * 31) % 500,
            i % 100,
            i % 7
        ));
        if malformed && i % 500 == 250 {
            out.push_str("not-a-card,1700000000,1.0,m\n");
            out.push_str(&format!("{},,3.5,m\n", i % 20));
        }
    }
    out
}

/// Every offline row of `group` as text, sorted (ingestion time and offset left out).
async fn offline_rows(store: &FeatureStore, group: &str) -> Vec<String> {
    let spec = store.describe(group, None).await.unwrap().group.spec;
    let batches: Vec<RecordBatch> = store
        .read_offline(group, None, OfflineFilter::default())
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let mut rows = Vec::new();
    for b in &batches {
        for r in 0..b.num_rows() {
            let cells: Vec<String> = spec
                .columns
                .iter()
                .map(|c| array_value_to_string(b.column_by_name(&c.name).unwrap(), r).unwrap())
                .collect();
            rows.push(cells.join(","));
        }
    }
    rows.sort();
    rows
}

fn write_spec(dir: &std::path::Path, csv: &str) -> PipelineSpec {
    let path = dir.join("events.csv");
    std::fs::write(&path, csv).unwrap();
    PipelineSpec::parse("p.toml", &SPEC.replace("PATH", path.to_str().unwrap())).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_file_fills_a_created_group_and_bad_events_go_to_the_dead_letter_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("data")).await;
    let pipelines = Pipelines::new(store.clone());
    let spec = write_spec(dir.path(), &events_csv(3000, true));
    let def = pipelines.apply(spec.clone()).await.unwrap();
    assert_eq!(def.version, 1);
    // Applying the same definition again keeps the version.
    assert_eq!(pipelines.apply(spec).await.unwrap().version, 1);

    pipelines.start("card_10m").await.unwrap();
    let status = pipelines.wait("card_10m").await.unwrap();
    assert_eq!(status.state, RunState::Finished, "{status:?}");
    assert_eq!(status.events, 3000);
    assert_eq!(status.malformed, 12);
    assert_eq!(status.late, 0);
    // Every (card, ten-minute window) with events, written once.
    let windows: std::collections::HashSet<(usize, i64)> = events(3000)
        .map(|(card, t)| (card, t.div_euclid(600)))
        .collect();
    assert_eq!(status.rows_written, windows.len() as u64);

    let dead = std::fs::read_to_string(&status.dead_letter_file).unwrap();
    assert_eq!(dead.lines().count(), 12);
    assert!(dead.contains("not-a-card"), "{dead}");
    assert!(
        dead.contains("cc_num"),
        "the reason names the column: {dead}"
    );

    store
        .wait_materialised("card_amount_10m", None)
        .await
        .unwrap();
    let rows = offline_rows(&store, "card_amount_10m").await;
    assert_eq!(rows.len(), windows.len());
    let report = store.check("card_amount_10m", None).await.unwrap();
    assert!(report.clean, "{report:?}");

    // The online row of a card is its latest window.
    let online = store
        .get_online("card_amount_10m", None, &[vec![Value::Int64(3)]])
        .await
        .unwrap();
    let values = online[0].values.as_ref().unwrap();
    let last_end = events(3000)
        .filter(|(card, _)| *card == 3)
        .map(|(_, t)| (t.div_euclid(600) * 600 + 600) * 1_000_000)
        .max()
        .unwrap();
    assert_eq!(values[2], Value::Timestamp(last_end));
    pipelines.close().await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_stopped_and_resumed_writes_what_a_straight_run_writes() {
    stopped_and_resumed(Placement::default()).await;
}

/// The same with the partitions' checkpoints in a bucket (a real S3 API: moto in CI), each
/// start taking the partition over by raising its owner epoch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_resumed_from_checkpoints_in_a_bucket_writes_what_a_straight_run_writes() {
    if let Some(url) = kairos_storage::testing::s3_url("pipeline-resume") {
        let storage = Some(url);
        stopped_and_resumed(Placement {
            storage,
            ..Placement::default()
        })
        .await;
    }
}

/// The same with the output group's log on Kafka (librdkafka's mock cluster): each stop cuts
/// a delivery somewhere, and the resumed run finds what of it landed in the topic's
/// partitions by its producer tag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_resumed_into_a_kafka_log_writes_what_a_straight_run_writes() {
    let cluster = rdkafka::mocking::MockCluster::new(1).unwrap();
    let kafka = Some(cluster.bootstrap_servers());
    stopped_and_resumed(Placement {
        kafka,
        ..Placement::default()
    })
    .await;
}

async fn stopped_and_resumed(placement: Placement) {
    let csv = events_csv(40_000, false);
    // Straight through.
    let straight_dir = tempfile::tempdir().unwrap();
    let straight = open(&straight_dir.path().join("data")).await;
    let pipelines = Pipelines::new(straight.clone());
    pipelines
        .apply(write_spec(straight_dir.path(), &csv))
        .await
        .unwrap();
    pipelines.start("card_10m").await.unwrap();
    assert_eq!(
        pipelines.wait("card_10m").await.unwrap().state,
        RunState::Finished
    );
    straight
        .wait_materialised("card_amount_10m", None)
        .await
        .unwrap();
    let expected = offline_rows(&straight, "card_amount_10m").await;
    pipelines.close().await;
    straight.close().await;

    // Stopped and started again, several times, reopening the store each time.
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), &csv);
    let mut stops = 0;
    loop {
        let store = open_on(&dir.path().join("data"), &placement).await;
        let pipelines = Pipelines::new(store.clone());
        pipelines.apply(spec.clone()).await.unwrap();
        pipelines.start("card_10m").await.unwrap();
        // Longer each time, so that a run whose start is slow (a bucket's round trips) still
        // gets through the file in a bounded number of stops.
        tokio::time::sleep(Duration::from_millis(15 + 5 * stops)).await;
        let state = pipelines.stop("card_10m").await.unwrap().state;
        if state == RunState::Finished || stops > 50 {
            store
                .wait_materialised("card_amount_10m", None)
                .await
                .unwrap();
            assert_eq!(
                state,
                RunState::Finished,
                "not through the file in {stops} stops"
            );
            assert_eq!(offline_rows(&store, "card_amount_10m").await, expected);
            assert!(store.check("card_amount_10m", None).await.unwrap().clean);
            let local = dir.path().join("data/pipelines/card_10m/v1/partitions");
            assert_eq!(
                local.exists(),
                placement.storage.is_none(),
                "checkpoints in {local:?}"
            );
            pipelines.close().await;
            store.close().await;
            break;
        }
        assert_eq!(state, RunState::Stopped);
        stops += 1;
        pipelines.close().await;
        store.close().await;
    }
    assert!(
        stops >= 1,
        "the pipeline finished before it could be stopped"
    );
    eprintln!("finished after {stops} stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_events_are_windowed_early_and_freshness_is_measured_and_pipelines_chain() {
    pushed_events_windowed_and_chained(&Placement::default()).await;
}

/// The same with the log on Kafka (librdkafka's mock cluster): a stream is a topic of that
/// cluster, each pushed body one message, read by the pipeline as a Kafka source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_events_on_a_kafka_log_are_windowed_early_and_pipelines_chain() {
    let cluster = rdkafka::mocking::MockCluster::new(1).unwrap();
    let placement = Placement {
        kafka: Some(cluster.bootstrap_servers()),
        ..Placement::default()
    };
    pushed_events_windowed_and_chained(&placement).await;
}

async fn pushed_events_windowed_and_chained(placement: &Placement) {
    let dir = tempfile::tempdir().unwrap();
    let store = open_on(dir.path(), placement).await;
    let pipelines = Pipelines::new(store.clone());
    let text = SPEC
        .replace(
            "kind = \"file\"\npath = \"PATH\"",
            "kind = \"http\"\nstream = \"transactions\"",
        )
        .replace("out_of_orderness = \"1m\"", "early_emit = \"20ms\"");
    pipelines
        .apply(PipelineSpec::parse("p.toml", &text).unwrap())
        .await
        .unwrap();
    // A second pipeline reads the first one's output group: the hourly max of its averages.
    let chained = r#"
name = "card_1h"
checkpoint_interval = "20ms"
[source]
kind = "feature_group"
name = "card_amount_10m"
[input]
key = "cc_num"
event_time = "window_end"
columns = [
  { name = "cc_num", type = "int64" },
  { name = "window_end", type = "timestamp" },
  { name = "avg_amount_10m", type = "float64" },
]
[window]
kind = "tumbling"
size = "1h"
# On a Kafka log the group has four partitions and the events are in one: the quiet ones
# must not hold the watermark back.
idle_timeout = "200ms"
[output]
feature_group = "card_1h"
[[aggregations]]
name = "windows_1h"
agg = "count"
"#;
    pipelines
        .apply(PipelineSpec::parse("c.toml", chained).unwrap())
        .await
        .unwrap();
    pipelines.start_all().await;
    assert!(
        pipelines
            .push("nobody-reads", Bytes::from_static(b"{}\n"))
            .await
            .is_err()
    );
    let t0 = 1_700_000_000i64;
    let body = format!(
        "{{\"cc_num\": 1, \"ts\": {t0}, \"amount\": 10.0}}\n{{\"cc_num\": 1, \"ts\": {}, \"amount\": 30.0}}\nnot json\n",
        t0 + 60
    );
    pipelines
        .push("transactions", Bytes::from(body))
        .await
        .unwrap();

    // Early emission makes the open window visible online before it closes (on Kafka, once
    // the consumer groups of the stream and the output group have their partitions).
    let mut seen = None;
    for _ in 0..1500 {
        let got = store
            .get_online("card_amount_10m", None, &[vec![Value::Int64(1)]])
            .await
            .unwrap();
        if let Some(values) = &got[0].values {
            seen = Some(values.clone());
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let values = seen.expect("the open window is visible online");
    assert_eq!(values[3], Value::Float64(20.0));
    assert_eq!(values[4], Value::Int64(2));

    // An event two hours later closes the windows; the chained pipeline sees them.
    let later = format!(
        "{{\"cc_num\": 1, \"ts\": {}, \"amount\": 1.0}}\n",
        t0 + 7200
    );
    pipelines
        .push("transactions", Bytes::from(later))
        .await
        .unwrap();
    let mut status = pipelines.status("card_10m").await.unwrap();
    for _ in 0..300 {
        status = pipelines.status("card_10m").await.unwrap();
        if status.freshness.is_some_and(|f| f.rows >= 2) && status.malformed == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(status.malformed, 1, "{status:?}");
    let freshness = status.freshness.expect("freshness measured");
    assert!(freshness.p99_ms >= freshness.p50_ms && freshness.p50_ms >= 0.0);

    let mut chained_rows = Vec::new();
    for _ in 0..300 {
        store.wait_materialised("card_1h", None).await.unwrap();
        chained_rows = offline_rows(&store, "card_1h").await;
        if !chained_rows.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        !chained_rows.is_empty(),
        "the chained pipeline wrote nothing: {:?} {}",
        pipelines.status("card_1h").await,
        std::fs::read_to_string(dir.path().join("pipelines/card_1h/v1/dead_letter.jsonl")).unwrap()
    );
    let stopped = pipelines.stop("card_10m").await.unwrap();
    assert_eq!(stopped.state, RunState::Stopped);
    pipelines.close().await;
    store.close().await;
}

const KAFKA_SPEC: &str = r#"
name = "NAME"
checkpoint_interval = "20ms"
[source]
SOURCE
[input]
key = "cc_num"
event_time = "ts"
columns = [
  { name = "cc_num", type = "int64" },
  { name = "ts", type = "timestamp" },
  { name = "amount", type = "float64" },
]
[window]
kind = "tumbling"
size = "10m"
out_of_orderness = "1m"
[output]
feature_group = "NAME"
[[aggregations]]
name = "n"
agg = "count"
[[aggregations]]
name = "max_amount"
agg = "max"
column = "amount"
"#;

/// A Kafka topic of two partitions on librdkafka's mock cluster, read by a pipeline that is
/// stopped half-way and resumed, gives the same windows as the same events replayed from a file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kafka_topic_read_in_a_consumer_group_gives_the_windows_a_file_replay_gives() {
    use rdkafka::mocking::MockCluster;
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("transactions", 2, 1).unwrap();
    let producer: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap_servers())
        .create()
        .unwrap();
    let flush_at = 1_700_000_000 + 86_400;
    let mut lines: Vec<(usize, String)> = events(4000)
        .enumerate()
        .map(|(i, (card, t))| {
            (
                card,
                format!(
                    "{{\"cc_num\": {card}, \"ts\": {t}, \"amount\": {}.5}}",
                    (i * 31) % 500
                ),
            )
        })
        .collect();
    // One late-in-the-day event per partition closes every window of the test.
    lines.push((
        0,
        format!("{{\"cc_num\": 0, \"ts\": {flush_at}, \"amount\": 1.0}}"),
    ));
    lines.push((
        1,
        format!("{{\"cc_num\": 1, \"ts\": {flush_at}, \"amount\": 1.0}}"),
    ));
    let produce = |lines: &[(usize, String)]| {
        for (card, line) in lines {
            let key = card.to_string();
            producer
                .send(
                    BaseRecord::to("transactions")
                        .key(&key)
                        .payload(line)
                        .partition((card % 2) as i32),
                )
                .unwrap();
        }
        producer.flush(Duration::from_secs(10)).unwrap();
    };
    let half = lines.len() / 2;
    produce(&lines[..half]);

    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let pipelines = Pipelines::new(store.clone());
    let kafka_source = format!(
        "kind = \"kafka\"\nbrokers = \"{}\"\ntopic = \"transactions\"\nproperties = {{ \"session.timeout.ms\" = \"6000\", \"heartbeat.interval.ms\" = \"200\" }}",
        cluster.bootstrap_servers()
    );
    let kafka = KAFKA_SPEC
        .replace("NAME", "from_kafka")
        .replace("SOURCE", &kafka_source);
    pipelines
        .apply(PipelineSpec::parse("k.toml", &kafka).unwrap())
        .await
        .unwrap();
    // The first run reads the first half and stops; the second half arrives while it is down;
    // the second run resumes from the checkpoint and reads only the second half.
    let events_reach = |n: usize| {
        let pipelines = &pipelines;
        async move {
            for _ in 0..1500 {
                let status = pipelines.status("from_kafka").await.unwrap();
                if status.events >= n as u64 {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    pipelines.start("from_kafka").await.unwrap();
    events_reach(half).await;
    let first = pipelines.stop("from_kafka").await.unwrap();
    assert_eq!(first.events, half as u64, "{first:?}");
    produce(&lines[half..]);
    pipelines.start("from_kafka").await.unwrap();
    events_reach(lines.len()).await;
    let status = pipelines.stop("from_kafka").await.unwrap();
    assert_eq!(status.events, lines.len() as u64, "{status:?}");
    assert_eq!(status.late, 0);

    // The same events from a file.
    let path = dir.path().join("events.jsonl");
    let body: String = lines.iter().map(|(_, l)| format!("{l}\n")).collect();
    std::fs::write(&path, body).unwrap();
    let file_source = format!("kind = \"file\"\npath = \"{}\"", path.display());
    let file = KAFKA_SPEC
        .replace("NAME", "from_file")
        .replace("SOURCE", &file_source);
    pipelines
        .apply(PipelineSpec::parse("f.toml", &file).unwrap())
        .await
        .unwrap();
    pipelines.start("from_file").await.unwrap();
    pipelines.wait("from_file").await.unwrap();

    store.wait_materialised("from_kafka", None).await.unwrap();
    store.wait_materialised("from_file", None).await.unwrap();
    let flush_window = (flush_at / 600 * 600) * 1_000_000;
    let closed = |rows: Vec<String>| -> Vec<String> {
        rows.into_iter()
            .filter(|r| !r.contains(&kairos_types::value::format_timestamp(flush_window)[..16]))
            .collect()
    };
    let from_kafka = closed(offline_rows(&store, "from_kafka").await);
    let from_file = closed(offline_rows(&store, "from_file").await);
    assert!(from_file.len() > 300, "{} rows", from_file.len());
    assert_eq!(from_kafka, from_file);
    pipelines.close().await;
    store.close().await;
}

/// A topic whose second partition never gets an event: with `idle_timeout` the quiet partition
/// stops holding the watermark back, and the first partition's windows close and are written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_kafka_partition_is_marked_idle_and_windows_close_without_it() {
    use rdkafka::mocking::MockCluster;
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("transactions", 2, 1).unwrap();
    let producer: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap_servers())
        .create()
        .unwrap();
    let t0 = 1_700_000_000;
    for i in 0..120 {
        let line = format!(
            "{{\"cc_num\": 7, \"ts\": {}, \"amount\": 1.0}}",
            t0 + i * 60
        );
        producer
            .send(
                BaseRecord::to("transactions")
                    .key("7")
                    .payload(&line)
                    .partition(0),
            )
            .unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let pipelines = Pipelines::new(store.clone());
    let source = format!(
        "kind = \"kafka\"\nbrokers = \"{}\"\ntopic = \"transactions\"\nproperties = {{ \"session.timeout.ms\" = \"6000\", \"heartbeat.interval.ms\" = \"200\" }}",
        cluster.bootstrap_servers()
    );
    let spec = KAFKA_SPEC
        .replace("NAME", "quiet")
        .replace("SOURCE", &source)
        .replace(
            "out_of_orderness = \"1m\"",
            "out_of_orderness = \"1m\"\nidle_timeout = \"300ms\"",
        );
    pipelines
        .apply(PipelineSpec::parse("q.toml", &spec).unwrap())
        .await
        .unwrap();
    pipelines.start("quiet").await.unwrap();
    let mut status = pipelines.status("quiet").await.unwrap();
    for _ in 0..1000 {
        status = pipelines.status("quiet").await.unwrap();
        if status.rows_written >= 12 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Two hours of events touch 13 windows; all but the last are behind the watermark (the
    // last event's time less a minute) once partition 1 no longer holds it at the start.
    assert_eq!(status.events, 120, "{status:?}");
    assert_eq!(status.rows_written, 12, "{status:?}");
    assert_eq!(status.positions.len(), 2, "{status:?}");
    pipelines.stop("quiet").await.unwrap();
    pipelines.close().await;
    store.close().await;
}
