//! Compaction (Delta's `OPTIMIZE`) without a query engine.
//!
//! In each partition the files smaller than the target size are merged in log-offset order into
//! new files, and one commit removes the old files and adds the new ones without a data change:
//! readers of the version before keep reading the old files, and the materialiser's appends,
//! which only add files, commit past it without a conflict. Rows come out in offset order, so a
//! compacted file is one run for the next read (see [`crate::scan`]).

use std::collections::BTreeMap;

use deltalake::DeltaTable;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, LogicalFileView};
use deltalake::protocol::DeltaOperation;
use deltalake::writer::{DeltaWriter as _, RecordBatchWriter, WriteMode};
use indexmap::IndexMap;

use crate::layout::file_schema;
use crate::scan::{DataFile, OffsetMerge, RowFilter};
use crate::{CompactReport, Result};

/// Files at least this large are left alone, and new files are cut at it (delta-rs's default).
pub(crate) const TARGET_FILE_BYTES: u64 = 100 * 1024 * 1024;

/// Rewrites each partition's small files into large ones, in one commit.
pub(crate) async fn compact(table: &DeltaTable) -> Result<CompactReport> {
    let mut report = CompactReport {
        files_removed: 0,
        files_added: 0,
    };
    if table.version().is_none() {
        return Ok(report);
    }
    let state = table.snapshot()?;
    let partition_columns = state.metadata().partition_columns().to_vec();
    let mut partitions: BTreeMap<Vec<(String, Option<String>)>, Vec<LogicalFileView>> =
        BTreeMap::new();
    for file in state.log_data().iter() {
        if (file.size().max(0) as u64) >= TARGET_FILE_BYTES {
            continue;
        }
        let mut key: Vec<_> = file.partition_values_map().into_iter().collect();
        key.sort();
        partitions.entry(key).or_default().push(file);
    }
    let stored = file_schema(&state.snapshot().arrow_schema(), &partition_columns);
    let mut actions = Vec::new();
    for files in partitions.into_values().filter(|files| files.len() > 1) {
        let values: IndexMap<String, _> = files[0]
            .partition_values()
            .map(|data| {
                data.fields()
                    .iter()
                    .map(|f| f.name().to_string())
                    .zip(data.values().iter().cloned())
                    .collect()
            })
            .unwrap_or_default();
        let mut merge = OffsetMerge::new(
            table.object_store(),
            files
                .iter()
                .map(DataFile::from_view)
                .collect::<Result<_>>()?,
            stored.clone(),
            RowFilter::everything(),
        )
        .await?;
        let mut writer =
            RecordBatchWriter::for_table(table)?.with_target_file_size(TARGET_FILE_BYTES);
        while let Some(batch) = merge.next().await {
            writer
                .write_partition(batch?, &values, WriteMode::Default)
                .await?;
        }
        for mut add in writer.flush().await? {
            add.data_change = false;
            actions.push(Action::Add(add));
            report.files_added += 1;
        }
        for file in &files {
            actions.push(Action::Remove(file.remove_action(false)));
            report.files_removed += 1;
        }
    }
    if actions.is_empty() {
        return Ok(report);
    }
    let operation = DeltaOperation::Optimize {
        predicate: None,
        target_size: TARGET_FILE_BYTES as i64,
    };
    CommitBuilder::from(CommitProperties::default())
        .with_actions(actions)
        .build(Some(state), table.log_store(), operation)
        .await?;
    Ok(report)
}
