//! The ASOF join against a naive nested loop on random data: ties on event time, null and
//! missing keys, late and out-of-order rows, single and multi-column keys, lookback, strict and
//! as-known-at, in memory and spilled.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    Array, AsArray, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, TimeUnit};
use kairos_view::{AsofJoin, AsofOptions, AsofStage, RightInput};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn ts() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

#[derive(Debug, Clone)]
struct LeftRow {
    id: i64,
    a: Option<i64>,
    b: Option<String>,
    t: i64,
}

#[derive(Debug, Clone)]
struct RightRow {
    a: i64,
    b: String,
    t: i64,
    ingested: i64,
    offset: i64,
}

#[derive(Debug, Clone, Copy)]
struct Case {
    multi_key: bool,
    strict: bool,
    as_known_at: bool,
    lookback: Option<i64>,
    /// The first right input matches the key's latest row, whatever the left time.
    latest: bool,
    spill: bool,
}

fn left_batch(rows: &[LeftRow]) -> RecordBatch {
    RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("a", DataType::Int64, true),
            Field::new("b", DataType::Utf8, true),
            Field::new("t", ts(), false),
        ])),
        vec![
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.id))),
            Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.a))),
            Arc::new(StringArray::from_iter(rows.iter().map(|r| r.b.clone()))),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| r.t))
                    .with_timezone("UTC"),
            ),
        ],
    )
    .unwrap()
}

fn right_batch(rows: &[RightRow]) -> RecordBatch {
    RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("ra", DataType::Int64, false),
            Field::new("rb", DataType::Utf8, false),
            Field::new("et", ts(), false),
            Field::new("_ingested_at", ts(), false),
            Field::new("_offset", DataType::Int64, false),
            Field::new("value", DataType::Int64, true),
        ])),
        vec![
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.a))),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.b.clone()),
            )),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| r.t))
                    .with_timezone("UTC"),
            ),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| r.ingested))
                    .with_timezone("UTC"),
            ),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.offset))),
            // The feature is the offset: it names the matched row.
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.offset))),
        ],
    )
    .unwrap()
}

/// The reference: every right row of the left row's key, filtered by the rules, the greatest
/// (time, offset) kept. `by_key` holds the right rows by their first key column.
fn naive(
    left: &LeftRow,
    by_key: &HashMap<i64, Vec<RightRow>>,
    case: Case,
    latest: bool,
) -> Option<i64> {
    let t = if latest { i64::MAX } else { left.t };
    let (a, b) = (
        left.a?,
        if case.multi_key {
            Some(left.b.clone()?)
        } else {
            None
        },
    );
    by_key
        .get(&a)?
        .iter()
        .filter(|r| r.a == a && b.as_ref().is_none_or(|b| *b == r.b))
        .filter(|r| if case.strict { r.t < t } else { r.t <= t })
        .filter(|r| case.lookback.is_none_or(|lb| r.t >= t - lb))
        .filter(|r| !case.as_known_at || r.ingested <= t)
        .max_by_key(|r| (r.t, r.offset))
        .map(|r| r.offset)
}

fn run(case: Case, lefts: &[LeftRow], rights: &[Vec<RightRow>]) -> Vec<Vec<Option<i64>>> {
    let keys = |multi: bool, a: &str, b: &str| {
        if multi {
            vec![a.to_string(), b.to_string()]
        } else {
            vec![a.to_string()]
        }
    };
    let stage = AsofStage {
        left_keys: keys(case.multi_key, "a", "b"),
        left_time: "t".into(),
        rights: (0..rights.len())
            .map(|i| RightInput {
                keys: keys(case.multi_key, "ra", "rb"),
                time: "et".into(),
                ingested_at: Some("_ingested_at".into()),
                tie_break: Some("_offset".into()),
                features: vec![("value".into(), format!("value_{i}"))],
                lookback: case.lookback,
                latest: case.latest && i == 0,
            })
            .collect(),
    };
    let options = AsofOptions {
        strict: case.strict,
        as_known_at: case.as_known_at,
        memory_budget: if case.spill { 1 } else { 1 << 30 },
        spill_partitions: 5,
        threads: 2,
        ..AsofOptions::default()
    };
    let right_schemas: Vec<_> = rights.iter().map(|r| right_batch(r).schema()).collect();
    let left_full = left_batch(lefts);
    let mut join = AsofJoin::new(stage, &left_full.schema(), &right_schemas, options).unwrap();
    // Several small batches per input, so batching is exercised too.
    for chunk in lefts.chunks(7) {
        join.push_left(left_batch(chunk)).unwrap();
    }
    for (i, r) in rights.iter().enumerate() {
        for chunk in r.chunks(11) {
            join.push_right(i, right_batch(chunk)).unwrap();
        }
    }
    assert_eq!(join.spilled(), case.spill && !lefts.is_empty());
    let mut out: Vec<Vec<Option<i64>>> = vec![vec![None; rights.len()]; lefts.len()];
    let mut seen = 0;
    for batch in join.finish().unwrap() {
        let batch = batch.unwrap();
        let ids = batch
            .column_by_name("id")
            .unwrap()
            .as_primitive::<Int64Type>()
            .clone();
        for row in 0..batch.num_rows() {
            let id = ids.value(row) as usize;
            for (i, matched) in out[id].iter_mut().enumerate() {
                let col = batch
                    .column_by_name(&format!("value_{i}"))
                    .unwrap()
                    .as_primitive::<Int64Type>();
                *matched = col.is_valid(row).then(|| col.value(row));
            }
            seen += 1;
        }
    }
    assert_eq!(seen, lefts.len(), "every left row comes out exactly once");
    out
}

fn random_case(rng: &mut StdRng, scale: i64) -> (Case, Vec<LeftRow>, Vec<Vec<RightRow>>) {
    let case = Case {
        multi_key: rng.random_bool(0.5),
        strict: rng.random_bool(0.3),
        as_known_at: rng.random_bool(0.4),
        lookback: rng.random_bool(0.3).then(|| rng.random_range(1..20)),
        latest: rng.random_bool(0.3),
        spill: rng.random_bool(0.3),
    };
    let keys = rng.random_range(1..8 * scale);
    let span = rng.random_range(1..40 * scale);
    let lefts: Vec<LeftRow> = (0..rng.random_range(0..60 * scale))
        .map(|id| LeftRow {
            id,
            // Some keys null, some never on the right (keys + 2).
            a: (!rng.random_bool(0.1)).then(|| rng.random_range(0..keys + 2)),
            b: (!rng.random_bool(0.05)).then(|| ["x", "y"][rng.random_range(0..2)].to_string()),
            t: rng.random_range(0..span),
        })
        .collect();
    let mut offset = 0;
    let rights = (0..rng.random_range(1..4))
        .map(|_| {
            (0..rng.random_range(0..80 * scale))
                .map(|_| {
                    let t = rng.random_range(0..span);
                    offset += 1;
                    RightRow {
                        a: rng.random_range(0..keys),
                        b: ["x", "y"][rng.random_range(0..2)].to_string(),
                        t,
                        // Mostly on time, some late: ingested well after the event.
                        ingested: t + if rng.random_bool(0.2) {
                            rng.random_range(1..30)
                        } else {
                            0
                        },
                        // Offsets out of event-time order: rows arrive shuffled.
                        offset: offset * 7 % 1009,
                    }
                })
                .collect()
        })
        .collect();
    (case, lefts, rights)
}

#[test]
fn asof_join_matches_the_naive_reference() {
    let mut rng = StdRng::seed_from_u64(0x6b7b_ac5f);
    // Small cases hit every edge; large ones spread keys over many sort buckets.
    for round in 0..420 {
        let scale = if round < 400 { 1 } else { 150 };
        let (case, lefts, rights) = random_case(&mut rng, scale);
        let got = run(case, &lefts, &rights);
        let by_key: Vec<HashMap<i64, Vec<RightRow>>> = rights
            .iter()
            .map(|rows| {
                let mut map: HashMap<i64, Vec<RightRow>> = HashMap::new();
                for r in rows {
                    map.entry(r.a).or_default().push(r.clone());
                }
                map
            })
            .collect();
        for (l, row) in lefts.iter().zip(&got) {
            for (i, r) in by_key.iter().enumerate() {
                assert_eq!(
                    row[i],
                    naive(l, r, case, case.latest && i == 0),
                    "round {round}, {case:?}, left {l:?}, right input {i}"
                );
            }
        }
    }
}

#[test]
fn in_memory_join_keeps_left_order() {
    let lefts: Vec<LeftRow> = (0..50)
        .map(|id| LeftRow {
            id,
            a: Some(49 - id),
            b: Some("x".into()),
            t: 100 - id,
        })
        .collect();
    let stage = AsofStage {
        left_keys: vec!["a".into()],
        left_time: "t".into(),
        rights: vec![],
    };
    let mut join = AsofJoin::new(
        stage,
        &left_batch(&lefts).schema(),
        &[],
        AsofOptions::default(),
    )
    .unwrap();
    join.push_left(left_batch(&lefts)).unwrap();
    let out: Vec<RecordBatch> = join.finish().unwrap().map(Result::unwrap).collect();
    let ids: Vec<i64> = out[0]
        .column(0)
        .as_primitive::<Int64Type>()
        .values()
        .to_vec();
    assert_eq!(ids, (0..50).collect::<Vec<_>>());
}

#[test]
fn mismatched_key_types_are_refused() {
    let left = left_batch(&[]);
    let right = Arc::new(Schema::new(vec![
        Field::new("ra", DataType::Utf8, false),
        Field::new("et", ts(), false),
    ]));
    let stage = AsofStage {
        left_keys: vec!["a".into()],
        left_time: "t".into(),
        rights: vec![RightInput {
            keys: vec!["ra".into()],
            time: "et".into(),
            ingested_at: None,
            tie_break: None,
            features: vec![],
            lookback: None,
            latest: false,
        }],
    };
    let err = AsofJoin::new(stage, &left.schema(), &[right], AsofOptions::default()).unwrap_err();
    assert!(
        err.to_string().contains("key column 'ra' has type Utf8"),
        "{err}"
    );
}
