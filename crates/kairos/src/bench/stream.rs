//! Streaming benchmarks: the lecture's windowed aggregation (10-minute tumbling avg, count and
//! max of amount per card) over a replayed event file, and the event-to-online freshness of a
//! pipeline fed over HTTP at a sustained rate.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{Float64Type, Int64Type, TimestampMicrosecondType};
use kairos_pipeline::Pipelines;
use kairos_pipeline::decode;
use kairos_pipeline::source::{Poll, Source};
use kairos_store::FeatureStore;
use kairos_stream::{PipelineSpec, WindowOperator};
use rand::{Rng, SeedableRng};
use reqwest::Method;

use crate::remote::Remote;

/// Cards' numbers start here, like real 16-digit card numbers.
pub(crate) const FIRST_CARD: u64 = 4_000_000_000_000_000;

#[derive(Debug, clap::Args)]
pub struct DataArgs {
    /// The CSV to write: cc_num, ts (epoch milliseconds), amount.
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 10_000_000)]
    events: usize,
    #[arg(long, default_value_t = 100_000)]
    cards: u64,
    /// The events span this many hours of event time.
    #[arg(long, default_value_t = 24)]
    hours: u64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// Writes events in event-time order, but for up to 30 seconds of disorder.
pub fn write_data(args: &DataArgs) -> anyhow::Result<()> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);
    let file = std::fs::File::create(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    writeln!(out, "cc_num,ts,amount")?;
    let t0: i64 = 1_714_521_600_000; // 2024-05-01T00:00:00Z, in milliseconds
    let step = (args.hours * 3_600_000) as f64 / args.events as f64;
    for i in 0..args.events {
        let t = t0 + (i as f64 * step) as i64 - rng.random_range(0..30_000);
        let card = FIRST_CARD + rng.random_range(0..args.cards);
        let cents: u32 = rng.random_range(100..50_000);
        writeln!(out, "{card},{t},{}.{:02}", cents / 100, cents % 100)?;
    }
    out.flush()?;
    Ok(())
}

/// The lecture's aggregation, 10-minute tumbling avg, count and max of amount per card, as
/// pipeline `name` over `source` (a TOML `[source]` body) with checkpoints every `interval`;
/// `window` adds lines to the `[window]` table.
pub(crate) fn card_spec(
    name: &str,
    source: &str,
    interval: &str,
    window: &str,
) -> anyhow::Result<PipelineSpec> {
    let text = format!(
        r#"
name = "{name}"
checkpoint_interval = "{interval}"
[source]
{source}
[input]
key = "cc_num"
event_time = "ts"
columns = [
  {{ name = "cc_num", type = "int64" }},
  {{ name = "ts", type = "timestamp" }},
  {{ name = "amount", type = "float64" }},
]
[window]
kind = "tumbling"
size = "10m"
{window}
[output]
feature_group = "{name}"
[[aggregations]]
name = "avg_amount"
agg = "avg"
column = "amount"
[[aggregations]]
name = "n"
agg = "count"
[[aggregations]]
name = "max_amount"
agg = "max"
column = "amount"
"#
    );
    Ok(PipelineSpec::parse(&format!("{name}.toml"), &text)?)
}

/// The benchmark's pipeline over `input`.
fn spec(input: &Path) -> anyhow::Result<PipelineSpec> {
    card_spec(
        "bench_card_10m",
        &format!(
            "kind = \"file\"\npath = \"{}\"\nformat = \"csv\"",
            input.display()
        ),
        "1s",
        "out_of_orderness = \"30s\"",
    )
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The events CSV written by `kairos bench stream-data`.
    #[arg(long)]
    input: PathBuf,
    /// `engine`: file → window operator → rows, one thread, no store. `store`: the whole
    /// pipeline into a feature group (durable log, checkpoints), then until both stores have
    /// every row.
    #[arg(long, default_value = "engine")]
    mode: String,
    /// Engine mode: write the window rows here as CSV (cc_num, window start and end in
    /// microseconds, avg, count, max), sorted, to compare with another engine's.
    #[arg(long)]
    output: Option<PathBuf>,
}

pub async fn run(args: &Args, config: &crate::config::Config) -> anyhow::Result<()> {
    let spec = spec(&std::path::absolute(&args.input)?)?;
    match args.mode.as_str() {
        "engine" => {
            let (input, output) = (args.input.clone(), args.output.clone());
            tokio::task::spawn_blocking(move || engine(spec, &input, output.as_deref())).await?
        }
        "store" => store(spec, config).await,
        other => anyhow::bail!("unknown mode '{other}'; expected engine or store"),
    }
}

/// CPU seconds this process has used (user + system), from `/proc/self/stat`.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
    // After the command: state is field 3, utime 14 and stime 15 (1-based), in clock ticks.
    let ticks = |i: usize| {
        fields
            .get(i - 3)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(14) + ticks(15)) / 100.0
}

fn engine(spec: PipelineSpec, input: &Path, output: Option<&Path>) -> anyhow::Result<()> {
    let plan = Arc::new(spec.plan()?);
    let mut op = WindowOperator::new(plan.clone())?;
    let mut source = Source::file(&plan.spec.source, plan.format)?;
    let mut rows: Vec<(i64, i64, i64, f64, i64, f64)> = Vec::new();
    let mut written = 0u64;
    let (started, cpu0) = (Instant::now(), cpu_seconds());
    let mut collect = |batch: &RecordBatch, rows: &mut Vec<_>| {
        written += batch.num_rows() as u64;
        if output.is_none() {
            return;
        }
        let card = batch.column(0).as_primitive::<Int64Type>();
        let start = batch.column(1).as_primitive::<TimestampMicrosecondType>();
        let end = batch.column(2).as_primitive::<TimestampMicrosecondType>();
        let avg = batch.column(3).as_primitive::<Float64Type>();
        let n = batch.column(4).as_primitive::<Int64Type>();
        let max = batch.column(5).as_primitive::<Float64Type>();
        for r in 0..batch.num_rows() {
            rows.push((
                card.value(r),
                start.value(r),
                end.value(r),
                avg.value(r),
                n.value(r),
                max.value(r),
            ));
        }
    };
    // Where the time goes: reading and parsing, windowing, building the output rows.
    let (mut t_decode, mut t_window, mut t_output) = (0.0, 0.0, 0.0);
    loop {
        let at = Instant::now();
        let polled = futures::executor::block_on(source.poll(Duration::ZERO))?;
        let Poll::Chunk(chunk) = polled else {
            if matches!(polled, Poll::End) {
                break;
            }
            continue;
        };
        let decoded = decode::decode(&plan, chunk.data);
        anyhow::ensure!(
            decoded.malformed.is_empty(),
            "malformed: {:?}",
            decoded.malformed[0]
        );
        let decoded_at = Instant::now();
        t_decode += (decoded_at - at).as_secs_f64();
        if let Some(batch) = decoded.rows {
            op.process(&batch, chunk.partition, 0)?;
        }
        let emitted = op.take_emissions();
        let windowed_at = Instant::now();
        t_window += (windowed_at - decoded_at).as_secs_f64();
        if !emitted.is_empty() {
            collect(&op.to_batch(&emitted)?, &mut rows);
        }
        t_output += windowed_at.elapsed().as_secs_f64();
    }
    let at = Instant::now();
    op.finish();
    let emitted = op.take_emissions();
    t_window += at.elapsed().as_secs_f64();
    let at = Instant::now();
    collect(&op.to_batch(&emitted)?, &mut rows);
    t_output += at.elapsed().as_secs_f64();
    let (elapsed, cpu) = (started.elapsed().as_secs_f64(), cpu_seconds() - cpu0);
    let events = op.counts().events;
    eprintln!(
        "kairos engine: {events} events in {elapsed:.2} s = {:.0} events/s on one thread ({:.0} events per CPU-second; {cpu:.2} CPU s); {written} window rows; read+parse {t_decode:.2} s, windows {t_window:.2} s, output rows {t_output:.2} s; input {}",
        events as f64 / elapsed,
        events as f64 / cpu.max(1e-9),
        input.display()
    );
    if let Some(path) = output {
        rows.sort_by_key(|r| (r.0, r.1));
        let mut out = BufWriter::new(std::fs::File::create(path)?);
        for (card, start, end, avg, n, max) in rows {
            writeln!(out, "{card},{start},{end},{avg:?},{n},{max:?}")?;
        }
        out.flush()?;
    }
    Ok(())
}

/// Runs the pipeline into the data dir's store (use an empty one: the group must not exist).
async fn store(spec: PipelineSpec, config: &crate::config::Config) -> anyhow::Result<()> {
    let store = FeatureStore::open(config.store.clone()).await?;
    let pipelines = Pipelines::new(store.clone());
    pipelines.apply(spec).await?;
    let (started, cpu0) = (Instant::now(), cpu_seconds());
    pipelines.start("bench_card_10m").await?;
    let status = pipelines.wait("bench_card_10m").await?;
    let (to_log, cpu_log) = (started.elapsed().as_secs_f64(), cpu_seconds() - cpu0);
    anyhow::ensure!(
        status.state == kairos_pipeline::RunState::Finished,
        "pipeline ended {:?}: {:?}",
        status.state,
        status.error
    );
    store.wait_materialised("bench_card_10m", None).await?;
    let (total, cpu_total) = (started.elapsed().as_secs_f64(), cpu_seconds() - cpu0);
    eprintln!(
        "kairos pipeline into a feature group: {} events, {} window rows, {} checkpoints; \
         in the log (durable, checkpointed) after {to_log:.2} s = {:.0} events/s ({:.0} events per CPU-second); \
         in both stores after {total:.2} s = {:.0} events/s ({:.0} events per CPU-second, {cpu_total:.1} CPU s)",
        status.events,
        status.rows_written,
        status.epoch,
        status.events as f64 / to_log,
        status.events as f64 / cpu_log.max(1e-9),
        status.events as f64 / total,
        status.events as f64 / cpu_total.max(1e-9),
    );
    pipelines.close().await;
    store.close().await;
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct FreshnessArgs {
    #[arg(long, default_value = "http://127.0.0.1:7070")]
    url: String,
    /// Events per second pushed.
    #[arg(long, default_value_t = 50_000)]
    rate: u64,
    /// Pushes per second (each carries rate / pushes events).
    #[arg(long, default_value_t = 100)]
    pushes: u64,
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    #[arg(long, default_value_t = 100_000)]
    cards: u64,
    /// The pipeline's early emission and checkpoint interval.
    #[arg(long, default_value = "25ms")]
    interval: String,
    /// Send the events through Kafka instead of HTTP: a topic of this many partitions on
    /// librdkafka's mock cluster, started in this process (the server connects to it over
    /// loopback), one event per message, keyed by card.
    #[arg(long)]
    kafka_partitions: Option<i32>,
}

/// Where the benchmark sends events.
enum Feed {
    Http(Remote),
    Kafka {
        // Kept alive while the benchmark runs: dropping it stops the brokers.
        _cluster: rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
        producer: rdkafka::producer::BaseProducer,
    },
}

const KAFKA_TOPIC: &str = "bench_card_events";

/// Pushes card events over HTTP at a sustained rate into a pipeline with early emission, then
/// reads the pipeline's freshness percentiles (arrival in the stream to visible online).
pub async fn freshness(args: &FreshnessArgs) -> anyhow::Result<()> {
    let remote = Remote::new(&args.url);
    let (name, source, feed) = match args.kafka_partitions {
        None => (
            "bench_fresh",
            "kind = \"http\"\nstream = \"bench_card_events\"".to_owned(),
            Feed::Http(remote.clone()),
        ),
        Some(partitions) => {
            let cluster = rdkafka::mocking::MockCluster::new(1)?;
            cluster.create_topic(KAFKA_TOPIC, partitions, 1)?;
            let producer: rdkafka::producer::BaseProducer = rdkafka::ClientConfig::new()
                .set("bootstrap.servers", cluster.bootstrap_servers())
                .set("linger.ms", "2")
                .create()?;
            let source = format!(
                "kind = \"kafka\"\nbrokers = \"{}\"\ntopic = \"{KAFKA_TOPIC}\"\nproperties = {{ \"fetch.wait.max.ms\" = \"5\" }}",
                cluster.bootstrap_servers()
            );
            let feed = Feed::Kafka {
                _cluster: cluster,
                producer,
            };
            ("bench_fresh_kafka", source, feed)
        }
    };
    let spec = card_spec(
        name,
        &source,
        &args.interval,
        &format!(
            "out_of_orderness = \"5s\"\nearly_emit = \"{}\"",
            args.interval
        ),
    )?;
    remote
        .json(remote.request(Method::POST, "/v1/pipelines").json(&spec))
        .await?;
    // Freshness is a steady-state figure: sending starts once the pipeline holds all its
    // partitions (a Kafka consumer takes a few seconds to join its group).
    let partitions = args.kafka_partitions.map_or(1, |n| n as usize);
    let joined = Instant::now();
    loop {
        let status = remote
            .json(remote.request(Method::GET, &format!("/v1/pipelines/{name}")))
            .await?;
        if status["positions"].as_object().map_or(0, |p| p.len()) >= partitions {
            break;
        }
        anyhow::ensure!(
            joined.elapsed() < Duration::from_secs(60),
            "pipeline {name} holds no partitions after 60 s: {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // And once this server materialises every partition of the output group's log: on Kafka
    // the materialisers join a consumer group too.
    loop {
        let status = remote
            .json(remote.request(Method::GET, &format!("/v1/feature-groups/{name}")))
            .await?;
        let partitions = status["partitions"].as_array().cloned().unwrap_or_default();
        if partitions.iter().all(|p| p["materialised_here"] == true) {
            break;
        }
        anyhow::ensure!(
            joined.elapsed() < Duration::from_secs(60),
            "the log partitions of {name} are not materialised here after 60 s: {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let per_push = (args.rate / args.pushes).max(1);
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / args.pushes));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut sent = 0u64;
    let mut in_flight = tokio::task::JoinSet::new();
    while started.elapsed() < Duration::from_secs(args.seconds) {
        tick.tick().await;
        let now_ms = chrono::Utc::now().timestamp_millis();
        let mut body = String::with_capacity(per_push as usize * 64);
        for _ in 0..per_push {
            let card = FIRST_CARD + rng.random_range(0..args.cards);
            let cents: u32 = rng.random_range(100..50_000);
            let event = format!(
                "{{\"cc_num\":{card},\"ts\":{now_ms},\"amount\":{}.{:02}}}\n",
                cents / 100,
                cents % 100
            );
            match &feed {
                Feed::Http(_) => body.push_str(&event),
                Feed::Kafka { producer, .. } => {
                    let key = card.to_string();
                    let mut record = rdkafka::producer::BaseRecord::to(KAFKA_TOPIC)
                        .key(&key)
                        .payload(&event);
                    // A full queue slows the sender down (the rate reported is what was sent).
                    loop {
                        match producer.send(record) {
                            Ok(()) => break,
                            Err((
                                rdkafka::error::KafkaError::MessageProduction(
                                    rdkafka::types::RDKafkaErrorCode::QueueFull,
                                ),
                                back,
                            )) => {
                                producer.poll(Duration::from_millis(1));
                                record = back;
                            }
                            Err((e, _)) => return Err(e.into()),
                        }
                    }
                }
            }
        }
        sent += per_push;
        match &feed {
            Feed::Http(remote) => {
                let request = remote
                    .request(Method::POST, "/v1/streams/bench_card_events/events")
                    .header("content-type", "application/x-ndjson")
                    .body(body);
                let remote = remote.clone();
                in_flight.spawn(async move { remote.send(request).await.map(|_| ()) });
                while in_flight.len() > 16 {
                    in_flight.join_next().await.expect("tasks")??;
                }
            }
            Feed::Kafka { producer, .. } => {
                producer.poll(Duration::ZERO);
            }
        }
    }
    if let Feed::Kafka { producer, .. } = &feed {
        rdkafka::producer::Producer::flush(producer, Duration::from_secs(10))?;
    }
    while let Some(done) = in_flight.join_next().await {
        done??;
    }
    let pushed_for = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let status = remote
        .json(remote.request(Method::GET, &format!("/v1/pipelines/{name}")))
        .await?;
    let via = match feed {
        Feed::Http(_) => "over HTTP",
        Feed::Kafka { .. } => "through Kafka (mock cluster)",
    };
    eprintln!(
        "sent {sent} events in {pushed_for:.1} s = {:.0} events/s {via}; pipeline: {} events, freshness {}",
        sent as f64 / pushed_for,
        status["events"],
        status["freshness"]
    );
    remote
        .json(remote.request(Method::POST, &format!("/v1/pipelines/{name}/stop")))
        .await?;
    Ok(())
}
