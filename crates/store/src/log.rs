//! A group version's log as the store uses it: the embedded segment log (one partition, in the
//! data dir) or a Kafka topic the replicas of a cluster share (`log.kind = "kafka"`, a
//! partition per key hash). Both give the materialisers the same thing — [`Span`]s, runs of
//! decoded rows at consecutive offsets of one partition — so the materialisers, `check` and
//! the stores do not know which log they follow.

use std::io::Cursor;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::ipc::reader::StreamReader;
use arrow::record_batch::RecordBatch;
use kairos_log::kafka::{KafkaLog, LoggedRow, PartitionReader, Row};
use kairos_log::{FeatureLog, SegmentLog};
use kairos_types::value::encode_key;
use kairos_types::{FeatureGroupSpec, LogPosition, Value};
use tokio::sync::watch;

use crate::error::{Result, StoreError};

/// The schema-metadata key of the producer tag on a segment-log record's Arrow IPC payload.
const PRODUCER_KEY: &str = "kairos.producer";

/// How long one read of a Kafka partition waits for a row before its materialiser looks
/// whether it should stop.
pub(crate) const KAFKA_POLL: Duration = Duration::from_millis(250);

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
                    let rows = reader
                        .lock()
                        .expect("reader lock")
                        .read_from(offset, max_bytes, KAFKA_POLL)?;
                    spans_of(&spec, partition, rows)
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
    pub(crate) ingested_at: i64,
    pub(crate) producer: Option<String>,
    pub(crate) batch: RecordBatch,
    /// What the rows took in the log: a step is sized by it.
    pub(crate) bytes: usize,
}

impl Span {
    pub(crate) fn end_offset(&self) -> u64 {
        self.first_offset + self.batch.num_rows() as u64
    }

    /// The stored position of the span's row `row` in a log of `partitions` partitions.
    pub(crate) fn position(&self, row: usize, partitions: u32) -> u64 {
        LogPosition::new(self.partition, self.first_offset + row as u64).encode(partitions)
    }
}

/// What an acknowledged append wrote: per partition it touched, one past its last row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Appended {
    /// The least and one past the greatest stored position of the rows.
    pub(crate) first_position: u64,
    pub(crate) end_position: u64,
    /// (partition, one past the last row written there), by partition.
    pub(crate) ends: Vec<(u32, u64)>,
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
    /// or acknowledged by every in-sync replica of its partitions (`acks=all`).
    pub(crate) async fn append(
        &self,
        spec: &FeatureGroupSpec,
        batch: &RecordBatch,
        producer: Option<&str>,
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
            GroupLog::Segment(log) => {
                let batch = match producer {
                    Some(tag) => tagged(batch, tag)?,
                    None => batch.clone(),
                };
                let payload =
                    kairos_types::export::encode_ipc(&batch).map_err(StoreError::internal)?;
                let ack = log.append(rows, payload)?.wait().await?;
                Ok(Appended {
                    first_position: ack.first_offset,
                    end_position: ack.end_offset,
                    ends: vec![(0, ack.end_offset)],
                })
            }
            GroupLog::Kafka(log) => {
                let rows = kafka_rows(spec, batch);
                let positions = log.append(&rows, ingested_at, producer).await?;
                let partitions = log.partitions();
                let encoded = || {
                    positions
                        .iter()
                        .map(|p| LogPosition::new(p.partition, p.offset).encode(partitions))
                };
                let mut ends = std::collections::BTreeMap::new();
                for p in &positions {
                    let end = ends.entry(p.partition).or_insert(0);
                    *end = (*end).max(p.offset + 1);
                }
                Ok(Appended {
                    first_position: encoded().min().unwrap_or(0),
                    end_position: encoded().max().map_or(0, |p| p + 1),
                    ends: ends.into_iter().collect(),
                })
            }
        }
    }

    /// One past the last durable offset of `partition`. Kafka's is a round trip to the
    /// partition's leader, so this blocks.
    pub(crate) fn end_offset(&self, partition: u32) -> Result<u64> {
        match self {
            GroupLog::Segment(log) => Ok(log.end_offset()),
            GroupLog::Kafka(log) => Ok(log.end_offset(partition)?),
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

/// A canonical batch as Kafka messages: each row keyed by its encoded primary key (which picks
/// its partition), its values the payload.
fn kafka_rows(spec: &FeatureGroupSpec, batch: &RecordBatch) -> Vec<Row> {
    let key_at = spec.key_indices();
    (0..batch.num_rows())
        .map(|row| {
            let values = crate::materialise::row_values(spec, batch, row);
            let key: Vec<Value> = key_at.iter().map(|&i| values[i].clone()).collect();
            Row {
                key: encode_key(&key).into(),
                payload: postcard::to_allocvec(&values)
                    .expect("values always serialize")
                    .into(),
            }
        })
        .collect()
}

/// Kafka rows back as spans: a span per run of rows from one append (same time and tag).
fn spans_of(spec: &FeatureGroupSpec, partition: u32, rows: Vec<LoggedRow>) -> Result<Vec<Span>> {
    let mut spans = Vec::new();
    let mut run: Vec<Vec<Value>> = Vec::new();
    let mut run_bytes = 0;
    let mut head: Option<(u64, i64, Option<String>)> = None;
    let finish = |head: (u64, i64, Option<String>),
                  run: &mut Vec<Vec<Value>>,
                  bytes: &mut usize|
     -> Result<Span> {
        let columns = spec
            .columns
            .iter()
            .enumerate()
            .map(|(i, col)| Value::to_array(col.ty, run.iter().map(|values| &values[i])))
            .collect();
        let batch =
            RecordBatch::try_new(spec.arrow_schema(), columns).map_err(StoreError::internal)?;
        run.clear();
        Ok(Span {
            partition,
            first_offset: head.0,
            ingested_at: head.1,
            producer: head.2,
            batch,
            bytes: std::mem::take(bytes),
        })
    };
    for row in rows {
        let values: Vec<Value> = postcard::from_bytes(&row.payload).map_err(|e| {
            StoreError::internal(format!(
                "partition {partition} offset {}: not a row of the group: {e}",
                row.offset
            ))
        })?;
        if values.len() != spec.columns.len() {
            return Err(StoreError::internal(format!(
                "partition {partition} offset {}: {} values for {} columns",
                row.offset,
                values.len(),
                spec.columns.len()
            )));
        }
        let tag = row.producer.map(|(tag, _)| tag);
        let continues = head.as_ref().is_some_and(|(first, at, producer)| {
            *first + run.len() as u64 == row.offset && *at == row.ingested_at && *producer == tag
        });
        if !continues && let Some(done) = head.take() {
            spans.push(finish(done, &mut run, &mut run_bytes)?);
        }
        if head.is_none() {
            head = Some((row.offset, row.ingested_at, tag));
        }
        run_bytes += row.payload.len();
        run.push(values);
    }
    if let Some(done) = head {
        spans.push(finish(done, &mut run, &mut run_bytes)?);
    }
    Ok(spans)
}
