//! `kairos demo fraud`: the card-fraud application end to end on the embedded stores — a
//! generated history streamed through the window pipelines, point-in-time training data, a GBDT
//! trained, registered and deployed, the server started, and a live hour of payments replayed
//! through the deployment over HTTP with a running display. The steps are `kairos_demo::fraud`'s.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use kairos_demo::fraud::{self, DemoConfig, Scenario, quality, replay};
use kairos_pipeline::Pipelines;
use kairos_store::FeatureStore;

use crate::config::Config;

#[derive(Debug, Subcommand)]
pub enum DemoCommand {
    /// Card-fraud detection end to end: generate, stream, train, deploy, serve and score a live
    /// hour of payments while late labels arrive.
    Fraud(FraudArgs),
    /// The card-fraud example's features on a CSV nobody here wrote (e.g. Sparkov's
    /// fraudTest.csv): mapped onto the example's groups, streamed through the same pipelines,
    /// joined by the same view, and summarised per feature.
    FraudEval {
        /// The CSV file.
        #[arg(long)]
        data: PathBuf,
        /// The mapping file (examples/fraud/sparkov.toml for Sparkov's files).
        #[arg(long)]
        mapping: PathBuf,
        /// The evaluation's own data dir, made afresh.
        #[arg(long, default_value = "kairos-fraud-eval")]
        dir: PathBuf,
    },
}

#[derive(Debug, clap::Args)]
pub struct FraudArgs {
    /// The demo's own data dir; made afresh on every run (a folder the demo did not make is
    /// never removed).
    #[arg(long, default_value = "kairos-fraud-demo")]
    dir: PathBuf,
    #[arg(long, default_value_t = 20_000)]
    cards: usize,
    /// Days of history before the live hour.
    #[arg(long, default_value_t = 20.5)]
    days: f64,
    /// Minutes of live payments to replay.
    #[arg(long, default_value_t = 60)]
    live_minutes: i64,
    /// Predict requests per second during the replay.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    #[arg(long, default_value_t = 0.005)]
    fraud_rate: f64,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// GBDT trees.
    #[arg(long, default_value_t = 100)]
    trees: usize,
    /// Also train the ablations (without on-demand features, without window features, without
    /// either) and print the quality report on the held-out period.
    #[arg(long)]
    report: bool,
    /// End after the summary instead of serving on.
    #[arg(long)]
    exit: bool,
    /// Where the server listens (a free port when left out).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Monitoring: the world changes ten days before the live hour (amounts ×1.6 and a new
    /// fraud pattern); the model is trained on the payments before the change; after the live
    /// hour the example's monitor finds the drift, alerts a webhook, retrains and promotes a
    /// challenger, and writes its HTML report.
    #[arg(long)]
    drift: bool,
    /// Open the monitoring report in the desktop's browser (with --drift).
    #[arg(long)]
    open: bool,
}

/// How many days before the live hour the world changes in `--drift`.
const DRIFT_LEAD_DAYS: f64 = 10.0;

pub async fn run(command: DemoCommand, config: &Config) -> anyhow::Result<()> {
    match command {
        DemoCommand::Fraud(args) => fraud_demo(args, config).await,
        DemoCommand::FraudEval { data, mapping, dir } => {
            fraud_eval(&data, &mapping, &dir, config).await
        }
    }
}

async fn fraud_eval(
    data: &Path,
    mapping: &Path,
    dir: &Path,
    config: &Config,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let text = std::fs::read_to_string(mapping)
        .with_context(|| format!("cannot read {}", mapping.display()))?;
    let mapping = fraud::mapping::Mapping::parse(&text)?;
    let csv = std::fs::read(data).with_context(|| format!("cannot read {}", data.display()))?;
    let store = open_fresh(dir, config).await?;
    let result = fraud::evaluate::evaluate(&store, &mapping, &csv).await?;
    store.close().await;
    println!(
        "{}: {} payments, {} cards, {} frauds; {} window rows; {:.1} s",
        data.display(),
        result.rows,
        result.cards,
        result.frauds,
        result.window_rows,
        started.elapsed().as_secs_f64()
    );
    println!(
        "{:<24} {:>8} {:>14} {:>14} {:>8}",
        "feature", "present", "genuine median", "fraud median", "ROC-AUC"
    );
    let show = |x: Option<f64>| x.map_or("–".to_string(), |x| format!("{x:.3}"));
    for f in &result.features {
        println!(
            "{:<24} {:>8} {:>14} {:>14} {:>8}",
            f.name,
            f.present,
            show(f.genuine_median),
            show(f.fraud_median),
            show(f.roc_auc)
        );
    }
    Ok(())
}

/// Marks a data dir as the demo's own, so a rerun may clear it.
const MARKER: &str = ".kairos-fraud-demo";

/// A store in `dir`, made afresh, with the configuration's other settings.
async fn open_fresh(dir: &Path, config: &Config) -> anyhow::Result<FeatureStore> {
    fresh_dir(dir)?;
    let mut store_config = config.store.clone();
    store_config.data_dir = dir.to_path_buf();
    Ok(FeatureStore::open(store_config).await?)
}

fn fresh_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        anyhow::ensure!(
            dir.join(MARKER).exists(),
            "{} exists and is not a folder the demo made; give another with --dir",
            dir.display()
        );
        std::fs::remove_dir_all(dir).with_context(|| format!("cannot clear {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::write(dir.join(MARKER), b"made by kairos demo fraud\n")?;
    Ok(())
}

/// Prints a finished step with its time.
fn done(step: &str, started: Instant) {
    eprintln!("  ✓ {step} ({:.1} s)", started.elapsed().as_secs_f64());
}

fn percent(x: Option<f64>) -> String {
    x.map_or("–".into(), |x| format!("{:.0}%", 100.0 * x))
}

async fn fraud_demo(args: FraudArgs, config: &Config) -> anyhow::Result<()> {
    let all = Instant::now();
    let demo = DemoConfig {
        seed: args.seed,
        cards: args.cards,
        history_days: args.days,
        live_minutes: args.live_minutes,
        fraud_rate: args.fraud_rate,
        rate: args.rate,
        trees: args.trees,
        drift: args.drift.then_some(fraud::DemoDrift {
            after_days: (args.days - DRIFT_LEAD_DAYS).max(1.0),
            amount_scale: 1.6,
        }),
        ..DemoConfig::default()
    };
    eprintln!("Kairos card-fraud demo — data in {}", args.dir.display());

    let step = Instant::now();
    let scenario = Scenario::generate(&demo);
    let history = scenario.history();
    let frauds = history.iter().filter(|t| t.is_fraud).count();
    done(
        &format!(
            "generated {} cards, {} payments over {} days ({frauds} fraud), {} labels known so far",
            demo.cards,
            history.len(),
            demo.history_days,
            scenario.known_labels().len()
        ),
        step,
    );

    let store = open_fresh(&args.dir, config).await?;

    let step = Instant::now();
    let pipelines = Pipelines::new(store.clone());
    fraud::apply_definitions(&store, &pipelines).await?;
    done(
        "applied examples/fraud: 3 feature groups, 3 window pipelines, the feature view",
        step,
    );

    let step = Instant::now();
    fraud::load_history(&store, &scenario).await?;
    fraud::wait_for_windows(&store, &pipelines, Duration::from_secs(600)).await?;
    let mut window_rows = 0;
    for spec in fraud::window_pipelines()? {
        window_rows += pipelines.status(&spec.name).await?.rows_written;
    }
    pipelines.close().await;
    done(
        &format!(
            "wrote the history; the pipelines turned it into {window_rows} window rows (10 min, 1 h, 1 day)"
        ),
        step,
    );

    let step = Instant::now();
    let changed = fraud::drift::drift_at(&scenario);
    let dataset = match changed {
        // The bank's model predates the change: trained on the payments before it.
        Some(at) => fraud::training_data_until(&store, &scenario, at).await?,
        None => fraud::training_data(&store, &scenario).await?,
    };
    let count = |s| dataset.row_counts.get(&s).copied().unwrap_or(0);
    use kairos_view::SplitName::{Test, Train, Validation};
    done(
        &format!(
            "point-in-time training data: {} train / {} validation / {} test rows",
            count(Train),
            count(Validation),
            count(Test)
        ),
        step,
    );

    let step = Instant::now();
    let model = fraud::train(&store, &demo).await?;
    let test = match &model.spec.metrics {
        Some(kairos_model::Evaluation::Binary { test: Some(t), .. }) => format!(
            "test PR-AUC {:.3}, ROC-AUC {:.3}",
            t.pr_auc.unwrap_or(f64::NAN),
            t.roc_auc.unwrap_or(f64::NAN)
        ),
        _ => "no test split".into(),
    };
    done(
        &format!(
            "trained {} v{} ({} trees, {} features): {test}",
            model.spec.name,
            model.version,
            demo.trees,
            model.spec.lineage.features.len()
        ),
        step,
    );

    if args.report {
        let step = Instant::now();
        let variants = quality::report(&store, &demo, &dataset, &model).await?;
        done("trained the ablations for the quality report", step);
        print_report(&variants);
    }

    let step = Instant::now();
    let deployment = fraud::deploy(&store).await?;
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let addr = listener.local_addr()?;
    let url = format!("http://{addr}");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(kairos_serve::serve(
        store.clone(),
        listener,
        kairos_serve::ServerOptions {
            webhook_hosts: fraud::drift::webhook_hosts(),
            ..Default::default()
        },
        async {
            let _ = stopped.await;
        },
    ));
    fraud::wait_ready(&url, Duration::from_secs(120)).await?;
    done(
        &format!(
            "deployed '{}' and started the server at {url}",
            deployment.name
        ),
        step,
    );

    eprintln!(
        "  ▶ replaying {} live minutes ({} payments) at {} requests/s",
        demo.live_minutes,
        scenario.live().len(),
        demo.rate
    );
    let bar = ProgressBar::new(scenario.live().len() as u64);
    bar.set_style(
        ProgressStyle::with_template("    {bar:30.cyan/blue} {pos}/{len}  {msg}")
            .expect("template")
            .progress_chars("█▉▊▋▌▍▎▏ "),
    );
    let options = replay::ReplayOptions {
        url: url.clone(),
        deployment: deployment.name.clone(),
        rate: demo.rate,
        settle_every: None,
    };
    let scenario = std::sync::Arc::new(scenario);
    let shown = bar.clone();
    let (stats, scored) = replay::replay_apart(store.clone(), scenario.clone(), options, move |s| {
        let bar = &shown;
        bar.set_position(s.sent);
        bar.set_message(format!(
            "{} | {:.0} req/s | p50 {:.2} ms p99 {:.2} ms | {} alerts | caught {} of {} labelled frauds | precision {} recall {}",
            kairos_types::value::format_timestamp(s.event_time)
                .get(11..16)
                .unwrap_or(""),
            s.requests_per_second(),
            s.latency_ms(0.5),
            s.latency_ms(0.99),
            s.alerts,
            s.caught,
            s.labelled_fraud,
            percent(s.precision()),
            percent(s.recall()),
        ));
    })
    .await?;
    bar.finish_and_clear();
    // The server's own account of the same requests: without the HTTP round trip and the
    // client, on the same cores.
    let server_side: Option<serde_json::Value> =
        match reqwest::get(format!("{url}/v1/deployments/{}", deployment.name)).await {
            Ok(r) => r.json().await.ok(),
            Err(_) => None,
        };
    print_summary(
        &scenario,
        &stats,
        &scored,
        server_side.as_ref().map(|s| &s["latency"]),
        all.elapsed(),
    );

    if changed.is_some() {
        monitor_and_retrain(&url, &args.dir, args.open).await?;
    }

    if args.exit {
        let _ = stop.send(());
        server.await??;
        return Ok(());
    }
    print_examples(&url, &deployment.name, &scenario);
    tokio::signal::ctrl_c().await?;
    let _ = stop.send(());
    server.await??;
    Ok(())
}

/// The example's monitor over the live hour, through the server's REST API: drift, the alert
/// (to a local webhook), the retraining it starts, and the report.
async fn monitor_and_retrain(url: &str, dir: &Path, open: bool) -> anyhow::Result<()> {
    let (hook, received) = fraud::drift::webhook_receiver().await?;
    let spec = fraud::drift::monitor_spec(Some(hook))?;
    let client = reqwest::Client::new();
    let answer = client
        .post(format!("{url}/v1/monitors"))
        .json(&spec)
        .send()
        .await?;
    anyhow::ensure!(
        answer.status().is_success(),
        "applying the monitor: {}",
        answer.text().await?
    );
    let step = Instant::now();
    eprintln!(
        "\n  ▶ monitor {} over the live hour (and a retraining if it alerts)",
        spec.name
    );
    let answer = client
        .post(format!("{url}/v1/monitors/{}/run", spec.name))
        .send()
        .await?;
    anyhow::ensure!(
        answer.status().is_success(),
        "running the monitor: {}",
        answer.text().await?
    );
    let run: kairos_monitor::MonitorRun = answer.json().await?;
    if let Some(f) = &run.features {
        let mut moved: Vec<_> = f.columns.iter().filter(|c| c.drifted).collect();
        moved.sort_by(|a, b| b.score.total_cmp(&a.score));
        eprintln!(
            "  {} predictions against {} training rows: {} of {} features drifted{}",
            run.rows,
            run.reference_rows,
            f.drifted_columns,
            f.columns.len(),
            if moved.is_empty() {
                String::new()
            } else {
                format!(
                    " (most: {})",
                    moved
                        .iter()
                        .take(4)
                        .map(|c| format!("{} {:.2}", c.column, c.score))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        );
    }
    for p in &run.predictions {
        eprintln!(
            "  {}: {} {:.3} (threshold {}){}",
            p.column,
            p.method.name(),
            p.score,
            p.threshold,
            if p.drifted { " — drifted" } else { "" }
        );
    }
    for alert in &run.alerts {
        eprintln!("  ⚠ {alert}");
    }
    eprintln!(
        "  webhook: {} alert(s) received",
        received.lock().expect("alerts").len()
    );
    if let Some(d) = &run.retraining {
        let score = |s: Option<f64>| s.map_or("–".into(), |v| format!("{v:.3}"));
        eprintln!(
            "  retrained {} on fresh data (dataset {:?}, up to {}): challenger v{} PR-AUC {} against the champion v{}'s {} on the latest labelled day ({} payments, {} frauds) → {:?}",
            d.model,
            d.training_dataset.map(|(_, v)| v).unwrap_or_default(),
            d.training_end.as_deref().unwrap_or("–"),
            d.challenger_version.unwrap_or_default(),
            score(d.challenger_score),
            d.champion_version,
            score(d.champion_score),
            d.evaluated_rows,
            d.evaluated_positives,
            d.outcome
        );
        eprintln!("    {}", d.reason);
    }
    let html = client
        .get(format!(
            "{url}/v1/deployments/{}/monitoring/report",
            run.deployment
        ))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    let report = dir.join("monitoring_report.html");
    std::fs::write(&report, &html).with_context(|| format!("cannot write {}", report.display()))?;
    let report = report.canonicalize().unwrap_or(report);
    done(
        &format!("monitoring report: file://{}", report.display()),
        step,
    );
    if open {
        let opener = if cfg!(target_os = "macos") {
            "open"
        } else {
            "xdg-open"
        };
        if let Err(e) = std::process::Command::new(opener).arg(&report).spawn() {
            eprintln!("  (cannot open it with {opener}: {e})");
        }
    }
    Ok(())
}

fn print_report(variants: &[quality::Variant]) {
    eprintln!("\n  Model quality on the held-out test period (the latest payments with labels):");
    eprintln!(
        "    {:<34} {:>8} {:>8} {:>8} {:>18}",
        "model", "features", "PR-AUC", "ROC-AUC", "recall at 1% FPR"
    );
    for v in variants {
        eprintln!(
            "    {:<34} {:>8} {:>8.3} {:>8.3} {:>17.1}%",
            v.description,
            v.features,
            v.pr_auc.unwrap_or(f64::NAN),
            v.roc_auc.unwrap_or(f64::NAN),
            100.0 * v.recall_at_1pct_fpr
        );
    }
    if let Some(v) = variants.first() {
        eprintln!(
            "    ({} test rows, {} frauds)\n",
            v.test_rows, v.test_frauds
        );
    }
}

fn print_summary(
    scenario: &Scenario,
    stats: &replay::ReplayStats,
    scored: &[replay::Scored],
    server_side: Option<&serde_json::Value>,
    total: Duration,
) {
    let ratio = |a: usize, b: usize| (b > 0).then(|| a as f64 / b as f64);
    eprintln!(
        "\n  Live hour: {} payments scored in {:.1} s ({:.0} req/s over HTTP), latency p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms",
        stats.sent,
        stats.elapsed.as_secs_f64(),
        stats.requests_per_second(),
        stats.latency_ms(0.5),
        stats.latency_ms(0.99),
        stats.latency_ms(0.999),
    );
    if let Some(latency) = server_side {
        eprintln!(
            "  In the server (lookups, on-demand features, transforms, model): p50 {} ms, p99 {} ms",
            latency["p50_ms"], latency["p99_ms"]
        );
    }
    // Labels keep arriving after the hour: precision and recall as the bank would know them
    // at the hour's end, a day later, and once every label is in (the generator's truth).
    let by_id: std::collections::HashMap<i64, &replay::Scored> =
        scored.iter().map(|s| (s.tx_id, s)).collect();
    let known_by = |until: i64| {
        let (mut frauds, mut caught, mut false_alarms, mut labelled) = (0, 0, 0, 0);
        for l in &scenario.generated.labels {
            let Some(s) = by_id.get(&l.tx_id) else {
                continue;
            };
            if l.ts >= until {
                continue;
            }
            labelled += 1;
            frauds += usize::from(l.is_fraud);
            caught += usize::from(l.is_fraud && s.alert);
            false_alarms += usize::from(!l.is_fraud && s.alert);
        }
        (labelled, frauds, caught, false_alarms)
    };
    let alerts = scored.iter().filter(|s| s.alert).count();
    eprintln!(
        "  {alerts} alerts. Labels arrive late; what the bank knows about the hour's payments:"
    );
    const DAY: i64 = 86_400_000_000;
    for (when, until) in [
        ("at the hour's end", scenario.live_end),
        ("a day later", scenario.live_end + DAY),
        ("once all are in", i64::MAX),
    ] {
        let (labelled, frauds, caught, false_alarms) = known_by(until);
        eprintln!(
            "    {when:<18} {labelled:>5} labels, {frauds:>3} frauds, {caught:>3} caught, {false_alarms:>3} false alarms: precision {}, recall {}",
            percent(ratio(caught, caught + false_alarms)),
            percent(ratio(caught, frauds)),
        );
    }
    eprintln!("  Demo finished in {:.1} s.", total.as_secs_f64());
}

fn print_examples(url: &str, deployment: &str, scenario: &Scenario) {
    // A new payment (the replayed ones are in the store now, each its card's latest): the last
    // card seen, two minutes after the hour, from New York, for a jewel.
    let Some(last) = scenario.live().last() else {
        return;
    };
    let t = &kairos_demo::Transaction {
        tx_id: 0,
        ts: scenario.live_end + 120_000_000,
        amount: 1_450.0,
        category: "jewelry",
        latitude: 40.7128,
        longitude: -74.006,
        ..last.clone()
    };
    let body = replay::predict_body(t);
    eprintln!(
        "\n  Serving at {url} (Ctrl-C to stop). Score a new payment — card {} two minutes after the hour, from New York:\n\n    curl -s {url}/v1/deployments/{deployment}/predict -H 'content-type: application/json' -d '{body}'\n",
        t.cc_num
    );
    eprintln!(
        "  or over the Open Inference Protocol with tritonclient (pip install 'tritonclient[http]' numpy):\n"
    );
    eprintln!(
        r#"python3 - <<'EOF'
import numpy as np, tritonclient.http as http
client = http.InferenceServerClient("{host}")
def tensor(name, value, datatype):
    t = http.InferInput(name, [1], datatype)
    t.set_data_from_numpy(np.array([value], dtype=object if datatype == "BYTES" else None))
    return t
inputs = [tensor("cc_num", {cc_num}, "INT64"), tensor("amount", {amount:?}, "FP64"),
          tensor("category", "{category}", "BYTES"), tensor("latitude", {latitude:?}, "FP64"),
          tensor("longitude", {longitude:?}, "FP64"), tensor("ts", "{ts}", "BYTES")]
print(client.infer("{deployment}", inputs).as_numpy("probability"))
EOF
"#,
        host = url.trim_start_matches("http://"),
        cc_num = t.cc_num,
        amount = t.amount,
        category = t.category,
        latitude = t.latitude,
        longitude = t.longitude,
        ts = kairos_types::value::format_timestamp(t.ts),
    );
}
