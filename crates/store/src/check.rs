//! `check`: the proof of DESIGN invariant 1 — every log offset is in the offline table exactly
//! once, and the online store equals the latest row per key of the offline store.

use std::collections::{HashMap, HashSet};

use arrow::array::{Array, Int64Array};
use kairos_offline::{DeltaOfflineStore, OFFSET, ReadFilter};
use kairos_online::{KeyPart, OnlineBackend, OnlineStore};
use kairos_types::value::decode_key;
use kairos_types::{FeatureGroup, LogPosition, OnlineRow};
use serde::Serialize;

use crate::error::{Result, StoreError};
use crate::materialise::{keyed_row, row_key};

/// How many differences of each kind a report lists (all are counted).
const LISTED: usize = 20;

/// What `check` found.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct CheckReport {
    /// Whether the stores agree and the offline table holds every offset exactly once.
    pub clean: bool,
    /// The log's end; a Kafka log's partitions' ends added.
    pub log_end_offset: u64,
    pub offline_rows: u64,
    pub offline_keys: u64,
    pub online_keys: Option<u64>,
    /// Offsets in the offline table more than once.
    pub duplicate_offsets: u64,
    /// Offsets below the log end that the offline table lacks (on Kafka, a message none of
    /// whose rows it holds counts once).
    pub missing_offsets: u64,
    /// Keys whose latest offline row is not in the online store.
    pub missing_online: u64,
    /// Keys in the online store that the offline store does not have.
    pub extra_online: u64,
    /// Keys whose online row differs from the latest offline row.
    pub mismatched: u64,
    /// Some of the differences, for reading.
    pub differences: Vec<String>,
}

fn describe_key(key: &[u8]) -> String {
    match decode_key(key) {
        Some(values) => {
            let parts: Vec<String> = values.iter().map(|v| v.to_json().to_string()).collect();
            format!("({})", parts.join(", "))
        }
        None => format!("{key:?}"),
    }
}

/// Keys a pass of the check holds in memory at most (about; parts are by hash). A larger group
/// is checked a part of its keys at a time, each part one more scan of both stores.
const KEYS_PER_PASS: u64 = 1 << 20;

/// The log a check is against: its partitions' ends, and how many low bits of an offset
/// number a row within its message ([`GroupLog::row_bits`](crate::log::GroupLog::row_bits)).
#[derive(Debug, Clone, Copy)]
pub(crate) struct LogEnds<'a> {
    pub(crate) ends: &'a [u64],
    pub(crate) row_bits: u32,
}

pub(crate) async fn run(
    online: &OnlineBackend,
    offline: &DeltaOfflineStore,
    group: &FeatureGroup,
    log: LogEnds<'_>,
) -> Result<CheckReport> {
    run_in_parts(online, offline, group, log, KEYS_PER_PASS).await
}

/// Checks against `log`.
async fn run_in_parts(
    online: &OnlineBackend,
    offline: &DeltaOfflineStore,
    group: &FeatureGroup,
    log: LogEnds<'_>,
    keys_per_pass: u64,
) -> Result<CheckReport> {
    let mut report = CheckReport {
        log_end_offset: log.ends.iter().sum(),
        ..Default::default()
    };
    let mut offsets = OffsetTally::new(log);
    tally_offline(offline, group, &mut offsets, &mut report).await?;
    // The rows bound the keys: a group of that many rows has at most that many.
    let of = report.offline_rows.div_ceil(keys_per_pass).max(1) as u32;
    for index in 0..of {
        let part = KeyPart { index, of };
        let latest = latest_offline(offline, group, part).await?;
        report.offline_keys += latest.len() as u64;
        if group.spec.online {
            compare_online(online, group, part, &latest, &mut report).await?;
        }
    }
    offsets.report(&mut report);
    report.clean = report.duplicate_offsets == 0
        && report.missing_offsets == 0
        && report.missing_online == 0
        && report.extra_online == 0
        && report.mismatched == 0;
    Ok(report)
}

fn note(report: &mut CheckReport, difference: impl FnOnce() -> String) {
    if report.differences.len() < LISTED {
        report.differences.push(difference());
    }
}

/// Which log positions the offline table holds, one bit per row: a group of millions of rows
/// costs a few hundred kilobytes. Positions past a partition's end (there should be none) are
/// kept apart.
struct OffsetTally {
    partitions: Vec<Seen>,
    row_bits: u32,
    past_end: HashSet<u64>,
}

/// Which offsets of one partition the offline table holds.
enum Seen {
    /// A segment log's offsets count rows: a bit per offset below the end.
    Rows { bits: Vec<u64>, end: u64 },
    /// A Kafka partition's offsets are a message and a row in it: per message below the end,
    /// a bit per row. How many rows a message carries only the log knows; the table must hold
    /// each message's rows from its first without a gap (a materialiser writes a message
    /// whole, so a lost tail would be a lost message's, which is counted).
    Messages(Vec<Vec<u64>>),
}

/// Sets bit `bit` of `bits`, growing it as needed; false when it was set already.
fn set(bits: &mut Vec<u64>, bit: u64) -> bool {
    let (word, mask) = ((bit / 64) as usize, 1u64 << (bit % 64));
    if bits.len() <= word {
        bits.resize(word + 1, 0);
    }
    let new = bits[word] & mask == 0;
    bits[word] |= mask;
    new
}

fn ones(bits: &[u64]) -> u64 {
    bits.iter().map(|w| u64::from(w.count_ones())).sum()
}

impl OffsetTally {
    fn new(log: LogEnds<'_>) -> OffsetTally {
        let seen = |&end: &u64| match log.row_bits {
            0 => Seen::Rows {
                bits: vec![0; end.div_ceil(64) as usize],
                end,
            },
            bits => Seen::Messages(vec![Vec::new(); (end >> bits) as usize]),
        };
        OffsetTally {
            partitions: log.ends.iter().map(seen).collect(),
            row_bits: log.row_bits,
            past_end: HashSet::new(),
        }
    }

    /// Records a stored position; false when it was there already.
    fn insert(&mut self, position: u64) -> bool {
        let at = LogPosition::decode(position, self.partitions.len() as u32);
        match self.partitions.get_mut(at.partition as usize) {
            Some(Seen::Rows { bits, end }) if at.offset < *end => set(bits, at.offset),
            Some(Seen::Messages(messages)) => {
                let row = at.offset & ((1 << self.row_bits) - 1);
                match messages.get_mut((at.offset >> self.row_bits) as usize) {
                    Some(rows) => set(rows, row),
                    None => self.past_end.insert(position),
                }
            }
            _ => self.past_end.insert(position),
        }
    }

    fn report(&self, report: &mut CheckReport) {
        for (partition, seen) in self.partitions.iter().enumerate() {
            let missing = match seen {
                Seen::Rows { bits, end } => end - ones(bits),
                // A message without rows is missing whole; one with rows lacks those below
                // its last.
                Seen::Messages(messages) => messages
                    .iter()
                    .map(|rows| match rows.iter().rposition(|w| *w != 0) {
                        None => 1,
                        Some(word) => {
                            let through =
                                word as u64 * 64 + 64 - u64::from(rows[word].leading_zeros());
                            through - ones(rows)
                        }
                    })
                    .sum(),
            };
            report.missing_offsets += missing;
            if missing > 0 {
                let several = self.partitions.len() > 1;
                note(report, || match several {
                    true => format!(
                        "{missing} offsets of log partition {partition} are missing from the \
                         offline table"
                    ),
                    false => format!("{missing} log offsets are missing from the offline table"),
                });
            }
        }
    }
}

/// Counts the offline table's rows and tallies the offset of each.
async fn tally_offline(
    offline: &DeltaOfflineStore,
    group: &FeatureGroup,
    offsets: &mut OffsetTally,
    report: &mut CheckReport,
) -> Result<()> {
    let mut stream = offline
        .scan(&group.id(), &group.spec, ReadFilter::default())
        .await?;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        for offset in batch_offsets(&batch)?.values() {
            let offset = *offset as u64;
            report.offline_rows += 1;
            if !offsets.insert(offset) {
                report.duplicate_offsets += 1;
                note(report, || {
                    format!("offset {offset} is in the offline table more than once")
                });
            }
        }
    }
    Ok(())
}

fn batch_offsets(batch: &arrow::record_batch::RecordBatch) -> Result<Int64Array> {
    batch
        .column_by_name(OFFSET)
        .and_then(|a| a.as_any().downcast_ref::<Int64Array>().cloned())
        .ok_or_else(|| StoreError::internal("offline batch without offsets"))
}

/// The latest offline row of every key in `part`.
async fn latest_offline(
    offline: &DeltaOfflineStore,
    group: &FeatureGroup,
    part: KeyPart,
) -> Result<HashMap<Vec<u8>, OnlineRow>> {
    let spec = &group.spec;
    let mut latest: HashMap<Vec<u8>, OnlineRow> = HashMap::new();
    let mut stream = offline
        .scan(&group.id(), spec, ReadFilter::default())
        .await?;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let batch_offsets = batch_offsets(&batch)?;
        for row in 0..batch.num_rows() {
            let key = row_key(spec, &batch, row);
            if !part.holds(&key) {
                continue;
            }
            let offset = batch_offsets.value(row) as u64;
            let (key, candidate) = keyed_row(spec, &batch, row, offset, 0)?;
            match latest.get(&key) {
                Some(current) if !candidate.supersedes(current) => {}
                _ => {
                    latest.insert(key, candidate);
                }
            }
        }
    }
    Ok(latest)
}

/// Compares the online rows of `part` with the latest offline rows of the same keys.
async fn compare_online(
    online: &OnlineBackend,
    group: &FeatureGroup,
    part: KeyPart,
    latest: &HashMap<Vec<u8>, OnlineRow>,
    report: &mut CheckReport,
) -> Result<()> {
    let online_rows: HashMap<Vec<u8>, OnlineRow> =
        online.scan(&group.id(), part).await?.into_iter().collect();
    *report.online_keys.get_or_insert(0) += online_rows.len() as u64;
    for (key, expected) in latest {
        match online_rows.get(key) {
            None => {
                report.missing_online += 1;
                note(report, || {
                    format!("key {} is offline but not online", describe_key(key))
                });
            }
            Some(actual)
                if actual.event_time != expected.event_time
                    || actual.offset != expected.offset
                    || actual.values.len() != expected.values.len()
                    || !actual
                        .values
                        .iter()
                        .zip(&expected.values)
                        .all(|(a, b)| a.identical(b)) =>
            {
                report.mismatched += 1;
                note(report, || {
                    format!(
                        "key {}: online has offset {} (event time {}), offline latest is offset {} (event time {})",
                        describe_key(key),
                        actual.offset,
                        actual.event_time,
                        expected.offset,
                        expected.event_time
                    )
                });
            }
            Some(_) => {}
        }
    }
    for key in online_rows.keys().filter(|k| !latest.contains_key(*k)) {
        report.extra_online += 1;
        note(report, || {
            format!("key {} is online but not offline", describe_key(key))
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FeatureStore, InsertOptions, StoreConfig};
    use kairos_types::Format;

    /// A check in parts of a few keys finds what one pass over the whole group finds, a
    /// difference included.
    #[tokio::test]
    async fn a_check_in_parts_reports_what_a_whole_check_does() {
        let dir = tempfile::tempdir().unwrap();
        let store = FeatureStore::open(StoreConfig::with_data_dir(dir.path()))
            .await
            .unwrap();
        let spec = serde_json::from_value(serde_json::json!({
            "name": "g", "primary_key": ["k"], "event_time": "ts",
            "columns": [{"name": "k", "type": "int64"}, {"name": "ts", "type": "timestamp"},
                        {"name": "x", "type": "float64"}]
        }))
        .unwrap();
        store.create_group(spec).await.unwrap();
        let rows: String = (0..300)
            .map(|i| {
                format!(
                    "{{\"k\": {}, \"ts\": {}, \"x\": {i}}}\n",
                    i % 70,
                    1_700_000_000 + i
                )
            })
            .collect();
        store
            .insert(
                "g",
                None,
                Format::JsonLines,
                rows.into(),
                InsertOptions::default(),
            )
            .await
            .unwrap();
        let log_end = store.wait_materialised("g", None).await.unwrap();
        let rt = store.runtime("g", None).unwrap();
        let (online, offline) = (&store.inner.online, &store.inner.offline);
        let log = LogEnds {
            ends: log_end.ends(),
            row_bits: 0,
        };
        let whole = run_in_parts(online, offline, &rt.group, log, u64::MAX)
            .await
            .unwrap();
        let parts = run_in_parts(online, offline, &rt.group, log, 16)
            .await
            .unwrap();
        assert!(whole.clean && parts.clean, "{parts:?}");
        assert_eq!(
            (parts.offline_rows, parts.offline_keys, parts.online_keys),
            (300, 70, Some(70))
        );

        // An online row the offline store never had: both find it.
        let stale = serde_json::json!({"k": 5, "ts": 1_800_000_000, "x": -1.0}).to_string();
        let batch =
            kairos_types::ingest::parse_batch(&rt.group.spec, Format::JsonLines, stale.into())
                .unwrap();
        let row = keyed_row(&rt.group.spec, &batch, 0, 999, 0).unwrap();
        online
            .apply(
                &rt.group.id(),
                kairos_online::Step::whole(log_end.ends()[0], 1000),
                vec![row],
            )
            .await
            .unwrap();
        let whole = run_in_parts(online, offline, &rt.group, log, u64::MAX)
            .await
            .unwrap();
        let parts = run_in_parts(online, offline, &rt.group, log, 16)
            .await
            .unwrap();
        assert_eq!((whole.mismatched, parts.mismatched), (1, 1), "{parts:?}");
        assert!(!parts.clean);
        store.close().await;
    }

    #[test]
    fn offsets_are_tallied_once_each() {
        let mut tally = OffsetTally::new(LogEnds {
            ends: &[130],
            row_bits: 0,
        });
        for offset in (0..130).filter(|o| o % 7 != 3) {
            assert!(tally.insert(offset));
        }
        assert!(!tally.insert(64), "a second time");
        assert!(
            tally.insert(500) && !tally.insert(500),
            "past the end, apart"
        );
        let mut report = CheckReport::default();
        tally.report(&mut report);
        assert_eq!(
            report.missing_offsets,
            (0..130).filter(|o| o % 7 == 3).count() as u64
        );
    }

    /// On Kafka an offset is a message and a row in it: a message the table lacks is missing
    /// once, a gap in a message's rows is missing row by row, and a row twice is a duplicate.
    #[test]
    fn kafka_offsets_are_tallied_per_message() {
        let row_bits = 16;
        let at = |message: u64, row: u64| LogPosition::new(1, message << row_bits | row).encode(2);
        // Partition 1 ends at its fourth message; partition 0 is empty.
        let ends = [0, 4 << row_bits];
        let mut tally = OffsetTally::new(LogEnds {
            ends: &ends,
            row_bits,
        });
        // Message 0 whole (100 rows), message 1 lacks rows 3 and 70, message 2 missing,
        // message 3 one row.
        for row in 0..100 {
            assert!(tally.insert(at(0, row)));
        }
        for row in (0..90).filter(|r| ![3, 70].contains(r)) {
            assert!(tally.insert(at(1, row)));
        }
        assert!(tally.insert(at(3, 0)));
        assert!(!tally.insert(at(1, 40)), "a second time");
        assert!(tally.insert(at(4, 0)), "past the end, apart");
        let mut report = CheckReport::default();
        tally.report(&mut report);
        assert_eq!(report.missing_offsets, 2 + 1);
        assert_eq!(tally.past_end.len(), 1);
    }
}
