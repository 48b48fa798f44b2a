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
//!    partition and the epoch, and the output log's end offsets (one per log partition) at
//!    that moment;
//! 3. appends the pending rows to the output group's log, tagged with the same producer tag;
//! 4. commits the source position upstream (Kafka), so a new owner of the partition starts
//!    near it; the checkpoint, not Kafka, says where reading resumes.
//!
//! A crash before 2 finishes loses only work the restart redoes from the previous checkpoint.
//! A crash between 2 and 3 leaves pending rows that the restart appends; a crash during or after
//! 3 leaves them in the log already, which the restart finds by its tag after the recorded
//! offsets and does not append again (the store's `append_once`; of a Kafka append cut short,
//! it appends the rows that did not land). Either way each row reaches the log once —
//! whichever worker holds the partition next.

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
    /// The output log's end offset of each of its partitions before the append: the rows, if
    /// written, are after them.
    pub search_from: Vec<u64>,
    pub rows: u64,
    /// The rows as an Arrow IPC stream in the output group's schema.
    pub ipc: Vec<u8>,
}

impl CheckpointMeta {
    /// Decodes metadata [`postcard`] wrote in the layout of the versions before output logs
    /// of several partitions (one end offset to search from). Postcard's bytes do not say
    /// their layout, so a store keeps the two apart itself.
    pub fn decode_one_partition(bytes: &[u8]) -> Result<CheckpointMeta, postcard::Error> {
        postcard::from_bytes::<legacy::CheckpointMeta>(bytes).map(CheckpointMeta::from)
    }
}

/// The metadata as it was written while the output log had one partition.
mod legacy {
    use serde::Deserialize;

    use crate::operator::OperatorCounts;

    #[derive(Deserialize)]
    pub(super) struct CheckpointMeta {
        pub(super) partition: u32,
        pub(super) epoch: u64,
        pub(super) position: u64,
        pub(super) max_event_time: i64,
        pub(super) counts: OperatorCounts,
        pub(super) malformed: u64,
        pub(super) pending: Option<PendingOutput>,
    }

    #[derive(Deserialize)]
    pub(super) struct PendingOutput {
        pub(super) producer: String,
        pub(super) search_from: u64,
        pub(super) rows: u64,
        pub(super) ipc: Vec<u8>,
    }
}

impl From<legacy::CheckpointMeta> for CheckpointMeta {
    fn from(old: legacy::CheckpointMeta) -> CheckpointMeta {
        CheckpointMeta {
            partition: old.partition,
            epoch: old.epoch,
            position: old.position,
            max_event_time: old.max_event_time,
            counts: old.counts,
            malformed: old.malformed,
            pending: old.pending.map(|p| PendingOutput {
                producer: p.producer,
                search_from: vec![p.search_from],
                rows: p.rows,
                ipc: p.ipc,
            }),
        }
    }
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

    #[test]
    fn metadata_of_a_log_of_one_partition_still_decodes() {
        #[derive(Serialize)]
        struct Old {
            partition: u32,
            epoch: u64,
            position: u64,
            max_event_time: i64,
            counts: OperatorCounts,
            malformed: u64,
            pending: Option<(String, u64, u64, Vec<u8>)>,
        }
        let old = Old {
            partition: 3,
            epoch: 9,
            position: 1200,
            max_event_time: 1_700_000_000_000_000,
            counts: OperatorCounts::default(),
            malformed: 2,
            pending: Some(("pipeline/p/v1/p3/9".into(), 57, 4, vec![1, 2, 3])),
        };
        let bytes = postcard::to_allocvec(&old).unwrap();
        let meta = CheckpointMeta::decode_one_partition(&bytes).unwrap();
        let pending = meta.pending.as_ref().unwrap();
        assert_eq!((meta.partition, meta.epoch, meta.position), (3, 9, 1200));
        assert_eq!(pending.search_from, vec![57]);
        assert_eq!((pending.rows, &pending.ipc[..]), (4, &[1, 2, 3][..]));
    }
}
