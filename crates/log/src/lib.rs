//! The feature-group log: the one durable, ordered write path (DESIGN invariant 1).
//!
//! Every insert into a feature group becomes one record here. A record is acknowledged only once
//! it is on disk (`fsync`); concurrent appends share one `fsync` (group commit). Offsets count
//! rows: a record of `n` rows holds offsets `first_offset .. first_offset + n`.
//!
//! On disk a log is a folder of segment files named by their first offset. Each record is
//! `len u32 | crc32 u32 | first_offset u64 | rows u32 | ingested_at i64 | payload`, little
//! endian, the CRC covering everything after itself. A torn record at the tail (a crash mid-write,
//! so never acknowledged) is cut off when the log is opened; a bad CRC anywhere else is an error.
//!
//! [`FeatureLog`] is the seam. [`kafka::KafkaLog`] is the log a cluster's replicas will share: a
//! topic per group version, partitioned by key, each partition a row-counting log like this one.

pub mod kafka;
mod record;
mod segment_log;

pub use record::LogRecord;
pub use segment_log::{AppendTicket, SegmentLog, SegmentLogOptions};

use bytes::Bytes;

/// Errors of the log. All of them are the system's fault, not the caller's.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("log I/O error at {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("log corrupt at {path}, byte {position}: {reason}")]
    Corrupt {
        path: String,
        position: u64,
        reason: String,
    },
    #[error("log record of {0} bytes is over the limit of {1} bytes")]
    TooLarge(usize, usize),
    #[error("log write failed: {0}")]
    Write(String),
    #[error("the log is closed")]
    Closed,
    /// The brokers did not take or give what was asked (the message names the topic).
    #[error("{0}")]
    Kafka(String),
}

pub type Result<T, E = LogError> = std::result::Result<T, E>;

impl LogError {
    /// The same failure for another of the appends it failed (one write carries a group of
    /// them): an I/O error keeps its kind, so every caller can tell a full disk apart.
    pub fn for_another_waiter(&self) -> LogError {
        match self {
            LogError::Io { path, source } => LogError::Io {
                path: path.clone(),
                source: std::io::Error::new(source.kind(), source.to_string()),
            },
            other => LogError::Write(other.to_string()),
        }
    }
}

/// What an acknowledged append tells the writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendAck {
    /// Offset of the first row of the record.
    pub first_offset: u64,
    /// One past the offset of the last row.
    pub end_offset: u64,
    /// When the record was appended, in microseconds since the epoch.
    pub ingested_at: i64,
}

/// An ordered, durable log of records for one feature group.
pub trait FeatureLog: Send + Sync {
    /// Queues a record of `rows` rows; the ticket resolves once it is durable.
    fn append(&self, rows: u32, payload: Bytes) -> Result<AppendTicket>;

    /// Records whose offsets lie at or after `offset`, in order, up to about `max_bytes` of
    /// payload (always at least one record if any is there).
    fn read_from(&self, offset: u64, max_bytes: usize) -> Result<Vec<LogRecord>>;

    /// One past the last durable offset.
    fn end_offset(&self) -> u64;

    /// A receiver that sees the end offset move.
    fn subscribe(&self) -> tokio::sync::watch::Receiver<u64>;

    /// Deletes whole segments that end at or before `offset` and were last written before
    /// `older_than_micros`. Returns how many segments were deleted.
    fn remove_before(&self, offset: u64, older_than_micros: i64) -> Result<usize>;
}
