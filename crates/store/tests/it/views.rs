//! Feature views through the store: point-in-time training data (with a spine, as known at,
//! splits), the zero-skew test (online vectors equal training rows, bit for bit), and bad
//! definitions refused with a reason.

use std::sync::Arc;

use arrow::array::{Array, RecordBatch};
use bytes::Bytes;
use kairos_store::{FeatureStore, InsertOptions, Spine, StoreConfig, StoreError};
use kairos_types::value::format_timestamp;
use kairos_types::{FeatureGroupSpec, FeatureType, Format, ManualClock, Value};
use kairos_view::dataset::Split;
use kairos_view::vector::EntryStatus;
use kairos_view::{FeatureViewSpec, SplitName, TrainingDatasetRequest};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

const T0: i64 = 1_714_521_600_000_000; // 2024-05-01T00:00:00Z
const MINUTE: i64 = 60_000_000;

struct Fixture {
    store: FeatureStore,
    clock: Arc<ManualClock>,
    _dir: tempfile::TempDir,
}

async fn open() -> Fixture {
    open_on(None).await
}

/// A store whose files are in the bucket `storage` names, or in the data dir.
async fn open_on(storage: Option<String>) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let mut config = StoreConfig::with_data_dir(dir.path());
    config.storage.url = storage;
    let store = FeatureStore::open_with_clock(config, clock.clone())
        .await
        .unwrap();
    Fixture {
        store,
        clock,
        _dir: dir,
    }
}

fn group(value: serde_json::Value) -> FeatureGroupSpec {
    serde_json::from_value(value).unwrap()
}

fn view(value: serde_json::Value) -> FeatureViewSpec {
    serde_json::from_value(value).unwrap()
}

async fn insert(store: &FeatureStore, name: &str, rows: &[serde_json::Value]) {
    if rows.is_empty() {
        return;
    }
    let body: String = rows.iter().map(|r| format!("{r}\n")).collect();
    store
        .insert(
            name,
            None,
            Format::JsonLines,
            Bytes::from(body),
            InsertOptions { wait_online: true },
        )
        .await
        .unwrap();
    store.wait_materialised(name, None).await.unwrap();
}

fn ts(micros: i64) -> String {
    format_timestamp(micros)
}

/// The fraud example's shape: transactions (the root, scored events) joined with card profiles
/// by card and with merchant statistics by a two-column key.
async fn create_groups(store: &FeatureStore) {
    store
        .create_group(group(json!({
            "name": "transactions",
            "columns": [
                {"name": "cc_num", "type": "int64"}, {"name": "ts", "type": "timestamp"},
                {"name": "amount", "type": "float64"}, {"name": "category", "type": "string"},
                {"name": "lat", "type": "float64"}, {"name": "lon", "type": "float64"},
                {"name": "merchant", "type": "string"}, {"name": "country", "type": "string"},
                {"name": "is_fraud", "type": "bool"}
            ],
            "primary_key": ["cc_num"], "event_time": "ts"
        })))
        .await
        .unwrap();
    store
        .create_group(group(json!({
            "name": "profiles",
            "columns": [
                {"name": "cc_num", "type": "int64"}, {"name": "ts", "type": "timestamp"},
                {"name": "home_lat", "type": "float64"}, {"name": "home_lon", "type": "float64"},
                {"name": "credit_limit", "type": "float64"}, {"name": "last_seen", "type": "timestamp"}
            ],
            "primary_key": ["cc_num"], "event_time": "ts"
        })))
        .await
        .unwrap();
    store
        .create_group(group(json!({
            "name": "merchants",
            "columns": [
                {"name": "merchant_id", "type": "string"}, {"name": "country", "type": "string"},
                {"name": "ts", "type": "timestamp"}, {"name": "fraud_rate", "type": "float64"},
                {"name": "tx_count", "type": "int64"}
            ],
            "primary_key": ["merchant_id", "country"], "event_time": "ts"
        })))
        .await
        .unwrap();
}

fn fraud_view() -> FeatureViewSpec {
    view(json!({
        "name": "fraud",
        "root": {
            "group": "transactions",
            "features": ["amount", "category"],
            "labels": ["is_fraud"],
            "request": ["amount", "category", "lat", "lon", "merchant", "country"]
        },
        "join": [
            {"group": "profiles", "features": ["home_lat", "home_lon", "credit_limit", "last_seen"], "prefix": "p_"},
            {"group": "merchants", "on": {"merchant": "merchant_id", "country": "country"}, "prefix": "m_",
             "lookback_seconds": 7200}
        ],
        "on_demand": [
            {"name": "dist_home", "function": "haversine", "inputs": ["lat", "lon", "p_home_lat", "p_home_lon"]},
            {"name": "amount_ratio", "expression": "amount / (p_credit_limit + 1)"},
            {"name": "since_seen", "function": "seconds_since", "inputs": ["p_last_seen"]},
            {"name": "hour", "function": "hour_of_day", "inputs": ["ts"]},
            {"name": "log_ratio", "function": "log1p", "inputs": ["amount_ratio"]}
        ],
        "transform": [
            {"feature": "amount", "kind": "standard_scaler"},
            {"feature": "category", "kind": "one_hot", "unknown": "category"},
            {"feature": "dist_home", "kind": "min_max"},
            {"feature": "m_fraud_rate", "kind": "robust_scaler"}
        ]
    }))
}

const CATEGORIES: [&str; 4] = ["grocery", "travel", "online", "fuel"];
const MERCHANTS: [(&str, &str); 3] = [("acme", "SE"), ("acme", "NO"), ("zeta", "SE")];

/// Timed feature rows, to be written in event-time order.
fn history(rng: &mut StdRng) -> Vec<(i64, &'static str, serde_json::Value)> {
    let mut rows = Vec::new();
    // Cards 0..6 have profiles (updated several times); cards 6 and 7 never do.
    for _ in 0..30 {
        let t = T0 + rng.random_range(0..600) * MINUTE;
        let card = rng.random_range(0..6);
        rows.push((
            t,
            "profiles",
            json!({
                "cc_num": card, "ts": ts(t),
                "home_lat": rng.random_range(55.0..69.0), "home_lon": rng.random_range(11.0..24.0),
                "credit_limit": rng.random_range(1..50) as f64 * 100.0,
                "last_seen": ts(t - rng.random_range(0..300) * MINUTE),
            }),
        ));
    }
    for _ in 0..20 {
        let t = T0 + rng.random_range(0..600) * MINUTE;
        let (merchant, country) = MERCHANTS[rng.random_range(0..MERCHANTS.len())];
        rows.push((
            t,
            "merchants",
            json!({"merchant_id": merchant, "country": country, "ts": ts(t),
                   "fraud_rate": rng.random_range(0.0..0.1), "tx_count": rng.random_range(0..1000)}),
        ));
    }
    rows.sort_by_key(|(t, _, _)| *t);
    rows
}

/// Scored events: keys, times and request values.
fn spine(rng: &mut StdRng, n: usize) -> Vec<serde_json::Value> {
    let mut times: Vec<i64> = (0..n)
        .map(|_| T0 + rng.random_range(0..700) * MINUTE + rng.random_range(0..60) * 1_000_000)
        .collect();
    times.sort_unstable();
    times
        .into_iter()
        .map(|t| {
            let (merchant, country) = MERCHANTS[rng.random_range(0..MERCHANTS.len())];
            json!({
                "cc_num": rng.random_range(0..8), "ts": ts(t),
                "amount": (rng.random_range(1..100_000) as f64) / 100.0,
                "category": CATEGORIES[rng.random_range(0..CATEGORIES.len())],
                "lat": rng.random_range(55.0..69.0), "lon": rng.random_range(11.0..24.0),
                "merchant": merchant, "country": country,
            })
        })
        .collect()
}

fn cell(batch: &RecordBatch, column: usize, row: usize) -> Value {
    let array = batch.column(column);
    let ty = FeatureType::from_arrow(array.data_type()).expect("a feature type");
    Value::from_array(array, ty, row)
}

/// Bit-for-bit comparison: floats by their bits, everything else by value.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Float64(x), Value::Float64(y)) => x.to_bits() == y.to_bits(),
        _ => a == b,
    }
}

#[tokio::test]
async fn online_vectors_equal_training_rows_bit_for_bit() {
    let f = open().await;
    let store = &f.store;
    create_groups(store).await;
    store.apply_view(fraud_view()).await.unwrap();
    let mut rng = StdRng::seed_from_u64(42);
    let history = history(&mut rng);
    let events = spine(&mut rng, 60);

    // Replay: write every feature row with event time ≤ t, then ask for the vector at t.
    let mut written = 0;
    let mut online: Vec<RecordBatch> = Vec::new();
    let mut statuses = Vec::new();
    for event in &events {
        let t = kairos_types::ingest::parse_timestamp(event["ts"].as_str().unwrap()).unwrap();
        while written < history.len() && history[written].0 <= t {
            let (_, name, row) = &history[written];
            insert(store, name, std::slice::from_ref(row)).await;
            written += 1;
        }
        let mut request = event.as_object().unwrap().clone();
        let entry = request.remove("cc_num").unwrap();
        let vectors = store
            .feature_vectors("fraud", None, &[entry], &[request], None)
            .await
            .unwrap();
        statuses.push(vectors.statuses[0]);
        online.push(vectors.features);
    }
    for (_, name, row) in &history[written..] {
        insert(store, name, std::slice::from_ref(row)).await;
    }
    assert!(
        statuses.contains(&EntryStatus::Complete) && statuses.contains(&EntryStatus::Incomplete)
    );

    // Training data for the same events, built point-in-time from the full history.
    let csv_rows: Vec<String> = events.iter().map(|e| format!("{e}\n")).collect();
    let td = store
        .create_training_dataset(
            "fraud",
            None,
            TrainingDatasetRequest::default(),
            Some(Spine {
                name: "events.jsonl".into(),
                format: Format::JsonLines,
                bytes: Bytes::from(csv_rows.concat()),
            }),
            None,
        )
        .await
        .unwrap();
    assert_eq!(td.row_counts[&SplitName::Train], events.len() as u64);
    let raw = store
        .read_training_dataset(&td, SplitName::Train, false)
        .await
        .unwrap();
    let raw = arrow::compute::concat_batches(&raw[0].schema(), &raw).unwrap();
    let transformed = store
        .read_training_dataset(&td, SplitName::Train, true)
        .await
        .unwrap();
    let transformed =
        arrow::compute::concat_batches(&transformed[0].schema(), &transformed).unwrap();
    let online_raw = arrow::compute::concat_batches(&online[0].schema(), &online).unwrap();
    let online_transformed = td.transforms.apply(&online_raw).unwrap();

    // Raw: the vector's columns are the training row's columns after key and time.
    let offset = 2;
    assert_eq!(
        online_raw.num_columns() + offset + 1,
        raw.num_columns(),
        "features, plus keys, time and label"
    );
    let mut compared = 0;
    for row in 0..events.len() {
        for c in 0..online_raw.num_columns() {
            let (o, t) = (cell(&online_raw, c, row), cell(&raw, c + offset, row));
            assert!(
                same(&o, &t),
                "row {row}, column {}: online {o:?}, training {t:?}",
                online_raw.schema().field(c).name()
            );
            compared += usize::from(o != Value::Null);
        }
        // Transformed: skip the two leading key/time columns and the trailing label.
        for c in 0..online_transformed.num_columns() {
            let (o, t) = (
                cell(&online_transformed, c, row),
                cell(&transformed, c + offset, row),
            );
            assert!(
                same(&o, &t),
                "row {row}, transformed column {}: online {o:?}, training {t:?}",
                online_transformed.schema().field(c).name()
            );
        }
    }
    assert!(
        compared > events.len() * 8,
        "most cells hold values ({compared})"
    );

    // The online path applies the frozen transforms itself when asked for the dataset version.
    let last = events.last().unwrap().as_object().unwrap().clone();
    let mut request = last.clone();
    let entry = request.remove("cc_num").unwrap();
    let plain = store
        .feature_vectors(
            "fraud",
            None,
            std::slice::from_ref(&entry),
            std::slice::from_ref(&request),
            None,
        )
        .await
        .unwrap();
    let frozen = store
        .feature_vectors(
            "fraud",
            None,
            std::slice::from_ref(&entry),
            std::slice::from_ref(&request),
            Some(td.version),
        )
        .await
        .unwrap();
    assert_eq!(
        frozen.features,
        td.transforms.apply(&plain.features).unwrap()
    );
    // What transports answer: the same batch, through Arrow IPC whole, and as JSON.
    let answered = store
        .online_vectors("fraud", None, &[entry], &[request], Some(td.version))
        .await
        .unwrap();
    assert_eq!(answered.features, frozen.features);
    assert_eq!(answered.training_dataset_version, Some(td.version));
    assert_eq!(
        kairos_store::Vectors::from_ipc(answered.to_ipc().unwrap()).unwrap(),
        answered
    );
    let json = answered.to_answer();
    assert_eq!(json.columns.len(), frozen.features.num_columns());
    assert_eq!(json.vectors[0].status, answered.statuses[0]);
    let names: Vec<String> = frozen
        .features
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert!(
        names.contains(&"category_travel".to_string())
            && names.contains(&"category__unknown".to_string())
    );
    let _ = &f.clock;
}

#[tokio::test]
async fn training_data_is_point_in_time_and_as_known_at() {
    let f = open().await;
    let store = &f.store;
    create_groups(store).await;
    store
        .apply_view(view(json!({
            "name": "simple",
            "root": {"group": "transactions", "features": ["amount"], "labels": ["is_fraud"]},
            "join": [{"group": "profiles", "features": ["credit_limit"]}]
        })))
        .await
        .unwrap();
    let profile = |t: i64, limit: f64| json!({"cc_num": 1, "ts": ts(t), "home_lat": 0.0, "home_lon": 0.0, "credit_limit": limit, "last_seen": ts(t)});
    // Known at 10:00: the limit set at 10:00.
    f.clock.set(T0 + 600 * MINUTE);
    insert(store, "profiles", &[profile(T0 + 600 * MINUTE, 100.0)]).await;
    // At 12:00 a backfill arrives, saying the limit changed at 10:30.
    f.clock.set(T0 + 720 * MINUTE);
    insert(
        store,
        "profiles",
        &[
            profile(T0 + 630 * MINUTE, 250.0),
            profile(T0 + 900 * MINUTE, 999.0),
        ],
    )
    .await;
    let tx = |t: i64, fraud: bool| json!({"cc_num": 1, "ts": ts(t), "amount": 5.0, "category": "fuel", "lat": 0.0, "lon": 0.0, "merchant": "acme", "country": "SE", "is_fraud": fraud});
    insert(
        store,
        "transactions",
        &[
            tx(T0 + 590 * MINUTE, false),
            tx(T0 + 600 * MINUTE, false),
            tx(T0 + 660 * MINUTE, true),
            tx(T0 + 1000 * MINUTE, false),
        ],
    )
    .await;

    let limits = |request: TrainingDatasetRequest| async {
        let td = store
            .create_training_dataset("simple", None, request, None, None)
            .await
            .unwrap();
        let mut rows: Vec<(i64, Option<f64>, SplitName)> = Vec::new();
        for split in [SplitName::Train, SplitName::Validation, SplitName::Test] {
            for b in store
                .read_training_dataset(&td, split, false)
                .await
                .unwrap()
            {
                let times = arrow::array::AsArray::as_primitive::<
                    arrow::datatypes::TimestampMicrosecondType,
                >(b.column_by_name("ts").unwrap())
                .clone();
                let limit = arrow::array::AsArray::as_primitive::<arrow::datatypes::Float64Type>(
                    b.column_by_name("credit_limit").unwrap(),
                )
                .clone();
                for i in 0..b.num_rows() {
                    rows.push((
                        (times.value(i) - T0) / MINUTE,
                        limit.is_valid(i).then(|| limit.value(i)),
                        split,
                    ));
                }
            }
        }
        rows.sort_by_key(|r| r.0);
        (td, rows)
    };
    let (td, rows) = limits(TrainingDatasetRequest::default()).await;
    let seen: Vec<(i64, Option<f64>)> = rows.iter().map(|r| (r.0, r.1)).collect();
    assert_eq!(
        seen,
        [
            (590, None),
            (600, Some(100.0)),
            (660, Some(250.0)),
            (1000, Some(999.0))
        ]
    );
    let offsets: Vec<(&str, u64)> = td
        .log_offsets
        .iter()
        .map(|(k, v)| (k.as_str(), *v))
        .collect();
    assert_eq!(offsets, [("profiles_v1", 3), ("transactions_v1", 4)]);
    let labels = td.statistics.iter().find(|s| s.name == "is_fraud").unwrap();
    assert_eq!(labels.categorical.as_ref().unwrap().distinct, 2);

    // As known at 11:00 the backfill did not exist yet: 100, not 250.
    let (_, rows) = limits(TrainingDatasetRequest {
        as_known_at: true,
        ..Default::default()
    })
    .await;
    let seen: Vec<(i64, Option<f64>)> = rows.iter().map(|r| (r.0, r.1)).collect();
    assert_eq!(
        seen,
        [
            (590, None),
            (600, Some(100.0)),
            (660, Some(100.0)),
            (1000, Some(999.0))
        ]
    );

    // Strictly before: the 10:00 row does not join the 10:00 transaction.
    let (_, rows) = limits(TrainingDatasetRequest {
        strict: true,
        ..Default::default()
    })
    .await;
    assert_eq!(rows[1].1, None);

    // A time range and a time split.
    let (td, rows) = limits(TrainingDatasetRequest {
        start: Some(T0 + 600 * MINUTE),
        end: Some(T0 + 1000 * MINUTE + 1),
        split: Split::Time {
            validation_start: T0 + 650 * MINUTE,
            test_start: T0 + 900 * MINUTE,
        },
        ..Default::default()
    })
    .await;
    let splits: Vec<(i64, SplitName)> = rows.iter().map(|r| (r.0, r.2)).collect();
    assert_eq!(
        splits,
        [
            (600, SplitName::Train),
            (660, SplitName::Validation),
            (1000, SplitName::Test)
        ]
    );
    assert_eq!(td.version, 4);
}

#[tokio::test]
async fn bad_definitions_are_refused_with_a_reason() {
    let f = open().await;
    let store = &f.store;
    create_groups(store).await;
    let refused = |v: serde_json::Value| async move {
        match store.apply_view(view(v)).await {
            Err(StoreError::InvalidView(m)) => m,
            other => panic!("expected a refusal, got {other:?}"),
        }
    };
    let m = refused(json!({"name": "v", "root": {"group": "nope"}})).await;
    assert!(m.contains("unknown feature group 'nope'"), "{m}");
    let m = refused(json!({"name": "v", "root": {"group": "transactions"},
        "join": [{"group": "merchants", "on": {"merchant": "merchant_id"}}]}))
    .await;
    assert!(m.contains("join key 'country'"), "{m}");
    let m = refused(json!({"name": "v", "root": {"group": "transactions"},
        "join": [{"group": "merchants", "on": {"merchant": "merchant_id", "amount": "country"}}]}))
    .await;
    assert!(
        m.contains("type mismatch") && m.contains("'amount' is float64"),
        "{m}"
    );
    let m = refused(json!({"name": "v", "root": {"group": "transactions"},
        "join": [{"group": "merchants", "on": {"merchant": "merchant_id", "country": "country"}, "features": ["country"]}]}))
    .await;
    assert!(m.contains("'country' clashes"), "{m}");
    let m = refused(json!({"name": "v", "root": {"group": "transactions"},
        "on_demand": [{"name": "a", "expression": "b + 1"}, {"name": "b", "expression": "a * 2"}]}))
    .await;
    assert!(m.contains("cyclic on-demand features: a -> b -> a"), "{m}");
    let m = refused(json!({"name": "v", "root": {"group": "transactions"},
        "on_demand": [{"name": "a", "expression": "nothing + 1"}]}))
    .await;
    assert!(m.contains("unknown input 'nothing'"), "{m}");
    let m = refused(
        json!({"name": "v", "root": {"group": "transactions", "labels": ["is_fraud"]},
        "on_demand": [{"name": "a", "function": "log1p", "inputs": ["is_fraud"]}]}),
    )
    .await;
    assert!(m.contains("is a label"), "{m}");
    let m = refused(json!({"name": "v", "root": {"group": "transactions"},
        "transform": [{"feature": "category", "kind": "standard_scaler"}]}))
    .await;
    assert!(m.contains("expected a number"), "{m}");
    assert!(
        store.list_views().unwrap().is_empty(),
        "nothing refused was stored"
    );
}

/// A label join: labels arrive after the payment they describe, so they are joined as known
/// when the dataset is made (the latest, a correction included), payments without one yet are
/// left out and counted, and online vectors neither need nor read them.
#[tokio::test]
async fn label_joins_take_the_labels_known_when_the_dataset_is_made() {
    let f = open().await;
    let store = &f.store;
    store
        .create_group(group(json!({
            "name": "payments", "primary_key": ["cc_num"], "event_time": "ts",
            "columns": [
                {"name": "cc_num", "type": "int64"}, {"name": "ts", "type": "timestamp"},
                {"name": "tx_id", "type": "int64"}, {"name": "amount", "type": "float64"}
            ]
        })))
        .await
        .unwrap();
    store
        .create_group(group(json!({
            "name": "outcomes", "primary_key": ["tx_id"], "event_time": "ts", "online": false,
            "columns": [
                {"name": "tx_id", "type": "int64"}, {"name": "ts", "type": "timestamp"},
                {"name": "fraud", "type": "bool"}
            ]
        })))
        .await
        .unwrap();
    insert(
        store,
        "payments",
        &[
            json!({"cc_num": 1, "ts": ts(T0), "tx_id": 10, "amount": 5.0}),
            json!({"cc_num": 1, "ts": ts(T0 + MINUTE), "tx_id": 11, "amount": 900.0}),
            json!({"cc_num": 2, "ts": ts(T0 + 2 * MINUTE), "tx_id": 12, "amount": 7.0}),
        ],
    )
    .await;
    // Payment 11 is first settled as genuine, then charged back a day later; 12 has no label.
    insert(
        store,
        "outcomes",
        &[
            json!({"tx_id": 10, "ts": ts(T0 + 1440 * MINUTE), "fraud": false}),
            json!({"tx_id": 11, "ts": ts(T0 + 60 * MINUTE), "fraud": false}),
            json!({"tx_id": 11, "ts": ts(T0 + 1500 * MINUTE), "fraud": true}),
        ],
    )
    .await;
    let refused = store
        .apply_view(view(json!({"name": "bad", "root": {"group": "payments"},
            "join": [{"group": "outcomes", "on": ["tx_id"], "labels": ["fraud"], "features": ["fraud"]}]})))
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("selects no features"), "{refused}");
    store
        .apply_view(view(json!({
            "name": "scored", "root": {"group": "payments", "features": ["amount"], "request": ["amount"]},
            "join": [{"group": "outcomes", "on": ["tx_id"], "labels": ["fraud"], "prefix": "is_"}]
        })))
        .await
        .unwrap();
    let status = store.describe_view("scored", None).unwrap();
    assert_eq!(status.labels, vec!["is_fraud".to_string()]);
    assert_eq!(status.columns, vec![("amount".into(), "float64".into())]);
    let request = TrainingDatasetRequest {
        strict: true,
        ..TrainingDatasetRequest::default()
    };
    let dataset = store
        .create_training_dataset("scored", None, request, None, None)
        .await
        .unwrap();
    assert_eq!(dataset.unlabelled, 1, "payment 12 has no label yet");
    let rows = store
        .read_training_dataset(&dataset, SplitName::Train, false)
        .await
        .unwrap();
    let mut got: Vec<(Value, Value)> = Vec::new();
    for b in &rows {
        let (amount, fraud) = (
            b.schema().index_of("amount").unwrap(),
            b.schema().index_of("is_fraud").unwrap(),
        );
        for r in 0..b.num_rows() {
            got.push((cell(b, amount, r), cell(b, fraud, r)));
        }
    }
    got.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
    assert_eq!(
        got,
        vec![
            (Value::Float64(5.0), Value::Bool(false)),
            (Value::Float64(900.0), Value::Bool(true)),
        ]
    );
    // Serving needs the key and the request value only: no tx_id, no label.
    let vectors = store
        .feature_vectors(
            "scored",
            None,
            &[json!(1)],
            &[json!({"amount": 42.0, "ts": ts(T0 + 3 * MINUTE)})
                .as_object()
                .unwrap()
                .clone()],
            None,
        )
        .await
        .unwrap();
    assert_eq!(vectors.statuses, vec![EntryStatus::Complete]);
    assert_eq!(vectors.features.num_columns(), 1);
}

/// A build that crashed between writing its files and recording them leaves a folder the
/// catalog does not list; the sweep that runs at open removes it (and the joins' spill files),
/// and keeps every listed dataset.
#[tokio::test]
async fn unfinished_training_dataset_builds_are_swept() {
    let f = open().await;
    let store = &f.store;
    create_groups(store).await;
    store
        .apply_view(view(json!({
            "name": "simple",
            "root": {"group": "transactions", "features": ["amount"], "labels": ["is_fraud"]}
        })))
        .await
        .unwrap();
    let tx = json!({"cc_num": 1, "ts": ts(T0), "amount": 5.0, "category": "fuel", "lat": 0.0, "lon": 0.0, "merchant": "acme", "country": "SE", "is_fraud": false});
    insert(store, "transactions", &[tx]).await;
    let td = store
        .create_training_dataset(
            "simple",
            None,
            TrainingDatasetRequest::default(),
            None,
            None,
        )
        .await
        .unwrap();
    let data_dir = f._dir.path();
    let kept = data_dir.join(&td.path);
    let orphan = data_dir.join("training_datasets/simple/v1/td9");
    std::fs::create_dir_all(&orphan).unwrap();
    std::fs::write(orphan.join("train.parquet"), b"half written").unwrap();
    std::fs::create_dir_all(data_dir.join("tmp/join-1")).unwrap();

    assert_eq!(store.sweep_unfinished_builds().unwrap(), 1);
    assert!(kept.exists(), "a listed dataset was removed");
    assert!(!orphan.exists(), "the unfinished build is still there");
    assert!(!data_dir.join("tmp/join-1").exists());
    let listed = store.training_dataset("simple", None, None).unwrap();
    assert_eq!(listed.version, td.version);
    assert!(
        !store
            .read_training_dataset(&listed, SplitName::Train, false)
            .await
            .unwrap()
            .is_empty()
    );
}

/// A store whose offline tables and training datasets are in a bucket (a real S3 API: moto in
/// CI) builds the training data a single-node store builds from the same writes, row for row
/// and split for split; a view's deletion takes its datasets from the bucket.
#[tokio::test]
async fn training_data_from_a_bucket_equals_the_single_node_result() {
    let Some(url) = kairos_storage::testing::s3_url("store-datasets") else {
        return;
    };
    let (local, shared) = (open().await, open_on(Some(url)).await);
    let mut rng = StdRng::seed_from_u64(7);
    let history = history(&mut rng);
    let transactions: Vec<serde_json::Value> = spine(&mut rng, 80)
        .into_iter()
        .enumerate()
        .map(|(i, mut event)| {
            event["is_fraud"] = json!(i % 5 == 0);
            event
        })
        .collect();
    let mut built = Vec::new();
    for f in [&local, &shared] {
        create_groups(&f.store).await;
        f.store.apply_view(fraud_view()).await.unwrap();
        for (_, name, row) in &history {
            insert(&f.store, name, std::slice::from_ref(row)).await;
        }
        insert(&f.store, "transactions", &transactions).await;
        let request = TrainingDatasetRequest {
            split: Split::Random {
                seed: 3,
                train: 0.6,
                validation: 0.2,
                test: 0.2,
            },
            ..Default::default()
        };
        let td = f
            .store
            .create_training_dataset("fraud", None, request, None, None)
            .await
            .unwrap();
        let mut splits = Vec::new();
        for split in [SplitName::Train, SplitName::Validation, SplitName::Test] {
            let rows = f
                .store
                .read_training_dataset(&td, split, true)
                .await
                .unwrap();
            splits.push(arrow::compute::concat_batches(&rows[0].schema(), &rows).unwrap());
        }
        built.push((td, splits));
    }
    let (local_td, local_rows) = &built[0];
    let (shared_td, shared_rows) = &built[1];
    assert!(local_rows[0].num_rows() > 0 && local_rows[1].num_rows() > 0);
    assert_eq!(local_rows, shared_rows);
    assert_eq!(local_td.row_counts, shared_td.row_counts);
    assert_eq!(local_td.log_offsets, shared_td.log_offsets);

    let mut parts: Vec<&str> = shared_td.path.split('/').collect();
    parts.push("train.parquet");
    let storage = shared.store.storage();
    assert!(storage.read(&parts).await.unwrap().is_some());
    shared.store.delete_view("fraud", 1).await.unwrap();
    assert!(storage.read(&parts).await.unwrap().is_none());
}
