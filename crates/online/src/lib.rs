//! The online store: per primary key, the latest row of a feature group, for low-latency reads.
//!
//! [`OnlineStore`] is the seam. [`RedbStore`] is the embedded default (one redb file); [`RedisStore`]
//! is the scale-out backend Feast users run, on one server or a Redis Cluster. [`OnlineBackend`] is the closed enum the hot path uses.
//!
//! Invariants every backend keeps:
//! - per key, the stored row is the one with the greatest `(event_time, offset)`
//!   ([`OnlineRow::supersedes`]): a late, older event never overwrites a newer one;
//! - [`OnlineStore::apply`] stores its rows and the materialiser's log offset atomically, so a
//!   crash leaves either both or neither;
//! - a log partition's offset only moves from where a step says it starts ([`Step::from`]): a
//!   second materialiser of the same partition (a stale owner after a rebalance) has its step
//!   refused ([`OnlineError::Moved`]) rather than writing over the rows its successor wrote.

mod redb_store;
mod redis_store;

use std::future::Future;

use kairos_types::{OnlineRow, TableId};

pub use redb_store::RedbStore;
pub use redis_store::RedisStore;

#[derive(Debug, thiserror::Error)]
pub enum OnlineError {
    #[error("online store (redb): {0}")]
    Redb(String),
    #[error("online store (redis): {0}")]
    Redis(#[from] redis::RedisError),
    #[error("online store holds a corrupt row: {0}")]
    Corrupt(String),
    /// Another materialiser moved the partition's offset since this one read it.
    #[error(
        "online store: log partition {partition} of {table} moved to offset {found:?} while a \
         step from {from} was written (another materialiser writes it)"
    )]
    Moved {
        table: String,
        partition: u32,
        from: u64,
        found: Option<u64>,
    },
}

pub type Result<T, E = OnlineError> = std::result::Result<T, E>;

/// A key's encoded bytes ([`kairos_types::value::encode_key`]) and its row.
pub type KeyedRow = (Vec<u8>, OnlineRow);

/// One materialiser step of one log partition: its rows lie at offsets `from .. through`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub partition: u32,
    /// How many partitions the log has: rows carry their position as
    /// [`kairos_types::LogPosition::encode`] makes it.
    pub partitions: u32,
    /// The partition's offset the step starts from: what its materialiser read as the store's
    /// position (0 for a partition never written).
    pub from: u64,
    /// One past the step's last row: the partition's offset once the step is applied.
    pub through: u64,
}

impl Step {
    /// A step of a log of one partition.
    pub fn whole(from: u64, through: u64) -> Step {
        Step {
            partition: 0,
            partitions: 1,
            from,
            through,
        }
    }

    /// What of this step a part of the store whose partition offset is `stored` still lacks:
    /// the stored position its rows start from (rows before it are there already), or `None`
    /// when it holds the whole step. A part behind the step's start is refused: it lacks rows
    /// from before the step, so the materialiser must read its position again.
    pub fn lacking(&self, table: &TableId, stored: Option<u64>) -> Result<Option<u64>> {
        let at = stored.unwrap_or(0);
        if at < self.from {
            return Err(OnlineError::Moved {
                table: table.to_string(),
                partition: self.partition,
                from: self.from,
                found: stored,
            });
        }
        let position = kairos_types::LogPosition::new(self.partition, at).encode(self.partitions);
        Ok((at < self.through).then_some(position))
    }
}

/// Latest-row-per-key storage with each log partition's materialiser offset kept beside the
/// rows. A key's rows all come from one partition (the log partitions by key).
pub trait OnlineStore: Send + Sync {
    /// Merges `rows` (in log order) into `table`, keeping per key the superseding row, and
    /// records `step.through` as the partition's offset, all in one atomic write — provided
    /// the stored offset is still the one the step was planned from; otherwise nothing is
    /// written and the answer is [`OnlineError::Moved`].
    fn apply(
        &self,
        table: &TableId,
        step: Step,
        rows: Vec<KeyedRow>,
    ) -> impl Future<Output = Result<()>> + Send;

    /// The rows for `keys`, in the same order; one round trip for all of them.
    fn get_many(
        &self,
        table: &TableId,
        keys: &[Vec<u8>],
    ) -> impl Future<Output = Result<Vec<Option<OnlineRow>>>> + Send;

    /// The offset of log partition `partition` applied so far, if any.
    fn offset(
        &self,
        table: &TableId,
        partition: u32,
    ) -> impl Future<Output = Result<Option<u64>>> + Send;

    /// The stored rows whose keys `part` holds (for consistency checks, a part at a time).
    fn scan(
        &self,
        table: &TableId,
        part: KeyPart,
    ) -> impl Future<Output = Result<Vec<KeyedRow>>> + Send;

    /// Removes the table's rows and every partition's offset.
    fn drop_table(&self, table: &TableId) -> impl Future<Output = Result<()>> + Send;
}

/// One of `of` disjoint parts of a table's keys, by a stable hash of the key's bytes: a
/// consistency check of a large table compares it a part at a time, so it never holds more
/// than one part in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyPart {
    pub index: u32,
    pub of: u32,
}

impl KeyPart {
    /// Every key.
    pub const WHOLE: KeyPart = KeyPart { index: 0, of: 1 };

    pub fn holds(&self, key: &[u8]) -> bool {
        self.of <= 1 || crc32fast::hash(key) % self.of == self.index
    }
}

/// Folds rows in log order into the latest row per key, in key order: the pure core of every
/// backend's apply. A stable sort on the key keeps each key's rows in log order for the fold,
/// and the key order is the one a B-tree wants to be written in.
pub fn latest_per_key(mut rows: Vec<KeyedRow>) -> Vec<KeyedRow> {
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    let mut latest = Vec::with_capacity(rows.len());
    let mut rows = rows.into_iter().peekable();
    while let Some((key, mut row)) = rows.next() {
        while let Some((_, next)) = rows.next_if(|(k, _)| *k == key) {
            if next.supersedes(&row) {
                row = next;
            }
        }
        latest.push((key, row));
    }
    latest
}

/// The configured backend. A closed enum, so the read path has no dynamic dispatch.
#[derive(Debug, Clone)]
pub enum OnlineBackend {
    Redb(RedbStore),
    Redis(RedisStore),
}

impl OnlineBackend {
    pub fn name(&self) -> &'static str {
        match self {
            OnlineBackend::Redb(_) => "redb",
            OnlineBackend::Redis(s) => s.engine(),
        }
    }

    /// Makes every applied row durable (redb syncs its unsynced commits). What log retention
    /// calls before it deletes segments: the segments a crash would make the materialiser
    /// apply again must still be there. Redis persists as its own configuration says.
    pub async fn sync(&self) -> Result<()> {
        match self {
            OnlineBackend::Redb(s) => s.sync().await,
            OnlineBackend::Redis(_) => Ok(()),
        }
    }

    /// Whether the backend answers: a Redis server a round trip away; redb, in this process,
    /// always.
    pub async fn ping(&self) -> Result<()> {
        match self {
            OnlineBackend::Redb(_) => Ok(()),
            OnlineBackend::Redis(s) => s.ping().await,
        }
    }
}

impl OnlineStore for OnlineBackend {
    async fn apply(&self, table: &TableId, step: Step, rows: Vec<KeyedRow>) -> Result<()> {
        match self {
            OnlineBackend::Redb(s) => s.apply(table, step, rows).await,
            OnlineBackend::Redis(s) => s.apply(table, step, rows).await,
        }
    }

    async fn get_many(&self, table: &TableId, keys: &[Vec<u8>]) -> Result<Vec<Option<OnlineRow>>> {
        match self {
            OnlineBackend::Redb(s) => s.get_many_blocking(table, keys),
            OnlineBackend::Redis(s) => s.get_many(table, keys).await,
        }
    }

    async fn offset(&self, table: &TableId, partition: u32) -> Result<Option<u64>> {
        match self {
            OnlineBackend::Redb(s) => s.offset(table, partition).await,
            OnlineBackend::Redis(s) => s.offset(table, partition).await,
        }
    }

    async fn scan(&self, table: &TableId, part: KeyPart) -> Result<Vec<KeyedRow>> {
        match self {
            OnlineBackend::Redb(s) => s.scan(table, part).await,
            OnlineBackend::Redis(s) => s.scan(table, part).await,
        }
    }

    async fn drop_table(&self, table: &TableId) -> Result<()> {
        match self {
            OnlineBackend::Redb(s) => s.drop_table(table).await,
            OnlineBackend::Redis(s) => s.drop_table(table).await,
        }
    }
}
