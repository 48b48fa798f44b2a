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

/// Source partitions this worker took on (at start, in a rebalance, or from a worker that
/// died): the ownership changes a cluster's dashboards follow.
pub(crate) fn partition_taken(pipeline: &str) {
    metrics::counter!("kairos_pipeline_partitions_taken_total", "pipeline" => pipeline.to_owned())
        .increment(1);
}

/// Source partitions let go: revoked by the source, or lost to another worker whose newer
/// owner epoch fenced this one's commit (`reason` = `revoked` or `fenced`).
pub(crate) fn partition_let_go(pipeline: &str, reason: &'static str) {
    metrics::counter!(
        "kairos_pipeline_partitions_let_go_total",
        "pipeline" => pipeline.to_owned(),
        "reason" => reason
    )
    .increment(1);
}

/// Seconds from an event's arrival to its window's row being visible online.
pub(crate) fn freshness(pipeline: &str, group: &str, seconds: f64) {
    metrics::histogram!(FRESHNESS, "pipeline" => pipeline.to_owned(), "group" => group.to_owned())
        .record(seconds);
}
