//! The two materialisers: each follows a group's log and applies it to one store, persisting its
//! position atomically with what it wrote, so a crash anywhere resumes exactly where the store's
//! own state says (DESIGN invariant 1).

use std::io::Cursor;
use std::sync::Arc;
use std::time::Duration;

use arrow::ipc::reader::StreamReader;
use arrow::record_batch::RecordBatch;
use kairos_log::{FeatureLog, LogRecord};
use kairos_offline::{DeltaOfflineStore, to_offline};
use kairos_online::{KeyedRow, OnlineBackend, OnlineStore};
use kairos_types::value::encode_key;
use kairos_types::{FeatureGroupSpec, OnlineRow, Value};
use tokio::sync::watch;

use crate::GroupRuntime;
use crate::error::{Result, StoreError};
use crate::telemetry::{self, Sink};

/// How long a failing materialiser waits before it tries again.
const RETRY_AFTER: Duration = Duration::from_millis(500);

/// Decodes a log record's payload (an Arrow IPC stream in the group's canonical schema).
pub(crate) fn decode_record(record: &LogRecord) -> Result<Vec<RecordBatch>> {
    let reader = StreamReader::try_new(Cursor::new(record.payload.clone()), None)
        .map_err(StoreError::internal)?;
    reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(StoreError::internal)
}

/// The online rows of a record: per row its key bytes and the row, offsets counting from the
/// record's first offset.
pub(crate) fn online_rows(spec: &FeatureGroupSpec, record: &LogRecord) -> Result<Vec<KeyedRow>> {
    let keys = spec.key_indices();
    let event_time = spec.event_time_index();
    let mut rows = Vec::with_capacity(record.rows as usize);
    let mut offset = record.first_offset;
    for batch in decode_record(record)? {
        for row in 0..batch.num_rows() {
            let values: Vec<Value> = spec
                .columns
                .iter()
                .zip(batch.columns())
                .map(|(col, array)| Value::from_array(array, col.ty, row))
                .collect();
            let key: Vec<Value> = keys.iter().map(|&i| values[i].clone()).collect();
            let Value::Timestamp(event_time) = values[event_time] else {
                return Err(StoreError::internal("log row without an event time"));
            };
            rows.push((
                encode_key(&key),
                OnlineRow {
                    event_time,
                    offset,
                    ingested_at: record.ingested_at,
                    values,
                },
            ));
            offset += 1;
        }
    }
    Ok(rows)
}

/// Waits for the log to move past `applied`, or for shutdown. Returns false on shutdown.
async fn wait_for_more(
    end: &mut watch::Receiver<u64>,
    shutdown: &mut watch::Receiver<bool>,
    applied: u64,
) -> bool {
    loop {
        if *shutdown.borrow_and_update() {
            return false;
        }
        if *end.borrow_and_update() > applied {
            return true;
        }
        tokio::select! {
            changed = end.changed() => if changed.is_err() { return false },
            _ = shutdown.changed() => {}
        }
    }
}

/// Sleeps before a retry. Returns false on shutdown. `wait_for` sees a shutdown that was
/// signalled before this task first ran, which `changed` would miss.
async fn sleep_or_shutdown(shutdown: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(RETRY_AFTER) => true,
        _ = shutdown.wait_for(|stop| *stop) => false,
    }
}

pub(crate) async fn run_online(online: OnlineBackend, group: Arc<GroupRuntime>, max_bytes: usize) {
    let table = group.group.id();
    let mut shutdown = group.shutdown.subscribe();
    let mut end = group.log.subscribe();
    let mut applied = loop {
        match online.offset(&table).await {
            Ok(offset) => break offset.unwrap_or(0),
            Err(e) => {
                tracing::error!(group = %table, error = %e, "online materialiser cannot read its offset");
                if !sleep_or_shutdown(&mut shutdown).await {
                    return;
                }
            }
        }
    };
    group.online_applied.send_replace(applied);
    loop {
        telemetry::materialiser_lag(
            &table,
            Sink::Online,
            group.log.end_offset().saturating_sub(applied),
        );
        if !wait_for_more(&mut end, &mut shutdown, applied).await {
            return;
        }
        let step = async {
            let log = group.log.clone();
            let records = tokio::task::spawn_blocking(move || log.read_from(applied, max_bytes))
                .await
                .map_err(StoreError::internal)??;
            let Some(last) = records.last() else {
                return Ok(applied);
            };
            let through = last.end_offset();
            let mut rows = Vec::new();
            for record in &records {
                rows.extend(online_rows(&group.group.spec, record)?);
            }
            online.apply(&table, rows, through).await?;
            Ok::<_, StoreError>(through)
        };
        match step.await {
            Ok(through) => {
                applied = through;
                group.online_applied.send_replace(applied);
            }
            Err(e) => {
                telemetry::materialiser_error(&table, Sink::Online);
                tracing::error!(group = %table, error = %e, "online materialiser step failed; retrying");
                if !sleep_or_shutdown(&mut shutdown).await {
                    return;
                }
            }
        }
    }
}

pub(crate) async fn run_offline(
    offline: DeltaOfflineStore,
    group: Arc<GroupRuntime>,
    max_bytes: usize,
) {
    let table = group.group.id();
    let spec = group.group.spec.clone();
    let mut shutdown = group.shutdown.subscribe();
    let mut end = group.log.subscribe();
    let (mut writer, mut applied) = loop {
        let opened = async {
            let writer = offline.writer(&table, &spec).await?;
            let offset = writer.committed_offset().await?;
            Ok::<_, StoreError>((writer, offset.unwrap_or(0)))
        };
        match opened.await {
            Ok(state) => break state,
            Err(e) => {
                tracing::error!(group = %table, error = %e, "offline materialiser cannot open its table");
                if !sleep_or_shutdown(&mut shutdown).await {
                    return;
                }
            }
        }
    };
    group.offline_applied.send_replace(applied);
    loop {
        telemetry::materialiser_lag(
            &table,
            Sink::Offline,
            group.log.end_offset().saturating_sub(applied),
        );
        if !wait_for_more(&mut end, &mut shutdown, applied).await {
            return;
        }
        let step = async {
            let log = group.log.clone();
            let records = tokio::task::spawn_blocking(move || log.read_from(applied, max_bytes))
                .await
                .map_err(StoreError::internal)??;
            let Some(last) = records.last() else {
                return Ok(applied);
            };
            let through = last.end_offset();
            let mut batches = Vec::new();
            for record in &records {
                let mut first = record.first_offset;
                for batch in decode_record(record)? {
                    batches.push(
                        to_offline(&spec, &batch, first, record.ingested_at)
                            .map_err(StoreError::internal)?,
                    );
                    first += batch.num_rows() as u64;
                }
            }
            writer.append(batches, through).await?;
            Ok::<_, StoreError>(through)
        };
        match step.await {
            Ok(through) => {
                applied = through;
                group.offline_applied.send_replace(applied);
            }
            Err(e) => {
                telemetry::materialiser_error(&table, Sink::Offline);
                tracing::error!(group = %table, error = %e, "offline materialiser step failed; retrying");
                // The commit may or may not have landed: the table's own record says which.
                if let Err(e) = writer.reload(&offline, &table).await {
                    tracing::error!(group = %table, error = %e, "offline table reload failed");
                } else if let Ok(Some(committed)) = writer.committed_offset().await {
                    applied = committed;
                    group.offline_applied.send_replace(applied);
                }
                if !sleep_or_shutdown(&mut shutdown).await {
                    return;
                }
            }
        }
    }
}

/// Deletes log segments both materialisers have passed, once older than the retention.
pub(crate) async fn run_retention(
    group: Arc<GroupRuntime>,
    retention: Duration,
    clock: Arc<dyn kairos_types::Clock>,
) {
    let mut shutdown = group.shutdown.subscribe();
    let period = retention
        .min(Duration::from_secs(60))
        .max(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let passed = group.materialised_through();
        let older_than = clock.now_micros() - retention.as_micros() as i64;
        let log = group.log.clone();
        match tokio::task::spawn_blocking(move || log.remove_before(passed, older_than)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => {
                tracing::info!(group = %group.group.id(), segments = n, "removed log segments past retention")
            }
            Ok(Err(e)) => {
                tracing::warn!(group = %group.group.id(), error = %e, "log retention failed")
            }
            Err(e) => tracing::warn!(error = %e, "log retention task failed"),
        }
    }
}
