//! Sources: where a pipeline's events come from, each with positions a checkpoint can hold.
//!
//! A position is a `u64` per partition: a byte offset in a text file, a row count in a Parquet
//! file, a record offset in a stream's or a feature group's log. Reading resumes exactly at a
//! checkpoint's positions, which is half of the exactly-once effect.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::record_batch::RecordBatch;
use bytes::Bytes;
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
#[derive(Debug)]
pub struct Streams {
    dir: PathBuf,
    logs: Mutex<HashMap<String, Arc<SegmentLog>>>,
}

impl Streams {
    pub fn new(data_dir: &Path) -> Streams {
        Streams {
            dir: data_dir.join("streams"),
            logs: Mutex::new(HashMap::new()),
        }
    }

    /// The log of stream `name`, opened on first use.
    pub fn log(&self, name: &str) -> Result<Arc<SegmentLog>> {
        if !kairos_types::schema::is_identifier(name) {
            return Err(StoreError::BadRequest(format!(
                "stream name '{name}' must be letters, digits, '_' or '-', starting with a letter"
            )));
        }
        let mut logs = self.logs.lock().expect("lock");
        if let Some(log) = logs.get(name) {
            return Ok(log.clone());
        }
        let log = Arc::new(SegmentLog::open(
            self.dir.join(name),
            SegmentLogOptions::default(),
            Arc::new(SystemClock),
        )?);
        logs.insert(name.to_owned(), log.clone());
        Ok(log)
    }

    /// Appends one body of events durably; returns its position in the stream.
    pub async fn push(&self, name: &str, body: Bytes) -> Result<u64> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Err(StoreError::BadRequest("empty body: no events".into()));
        }
        let ack = self.log(name)?.append(1, body)?.wait().await?;
        Ok(ack.first_offset)
    }

    /// Closes every stream log (their writers flush and stop).
    pub fn close(&self) {
        for log in self.logs.lock().expect("lock").values() {
            log.close();
        }
    }
}

/// An open source.
pub enum Source {
    Text(TextFile),
    Parquet(ParquetFile),
    Stream(StreamSource),
    Group(GroupSource),
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Source::Text(_) => "Source::Text",
            Source::Parquet(_) => "Source::Parquet",
            Source::Stream(_) => "Source::Stream",
            Source::Group(_) => "Source::Group",
        })
    }
}

impl Source {
    /// Opens the source of `spec` at `positions` (partition 0 when empty: from the start).
    pub fn open(
        spec: &SourceSpec,
        format: Format,
        store: &FeatureStore,
        streams: &Streams,
        positions: &BTreeMap<u32, u64>,
    ) -> Result<Source> {
        let at = positions.get(&0).copied();
        Ok(match spec {
            SourceSpec::File { .. } => Source::file(spec, format, positions)?,
            SourceSpec::Http { stream, .. } => Source::Stream(StreamSource {
                log: streams.log(stream)?,
                position: at.unwrap_or(0),
            }),
            SourceSpec::FeatureGroup { name, version } => {
                store.describe(name, *version)?;
                Source::Group(GroupSource {
                    store: store.clone(),
                    name: name.clone(),
                    version: *version,
                    position: at.unwrap_or(0),
                })
            }
        })
    }

    /// A file source alone (what benchmarks replay without a store).
    pub fn file(
        spec: &SourceSpec,
        format: Format,
        positions: &BTreeMap<u32, u64>,
    ) -> Result<Source> {
        let at = positions.get(&0).copied();
        match spec {
            SourceSpec::File { path, speed, .. } => Ok(match format {
                Format::Parquet => Source::Parquet(ParquetFile::open(path, at.unwrap_or(0))?),
                _ => Source::Text(TextFile::open(path, format, at, speed.is_some())?),
            }),
            other => Err(StoreError::BadRequest(format!(
                "{other:?} is not a file source"
            ))),
        }
    }

    /// The partitions this source reads.
    pub fn partitions(&self) -> Vec<u32> {
        vec![0]
    }

    /// Reads what is there, waiting up to `wait` for events on unbounded sources.
    pub async fn poll(&mut self, wait: Duration) -> Result<Poll> {
        match self {
            Source::Text(f) => f.poll(),
            Source::Parquet(f) => f.poll(),
            Source::Stream(s) => s.poll(wait).await,
            Source::Group(g) => g.poll(wait).await,
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
    fn open(path: &str, format: Format, at: Option<u64>, paced: bool) -> Result<TextFile> {
        let path = PathBuf::from(path);
        let mut file = File::open(&path).map_err(io_error(&path))?;
        let mut header = None;
        let mut start = 0;
        if format == Format::Csv {
            let mut first = Vec::new();
            let mut byte = [0u8; 1];
            while file.read(&mut byte).map_err(io_error(&path))? == 1 {
                first.push(byte[0]);
                if byte[0] == b'\n' {
                    break;
                }
            }
            start = first.len() as u64;
            header = Some(Bytes::from(first));
        }
        Ok(TextFile {
            path,
            file,
            header,
            position: at.unwrap_or(start).max(start),
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
    reader: ParquetRecordBatchReader,
    position: u64,
}

impl ParquetFile {
    fn open(path: &str, rows_done: u64) -> Result<ParquetFile> {
        let path = PathBuf::from(path);
        let file = File::open(&path).map_err(io_error(&path))?;
        let bad = |e: parquet::errors::ParquetError| {
            StoreError::BadRequest(format!("cannot read {}: {e}", path.display()))
        };
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(bad)?
            .with_batch_size(PARQUET_BATCH_ROWS)
            .with_offset(rows_done as usize)
            .build()
            .map_err(bad)?;
        Ok(ParquetFile {
            reader,
            position: rows_done,
        })
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

/// Another feature group's log: pipelines chain.
pub struct GroupSource {
    store: FeatureStore,
    name: String,
    version: Option<u32>,
    position: u64,
}

impl GroupSource {
    async fn poll(&mut self, wait: Duration) -> Result<Poll> {
        let records = self
            .store
            .read_log(&self.name, self.version, self.position, STREAM_BYTES, wait)
            .await?;
        let Some((_, end, _)) = records.last() else {
            return Ok(Poll::Idle);
        };
        self.position = *end;
        Ok(Poll::Chunk(Chunk {
            partition: 0,
            data: ChunkData::Rows(records.into_iter().map(|(_, _, b)| b).collect()),
            next: self.position,
            arrived_at: None,
        }))
    }
}
