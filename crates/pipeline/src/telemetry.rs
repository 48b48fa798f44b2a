//! Pipeline metrics on `/metrics`.

/// The freshness histogram's name (the server sets its buckets).
pub const FRESHNESS: &str = "kairos_pipeline_freshness_seconds";

pub(crate) fn events(pipeline: &str, events: u64, late: u64) {
    metrics::counter!("kairos_pipeline_events_total", "pipeline" => pipeline.to_owned())
        .increment(events);
    if late > 0 {
        metrics::counter!("kairos_pipeline_late_events_total", "pipeline" => pipeline.to_owned())
            .increment(late);
    }
}

pub(crate) fn malformed(pipeline: &str, n: u64) {
    metrics::counter!("kairos_pipeline_malformed_events_total", "pipeline" => pipeline.to_owned())
        .increment(n);
}

pub(crate) fn rows_written(pipeline: &str, group: &str, n: u64) {
    metrics::counter!(
        "kairos_pipeline_rows_written_total",
        "pipeline" => pipeline.to_owned(),
        "group" => group.to_owned()
    )
    .increment(n);
}

pub(crate) fn checkpoint(pipeline: &str) {
    metrics::counter!("kairos_pipeline_checkpoints_total", "pipeline" => pipeline.to_owned())
        .increment(1);
}

/// Seconds from an event's arrival to its window's row being visible online.
pub(crate) fn freshness(pipeline: &str, group: &str, seconds: f64) {
    metrics::histogram!(FRESHNESS, "pipeline" => pipeline.to_owned(), "group" => group.to_owned())
        .record(seconds);
}
