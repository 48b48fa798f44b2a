//! Every metric the store emits, named in one place.

use kairos_types::TableId;

/// Which materialiser a figure is about.
#[derive(Debug, Clone, Copy)]
pub enum Sink {
    Online,
    Offline,
    Vectors,
}

impl Sink {
    pub fn as_str(self) -> &'static str {
        match self {
            Sink::Online => "online",
            Sink::Offline => "offline",
            Sink::Vectors => "vectors",
        }
    }
}

/// Rows appended to the log but not yet in a store.
pub fn materialiser_lag(table: &TableId, sink: Sink, rows: u64) {
    metrics::gauge!(
        "kairos_materialiser_lag_rows",
        "group" => table.name.clone(),
        "version" => table.version.to_string(),
        "store" => sink.as_str()
    )
    .set(rows as f64);
}

/// Messages of a shared log's partition this process materialises not yet in a store (Kafka:
/// the consumer lag of its materialisers, as Kafka's own tools count it).
pub fn partition_lag(table: &TableId, sink: Sink, partition: u32, messages: u64) {
    metrics::gauge!(
        "kairos_log_partition_lag_messages",
        "group" => table.name.clone(),
        "version" => table.version.to_string(),
        "store" => sink.as_str(),
        "partition" => partition.to_string()
    )
    .set(messages as f64);
}

/// Partitions of a shared log this process took on or let go (`change`: `taken`, `let_go`).
pub fn ownership_changed(table: &TableId, change: &'static str, partitions: usize) {
    metrics::counter!(
        "kairos_log_partition_ownership_changes_total",
        "group" => table.name.clone(),
        "version" => table.version.to_string(),
        "change" => change
    )
    .increment(partitions as u64);
}

/// A materialiser write that failed and will be retried.
pub fn materialiser_error(table: &TableId, sink: Sink) {
    metrics::counter!(
        "kairos_materialiser_errors_total",
        "group" => table.name.clone(),
        "version" => table.version.to_string(),
        "store" => sink.as_str()
    )
    .increment(1);
}

/// A materialiser stopped on a record it cannot write (1 while the group is halted).
pub fn materialiser_halted(table: &TableId, sink: Sink) {
    metrics::gauge!(
        "kairos_materialiser_halted",
        "group" => table.name.clone(),
        "version" => table.version.to_string(),
        "store" => sink.as_str()
    )
    .set(1.0);
}

/// Rows accepted into a group's log.
pub fn rows_ingested(table: &TableId, rows: u64) {
    metrics::counter!("kairos_rows_ingested_total", "group" => table.name.clone(), "version" => table.version.to_string())
        .increment(rows);
}

/// Batches refused for bad input.
pub fn batch_refused(table: &TableId) {
    metrics::counter!("kairos_batches_refused_total", "group" => table.name.clone(), "version" => table.version.to_string())
        .increment(1);
}

/// Rows that broke one expectation of a group, by column and rule.
pub fn expectation_failed(table: &TableId, column: &str, rule: &str, rows: u64) {
    metrics::counter!(
        "kairos_expectation_failures_total",
        "group" => table.name.clone(),
        "version" => table.version.to_string(),
        "column" => column.to_owned(),
        "rule" => rule.to_owned()
    )
    .increment(rows);
}

/// Rows a group's expectations sent to its quarantine group.
pub fn rows_quarantined(table: &TableId, rows: u64) {
    metrics::counter!("kairos_rows_quarantined_total", "group" => table.name.clone(), "version" => table.version.to_string())
        .increment(rows);
}
