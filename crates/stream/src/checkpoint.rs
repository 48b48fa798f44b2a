//! The checkpoint protocol that gives a pipeline its exactly-once effect, as pure decisions.
//!
//! A checkpoint is kept per source partition: the windows of the keys whose events come from
//! it, its position and its share of the output. A partition is the unit that moves when a
//! pipeline runs as several workers, so its state must be readable without any other's.
//!
//! On each barrier the runtime, for every partition it holds, in this order:
//! 1. takes the operator's changed state and the rows emitted since the last barrier;
//! 2. writes one checkpoint durably: the state delta, the source position the state reflects,
//!    the watermark input, and the rows as *pending output* tagged with the pipeline, the
//!    partition and the epoch, and the output log's end offset at that moment;
//! 3. appends the pending rows to the output group's log, tagged with the same producer tag;
//! 4. commits the source position upstream (Kafka), so a new owner of the partition starts
//!    near it; the checkpoint, not Kafka, says where reading resumes.
//!
//! A crash before 2 finishes loses only work the restart redoes from the previous checkpoint.
//! A crash between 2 and 3 leaves pending rows that the restart appends; a crash during or after
//! 3 leaves them in the log already, which the restart finds by its tag after the recorded
//! offset and does not append again (the store's `append_once`). Either way each row reaches
//! the log once — whichever worker holds the partition next.

use serde::{Deserialize, Serialize};

use crate::operator::OperatorCounts;

/// The metadata half of a partition's checkpoint (the window states are stored beside it, one
/// entry each).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    pub partition: u32,
    /// Checkpoints of this partition so far.
    pub epoch: u64,
    /// The position of the next event to read.
    pub position: u64,
    /// The greatest event time seen (the partition's watermark input).
    pub max_event_time: i64,
    pub counts: OperatorCounts,
    /// Events that could not be read, so far.
    pub malformed: u64,
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

/// The tag of the rows version `version` of `pipeline` emitted for source partition
/// `partition` in its checkpoint `epoch`.
pub fn producer_tag(pipeline: &str, version: u32, partition: u32, epoch: u64) -> String {
    format!("pipeline/{pipeline}/v{version}/p{partition}/{epoch}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_differ_by_pipeline_version_partition_and_epoch() {
        assert_eq!(
            producer_tag("card_10m", 2, 0, 12),
            "pipeline/card_10m/v2/p0/12"
        );
        assert_ne!(producer_tag("a", 1, 0, 1), producer_tag("a", 2, 0, 1));
        assert_ne!(producer_tag("a", 1, 0, 1), producer_tag("a", 1, 1, 1));
    }
}
