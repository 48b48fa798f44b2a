//! HTTP metrics: one latency histogram per route, and the Prometheus recorder.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

const LATENCY: &str = "kairos_http_request_duration_seconds";
/// Requests the access gate turned away, by reason (`missing_key`, `missing_scope`, `host`, …).
pub(crate) const REFUSED: &str = "kairos_http_requests_refused_total";
/// Handlers that panicked (each answered 500).
pub(crate) const PANICS: &str = "kairos_http_handler_panics_total";
/// Connections closed on arrival because the server had as many open as it allows.
pub(crate) const CONNECTIONS_REFUSED: &str = "kairos_http_connections_refused_total";

/// The process-wide Prometheus recorder, installed on first use.
pub(crate) fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let buckets = [
                0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05,
                0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
            ];
            // Serving stages take microseconds.
            let stages = [
                0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002, 0.005,
                0.01, 0.025, 0.1, 1.0,
            ];
            let freshness = [
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
            ];
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(LATENCY.into()), &buckets)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(kairos_pipeline::telemetry::FRESHNESS.into()),
                        &freshness,
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(kairos_deploy::telemetry::STAGE_SECONDS.into()),
                        &stages,
                    )
                })
                .expect("buckets are not empty");
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Another recorder may be installed already (tests start several servers).
            if metrics::set_global_recorder(recorder).is_ok() {
                spawn_upkeep(handle.clone());
            }
            handle
        })
        .clone()
}

/// How often histogram samples are folded into their buckets.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// The recorder keeps each histogram sample until the next scrape folds it into its buckets:
/// a server nobody scrapes grew by every request's and event's latency (9.5 MB after seven
/// minutes of a soak at 300 reads and 1,000 events a second). Folded every few seconds
/// instead, as the exporter's own `install` does.
fn spawn_upkeep(handle: PrometheusHandle) {
    let upkeep = move || {
        loop {
            std::thread::sleep(UPKEEP_EVERY);
            handle.run_upkeep();
        }
    };
    if let Err(e) = std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(upkeep)
    {
        tracing::warn!(error = %e, "cannot start the metrics upkeep thread; histograms fold at each scrape");
    }
}

/// Records the latency of every request under its route pattern, not its raw path.
pub(crate) async fn track_latency(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = request.method().to_string();
    let start = Instant::now();
    let response = next.run(request).await;
    metrics::histogram!(
        LATENCY,
        "method" => method,
        "route" => route,
        "status" => response.status().as_u16().to_string()
    )
    .record(start.elapsed().as_secs_f64());
    response
}
