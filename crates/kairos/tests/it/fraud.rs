//! The card-fraud example's data: `kairos gen transactions` output (JSON lines or Parquet) loads
//! as it is into the example's feature groups, and the same seed writes the same files.

use std::path::Path;

use crate::models::{json, kairos};

/// Runs `kairos gen transactions --out OUT` with `more` arguments, which must succeed.
fn generate(data: &Path, out: &Path, more: &[&str]) {
    let out = out.display().to_string();
    let mut args = vec!["gen", "transactions", "--out", &out];
    args.extend(more);
    let run = kairos(data, &args);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
}

#[test]
fn generated_transactions_load_into_the_example_groups() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let small = ["--cards", "100", "--days", "2"];
    let (first, second) = (dir.path().join("a"), dir.path().join("b"));
    generate(&data, &first, &small);
    generate(&data, &second, &small);
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/fraud");
    for group in ["transactions", "card_profiles", "labels"] {
        let file = format!("{group}.jsonl");
        let written = std::fs::read(first.join(&file)).unwrap();
        assert_eq!(
            written,
            std::fs::read(second.join(&file)).unwrap(),
            "{file} differs"
        );
        let lines = written.iter().filter(|b| **b == b'\n').count();
        assert!(lines > 0, "{file} is empty");
        let definition = examples.join(format!("{group}.toml")).display().to_string();
        json(&kairos(&data, &["fg", "create", &definition]));
        let path = first.join(&file).display().to_string();
        let ack = json(&kairos(
            &data,
            &["fg", "insert", &format!("fraud_{group}"), &path],
        ));
        assert_eq!(ack["rows"], lines, "{file}");
    }

    // The same history as Parquet: as many rows again in each group.
    let parquet = dir.path().join("parquet");
    generate(
        &data,
        &parquet,
        &[&small[..], &["--format", "parquet"]].concat(),
    );
    for group in ["transactions", "card_profiles", "labels"] {
        let lines = std::fs::read(first.join(format!("{group}.jsonl")))
            .unwrap()
            .iter()
            .filter(|b| **b == b'\n')
            .count();
        let path = parquet
            .join(format!("{group}.parquet"))
            .display()
            .to_string();
        let ack = json(&kairos(
            &data,
            &["fg", "insert", &format!("fraud_{group}"), &path],
        ));
        assert_eq!(ack["rows"], lines, "{group}.parquet");
    }
}

/// The example's window pipelines run over the generator's output (placed beside them, as the
/// definitions expect) and fill their groups with count, average, maximum and deviation.
#[test]
fn the_window_pipelines_aggregate_the_generated_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let folder = dir.path().join("fraud");
    generate(
        &data,
        &folder.join("data"),
        &["--cards", "50", "--days", "2"],
    );
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/fraud");
    for window in ["10m", "1h", "1d"] {
        let file = format!("card_amounts_{window}.toml");
        std::fs::copy(examples.join(&file), folder.join(&file)).unwrap();
        let status = json(&kairos(
            &data,
            &["pipeline", "run", &folder.join(&file).display().to_string()],
        ));
        assert!(status["events"].as_u64().unwrap() > 0, "{status}");
        let group = format!("fraud_card_amounts_{window}");
        let rows = kairos(&data, &["fg", "read", &group]);
        assert!(
            rows.status.success(),
            "{}",
            String::from_utf8_lossy(&rows.stderr)
        );
        let rows: Vec<serde_json::Value> = String::from_utf8(rows.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert!(!rows.is_empty(), "{group} is empty");
        let count = format!("count_{window}");
        let deviation = format!("stddev_amount_{window}");
        assert!(rows.iter().all(|r| r[&count].as_i64().unwrap() >= 1));
        assert!(
            rows.iter()
                .any(|r| r[&deviation].as_f64().is_some_and(|d| d > 0.0)),
            "{group}: no window of two payments or more"
        );
    }
}

/// `--kafka` sends every row to the brokers, one JSON object per message keyed by card: here
/// librdkafka's mock cluster, in this process.
#[test]
fn generated_transactions_go_to_kafka() {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;

    let cluster = rdkafka::mocking::MockCluster::new(1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let brokers = cluster.bootstrap_servers();
    generate(
        &dir.path().join("data"),
        &dir.path().join("out"),
        &["--cards", "50", "--days", "1", "--kafka", &brokers],
    );
    let file = std::fs::read_to_string(dir.path().join("out/transactions.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = file
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap_servers())
        .set("group.id", "check")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&["fraud_transactions"]).unwrap();
    let mut got = Vec::new();
    let started = std::time::Instant::now();
    while got.len() < lines.len() && started.elapsed() < std::time::Duration::from_secs(60) {
        if let Some(message) = consumer.poll(std::time::Duration::from_millis(200)) {
            let message = message.unwrap();
            let value: serde_json::Value =
                serde_json::from_slice(message.payload().unwrap()).unwrap();
            assert_eq!(
                message.key().unwrap(),
                value["cc_num"].to_string().as_bytes(),
                "keyed by card"
            );
            got.push(value);
        }
    }
    got.sort_by_key(|v| v["tx_id"].as_i64());
    assert_eq!(got, lines);
}
