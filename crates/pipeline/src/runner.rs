//! One running pipeline: source → decode → window operator → checkpoint → feature group.
//!
//! A pipeline runs on a thread of its own (windowing is CPU work that must not hold up the
//! async workers serving HTTP), driving its async I/O through the runtime's handle. Barriers
//! come every checkpoint interval of processing time; each one runs the protocol of
//! [`kairos_stream::checkpoint`] for every source partition the run holds: persist its state,
//! position and rows, then deliver the rows once.
//!
//! Partitions are held one at a time: a run takes a partition when its source assigns it
//! (loading the partition's checkpoint, delivering any rows it left pending, restoring its
//! windows) and lets it go when the source revokes it. So a Kafka pipeline can run as several
//! workers — the pipeline's own run plus `kairos pipeline worker` processes — that share the
//! topic's partitions through the consumer group, and a partition moves between them with its
//! state. A partition's checkpoint file is held open (locked) by its owner, so a new owner
//! starts only once the previous one has let go or died.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::{AsArray, RecordBatch};
use hdrhistogram::Histogram;
use kairos_store::{FeatureStore, InsertAck, Result, Storage, StoreError};
use kairos_stream::checkpoint::{CheckpointMeta, PendingOutput, producer_tag};
use kairos_stream::spec::PipelineDef;
use kairos_stream::{Plan, SourceSpec, WindowOperator};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::checkpoint::{Checkpoints, Committed, LocalCheckpoints, SharedCheckpoints};
use crate::decode::{self, Malformed};
use crate::sink::Sink;
use crate::source::{Poll, Source, Streams};
use crate::telemetry;

/// Where a pipeline is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Applied, not running.
    Idle,
    Starting,
    Running,
    /// A bounded source (a file) was read to its end and every window written.
    Finished,
    Stopped,
    Failed,
}

/// Event-to-online latency percentiles of the rows a pipeline wrote.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Freshness {
    /// Rows measured.
    pub rows: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// What `kairos pipeline status` and `GET /v1/pipelines/{name}` show.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PipelineStatus {
    pub name: String,
    pub version: u32,
    pub state: RunState,
    pub output_group: String,
    /// Checkpoints taken.
    pub epoch: u64,
    pub events: u64,
    /// Events the filter dropped.
    pub filtered: u64,
    /// Events refused as later than the allowed lateness (in the dead-letter file).
    pub late: u64,
    /// Events that could not be read (in the dead-letter file).
    pub malformed: u64,
    /// Window rows written.
    pub rows_written: u64,
    pub open_windows: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(default)]
    pub watermark: Option<String>,
    /// Per source partition, the position of the next event to read.
    pub positions: BTreeMap<u32, u64>,
    /// Per source partition, the position the last checkpoint holds: the window rows of every
    /// event before it have been delivered to the output group.
    #[serde(default)]
    pub committed: BTreeMap<u32, u64>,
    /// Latency from an event's arrival to its window's row being visible online.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freshness: Option<Freshness>,
    pub dead_letter_file: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When this status was last written by the running pipeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
}

/// Shared between a running pipeline and whoever asks about it.
#[derive(Debug)]
pub struct Control {
    stop: AtomicBool,
    status: Mutex<PipelineStatus>,
    freshness: Mutex<Histogram<u64>>,
}

impl Control {
    fn new(status: PipelineStatus) -> Control {
        Control {
            stop: AtomicBool::new(false),
            status: Mutex::new(status),
            freshness: Mutex::new(Histogram::new(3).expect("3 significant figures is valid")),
        }
    }

    pub fn status(&self) -> PipelineStatus {
        let mut status = self.status.lock().expect("lock").clone();
        let h = self.freshness.lock().expect("lock");
        if !h.is_empty() {
            let ms = |us: u64| us as f64 / 1000.0;
            status.freshness = Some(Freshness {
                rows: h.len(),
                p50_ms: ms(h.value_at_quantile(0.5)),
                p99_ms: ms(h.value_at_quantile(0.99)),
                max_ms: ms(h.max()),
            });
        }
        status
    }

    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    fn update(&self, f: impl FnOnce(&mut PipelineStatus)) {
        f(&mut self.status.lock().expect("lock"));
    }

    /// Writes the status beside the checkpoint, so `kairos pipeline status` in another
    /// process can show it without opening the running pipeline's stores.
    fn persist(&self, dir: &Path) {
        let mut status = self.status();
        status.updated_at =
            Some(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
        let tmp = dir.join("status.json.tmp");
        let written = serde_json::to_vec_pretty(&status)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&tmp, bytes))
            .and_then(|()| std::fs::rename(&tmp, dir.join(STATUS_FILE)));
        if let Err(e) = written {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot write pipeline status");
        }
    }
}

const STATUS_FILE: &str = "status.json";
const STATUS_EVERY: Duration = Duration::from_secs(1);

/// A pipeline running on its thread.
#[derive(Debug)]
pub struct PipelineHandle {
    pub control: Arc<Control>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PipelineHandle {
    /// Asks the pipeline to take a last checkpoint and stop, and waits for it.
    pub async fn stop(mut self) -> PipelineStatus {
        self.control.request_stop();
        self.join().await
    }

    /// Waits for the pipeline to end by itself (a bounded source) or fail.
    pub async fn join(&mut self) -> PipelineStatus {
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        self.control.status()
    }

    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }
}

/// Where a pipeline version keeps its checkpoint, dead letters and stop request.
pub fn pipeline_dir(data_dir: &Path, name: &str, version: u32) -> PathBuf {
    data_dir
        .join("pipelines")
        .join(name)
        .join(format!("v{version}"))
}

/// The status of a pipeline not running in this process: as its runner last wrote it (which
/// may be another process running it now), or idle if it never ran.
pub fn status_on_disk(data_dir: &Path, def: &PipelineDef) -> PipelineStatus {
    let dir = pipeline_dir(data_dir, &def.spec.name, def.version);
    std::fs::read(dir.join(STATUS_FILE))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_else(|| initial_status(def, &dir, RunState::Idle))
}

/// Asks a pipeline running in another process on the same data dir to stop (it looks for the
/// request between chunks).
pub fn request_stop_on_disk(data_dir: &Path, def: &PipelineDef) -> Result<()> {
    let dir = pipeline_dir(data_dir, &def.spec.name, def.version);
    std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(dir.join("stop"), b""))
        .map_err(|e| StoreError::Internal(format!("cannot write {}: {e}", dir.display())))
}

fn initial_status(def: &PipelineDef, dir: &Path, state: RunState) -> PipelineStatus {
    PipelineStatus {
        name: def.spec.name.clone(),
        version: def.version,
        state,
        output_group: def.spec.output.feature_group.clone(),
        epoch: 0,
        events: 0,
        filtered: 0,
        late: 0,
        malformed: 0,
        rows_written: 0,
        open_windows: 0,
        watermark: None,
        positions: BTreeMap::new(),
        committed: BTreeMap::new(),
        freshness: None,
        dead_letter_file: dir.join("dead_letter.jsonl").display().to_string(),
        error: None,
        updated_at: None,
    }
}

/// Makes sure the output feature group exists with the pipeline's output columns; creates it
/// when absent. Returns its version.
pub async fn ensure_output(store: &FeatureStore, plan: &Plan) -> Result<u32> {
    let want = &plan.output;
    match store.group(&want.name, None) {
        Ok(group) => {
            let have = &group.spec;
            let mismatch = |what: String| {
                Err(StoreError::Conflict(format!(
                    "feature group '{}' v{} exists but does not fit pipeline '{}': {what}",
                    want.name, group.version, plan.spec.name
                )))
            };
            if have.primary_key != want.primary_key || have.event_time != want.event_time {
                return mismatch(format!(
                    "its key is {:?} with event time '{}', the pipeline writes key {:?} with event time '{}'",
                    have.primary_key, have.event_time, want.primary_key, want.event_time
                ));
            }
            for col in &want.columns {
                match have.column(&col.name) {
                    Some(c) if c.ty == col.ty => {}
                    Some(c) => {
                        return mismatch(format!(
                            "column '{}' is {}, the pipeline writes {}",
                            col.name, c.ty, col.ty
                        ));
                    }
                    None => return mismatch(format!("it has no column '{}'", col.name)),
                }
            }
            Ok(group.version)
        }
        Err(StoreError::NotFound(_)) => Ok(store.create_group(want.clone()).await?.version),
        Err(e) => Err(e),
    }
}

/// Where a run reads from and writes to.
#[derive(Debug, Clone)]
pub struct Placement {
    pub sink: Sink,
    /// The feature store, when it runs in this process (a feature-group source needs it).
    pub store: Option<FeatureStore>,
    /// The HTTP push streams, when they are in this process.
    pub streams: Option<Arc<Streams>>,
    /// The data dir holding the pipeline's partition checkpoints (when the storage is the data
    /// dir) and each worker's status, dead letters and stop request.
    pub data_dir: PathBuf,
    /// Where partition checkpoints live: the data dir, or the cluster's bucket, where any
    /// replica can take a partition over.
    pub storage: Storage,
    /// `None` for the pipeline's own run (in `kairos serve` or `kairos pipeline run`); a name
    /// for an extra worker, whose status, dead letters and stop request are kept apart.
    pub worker: Option<String>,
}

impl Placement {
    /// In the process that holds the feature store.
    pub fn local(store: FeatureStore, streams: Arc<Streams>) -> Placement {
        Placement {
            data_dir: store.config().data_dir.clone(),
            storage: store.storage().clone(),
            sink: Sink::Store(store.clone()),
            store: Some(store),
            streams: Some(streams),
            worker: None,
        }
    }
}

/// Where a worker keeps its status, dead letters and stop request.
pub fn worker_dir(pipeline_dir: &Path, worker: Option<&str>) -> PathBuf {
    match worker {
        None => pipeline_dir.to_owned(),
        Some(w) => pipeline_dir.join("workers").join(w),
    }
}

/// Starts pipeline `def` on a thread of its own.
pub async fn spawn(placement: Placement, def: PipelineDef) -> Result<PipelineHandle> {
    let plan = Arc::new(def.spec.plan()?);
    let group_version = placement.sink.ensure_output(&plan).await?;
    let dir = pipeline_dir(&placement.data_dir, &def.spec.name, def.version);
    let own = worker_dir(&dir, placement.worker.as_deref());
    std::fs::create_dir_all(&own)
        .map_err(|e| StoreError::Internal(format!("cannot create {}: {e}", own.display())))?;
    let _ = std::fs::remove_file(own.join("stop"));
    let control = Arc::new(Control::new(initial_status(&def, &own, RunState::Starting)));
    let runtime = tokio::runtime::Handle::current();
    let ctx = Run {
        placement,
        def,
        plan,
        group_version,
        dir,
        own,
        control: control.clone(),
    };
    let thread = std::thread::Builder::new()
        .name(format!("pipeline-{}", ctx.def.spec.name))
        .spawn(move || {
            let control = ctx.control.clone();
            let name = ctx.def.spec.name.clone();
            let own = ctx.own.clone();
            let result = runtime.block_on(ctx.run());
            match result {
                Ok(state) => control.update(|s| s.state = state),
                Err(e) => {
                    tracing::error!(pipeline = %name, error = %e, "pipeline failed");
                    control.update(|s| {
                        s.state = RunState::Failed;
                        s.error = Some(e.to_string());
                    });
                }
            }
            control.persist(&own);
        })
        .map_err(StoreError::internal)?;
    Ok(PipelineHandle {
        control,
        thread: Some(thread),
    })
}

struct Run {
    placement: Placement,
    def: PipelineDef,
    plan: Arc<Plan>,
    group_version: u32,
    /// The pipeline version's directory: partition checkpoints.
    dir: PathBuf,
    /// This worker's: status, dead letters, stop request.
    own: PathBuf,
    control: Arc<Control>,
}

/// A source partition this run holds, and its checkpoint.
struct Held {
    checkpoints: Checkpoints,
    /// Checkpoints of the partition so far.
    epoch: u64,
    /// The position of the next event to read.
    position: u64,
    /// The position in its last checkpoint.
    committed: u64,
    malformed: u64,
    /// When its last events were read (or it was taken on).
    last_events: Instant,
    /// Marked idle in the operator (quiet for the plan's idle timeout).
    idle: bool,
}

/// The state of a run between barriers.
struct Progress {
    op: WindowOperator,
    held: BTreeMap<u32, Held>,
    /// Partitions another worker took over from this one (its commit was fenced), not taken
    /// on again until the source revokes them.
    fenced: BTreeSet<u32>,
    dead: DeadLetters,
    persisted_at: Instant,
}

impl Progress {
    fn positions(&self) -> BTreeMap<u32, u64> {
        self.held.iter().map(|(p, h)| (*p, h.position)).collect()
    }

    fn committed_positions(&self) -> BTreeMap<u32, u64> {
        self.held.iter().map(|(p, h)| (*p, h.committed)).collect()
    }
}

/// How long a new owner of a partition waits for the previous one to let its checkpoint go.
const TAKEOVER_WAIT: Duration = Duration::from_secs(60);

fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

impl Run {
    fn name(&self) -> &str {
        &self.def.spec.name
    }

    fn group(&self) -> &str {
        &self.plan.output.name
    }

    async fn run(self) -> Result<RunState> {
        let mut progress = Progress {
            op: WindowOperator::new(self.plan.clone())?,
            held: BTreeMap::new(),
            fenced: BTreeSet::new(),
            dead: DeadLetters::open(&self.own.join("dead_letter.jsonl"))?,
            persisted_at: Instant::now(),
        };
        let mut source = Source::open(
            self.name(),
            &self.def.spec.source,
            self.plan.format,
            self.placement.store.as_ref(),
            self.placement.streams.as_deref(),
        )?;
        self.rebalance(&mut source, &mut progress).await?;
        self.control.update(|s| s.state = RunState::Running);
        let interval = self.plan.checkpoint_interval.as_std();
        let early = self.plan.early_emit.map(|d| d.as_std());
        let speed = match &self.def.spec.source {
            SourceSpec::File { speed, .. } => *speed,
            _ => None,
        };
        let mut pacer = speed.map(Pacer::new);
        let mut next_barrier = Instant::now() + interval;
        let mut next_early = early.map(|e| Instant::now() + e);
        let stop_file = self.own.join("stop");
        loop {
            if self.control.stop.load(Ordering::SeqCst) || stop_file.exists() {
                self.checkpoint(&mut progress).await?;
                source.checkpointed(&progress.committed_positions());
                self.report(&progress);
                let _ = std::fs::remove_file(&stop_file);
                return Ok(RunState::Stopped);
            }
            let due = next_early.map_or(next_barrier, |e| e.min(next_barrier));
            let wait = due
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(100));
            match source.poll(wait).await? {
                Poll::Chunk(chunk) if progress.fenced.contains(&chunk.partition) => {}
                Poll::Chunk(chunk) => {
                    let partition = chunk.partition;
                    let arrival = chunk.arrived_at.unwrap_or_else(now_micros);
                    let decoded = decode::decode(&self.plan, chunk.data);
                    self.dead_letters(&mut progress, partition, decoded.malformed)?;
                    if let Some(rows) = decoded.rows {
                        if let Some(p) = pacer.as_mut() {
                            p.wait_for(&rows, self.plan.event_time_index).await;
                        }
                        let before = progress.op.counts();
                        let refused = progress.op.process(&rows, partition, arrival)?;
                        for r in &refused {
                            progress
                                .dead
                                .write(&r.reason, &decode::row_json(&rows.slice(r.row, 1)))?;
                        }
                        let after = progress.op.counts();
                        telemetry::events(
                            self.name(),
                            after.events - before.events,
                            after.late - before.late,
                        );
                    }
                    if let Some(held) = progress.held.get_mut(&partition) {
                        held.position = chunk.next;
                        held.last_events = Instant::now();
                        held.idle = false;
                    }
                }
                Poll::Idle => {}
                Poll::End => {
                    progress.op.finish();
                    self.checkpoint(&mut progress).await?;
                    self.report(&progress);
                    return Ok(RunState::Finished);
                }
            }
            // Before any barrier: a partition taken away must not be checkpointed again.
            self.rebalance(&mut source, &mut progress).await?;
            if let Some(timeout) = self.plan.idle_timeout {
                for (p, held) in &mut progress.held {
                    if !held.idle && held.last_events.elapsed() >= timeout.as_std() {
                        held.idle = true;
                        progress.op.mark_idle(*p);
                    }
                }
            }
            let now = Instant::now();
            if let Some(at) = next_early
                && now >= at
            {
                progress.op.emit_early();
                next_early = early.map(|e| now + e);
            }
            if now >= next_barrier {
                self.checkpoint(&mut progress).await?;
                source.checkpointed(&progress.committed_positions());
                next_barrier = now + interval;
            }
            self.report(&progress);
        }
    }

    /// Lets go of the partitions the source took away and takes on those it assigned.
    async fn rebalance(&self, source: &mut Source, progress: &mut Progress) -> Result<()> {
        for p in source.take_revoked() {
            progress.fenced.remove(&p);
            if progress.held.remove(&p).is_some() {
                progress.op.remove_partition(p);
                telemetry::partition_let_go(self.name(), "revoked");
                tracing::info!(pipeline = self.name(), partition = p, "partition let go");
            }
        }
        for p in source.partitions() {
            if progress.held.contains_key(&p) || progress.fenced.contains(&p) {
                continue;
            }
            let held = self.take(p, &mut progress.op).await?;
            telemetry::partition_taken(self.name());
            source.resume(p, held.position)?;
            progress.held.insert(p, held);
        }
        Ok(())
    }

    /// Takes on partition `p` from its checkpoint: in the data dir, waits for its previous
    /// owner to let the checkpoint go; in a bucket, fences it by raising the owner epoch. Then
    /// delivers the rows it left pending and restores its windows.
    async fn take(&self, p: u32, op: &mut WindowOperator) -> Result<Held> {
        let storage = &self.placement.storage;
        let checkpoints = if storage.is_shared() {
            let folder = storage.area(&[
                "pipelines",
                self.name(),
                &format!("v{}", self.def.version),
                "partitions",
                &format!("p{p}"),
            ]);
            let owner = format!(
                "{} (process {})",
                self.placement.worker.as_deref().unwrap_or("server"),
                std::process::id()
            );
            Checkpoints::Shared(SharedCheckpoints::take_over(folder, &owner).await?)
        } else {
            let path = self.dir.join("partitions").join(format!("p{p}.redb"));
            Checkpoints::Local(LocalCheckpoints::open_when_free(&path, TAKEOVER_WAIT).await?)
        };
        let mut held = Held {
            checkpoints,
            epoch: 0,
            position: 0,
            committed: 0,
            malformed: 0,
            last_events: Instant::now(),
            idle: false,
        };
        match held.checkpoints.load().await? {
            Some((meta, windows)) => {
                self.recover(&meta).await?;
                op.restore_partition(
                    p,
                    windows.iter().map(|(k, v)| (k.as_slice(), v.as_slice())),
                    meta.max_event_time,
                    meta.counts,
                )?;
                held.epoch = meta.epoch;
                held.position = meta.position;
                held.committed = meta.position;
                held.malformed = meta.malformed;
                tracing::info!(
                    pipeline = self.name(),
                    partition = p,
                    epoch = meta.epoch,
                    position = meta.position,
                    "partition taken on from its checkpoint"
                );
            }
            None => op.add_partition(p),
        }
        Ok(held)
    }

    fn report(&self, progress: &Progress) {
        let counts = progress.op.counts();
        let watermark = progress.op.watermark();
        self.control.update(|s| {
            s.state = RunState::Running;
            s.epoch = progress.held.values().map(|h| h.epoch).sum();
            s.events = counts.events;
            s.filtered = counts.filtered;
            s.late = counts.late;
            s.rows_written = counts.emitted;
            s.open_windows = counts.open_windows;
            s.malformed = progress.held.values().map(|h| h.malformed).sum();
            s.positions = progress.positions();
            s.committed = progress.committed_positions();
            s.watermark = (watermark > i64::MIN && watermark < i64::MAX)
                .then(|| kairos_types::value::format_timestamp(watermark));
        });
    }

    fn dead_letters(
        &self,
        progress: &mut Progress,
        partition: u32,
        malformed: Vec<Malformed>,
    ) -> Result<()> {
        if malformed.is_empty() {
            return Ok(());
        }
        telemetry::malformed(self.name(), malformed.len() as u64);
        for m in &malformed {
            tracing::warn!(pipeline = self.name(), reason = %m.reason, "malformed event");
            progress.dead.write(&m.reason, &m.event)?;
        }
        if let Some(held) = progress.held.get_mut(&partition) {
            held.malformed += malformed.len() as u64;
        }
        Ok(())
    }

    /// Delivers a checkpoint's pending rows, unless the log has them already.
    async fn recover(&self, meta: &CheckpointMeta) -> Result<()> {
        let Some(pending) = &meta.pending else {
            return Ok(());
        };
        // The rows as the checkpoint holds them: an Arrow IPC stream in the output's schema.
        let batch = kairos_types::ingest::decode(
            &self.plan.output,
            kairos_types::Format::ArrowIpc,
            bytes::Bytes::from(pending.ipc.clone()),
        )
        .map_err(|e| StoreError::Internal(format!("checkpoint's pending rows: {e}")))?;
        self.placement
            .sink
            .append_once(
                self.group(),
                self.group_version,
                &batch,
                &pending.producer,
                &pending.search_from,
            )
            .await?;
        Ok(())
    }

    /// One barrier: for each partition held that moved, persist its state, position and rows
    /// together; then deliver the rows.
    async fn checkpoint(&self, progress: &mut Progress) -> Result<()> {
        let mut rows: BTreeMap<u32, Vec<kairos_stream::Emission>> = BTreeMap::new();
        for e in progress.op.take_emissions() {
            rows.entry(e.partition).or_default().push(e);
        }
        let deltas = progress.op.checkpoint_delta()?;
        let mut deliveries = Vec::new();
        let mut fenced = Vec::new();
        let mut dead_synced = false;
        for (p, delta) in deltas {
            let Some(held) = progress.held.get_mut(&p) else {
                continue;
            };
            let emissions = rows.remove(&p).unwrap_or_default();
            if delta.is_empty() && emissions.is_empty() && held.position == held.committed {
                continue;
            }
            // Dead letters of the events this checkpoint moves past are durable first: a
            // restart will not read those events again.
            if !dead_synced {
                progress.dead.sync()?;
                dead_synced = true;
            }
            let epoch = held.epoch + 1;
            let producer = producer_tag(self.name(), self.def.version, p, epoch);
            let mut delivery = None;
            let pending = if emissions.is_empty() {
                None
            } else {
                let batch = progress.op.to_batch(&emissions)?;
                let search_from = self
                    .placement
                    .sink
                    .log_ends(self.group(), self.group_version)
                    .await?;
                let pending = PendingOutput {
                    producer: producer.clone(),
                    search_from: search_from.clone(),
                    rows: batch.num_rows() as u64,
                    ipc: kairos_types::export::encode_ipc(&batch)
                        .map_err(StoreError::internal)?
                        .to_vec(),
                };
                delivery = Some((batch, producer, search_from, emissions));
                Some(pending)
            };
            let meta = CheckpointMeta {
                partition: p,
                epoch,
                position: held.position,
                max_event_time: delta.max_event_time,
                counts: delta.counts,
                malformed: held.malformed,
                pending,
            };
            match held.checkpoints.commit(&meta, &delta).await? {
                Committed::Written => {
                    held.epoch = epoch;
                    held.committed = held.position;
                    deliveries.extend(delivery);
                }
                // The new owner redoes this checkpoint's work from the last one it read;
                // nothing of it is delivered here.
                Committed::Fenced(reason) => {
                    tracing::warn!(pipeline = self.name(), partition = p, %reason, "partition lost to another worker; let go");
                    fenced.push(p);
                }
            }
        }
        for p in fenced {
            telemetry::partition_let_go(self.name(), "fenced");
            progress.held.remove(&p);
            progress.op.remove_partition(p);
            progress.fenced.insert(p);
        }
        for (batch, producer, search_from, emissions) in deliveries {
            kairos_types::fault::point("pipeline.after_commit");
            let ack = self
                .placement
                .sink
                .append_once(
                    self.group(),
                    self.group_version,
                    &batch,
                    &producer,
                    &search_from,
                )
                .await?;
            kairos_types::fault::point("pipeline.after_delivery");
            telemetry::rows_written(self.name(), self.group(), batch.num_rows() as u64);
            self.track_freshness(&emissions, ack);
        }
        telemetry::checkpoint(self.name());
        self.report(progress);
        // For other processes' `status`: once a second is enough (and the thread writes it
        // once more when the pipeline ends).
        if progress.persisted_at.elapsed() >= STATUS_EVERY {
            self.control.persist(&self.own);
            progress.persisted_at = Instant::now();
        }
        Ok(())
    }

    /// Once the rows are visible online, records how long after their newest event arrived.
    fn track_freshness(&self, emissions: &[kairos_stream::Emission], ack: InsertAck) {
        let arrivals: Vec<i64> = emissions.iter().map(|e| e.last_arrival).collect();
        let sink = self.placement.sink.clone();
        let control = self.control.clone();
        let (pipeline, group, version) = (
            self.name().to_owned(),
            self.group().to_owned(),
            self.group_version,
        );
        tokio::spawn(async move {
            if sink.wait_visible(&group, version, &ack).await.is_err() {
                return;
            }
            let visible = now_micros();
            let mut h = control.freshness.lock().expect("lock");
            for arrival in arrivals {
                let us = (visible - arrival).max(0) as u64;
                let _ = h.record(us);
                telemetry::freshness(&pipeline, &group, us as f64 / 1e6);
            }
        });
    }
}

/// Replays a file at `speed` times the pace its event times say.
struct Pacer {
    speed: f64,
    origin: Option<(i64, Instant)>,
}

impl Pacer {
    fn new(speed: f64) -> Pacer {
        Pacer {
            speed,
            origin: None,
        }
    }

    async fn wait_for(&mut self, rows: &RecordBatch, time_column: usize) {
        let times = rows
            .column(time_column)
            .as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
        let Some(first) = times.values().iter().copied().min() else {
            return;
        };
        let (t0, w0) = *self.origin.get_or_insert((first, Instant::now()));
        let due = w0 + Duration::from_secs_f64(((first - t0).max(0) as f64 / 1e6) / self.speed);
        tokio::time::sleep_until(due.into()).await;
    }
}

/// The dead-letter file: one JSON line per refused event, with the reason. Made durable before
/// each checkpoint that moves past the events, so no line is lost; written at least once (a
/// restart re-reads the events after its checkpoint and may write their lines again).
struct DeadLetters {
    path: PathBuf,
    file: std::io::BufWriter<std::fs::File>,
    unsynced: bool,
}

impl DeadLetters {
    fn open(path: &Path) -> Result<DeadLetters> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| StoreError::Internal(format!("cannot open {}: {e}", path.display())))?;
        Ok(DeadLetters {
            path: path.to_owned(),
            file: std::io::BufWriter::new(file),
            unsynced: false,
        })
    }

    fn write(&mut self, reason: &str, event: &str) -> Result<()> {
        let line = serde_json::json!({
            "at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "reason": reason,
            "event": event,
        });
        self.unsynced = true;
        writeln!(self.file, "{line}").map_err(|e| self.error(e))
    }

    fn sync(&mut self) -> Result<()> {
        if !self.unsynced {
            return Ok(());
        }
        self.file.flush().map_err(|e| self.error(e))?;
        self.file.get_ref().sync_data().map_err(|e| self.error(e))?;
        self.unsynced = false;
        Ok(())
    }

    fn error(&self, e: std::io::Error) -> StoreError {
        StoreError::Internal(format!("cannot write {}: {e}", self.path.display()))
    }
}
