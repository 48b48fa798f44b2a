//! The offline store: every row ever written to a feature group, as a Delta Lake table.
//!
//! One table per feature-group version under `<root>/<name>/v<version>`, partitioned by
//! `_event_date`, each row carrying `_ingested_at` (when the log took it) and `_offset` (its log
//! offset). The materialiser appends in batches, and each commit carries a Delta application
//! transaction (`txn` action) whose version is the log offset written through, so the table
//! itself remembers how far it got: after a crash the materialiser resumes exactly there
//! (DESIGN invariant 1). The tables are plain Delta: DuckDB, Spark or Polars can read them.
//!
//! Delta's kernel (delta-rs without DataFusion) keeps the log; the reads ([`scan`]) and the
//! compaction ([`compact`]) are Kairos's own, over Parquet's reader and writer: a read needs
//! partition pruning, a row filter and log order, not a query engine, and DataFusion was 40 %
//! of the release build.

mod committer;
mod compact;
mod layout;
mod s3;
mod scan;
mod writer;

use arrow::record_batch::RecordBatch;
use deltalake::{DeltaTable, DeltaTableError};
use futures::StreamExt as _;
use kairos_storage::Storage;
use kairos_types::{FeatureGroupSpec, LogCut, TableId};
use url::Url;

pub use layout::{
    EVENT_DATE, INGESTED_AT, OFFSET, from_offline, offline_schema, output_schema, to_offline,
};
use scan::{DataFile, OffsetMerge, RowFilter};

pub use committer::OfflineCommitter;
pub use writer::{CHECKPOINT_EVERY, COMPACT_EVERY, OfflineWriter, PartitionStep};

#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    #[error("offline store (delta): {0}")]
    Delta(#[from] DeltaTableError),
    /// Another writer committed the same log partition since this step's writer read where it
    /// stood: two owners of one partition at once, and this one is the stale owner. The step
    /// was refused — by the writer, the table holding the partition elsewhere than the step
    /// goes on from, or by Delta's conflict check on the partition's application transaction.
    #[error(
        "offline store: another writer committed log partition {partition} of {table} since \
         this one read it; its commit was refused"
    )]
    Fenced { table: String, partition: u32 },
    /// What a table's committer answers a request it could not do: the commit carrying a
    /// step failed (for another step's reason, or the store's) and the step was not written,
    /// the table could not be read, or the committer stopped.
    #[error("offline store: {0}")]
    Committer(String),
    #[error("offline store parquet: {0}")]
    Parquet(#[from] deltalake::parquet::errors::ParquetError),
    #[error("offline store table layout: {0}")]
    Layout(String),
    #[error("offline store arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("offline store: {0}")]
    Storage(#[from] kairos_storage::StorageError),
    #[error("offline store I/O at {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

pub type Result<T, E = OfflineError> = std::result::Result<T, E>;

/// Which rows an offline read returns. Times are microseconds since the epoch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadFilter {
    /// Event time at or after this.
    pub start: Option<i64>,
    /// Event time before this.
    pub end: Option<i64>,
    /// Only rows ingested at or before this: the table as it was known then.
    pub as_of: Option<i64>,
    /// Only rows before this cut of the log (by their `_offset`, the stored position): the
    /// table as of a moment of the log, whatever was materialised since.
    pub before: Option<LogCut>,
}

/// What a compaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CompactReport {
    pub files_removed: u64,
    pub files_added: u64,
}

/// Delta Lake tables under the storage's `offline/` area: the data dir's folder, or a bucket
/// every replica of a cluster shares.
#[derive(Debug, Clone)]
pub struct DeltaOfflineStore {
    storage: Storage,
}

impl DeltaOfflineStore {
    pub fn new(storage: Storage) -> Self {
        if storage.is_shared() {
            s3::register();
        }
        Self { storage }
    }

    fn table_parts(table: &TableId) -> [String; 3] {
        [
            "offline".to_string(),
            table.name.clone(),
            format!("v{}", table.version),
        ]
    }

    /// The URL of one feature-group version's table (`file://…` or `s3://…`), as any Delta
    /// reader opens it.
    pub fn table_url(&self, table: &TableId) -> Url {
        self.storage
            .url(&Self::table_parts(table).each_ref().map(String::as_str))
    }

    /// Opens the table; one that was never written comes back unloaded (`version()` is `None`)
    /// and is created by its first write.
    async fn open(&self, table: &TableId) -> Result<DeltaTable> {
        let url = self.table_url(table);
        if let Ok(path) = url.to_file_path() {
            std::fs::create_dir_all(&path).map_err(|source| OfflineError::Io {
                path: path.display().to_string(),
                source,
            })?;
        }
        let mut delta = deltalake::DeltaTableBuilder::from_url(url)?.build()?;
        load_if_written(&mut delta).await?;
        Ok(delta)
    }

    /// A writer of one table, for rows of any of the log's partitions.
    pub async fn writer(&self, table: &TableId, spec: &FeatureGroupSpec) -> Result<OfflineWriter> {
        Ok(OfflineWriter::new(self.open(table).await?, spec))
    }

    /// Starts the committer of one table in this process: the writer its partitions'
    /// materialisers share (see [`OfflineCommitter`]).
    pub fn committer(&self, table: &TableId, spec: &FeatureGroupSpec) -> OfflineCommitter {
        OfflineCommitter::start(self.clone(), table.clone(), spec.clone())
    }

    /// Streams the rows matching `filter`, in log-offset order, in the output schema
    /// ([`output_schema`]): the group's columns, then `_ingested_at` and `_offset`.
    pub async fn scan(
        &self,
        table: &TableId,
        spec: &FeatureGroupSpec,
        filter: ReadFilter,
    ) -> Result<OfflineStream> {
        let delta = self.open(table).await?;
        if delta.version().is_none() {
            return Ok(OfflineStream {
                inner: None,
                spec: spec.clone(),
            });
        }
        let files = delta
            .snapshot()?
            .log_data()
            .iter()
            .map(|f| DataFile::from_view(&f))
            .collect::<Result<_>>()?;
        let merge = OffsetMerge::new(
            delta.object_store(),
            files,
            layout::stored_schema(spec),
            RowFilter::new(filter, &spec.event_time),
        )
        .await?;
        Ok(OfflineStream {
            inner: Some(merge),
            spec: spec.clone(),
        })
    }

    /// Rewrites small files into large ones (Delta `OPTIMIZE`).
    pub async fn compact(&self, table: &TableId) -> Result<CompactReport> {
        compact::compact(&self.open(table).await?).await
    }

    /// Deletes the table and its files.
    pub async fn drop_table(&self, table: &TableId) -> Result<()> {
        let parts = Self::table_parts(table);
        Ok(self
            .storage
            .delete_all(&parts.each_ref().map(String::as_str))
            .await?)
    }
}

/// Loads a table's state, unless it was never written: the kernel logs loading a missing table
/// as an error, so the log is listed first.
async fn load_if_written(delta: &mut DeltaTable) -> Result<()> {
    let log = object_store::path::Path::from("_delta_log");
    let written = delta
        .object_store()
        .list(Some(&log))
        .next()
        .await
        .transpose()
        .map_err(DeltaTableError::from)?
        .is_some();
    if written {
        delta.load().await?;
    }
    Ok(())
}

/// The rows of an offline read, batch by batch, in the output schema.
pub struct OfflineStream {
    inner: Option<OffsetMerge>,
    spec: FeatureGroupSpec,
}

impl std::fmt::Debug for OfflineStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OfflineStream")
            .field("group", &self.spec.name)
            .finish()
    }
}

impl OfflineStream {
    pub fn schema(&self) -> arrow::datatypes::SchemaRef {
        output_schema(&self.spec)
    }

    pub async fn next(&mut self) -> Option<Result<RecordBatch>> {
        let batch = self.inner.as_mut()?.next().await?;
        Some(batch.and_then(|b| Ok(from_offline(&self.spec, &b)?)))
    }

    /// Reads the whole stream.
    pub async fn collect(mut self) -> Result<Vec<RecordBatch>> {
        let mut batches = Vec::new();
        while let Some(batch) = self.next().await {
            batches.push(batch?);
        }
        Ok(batches)
    }
}
