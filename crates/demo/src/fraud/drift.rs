//! The fraud deployment through a change of the world: a champion trained before the change,
//! the example's monitor (`examples/fraud/monitor.toml`) watching what it serves after it,
//! and the retraining the monitor's alert starts.

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
