//! Sources: where a pipeline's events come from, each with positions a checkpoint can hold.
//!
//! A position is a `u64` per partition: a byte offset in a text file, a row count in a Parquet
//! file, a record offset in a stream's or a feature group's log, a Kafka offset. Reading
//! resumes exactly at a checkpoint's positions, which is half of the exactly-once effect.
//!
//! A source's partitions come and go (a Kafka consumer group rebalances; the others have one
//! partition, 0, always). The runner learns of each assigned partition from
//! [`Source::partitions`], loads its checkpoint and calls [`Source::resume`] with its position;
//! nothing of a partition is handed out before that. A partition taken away is reported by
//! [`Source::take_revoked`].

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufRead, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use kairos_log::kafka::KafkaLog;
use kairos_log::{FeatureLog, SegmentLog, SegmentLogOptions};
use kairos_store::{FeatureStore, Result, StoreError};
use kairos_stream::SourceSpec;
use kairos_types::{Format, SystemClock};
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};

/// Bytes of a text file read per chunk when replaying as fast as possible: a few thousand
/// events, so barriers and stop requests are never far apart.
const CHUNK_BYTES: usize = 256 << 10;
/// Bytes of a stream's log read per poll.
const STREAM_BYTES: usize = 4 << 20;
/// Smaller chunks when paced, so pacing is smooth.
const PACED_CHUNK_BYTES: usize = 64 << 10;
const PARQUET_BATCH_ROWS: usize = 64 * 1024;

/// What a source read.
#[derive(Debug)]
pub enum ChunkData {
    /// Raw bodies in the pipeline's format; each piece is self-contained (a CSV piece starts
    /// with its header line).
    Raw(Vec<Bytes>),
    /// Rows already decoded (Parquet files, feature-group logs).
    Rows(Vec<RecordBatch>),
}

/// Events read from one partition, and the position after them.
#[derive(Debug)]
pub struct Chunk {
    pub partition: u32,
    pub data: ChunkData,
    pub next: u64,
    /// When the events reached Kairos (microseconds), if the source knows: a pushed body's
    /// append to its stream. Otherwise the time they are read counts as their arrival.
    pub arrived_at: Option<i64>,
}

/// The outcome of one poll.
#[derive(Debug)]
pub enum Poll {
    Chunk(Chunk),
    /// Nothing new within the wait.
    Idle,
    /// A bounded source has no more events.
    End,
}

/// The durable logs behind HTTP push streams: a `POST` is acknowledged once its body is in the
/// stream's log, so a pipeline that reads it later (or again after a crash) loses nothing.
///
/// On a single node a stream is a segment log in the data dir. When the feature groups' log is
/// on Kafka, a stream is a topic of that cluster (`<topic_prefix>stream.<name>`), each body one
/// message in one partition (so pushes keep their order, as in a segment log): any replica
/// takes a push, and the pipeline reads the topic like a Kafka source, in a consumer group that
/// hands the partition to another replica when its reader dies.
#[derive(Debug)]
pub struct Streams {
    store: FeatureStore,
    logs: Mutex<HashMap<String, StreamLog>>,
}

#[derive(Debug, Clone)]
enum StreamLog {
    Segment(Arc<SegmentLog>),
    Kafka(Arc<KafkaLog>),
}

/// Opens stream `name`'s log: a topic of `store`'s Kafka cluster when its log is on Kafka,
/// else a segment log in its data dir. Blocks on the brokers.
fn open_stream(store: &FeatureStore, name: &str) -> Result<StreamLog> {
    if !kairos_types::schema::is_identifier(name) {
        return Err(StoreError::BadRequest(format!(
            "stream name '{name}' must be letters, digits, '_' or '-', starting with a letter"
        )));
    }
    Ok(match store.kafka_topic(&format!("stream.{name}"))? {
        Some(topic) => StreamLog::Kafka(Arc::new(topic)),
        None => StreamLog::Segment(Arc::new(SegmentLog::open(
            store.config().data_dir.join("streams").join(name),
            SegmentLogOptions::default(),
            Arc::new(SystemClock),
        )?)),
    })
}

/// The key that picks the one partition every body of a stream goes to, so they stay in order.
const STREAM_KEY: &[u8] = b"stream";

impl Streams {
    /// The streams of `store`'s process: topics of its Kafka cluster when its log is on Kafka,
    /// segment logs in its data dir's `streams` otherwise.
    pub fn of(store: &FeatureStore) -> Streams {
        Streams {
            store: store.clone(),
            logs: Mutex::new(HashMap::new()),
        }
    }

    /// The log of stream `name`, opened on first use (a Kafka topic is made when missing,
    /// which blocks on the brokers).
    fn log(&self, name: &str) -> Result<StreamLog> {
        match self.cached(name) {
            Some(log) => Ok(log),
            None => Ok(self.keep(name, open_stream(&self.store, name)?)),
        }
    }

    /// [`Streams::log`] for the async callers: a topic is opened off the async workers.
    async fn log_async(&self, name: &str) -> Result<StreamLog> {
        if let Some(log) = self.cached(name) {
            return Ok(log);
        }
        let (store, owned) = (self.store.clone(), name.to_owned());
        let log = tokio::task::spawn_blocking(move || open_stream(&store, &owned))
            .await
            .map_err(StoreError::internal)??;
        Ok(self.keep(name, log))
    }

    fn cached(&self, name: &str) -> Option<StreamLog> {
        self.logs.lock().expect("lock").get(name).cloned()
    }

    /// Keeps `log` as stream `name`'s, unless another open got there first.
    fn keep(&self, name: &str, log: StreamLog) -> StreamLog {
        self.logs
            .lock()
            .expect("lock")
            .entry(name.to_owned())
            .or_insert(log)
            .clone()
    }

    /// Appends one body of events durably; returns its position in the stream.
    pub async fn push(&self, name: &str, body: Bytes) -> Result<u64> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Err(StoreError::BadRequest("empty body: no events".into()));
        }
        match self.log_async(name).await? {
            StreamLog::Segment(log) => Ok(log.append(1, body)?.wait().await?.first_offset),
            StreamLog::Kafka(log) => {
                let message = kairos_log::kafka::Message {
                    partition: kairos_log::kafka::partition_of(STREAM_KEY, log.partitions()),
                    payload: body,
                    numbers: Vec::new(),
                };
                let now = chrono::Utc::now().timestamp_micros();
                let landed = log
                    .append(std::slice::from_ref(&message), now, None)
                    .await
                    .map_err(|e| StoreError::Unavailable(e.to_string()))?;
                Ok(landed[0].offset)
            }
        }
    }

    /// The source a pipeline reads stream `name` through.
    fn source(&self, pipeline: &str, name: &str) -> Result<Source> {
        Ok(match self.log(name)? {
            StreamLog::Segment(log) => Source::Stream(StreamSource { log, position: 0 }),
            StreamLog::Kafka(log) => {
                let options = log.options();
                // As the log's own readers: the log's fetch wait (librdkafka's default of
                // 500 ms would be added to every event's way to the stores by a broker that
                // holds fetches to it, as the mock does). And a dead reader's partition goes
                // to another replica after the log's session timeout, as the materialisers'
                // do (librdkafka's default is 45 s).
                let fetch_wait = (
                    "fetch.wait.max.ms",
                    options.fetch_wait.as_millis().to_string(),
                );
                let mut properties = options.properties.clone();
                for (key, value) in options.membership().into_iter().chain([fetch_wait]) {
                    properties.entry(key.to_owned()).or_insert(value);
                }
                let mut source = KafkaSource::open(
                    &options.brokers,
                    log.topic(),
                    format!("kairos-{pipeline}"),
                    &properties,
                )?;
                // Each message is one pushed body, whole (a CSV body has its header), and
                // every body is in the partition of the stream's one key.
                source.whole_messages = true;
                source.only = Some(kairos_log::kafka::partition_of(
                    STREAM_KEY,
                    log.partitions(),
                ));
                Source::Kafka(source)
            }
        })
    }

    /// Closes every stream log (their writers flush and stop).
    pub fn close(&self) {
        for log in self.logs.lock().expect("lock").values() {
            if let StreamLog::Segment(log) = log {
                log.close();
            }
        }
    }
}

/// An open source.
pub enum Source {
    Text(TextFile),
    Parquet(ParquetFile),
    Stream(StreamSource),
    Group(GroupSource),
    Kafka(KafkaSource),
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Source::Text(_) => "Source::Text",
            Source::Parquet(_) => "Source::Parquet",
            Source::Stream(_) => "Source::Stream",
            Source::Group(_) => "Source::Group",
            Source::Kafka(_) => "Source::Kafka",
        })
    }
}

impl Source {
    /// Opens the source of `spec` for pipeline `pipeline`; it reads once its partitions are
    /// resumed. `store` is there for a feature-group source (a worker writing to a server has
    /// none, and reads only Kafka).
    pub fn open(
        pipeline: &str,
        spec: &SourceSpec,
        format: Format,
        store: Option<&FeatureStore>,
        streams: Option<&Streams>,
    ) -> Result<Source> {
        let local = |what: &str| {
            StoreError::BadRequest(format!(
                "a {what} source is read only where the feature store runs (kairos serve or kairos pipeline run)"
            ))
        };
        Ok(match spec {
            SourceSpec::File { .. } => Source::file(spec, format)?,
            SourceSpec::Http { stream, .. } => streams
                .ok_or_else(|| local("HTTP"))?
                .source(pipeline, stream)?,
            SourceSpec::Kafka {
                brokers,
                topic,
                group,
                properties,
                ..
            } => Source::Kafka(KafkaSource::open(
                brokers,
                topic,
                group
                    .clone()
                    .unwrap_or_else(|| format!("kairos-{pipeline}")),
                properties,
            )?),
            SourceSpec::FeatureGroup { name, version } => {
                let store = store.ok_or_else(|| local("feature group"))?;
                let partitions = store.log_partitions(name, *version)?;
                Source::Group(GroupSource {
                    store: store.clone(),
                    name: name.clone(),
                    version: *version,
                    positions: vec![0; partitions as usize],
                    next: 0,
                })
            }
        })
    }

    /// A file source alone (what benchmarks replay without a store), from its start.
    pub fn file(spec: &SourceSpec, format: Format) -> Result<Source> {
        match spec {
            SourceSpec::File { path, speed, .. } => Ok(match format {
                Format::Parquet => Source::Parquet(ParquetFile::open(path)?),
                _ => Source::Text(TextFile::open(path, format, speed.is_some())?),
            }),
            other => Err(StoreError::BadRequest(format!(
                "{other:?} is not a file source"
            ))),
        }
    }

    /// The partitions assigned to this reader now (a Kafka consumer's assignment changes).
    pub fn partitions(&self) -> Vec<u32> {
        match self {
            Source::Kafka(k) => k.assigned(),
            Source::Group(g) => (0..g.positions.len() as u32).collect(),
            _ => vec![0],
        }
    }

    /// Starts handing out `partition`'s events from `position` (its checkpoint's).
    pub fn resume(&mut self, partition: u32, position: u64) -> Result<()> {
        match self {
            Source::Text(f) => f.position = position.max(f.position),
            Source::Parquet(f) => f.resume(position)?,
            Source::Stream(s) => s.position = position,
            Source::Group(g) => g.positions[partition as usize] = position,
            Source::Kafka(k) => k.resume(partition, position),
        }
        Ok(())
    }

    /// The partitions taken away since the last call (a rebalance). Their events read but not
    /// handed out are dropped; whoever holds them next reads from their checkpoints.
    pub fn take_revoked(&mut self) -> Vec<u32> {
        match self {
            Source::Kafka(k) => k.take_revoked(),
            _ => Vec::new(),
        }
    }

    /// Tells the source that a checkpoint holding `positions` is durable (Kafka commits them
    /// for its consumer group, so a new owner of a partition starts there).
    pub fn checkpointed(&mut self, positions: &BTreeMap<u32, u64>) {
        if let Source::Kafka(k) = self {
            k.commit(positions);
        }
    }

    /// Reads what is there, waiting up to `wait` for events on unbounded sources.
    pub async fn poll(&mut self, wait: Duration) -> Result<Poll> {
        match self {
            Source::Text(f) => f.poll(),
            Source::Parquet(f) => f.poll(),
            Source::Stream(s) => s.poll(wait).await,
            Source::Group(g) => g.poll(wait).await,
            Source::Kafka(k) => k.poll(wait),
        }
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |e| StoreError::BadRequest(format!("cannot read {}: {e}", path.display()))
}

/// A CSV or JSON-lines file, read in line-aligned chunks.
pub struct TextFile {
    path: PathBuf,
    file: File,
    /// CSV: the header line, put in front of every chunk.
    header: Option<Bytes>,
    position: u64,
    chunk_bytes: usize,
}

impl TextFile {
    fn open(path: &str, format: Format, paced: bool) -> Result<TextFile> {
        let path = PathBuf::from(path);
        let mut file = File::open(&path).map_err(io_error(&path))?;
        let mut header = None;
        let mut start = 0;
        if format == Format::Csv {
            let mut first = Vec::new();
            std::io::BufReader::new(&mut file)
                .read_until(b'\n', &mut first)
                .map_err(io_error(&path))?;
            start = first.len() as u64;
            header = Some(Bytes::from(first));
        }
        Ok(TextFile {
            path,
            file,
            header,
            position: start,
            chunk_bytes: if paced {
                PACED_CHUNK_BYTES
            } else {
                CHUNK_BYTES
            },
        })
    }

    fn poll(&mut self) -> Result<Poll> {
        let path = self.path.clone();
        self.file
            .seek(SeekFrom::Start(self.position))
            .map_err(io_error(&path))?;
        let mut buf = Vec::with_capacity(self.chunk_bytes);
        loop {
            let before = buf.len();
            (&mut self.file)
                .take(self.chunk_bytes as u64)
                .read_to_end(&mut buf)
                .map_err(io_error(&path))?;
            let eof = buf.len() - before < self.chunk_bytes;
            if let Some(last_newline) = buf.iter().rposition(|b| *b == b'\n') {
                if !eof {
                    buf.truncate(last_newline + 1);
                }
                break;
            }
            if eof {
                break;
            }
        }
        if buf.is_empty() {
            return Ok(Poll::End);
        }
        self.position += buf.len() as u64;
        let body = match &self.header {
            Some(h) => {
                let mut with_header = Vec::with_capacity(h.len() + buf.len() + 1);
                with_header.extend_from_slice(h);
                if !h.ends_with(b"\n") {
                    with_header.push(b'\n');
                }
                with_header.extend_from_slice(&buf);
                with_header
            }
            None => buf,
        };
        Ok(Poll::Chunk(Chunk {
            partition: 0,
            data: ChunkData::Raw(vec![Bytes::from(body)]),
            next: self.position,
            arrived_at: None,
        }))
    }
}

/// A Parquet file, read in batches; the position counts rows.
pub struct ParquetFile {
    path: PathBuf,
    reader: ParquetRecordBatchReader,
    position: u64,
}

impl ParquetFile {
    fn open(path: &str) -> Result<ParquetFile> {
        let path = PathBuf::from(path);
        Ok(ParquetFile {
            reader: Self::reader(&path, 0)?,
            path,
            position: 0,
        })
    }

    fn resume(&mut self, rows_done: u64) -> Result<()> {
        if rows_done != self.position {
            self.reader = Self::reader(&self.path, rows_done)?;
            self.position = rows_done;
        }
        Ok(())
    }

    fn reader(path: &Path, rows_done: u64) -> Result<ParquetRecordBatchReader> {
        let file = File::open(path).map_err(io_error(path))?;
        let bad = |e: parquet::errors::ParquetError| {
            StoreError::BadRequest(format!("cannot read {}: {e}", path.display()))
        };
        ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(bad)?
            .with_batch_size(PARQUET_BATCH_ROWS)
            .with_offset(rows_done as usize)
            .build()
            .map_err(bad)
    }

    fn poll(&mut self) -> Result<Poll> {
        match self.reader.next() {
            None => Ok(Poll::End),
            Some(Err(e)) => Err(StoreError::BadRequest(format!("cannot read Parquet: {e}"))),
            Some(Ok(batch)) => {
                self.position += batch.num_rows() as u64;
                Ok(Poll::Chunk(Chunk {
                    partition: 0,
                    data: ChunkData::Rows(vec![batch]),
                    next: self.position,
                    arrived_at: None,
                }))
            }
        }
    }
}

/// An HTTP push stream's log; each record is one pushed body.
pub struct StreamSource {
    log: Arc<SegmentLog>,
    position: u64,
}

impl StreamSource {
    async fn poll(&mut self, wait: Duration) -> Result<Poll> {
        let mut end = self.log.subscribe();
        if *end.borrow_and_update() <= self.position {
            let position = self.position;
            let _ = tokio::time::timeout(wait, end.wait_for(|e| *e > position)).await;
        }
        let records = self.log.read_from(self.position, STREAM_BYTES)?;
        let Some(last) = records.last() else {
            return Ok(Poll::Idle);
        };
        self.position = last.end_offset();
        // The earliest append in the chunk: freshness is measured from the oldest event.
        let arrived_at = records.iter().map(|r| r.ingested_at).min();
        Ok(Poll::Chunk(Chunk {
            partition: 0,
            data: ChunkData::Raw(records.into_iter().map(|r| r.payload).collect()),
            next: self.position,
            arrived_at,
        }))
    }
}

/// Another feature group's log, each of its partitions a partition of the source: pipelines
/// chain.
pub struct GroupSource {
    store: FeatureStore,
    name: String,
    version: Option<u32>,
    /// Per partition of the group's log, the offset to read next.
    positions: Vec<u64>,
    /// The partition the next poll reads first: each gets its turn.
    next: usize,
}

impl GroupSource {
    async fn poll(&mut self, wait: Duration) -> Result<Poll> {
        let partitions = self.positions.len();
        let wait_each = wait / partitions as u32;
        for _ in 0..partitions {
            let at = self.next;
            self.next = (at + 1) % partitions;
            let records = self
                .store
                .read_log(
                    &self.name,
                    self.version,
                    at as u32,
                    self.positions[at],
                    STREAM_BYTES,
                    wait_each,
                )
                .await?;
            let Some(&(_, end, _)) = records.last() else {
                continue;
            };
            self.positions[at] = end;
            return Ok(Poll::Chunk(Chunk {
                partition: at as u32,
                data: ChunkData::Rows(records.into_iter().map(|(_, _, b)| b).collect()),
                next: end,
                arrived_at: None,
            }));
        }
        Ok(Poll::Idle)
    }
}

/// Messages read per poll of a Kafka source at most.
const KAFKA_BATCH: usize = 8192;

/// Notes the partitions a rebalance takes away as it happens (inside the consumer's `poll`),
/// so none is missed when it is taken and given back between two looks at the assignment.
#[derive(Default)]
struct RebalanceLog {
    revoked: Mutex<Vec<u32>>,
}

impl rdkafka::ClientContext for RebalanceLog {}

impl rdkafka::consumer::ConsumerContext for RebalanceLog {
    fn pre_rebalance(
        &self,
        _consumer: &rdkafka::consumer::BaseConsumer<Self>,
        rebalance: &rdkafka::consumer::Rebalance<'_>,
    ) {
        if let rdkafka::consumer::Rebalance::Revoke(list) = rebalance {
            let mut revoked = self.revoked.lock().expect("lock");
            revoked.extend(list.elements().iter().map(|e| e.partition() as u32));
        }
    }
}

type Consumer = rdkafka::consumer::BaseConsumer<RebalanceLog>;

/// A Kafka topic read in a consumer group. Offsets are committed to Kafka only after the
/// checkpoint that holds them is durable, so Kafka's committed offset is never ahead of a
/// checkpoint; messages before a checkpoint's position (re-delivered after a restart, or to a
/// partition's new owner) are skipped, so each message counts once.
pub struct KafkaSource {
    consumer: Consumer,
    topic: String,
    /// Per resumed partition, the offset of the next message to count.
    positions: BTreeMap<u32, u64>,
    /// Messages of partitions assigned but not resumed yet.
    held: BTreeMap<u32, Vec<HeldMessage>>,
    /// Chunks read but not yet handed out.
    pending: std::collections::VecDeque<Chunk>,
    /// What was last committed to Kafka, per partition.
    committed: BTreeMap<u32, u64>,
    /// Whether each message is a body of its own (an HTTP stream's push: a CSV body starts
    /// with its header) rather than lines to join.
    whole_messages: bool,
    /// The one partition that carries events, when only one does (an HTTP stream's): the
    /// others are never handed to the runner, so their silence holds no watermark back.
    only: Option<u32>,
}

impl KafkaSource {
    fn open(
        brokers: &str,
        topic: &str,
        group: String,
        properties: &BTreeMap<String, String>,
    ) -> Result<KafkaSource> {
        use rdkafka::consumer::Consumer as _;
        let kafka = |e: rdkafka::error::KafkaError| {
            StoreError::BadRequest(format!("Kafka topic '{topic}' at {brokers}: {e}"))
        };
        let mut config = rdkafka::ClientConfig::new();
        config.set("auto.offset.reset", "earliest");
        for (k, v) in properties {
            config.set(k, v);
        }
        // What exactly-once needs cannot be overridden.
        let consumer: Consumer = config
            .set("bootstrap.servers", brokers)
            .set("group.id", &group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .create_with_context(RebalanceLog::default())
            .map_err(kafka)?;
        consumer.subscribe(&[topic]).map_err(kafka)?;
        Ok(KafkaSource {
            consumer,
            topic: topic.to_owned(),
            positions: BTreeMap::new(),
            held: BTreeMap::new(),
            pending: std::collections::VecDeque::new(),
            committed: BTreeMap::new(),
            whole_messages: false,
            only: None,
        })
    }

    fn assigned(&self) -> Vec<u32> {
        use rdkafka::consumer::Consumer as _;
        self.consumer
            .assignment()
            .map(|tpl| {
                tpl.elements()
                    .iter()
                    .map(|e| e.partition() as u32)
                    .filter(|p| self.only.is_none_or(|only| only == *p))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn resume(&mut self, partition: u32, position: u64) {
        self.positions.insert(partition, position);
        let held = self.held.remove(&partition).unwrap_or_default();
        let mut run = PartitionRun::new(self.whole_messages);
        for m in held.into_iter().filter(|m| m.offset >= position) {
            run.add(m.offset, &m.payload, m.timestamp);
        }
        if run.next > position {
            self.queue(partition, run);
        }
    }

    /// Queues a partition's run of messages as one chunk.
    fn queue(&mut self, partition: u32, run: PartitionRun) {
        let (next, arrived_at) = (run.next, run.arrived_at);
        self.positions.insert(partition, next);
        self.pending.push_back(Chunk {
            partition,
            data: ChunkData::Raw(run.pieces()),
            next,
            arrived_at,
        });
    }

    fn take_revoked(&mut self) -> Vec<u32> {
        use rdkafka::consumer::Consumer as _;
        let mut revoked =
            std::mem::take(&mut *self.consumer.context().revoked.lock().expect("lock"));
        revoked.retain(|p| self.only.is_none_or(|only| only == *p));
        for p in &revoked {
            self.positions.remove(p);
            self.held.remove(p);
            self.committed.remove(p);
            self.pending.retain(|c| c.partition != *p);
        }
        revoked
    }

    fn poll(&mut self, wait: Duration) -> Result<Poll> {
        use rdkafka::message::Message;
        if let Some(chunk) = self.pending.pop_front() {
            return Ok(Poll::Chunk(chunk));
        }
        // Messages of one poll grouped by partition: one chunk is one partition's run.
        let mut by_partition: BTreeMap<u32, PartitionRun> = BTreeMap::new();
        let mut timeout = wait;
        for _ in 0..KAFKA_BATCH {
            let Some(message) = self.consumer.poll(timeout) else {
                break;
            };
            timeout = Duration::ZERO;
            let message = message.map_err(|e| {
                StoreError::Unavailable(format!("Kafka topic '{}': {e}", self.topic))
            })?;
            let partition = message.partition() as u32;
            let offset = message.offset() as u64;
            let payload = message.payload().unwrap_or_default();
            // When the message reached Kafka (or was produced, by the topic's timestamp type):
            // freshness is measured from there.
            let timestamp = message.timestamp().to_millis().map(|ms| ms * 1000);
            let Some(&position) = self.positions.get(&partition) else {
                // Assigned, but its checkpoint is not loaded yet: kept until it is.
                self.held.entry(partition).or_default().push(HeldMessage {
                    offset,
                    payload: payload.to_vec(),
                    timestamp,
                });
                continue;
            };
            if offset < position {
                continue; // counted before the checkpoint this reader resumed from
            }
            by_partition
                .entry(partition)
                .or_insert_with(|| PartitionRun::new(self.whole_messages))
                .add(offset, payload, timestamp);
        }
        // One chunk per partition (each has its own watermark); the rest wait here.
        for (partition, run) in by_partition {
            self.queue(partition, run);
        }
        Ok(self.pending.pop_front().map_or(Poll::Idle, Poll::Chunk))
    }

    /// Commits `positions` for the consumer group (asynchronously: a lost commit only means a
    /// new owner re-reads and skips a little). Only the partitions assigned now, and only those
    /// that moved: a commit from a consumer that is not (yet) a member of the group fails with
    /// "unknown member" and makes librdkafka restart its join, so committing at every barrier
    /// while joining would keep it from ever joining.
    fn commit(&mut self, positions: &BTreeMap<u32, u64>) {
        use rdkafka::consumer::{CommitMode, Consumer as _};
        let mut list = rdkafka::TopicPartitionList::new();
        for p in self.assigned() {
            let Some(offset) = positions.get(&p) else {
                continue;
            };
            if self.committed.get(&p) == Some(offset) {
                continue;
            }
            let _ = list.add_partition_offset(
                &self.topic,
                p as i32,
                rdkafka::Offset::Offset(*offset as i64),
            );
            self.committed.insert(p, *offset);
        }
        if list.count() == 0 {
            return;
        }
        if let Err(e) = self.consumer.commit(&list, CommitMode::Async) {
            tracing::warn!(topic = %self.topic, error = %e, "Kafka offset commit failed; the checkpoint still holds the positions");
        }
    }
}

impl Drop for KafkaSource {
    /// Leaves the consumer group now, so its partitions go to another member without waiting
    /// for the session to time out.
    fn drop(&mut self) {
        rdkafka::consumer::Consumer::unsubscribe(&self.consumer);
    }
}

/// A message of a partition whose checkpoint is not loaded yet.
struct HeldMessage {
    offset: u64,
    payload: Vec<u8>,
    /// Microseconds.
    timestamp: Option<i64>,
}

/// Consecutive messages of one partition, becoming one chunk.
struct PartitionRun {
    /// One JSON object per line, or (whole messages) each message's body as it came.
    body: Vec<u8>,
    whole: Option<Vec<Bytes>>,
    /// The offset after the last message.
    next: u64,
    /// The earliest message timestamp (microseconds).
    arrived_at: Option<i64>,
}

impl PartitionRun {
    fn new(whole_messages: bool) -> PartitionRun {
        PartitionRun {
            body: Vec::new(),
            whole: whole_messages.then(Vec::new),
            next: 0,
            arrived_at: None,
        }
    }

    fn add(&mut self, offset: u64, payload: &[u8], timestamp: Option<i64>) {
        self.next = offset + 1;
        if let Some(t) = timestamp {
            self.arrived_at = Some(self.arrived_at.map_or(t, |a| a.min(t)));
        }
        if payload.is_empty() {
            return;
        }
        if let Some(whole) = &mut self.whole {
            whole.push(Bytes::copy_from_slice(payload));
            return;
        }
        self.body.extend_from_slice(payload);
        if !payload.ends_with(b"\n") {
            self.body.push(b'\n');
        }
    }

    fn pieces(self) -> Vec<Bytes> {
        self.whole.unwrap_or_else(|| vec![Bytes::from(self.body)])
    }
}
