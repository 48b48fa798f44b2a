//! What monitoring exports on `/metrics`: each run's scores as gauges, alerts, webhook
//! deliveries and retraining outcomes as counters.

use crate::retrain::Outcome;
use crate::service::MonitorRun;

/// Per monitor and column: the drift score of the last run (`method` names the statistic).
pub const DRIFT_SCORE: &str = "kairos_monitor_drift_score";
/// Per monitor and column: 1 when the last run found the column drifted.
pub const DRIFTED: &str = "kairos_monitor_drifted";
/// Per monitor: the share of features that drifted in the last run.
pub const DRIFT_SHARE: &str = "kairos_monitor_drift_share";
/// Per monitor and metric: the last run's quality over labelled predictions.
pub const QUALITY: &str = "kairos_monitor_quality";
/// Per monitor: runs, and runs that alerted.
pub const RUNS: &str = "kairos_monitor_runs_total";
pub const ALERTS: &str = "kairos_monitor_alerts_total";
/// Per monitor and result (`delivered`, `failed`): alert webhook calls.
pub const WEBHOOKS: &str = "kairos_monitor_webhooks_total";
/// Per monitor and outcome (`promoted`, `kept`, `failed`): retrainings.
pub const RETRAININGS: &str = "kairos_monitor_retrainings_total";
/// Per monitor and claim (`here`: this replica runs the slot; `elsewhere`: another claimed it):
/// the slots of its schedule.
pub const SCHEDULE_SLOTS: &str = "kairos_monitor_schedule_slots_total";

pub(crate) fn schedule_slot(monitor: &str, here: bool) {
    let claim = if here { "here" } else { "elsewhere" };
    metrics::counter!(SCHEDULE_SLOTS, "monitor" => monitor.to_owned(), "claim" => claim)
        .increment(1);
}

pub(crate) fn record_run(run: &MonitorRun) {
    let monitor = run.monitor.clone();
    metrics::counter!(RUNS, "monitor" => monitor.clone()).increment(1);
    if !run.alerts.is_empty() {
        metrics::counter!(ALERTS, "monitor" => monitor.clone()).increment(1);
    }
    let columns = run
        .features
        .iter()
        .flat_map(|f| &f.columns)
        .chain(&run.predictions);
    for c in columns {
        let labels = [
            ("monitor", monitor.clone()),
            ("column", c.column.clone()),
            ("method", c.method.name().to_string()),
        ];
        metrics::gauge!(DRIFT_SCORE, &labels).set(c.score);
        metrics::gauge!(DRIFTED, &labels[..2]).set(f64::from(u8::from(c.drifted)));
    }
    if let Some(f) = &run.features {
        metrics::gauge!(DRIFT_SHARE, "monitor" => monitor.clone()).set(f.share);
    }
    if let Some(q) = &run.quality {
        for (name, value) in [
            ("pr_auc", q.pr_auc),
            ("precision", Some(q.precision)),
            ("recall", Some(q.recall)),
            ("calibration_error", Some(q.calibration_error)),
        ] {
            if let Some(v) = value {
                metrics::gauge!(QUALITY, "monitor" => monitor.clone(), "metric" => name).set(v);
            }
        }
    }
}

pub(crate) fn webhook(monitor: &str, delivered: bool) {
    let result = if delivered { "delivered" } else { "failed" };
    metrics::counter!(WEBHOOKS, "monitor" => monitor.to_string(), "result" => result).increment(1);
}

pub(crate) fn retraining(monitor: &str, outcome: Outcome) {
    let outcome = match outcome {
        Outcome::Promoted => "promoted",
        Outcome::Kept => "kept",
        Outcome::Failed => "failed",
    };
    metrics::counter!(RETRAININGS, "monitor" => monitor.to_string(), "outcome" => outcome)
        .increment(1);
}
