//! What the fuzz targets share: the feature group every ingest target writes to, a batch the
//! expression target evaluates over, and the properties each parser must keep for any input.

use std::sync::{Once, OnceLock};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::TimestampMicrosecondType;
use bytes::Bytes;
use kairos_types::expectations::{Expectations, Outcome};
use kairos_types::ingest::{
    MAX_TIMESTAMP_MICROS, MIN_TIMESTAMP_MICROS, conform, decode_events, parse_batch,
};
use kairos_types::{Column, FeatureGroupSpec, FeatureType, Format};

/// A group with a column of every feature type, an integer key and a required event time.
pub fn group() -> FeatureGroupSpec {
    FeatureGroupSpec {
        name: "fuzzed".into(),
        description: String::new(),
        columns: vec![
            Column::new("id", FeatureType::Int64),
            Column::new("ts", FeatureType::Timestamp),
            Column::new("flag", FeatureType::Bool),
            Column::new("small", FeatureType::Int32),
            Column::new("ratio", FeatureType::Float32),
            Column::new("amount", FeatureType::Float64),
            Column::new("category", FeatureType::String),
            Column::new("day", FeatureType::Date),
            Column::new("emb", FeatureType::Embedding { dim: 3 }),
        ],
        primary_key: vec!["id".into()],
        event_time: "ts".into(),
        online: true,
        ttl_seconds: None,
        vector_index: None,
        expectations: Vec::new(),
    }
}

/// Rows of [`group`] as CSV, nulls included: the batch expressions are evaluated over.
pub const ROWS_CSV: &str = "\
id,ts,flag,small,ratio,amount,category,day,emb
1,2024-01-01T00:00:00Z,true,3,0.5,12.5,food,2024-01-01,\"[1,0,0]\"
2,2024-01-01T00:00:01Z,false,-7,,0,,2023-12-31,
3,1970-01-01T00:00:00Z,,2147483647,-1e30,-0.0,travel,,\"[0.5,0.5,0.5]\"
";

/// [`ROWS_CSV`] read as the group's canonical batch.
pub fn rows() -> RecordBatch {
    parse_batch(
        &group(),
        Format::Csv,
        Bytes::from_static(ROWS_CSV.as_bytes()),
    )
    .expect("the sample rows are valid")
}

/// Reads `data` in `format` the ways a client's bytes are read — an insert, and a pipeline's
/// events — and checks what an accepted batch promises every store.
pub fn ingest(format: Format, data: &[u8]) {
    tolerate_reader_panics();
    let spec = group();
    let bytes = Bytes::copy_from_slice(data);
    if let Ok(batch) = parse_batch(&spec, format, bytes.clone()) {
        assert_conforms(&spec, &batch);
        assert_checked(&batch);
    }
    if let Ok(events) = decode_events(&spec, format, bytes)
        && let Ok(batch) = conform(&spec, &events)
    {
        assert_conforms(&spec, &batch);
    }
}

/// An accepted batch has the canonical schema, no null key or event time, and event times
/// every store can hold.
pub fn assert_conforms(spec: &FeatureGroupSpec, batch: &RecordBatch) {
    assert_eq!(batch.schema(), spec.arrow_schema());
    for required in [&spec.primary_key[0], &spec.event_time] {
        let column = batch.column_by_name(required).expect("a canonical column");
        assert_eq!(column.null_count(), 0, "null in {required}");
    }
    let times = batch
        .column_by_name(&spec.event_time)
        .expect("the event time")
        .as_primitive::<TimestampMicrosecondType>();
    for t in times.iter().flatten() {
        assert!(
            (MIN_TIMESTAMP_MICROS..=MAX_TIMESTAMP_MICROS).contains(&t),
            "event time {t} accepted outside the years 1 to 9999"
        );
    }
}

/// [`group`]'s expectations: a rule of every kind, some refusing and some quarantining.
fn expectations() -> &'static Expectations {
    static COMPILED: OnceLock<Expectations> = OnceLock::new();
    COMPILED.get_or_init(|| {
        let mut spec = group();
        spec.expectations = serde_json::from_str(
            r#"[
                {"column": "amount", "min": -1e6, "max": 1e6, "on_failure": "quarantine"},
                {"column": "small", "one_of": [3, -7, 2147483647]},
                {"column": "flag", "one_of": [true], "on_failure": "quarantine"},
                {"column": "category", "matches": "^[a-z]+$", "on_failure": "quarantine"},
                {"column": "ratio", "min_not_null_share": 0.5},
                {"column": "ts", "max_age_seconds": 86400, "on_failure": "quarantine"}
            ]"#,
        )
        .expect("expectations");
        Expectations::compile(&spec)
            .expect("valid expectations")
            .expect("some expectations")
    })
}

/// A batch the expectations check is refused by a refusing rule, or split whole: every row
/// either accepted or quarantined, and the report counts them.
fn assert_checked(batch: &RecordBatch) {
    let now = 1_704_067_200_000_000; // 2024-01-01T00:00:00Z
    match expectations().check(batch, now) {
        Ok(checked) => {
            let report = &checked.report;
            let quarantined = checked
                .quarantined
                .as_ref()
                .map_or(0, RecordBatch::num_rows);
            assert_eq!(report.rows as usize, batch.num_rows());
            assert_eq!(report.accepted as usize, checked.accepted.num_rows());
            assert_eq!(report.quarantined as usize, quarantined);
            assert_eq!(report.accepted + report.quarantined, report.rows);
        }
        Err(refused) => assert!(
            refused
                .report
                .results
                .iter()
                .any(|r| r.outcome == Outcome::Refused)
        ),
    }
}

/// libFuzzer's panic hook aborts on every panic, caught or not. Arrow's and Parquet's readers
/// panic on some malformed input, and ingest catches those and refuses the batch (see
/// `kairos_types::ingest`); so a panic raised inside those crates goes on unwinding to that
/// catch, and any other panic — or one of theirs that nothing catches — still ends the run.
fn tolerate_reader_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let abort = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let in_reader = info.location().is_some_and(|at| {
                ["/arrow-", "/parquet-"]
                    .iter()
                    .any(|krate| at.file().contains(krate))
            });
            if !in_reader {
                abort(info);
            }
        }));
    });
}
