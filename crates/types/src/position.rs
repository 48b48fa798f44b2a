//! Where a row sits in its feature group's log.
//!
//! A group's log has one or more partitions (a Kafka topic's; the embedded log has one), each
//! counting its rows from 0, and every row of one primary key lies in one partition. Stored
//! rows — the online store's [`crate::OnlineRow::offset`], the offline table's `_offset` —
//! carry the row's position as one number, `offset × partitions + partition`: within a
//! partition it orders rows as their offsets do (so "greatest (event time, position) wins per
//! key" compares like offsets), it is unique across partitions (so a check can count every row
//! once), and for a log of one partition it is the offset itself.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LogPosition {
    pub partition: u32,
    pub offset: u64,
}

impl LogPosition {
    pub fn new(partition: u32, offset: u64) -> LogPosition {
        LogPosition { partition, offset }
    }

    /// The one number stored rows carry, in a log of `partitions` partitions.
    pub fn encode(self, partitions: u32) -> u64 {
        self.offset * u64::from(partitions.max(1)) + u64::from(self.partition)
    }

    /// The position a stored number stands for, in a log of `partitions` partitions.
    pub fn decode(position: u64, partitions: u32) -> LogPosition {
        let partitions = u64::from(partitions.max(1));
        LogPosition {
            partition: (position % partitions) as u32,
            offset: position / partitions,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_partition_is_plain_offsets_and_many_stay_ordered_and_distinct() {
        assert_eq!(LogPosition::new(0, 41).encode(1), 41);
        let mut seen = std::collections::HashSet::new();
        for partition in 0..4 {
            let mut last = None;
            for offset in 0..50 {
                let n = LogPosition::new(partition, offset).encode(4);
                assert!(seen.insert(n));
                assert!(last.is_none_or(|l| n > l));
                assert_eq!(
                    LogPosition::decode(n, 4),
                    LogPosition::new(partition, offset)
                );
                last = Some(n);
            }
        }
    }
}
