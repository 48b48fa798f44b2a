//! The fraud deployment through a change of the world: a champion trained before the change,
//! the example's monitor (`examples/fraud/monitor.toml`) watching what it serves after it,
//! and the retraining the monitor's alert starts.

use std::sync::{Arc, Mutex};

use kairos_model::Model;
use kairos_monitor::MonitorSpec;
use kairos_store::FeatureStore;

use super::{DemoConfig, Result, Scenario, definitions, failed, training_data_until};

/// When the scenario's world changes (µs), if it does.
pub fn drift_at(scenario: &Scenario) -> Option<i64> {
    scenario
        .config
        .drift
        .map(|d| scenario.start() + (d.after_days * super::DAY as f64) as i64)
}

/// The champion: trained on the payments before `end` — for a drifting scenario, the model the
/// bank had when the world changed.
pub async fn train_champion(
    store: &FeatureStore,
    scenario: &Scenario,
    config: &DemoConfig,
    end: i64,
) -> Result<Model> {
    training_data_until(store, scenario, end).await?;
    super::train(store, config).await
}

/// The example's monitor, run on request only (the demo decides when), telling `webhook`.
pub fn monitor_spec(webhook: Option<String>) -> Result<MonitorSpec> {
    let mut spec = MonitorSpec::parse(definitions::MONITOR).map_err(failed)?;
    spec.schedule = None;
    spec.alert.webhook = webhook;
    spec.validate().map_err(failed)?;
    Ok(spec)
}

/// The alerts a [`webhook_receiver`] was sent, in arrival order.
pub type Received = Arc<Mutex<Vec<serde_json::Value>>>;

/// A local receiver of the monitor's webhook, on a free loopback port: its URL and what it
/// receives.
pub async fn webhook_receiver() -> Result<(String, Received)> {
    let received: Received = Arc::new(Mutex::new(Vec::new()));
    let app = axum::Router::new().route(
        "/alerts",
        axum::routing::post({
            let received = received.clone();
            move |axum::Json(body): axum::Json<serde_json::Value>| {
                let received = received.clone();
                async move {
                    received.lock().expect("alerts").push(body);
                    "ok"
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(failed)?;
    let url = format!("http://{}/alerts", listener.local_addr().map_err(failed)?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((url, received))
}

/// The hosts the demo's server lets monitors' webhooks call: the example's monitor alerts a
/// receiver on this machine ([`webhook_receiver`]).
pub fn webhook_hosts() -> Vec<String> {
    vec!["127.0.0.1".into()]
}
