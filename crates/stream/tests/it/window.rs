//! The window operator against a batch recomputation over the same events (the reference), with
//! events arriving out of order within the allowed out-of-orderness; plus lateness, early
//! emission and checkpoint-restore behaviour.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use kairos_stream::{PipelineSpec, Plan, StateDelta, WindowKind, WindowOperator};
use kairos_types::{FeatureType, Value};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const MINUTE: i64 = 60_000_000;

#[derive(Debug, Clone)]
struct Event {
    card: i64,
    t: i64,
    amount: Option<f64>,
    merchant: String,
    qty: i64,
}

fn spec(window: &str, aggs: &str, extra: &str) -> Plan {
    let text = format!(
        r#"
name = "test"
{extra}
[source]
kind = "file"
path = "events.csv"
[input]
key = "card"
event_time = "ts"
columns = [
  {{ name = "card", type = "int64" }},
  {{ name = "ts", type = "timestamp" }},
  {{ name = "amount", type = "float64" }},
  {{ name = "merchant", type = "string" }},
  {{ name = "qty", type = "int64" }},
]
[window]
{window}
[output]
feature_group = "out"
{aggs}
"#
    );
    PipelineSpec::parse("test.toml", &text)
        .unwrap()
        .plan()
        .unwrap()
}

const ALL_AGGS: &str = r#"
[[aggregations]]
name = "n"
agg = "count"
[[aggregations]]
name = "n_amount"
agg = "count"
column = "amount"
[[aggregations]]
name = "sum_qty"
agg = "sum"
column = "qty"
[[aggregations]]
name = "sum_amount"
agg = "sum"
column = "amount"
[[aggregations]]
name = "avg_amount"
agg = "avg"
column = "amount"
[[aggregations]]
name = "min_amount"
agg = "min"
column = "amount"
[[aggregations]]
name = "max_merchant"
agg = "max"
column = "merchant"
[[aggregations]]
name = "sd_amount"
agg = "stddev"
column = "amount"
[[aggregations]]
name = "first_merchant"
agg = "first"
column = "merchant"
[[aggregations]]
name = "last_amount"
agg = "last"
column = "amount"
[[aggregations]]
name = "last3"
agg = "last_n"
column = "qty"
n = 3
[[aggregations]]
name = "distinct_merchants"
agg = "approx_distinct"
column = "merchant"
[[aggregations]]
name = "p90_amount"
agg = "approx_quantile"
column = "amount"
q = 0.9
"#;

fn batch(events: &[Event]) -> RecordBatch {
    let plan_schema = spec("kind = \"tumbling\"\nsize = \"1m\"", ALL_AGGS, "")
        .input
        .arrow_schema();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(events.iter().map(|e| e.card))),
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(events.iter().map(|e| e.t))
                .with_timezone("UTC"),
        ),
        Arc::new(Float64Array::from_iter(events.iter().map(|e| e.amount))),
        Arc::new(StringArray::from_iter_values(
            events.iter().map(|e| e.merchant.as_str()),
        )),
        Arc::new(Int64Array::from_iter_values(events.iter().map(|e| e.qty))),
    ];
    RecordBatch::try_new(plan_schema, columns).unwrap()
}

/// Events with distinct event times per card (so first/last are defined by time alone).
fn events(rng: &mut StdRng, cards: i64, n: usize, span: i64) -> Vec<Event> {
    let mut used = HashSet::new();
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let card = rng.random_range(0..cards);
        let t = rng.random_range(0..span) / 1000 * 1000;
        if !used.insert((card, t)) {
            continue;
        }
        out.push(Event {
            card,
            t,
            amount: (rng.random_range(0..10) > 0)
                .then(|| rng.random_range(1..100_000) as f64 / 100.0),
            merchant: format!("m{}", rng.random_range(0..40)),
            qty: rng.random_range(-5..50),
        });
    }
    out
}

/// The windows each (card) has, computed from all events at once.
fn reference_windows(plan: &Plan, events: &[Event]) -> BTreeMap<(i64, i64, i64), Vec<Event>> {
    let mut out: BTreeMap<(i64, i64, i64), Vec<Event>> = BTreeMap::new();
    match plan.window {
        WindowKind::Tumbling { size } => {
            for e in events {
                let start = e.t.div_euclid(size.0) * size.0;
                out.entry((e.card, start, start + size.0))
                    .or_default()
                    .push(e.clone());
            }
        }
        WindowKind::Hopping { size, slide } => {
            for e in events {
                let last = e.t.div_euclid(slide.0) * slide.0;
                let mut start = last - size.0 + slide.0;
                while start <= last {
                    out.entry((e.card, start, start + size.0))
                        .or_default()
                        .push(e.clone());
                    start += slide.0;
                }
            }
        }
        WindowKind::Session { gap } => {
            let mut by_card: BTreeMap<i64, Vec<Event>> = BTreeMap::new();
            for e in events {
                by_card.entry(e.card).or_default().push(e.clone());
            }
            for (card, mut list) in by_card {
                list.sort_by_key(|e| e.t);
                let mut session: Vec<Event> = Vec::new();
                for e in list {
                    if let Some(last) = session.last()
                        && e.t >= last.t + gap.0
                    {
                        let (s, l) = (session[0].t, session.last().unwrap().t);
                        out.insert((card, s, l + gap.0), std::mem::take(&mut session));
                    }
                    session.push(e);
                }
                let (s, l) = (session[0].t, session.last().unwrap().t);
                out.insert((card, s, l + gap.0), session);
            }
        }
    }
    out
}

/// The exact value of each aggregation in `ALL_AGGS` over a window's events.
fn reference_values(events: &[Event]) -> Vec<Value> {
    let mut by_time = events.to_vec();
    by_time.sort_by_key(|e| e.t);
    let amounts: Vec<f64> = by_time.iter().filter_map(|e| e.amount).collect();
    let n = amounts.len() as f64;
    let opt = |v: Option<f64>| v.map_or(Value::Null, Value::Float64);
    let sum: f64 = amounts.iter().sum();
    let mean = sum / n;
    let sd = (amounts.len() >= 2)
        .then(|| (amounts.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt());
    let mut sorted = amounts.clone();
    sorted.sort_by(f64::total_cmp);
    let p90 = (!sorted.is_empty()).then(|| sorted[(0.9 * (sorted.len() as f64 - 1.0)) as usize]);
    let qty: Vec<f32> = by_time.iter().map(|e| e.qty as f32).collect();
    let mut last3 = vec![f32::NAN; 3usize.saturating_sub(qty.len())];
    last3.extend(&qty[qty.len().saturating_sub(3)..]);
    vec![
        Value::Int64(events.len() as i64),
        Value::Int64(amounts.len() as i64),
        Value::Int64(by_time.iter().map(|e| e.qty).sum()),
        opt((!amounts.is_empty()).then_some(sum)),
        opt((!amounts.is_empty()).then_some(mean)),
        opt(sorted.first().copied()),
        Value::String(by_time.iter().map(|e| e.merchant.clone()).max().unwrap()),
        opt(sd),
        Value::String(by_time[0].merchant.clone()),
        opt(by_time.iter().rev().find_map(|e| e.amount)),
        Value::Embedding(last3),
        Value::Int64(
            by_time
                .iter()
                .map(|e| &e.merchant)
                .collect::<HashSet<_>>()
                .len() as i64,
        ),
        opt(p90),
    ]
}

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * a.abs().max(b.abs()).max(1e-9)
}

fn assert_value_matches(name: &str, got: &Value, want: &Value, at: &str) {
    let ok = match (name, got, want) {
        ("distinct_merchants", Value::Int64(g), Value::Int64(w)) => {
            close(*g as f64, *w as f64, 0.03)
        }
        ("p90_amount", Value::Float64(g), Value::Float64(w)) => close(*g, *w, 0.011),
        (_, Value::Float64(g), Value::Float64(w)) => close(*g, *w, 1e-9),
        (_, Value::Embedding(g), Value::Embedding(w)) => {
            g.len() == w.len()
                && g.iter()
                    .zip(w)
                    .all(|(a, b)| a == b || (a.is_nan() && b.is_nan()))
        }
        _ => got == want,
    };
    assert!(ok, "{at}: {name} = {got:?}, expected {want:?}");
}

/// Rows of an output batch as (card, start, end) → values.
type Rows = Vec<((i64, i64, i64), Vec<Value>)>;

fn rows_of(plan: &Plan, batch: &RecordBatch) -> Rows {
    let card: &Int64Array = batch.column(0).as_primitive();
    let start: &TimestampMicrosecondArray = batch.column(1).as_primitive();
    let end: &TimestampMicrosecondArray = batch.column(2).as_primitive();
    (0..batch.num_rows())
        .map(|r| {
            let values = plan
                .aggs
                .iter()
                .enumerate()
                .map(|(i, a)| Value::from_array(batch.column(3 + i), a.output_type, r))
                .collect();
            ((card.value(r), start.value(r), end.value(r)), values)
        })
        .collect()
}

/// Feeds events in arrival order, in random batches over `partitions` partitions.
fn run(
    plan: &Arc<Plan>,
    arrivals: &[Event],
    rng: &mut StdRng,
    partitions: u32,
) -> (WindowOperator, Rows) {
    let mut op = WindowOperator::new(plan.clone()).unwrap();
    for p in 0..partitions {
        op.add_partition(p);
    }
    let mut rows = Vec::new();
    let mut i = 0;
    let mut clock = 0;
    while i < arrivals.len() {
        let n = rng.random_range(1..64).min(arrivals.len() - i);
        let partition = rng.random_range(0..partitions);
        clock += 1;
        let refused = op
            .process(&batch(&arrivals[i..i + n]), partition, clock)
            .unwrap();
        assert!(refused.is_empty(), "on-time events refused: {refused:?}");
        i += n;
        let emitted = op.take_emissions();
        if !emitted.is_empty() {
            rows.extend(rows_of(plan, &op.to_batch(&emitted).unwrap()));
        }
    }
    op.finish();
    let emitted = op.take_emissions();
    rows.extend(rows_of(plan, &op.to_batch(&emitted).unwrap()));
    assert_eq!(
        op.counts().open_windows,
        0,
        "every window is purged at the end"
    );
    (op, rows)
}

/// Arrival order: event time plus a random delay below `disorder`, so no event is behind the
/// greatest time seen by more than `disorder`.
fn arrival_order(rng: &mut StdRng, events: &[Event], disorder: i64) -> Vec<Event> {
    let mut keyed: Vec<(i64, Event)> = events
        .iter()
        .map(|e| (e.t + rng.random_range(0..disorder.max(1)), e.clone()))
        .collect();
    keyed.sort_by_key(|(k, _)| *k);
    keyed.into_iter().map(|(_, e)| e).collect()
}

#[test]
fn every_window_kind_and_aggregation_equals_a_batch_recomputation() {
    let windows = [
        "kind = \"tumbling\"\nsize = \"10m\"",
        "kind = \"tumbling\"\nsize = \"1m\"",
        "kind = \"hopping\"\nsize = \"10m\"\nslide = \"2m\"",
        "kind = \"hopping\"\nsize = \"3m\"\nslide = \"1m\"",
        "kind = \"session\"\ngap = \"5m\"",
        "kind = \"session\"\ngap = \"30s\"",
    ];
    for case in 0..36u64 {
        let mut rng = StdRng::seed_from_u64(case);
        let window = windows[case as usize % windows.len()];
        let disorder = [0, 10_000_000, 2 * MINUTE, 7 * MINUTE][(case / 6) as usize % 4];
        let ooo = format!("out_of_orderness = \"{}s\"", disorder / 1_000_000);
        let plan = Arc::new(spec(&format!("{window}\n{ooo}"), ALL_AGGS, ""));
        let all = events(
            &mut rng,
            1 + (case as i64 % 7) * 5,
            200 + case as usize * 20,
            90 * MINUTE,
        );
        let arrivals = arrival_order(&mut rng, &all, disorder);
        let partitions = 1 + (case % 3) as u32;
        let (_, rows) = run(&plan, &arrivals, &mut rng, partitions);

        let expected = reference_windows(&plan, &all);
        let mut got: HashMap<(i64, i64, i64), Vec<Value>> = HashMap::new();
        for (w, values) in rows {
            assert!(
                got.insert(w, values).is_none(),
                "case {case} ({window}): window {w:?} written twice with no late events"
            );
        }
        assert_eq!(
            got.keys().collect::<HashSet<_>>(),
            expected.keys().collect::<HashSet<_>>(),
            "case {case}: the windows differ"
        );
        for (w, events) in &expected {
            let want = reference_values(events);
            for (i, agg) in plan.aggs.iter().enumerate() {
                assert_value_matches(
                    &agg.name,
                    &got[w][i],
                    &want[i],
                    &format!("case {case} {window} window {w:?}"),
                );
            }
        }
    }
}

#[test]
fn a_restored_operator_writes_what_a_straight_one_does() {
    for case in 0..12u64 {
        let mut rng = StdRng::seed_from_u64(100 + case);
        let window = [
            "kind = \"tumbling\"\nsize = \"5m\"",
            "kind = \"hopping\"\nsize = \"4m\"\nslide = \"2m\"",
            "kind = \"session\"\ngap = \"2m\"",
        ][case as usize % 3];
        let plan = Arc::new(spec(
            &format!("{window}\nout_of_orderness = \"1m\"\nallowed_lateness = \"2m\""),
            ALL_AGGS,
            "",
        ));
        let all = events(&mut rng, 9, 600, 60 * MINUTE);
        // Some events beyond the out-of-orderness: late ones update, too-late ones are refused.
        let arrivals = arrival_order(&mut rng, &all, 4 * MINUTE);
        let chunks: Vec<&[Event]> = arrivals.chunks(17).collect();

        let mut straight = WindowOperator::new(plan.clone()).unwrap();
        let mut straight_rows = Vec::new();
        for c in &chunks {
            straight.process(&batch(c), 0, 1).unwrap();
            straight_rows.push(straight.take_emissions());
        }

        // The same, checkpointing into a map after every chunk and restoring a new operator
        // from it at a random chunk.
        let cut = rng.random_range(1..chunks.len());
        let mut first = WindowOperator::new(plan.clone()).unwrap();
        let mut state: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        let mut last = StateDelta::default();
        let mut restored_rows = Vec::new();
        for c in &chunks[..cut] {
            first.process(&batch(c), 0, 1).unwrap();
            restored_rows.push(first.take_emissions());
            let delta = first.checkpoint_delta().unwrap().remove(&0).unwrap();
            for (k, v) in &delta.puts {
                state.insert(k.clone(), v.clone());
            }
            for k in &delta.deletes {
                state.remove(k);
            }
            last = delta;
        }
        drop(first);
        let mut second = WindowOperator::new(plan.clone()).unwrap();
        second
            .restore_partition(
                0,
                state.iter().map(|(k, v)| (k.as_slice(), v.as_slice())),
                last.max_event_time,
                last.counts,
            )
            .unwrap();
        for c in &chunks[cut..] {
            second.process(&batch(c), 0, 1).unwrap();
            restored_rows.push(second.take_emissions());
        }
        assert_eq!(straight_rows.len(), restored_rows.len());
        for (i, (a, b)) in straight_rows.iter().zip(&restored_rows).enumerate() {
            // Within a batch, rows may come in another order after a restore.
            let render = |rows: &[kairos_stream::Emission]| {
                let mut r: Vec<String> = rows.iter().map(|e| format!("{e:?}")).collect();
                r.sort();
                r
            };
            assert_eq!(
                render(a),
                render(b),
                "case {case}: chunk {i} (restored at {cut})"
            );
        }
        assert_eq!(straight.counts().open_windows, second.counts().open_windows);
    }
}

#[test]
fn late_events_update_and_rewrite_their_window_and_too_late_ones_are_refused() {
    let plan = Arc::new(spec(
        "kind = \"tumbling\"\nsize = \"10m\"\nallowed_lateness = \"5m\"",
        "[[aggregations]]\nname = \"n\"\nagg = \"count\"",
        "",
    ));
    let mut op = WindowOperator::new(plan.clone()).unwrap();
    let ev = |t: i64| Event {
        card: 1,
        t,
        amount: Some(1.0),
        merchant: "m".into(),
        qty: 1,
    };
    let count_of = |op: &mut WindowOperator| -> Vec<(i64, i64)> {
        let e = op.take_emissions();
        e.iter()
            .map(|e| {
                (
                    e.end / MINUTE,
                    match e.values[0] {
                        Value::Int64(n) => n,
                        _ => -1,
                    },
                )
            })
            .collect()
    };
    op.process(&batch(&[ev(MINUTE), ev(2 * MINUTE)]), 0, 0)
        .unwrap();
    assert_eq!(count_of(&mut op), vec![]);
    // The watermark reaches 12m: window [0, 10m) closes with 2 events.
    op.process(&batch(&[ev(12 * MINUTE)]), 0, 0).unwrap();
    assert_eq!(count_of(&mut op), vec![(10, 2)]);
    // Late by 9 minutes, within the lateness (window end 10m + 5m > watermark 12m): rewritten.
    op.process(&batch(&[ev(3 * MINUTE)]), 0, 0).unwrap();
    assert_eq!(count_of(&mut op), vec![(10, 3)]);
    // The watermark reaches 16m: [0, 10m) is gone; an event for it is refused as too late.
    op.process(&batch(&[ev(16 * MINUTE)]), 0, 0).unwrap();
    assert_eq!(count_of(&mut op), vec![]);
    let refused = op
        .process(&batch(&[ev(4 * MINUTE), ev(17 * MINUTE)]), 0, 0)
        .unwrap();
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].row, 0);
    assert!(
        refused[0].reason.contains("too late"),
        "{}",
        refused[0].reason
    );
    assert_eq!(op.counts().late, 1);
    op.finish();
    assert_eq!(count_of(&mut op), vec![(20, 3)]);
}

#[test]
fn early_emission_writes_open_windows_that_changed() {
    let plan = Arc::new(spec(
        "kind = \"tumbling\"\nsize = \"10m\"\nearly_emit = \"1s\"",
        "[[aggregations]]\nname = \"total\"\nagg = \"sum\"\ncolumn = \"qty\"",
        "",
    ));
    let mut op = WindowOperator::new(plan.clone()).unwrap();
    let ev = |card: i64, t: i64, qty: i64| Event {
        card,
        t,
        amount: None,
        merchant: "m".into(),
        qty,
    };
    op.process(&batch(&[ev(1, MINUTE, 5), ev(2, MINUTE, 7)]), 0, 0)
        .unwrap();
    op.emit_early();
    let first = op.take_emissions();
    assert_eq!(first.len(), 2);
    assert!(first.iter().all(|e| !e.closed));
    // Nothing changed: nothing written.
    op.emit_early();
    assert!(op.take_emissions().is_empty());
    op.process(&batch(&[ev(1, 2 * MINUTE, 1)]), 0, 0).unwrap();
    op.emit_early();
    let second = op.take_emissions();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].values, vec![Value::Int64(6)]);
    op.finish();
    let last = op.take_emissions();
    assert_eq!(last.len(), 2);
    assert!(last.iter().all(|e| e.closed));
}

#[test]
fn a_filter_drops_rows_before_windows() {
    let plan = Arc::new(spec(
        "kind = \"tumbling\"\nsize = \"10m\"",
        "[[aggregations]]\nname = \"n\"\nagg = \"count\"",
        "filter = \"amount > 10 and qty >= 0\"",
    ));
    let mut op = WindowOperator::new(plan.clone()).unwrap();
    let ev = |amount: Option<f64>, qty: i64| Event {
        card: 1,
        t: MINUTE,
        amount,
        merchant: "m".into(),
        qty,
    };
    op.process(
        &batch(&[
            ev(Some(20.0), 1),
            ev(Some(5.0), 1),
            ev(None, 1),
            ev(Some(30.0), -1),
        ]),
        0,
        0,
    )
    .unwrap();
    op.finish();
    let out = op.take_emissions();
    assert_eq!(out[0].values, vec![Value::Int64(1)]);
    assert_eq!(op.counts().filtered, 3);
}

#[test]
fn bad_definitions_are_refused_with_the_part_and_reason() {
    let base = |window: &str, aggs: &str| {
        let text = format!(
            "name = \"p\"\n[source]\nkind = \"file\"\npath = \"e.csv\"\n[input]\nkey = \"card\"\nevent_time = \"ts\"\ncolumns = [{{ name = \"card\", type = \"int64\" }}, {{ name = \"ts\", type = \"timestamp\" }}, {{ name = \"m\", type = \"string\" }}]\n[window]\n{window}\n[output]\nfeature_group = \"o\"\n{aggs}"
        );
        PipelineSpec::parse("p.toml", &text)
            .and_then(|s| s.plan())
            .map(|_| ())
            .unwrap_err()
            .to_string()
    };
    let tumbling = "kind = \"tumbling\"\nsize = \"10m\"";
    for (window, aggs, needle) in [
        (
            tumbling,
            "[[aggregations]]\nname = \"x\"\nagg = \"avg\"\ncolumn = \"m\"",
            "avg needs a numeric input, not string",
        ),
        (
            tumbling,
            "[[aggregations]]\nname = \"x\"\nagg = \"sum\"\ncolumn = \"nope\"",
            "'nope' is not an input column",
        ),
        (
            tumbling,
            "[[aggregations]]\nname = \"x\"\nagg = \"sum\"",
            "sum needs an input column",
        ),
        (
            tumbling,
            "[[aggregations]]\nname = \"card\"\nagg = \"count\"",
            "already has a column of that name",
        ),
        (
            tumbling,
            "[[aggregations]]\nname = \"x\"\nagg = \"last_n\"\ncolumn = \"card\"",
            "last_n needs n",
        ),
        (tumbling, "", "at least one aggregation"),
        (
            "kind = \"hopping\"\nsize = \"10m\"\nslide = \"3m\"",
            "[[aggregations]]\nname = \"x\"\nagg = \"count\"",
            "whole multiple",
        ),
        (
            "kind = \"hopping\"\nsize = \"365d\"\nslide = \"1ms\"",
            "[[aggregations]]\nname = \"x\"\nagg = \"count\"",
            "at most 1000 are allowed",
        ),
        (
            "kind = \"tumbling\"\nsize = \"10m\"\nearly_emit = \"1ms\"",
            "[[aggregations]]\nname = \"x\"\nagg = \"count\"",
            "at least 10ms",
        ),
        (
            "kind = \"tumbling\"\nsize = \"10 parsecs\"",
            "[[aggregations]]\nname = \"x\"\nagg = \"count\"",
            "no known unit",
        ),
    ] {
        let message = base(window, aggs);
        assert!(
            message.contains(needle),
            "expected '{needle}' in: {message}"
        );
    }
    let plan = spec("kind = \"tumbling\"\nsize = \"10m\"", ALL_AGGS, "");
    assert_eq!(plan.output.event_time, "window_end");
    assert_eq!(
        plan.output.column("last3").unwrap().ty,
        FeatureType::Embedding { dim: 3 }
    );
}

#[test]
fn keys_of_several_columns_group_like_a_batch_recomputation_and_restore() {
    let text = r#"
name = "by_card_and_merchant"
[source]
kind = "file"
path = "e.csv"
[input]
key = ["card", "merchant"]
event_time = "ts"
columns = [
  { name = "card", type = "int64" },
  { name = "ts", type = "timestamp" },
  { name = "amount", type = "float64" },
  { name = "merchant", type = "string" },
  { name = "qty", type = "int64" },
]
[window]
kind = "tumbling"
size = "5m"
out_of_orderness = "1m"
[output]
feature_group = "out"
[[aggregations]]
name = "n"
agg = "count"
[[aggregations]]
name = "total"
agg = "sum"
column = "qty"
"#;
    let plan = Arc::new(PipelineSpec::parse("k.toml", text).unwrap().plan().unwrap());
    let mut rng = StdRng::seed_from_u64(9);
    let all = events(&mut rng, 6, 800, 60 * MINUTE);
    let arrivals = arrival_order(&mut rng, &all, MINUTE);
    let half = arrivals.len() / 2;
    // Half the events, a checkpoint, a new operator restored from it, the other half.
    let mut first = WindowOperator::new(plan.clone()).unwrap();
    let mut out = Vec::new();
    first.process(&batch(&arrivals[..half]), 0, 0).unwrap();
    out.extend(first.take_emissions());
    let delta = first.checkpoint_delta().unwrap().remove(&0).unwrap();
    let mut second = WindowOperator::new(plan.clone()).unwrap();
    second
        .restore_partition(
            0,
            delta.puts.iter().map(|(k, v)| (k.as_slice(), v.as_slice())),
            delta.max_event_time,
            delta.counts,
        )
        .unwrap();
    second.process(&batch(&arrivals[half..]), 0, 0).unwrap();
    second.finish();
    out.extend(second.take_emissions());
    let out = second.to_batch(&out).unwrap();

    let card: &Int64Array = out.column(0).as_primitive();
    let merchant: &StringArray = out.column(1).as_string();
    let start: &TimestampMicrosecondArray = out.column(2).as_primitive();
    let n: &Int64Array = out.column(4).as_primitive();
    let total: &Int64Array = out.column(5).as_primitive();
    let mut got = BTreeMap::new();
    for r in 0..out.num_rows() {
        let key = (card.value(r), merchant.value(r).to_owned(), start.value(r));
        assert!(got.insert(key, (n.value(r), total.value(r))).is_none());
    }
    let mut expected: BTreeMap<(i64, String, i64), (i64, i64)> = BTreeMap::new();
    for e in &all {
        let start = e.t.div_euclid(5 * MINUTE) * 5 * MINUTE;
        let entry = expected
            .entry((e.card, e.merchant.clone(), start))
            .or_default();
        entry.0 += 1;
        entry.1 += e.qty;
    }
    assert_eq!(got, expected);
}

/// The final row of each window, by (key, start), rendered for comparison.
fn final_rows(rows: &[kairos_stream::Emission]) -> BTreeMap<(Vec<u8>, i64), String> {
    rows.iter()
        .filter(|e| e.closed)
        .map(|e| ((e.key.to_vec(), e.start), format!("{:?}", e.values)))
        .collect()
}

/// Two workers: one reads partitions 0 and 1, checkpointing each; partition 1 then moves to a
/// second operator restored from its checkpoint alone (a rebalance, or a takeover after a
/// crash, with the events since that checkpoint read again). Together they write the rows a
/// single operator reading both partitions writes.
#[test]
fn a_partition_moved_to_another_operator_with_its_checkpoint_writes_the_same_rows() {
    for case in 0..6u64 {
        let mut rng = StdRng::seed_from_u64(300 + case);
        let window = [
            "kind = \"tumbling\"\nsize = \"5m\"",
            "kind = \"hopping\"\nsize = \"4m\"\nslide = \"2m\"",
            "kind = \"session\"\ngap = \"2m\"",
        ][case as usize % 3];
        let plan = Arc::new(spec(
            &format!("{window}\nout_of_orderness = \"3m\""),
            ALL_AGGS,
            "",
        ));
        let all = events(&mut rng, 10, 800, 60 * MINUTE);
        let arrivals = arrival_order(&mut rng, &all, 2 * MINUTE);
        // Kafka's partitioner sends a key's events to one partition.
        let partition = |e: &Event| (e.card % 2) as u32;
        let chunks: Vec<(u32, Vec<Event>)> = arrivals
            .chunks(23)
            .flat_map(|c| {
                (0..2u32)
                    .map(move |p| (p, c.iter().filter(|e| partition(e) == p).cloned().collect()))
            })
            .filter(|(_, c): &(u32, Vec<Event>)| !c.is_empty())
            .collect();

        let mut straight = WindowOperator::new(plan.clone()).unwrap();
        for (p, c) in &chunks {
            straight.process(&batch(c), *p, 1).unwrap();
        }
        straight.finish();
        let expected = final_rows(&straight.take_emissions());

        // Worker A checkpoints partition 1 after every chunk, keeps going a few chunks past
        // the cut without checkpointing, then loses the partition.
        let cut = rng.random_range(2..chunks.len() - 4);
        let mut a = WindowOperator::new(plan.clone()).unwrap();
        a.add_partition(0);
        a.add_partition(1);
        let mut rows = Vec::new();
        let mut state: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        let mut last = StateDelta::default();
        let mut resume_at = 0;
        for (i, (p, c)) in chunks.iter().enumerate() {
            a.process(&batch(c), *p, 1).unwrap();
            if i < cut {
                // Delivered with its checkpoint: the rows of both partitions.
                rows.extend(a.take_emissions());
                let delta = a.checkpoint_delta().unwrap().remove(&1).unwrap();
                for (k, v) in &delta.puts {
                    state.insert(k.clone(), v.clone());
                }
                for k in &delta.deletes {
                    state.remove(k);
                }
                last = delta;
                resume_at = i + 1;
            } else if i == cut + 3 {
                break;
            }
        }
        a.remove_partition(1);
        // Partition 1's rows since its checkpoint are gone with it; partition 0's stay.
        let kept = a.take_emissions();
        assert!(kept.iter().all(|e| e.partition == 0));
        rows.extend(kept);
        // A goes on with partition 0 alone.
        for (p, c) in &chunks[cut + 4..] {
            if *p == 0 {
                a.process(&batch(c), 0, 1).unwrap();
            }
        }
        a.finish();
        rows.extend(a.take_emissions());

        // Worker B takes partition 1 from its checkpoint and reads on from its position.
        let mut b = WindowOperator::new(plan.clone()).unwrap();
        b.restore_partition(
            1,
            state.iter().map(|(k, v)| (k.as_slice(), v.as_slice())),
            last.max_event_time,
            last.counts,
        )
        .unwrap();
        for (p, c) in &chunks[resume_at..] {
            if *p == 1 {
                b.process(&batch(c), 1, 1).unwrap();
            }
        }
        b.finish();
        rows.extend(b.take_emissions());

        let got = final_rows(&rows);
        assert_eq!(got.len(), expected.len(), "case {case}: cut {cut}");
        assert_eq!(got, expected, "case {case}: cut {cut}");
        let events_counted = a.counts().events + b.counts().events;
        assert_eq!(events_counted, straight.counts().events, "case {case}");
    }
}

/// A quiet partition holds the watermark back until it is marked idle; then the windows the
/// other partition's time has passed close, and its next event makes it count again.
#[test]
fn an_idle_partition_stops_holding_the_watermark_back_until_its_next_event() {
    let plan = Arc::new(spec(
        "kind = \"tumbling\"\nsize = \"10m\"\nidle_timeout = \"30s\"",
        "[[aggregations]]\nname = \"n\"\nagg = \"count\"",
        "",
    ));
    assert_eq!(plan.idle_timeout, Some(kairos_stream::Duration(30_000_000)));
    let event = |card: i64, minute: i64| Event {
        card,
        t: minute * MINUTE,
        amount: Some(1.0),
        merchant: "m".into(),
        qty: 1,
    };
    let mut op = WindowOperator::new(plan).unwrap();
    op.add_partition(0);
    op.add_partition(1);
    op.process(&batch(&[event(2, 1)]), 1, 0).unwrap();
    op.process(&batch(&[event(1, 2), event(1, 25)]), 0, 0)
        .unwrap();
    assert!(op.take_emissions().is_empty(), "partition 1 is at minute 1");
    assert_eq!(op.watermark(), MINUTE);

    op.mark_idle(1);
    assert_eq!(op.watermark(), 25 * MINUTE);
    let closed: Vec<(i64, i64)> = op
        .take_emissions()
        .iter()
        .map(|e| (e.start / MINUTE, e.end / MINUTE))
        .collect();
    // Both keys' first windows close: card 1's (partition 0) and card 2's (partition 1).
    assert_eq!(closed, vec![(0, 10), (0, 10)]);

    // Partition 1 speaks again: it counts from where the watermark is (which never moves
    // back), so an event behind it is refused and one ahead holds it as before.
    let refused = op.process(&batch(&[event(2, 3)]), 1, 0).unwrap();
    assert_eq!(
        refused.len(),
        1,
        "minute 3 is behind the watermark at minute 25"
    );
    assert_eq!(op.watermark(), 25 * MINUTE);
    op.process(&batch(&[event(1, 40)]), 0, 0).unwrap();
    op.process(&batch(&[event(2, 31)]), 1, 0).unwrap();
    assert_eq!(
        op.watermark(),
        31 * MINUTE,
        "partition 1 holds it back again"
    );
}
