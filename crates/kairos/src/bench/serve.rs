//! The serving benchmark: a fraud-style deployment (two feature-group lookups, two on-demand
//! features, gradient-boosted trees of 100 trees) load-tested over HTTP, open loop at fixed
//! rates and closed loop; the same load against KServe's Python model server serving an
//! equivalent scikit-learn model (`bench/serve.sh` runs both in one go); and the V2 protocol's
//! overhead over the model's own predict time.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use kairos_deploy::Deployments;
use kairos_model::predictor::Predictor;
use kairos_store::FeatureStore;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::Method;
use serde::Serialize;
use tokio::sync::Semaphore;

use super::{closed_loop, histogram, print_report};
use crate::config::Config;
use crate::remote::Remote;

const T0: &str = "2024-01-01T00:00:00Z";

#[derive(Debug, clap::Args)]
pub struct DataArgs {
    /// Folder for the groups' CSV and TOML files, the view and the deployment.
    #[arg(long)]
    dir: PathBuf,
    #[arg(long, default_value_t = 10_000)]
    cards: usize,
    /// Labelled transactions to train on.
    #[arg(long, default_value_t = 50_000)]
    transactions: usize,
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

/// The synthetic fraud data: card profiles (home, limit), card activity (7-day average amount
/// and count), and transactions labelled fraud more often far from home and far above the
/// card's usual amount.
pub fn write_data(args: &DataArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.dir)?;
    let mut rng = StdRng::seed_from_u64(args.seed);
    let mut profiles = String::from("cc_num,ts,home_latitude,home_longitude,credit_limit\n");
    let mut activity = String::from("cc_num,ts,avg_amount_7d,tx_count_7d\n");
    let mut cards = Vec::with_capacity(args.cards);
    for card in 0..args.cards {
        let (lat, lon) = (rng.random_range(35.0..65.0), rng.random_range(-10.0..30.0));
        let avg: f64 = rng.random_range(10.0..200.0);
        writeln!(
            profiles,
            "{card},{T0},{lat:.4},{lon:.4},{}",
            rng.random_range(5..100) * 100
        )?;
        writeln!(activity, "{card},{T0},{avg:.2},{}", rng.random_range(1..60))?;
        cards.push((lat, lon, avg));
    }
    let mut transactions = String::from("cc_num,ts,amount,latitude,longitude,is_fraud\n");
    let start = 1_704_153_600; // 2024-01-02T00:00:00Z
    for i in 0..args.transactions {
        let card = rng.random_range(0..args.cards);
        let (home_lat, home_lon, avg) = cards[card];
        let far = rng.random_bool(0.2);
        let (lat, lon) = if far {
            (
                rng.random_range(-40.0..70.0),
                rng.random_range(-120.0..150.0),
            )
        } else {
            (
                home_lat + rng.random_range(-0.5..0.5),
                home_lon + rng.random_range(-0.5..0.5),
            )
        };
        let amount = avg * rng.random_range(0.1..6.0);
        let km = haversine_km(lat, lon, home_lat, home_lon);
        let score = -7.0 + 0.0012 * km + 0.9 * amount / (avg + 1.0);
        let fraud = rng.random_bool(1.0 / (1.0 + (-score).exp()));
        let ts = chrono::DateTime::from_timestamp(start + i as i64, 0)
            .expect("in range")
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        writeln!(
            transactions,
            "{card},{ts},{amount:.2},{lat:.4},{lon:.4},{fraud}"
        )?;
    }
    let files = [
        ("bench_profiles.csv", profiles),
        ("bench_activity.csv", activity),
        ("bench_tx.csv", transactions),
        ("bench_profiles.toml", GROUP_PROFILES.to_string()),
        ("bench_activity.toml", GROUP_ACTIVITY.to_string()),
        ("bench_tx.toml", GROUP_TX.to_string()),
        ("bench_fraud.toml", VIEW.to_string()),
        ("deployment.toml", DEPLOYMENT.to_string()),
    ];
    for (name, text) in files {
        std::fs::write(args.dir.join(name), text)?;
    }
    eprintln!(
        "wrote {} cards and {} transactions to {}",
        args.cards,
        args.transactions,
        args.dir.display()
    );
    Ok(())
}

fn haversine_km(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = p2 - p1;
    let dl = (lon2 - lon1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * 6371.0 * a.sqrt().asin()
}

const GROUP_PROFILES: &str = r#"name = "bench_profiles"
primary_key = ["cc_num"]
event_time = "ts"
columns = [
  { name = "cc_num", type = "int64" },
  { name = "ts", type = "timestamp" },
  { name = "home_latitude", type = "float64" },
  { name = "home_longitude", type = "float64" },
  { name = "credit_limit", type = "float64" },
]
"#;

const GROUP_ACTIVITY: &str = r#"name = "bench_activity"
primary_key = ["cc_num"]
event_time = "ts"
columns = [
  { name = "cc_num", type = "int64" },
  { name = "ts", type = "timestamp" },
  { name = "avg_amount_7d", type = "float64" },
  { name = "tx_count_7d", type = "int64" },
]
"#;

const GROUP_TX: &str = r#"name = "bench_tx"
primary_key = ["cc_num"]
event_time = "ts"
online = false
columns = [
  { name = "cc_num", type = "int64" },
  { name = "ts", type = "timestamp" },
  { name = "amount", type = "float64" },
  { name = "latitude", type = "float64" },
  { name = "longitude", type = "float64" },
  { name = "is_fraud", type = "bool" },
]
"#;

const VIEW: &str = r#"name = "bench_fraud"
[root]
group = "bench_tx"
features = ["amount"]
labels = ["is_fraud"]
request = ["amount", "latitude", "longitude"]

[[join]]
group = "bench_profiles"
features = ["home_latitude", "home_longitude", "credit_limit"]
prefix = "p_"

[[join]]
group = "bench_activity"
features = ["avg_amount_7d", "tx_count_7d"]
prefix = "a_"

[[on_demand]]
name = "distance_km"
function = "haversine"
inputs = ["latitude", "longitude", "p_home_latitude", "p_home_longitude"]

[[on_demand]]
name = "amount_ratio"
expression = "amount / (a_avg_amount_7d + 1)"
"#;

const DEPLOYMENT: &str = r#"name = "bench_fraud"
model = "bench_fraud_gbdt"
[slo]
quantile = 0.99
latency_ms = 2.0
"#;

#[derive(Debug, Clone, Copy, PartialEq, clap::ValueEnum)]
pub enum Target {
    /// Kairos: `POST /v1/deployments/{name}/predict` with the card and the transaction.
    Kairos,
    /// A V2 server given the feature vector (KServe's Python model server): `POST
    /// /v2/models/{name}/infer` with one FP64 row.
    Kserve,
    /// The card-fraud demo's deployment while `kairos demo fraud` serves (`--name fraud`):
    /// payments of the demo's live hour (the same seed and `--cards`), scored and not written.
    FraudDemo,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(long, default_value = "http://127.0.0.1:7070")]
    url: String,
    #[arg(long, value_enum, default_value = "kairos")]
    target: Target,
    /// The deployment (Kairos) or model (KServe) name.
    #[arg(long, default_value = "bench_fraud")]
    name: String,
    /// Cards in the data (`serve-data --cards`).
    #[arg(long, default_value_t = 10_000)]
    cards: usize,
    /// Open-loop rates to run, requests per second, in order.
    #[arg(long, value_delimiter = ',', default_value = "1000,2000,5000")]
    rates: Vec<u64>,
    /// Closed-loop clients, run after the open-loop rates (0: none).
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Seconds per run, after one second of warm-up.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// The p99 latency a rate must keep to count as sustained, in milliseconds.
    #[arg(long, default_value_t = 10.0)]
    p99_ms: f64,
    /// For --target kserve: a Kairos server whose deployment gives the feature vectors sent.
    #[arg(long)]
    features_from: Option<String>,
}

/// One open-loop run's figures.
#[derive(Debug, Serialize)]
struct OpenLoopReport {
    target: &'static str,
    rate: u64,
    sent: u64,
    answered: u64,
    errors: u64,
    achieved_rps: f64,
    p50_us: u64,
    p99_us: u64,
    p999_us: u64,
    max_us: u64,
    sustained: bool,
}

/// Builds one request body at random.
type Body = Arc<dyn Fn(&mut StdRng) -> serde_json::Value + Send + Sync>;

pub async fn run(args: &Args) -> anyhow::Result<()> {
    let remote = Remote::new(&args.url);
    let (path, body) = match args.target {
        Target::Kairos => (
            format!("/v1/deployments/{}/predict", args.name),
            kairos_body(args.cards),
        ),
        Target::FraudDemo => (
            format!("/v1/deployments/{}/predict", args.name),
            fraud_demo_body(args.cards),
        ),
        Target::Kserve => {
            let from = args
                .features_from
                .as_deref()
                .context("--target kserve needs --features-from KAIROS_URL")?;
            (
                format!("/v2/models/{}/infer", args.name),
                kserve_body(&Remote::new(from), args.cards).await?,
            )
        }
    };
    let target = match args.target {
        Target::Kairos => "kairos",
        Target::Kserve => "kserve",
        Target::FraudDemo => "kairos-fraud-demo",
    };
    let mut sustained = None;
    for rate in &args.rates {
        let report = open_loop(
            &remote,
            &path,
            &body,
            *rate,
            args.seconds,
            args.p99_ms,
            target,
        )
        .await?;
        eprintln!(
            "{target} open loop {} req/s: achieved {:.0} req/s, p50 {} µs, p99 {} µs, p99.9 {} µs, {} errors{}",
            report.rate,
            report.achieved_rps,
            report.p50_us,
            report.p99_us,
            report.p999_us,
            report.errors,
            if report.sustained {
                ""
            } else {
                "  (not sustained)"
            }
        );
        println!("{}", serde_json::to_string(&report)?);
        if report.sustained {
            sustained = Some(*rate);
        }
    }
    eprintln!(
        "{target}: highest rate sustained at p99 <= {} ms: {}",
        args.p99_ms,
        sustained.map_or("none of those run".to_string(), |r| format!("{r} req/s"))
    );
    if args.concurrency > 0 {
        let make = move |remote: &Remote| {
            let mut rng = StdRng::from_rng(&mut rand::rng());
            remote.request(Method::POST, &path).json(&body(&mut rng))
        };
        let report =
            closed_loop(&remote, Arc::new(make), 1, args.concurrency, args.seconds).await?;
        print_report(&report)?;
    }
    Ok(())
}

fn kairos_body(cards: usize) -> Body {
    Arc::new(move |rng: &mut StdRng| {
        serde_json::json!({
            "entries": [rng.random_range(0..cards)],
            "request": {
                "amount": rng.random_range(5.0..800.0),
                "latitude": rng.random_range(35.0..65.0),
                "longitude": rng.random_range(-10.0..30.0),
            }
        })
    })
}

/// Payments of the fraud demo's live hour, as the demo's replay sends them.
fn fraud_demo_body(cards: usize) -> Body {
    use kairos_demo::fraud::{DemoConfig, Scenario, replay};
    let scenario = Scenario::generate(&DemoConfig {
        cards,
        ..DemoConfig::default()
    });
    let bodies: Arc<Vec<serde_json::Value>> =
        Arc::new(scenario.live().iter().map(replay::predict_body).collect());
    Arc::new(move |rng: &mut StdRng| bodies[rng.random_range(0..bodies.len())].clone())
}

/// V2 requests carrying feature vectors that Kairos built for 1,000 random requests, so both
/// servers score the same kind of rows.
async fn kserve_body(kairos: &Remote, cards: usize) -> anyhow::Result<Body> {
    let make = kairos_body(cards);
    let mut rng = StdRng::seed_from_u64(11);
    let mut rows: Vec<Vec<f64>> = Vec::new();
    for _ in 0..10 {
        let mut request = make(&mut rng);
        request["entries"] = (0..100).map(|_| rng.random_range(0..cards)).collect();
        request["return_features"] = true.into();
        let answer = kairos
            .json(
                kairos
                    .request(Method::POST, "/v1/deployments/bench_fraud/predict")
                    .json(&request),
            )
            .await?;
        for p in answer["predictions"].as_array().context("predictions")? {
            rows.push(
                p["features"]
                    .as_array()
                    .context("features")?
                    .iter()
                    .map(|v| v.as_f64().unwrap_or(f64::NAN))
                    .collect(),
            );
        }
    }
    let rows = Arc::new(rows);
    Ok(Arc::new(move |rng: &mut StdRng| {
        let row = &rows[rng.random_range(0..rows.len())];
        serde_json::json!({
            "inputs": [{"name": "features", "datatype": "FP64", "shape": [1, row.len()], "data": row}]
        })
    }))
}

/// Sends requests at `rate` per second whatever the answers, each timed from when it was due
/// to be sent (so a slow server cannot hide its queue), for `seconds` after one second of
/// warm-up.
async fn open_loop(
    remote: &Remote,
    path: &str,
    body: &Body,
    rate: u64,
    seconds: u64,
    p99_ms: f64,
    target: &'static str,
) -> anyhow::Result<OpenLoopReport> {
    let period = Duration::from_secs_f64(1.0 / rate as f64);
    let start = Instant::now();
    let warm_until = start + Duration::from_secs(1);
    let total = (rate * (seconds + 1)) as usize;
    // A server that falls behind fills this; past it a request counts as an error.
    let in_flight = Arc::new(Semaphore::new(8 * 1024));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, Option<Duration>)>();
    let mut rng = StdRng::seed_from_u64(rate);
    for i in 0..total {
        let due = start + period.mul_f64(i as f64);
        tokio::time::sleep_until(due.into()).await;
        let body = body(&mut rng);
        let request = remote.request(Method::POST, path).json(&body);
        let tx = tx.clone();
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            let _ = tx.send((due, None));
            continue;
        };
        tokio::spawn(async move {
            let ok = match request.send().await {
                Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                Err(_) => false,
            };
            drop(permit);
            let _ = tx.send((due, ok.then(|| due.elapsed())));
        });
    }
    drop(tx);
    let mut h: Histogram<u64> = histogram();
    let mut errors = 0;
    let mut measured = 0u64;
    while let Some((due, took)) = rx.recv().await {
        if due < warm_until {
            continue;
        }
        measured += 1;
        match took {
            Some(t) => h.record(t.as_nanos().max(1) as u64).expect("in bounds"),
            None => errors += 1,
        }
    }
    let p99_us = h.value_at_quantile(0.99) / 1_000;
    Ok(OpenLoopReport {
        target,
        rate,
        sent: measured,
        answered: h.len(),
        errors,
        achieved_rps: h.len() as f64 / seconds as f64,
        p50_us: h.value_at_quantile(0.50) / 1_000,
        p99_us,
        p999_us: h.value_at_quantile(0.999) / 1_000,
        max_us: h.max() / 1_000,
        sustained: errors == 0 && (p99_us as f64) <= p99_ms * 1_000.0,
    })
}

#[derive(Debug, clap::Args)]
pub struct OverheadArgs {
    /// The registered model to time (the latest version).
    #[arg(long, default_value = "bench_fraud_gbdt")]
    model: String,
    /// Requests to time.
    #[arg(long, default_value_t = 100_000)]
    requests: usize,
}

#[derive(Debug, Serialize)]
struct OverheadReport {
    model: String,
    features: usize,
    predict_p50_us: f64,
    v2_infer_p50_us: f64,
    v2_infer_p99_us: f64,
    overhead_p50_us: f64,
}

/// The V2 REST infer path's own cost: the server's router driven in process (no sockets) with
/// one-row JSON requests on a registered model, against the model's bare predict time on the
/// same row.
pub async fn overhead(args: &OverheadArgs, config: &Config) -> anyhow::Result<()> {
    use tower::ServiceExt;

    let store = FeatureStore::open(config.store.clone()).await?;
    let deployments = Arc::new(Deployments::new(store.clone())?);
    let pipelines = Arc::new(kairos_pipeline::Pipelines::new(store.clone()));
    let monitors = kairos_monitor::Monitors::new(deployments.clone());
    let recommenders = kairos_recommend::Recommenders::new(store.clone());
    let access = Arc::new(kairos_serve::Access::new(
        store.clone(),
        Default::default(),
        None,
    )?);
    let app = kairos_serve::router(
        pipelines,
        deployments.clone(),
        monitors,
        recommenders,
        access,
    );
    deployments.start_all().await;
    let result = async {
        let (model, predictor): (_, Arc<Predictor>) =
            deployments.model_predictor(&args.model, None).await?;
        let width = predictor.features();
        let mut rng = StdRng::seed_from_u64(3);
        let row: Vec<f64> = (0..width).map(|_| rng.random_range(0.0..100.0)).collect();
        let mut bare = histogram();
        for _ in 0..args.requests {
            let t = Instant::now();
            std::hint::black_box(predictor.predict(&row, 1)?);
            bare.record(t.elapsed().as_nanos().max(1) as u64)?;
        }
        let input = model.spec.signature.inputs[0].name.clone();
        let body = serde_json::to_vec(&serde_json::json!({
            "inputs": [{"name": input, "datatype": "FP64", "shape": [1, width], "data": row}]
        }))?;
        let uri = format!("/v2/models/{}/infer", args.model);
        let mut served = histogram();
        for _ in 0..args.requests {
            let request = axum::http::Request::post(&uri)
                .header("content-type", "application/json")
                .body(axum::body::Body::from(body.clone()))?;
            let t = Instant::now();
            let response = app.clone().oneshot(request).await?;
            let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await?;
            served.record(t.elapsed().as_nanos().max(1) as u64)?;
            std::hint::black_box(bytes);
        }
        let us = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1e3;
        let report = OverheadReport {
            model: format!("{} v{}", model.spec.name, model.version),
            features: width,
            predict_p50_us: us(&bare, 0.5),
            v2_infer_p50_us: us(&served, 0.5),
            v2_infer_p99_us: us(&served, 0.99),
            overhead_p50_us: us(&served, 0.5) - us(&bare, 0.5),
        };
        eprintln!(
            "V2 infer over REST in process: p50 {:.1} µs (p99 {:.1} µs); the model's own predict: p50 {:.1} µs; overhead {:.1} µs",
            report.v2_infer_p50_us, report.v2_infer_p99_us, report.predict_p50_us, report.overhead_p50_us
        );
        println!("{}", serde_json::to_string(&report)?);
        anyhow::Ok(())
    }
    .await;
    deployments.close().await;
    store.close().await;
    result
}
