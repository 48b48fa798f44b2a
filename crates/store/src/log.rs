//! A group version's log as the store uses it: the embedded segment log (one partition, in the
//! data dir) or a Kafka topic the replicas of a cluster share (`log.kind = "kafka"`, a
//! partition per key hash). Both give the materialisers the same thing — [`Span`]s, runs of
//! decoded rows at consecutive offsets of one partition — so the materialisers and the stores
//! do not know which log they follow.
//!
//! Both carry Arrow batches: a segment-log record is an append, and a Kafka message is a
//! partition's share of one (in messages of at most [`MESSAGE_BYTES`]). A row's offset counts
//! rows in a segment log; in a Kafka partition it is its message's offset and its place in the
//! message, `message << ROW_BITS | row`, so offsets there grow with the log but leave gaps
//! (`check` and the lag know it, through [`GroupLog::row_bits`]).

use std::collections::BTreeMap;
use std::io::Cursor;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::array::UInt32Array;
use arrow::ipc::reader::StreamReader;
use arrow::record_batch::RecordBatch;
use kairos_log::kafka::{KafkaLog, LoggedMessage, Message, PartitionReader, Tag, partition_of};
use kairos_log::{FeatureLog, SegmentLog};
use kairos_types::{FeatureGroupSpec, LogPosition};
use tokio::sync::watch;

use crate::error::{Result, StoreError};

/// The schema-metadata key of the producer tag on a segment-log record's Arrow IPC payload.
const PRODUCER_KEY: &str = "kairos.producer";

/// How long one read of a Kafka partition waits for a row before its materialiser looks
/// whether it should stop.
pub(crate) const KAFKA_POLL: Duration = Duration::from_millis(250);

/// A Kafka row's offset is `message << ROW_BITS | its place in the message`.
pub(crate) const ROW_BITS: u32 = 16;
/// The rows one Kafka message carries at most.
const MESSAGE_ROWS: usize = 1 << ROW_BITS;
/// About how many bytes of Arrow data one Kafka message carries: well below the 1 MB a Kafka
/// topic takes by default, and enough that a bulk append is a few hundred messages.
const MESSAGE_BYTES: usize = 512 << 10;

/// The offset of row `row` of Kafka message `message`.
fn row_offset(message: u64, row: usize) -> u64 {
    message << ROW_BITS | row as u64
}

/// How long a search for a tagged batch waits for a partition to give back rows below its
/// high watermark before it fails.
const SEARCH_WAIT: Duration = Duration::from_secs(10);

/// One follower's reader of one partition of a group's log.
pub(crate) enum LogReader {
    Segment(Arc<SegmentLog>),
    Kafka {
        partition: u32,
        reader: Arc<Mutex<PartitionReader>>,
    },
}

impl LogReader {
    /// The partition's rows from `offset` on, up to about `max_bytes`, decoded; a Kafka read
    /// waits up to [`KAFKA_POLL`] for the first.
    pub(crate) async fn read(
        &self,
        spec: &FeatureGroupSpec,
        offset: u64,
        max_bytes: usize,
    ) -> Result<Vec<Span>> {
        let read: Box<dyn FnOnce() -> Result<Vec<Span>> + Send> = match self {
            LogReader::Segment(log) => {
                let log = log.clone();
                Box::new(move || segment_spans(&log, offset, max_bytes))
            }
            LogReader::Kafka { partition, reader } => {
                let (partition, reader, spec) = (*partition, reader.clone(), spec.clone());
                Box::new(move || {
                    let messages = reader.lock().expect("reader lock").read_from(
                        offset >> ROW_BITS,
                        max_bytes,
                        KAFKA_POLL,
                    )?;
                    spans_of(&spec, partition, offset, messages)
                })
            }
        };
        tokio::task::spawn_blocking(read)
            .await
            .map_err(StoreError::internal)?
    }
}

/// The segment log's records from `offset` on, decoded.
fn segment_spans(log: &SegmentLog, offset: u64, max_bytes: usize) -> Result<Vec<Span>> {
    let mut spans = Vec::new();
    for record in log.read_from(offset, max_bytes)? {
        let reader = StreamReader::try_new(Cursor::new(record.payload.clone()), None)
            .map_err(StoreError::internal)?;
        let producer = reader.schema().metadata().get(PRODUCER_KEY).cloned();
        let mut first_offset = record.first_offset;
        let mut bytes = record.payload.len();
        for batch in reader {
            let batch = batch.map_err(StoreError::internal)?;
            let rows = batch.num_rows() as u64;
            spans.push(Span {
                partition: 0,
                first_offset,
                end_offset: first_offset + rows,
                ingested_at: record.ingested_at,
                producer: producer.clone(),
                batch,
                bytes: std::mem::take(&mut bytes),
            });
            first_offset += rows;
        }
    }
    Ok(spans)
}

/// Rows of one partition at consecutive offsets from `first_offset`, decoded into the group's
/// canonical schema, with when they were appended and the producer tag of their append.
#[derive(Debug, Clone)]
pub(crate) struct Span {
    pub(crate) partition: u32,
    pub(crate) first_offset: u64,
    /// Where a read goes on after the span: one past its last row, or — for a span that ends
    /// a Kafka message — the next message's first row.
    pub(crate) end_offset: u64,
    pub(crate) ingested_at: i64,
    pub(crate) producer: Option<String>,
    pub(crate) batch: RecordBatch,
    /// What the rows took in the log: a step is sized by it.
    pub(crate) bytes: usize,
}

impl Span {
    /// The stored position of the span's row `row` in a log of `partitions` partitions.
    pub(crate) fn position(&self, row: usize, partitions: u32) -> u64 {
        LogPosition::new(self.partition, self.first_offset + row as u64).encode(partitions)
    }
}

/// What an acknowledged append wrote: per partition it touched, one past its last row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Appended {
    pub(crate) rows: u64,
    /// The least and one past the greatest stored position of the rows.
    pub(crate) first_position: u64,
    pub(crate) end_position: u64,
    /// (partition, where it goes on after the rows written there), by partition.
    pub(crate) ends: Vec<(u32, u64)>,
}

impl Appended {
    /// Rows that landed at `positions`, (partition, offset), in `log`: a partition's end is
    /// past its last row — on Kafka, past that row's message.
    fn at(positions: impl IntoIterator<Item = (u32, u64)>, log: &GroupLog) -> Appended {
        let (partitions, bits) = (log.partitions(), log.row_bits());
        let mut rows = 0;
        let (mut first, mut end) = (u64::MAX, 0);
        let mut ends = BTreeMap::new();
        for (partition, offset) in positions {
            rows += 1;
            let position = LogPosition::new(partition, offset).encode(partitions);
            first = first.min(position);
            end = end.max(position + 1);
            let partition_end = ends.entry(partition).or_insert(0);
            *partition_end = (*partition_end).max(((offset >> bits) + 1) << bits);
        }
        Appended {
            rows,
            first_position: first.min(end),
            end_position: end,
            ends: ends.into_iter().collect(),
        }
    }
}

/// A tagged append (pipelines' `append_once`): its producer, and what of the batch a search
/// of the log found there already.
#[derive(Debug)]
pub(crate) struct Tagged<'a> {
    pub(crate) producer: &'a str,
    pub(crate) landed: Landed,
}

/// The rows of a tagged batch found in the log.
#[derive(Debug, Default)]
pub(crate) struct Landed {
    /// The batch's rows, as its tag says, when any of it was found.
    pub(crate) batch_rows: Option<u32>,
    /// Where each row found is, (partition, offset), by its number in the batch.
    pub(crate) at: BTreeMap<u32, (u32, u64)>,
}

impl Landed {
    /// Whether the whole batch is in the log.
    pub(crate) fn complete(&self) -> bool {
        self.batch_rows
            .is_some_and(|rows| self.at.len() == rows as usize)
    }

    /// The rows found, as an append of them to `log`.
    pub(crate) fn appended(&self, log: &GroupLog) -> Appended {
        Appended::at(self.at.values().copied(), log)
    }
}

#[derive(Debug, Clone)]
pub(crate) enum GroupLog {
    Segment(Arc<SegmentLog>),
    Kafka(Arc<KafkaLog>),
}

impl GroupLog {
    pub(crate) fn partitions(&self) -> u32 {
        match self {
            GroupLog::Segment(_) => 1,
            GroupLog::Kafka(log) => log.partitions(),
        }
    }

    /// The low bits of a row's offset that number it within its Kafka message (none in a
    /// segment log, whose offsets count rows).
    pub(crate) fn row_bits(&self) -> u32 {
        match self {
            GroupLog::Segment(_) => 0,
            GroupLog::Kafka(_) => ROW_BITS,
        }
    }

    /// How far `applied` is behind `end`, two offsets of one partition, in the log's own
    /// units: rows of a segment log, messages of a Kafka partition.
    pub(crate) fn lag(&self, applied: u64, end: u64) -> u64 {
        let bits = self.row_bits();
        (end >> bits).saturating_sub(applied >> bits)
    }

    /// What the log is, for messages: `log` or `Kafka topic <name>`.
    pub(crate) fn describe(&self) -> String {
        match self {
            GroupLog::Segment(_) => "log".into(),
            GroupLog::Kafka(log) => format!("Kafka topic {}", log.topic()),
        }
    }

    /// The segment log, where the caller needs one partition's offsets to be the group's.
    pub(crate) fn segment(&self) -> Option<&Arc<SegmentLog>> {
        match self {
            GroupLog::Segment(log) => Some(log),
            GroupLog::Kafka(_) => None,
        }
    }

    /// Appends a canonical batch and answers once all of it is durable: on disk (`fsync`),
    /// or acknowledged by every in-sync replica of its partitions (`acks=all`). A tagged
    /// batch part of which landed already (a Kafka append cut short) appends the rest; the
    /// answer is the whole batch's either way.
    pub(crate) async fn append(
        &self,
        spec: &FeatureGroupSpec,
        batch: &RecordBatch,
        tag: Option<&Tagged<'_>>,
        ingested_at: i64,
    ) -> Result<Appended> {
        let rows = u32::try_from(batch.num_rows()).map_err(|_| {
            StoreError::BadRequest(format!(
                "batch of {} rows is over the limit of {} rows",
                batch.num_rows(),
                u32::MAX
            ))
        })?;
        match self {
            // A segment-log record is written whole or not at all: a search finds all of a
            // tagged batch or none of it.
            GroupLog::Segment(log) => {
                let batch = match tag {
                    Some(tag) => tagged(batch, tag.producer)?,
                    None => batch.clone(),
                };
                let payload =
                    kairos_types::export::encode_ipc(&batch).map_err(StoreError::internal)?;
                let ack = log.append(rows, payload)?.wait().await?;
                Ok(Appended {
                    rows: u64::from(rows),
                    first_position: ack.first_offset,
                    end_position: ack.end_offset,
                    ends: vec![(0, ack.end_offset)],
                })
            }
            // A partition's messages of a batch land in order, so what is missing of a batch
            // cut short is the tail of each partition's share: appended now, it lands in
            // order after what did.
            GroupLog::Kafka(log) => {
                let landed = tag.map(|tag| &tag.landed.at);
                let missing = |number| landed.is_none_or(|at| !at.contains_key(&number));
                let messages = kafka_messages(spec, batch, log.partitions(), missing)?;
                let kafka_tag = tag.map(|tag| Tag {
                    producer: tag.producer,
                    rows,
                });
                let positions = log.append(&messages, ingested_at, kafka_tag).await?;
                let sent = positions.iter().zip(&messages).flat_map(|(at, message)| {
                    (0..message.numbers.len()).map(|row| (at.partition, row_offset(at.offset, row)))
                });
                let found = landed.into_iter().flat_map(|at| at.values().copied());
                Ok(Appended::at(sent.chain(found), self))
            }
        }
    }

    /// Searches the log after `from` (per partition, the ends it had before the batch was
    /// first appended) for the rows tagged `producer`.
    pub(crate) async fn find_tagged(
        &self,
        spec: &FeatureGroupSpec,
        producer: &str,
        from: &[u64],
    ) -> Result<Landed> {
        let from_partition = |partition: u32| from.get(partition as usize).copied().unwrap_or(0);
        match self {
            GroupLog::Segment(log) => find_record(spec, log, producer, from_partition(0)).await,
            GroupLog::Kafka(log) => {
                let log = log.clone();
                let producer = producer.to_owned();
                let from: Vec<u64> = (0..log.partitions()).map(from_partition).collect();
                tokio::task::spawn_blocking(move || find_rows(&log, &producer, &from))
                    .await
                    .map_err(StoreError::internal)?
            }
        }
    }

    /// One past the last durable offset of `partition` (on Kafka, the first row of the
    /// message to come). Kafka's is a round trip to the partition's leader, so this blocks.
    pub(crate) fn end_offset(&self, partition: u32) -> Result<u64> {
        match self {
            GroupLog::Segment(log) => Ok(log.end_offset()),
            GroupLog::Kafka(log) => Ok(row_offset(log.end_offset(partition)?, 0)),
        }
    }

    /// Every partition's end, as (partition, end), off the async workers.
    pub(crate) async fn end_offsets(&self) -> Result<Vec<(u32, u64)>> {
        match self {
            GroupLog::Segment(log) => Ok(vec![(0, log.end_offset())]),
            GroupLog::Kafka(_) => {
                let log = self.clone();
                tokio::task::spawn_blocking(move || {
                    (0..log.partitions())
                        .map(|p| Ok((p, log.end_offset(p)?)))
                        .collect::<Result<Vec<_>>>()
                })
                .await
                .map_err(StoreError::internal)?
            }
        }
    }

    /// The rows of `partition` from `offset` on, up to about `max_bytes`, decoded; waits up
    /// to `wait` for the first when there are none yet.
    pub(crate) async fn read(
        &self,
        spec: &FeatureGroupSpec,
        partition: u32,
        offset: u64,
        max_bytes: usize,
        wait: Duration,
    ) -> Result<Vec<Span>> {
        match self {
            GroupLog::Segment(log) => {
                let mut end = log.subscribe();
                if *end.borrow_and_update() <= offset {
                    let _ = tokio::time::timeout(wait, end.wait_for(|e| *e > offset)).await;
                }
                LogReader::Segment(log.clone())
                    .read(spec, offset, max_bytes)
                    .await
            }
            GroupLog::Kafka(log) => {
                let (log, spec) = (log.clone(), spec.clone());
                tokio::task::spawn_blocking(move || {
                    let messages = log.read_from(partition, offset >> ROW_BITS, max_bytes, wait)?;
                    spans_of(&spec, partition, offset, messages)
                })
                .await
                .map_err(StoreError::internal)?
            }
        }
    }

    /// A receiver that sees the end offset move, where the log can tell (the segment log);
    /// a Kafka partition is long-polled by its reads instead.
    pub(crate) fn subscribe(&self) -> Option<watch::Receiver<u64>> {
        self.segment().map(|log| log.subscribe())
    }

    /// A reader of `partition` for one follower: a Kafka partition's has a consumer of its
    /// own (followers at different offsets must not share one).
    pub(crate) fn reader(&self, partition: u32) -> Result<LogReader> {
        Ok(match self {
            GroupLog::Segment(log) => LogReader::Segment(log.clone()),
            GroupLog::Kafka(log) => LogReader::Kafka {
                partition,
                reader: Arc::new(Mutex::new(log.reader(partition)?)),
            },
        })
    }

    /// Closes the log: the segment log's writer finishes and syncs.
    pub(crate) async fn close(&self) {
        if let GroupLog::Segment(log) = self {
            let log = log.clone();
            let _ = tokio::task::spawn_blocking(move || log.close()).await;
        }
    }
}

/// The segment-log record tagged `producer` at or after `from`, if there is one.
async fn find_record(
    spec: &FeatureGroupSpec,
    log: &Arc<SegmentLog>,
    producer: &str,
    from: u64,
) -> Result<Landed> {
    let mut offset = from;
    let reader = LogReader::Segment(log.clone());
    while offset < log.end_offset() {
        let spans = reader.read(spec, offset, 8 << 20).await?;
        let Some(last) = spans.last() else {
            break;
        };
        offset = last.end_offset;
        // A record decodes into one span or more, all with its tag: the first starts it, and
        // the rows up to the next record's are its.
        let mut tagged = spans
            .iter()
            .skip_while(|span| span.producer.as_deref() != Some(producer));
        if let Some(first) = tagged.next() {
            let end = tagged
                .take_while(|span| span.producer.as_deref() == Some(producer))
                .last()
                .map_or(first.end_offset, |span| span.end_offset);
            let rows = u32::try_from(end - first.first_offset).map_err(StoreError::internal)?;
            return Ok(Landed {
                batch_rows: Some(rows),
                at: (0..rows)
                    .map(|n| (n, (0, first.first_offset + u64::from(n))))
                    .collect(),
            });
        }
    }
    Ok(Landed::default())
}

/// The Kafka rows tagged `producer` in each partition from `from[partition]` to its end.
fn find_rows(log: &KafkaLog, producer: &str, from: &[u64]) -> Result<Landed> {
    let mut landed = Landed::default();
    for (partition, &start) in (0..).zip(from) {
        let end = log.end_offset(partition)?;
        let mut message = start >> ROW_BITS;
        while message < end {
            let messages = log.read_from(partition, message, 8 << 20, SEARCH_WAIT)?;
            let Some(last) = messages.last() else {
                return Err(StoreError::Unavailable(format!(
                    "Kafka topic {}: partition {partition} gave back no messages from offset \
                     {message} within {SEARCH_WAIT:?}, below its end {end}",
                    log.topic()
                )));
            };
            message = last.offset + 1;
            for logged in messages {
                if let Some(tag) = logged.tag.filter(|tag| tag.producer == producer) {
                    landed.batch_rows = Some(tag.rows);
                    for (row, number) in tag.numbers.into_iter().enumerate() {
                        landed
                            .at
                            .insert(number, (partition, row_offset(logged.offset, row)));
                    }
                }
            }
        }
    }
    Ok(landed)
}

/// `batch` with the producer tag in its schema's metadata.
fn tagged(batch: &RecordBatch, producer: &str) -> Result<RecordBatch> {
    let mut metadata = batch.schema().metadata().clone();
    metadata.insert(PRODUCER_KEY.into(), producer.into());
    let schema = Arc::new(batch.schema().as_ref().clone().with_metadata(metadata));
    batch
        .clone()
        .with_schema(schema)
        .map_err(StoreError::internal)
}

/// The rows of a canonical batch that `send` picks (by their number in the batch), as Kafka
/// messages: each partition's share, in batch order, as Arrow batches of at most
/// [`MESSAGE_ROWS`] rows and about [`MESSAGE_BYTES`].
fn kafka_messages(
    spec: &FeatureGroupSpec,
    batch: &RecordBatch,
    partitions: u32,
    send: impl Fn(u32) -> bool,
) -> Result<Vec<Message>> {
    let mut shares = vec![Vec::new(); partitions as usize];
    for number in (0..batch.num_rows() as u32).filter(|&n| send(n)) {
        let key = crate::materialise::row_key(spec, batch, number as usize);
        shares[partition_of(&key, partitions) as usize].push(number);
    }
    let row_bytes = batch.get_array_memory_size() / batch.num_rows().max(1);
    let per_message = (MESSAGE_BYTES / row_bytes.max(1)).clamp(1, MESSAGE_ROWS);
    let mut messages = Vec::new();
    for (partition, share) in (0..).zip(shares) {
        for numbers in share.chunks(per_message) {
            let rows =
                arrow::compute::take_record_batch(batch, &UInt32Array::from(numbers.to_vec()))
                    .map_err(StoreError::internal)?;
            messages.push(Message {
                partition,
                payload: kairos_types::export::encode_ipc(&rows).map_err(StoreError::internal)?,
                numbers: numbers.to_vec(),
            });
        }
    }
    Ok(messages)
}

/// Kafka messages of `partition` back as spans, from row offset `from` on (rows of the first
/// message before it are left out): a span per message.
fn spans_of(
    spec: &FeatureGroupSpec,
    partition: u32,
    from: u64,
    messages: Vec<LoggedMessage>,
) -> Result<Vec<Span>> {
    let mut spans = Vec::new();
    for message in messages {
        let not_rows = |e: &dyn std::fmt::Display| {
            StoreError::internal(format!(
                "Kafka partition {partition} offset {}: not rows of the group: {e}",
                message.offset
            ))
        };
        let reader = StreamReader::try_new(Cursor::new(message.payload.clone()), None)
            .map_err(|e| not_rows(&e))?;
        if reader.schema().fields() != spec.arrow_schema().fields() {
            return Err(not_rows(&"its columns are not the group's"));
        }
        let batches = reader
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| not_rows(&e))?;
        let (mut row, mut bytes) = (0, message.payload.len());
        for batch in batches {
            let (first, rows) = (row_offset(message.offset, row), batch.num_rows());
            row += rows;
            let skip = from.saturating_sub(first).min(rows as u64) as usize;
            if skip == rows {
                continue;
            }
            spans.push(Span {
                partition,
                first_offset: first + skip as u64,
                end_offset: first + rows as u64,
                ingested_at: message.ingested_at,
                producer: message.tag.as_ref().map(|tag| tag.producer.clone()),
                batch: batch.slice(skip, rows - skip),
                bytes: std::mem::take(&mut bytes),
            });
        }
        // The message's last span ends it: a read goes on at the next message.
        if let Some(last) = spans
            .last_mut()
            .filter(|span| span.first_offset >> ROW_BITS == message.offset)
        {
            last.end_offset = row_offset(message.offset + 1, 0);
        }
    }
    Ok(spans)
}

#[cfg(test)]
mod tests {
    use kairos_log::kafka::KafkaLogOptions;
    use kairos_types::Format;
    use rdkafka::mocking::MockCluster;

    use super::*;

    /// A tagged batch of which only part landed (an append cut short) is found as that part,
    /// and completed by appending the rest: every row of it once, each partition's in order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_tagged_batch_cut_short_is_completed_once() {
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic("fg.g.v1", 4, 1).unwrap();
        let options = KafkaLogOptions::new(cluster.bootstrap_servers(), 4);
        let log = GroupLog::Kafka(Arc::new(KafkaLog::open("fg.g.v1", options).unwrap()));
        let spec: FeatureGroupSpec = serde_json::from_value(serde_json::json!({
            "name": "g", "primary_key": ["k"], "event_time": "ts",
            "columns": [{"name": "k", "type": "int64"}, {"name": "ts", "type": "timestamp"},
                        {"name": "x", "type": "float64"}]
        }))
        .unwrap();
        let rows: String = (0..40)
            .map(|i| {
                format!(
                    "{{\"k\": {}, \"ts\": {}, \"x\": {i}}}\n",
                    i % 10,
                    1_700_000_000 + i
                )
            })
            .collect();
        let decoded = kairos_types::ingest::decode(&spec, Format::JsonLines, rows.into()).unwrap();
        let batch = kairos_types::ingest::conform(&spec, &decoded).unwrap();
        let at = 1_700_000_100_000_000;

        // The first attempt lands rows 0..25: sent as a retry that found 25..40 already there.
        let first = Tagged {
            producer: "pipeline/p/v1/p0/1",
            landed: Landed {
                batch_rows: Some(40),
                at: (25..40).map(|n| (n, (0, 0))).collect(),
            },
        };
        log.append(&spec, &batch, Some(&first), at).await.unwrap();

        let landed = log
            .find_tagged(&spec, first.producer, &[0; 4])
            .await
            .unwrap();
        assert!(!landed.complete());
        assert_eq!(
            landed.at.keys().copied().collect::<Vec<_>>(),
            (0..25).collect::<Vec<_>>()
        );
        let retry = Tagged {
            producer: first.producer,
            landed,
        };
        let appended = log.append(&spec, &batch, Some(&retry), at).await.unwrap();
        assert_eq!(appended.rows, 40);

        let again = log
            .find_tagged(&spec, first.producer, &[0; 4])
            .await
            .unwrap();
        assert!(again.complete());
        assert_eq!(again.appended(&log), appended);
        // Each partition holds its share of the batch once, in the batch's order.
        let GroupLog::Kafka(kafka) = &log else {
            unreachable!()
        };
        let mut total = 0;
        for partition in 0..4 {
            let end = kafka.end_offset(partition).unwrap();
            if end == 0 {
                continue;
            }
            let read = kafka
                .read_from(partition, 0, 1 << 20, Duration::from_secs(10))
                .unwrap();
            assert_eq!(read.len() as u64, end, "partition {partition}");
            let numbers: Vec<u32> = read
                .iter()
                .flat_map(|m| m.tag.as_ref().unwrap().numbers.clone())
                .collect();
            assert!(numbers.windows(2).all(|w| w[0] < w[1]), "{numbers:?}");
            total += numbers.len();
        }
        assert_eq!(total, 40);
        // A search from past the rows finds none of them.
        let ends: Vec<u64> = log
            .end_offsets()
            .await
            .unwrap()
            .iter()
            .map(|e| e.1)
            .collect();
        let none = log.find_tagged(&spec, first.producer, &ends).await.unwrap();
        assert!(none.batch_rows.is_none() && none.at.is_empty());
    }
}
