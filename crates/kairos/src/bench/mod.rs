//! `kairos bench …`: load generators whose figures go into BENCHMARKS.md.

mod ann;
mod failover;
mod monitor;
mod pit;
mod recsys;
mod replicas;
mod serve;
mod soak;
mod stream;
mod vectors;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use arrow::array::{ArrayRef, Float64Array, Int64Array, TimestampMicrosecondArray};
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use clap::{Subcommand, ValueEnum};
use hdrhistogram::Histogram;
use kairos_store::{FeatureStore, InsertOptions};
use kairos_types::{Column, FeatureGroupSpec, FeatureType, Format, Value};
use rand::Rng;
use reqwest::Method;
use serde::Serialize;

use crate::config::Config;
use crate::remote::Remote;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Mode {
    /// Over HTTP against a running server (`--url`).
    Http,
    /// Calls into the store in this process, no HTTP.
    InProcess,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Closed-loop online reads: p50/p99/p99.9 latency and throughput.
    Online {
        #[arg(long, value_enum, default_value = "http")]
        mode: Mode,
        /// Server URL for --mode http.
        #[arg(long, default_value = "http://127.0.0.1:7070")]
        url: String,
        /// Feature group to read (created and filled first unless --no-setup).
        #[arg(long, default_value = "bench_online")]
        group: String,
        /// Entities in the group.
        #[arg(long, default_value_t = 100_000)]
        keys: usize,
        /// Keys per request.
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// Requests in flight (HTTP mode).
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// Seconds to measure, after one second of warm-up.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Use the group as it is.
        #[arg(long)]
        no_setup: bool,
    },
    /// Bulk insert of a 10-feature group from Parquet into both stores.
    Insert {
        #[arg(long, default_value_t = 1_000_000)]
        rows: usize,
        /// The group to make (a new `bench_insert_<time>` by default): a name known in advance
        /// lets a broker without CreateTopics make its topic with the partitions wanted.
        #[arg(long)]
        group: Option<String>,
    },
    /// Writes the point-in-time join benchmark's Parquet files (a spine and feature groups).
    PitData(pit::DataArgs),
    /// Point-in-time join of the spine with the feature groups written by `pit-data`.
    PitJoin(pit::JoinArgs),
    /// Closed-loop online feature-vector reads over HTTP: a view of 3 joined groups and 2
    /// on-demand features.
    Vectors(vectors::Args),
    /// Writes the streaming benchmark's events CSV (cc_num, ts, amount).
    StreamData(stream::DataArgs),
    /// The 10-minute tumbling avg/count/max of amount per card over an events file: the
    /// engine alone, or the whole pipeline into a feature group.
    Stream(stream::Args),
    /// Event-to-online freshness of a pipeline fed over HTTP at a sustained rate (against a
    /// running `kairos serve`).
    Freshness(stream::FreshnessArgs),
    /// Writes the serving benchmark's data: card profiles, card activity and labelled
    /// transactions (CSV), their groups, the view and the deployment (TOML).
    ServeData(serve::DataArgs),
    /// Prediction load against a running server: open loop at fixed rates, then closed loop;
    /// p50/p99/p99.9 and throughput (`--target kserve` for KServe's Python server).
    Serve(serve::Args),
    /// The V2 REST infer path's cost over the model's own predict time, in process.
    V2Overhead(serve::OverheadArgs),
    /// Drift of every column between two large samples (by default 1M rows × 20 columns).
    Drift(monitor::DriftArgs),
    /// The streaming drift detectors' updates per second, beside River's with `--river`.
    Detectors(monitor::DetectorArgs),
    /// The vector index's recall@k against queries per second on real vectors, beside hnswlib's
    /// with `--hnswlib`; filtered search's two paths with `--filters`.
    Ann(ann::AnnArgs),
    /// A recommender's end-to-end latency over HTTP on a synthetic catalogue (by default
    /// 100,000 items, 500 candidates ranked per request).
    Recsys(recsys::RecsysArgs),
    /// Minutes of steady online reads against a server this command starts, with inserts and
    /// a pipeline running: p99, resident memory and threads every sample period.
    Soak(soak::SoakArgs),
    /// Two servers this command starts on one PostgreSQL catalog: how long an API key made or
    /// revoked through one takes to act on the other.
    Replicas(replicas::ReplicasArgs),
    /// Two servers this command starts on one cluster configuration with the logs on Kafka:
    /// how long after a replica is killed its partitions are served again by the other.
    Failover(failover::FailoverArgs),
}

/// A group of an int64 key `id`, an event time `ts` and `features` float64 features `f0`, `f1`, ….
pub(crate) fn bench_spec(name: &str, features: usize) -> FeatureGroupSpec {
    let mut columns = vec![
        Column::new("id", FeatureType::Int64),
        Column::new("ts", FeatureType::Timestamp),
    ];
    columns.extend((0..features).map(|i| Column::new(format!("f{i}"), FeatureType::Float64)));
    FeatureGroupSpec {
        name: name.into(),
        description: format!("benchmark group: {features} float64 features per id"),
        columns,
        primary_key: vec!["id".into()],
        event_time: "ts".into(),
        online: true,
        ttl_seconds: None,
        vector_index: None,
        expectations: Vec::new(),
    }
}

/// Rows `ids` of a [`bench_spec`] group.
fn bench_batch(spec: &FeatureGroupSpec, ids: std::ops::Range<usize>) -> RecordBatch {
    let base = 1_700_000_000_000_000i64;
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(ids.clone().map(|i| i as i64))),
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(
                ids.clone().map(|i| base + i as i64 * 1_000),
            )
            .with_timezone("UTC"),
        ),
    ];
    for f in 0..spec.columns.len() - 2 {
        columns.push(Arc::new(Float64Array::from_iter_values(
            ids.clone().map(|i| (i * (f + 1)) as f64 * 0.5),
        )));
    }
    RecordBatch::try_new(spec.arrow_schema(), columns).expect("bench batch matches its schema")
}

fn ipc_bytes(batch: &RecordBatch) -> anyhow::Result<Bytes> {
    Ok(kairos_types::export::encode_ipc(batch)?)
}

fn parquet_bytes(batch: &RecordBatch) -> anyhow::Result<Bytes> {
    let mut buf = Vec::new();
    let mut w = parquet::arrow::ArrowWriter::try_new(&mut buf, batch.schema(), None)?;
    w.write(batch)?;
    w.close()?;
    Ok(Bytes::from(buf))
}

#[derive(Debug, Serialize)]
pub(crate) struct LatencyReport {
    mode: &'static str,
    batch: usize,
    concurrency: usize,
    requests: u64,
    errors: u64,
    seconds: f64,
    throughput_rps: f64,
    p50_us: u64,
    p99_us: u64,
    p999_us: u64,
    max_us: u64,
}

pub async fn run(command: BenchCommand, config: &Config) -> anyhow::Result<()> {
    match command {
        BenchCommand::Online {
            mode: Mode::Http,
            url,
            group,
            keys,
            batch,
            concurrency,
            seconds,
            no_setup,
        } => {
            let remote = Remote::new(&url);
            if !no_setup {
                create_and_fill(&remote, &bench_spec(&group, 10), keys).await?;
            }
            let report = http_loop(&remote, &group, keys, batch, concurrency, seconds).await?;
            print_report(&report)
        }
        BenchCommand::Online {
            mode: Mode::InProcess,
            group,
            keys,
            batch,
            seconds,
            no_setup,
            ..
        } => {
            let store = FeatureStore::open(config.store.clone()).await?;
            if !no_setup {
                setup_local(&store, &group, keys).await?;
            }
            let report = in_process_loop(&store, &group, keys, batch, seconds).await;
            store.close().await;
            print_report(&report?)
        }
        BenchCommand::Insert { rows, group } => {
            let store = FeatureStore::open(config.store.clone()).await?;
            let name = group.unwrap_or_else(|| {
                format!("bench_insert_{}", chrono::Utc::now().timestamp_millis())
            });
            let result = bulk_insert(&store, &name, rows).await;
            store.close().await;
            result
        }
        BenchCommand::PitData(args) => {
            tokio::task::spawn_blocking(move || pit::write_data(&args)).await?
        }
        BenchCommand::PitJoin(args) => {
            tokio::task::spawn_blocking(move || pit::join(&args)).await?
        }
        BenchCommand::Vectors(args) => vectors::run(&args).await,
        BenchCommand::StreamData(args) => {
            tokio::task::spawn_blocking(move || stream::write_data(&args)).await?
        }
        BenchCommand::Stream(args) => stream::run(&args, config).await,
        BenchCommand::Freshness(args) => stream::freshness(&args).await,
        BenchCommand::ServeData(args) => {
            tokio::task::spawn_blocking(move || serve::write_data(&args)).await?
        }
        BenchCommand::Serve(args) => serve::run(&args).await,
        BenchCommand::V2Overhead(args) => serve::overhead(&args, config).await,
        BenchCommand::Drift(args) => monitor::drift(&args),
        BenchCommand::Detectors(args) => monitor::detectors(&args),
        BenchCommand::Ann(args) => ann::ann(&args),
        BenchCommand::Recsys(args) => recsys::run(&args).await,
        BenchCommand::Soak(args) => soak::run(&args).await,
        BenchCommand::Replicas(args) => replicas::run(&args).await,
        BenchCommand::Failover(args) => failover::run(&args).await,
    }
}

pub(crate) fn print_report(report: &LatencyReport) -> anyhow::Result<()> {
    eprintln!(
        "{} batch={} concurrency={}: {:.0} req/s, p50 {} µs, p99 {} µs, p99.9 {} µs ({} requests, {} errors)",
        report.mode,
        report.batch,
        report.concurrency,
        report.throughput_rps,
        report.p50_us,
        report.p99_us,
        report.p999_us,
        report.requests,
        report.errors
    );
    println!("{}", serde_json::to_string(report)?);
    Ok(())
}

/// Creates `spec` on the server and writes rows for ids `0..keys`.
pub(crate) async fn create_and_fill(
    remote: &Remote,
    spec: &FeatureGroupSpec,
    keys: usize,
) -> anyhow::Result<()> {
    remote
        .json(
            remote
                .request(Method::POST, "/v1/feature-groups")
                .json(spec),
        )
        .await?;
    for start in (0..keys).step_by(100_000) {
        let batch = bench_batch(spec, start..(start + 100_000).min(keys));
        let request = remote
            .request(
                Method::POST,
                &format!("/v1/feature-groups/{}/rows?wait=online", spec.name),
            )
            .header("content-type", Format::ArrowIpc.content_type())
            .body(ipc_bytes(&batch)?);
        remote.json(request).await?;
    }
    Ok(())
}

async fn setup_local(store: &FeatureStore, group: &str, keys: usize) -> anyhow::Result<()> {
    let spec = bench_spec(group, 10);
    store.create_group(spec.clone()).await?;
    for start in (0..keys).step_by(100_000) {
        let batch = bench_batch(&spec, start..(start + 100_000).min(keys));
        store
            .insert_batch(group, None, &batch, InsertOptions { wait_online: true })
            .await?;
    }
    Ok(())
}

/// Latencies in nanoseconds, up to a minute.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds")
}

fn report(
    mode: &'static str,
    batch: usize,
    concurrency: usize,
    h: &Histogram<u64>,
    errors: u64,
    elapsed: Duration,
) -> LatencyReport {
    LatencyReport {
        mode,
        batch,
        concurrency,
        requests: h.len(),
        errors,
        seconds: elapsed.as_secs_f64(),
        throughput_rps: h.len() as f64 / elapsed.as_secs_f64(),
        p50_us: h.value_at_quantile(0.50) / 1_000,
        p99_us: h.value_at_quantile(0.99) / 1_000,
        p999_us: h.value_at_quantile(0.999) / 1_000,
        max_us: h.max() / 1_000,
    }
}

async fn http_loop(
    remote: &Remote,
    group: &str,
    keys: usize,
    batch: usize,
    concurrency: usize,
    seconds: u64,
) -> anyhow::Result<LatencyReport> {
    let path = format!("/v1/feature-groups/{group}/online");
    let make = move |remote: &Remote| {
        let mut rng = rand::rng();
        if batch == 1 {
            remote
                .request(Method::GET, &path)
                .query(&[("id", rng.random_range(0..keys))])
        } else {
            let entries: Vec<usize> = (0..batch).map(|_| rng.random_range(0..keys)).collect();
            remote
                .request(Method::POST, &path)
                .json(&serde_json::json!({ "entries": entries }))
        }
    };
    closed_loop(remote, Arc::new(make), batch, concurrency, seconds).await
}

/// Builds the next request of a closed-loop client.
pub(crate) type RequestFactory = Arc<dyn Fn(&Remote) -> reqwest::RequestBuilder + Send + Sync>;

/// `concurrency` clients, each sending its next request when the last one answered, for
/// `seconds` after one second of warm-up.
pub(crate) async fn closed_loop(
    remote: &Remote,
    make: RequestFactory,
    batch: usize,
    concurrency: usize,
    seconds: u64,
) -> anyhow::Result<LatencyReport> {
    let warm_until = Instant::now() + Duration::from_secs(1);
    let stop_at = warm_until + Duration::from_secs(seconds);
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let remote = remote.clone();
            let make = make.clone();
            tokio::spawn(async move {
                let mut h = histogram();
                let mut errors = 0u64;
                loop {
                    let now = Instant::now();
                    if now >= stop_at {
                        break;
                    }
                    let request = make(&remote);
                    let start = Instant::now();
                    let ok = match request.send().await {
                        Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                        Err(_) => false,
                    };
                    if start >= warm_until {
                        if ok {
                            h.record(start.elapsed().as_nanos().max(1) as u64)
                                .expect("in bounds");
                        } else {
                            errors += 1;
                        }
                    }
                }
                (h, errors)
            })
        })
        .collect();
    let mut total = histogram();
    let mut errors = 0;
    for worker in workers {
        let (h, e) = worker.await?;
        total.add(&h).expect("same bounds");
        errors += e;
    }
    Ok(report(
        "http",
        batch,
        concurrency,
        &total,
        errors,
        Duration::from_secs(seconds),
    ))
}

async fn in_process_loop(
    store: &FeatureStore,
    group: &str,
    keys: usize,
    batch: usize,
    seconds: u64,
) -> anyhow::Result<LatencyReport> {
    let mut rng = rand::rng();
    let mut h = histogram();
    let warm_until = Instant::now() + Duration::from_secs(1);
    let stop_at = warm_until + Duration::from_secs(seconds);
    loop {
        let entries: Vec<Vec<Value>> = (0..batch)
            .map(|_| vec![Value::Int64(rng.random_range(0..keys as i64))])
            .collect();
        let start = Instant::now();
        if start >= stop_at {
            break;
        }
        let found = store.get_online(group, None, &entries).await?;
        let took = start.elapsed();
        if found.len() != batch {
            bail!("expected {batch} results, got {}", found.len());
        }
        if start >= warm_until {
            h.record(took.as_nanos().max(1) as u64)
                .context("latency out of range")?;
        }
    }
    eprintln!(
        "in-process detail: p50 {:.2} µs, p99 {:.2} µs, p99.9 {:.2} µs",
        h.value_at_quantile(0.5) as f64 / 1e3,
        h.value_at_quantile(0.99) as f64 / 1e3,
        h.value_at_quantile(0.999) as f64 / 1e3
    );
    Ok(report(
        "in-process",
        batch,
        1,
        &h,
        0,
        Duration::from_secs(seconds),
    ))
}

async fn bulk_insert(store: &FeatureStore, name: &str, rows: usize) -> anyhow::Result<()> {
    let spec = bench_spec(name, 10);
    store.create_group(spec.clone()).await?;
    // On a shared log the materialisers start once the consumer group has handed this process
    // its partitions; the figure is the write path's, not the group's joining.
    let joining = Instant::now();
    while !store
        .describe(name, None)
        .await?
        .partitions
        .iter()
        .all(|p| p.materialised_here)
    {
        if joining.elapsed() > Duration::from_secs(60) {
            bail!("the log's partitions were not assigned within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let joined = joining.elapsed();
    let parquet = parquet_bytes(&bench_batch(&spec, 0..rows))?;
    let size = parquet.len();
    let start = Instant::now();
    let ack = store
        .insert(
            name,
            None,
            Format::Parquet,
            parquet,
            InsertOptions::default(),
        )
        .await?;
    let acked = start.elapsed();
    // Poll the two materialisers so the report says which store took how long: a store holds
    // the rows once its position in each partition the insert wrote reaches the insert's end
    // there.
    let ends = ack.ends();
    let reached = |positions: Vec<u64>| {
        ends.iter()
            .all(|&(p, end)| positions.get(p as usize).is_some_and(|&at| at >= end))
    };
    let (mut online_at, mut offline_at) = (None, None);
    while online_at.is_none() || offline_at.is_none() {
        let status = store.describe(name, None).await?;
        let (online, offline): (Vec<u64>, Vec<u64>) = if status.partitions.is_empty() {
            (
                vec![status.online_offset.unwrap_or(0)],
                vec![status.offline_offset],
            )
        } else {
            let each = status.partitions.iter();
            each.map(|p| (p.online_offset.unwrap_or(0), p.offline_offset))
                .unzip()
        };
        if online_at.is_none() && reached(online) {
            online_at = Some(start.elapsed());
        }
        if offline_at.is_none() && reached(offline) {
            offline_at = Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    store.wait_materialised(name, None).await?;
    let both = start.elapsed();
    let report = serde_json::json!({
        "rows": ack.rows,
        "log": store.config().log.kind(),
        "partitions_assigned_seconds": joined.as_secs_f64(),
        "parquet_bytes": size,
        "ack_seconds": acked.as_secs_f64(),
        "online_seconds": online_at.map(|d| d.as_secs_f64()),
        "offline_seconds": offline_at.map(|d| d.as_secs_f64()),
        "both_stores_seconds": both.as_secs_f64(),
        "rows_per_second_acked": rows as f64 / acked.as_secs_f64(),
        "rows_per_second_both_stores": rows as f64 / both.as_secs_f64(),
    });
    eprintln!(
        "bulk insert of {rows} rows: acknowledged in {:.2}s, in both stores after {:.2}s = {:.0} rows/s",
        acked.as_secs_f64(),
        both.as_secs_f64(),
        rows as f64 / both.as_secs_f64()
    );
    println!("{report}");
    Ok(())
}
