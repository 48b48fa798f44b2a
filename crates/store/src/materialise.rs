//! The two materialisers: each follows a group's log and applies it to one store, persisting its
//! position atomically with what it wrote, so a crash anywhere resumes exactly where the store's
//! own state says (DESIGN invariant 1).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use arrow::record_batch::RecordBatch;
use futures::FutureExt;
use kairos_offline::{OfflineCommitter, PartitionStep, to_offline};
use kairos_online::{KeyedRow, OnlineBackend, OnlineStore, Step};
use kairos_types::value::encode_key;
use kairos_types::{FeatureGroupSpec, LogPosition, OnlineRow, Value};
use tokio::sync::watch;

use crate::GroupRuntime;
use crate::error::{Result, StoreError};
use crate::log::Span;
use crate::telemetry::{self, Sink};

/// How long a failing materialiser waits before it tries again.
const RETRY_AFTER: Duration = Duration::from_millis(500);

/// The encoded primary key of `row`, without decoding the rest of it.
pub(crate) fn row_key(spec: &FeatureGroupSpec, batch: &RecordBatch, row: usize) -> Vec<u8> {
    let key: Vec<Value> = spec
        .key_indices()
        .iter()
        .map(|&i| Value::from_array(batch.column(i), spec.columns[i].ty, row))
        .collect();
    encode_key(&key)
}

/// Row `row` of a batch in the group's canonical schema, as values in column order.
pub(crate) fn row_values(spec: &FeatureGroupSpec, batch: &RecordBatch, row: usize) -> Vec<Value> {
    spec.columns
        .iter()
        .zip(batch.columns())
        .map(|(col, array)| Value::from_array(array, col.ty, row))
        .collect()
}

/// Row `row` of a batch in the group's column order as the online store keeps it: its key
/// bytes and the row, at stored position `offset`. Shared by the online materialiser and
/// `check`, so both see rows alike.
pub(crate) fn keyed_row(
    spec: &FeatureGroupSpec,
    batch: &RecordBatch,
    row: usize,
    offset: u64,
    ingested_at: i64,
) -> Result<KeyedRow> {
    let values = row_values(spec, batch, row);
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

/// The online rows of a span, each with its stored position in a log of `partitions`.
pub(crate) fn online_rows(
    spec: &FeatureGroupSpec,
    span: &Span,
    partitions: u32,
) -> Result<Vec<KeyedRow>> {
    (0..span.batch.num_rows())
        .map(|row| {
            let position = span.position(row, partitions);
            keyed_row(spec, &span.batch, row, position, span.ingested_at)
        })
        .collect()
}

/// Waits for the log to move past `applied`, or for shutdown. Returns false on shutdown. A log
/// that cannot tell its end moves (`None`: a Kafka partition) is long-polled by the read.
async fn wait_for_more(
    end: Option<&mut watch::Receiver<u64>>,
    shutdown: &mut watch::Receiver<bool>,
    applied: u64,
) -> bool {
    let Some(end) = end else {
        return !*shutdown.borrow_and_update();
    };
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

/// One store one log partition is materialised into. The protocol (where to resume, what to
/// do after a failure) is in [`follow`]; a sink only knows how to write its store.
pub(crate) trait Materialiser: Send {
    const SINK: Sink;

    /// The partition's offset the store says it holds everything before: where to resume.
    fn position(&mut self) -> impl Future<Output = Result<u64>> + Send;

    /// Writes `spans`, read from offset `from` on, and records `through` as the partition's
    /// new offset, atomically.
    fn apply(
        &mut self,
        spans: &[Span],
        from: u64,
        through: u64,
    ) -> impl Future<Output = Result<()>> + Send;
}

struct OnlineSink {
    store: OnlineBackend,
    group: Arc<GroupRuntime>,
    partition: u32,
}

impl Materialiser for OnlineSink {
    const SINK: Sink = Sink::Online;

    async fn position(&mut self) -> Result<u64> {
        Ok(self
            .store
            .offset(&self.group.group.id(), self.partition)
            .await?
            .unwrap_or(0))
    }

    async fn apply(&mut self, spans: &[Span], from: u64, through: u64) -> Result<()> {
        let partitions = self.group.log.partitions();
        let mut rows = Vec::new();
        for span in spans {
            rows.extend(online_rows(&self.group.group.spec, span, partitions)?);
        }
        let step = Step {
            partition: self.partition,
            partitions,
            from,
            through,
        };
        Ok(self.store.apply(&self.group.group.id(), step, rows).await?)
    }
}

struct OfflineSink {
    committer: OfflineCommitter,
    group: Arc<GroupRuntime>,
    partition: u32,
}

impl Materialiser for OfflineSink {
    const SINK: Sink = Sink::Offline;

    /// Asks the table afresh, so after a failed commit the position is what the table says:
    /// the commit either landed with its offset or not at all.
    async fn position(&mut self) -> Result<u64> {
        Ok(self
            .committer
            .committed_offset(self.partition)
            .await?
            .unwrap_or(0))
    }

    async fn apply(&mut self, spans: &[Span], from: u64, through: u64) -> Result<()> {
        let spec = &self.group.group.spec;
        let partitions = self.group.log.partitions();
        let mut batches = Vec::with_capacity(spans.len());
        for span in spans {
            let first = LogPosition::new(span.partition, span.first_offset);
            batches.push(
                to_offline(spec, &span.batch, first, partitions, span.ingested_at)
                    .map_err(StoreError::internal)?,
            );
        }
        let step = PartitionStep {
            partition: self.partition,
            from,
            through,
            batches,
        };
        Ok(self.committer.commit(step).await?)
    }
}

pub(crate) async fn run_online(
    store: OnlineBackend,
    group: Arc<GroupRuntime>,
    partition: u32,
    stop: watch::Receiver<bool>,
    max_bytes: usize,
) {
    let applied = group.online_applied[partition as usize].clone();
    follow(
        OnlineSink {
            store,
            group: group.clone(),
            partition,
        },
        group,
        partition,
        stop,
        &applied,
        max_bytes,
        None,
    )
    .await;
}

pub(crate) async fn run_offline(
    committer: OfflineCommitter,
    group: Arc<GroupRuntime>,
    partition: u32,
    stop: watch::Receiver<bool>,
    max_bytes: usize,
    commit_interval: Duration,
) {
    let applied = group.offline_applied[partition as usize].clone();
    follow(
        OfflineSink {
            committer,
            group: group.clone(),
            partition,
        },
        group,
        partition,
        stop,
        &applied,
        max_bytes,
        Some(commit_interval),
    )
    .await;
}

/// Follows one partition of the group's log into one store until `shutdown` says stop (the
/// group stopping, or the partition taken away): resume where the store says, apply what the
/// log has, publish the new position; after a failure, wait, ask the store again where it
/// stands, and go on from there.
pub(crate) async fn follow<M: Materialiser>(
    mut sink: M,
    group: Arc<GroupRuntime>,
    partition: u32,
    mut shutdown: watch::Receiver<bool>,
    published: &watch::Sender<u64>,
    max_bytes: usize,
    pace: Option<Duration>,
) {
    let table = group.group.id();
    let mut end = group.log.subscribe();
    let reader = loop {
        match group.log.reader(partition) {
            Ok(reader) => break reader,
            Err(e) => {
                tracing::error!(group = %table, store = M::SINK.as_str(), error = %e, "materialiser cannot read its log partition");
                if !sleep_or_shutdown(&mut shutdown).await {
                    return;
                }
            }
        }
    };
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
        if let Some(end) = &end {
            telemetry::materialiser_lag(&table, M::SINK, end.borrow().saturating_sub(position));
        }
        if !wait_for_more(end.as_mut(), &mut shutdown, position).await {
            return;
        }
        if let (Some(interval), Some(at)) = (pace, drained_at.take()) {
            // A shutdown ends the wait but not the step: what the log holds is written first.
            tokio::select! {
                _ = tokio::time::sleep_until(at + interval) => {}
                _ = group.offline_wanted[partition as usize].notified() => {}
                _ = shutdown.changed() => {}
            }
        }
        let step = async {
            let spans = reader.read(&group.group.spec, position, max_bytes).await?;
            let Some(last) = spans.last() else {
                return Ok(Ok((position, 0)));
            };
            let through = last.end_offset;
            let bytes: usize = spans.iter().map(|s| s.bytes).sum();
            // A panic while writing is no passing trouble: the same records would panic again
            // on every retry, and across restarts. It halts the group instead, loudly.
            let written = std::panic::AssertUnwindSafe(sink.apply(&spans, position, through))
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
                // full steps, unpaced). A step's worth is the partition's share of one: a bulk
                // insert spread over many partitions is a backlog in each, though a small one.
                let partitions = group.log.partitions() as usize;
                if bytes < max_bytes / 2 / partitions {
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

/// Deletes segments of the segment log both materialisers have passed, once older than the
/// retention. (A Kafka topic's retention is Kafka's.)
pub(crate) async fn run_retention(
    group: Arc<GroupRuntime>,
    log: Arc<kairos_log::SegmentLog>,
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
        let log = log.clone();
        match tokio::task::spawn_blocking(move || {
            kairos_log::FeatureLog::remove_before(log.as_ref(), passed, older_than)
        })
        .await
        {
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

        async fn apply(&mut self, _: &[Span], _: u64, _: u64) -> Result<()> {
            panic!("timestamp out of range")
        }
    }

    #[tokio::test]
    async fn a_record_that_panics_the_writer_halts_the_group_instead_of_looping() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(0));
        let log = SegmentLog::open(dir.path(), SegmentLogOptions::default(), clock).unwrap();
        let log = crate::log::GroupLog::Segment(Arc::new(log));
        let spec: kairos_types::FeatureGroupSpec = serde_json::from_value(serde_json::json!({
            "name": "g", "primary_key": ["k"], "event_time": "ts",
            "columns": [{"name": "k", "type": "int64"}, {"name": "ts", "type": "timestamp"}]
        }))
        .unwrap();
        let row = serde_json::json!({"k": 1, "ts": 1_700_000_000}).to_string();
        let batch =
            kairos_types::ingest::parse_batch(&spec, kairos_types::Format::JsonLines, row.into())
                .unwrap();
        log.append(&spec, &batch, None, 0).await.unwrap();
        let group = Arc::new(GroupRuntime {
            group: FeatureGroup {
                spec,
                version: 1,
                created_at: String::new(),
            },
            log,
            online_applied: vec![watch::channel(0).0],
            offline_applied: vec![watch::channel(0).0],
            offline_wanted: vec![tokio::sync::Notify::new()],
            held: vec![std::sync::atomic::AtomicBool::new(true)],
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
            follow(
                Poisoned,
                group.clone(),
                0,
                group.shutdown.subscribe(),
                &published,
                1 << 20,
                None,
            ),
        )
        .await
        .expect("the materialiser stopped");
        let why = group.halted.borrow().clone().expect("halted");
        assert!(
            why.contains("offset 0") && why.contains("timestamp out of range"),
            "{why}"
        );
        // A waiter ends with the reason instead of waiting out its timeout.
        let err = crate::wait_offline(&group, 0, 1).await.unwrap_err();
        assert!(err.to_string().contains("halted"), "{err}");
    }
}
