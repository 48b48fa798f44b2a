//! The checkpoint protocol that gives a pipeline its exactly-once effect, as pure decisions.
//!
//! On each barrier the runtime, in this order:
//! 1. takes the operator's changed state and the rows emitted since the last barrier;
//! 2. writes one checkpoint durably: the state delta, the source positions the state reflects,
//!    the watermark inputs, and the rows as *pending output* tagged with the pipeline and epoch
//!    and the output log's end offset at that moment;
//! 3. appends the pending rows to the output group's log, tagged with the same producer tag;
//! 4. commits the source positions upstream (Kafka) — informational, since the checkpoint is
//!    what a restart reads.
//!
//! A crash before 2 finishes loses only work the restart redoes from the previous checkpoint.
//! A crash between 2 and 3 leaves pending rows that the restart appends; a crash during or after
//! 3 leaves them in the log already, which the restart finds by its tag after the recorded
//! offset and does not append again ([`recover`]). Either way each row reaches the log once.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::operator::OperatorCounts;

/// The metadata half of a checkpoint (the window states are stored beside it, one entry each).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    pub epoch: u64,
    /// Per source partition, the position of the next event to read.
    pub positions: BTreeMap<u32, u64>,
    /// Per source partition, the greatest event time seen (the watermark's inputs).
    pub partitions: Vec<(u32, i64)>,
    pub counts: OperatorCounts,
    /// The epoch's rows, delivered to the output log after this checkpoint is durable.
    pub pending: Option<PendingOutput>,
}

/// Rows a checkpoint holds until they are in the output group's log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingOutput {
    /// Tags the log record, so a restart can tell whether it got there.
    pub producer: String,
    /// The output log's end offset before the append: the record, if written, is after it.
    pub search_from: u64,
    pub rows: u64,
    /// The rows as an Arrow IPC stream in the output group's schema.
    pub ipc: Vec<u8>,
}

/// The tag of the rows pipeline `pipeline` emitted in `epoch`, unique per pipeline run state.
pub fn producer_tag(pipeline: &str, epoch: u64) -> String {
    format!("pipeline/{pipeline}/{epoch}")
}

/// What a restarting pipeline does before reading its source again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// No checkpoint: start from the source's beginning with empty state.
    Fresh,
    /// Restore the checkpoint's state and positions; append its pending rows first when the
    /// log does not hold them yet.
    Resume { append_pending: bool },
}

/// Decides the recovery from the last checkpoint and whether its pending rows were found in
/// the output log (after their recorded offset, by their tag).
pub fn recover(last: Option<&CheckpointMeta>, pending_in_log: bool) -> Recovery {
    match last {
        None => Recovery::Fresh,
        Some(meta) => Recovery::Resume {
            append_pending: meta.pending.as_ref().is_some_and(|p| p.rows > 0) && !pending_in_log,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(pending_rows: Option<u64>) -> CheckpointMeta {
        CheckpointMeta {
            epoch: 3,
            positions: BTreeMap::from([(0, 10)]),
            partitions: vec![(0, 5)],
            counts: OperatorCounts::default(),
            pending: pending_rows.map(|rows| PendingOutput {
                producer: producer_tag("p", 3),
                search_from: 7,
                rows,
                ipc: vec![],
            }),
        }
    }

    #[test]
    fn pending_rows_are_appended_once() {
        assert_eq!(recover(None, false), Recovery::Fresh);
        // Crash between persisting the checkpoint and appending: append on restart.
        assert_eq!(
            recover(Some(&meta(Some(4))), false),
            Recovery::Resume {
                append_pending: true
            }
        );
        // Crash after the append: the rows are in the log already.
        assert_eq!(
            recover(Some(&meta(Some(4))), true),
            Recovery::Resume {
                append_pending: false
            }
        );
        // Nothing pending.
        assert_eq!(
            recover(Some(&meta(None)), false),
            Recovery::Resume {
                append_pending: false
            }
        );
        assert_eq!(producer_tag("card_10m", 12), "pipeline/card_10m/12");
    }
}
