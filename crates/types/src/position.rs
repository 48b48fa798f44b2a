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

/// A log as of one moment: each partition's end then, by partition. A stored row is in it
/// when its offset is before its partition's end — in a log of one partition, when its
/// position is before the one end.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LogCut {
    ends: Vec<u64>,
}

impl LogCut {
    /// The cut at `ends`, one per partition (at least one).
    pub fn new(ends: Vec<u64>) -> LogCut {
        assert!(!ends.is_empty(), "a log has at least one partition");
        LogCut { ends }
    }

    /// The cut of a log of one partition at `end`.
    pub fn at(end: u64) -> LogCut {
        LogCut { ends: vec![end] }
    }

    pub fn ends(&self) -> &[u64] {
        &self.ends
    }

    /// Whether the stored position `position` is before the cut.
    pub fn admits(&self, position: u64) -> bool {
        let at = LogPosition::decode(position, self.ends.len() as u32);
        at.offset < self.ends[at.partition as usize]
    }

    /// The least position from which no position is admitted: rows stored in position order
    /// can stop there.
    pub fn bound(&self) -> u64 {
        let partitions = self.ends.len() as u32;
        (0..partitions)
            .zip(&self.ends)
            .map(|(partition, &end)| LogPosition::new(partition, end).encode(partitions))
            .max()
            .expect("at least one partition")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_admits_each_partitions_rows_before_its_end_and_bounds_them() {
        let cut = LogCut::new(vec![3, 0, 5]);
        let admitted: Vec<u64> = (0..40).filter(|&p| cut.admits(p)).collect();
        let expected: Vec<u64> = (0..3)
            .flat_map(|partition| {
                (0..cut.ends()[partition as usize])
                    .map(move |offset| LogPosition::new(partition, offset).encode(3))
            })
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        assert_eq!(admitted, expected);
        assert!(admitted.iter().all(|&p| p < cut.bound()));
        assert!((cut.bound()..cut.bound() + 30).all(|p| !cut.admits(p)));
        // One partition: plain offsets.
        let one = LogCut::at(7);
        assert_eq!((0..20).filter(|&p| one.admits(p)).count(), 7);
        assert_eq!(one.bound(), 7);
    }

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
