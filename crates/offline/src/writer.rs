//! Appends to one table: the materialisers' rows, each commit recording how far every log
//! partition it carries got.
//!
//! A commit carries one Delta application transaction (`txn` action) per log partition whose
//! rows it adds, its version the partition's offset written through. A step names the offset it
//! goes on from, and a step whose partition the table holds elsewhere — another writer moved it
//! since — is refused: two owners of one partition at once (a rebalance's moment), and this one
//! is the stale owner. A commit racing another writer's is checked by Delta itself: a winning
//! commit with a `txn` of a partition this one carries refuses it whole.
//!
//! Several partitions go in one commit because each commit is a conditional PUT of the log's
//! next version that every other writer of the table must read and check for conflicts: 32
//! partitions committing on their own made a bulk insert retry its commits up to Delta's limit
//! and give up.

use std::collections::HashMap;

use arrow::compute::{concat_batches, sort_to_indices, take_record_batch};
use arrow::record_batch::RecordBatch;
use deltalake::DeltaTable;
use deltalake::DeltaTableError;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel as _;
use deltalake::kernel::transaction::{CommitConflictError, CommitProperties, TransactionError};
use deltalake::kernel::{StructType, Transaction};
use deltalake::writer::{DeltaWriter as _, RecordBatchWriter};
use kairos_types::FeatureGroupSpec;

use crate::layout::{EVENT_DATE, OFFSET, offline_schema};
use crate::{OfflineError, Result, compact};

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

/// One log partition's share of a commit: its rows (already in the offline layout, see
/// [`crate::to_offline`]) from offset `from`, through offset `through` (exclusive).
#[derive(Debug, Clone)]
pub struct PartitionStep {
    pub partition: u32,
    pub from: u64,
    pub through: u64,
    pub batches: Vec<RecordBatch>,
}

/// Appends to one table, one Delta commit per call, and compacts the table every
/// [`COMPACT_EVERY`] commits.
#[derive(Debug)]
pub struct OfflineWriter {
    table: DeltaTable,
    spec: FeatureGroupSpec,
    commits_since_compaction: u32,
    /// Each partition's offset as the table says at `offsets_at`, as far as asked: a look-up
    /// replays the table's log.
    offsets: HashMap<u32, Option<u64>>,
    offsets_at: Option<u64>,
}

impl OfflineWriter {
    pub(crate) fn new(table: DeltaTable, spec: &FeatureGroupSpec) -> OfflineWriter {
        OfflineWriter {
            table,
            spec: spec.clone(),
            commits_since_compaction: 0,
            offsets: HashMap::new(),
            offsets_at: None,
        }
    }

    /// Reads the commits other writers made since this one last looked.
    pub async fn refresh(&mut self) -> Result<()> {
        if self.table.version().is_none() {
            crate::load_if_written(&mut self.table).await?;
        } else {
            self.table.update_incremental(None).await?;
        }
        Ok(())
    }

    /// The log offset of `partition` the table holds everything before, if any of its rows
    /// was ever committed, as of this writer's last look at the table.
    pub async fn committed_offset(&mut self, partition: u32) -> Result<Option<u64>> {
        if self.table.version().is_none() {
            return Ok(None);
        }
        if self.offsets_at != self.table.version() {
            self.offsets.clear();
            self.offsets_at = self.table.version();
        }
        if let Some(offset) = self.offsets.get(&partition) {
            return Ok(*offset);
        }
        let version = self
            .table
            .snapshot()?
            .transaction_version(
                self.table.log_store().as_ref(),
                materialiser_app_id(partition),
            )
            .await?;
        let offset = version.map(|v| v as u64);
        self.offsets.insert(partition, offset);
        Ok(offset)
    }

    /// Appends every step's rows and records each step's partition offset, in one commit: all
    /// land or none. A step that does not go on from where the table holds its partition is
    /// refused ([`OfflineError::Fenced`]) and the others commit without it. Answers each
    /// step's outcome, in the order given.
    pub async fn commit(&mut self, steps: Vec<PartitionStep>) -> Vec<Result<()>> {
        let mut outcomes = Vec::with_capacity(steps.len());
        let mut taken = Vec::with_capacity(steps.len());
        let mut pending = Vec::with_capacity(steps.len());
        // Delta's own check sees only commits after this writer's state; a commit of the
        // partition made between the step's reading of its position and that state shows here.
        for step in steps {
            match self.committed_offset(step.partition).await {
                Ok(at) if at.unwrap_or(0) == step.from => {
                    taken.push((outcomes.len(), step.partition, step.from));
                    outcomes.push(Ok(()));
                    pending.push(step);
                }
                Ok(_) => outcomes.push(Err(self.fenced(step.partition))),
                Err(e) => outcomes.push(Err(e)),
            }
        }
        if taken.is_empty() {
            return outcomes;
        }
        let Err(failed) = self.append(pending).await else {
            return outcomes;
        };
        // A conflict does not say whose partition moved: the table, read again, does.
        let conflict = is_conflict(&failed);
        if conflict && let Err(e) = self.refresh().await {
            tracing::warn!(table = %self.spec.name, error = %e, "cannot read the offline table again");
        }
        for (place, partition, from) in taken {
            let moved = conflict
                && !matches!(self.committed_offset(partition).await, Ok(at) if at.unwrap_or(0) == from);
            outcomes[place] = Err(if moved {
                self.fenced(partition)
            } else {
                OfflineError::Committer(format!("the commit carrying this step failed: {failed}"))
            });
        }
        outcomes
    }

    fn fenced(&self, partition: u32) -> OfflineError {
        OfflineError::Fenced {
            table: self.spec.name.clone(),
            partition,
        }
    }

    /// Writes the steps' rows in stored-position order (so a file is one run for a read, see
    /// [`crate::scan`]) and commits them with each step's offset.
    async fn append(&mut self, steps: Vec<PartitionStep>) -> Result<()> {
        let before = self.table.version();
        let transactions: Vec<Transaction> = steps
            .iter()
            .map(|s| Transaction::new(materialiser_app_id(s.partition), s.through as i64))
            .collect();
        let through: Vec<(u32, u64)> = steps.iter().map(|s| (s.partition, s.through)).collect();
        let mut batches: Vec<RecordBatch> = steps.into_iter().flat_map(|s| s.batches).collect();
        if through.len() > 1 && !batches.is_empty() {
            batches = vec![in_stored_order(&batches)?];
        }
        let commit = CommitProperties::default().with_application_transactions(transactions);
        if before.is_none() {
            self.create(batches, commit).await?;
        } else {
            let mut writer =
                RecordBatchWriter::for_table(&self.table)?.with_commit_properties(commit);
            for batch in batches {
                writer.write(batch).await?;
            }
            writer.flush_and_commit(&mut self.table).await?;
        }
        // The offsets known stay true when nobody else committed in between.
        if before.map(|v| v + 1) == self.table.version() || before.is_none() {
            self.offsets_at = self.table.version();
            for (partition, offset) in through {
                self.offsets.insert(partition, Some(offset));
            }
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

/// Whether a commit was refused because a concurrent one carried a partition it carries.
fn is_conflict(e: &OfflineError) -> bool {
    matches!(
        e,
        OfflineError::Delta(DeltaTableError::Transaction {
            source: TransactionError::CommitConflict(CommitConflictError::ConcurrentTransaction),
        })
    )
}

/// Several partitions' rows as one batch in stored-position order: each partition's rows come
/// in order, and the stored position interleaves partitions.
fn in_stored_order(batches: &[RecordBatch]) -> Result<RecordBatch> {
    let all = concat_batches(&batches[0].schema(), batches)?;
    let order = sort_to_indices(
        all.column_by_name(OFFSET).expect("offline layout"),
        None,
        None,
    )?;
    Ok(take_record_batch(&all, &order)?)
}
