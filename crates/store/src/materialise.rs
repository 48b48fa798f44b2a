//! The two materialisers: each follows a group's log and applies it to one store, persisting its
//! position atomically with what it wrote, so a crash anywhere resumes exactly where the store's
//! own state says (DESIGN invariant 1).

use std::future::Future;
use std::io::Cursor;
use std::sync::Arc;
use std::time::Duration;

use arrow::ipc::reader::StreamReader;
use arrow::record_batch::RecordBatch;
use futures::FutureExt;
use kairos_log::{FeatureLog, LogRecord};
use kairos_offline::{DeltaOfflineStore, OfflineWriter, to_offline};
use kairos_online::{KeyedRow, OnlineBackend, OnlineStore, Step};
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

/// Row `row` of a batch in the group's column order as the online store keeps it: its key
/// bytes and the row. Shared by the online materialiser and `check`, so both see rows alike.
/// The encoded primary key of `row`, without decoding the rest of it.
pub(crate) fn row_key(spec: &FeatureGroupSpec, batch: &RecordBatch, row: usize) -> Vec<u8> {
    let key: Vec<Value> = spec
        .key_indices()
        .iter()
        .map(|&i| Value::from_array(batch.column(i), spec.columns[i].ty, row))
        .collect();
    encode_key(&key)
}

pub(crate) fn keyed_row(
    spec: &FeatureGroupSpec,
    batch: &RecordBatch,
    row: usize,
    offset: u64,
    ingested_at: i64,
) -> Result<KeyedRow> {
    let values: Vec<Value> = spec
        .columns
        .iter()
        .zip(batch.columns())
        .map(|(col, array)| Value::from_array(array, col.ty, row))
        .collect();
    let key: Vec<Value> = spec
        .key_indices()
        .iter()
        .map(|&i| values[i].clone())
        .collect();
    let Value::Timestamp(event_time) = values[spec.event_time_index()] else {
        return Err(StoreError::internal("row without an event time"));
    };
    Ok((
        encode_key(&key),
        OnlineRow {
            event_time,
            offset,
            ingested_at,
            values,
        },
    ))
}

/// The online rows of a record, offsets counting from the record's first offset.
pub(crate) fn online_rows(spec: &FeatureGroupSpec, record: &LogRecord) -> Result<Vec<KeyedRow>> {
    let mut rows = Vec::with_capacity(record.rows as usize);
    let mut offset = record.first_offset;
    for batch in decode_record(record)? {
        for row in 0..batch.num_rows() {
            rows.push(keyed_row(spec, &batch, row, offset, record.ingested_at)?);
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

/// One store a log is materialised into. The protocol (where to resume, what to do after a
/// failure) is in [`follow`]; a sink only knows how to write its store.
pub(crate) trait Materialiser: Send {
    const SINK: Sink;

    /// The offset the store says it holds everything before: where to resume.
    fn position(&mut self) -> impl Future<Output = Result<u64>> + Send;

    /// Writes `records`, read from position `from` on, and records `through` as the new
    /// position, atomically.
    fn apply(
        &mut self,
        records: &[LogRecord],
        from: u64,
        through: u64,
    ) -> impl Future<Output = Result<()>> + Send;
}

struct OnlineSink {
    store: OnlineBackend,
    group: Arc<GroupRuntime>,
}

impl Materialiser for OnlineSink {
    const SINK: Sink = Sink::Online;

    async fn position(&mut self) -> Result<u64> {
        Ok(self
            .store
            .offset(&self.group.group.id(), 0)
            .await?
            .unwrap_or(0))
    }

    async fn apply(&mut self, records: &[LogRecord], from: u64, through: u64) -> Result<()> {
        let mut rows = Vec::new();
        for record in records {
            rows.extend(online_rows(&self.group.group.spec, record)?);
        }
        let step = Step {
            partition: 0,
            from,
            through,
        };
        Ok(self.store.apply(&self.group.group.id(), step, rows).await?)
    }
}

struct OfflineSink {
    store: DeltaOfflineStore,
    group: Arc<GroupRuntime>,
    writer: Option<OfflineWriter>,
}

impl Materialiser for OfflineSink {
    const SINK: Sink = Sink::Offline;

    /// Reloads the table, so after a failed commit the position is what the table says: the
    /// commit either landed with its offset or not at all.
    async fn position(&mut self) -> Result<u64> {
        let group = &self.group.group;
        let writer = self.store.writer(&group.id(), &group.spec).await?;
        let offset = writer.committed_offset().await?.unwrap_or(0);
        self.writer = Some(writer);
        Ok(offset)
    }

    async fn apply(&mut self, records: &[LogRecord], _from: u64, through: u64) -> Result<()> {
        let spec = &self.group.group.spec;
        let mut batches = Vec::new();
        for record in records {
            let mut first = record.first_offset;
            for batch in decode_record(record)? {
                batches.push(
                    to_offline(spec, &batch, first, record.ingested_at)
                        .map_err(StoreError::internal)?,
                );
                first += batch.num_rows() as u64;
            }
        }
        let writer = self
            .writer
            .as_mut()
            .ok_or_else(|| StoreError::internal("offline writer not open"))?;
        Ok(writer.append(batches, through).await?)
    }
}

pub(crate) async fn run_online(store: OnlineBackend, group: Arc<GroupRuntime>, max_bytes: usize) {
    let applied = group.online_applied.clone();
    follow(
        OnlineSink {
            store,
            group: group.clone(),
        },
        group,
        &applied,
        max_bytes,
        None,
    )
    .await;
}

pub(crate) async fn run_offline(
    store: DeltaOfflineStore,
    group: Arc<GroupRuntime>,
    max_bytes: usize,
    commit_interval: Duration,
) {
    let applied = group.offline_applied.clone();
    follow(
        OfflineSink {
            store,
            group: group.clone(),
            writer: None,
        },
        group,
        &applied,
        max_bytes,
        Some(commit_interval),
    )
    .await;
}

/// Follows the group's log into one store until shutdown: resume where the store says, apply
/// what the log has, publish the new position; after a failure, wait, ask the store again where
/// it stands, and go on from there.
pub(crate) async fn follow<M: Materialiser>(
    mut sink: M,
    group: Arc<GroupRuntime>,
    published: &watch::Sender<u64>,
    max_bytes: usize,
    pace: Option<Duration>,
) {
    let table = group.group.id();
    let mut shutdown = group.shutdown.subscribe();
    let mut end = group.log.subscribe();
    let mut applied = None;
    // When the last step that took less than a full step's worth finished: what trickles in
    // after it waits for the pace interval, or for someone waiting on this store
    // (`offline_wanted`).
    let mut drained_at: Option<tokio::time::Instant> = None;
    loop {
        let position = match applied {
            Some(position) => position,
            None => match sink.position().await {
                Ok(position) => {
                    published.send_replace(position);
                    position
                }
                Err(e) => {
                    tracing::error!(group = %table, store = M::SINK.as_str(), error = %e, "materialiser cannot find its position");
                    if !sleep_or_shutdown(&mut shutdown).await {
                        return;
                    }
                    continue;
                }
            },
        };
        telemetry::materialiser_lag(
            &table,
            M::SINK,
            group.log.end_offset().saturating_sub(position),
        );
        if !wait_for_more(&mut end, &mut shutdown, position).await {
            return;
        }
        if let (Some(interval), Some(at)) = (pace, drained_at.take()) {
            // A shutdown ends the wait but not the step: what the log holds is written first.
            tokio::select! {
                _ = tokio::time::sleep_until(at + interval) => {}
                _ = group.offline_wanted.notified() => {}
                _ = shutdown.changed() => {}
            }
        }
        let step = async {
            let log = group.log.clone();
            let records = tokio::task::spawn_blocking(move || log.read_from(position, max_bytes))
                .await
                .map_err(StoreError::internal)??;
            let Some(last) = records.last() else {
                return Ok(Ok((position, 0)));
            };
            let through = last.end_offset();
            let bytes: usize = records.iter().map(|r| r.payload.len()).sum();
            // A panic while writing is no passing trouble: the same records would panic again
            // on every retry, and across restarts. It halts the group instead, loudly.
            let written = std::panic::AssertUnwindSafe(sink.apply(&records, position, through))
                .catch_unwind()
                .await;
            match written {
                Ok(result) => result.map(|()| Ok((through, bytes))),
                Err(panic) => Ok(Err(kairos_types::panic::message(panic.as_ref()))),
            }
        };
        match step.await {
            Ok(Err(panicked)) => {
                let why = format!(
                    "the {} materialiser cannot write the log records from offset {position} \
                     (writing them panicked: {panicked}); it stopped, and the group's reads \
                     from that store end before them",
                    M::SINK.as_str()
                );
                tracing::error!(group = %table, store = M::SINK.as_str(), error = %why, "materialiser halted");
                telemetry::materialiser_error(&table, M::SINK);
                telemetry::materialiser_halted(&table, M::SINK);
                group.halted.send_replace(Some(why));
                return;
            }
            Ok(Ok((through, bytes))) => {
                applied = Some(through);
                published.send_replace(through);
                // Less than a full step's worth: writes trickle in (a backlog is taken in
                // full steps, unpaced).
                if bytes < max_bytes / 2 {
                    drained_at = Some(tokio::time::Instant::now());
                }
            }
            Err(e) => {
                telemetry::materialiser_error(&table, M::SINK);
                tracing::error!(group = %table, store = M::SINK.as_str(), error = %e, "materialiser step failed; retrying");
                applied = None;
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
    online: OnlineBackend,
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
        // The online store may hold its latest commits unsynced; synced, a crash cannot take
        // it back before `passed`.
        if group.group.spec.online
            && let Err(e) = online.sync().await
        {
            tracing::warn!(group = %group.group.id(), error = %e, "online store sync failed; log retention waits");
            continue;
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use kairos_log::{SegmentLog, SegmentLogOptions};
    use kairos_types::{FeatureGroup, ManualClock};

    /// A store that cannot write what the log holds: it panics, as deltalake did on an instant
    /// it could not represent.
    struct Poisoned;

    impl Materialiser for Poisoned {
        const SINK: Sink = Sink::Offline;

        async fn position(&mut self) -> Result<u64> {
            Ok(0)
        }

        async fn apply(&mut self, _: &[LogRecord], _: u64, _: u64) -> Result<()> {
            panic!("timestamp out of range")
        }
    }

    #[tokio::test]
    async fn a_record_that_panics_the_writer_halts_the_group_instead_of_looping() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(0));
        let log = SegmentLog::open(dir.path(), SegmentLogOptions::default(), clock).unwrap();
        log.append(1, bytes::Bytes::from_static(b"row"))
            .unwrap()
            .wait()
            .await
            .unwrap();
        let spec: kairos_types::FeatureGroupSpec = serde_json::from_value(serde_json::json!({
            "name": "g", "primary_key": ["k"], "event_time": "ts",
            "columns": [{"name": "k", "type": "int64"}, {"name": "ts", "type": "timestamp"}]
        }))
        .unwrap();
        let group = Arc::new(GroupRuntime {
            group: FeatureGroup {
                spec,
                version: 1,
                created_at: String::new(),
            },
            log: Arc::new(log),
            online_applied: watch::channel(0).0,
            offline_applied: watch::channel(0).0,
            offline_wanted: tokio::sync::Notify::new(),
            shutdown: watch::channel(false).0,
            halted: watch::channel(None).0,
            vectors: None,
            expectations: None,
            tasks: std::sync::Mutex::new(Vec::new()),
        });
        let published = watch::channel(0).0;
        // It returns (no endless retry), and says why.
        tokio::time::timeout(
            Duration::from_secs(10),
            follow(Poisoned, group.clone(), &published, 1 << 20, None),
        )
        .await
        .expect("the materialiser stopped");
        let why = group.halted.borrow().clone().expect("halted");
        assert!(
            why.contains("offset 0") && why.contains("timestamp out of range"),
            "{why}"
        );
        // A waiter ends with the reason instead of waiting out its timeout.
        let err = crate::wait_offline(&group, 1).await.unwrap_err();
        assert!(err.to_string().contains("halted"), "{err}");
    }
}
