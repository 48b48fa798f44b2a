//! `check`: the proof of DESIGN invariant 1 — every log offset is in the offline table exactly
//! once, and the online store equals the latest row per key of the offline store.

use std::collections::{HashMap, HashSet};

use arrow::array::{Array, Int64Array};
use kairos_offline::{DeltaOfflineStore, OFFSET, ReadFilter};
use kairos_online::{OnlineBackend, OnlineStore};
use kairos_types::value::decode_key;
use kairos_types::{FeatureGroup, OnlineRow};
use serde::Serialize;

use crate::error::{Result, StoreError};
use crate::materialise::keyed_row;

/// How many differences of each kind a report lists (all are counted).
const LISTED: usize = 20;

/// What `check` found.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct CheckReport {
    /// Whether the stores agree and the offline table holds every offset exactly once.
    pub clean: bool,
    pub log_end_offset: u64,
    pub offline_rows: u64,
    pub offline_keys: u64,
    pub online_keys: Option<u64>,
    /// Offsets in the offline table more than once.
    pub duplicate_offsets: u64,
    /// Offsets below the log end that the offline table lacks.
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

pub(crate) async fn run(
    online: &OnlineBackend,
    offline: &DeltaOfflineStore,
    group: &FeatureGroup,
    log_end: u64,
) -> Result<CheckReport> {
    let spec = &group.spec;
    let table = group.id();
    let mut report = CheckReport {
        log_end_offset: log_end,
        ..Default::default()
    };

    let mut latest: HashMap<Vec<u8>, OnlineRow> = HashMap::new();
    let mut seen_offsets: HashSet<i64> = HashSet::new();
    let mut stream = offline.scan(&table, spec, ReadFilter::default()).await?;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let offsets = batch
            .column_by_name(OFFSET)
            .and_then(|a| a.as_any().downcast_ref::<Int64Array>().cloned())
            .ok_or_else(|| StoreError::internal("offline batch without offsets"))?;
        for row in 0..batch.num_rows() {
            report.offline_rows += 1;
            let offset = offsets.value(row);
            if !seen_offsets.insert(offset) {
                report.duplicate_offsets += 1;
                if report.differences.len() < LISTED {
                    report.differences.push(format!(
                        "offset {offset} is in the offline table more than once"
                    ));
                }
            }
            let (key, candidate) = keyed_row(spec, &batch, row, offset as u64, 0)?;
            match latest.get(&key) {
                Some(current) if !candidate.supersedes(current) => {}
                _ => {
                    latest.insert(key, candidate);
                }
            }
        }
    }
    report.missing_offsets = (0..log_end as i64)
        .filter(|o| !seen_offsets.contains(o))
        .count() as u64;
    if report.missing_offsets > 0 && report.differences.len() < LISTED {
        report.differences.push(format!(
            "{} log offsets are missing from the offline table",
            report.missing_offsets
        ));
    }
    report.offline_keys = latest.len() as u64;

    if spec.online {
        let online_rows: HashMap<Vec<u8>, OnlineRow> =
            online.scan(&table).await?.into_iter().collect();
        report.online_keys = Some(online_rows.len() as u64);
        for (key, expected) in &latest {
            match online_rows.get(key) {
                None => {
                    report.missing_online += 1;
                    if report.differences.len() < LISTED {
                        report.differences.push(format!(
                            "key {} is offline but not online",
                            describe_key(key)
                        ));
                    }
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
                    if report.differences.len() < LISTED {
                        report.differences.push(format!(
                            "key {}: online has offset {} (event time {}), offline latest is offset {} (event time {})",
                            describe_key(key),
                            actual.offset,
                            actual.event_time,
                            expected.offset,
                            expected.event_time
                        ));
                    }
                }
                Some(_) => {}
            }
        }
        for key in online_rows.keys().filter(|k| !latest.contains_key(*k)) {
            report.extra_online += 1;
            if report.differences.len() < LISTED {
                report.differences.push(format!(
                    "key {} is online but not offline",
                    describe_key(key)
                ));
            }
        }
    }
    report.clean = report.duplicate_offsets == 0
        && report.missing_offsets == 0
        && report.missing_online == 0
        && report.extra_online == 0
        && report.mismatched == 0;
    Ok(report)
}
