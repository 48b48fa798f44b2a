//! Serving latency: Prometheus histograms per deployment and stage, request counts by status,
//! and the deployment's latency objective with its compliance.
//!
//! Compliance is the share of requests answered within the objective's latency since the
//! deployment went live; the objective is met while that share is at least its quantile (a
//! p99 ≤ 5 ms objective is met while 99% of requests took 5 ms or less).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use kairos_model::Slo;
use kairos_view::StageTimes;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Per deployment and stage: `lookup`, `on_demand`, `transforms`, `predict`, `total`.
pub const STAGE_SECONDS: &str = "kairos_deployment_stage_seconds";
/// Per deployment and status: `ok`, `bad_request`, `error`.
pub const REQUESTS: &str = "kairos_deployment_requests_total";
pub const WITHIN_SLO: &str = "kairos_deployment_requests_within_slo_total";
pub const SLO_COMPLIANCE: &str = "kairos_deployment_slo_compliance";
pub const SLO_OBJECTIVE: &str = "kairos_deployment_slo_objective";
pub const SLO_LATENCY: &str = "kairos_deployment_slo_latency_seconds";
pub const LOG_DROPPED: &str = "kairos_inference_log_dropped_total";

/// The latency account of one deployment (kept across revisions: the objective is the
/// service's, not the model version's).
#[derive(Debug)]
pub struct Latency {
    deployment: String,
    slo: Mutex<Slo>,
    total: AtomicU64,
    within: AtomicU64,
    errors: AtomicU64,
    /// Total latency in microseconds, for the quantiles `kairos deploy status` shows.
    histogram: Mutex<Histogram<u64>>,
}

/// What `kairos deploy status` shows of a deployment's latency.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LatencyReport {
    pub requests: u64,
    pub errors: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub slo: Slo,
    /// The share of requests answered within `slo.latency_ms`; 1 before the first request.
    pub compliance: f64,
    pub slo_met: bool,
}

impl Latency {
    pub fn new(deployment: &str, slo: Slo) -> Latency {
        let latency = Latency {
            deployment: deployment.to_string(),
            slo: Mutex::new(slo),
            total: AtomicU64::new(0),
            within: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            histogram: Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3).expect("bounds")),
        };
        latency.publish_slo();
        latency
    }

    /// A new revision may change the objective; the counts carry on.
    pub fn set_slo(&self, slo: Slo) {
        *self.slo.lock().expect("slo lock") = slo;
        self.publish_slo();
    }

    fn publish_slo(&self) {
        let slo = self.slo.lock().expect("slo lock").clone();
        let d = self.deployment.clone();
        metrics::gauge!(SLO_OBJECTIVE, "deployment" => d.clone()).set(slo.quantile);
        metrics::gauge!(SLO_LATENCY, "deployment" => d).set(slo.latency_ms / 1e3);
    }

    /// Records an answered request and the time each stage took.
    pub fn answered(&self, stages: &StageTimes, predict: Duration, total: Duration) {
        let d = &self.deployment;
        for (stage, took) in [
            ("lookup", stages.lookup),
            ("on_demand", stages.on_demand),
            ("transforms", stages.transforms),
            ("predict", predict),
            ("total", total),
        ] {
            metrics::histogram!(STAGE_SECONDS, "deployment" => d.clone(), "stage" => stage)
                .record(took.as_secs_f64());
        }
        metrics::counter!(REQUESTS, "deployment" => d.clone(), "status" => "ok").increment(1);
        let limit = Duration::from_secs_f64(self.slo.lock().expect("slo lock").latency_ms / 1e3);
        let total_count = self.total.fetch_add(1, Ordering::Relaxed) + 1;
        let within = if total <= limit {
            metrics::counter!(WITHIN_SLO, "deployment" => d.clone()).increment(1);
            self.within.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            self.within.load(Ordering::Relaxed)
        };
        metrics::gauge!(SLO_COMPLIANCE, "deployment" => d.clone())
            .set(within as f64 / total_count as f64);
        let micros = (total.as_micros() as u64).clamp(1, 60_000_000);
        self.histogram
            .lock()
            .expect("histogram lock")
            .record(micros)
            .expect("clamped to the bounds");
    }

    /// Records a refused or failed request: `bad_request` for the client's, `error` for ours.
    pub fn failed(&self, status: &'static str) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(REQUESTS, "deployment" => self.deployment.clone(), "status" => status)
            .increment(1);
    }

    pub fn report(&self) -> LatencyReport {
        let slo = self.slo.lock().expect("slo lock").clone();
        let total = self.total.load(Ordering::Relaxed);
        let within = self.within.load(Ordering::Relaxed);
        let compliance = if total == 0 {
            1.0
        } else {
            within as f64 / total as f64
        };
        let h = self.histogram.lock().expect("histogram lock");
        let ms = |q: f64| {
            if h.is_empty() {
                0.0
            } else {
                h.value_at_quantile(q) as f64 / 1e3
            }
        };
        LatencyReport {
            requests: total,
            errors: self.errors.load(Ordering::Relaxed),
            p50_ms: ms(0.5),
            p99_ms: ms(0.99),
            p999_ms: ms(0.999),
            max_ms: if h.is_empty() {
                0.0
            } else {
                h.max() as f64 / 1e3
            },
            slo_met: compliance >= slo.quantile,
            slo,
            compliance,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compliance_is_the_share_within_the_objective() {
        let latency = Latency::new(
            "d",
            Slo {
                quantile: 0.9,
                latency_ms: 2.0,
            },
        );
        assert!(latency.report().slo_met);
        let stages = StageTimes::default();
        for _ in 0..9 {
            latency.answered(&stages, Duration::ZERO, Duration::from_micros(500));
        }
        latency.answered(&stages, Duration::ZERO, Duration::from_millis(3));
        let report = latency.report();
        assert_eq!(report.requests, 10);
        assert!((report.compliance - 0.9).abs() < 1e-12);
        assert!(report.slo_met);
        latency.answered(&stages, Duration::ZERO, Duration::from_millis(3));
        let report = latency.report();
        assert!(!report.slo_met, "{report:?}");
        assert!((report.p50_ms - 0.5).abs() < 0.01, "{report:?}");
        assert!((report.max_ms - 3.0).abs() < 0.01, "{report:?}");
    }
}
