//! Monitoring end to end, small, in process: a champion trained before the world changes
//! (amounts ×1.6 and a new fraud pattern at a known day), its live traffic after the change
//! watched by the example's monitor over the REST API → a drift alert, delivered to a webhook →
//! a retraining whose challenger, judged on the latest labelled day, replaces the champion.
//! The same world without the change, served by the same kind of champion over the same span,
//! raises no alert (the false-alarm check).

use std::time::Duration;

use kairos_demo::fraud::drift::{drift_at, monitor_spec, train_champion, webhook_receiver};
use kairos_demo::fraud::replay::{self, ReplayOptions};
use kairos_demo::fraud::{self, DemoConfig, DemoDrift, Scenario};
use kairos_monitor::{History, MonitorRun, Outcome};
use kairos_pipeline::Pipelines;
use kairos_store::{FeatureStore, StoreConfig};
use serde_json::Value;

const DAY: i64 = 86_400_000_000;
/// The change comes this many days into the history.
const DRIFT_DAY: f64 = 7.5;

fn config(drift: bool) -> DemoConfig {
    DemoConfig {
        seed: 11,
        cards: 1_000,
        merchants: 300,
        history_days: 16.5,
        // A whole day live: a shorter span's mix of hours, and so of per-hour counts, is not
        // the training days' mix, which would be drift the world never had.
        live_minutes: 24 * 60,
        // A higher fraud rate than a bank's, so a small world has frauds to learn from.
        fraud_rate: 0.02,
        rate: 2_000.0,
        trees: 40,
        drift: drift.then_some(DemoDrift {
            after_days: DRIFT_DAY,
            amount_scale: 1.6,
        }),
    }
}

struct Served {
    run: MonitorRun,
    history: History,
    alerts: Vec<Value>,
    metrics: String,
    report: String,
}

/// Generates the world, trains the champion on the payments before the drift day, serves the
/// live period and runs the example's monitor once over it.
async fn serve_and_monitor(drift: bool) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let demo = config(drift);
    let scenario = Scenario::generate(&demo);
    let store = FeatureStore::open(StoreConfig::with_data_dir(dir.path()))
        .await
        .unwrap();
    let pipelines = Pipelines::new(store.clone());
    fraud::apply_definitions(&store, &pipelines).await.unwrap();
    fraud::load_history(&store, &scenario).await.unwrap();
    fraud::wait_for_windows(&store, &pipelines, Duration::from_secs(300))
        .await
        .unwrap();
    pipelines.close().await;

    let before = scenario.start() + (DRIFT_DAY * DAY as f64) as i64;
    assert_eq!(drift_at(&scenario), drift.then_some(before));
    train_champion(&store, &scenario, &demo, before)
        .await
        .unwrap();
    fraud::deploy(&store).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(kairos_serve::serve(
        store.clone(),
        listener,
        kairos_serve::ServerOptions {
            webhook_hosts: kairos_demo::fraud::drift::webhook_hosts(),
            ..Default::default()
        },
        async {
            let _ = stopped.await;
        },
    ));
    fraud::wait_ready(&url, Duration::from_secs(60))
        .await
        .unwrap();

    let (hook, received) = webhook_receiver().await.unwrap();
    let mut spec = monitor_spec(Some(hook)).unwrap();
    spec.min_rows = 150;
    spec.labels.as_mut().unwrap().min_labelled = 10_000;
    let client = reqwest::Client::new();
    let applied = client
        .post(format!("{url}/v1/monitors"))
        .json(&spec)
        .send()
        .await
        .unwrap();
    assert_eq!(applied.status(), 201, "{}", applied.text().await.unwrap());

    let options = ReplayOptions {
        url: url.clone(),
        deployment: "fraud".into(),
        rate: demo.rate,
        settle_every: None,
    };
    let (stats, _) = replay::replay(&store, &scenario, &options, |_| {})
        .await
        .unwrap();
    assert!(stats.sent >= 300, "{} live payments", stats.sent);

    let run: MonitorRun = client
        .post(format!("{url}/v1/monitors/{}/run", spec.name))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let history: History = client
        .get(format!("{url}/v1/monitors/{}/history", spec.name))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let metrics = client
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let report = client
        .get(format!("{url}/v1/deployments/fraud/monitoring/report"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // The webhook is called before the run answers.
    let alerts = received.lock().unwrap().clone();
    let _ = stop.send(());
    server.await.unwrap().unwrap();
    Served {
        run,
        history,
        alerts,
        metrics,
        report,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_alerts_retrains_and_promotes_a_better_model() {
    let served = serve_and_monitor(true).await;
    let run = &served.run;
    let features = run.features.as_ref().expect("a drift verdict");
    assert!(features.drifted, "{:#?}", run.alerts);
    let amount = features
        .columns
        .iter()
        .find(|c| c.column.contains("amount") && c.drifted);
    assert!(
        amount.is_some(),
        "an amount feature drifted: {:#?}",
        run.alerts
    );
    assert!(!run.alerts.is_empty());

    // The alert reached the webhook, with the run's reasons.
    assert_eq!(served.alerts.len(), 1, "{:?}", served.alerts);
    assert_eq!(served.alerts[0]["run_id"], run.run_id.as_str());
    assert_eq!(
        served.alerts[0]["reasons"].as_array().unwrap().len(),
        run.alerts.len()
    );

    // The alert retrained; the challenger won on the latest labelled day and serves now.
    let decision = run.retraining.as_ref().expect("a retraining decision");
    assert_eq!(decision.outcome, Outcome::Promoted, "{decision:#?}");
    let (champion, challenger) = (
        decision.champion_score.unwrap(),
        decision.challenger_score.unwrap(),
    );
    assert!(challenger >= champion + decision.margin, "{decision:#?}");
    assert!(decision.evaluated_positives >= 10, "{decision:#?}");

    // The history holds the run's scores, at the run's own time, and the decision; /metrics
    // the scores.
    let share = served
        .history
        .scores
        .iter()
        .find(|s| s.metric == "dataset:drift_share")
        .expect("the run's drift share in the history");
    assert!(share.alert);
    let at = chrono::DateTime::parse_from_rfc3339(&run.at)
        .unwrap()
        .timestamp_micros();
    assert!((share.at - at).abs() < 1_000, "{} vs {}", share.at, run.at);
    assert_eq!(served.history.decisions, vec![decision.clone()]);
    assert!(served.metrics.contains("kairos_monitor_drift_score{"));
    assert!(served.metrics.contains(
        "kairos_monitor_retrainings_total{monitor=\"fraud_monitor\",outcome=\"promoted\"}"
    ));
    // The report: one self-contained page with the distributions and the decision.
    assert!(served.report.starts_with("<!DOCTYPE html>"));
    assert!(served.report.contains("<svg"));
    assert!(served.report.contains("Promoted"));
    assert!(!served.report.contains("<script"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_drift_the_same_span_raises_no_alert() {
    let served = serve_and_monitor(false).await;
    let run = &served.run;
    let features = run.features.as_ref().expect("a drift verdict");
    assert!(!features.drifted, "{features:#?}");
    assert!(run.alerts.is_empty(), "{:#?}", run.alerts);
    assert!(run.retraining.is_none());
    assert!(served.alerts.is_empty());
    assert!(served.history.decisions.is_empty());
}
