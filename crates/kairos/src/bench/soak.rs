//! The soak: a real `kairos serve` on a fresh data dir under steady online reads, with inserts
//! trickling into the group being read and a window pipeline fed over HTTP, for minutes. Every
//! sample period it prints the reads' p50/p99 and the server's resident memory and threads, so
//! a leak, a growing queue or a slowing path shows as a trend.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args as ClapArgs;
use rand::{Rng, SeedableRng};
use reqwest::Method;
use serde::Serialize;

use super::stream::{FIRST_CARD, card_spec};
use super::{bench_batch, bench_spec, create_and_fill, histogram, ipc_bytes};
use crate::remote::Remote;
use kairos_types::Format;

#[derive(Debug, ClapArgs)]
pub struct SoakArgs {
    /// How long the load runs.
    #[arg(long, default_value_t = 600)]
    seconds: u64,
    /// Seconds between samples.
    #[arg(long, default_value_t = 30)]
    sample: u64,
    /// Online reads per second (one key each, open loop).
    #[arg(long, default_value_t = 2_000)]
    read_rate: u64,
    /// Entities in the group read.
    #[arg(long, default_value_t = 100_000)]
    keys: usize,
    /// Insert requests per second into the group read.
    #[arg(long, default_value_t = 10)]
    insert_rate: u64,
    /// Rows per insert.
    #[arg(long, default_value_t = 100)]
    insert_rows: usize,
    /// Events per second pushed to the pipeline.
    #[arg(long, default_value_t = 1_000)]
    event_rate: u64,
}

/// One sample period.
#[derive(Debug, Serialize)]
struct Sample {
    at_seconds: u64,
    reads: u64,
    read_errors: u64,
    p50_us: u64,
    p99_us: u64,
    max_us: u64,
    inserts: u64,
    events: u64,
    rss_mb: f64,
    threads: u64,
}

/// Counters the load tasks add to and the sampler takes.
#[derive(Default)]
struct Tally {
    latencies: Mutex<Option<hdrhistogram::Histogram<u64>>>,
    read_errors: AtomicU64,
    inserts: AtomicU64,
    events: AtomicU64,
}

impl Tally {
    fn record(&self, took: Duration) {
        let mut h = self.latencies.lock().expect("lock");
        h.get_or_insert_with(histogram)
            .record(took.as_nanos().max(1) as u64)
            .expect("in bounds");
    }
}

/// A server this benchmark started, stopped when dropped.
pub(crate) struct Server {
    child: Child,
    pub url: String,
    _data: tempfile::TempDir,
}

impl Server {
    /// `kairos serve` on a fresh data dir and a free loopback port, with `env` set.
    pub fn start(env: &[(&str, &str)]) -> anyhow::Result<Server> {
        let data = tempfile::tempdir()?;
        let mut child = Command::new(std::env::current_exe()?)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data.path())
            .env("KAIROS_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting kairos serve")?;
        let stdout = child.stdout.take().expect("piped");
        let mut lines = BufReader::new(stdout).lines();
        let first = lines.next().context("kairos serve printed nothing")??;
        // Drained, so the server never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        let url = first
            .strip_prefix("kairos listening on ")
            .context("kairos serve's first line is its address")?
            .to_string();
        Ok(Server {
            child,
            url,
            _data: data,
        })
    }

    /// Kills the server at once (SIGKILL): no shutdown, as a crash.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Resident memory (MB) and threads, from /proc.
    fn footprint(&self) -> (f64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        (field("VmRSS:") as f64 / 1024.0, field("Threads:"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

pub async fn run(args: &SoakArgs) -> anyhow::Result<()> {
    let server = Server::start(&[])?;
    let remote = Remote::new(&server.url);
    let group = bench_spec("soak_online", 10);
    create_and_fill(&remote, &group, args.keys).await?;
    let pipeline = card_spec(
        "soak_cards",
        "kind = \"http\"\nstream = \"soak_events\"",
        "1s",
        "out_of_orderness = \"5s\"\nearly_emit = \"100ms\"",
    )?;
    remote
        .json(
            remote
                .request(Method::POST, "/v1/pipelines")
                .json(&pipeline),
        )
        .await?;
    eprintln!(
        "soak: {} s against {} ({} reads/s, {} inserts/s of {} rows, {} events/s)",
        args.seconds,
        server.url,
        args.read_rate,
        args.insert_rate,
        args.insert_rows,
        args.event_rate
    );

    let tally = Arc::new(Tally::default());
    let stop_at = Instant::now() + Duration::from_secs(args.seconds);
    let load = [
        tokio::spawn(reads(
            remote.clone(),
            tally.clone(),
            args.read_rate,
            args.keys,
            stop_at,
        )),
        tokio::spawn(inserts(
            remote.clone(),
            tally.clone(),
            args.insert_rate,
            args.insert_rows,
            args.keys,
            stop_at,
        )),
        tokio::spawn(events(
            remote.clone(),
            tally.clone(),
            args.event_rate,
            stop_at,
        )),
    ];

    let started = Instant::now();
    let mut samples = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(args.sample));
    tick.tick().await;
    eprintln!(
        "   t(s)    reads  errors  p50(µs)  p99(µs)  max(µs)  inserts  events  rss(MB)  threads"
    );
    while Instant::now() < stop_at {
        tick.tick().await;
        let h = tally
            .latencies
            .lock()
            .expect("lock")
            .take()
            .unwrap_or_else(histogram);
        let (rss_mb, threads) = server.footprint();
        let sample = Sample {
            at_seconds: started.elapsed().as_secs(),
            reads: h.len(),
            read_errors: tally.read_errors.swap(0, Ordering::Relaxed),
            p50_us: h.value_at_quantile(0.5) / 1_000,
            p99_us: h.value_at_quantile(0.99) / 1_000,
            max_us: h.max() / 1_000,
            inserts: tally.inserts.swap(0, Ordering::Relaxed),
            events: tally.events.swap(0, Ordering::Relaxed),
            rss_mb,
            threads,
        };
        eprintln!(
            "{:>7} {:>8} {:>7} {:>8} {:>8} {:>8} {:>8} {:>7} {:>8.1} {:>8}",
            sample.at_seconds,
            sample.reads,
            sample.read_errors,
            sample.p50_us,
            sample.p99_us,
            sample.max_us,
            sample.inserts,
            sample.events,
            sample.rss_mb,
            sample.threads
        );
        samples.push(sample);
    }
    for task in load {
        task.await??;
    }
    let check = remote
        .json(remote.request(Method::GET, "/v1/feature-groups/soak_online/check"))
        .await?;
    anyhow::ensure!(
        check["clean"] == true,
        "the stores disagree after the soak: {check}"
    );
    println!("{}", serde_json::to_string(&samples)?);
    Ok(())
}

/// Calls `step` `rate` times a second until `stop_at`, at most `in_flight` at once; a call that
/// would exceed that is skipped and counted by `skipped`.
async fn steady<F, Fut>(
    rate: u64,
    stop_at: Instant,
    in_flight: usize,
    mut step: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let mut tick = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut running = tokio::task::JoinSet::new();
    while Instant::now() < stop_at {
        tick.tick().await;
        while let Some(done) = running.try_join_next() {
            done??;
        }
        if running.len() < in_flight {
            running.spawn(step());
        }
    }
    while let Some(done) = running.join_next().await {
        done??;
    }
    Ok(())
}

async fn reads(
    remote: Remote,
    tally: Arc<Tally>,
    rate: u64,
    keys: usize,
    stop_at: Instant,
) -> anyhow::Result<()> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    steady(rate, stop_at, 256, move || {
        let request = remote
            .request(Method::GET, "/v1/feature-groups/soak_online/online")
            .query(&[("id", rng.random_range(0..keys))]);
        let tally = tally.clone();
        async move {
            let start = Instant::now();
            let ok = match request.send().await {
                Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                Err(_) => false,
            };
            if ok {
                tally.record(start.elapsed());
            } else {
                tally.read_errors.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        }
    })
    .await
}

async fn inserts(
    remote: Remote,
    tally: Arc<Tally>,
    rate: u64,
    rows: usize,
    keys: usize,
    stop_at: Instant,
) -> anyhow::Result<()> {
    let spec = bench_spec("soak_online", 10);
    let mut rng = rand::rngs::StdRng::seed_from_u64(2);
    steady(rate, stop_at, 8, move || {
        let first = rng.random_range(0..keys.saturating_sub(rows).max(1));
        let body = ipc_bytes(&bench_batch(&spec, first..first + rows));
        let remote = remote.clone();
        let tally = tally.clone();
        async move {
            let request = remote
                .request(Method::POST, "/v1/feature-groups/soak_online/rows")
                .header("content-type", Format::ArrowIpc.content_type())
                .body(body?);
            remote.json(request).await?;
            tally.inserts.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
    })
    .await
}

async fn events(
    remote: Remote,
    tally: Arc<Tally>,
    rate: u64,
    stop_at: Instant,
) -> anyhow::Result<()> {
    const PUSHES: u64 = 10;
    let per_push = (rate / PUSHES).max(1);
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    steady(PUSHES, stop_at, 4, move || {
        let now_ms = chrono::Utc::now().timestamp_millis();
        let body: String = (0..per_push)
            .map(|_| {
                let card = FIRST_CARD + rng.random_range(0..10_000);
                let cents: u32 = rng.random_range(100..50_000);
                format!(
                    "{{\"cc_num\":{card},\"ts\":{now_ms},\"amount\":{}.{:02}}}\n",
                    cents / 100,
                    cents % 100
                )
            })
            .collect();
        let remote = remote.clone();
        let tally = tally.clone();
        async move {
            let request = remote
                .request(Method::POST, "/v1/streams/soak_events/events")
                .header("content-type", "application/x-ndjson")
                .body(body);
            remote.send(request).await?;
            tally.events.fetch_add(per_push, Ordering::Relaxed);
            Ok(())
        }
    })
    .await
}
