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

mod compact;
mod layout;
mod s3;
mod scan;

use arrow::record_batch::RecordBatch;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel as _;
use deltalake::kernel::transaction::{CommitConflictError, CommitProperties, TransactionError};
use deltalake::kernel::{StructType, Transaction};
use deltalake::writer::{DeltaWriter as _, RecordBatchWriter};
use deltalake::{DeltaTable, DeltaTableError};
use futures::StreamExt as _;
use kairos_storage::Storage;
use kairos_types::{FeatureGroupSpec, LogCut, TableId};
use url::Url;

pub use layout::{
    EVENT_DATE, INGESTED_AT, OFFSET, from_offline, offline_schema, output_schema, to_offline,
};
use scan::{DataFile, OffsetMerge, RowFilter};

/// The Delta application-transaction id under which the materialiser records its offset.
const MATERIALISER_APP_ID: &str = "kairos-offline-materialiser";

/// The application-transaction id of one log partition's materialiser. Partition 0 keeps the
/// id of the single-node log, so its tables read on as they were written.
fn materialiser_app_id(partition: u32) -> String {
    match partition {
        0 => MATERIALISER_APP_ID.to_string(),
        p => format!("{MATERIALISER_APP_ID}-p{p}"),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    #[error("offline store (delta): {0}")]
    Delta(#[from] DeltaTableError),
    /// Another writer committed the same log partition since this writer last read the table:
    /// two owners of one partition at once, and this one is the stale owner. Delta's conflict
    /// check on the partition's application transaction refused the commit whole.
    #[error(
        "offline store: another writer committed log partition {partition} of {table} since \
         this one read it; its commit was refused"
    )]
    Fenced { table: String, partition: u32 },
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
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
        // Asked first rather than by loading: the kernel logs a missing table as an error.
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
        Ok(delta)
    }

    /// A writer for one table; the materialiser holds it so the table is not reloaded per commit.
    pub async fn writer(&self, table: &TableId, spec: &FeatureGroupSpec) -> Result<OfflineWriter> {
        self.partition_writer(table, spec, 0).await
    }

    /// A writer of one log partition's rows. Each partition records its offset under an
    /// application transaction of its own, so writers of different partitions commit side by
    /// side, and of two writers of one partition only one can commit what it read.
    pub async fn partition_writer(
        &self,
        table: &TableId,
        spec: &FeatureGroupSpec,
        partition: u32,
    ) -> Result<OfflineWriter> {
        Ok(OfflineWriter {
            table: self.open(table).await?,
            spec: spec.clone(),
            partition,
            commits_since_compaction: 0,
        })
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

/// Commits a writer makes between two compactions of its table.
///
/// A materialiser that keeps up commits about once a second, a small file each time: left
/// alone, a partition gathers tens of thousands of files a day, which every scan, checkpoint and
/// table state must list. Compacting every 100 commits keeps the files of a partition few.
pub const COMPACT_EVERY: u32 = 100;

/// Commits between two Delta checkpoints of a table this store creates (Delta's default is 100).
///
/// When the Delta kernel builds a table's state it reads every commit file since the last
/// checkpoint at once, each on a blocking thread and with a JSON decoder of its own. With
/// Delta's default, those decoders took 470 MB at the peak in the soak (heaptrack), and
/// resident memory and threads stepped up every 100 commits. Ten keeps that burst a tenth as
/// large, for a checkpoint of the table's few files every ten commits.
pub const CHECKPOINT_EVERY: u32 = 10;

/// Appends to one table, one Delta commit per call, each commit recording the offset, and
/// compacts the table every [`COMPACT_EVERY`] commits.
#[derive(Debug)]
pub struct OfflineWriter {
    table: DeltaTable,
    spec: FeatureGroupSpec,
    partition: u32,
    commits_since_compaction: u32,
}

impl OfflineWriter {
    /// The log offset the table holds everything before, if it has been written at all.
    pub async fn committed_offset(&self) -> Result<Option<u64>> {
        if self.table.version().is_none() {
            return Ok(None);
        }
        let version = self
            .table
            .snapshot()?
            .transaction_version(
                self.table.log_store().as_ref(),
                &materialiser_app_id(self.partition),
            )
            .await?;
        Ok(version.map(|v| v as u64))
    }

    /// Appends `batches` (already in the offline layout, see [`to_offline`]) and records that
    /// the table now holds every row before `offset`, in one commit.
    pub async fn append(&mut self, batches: Vec<RecordBatch>, offset: u64) -> Result<()> {
        let app_id = materialiser_app_id(self.partition);
        let commit = CommitProperties::default()
            .with_application_transaction(Transaction::new(&app_id, offset as i64));
        if self.table.version().is_none() {
            self.create(batches, commit).await?;
        } else {
            let mut writer =
                RecordBatchWriter::for_table(&self.table)?.with_commit_properties(commit);
            for batch in batches {
                writer.write(batch).await?;
            }
            writer
                .flush_and_commit(&mut self.table)
                .await
                .map_err(|e| self.fenced_or(e))?;
        }
        self.commits_since_compaction += 1;
        if self.commits_since_compaction < COMPACT_EVERY {
            return Ok(());
        }
        // The rows are committed whatever happens now: a compaction that fails is tried again
        // after the next commits, and the table is what it was.
        self.commits_since_compaction = 0;
        match compact::compact(&self.table).await {
            Ok(report) => {
                tracing::debug!(table = %self.spec.name, removed = report.files_removed, added = report.files_added, "offline table compacted");
            }
            Err(e) => {
                tracing::warn!(table = %self.spec.name, error = %e, "cannot compact the offline table");
            }
        }
        // Whether or not it compacted, the table moved on under this writer's state.
        self.table.update_incremental(None).await?;
        Ok(())
    }

    fn fenced_or(&self, e: DeltaTableError) -> OfflineError {
        match e {
            DeltaTableError::Transaction {
                source: TransactionError::CommitConflict(CommitConflictError::ConcurrentTransaction),
            } => OfflineError::Fenced {
                table: self.spec.name.clone(),
                partition: self.partition,
            },
            e => e.into(),
        }
    }

    /// Creates the table with its first rows, in one commit.
    async fn create(&mut self, batches: Vec<RecordBatch>, commit: CommitProperties) -> Result<()> {
        let schema = offline_schema(&self.spec);
        let mut writer = RecordBatchWriter::try_new(
            self.table.table_url().as_str(),
            schema.clone(),
            Some(vec![EVENT_DATE.to_string()]),
            None,
        )?;
        for batch in batches {
            writer.write(batch).await?;
        }
        let files = writer.flush().await?;
        let columns: StructType = schema.as_ref().try_into_kernel()?;
        self.table = self
            .table
            .create()
            .with_columns(columns.fields().cloned())
            .with_partition_columns([EVENT_DATE])
            .with_table_name(self.spec.name.clone())
            .with_configuration([(
                "delta.checkpointInterval",
                Some(CHECKPOINT_EVERY.to_string()),
            )])
            .with_actions(files.into_iter().map(deltalake::kernel::Action::Add))
            .with_commit_properties(commit)
            .await?;
        Ok(())
    }
}
