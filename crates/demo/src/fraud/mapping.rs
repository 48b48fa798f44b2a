//! Card data nobody here wrote, mapped onto the example's feature groups: a mapping file names,
//! for every column of each group, the source CSV column it comes from (or a function of one),
//! and each value is converted to the group's column type. Card profiles are one row per card:
//! the first row of each card, as of its first payment.
//!
//! ```toml
//! [transactions]
//! cc_num = "cc_num"
//! ts = "trans_date_trans_time"
//! tx_id = "row_number()"         # 1, 2, 3… in file order
//! merchant_id = "hash(merchant)" # a stable integer for a text id
//!
//! [card_profiles]
//! ts = "'2020-01-01T00:00:00Z'"  # the same value on every row
//! credit_limit = "null"          # not in the source
//! ```

use std::collections::{BTreeMap, HashSet};

use kairos_store::{FeatureStore, InsertOptions};
use kairos_types::{FeatureGroupSpec, FeatureType, Format};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{LABELS_GROUP, PROFILES_GROUP, Result, TRANSACTIONS_GROUP, failed};

/// A mapping file: per group (`transactions`, `card_profiles`, `labels`), target column →
/// source expression.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mapping {
    #[serde(default)]
    pub description: String,
    pub transactions: BTreeMap<String, String>,
    pub card_profiles: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
}

/// Where a value comes from.
#[derive(Debug, Clone, PartialEq)]
enum Source {
    Column(usize),
    Hash(usize),
    RowNumber,
    Null,
    Literal(String),
}

impl Mapping {
    pub fn parse(text: &str) -> Result<Mapping> {
        toml::from_str(text).map_err(|e| failed(format!("mapping: {e}")))
    }
}

fn compile(
    group: &FeatureGroupSpec,
    columns: &BTreeMap<String, String>,
    header: &[String],
) -> Result<Vec<(String, FeatureType, Source)>> {
    let find = |name: &str, target: &str| {
        header.iter().position(|h| h == name).ok_or_else(|| {
            failed(format!(
                "mapping for {}.{target}: the CSV has no column '{name}' (its columns: {})",
                group.name,
                header.join(", ")
            ))
        })
    };
    if let Some(extra) = columns.keys().find(|c| group.column(c).is_none()) {
        return Err(failed(format!(
            "mapping: '{extra}' is not a column of {}",
            group.name
        )));
    }
    group
        .columns
        .iter()
        .map(|c| {
            let expr = columns.get(&c.name).ok_or_else(|| {
                failed(format!(
                    "mapping: no source for {}.{} (write \"null\" to leave it empty)",
                    group.name, c.name
                ))
            })?;
            let source = match expr.trim() {
                "null" => Source::Null,
                "row_number()" => Source::RowNumber,
                e if e.len() >= 2 && e.starts_with('\'') && e.ends_with('\'') => {
                    Source::Literal(e[1..e.len() - 1].to_string())
                }
                e if e.starts_with("hash(") && e.ends_with(')') => {
                    Source::Hash(find(&e[5..e.len() - 1], &c.name)?)
                }
                e => Source::Column(find(e, &c.name)?),
            };
            Ok((c.name.clone(), c.ty, source))
        })
        .collect()
}

/// FNV-1a, 63 bits: the same text always gives the same non-negative id.
fn hash_id(text: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h >> 1) as i64
}

fn convert(text: &str, ty: FeatureType) -> std::result::Result<Value, String> {
    let text = text.trim();
    Ok(match ty {
        FeatureType::Int32 | FeatureType::Int64 => text
            .parse::<i64>()
            .map_err(|_| format!("expected an integer, got '{text}'"))?
            .into(),
        FeatureType::Float32 | FeatureType::Float64 => text
            .parse::<f64>()
            .map_err(|_| format!("expected a number, got '{text}'"))?
            .into(),
        FeatureType::Bool => match text {
            "1" | "true" | "True" | "TRUE" => true.into(),
            "0" | "false" | "False" | "FALSE" => false.into(),
            _ => return Err(format!("expected 0, 1, true or false, got '{text}'")),
        },
        // Timestamps and dates are parsed by the store, with its formats and errors.
        _ => text.into(),
    })
}

/// The rows of each group, as JSON lines, from `csv`.
pub struct Mapped {
    pub transactions: Vec<u8>,
    pub card_profiles: Vec<u8>,
    pub labels: Vec<u8>,
    pub rows: usize,
    pub cards: usize,
}

/// Maps every row of `csv` onto the three groups. An unreadable value fails the whole file,
/// naming the line and the column.
pub fn map_csv(
    mapping: &Mapping,
    csv_text: &[u8],
    groups: [&FeatureGroupSpec; 3],
) -> Result<Mapped> {
    let mut reader = csv::Reader::from_reader(csv_text);
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| failed(format!("CSV header: {e}")))?
        .iter()
        .map(str::to_string)
        .collect();
    let [transactions, profiles, labels] = groups;
    let plans = [
        compile(transactions, &mapping.transactions, &header)?,
        compile(profiles, &mapping.card_profiles, &header)?,
        compile(labels, &mapping.labels, &header)?,
    ];
    let mut outputs: [Vec<u8>; 3] = Default::default();
    let mut seen_cards = HashSet::new();
    let mut rows = 0;
    for (i, record) in reader.records().enumerate() {
        let line = i + 2;
        let record = record.map_err(|e| failed(format!("CSV line {line}: {e}")))?;
        rows += 1;
        for (g, plan) in plans.iter().enumerate() {
            let mut object = Map::new();
            for (name, ty, source) in plan {
                let value = match source {
                    Source::Null => Value::Null,
                    Source::RowNumber => (i as i64 + 1).into(),
                    Source::Literal(text) => convert(text, *ty).map_err(|e| {
                        failed(format!("mapping for {}.{name}: {e}", groups[g].name))
                    })?,
                    Source::Hash(c) => hash_id(&record[*c]).into(),
                    Source::Column(c) => convert(&record[*c], *ty).map_err(|e| {
                        failed(format!(
                            "CSV line {line}, column '{}' (for {}): {e}",
                            header[*c], groups[g].name
                        ))
                    })?,
                };
                object.insert(name.clone(), value);
            }
            // One profile per card: its first row.
            if g == 1 {
                let key: Vec<String> = profiles
                    .primary_key
                    .iter()
                    .map(|k| object[k].to_string())
                    .collect();
                if !seen_cards.insert(key) {
                    continue;
                }
            }
            serde_json::to_writer(&mut outputs[g], &Value::Object(object))
                .map_err(|e| failed(e.to_string()))?;
            outputs[g].push(b'\n');
        }
    }
    let [transactions, card_profiles, labels] = outputs;
    Ok(Mapped {
        transactions,
        card_profiles,
        labels,
        rows,
        cards: seen_cards.len(),
    })
}

/// Writes mapped rows into the example's groups (created beforehand).
pub async fn load(store: &FeatureStore, mapped: Mapped) -> Result<()> {
    for (group, body) in [
        (PROFILES_GROUP, mapped.card_profiles),
        (TRANSACTIONS_GROUP, mapped.transactions),
        (LABELS_GROUP, mapped.labels),
    ] {
        store
            .insert(
                group,
                None,
                Format::JsonLines,
                body.into(),
                InsertOptions::default(),
            )
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fraud::definitions;

    fn groups() -> [FeatureGroupSpec; 3] {
        [
            toml::from_str(definitions::TRANSACTIONS).unwrap(),
            toml::from_str(definitions::CARD_PROFILES).unwrap(),
            toml::from_str(definitions::LABELS).unwrap(),
        ]
    }

    const MAPPING: &str = r#"
        [transactions]
        cc_num = "card"
        ts = "time"
        tx_id = "row_number()"
        amount = "amt"
        merchant_id = "hash(shop)"
        category = "category"
        latitude = "lat"
        longitude = "lon"

        [card_profiles]
        cc_num = "card"
        ts = "'2020-01-01T00:00:00Z'"
        home_latitude = "lat"
        home_longitude = "lon"
        credit_limit = "null"

        [labels]
        tx_id = "row_number()"
        ts = "time"
        cc_num = "card"
        tx_ts = "time"
        is_fraud = "fraud"
    "#;

    #[test]
    fn rows_map_onto_each_group_with_one_profile_per_card() {
        let csv = b"card,time,amt,shop,category,lat,lon,fraud\n\
            7,2020-06-21 12:14:25,2.86,Kirlin,gas,33.9,-80.9,0\n\
            8,2020-06-21 12:15:00,10.5,Sporer,grocery,40.3,-110.4,1\n\
            7,2020-06-21 13:00:00,99.0,Kirlin,gas,34.0,-81.0,0\n";
        let [t, p, l] = groups();
        let mapped = map_csv(&Mapping::parse(MAPPING).unwrap(), csv, [&t, &p, &l]).unwrap();
        assert_eq!((mapped.rows, mapped.cards), (3, 2));
        let lines = |b: &[u8]| -> Vec<Value> {
            std::str::from_utf8(b)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect()
        };
        let tx = lines(&mapped.transactions);
        assert_eq!(tx.len(), 3);
        assert_eq!(tx[2]["tx_id"], 3);
        assert_eq!(tx[0]["merchant_id"], tx[2]["merchant_id"]);
        assert_ne!(tx[0]["merchant_id"], tx[1]["merchant_id"]);
        assert_eq!(tx[1]["amount"], 10.5);
        let profiles = lines(&mapped.card_profiles);
        assert_eq!(profiles.len(), 2);
        assert_eq!(profiles[0]["credit_limit"], Value::Null);
        assert_eq!(profiles[1]["ts"], "2020-01-01T00:00:00Z");
        assert_eq!(lines(&mapped.labels)[1]["is_fraud"], true);
    }

    #[test]
    fn a_bad_value_or_a_missing_column_is_named() {
        let [t, p, l] = groups();
        let mapping = Mapping::parse(MAPPING).unwrap();
        let bad =
            b"card,time,amt,shop,category,lat,lon,fraud\n7,2020-06-21 12:14:25,abc,K,gas,1,2,0\n";
        let err = map_csv(&mapping, bad, [&t, &p, &l])
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("line 2, column 'amt'") && err.contains("'abc'"),
            "{err}"
        );
        let missing = b"card,time\n7,2020-06-21 12:14:25\n";
        let err = map_csv(&mapping, missing, [&t, &p, &l])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("no column 'amt'"), "{err}");
    }
}
