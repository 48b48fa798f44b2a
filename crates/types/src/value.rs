//! Typed values of single rows: what the online store holds and what a key lookup carries.

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Date32Array, FixedSizeListArray, Float32Array,
    Float64Array, Int32Array, Int64Array, StringArray, TimestampMicrosecondArray,
};
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, SecondsFormat};
use serde::{Deserialize, Serialize};

use crate::ingest::{parse_date, parse_timestamp};
use crate::schema::FeatureType;

/// One value of one feature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Value {
    Null,
    Bool(bool),
    Int32(i32),
    Int64(i64),
    Float32(f32),
    Float64(f64),
    String(String),
    /// Microseconds since the Unix epoch, UTC.
    Timestamp(i64),
    /// Days since the Unix epoch.
    Date(i32),
    Embedding(Vec<f32>),
}

impl Value {
    /// Whether two values are the same bits: unlike `==`, NaN is identical to itself (a
    /// stored NaN read back is the same value) and 0.0 is not identical to -0.0.
    pub fn identical(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Float32(a), Value::Float32(b)) => a.to_bits() == b.to_bits(),
            (Value::Float64(a), Value::Float64(b)) => a.to_bits() == b.to_bits(),
            (Value::Embedding(a), Value::Embedding(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
            }
            (a, b) => a == b,
        }
    }

    /// Builds a column of `ty`'s canonical Arrow type from values (each `Null` or of `ty`).
    pub fn to_array<'a>(ty: FeatureType, values: impl IntoIterator<Item = &'a Value>) -> ArrayRef {
        use arrow::array::{
            BooleanBuilder, Date32Builder, FixedSizeListBuilder, Float32Builder, Float64Builder,
            Int32Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
        };
        macro_rules! build {
            ($builder:expr, $($variant:ident)|+) => {{
                let mut b = $builder;
                for v in values {
                    match v {
                        $(Value::$variant(x) => b.append_value(x.clone()),)+
                        _ => b.append_null(),
                    }
                }
                Arc::new(b.finish()) as ArrayRef
            }};
        }
        match ty {
            FeatureType::Bool => build!(BooleanBuilder::new(), Bool),
            FeatureType::Int32 => build!(Int32Builder::new(), Int32),
            FeatureType::Int64 => build!(Int64Builder::new(), Int64),
            FeatureType::Float32 => build!(Float32Builder::new(), Float32),
            FeatureType::Float64 => build!(Float64Builder::new(), Float64),
            FeatureType::String => build!(StringBuilder::new(), String),
            FeatureType::Timestamp => build!(
                TimestampMicrosecondBuilder::new().with_timezone(crate::schema::UTC),
                Timestamp
            ),
            FeatureType::Date => build!(Date32Builder::new(), Date),
            FeatureType::Embedding { dim } => {
                let mut b = FixedSizeListBuilder::new(Float32Builder::new(), dim as i32);
                for v in values {
                    match v {
                        Value::Embedding(xs) if xs.len() == dim as usize => {
                            b.values().append_slice(xs);
                            b.append(true);
                        }
                        _ => {
                            (0..dim).for_each(|_| b.values().append_null());
                            b.append(false);
                        }
                    }
                }
                Arc::new(b.finish()) as ArrayRef
            }
        }
    }

    /// Reads row `row` of a column stored in its canonical Arrow type.
    pub fn from_array(array: &ArrayRef, ty: FeatureType, row: usize) -> Value {
        if array.is_null(row) {
            return Value::Null;
        }
        match ty {
            FeatureType::Bool => Value::Bool(
                array
                    .as_any()
                    .downcast_ref::<BooleanArray>()
                    .expect("bool")
                    .value(row),
            ),
            FeatureType::Int32 => Value::Int32(
                array
                    .as_any()
                    .downcast_ref::<Int32Array>()
                    .expect("int32")
                    .value(row),
            ),
            FeatureType::Int64 => Value::Int64(
                array
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .expect("int64")
                    .value(row),
            ),
            FeatureType::Float32 => Value::Float32(
                array
                    .as_any()
                    .downcast_ref::<Float32Array>()
                    .expect("float32")
                    .value(row),
            ),
            FeatureType::Float64 => Value::Float64(
                array
                    .as_any()
                    .downcast_ref::<Float64Array>()
                    .expect("float64")
                    .value(row),
            ),
            FeatureType::String => Value::String(
                array
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .expect("utf8")
                    .value(row)
                    .to_string(),
            ),
            FeatureType::Timestamp => Value::Timestamp(
                array
                    .as_any()
                    .downcast_ref::<TimestampMicrosecondArray>()
                    .expect("timestamp")
                    .value(row),
            ),
            FeatureType::Date => Value::Date(
                array
                    .as_any()
                    .downcast_ref::<Date32Array>()
                    .expect("date")
                    .value(row),
            ),
            FeatureType::Embedding { .. } => {
                let list = array
                    .as_any()
                    .downcast_ref::<FixedSizeListArray>()
                    .expect("embedding");
                let values = list.value(row);
                let floats = values.as_primitive::<arrow::datatypes::Float32Type>();
                Value::Embedding(floats.iter().map(|v| v.unwrap_or(f32::NAN)).collect())
            }
        }
    }

    /// Parses a key value given in JSON (a number, a string, a bool) as the key column's type.
    /// Strings are accepted for every type, so keys can come from URL paths.
    pub fn from_json(json: &serde_json::Value, ty: FeatureType) -> Result<Value, String> {
        let expected = || format!("expected {ty}, got {json}");
        Ok(match (ty, json) {
            (_, serde_json::Value::Null) => Value::Null,
            (FeatureType::Bool, serde_json::Value::Bool(b)) => Value::Bool(*b),
            (FeatureType::Int32, serde_json::Value::Number(n)) => Value::Int32(
                n.as_i64()
                    .and_then(|v| i32::try_from(v).ok())
                    .ok_or_else(expected)?,
            ),
            (FeatureType::Int64, serde_json::Value::Number(n)) => {
                Value::Int64(n.as_i64().ok_or_else(expected)?)
            }
            (FeatureType::Float32, serde_json::Value::Number(n)) => {
                Value::Float32(n.as_f64().ok_or_else(expected)? as f32)
            }
            (FeatureType::Float64, serde_json::Value::Number(n)) => {
                Value::Float64(n.as_f64().ok_or_else(expected)?)
            }
            (FeatureType::Timestamp, serde_json::Value::Number(n)) => {
                Value::Timestamp(parse_timestamp(&n.to_string()).map_err(|_| expected())?)
            }
            (FeatureType::Embedding { dim }, serde_json::Value::Array(items)) => {
                let floats: Option<Vec<f32>> =
                    items.iter().map(|v| v.as_f64().map(|f| f as f32)).collect();
                let floats = floats.ok_or_else(expected)?;
                if floats.len() != dim as usize {
                    return Err(format!(
                        "expected {dim} values for {ty}, got {}",
                        floats.len()
                    ));
                }
                Value::Embedding(floats)
            }
            (_, serde_json::Value::String(s)) => Value::parse_text(s, ty)?,
            _ => return Err(expected()),
        })
    }

    /// Parses a value written as text (CSV cells, URL path segments).
    pub fn parse_text(s: &str, ty: FeatureType) -> Result<Value, String> {
        let expected = || format!("expected {ty}, got '{s}'");
        let t = s.trim();
        Ok(match ty {
            FeatureType::Bool => match t.to_ascii_lowercase().as_str() {
                "true" | "1" => Value::Bool(true),
                "false" | "0" => Value::Bool(false),
                _ => return Err(expected()),
            },
            FeatureType::Int32 => Value::Int32(t.parse().map_err(|_| expected())?),
            FeatureType::Int64 => Value::Int64(t.parse().map_err(|_| expected())?),
            FeatureType::Float32 => Value::Float32(t.parse().map_err(|_| expected())?),
            FeatureType::Float64 => Value::Float64(t.parse().map_err(|_| expected())?),
            FeatureType::String => Value::String(s.to_string()),
            FeatureType::Timestamp => {
                Value::Timestamp(parse_timestamp(t).map_err(|e| format!("{e}, got '{s}'"))?)
            }
            FeatureType::Date => Value::Date(parse_date(t).map_err(|e| format!("{e}, got '{s}'"))?),
            FeatureType::Embedding { dim } => {
                let floats: Vec<f32> = serde_json::from_str(t).map_err(|_| expected())?;
                if floats.len() != dim as usize {
                    return Err(format!(
                        "expected {dim} values for {ty}, got {}",
                        floats.len()
                    ));
                }
                Value::Embedding(floats)
            }
        })
    }

    /// The value as JSON: timestamps as RFC 3339 strings, dates as `YYYY-MM-DD`.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => (*b).into(),
            Value::Int32(v) => (*v).into(),
            Value::Int64(v) => (*v).into(),
            Value::Float32(v) => serde_json::Number::from_f64(f64::from(*v))
                .map_or(serde_json::Value::Null, Into::into),
            Value::Float64(v) => {
                serde_json::Number::from_f64(*v).map_or(serde_json::Value::Null, Into::into)
            }
            Value::String(s) => s.clone().into(),
            Value::Timestamp(micros) => format_timestamp(*micros).into(),
            Value::Date(days) => format_date(*days).into(),
            Value::Embedding(v) => v
                .iter()
                .map(|f| {
                    serde_json::Number::from_f64(f64::from(*f))
                        .map_or(serde_json::Value::Null, Into::into)
                })
                .collect(),
        }
    }
}

/// Formats microseconds since the epoch as RFC 3339 in UTC.
pub fn format_timestamp(micros: i64) -> String {
    DateTime::from_timestamp_micros(micros)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
        .unwrap_or_else(|| micros.to_string())
}

fn format_date(days: i32) -> String {
    NaiveDate::from_ymd_opt(1970, 1, 1)
        .and_then(|epoch| epoch.checked_add_signed(chrono::Duration::days(i64::from(days))))
        .map(|d| d.to_string())
        .unwrap_or_else(|| days.to_string())
}

/// Encodes primary-key values into the bytes the online store is keyed by.
///
/// The encoding is deterministic: equal keys give equal bytes, whichever path (ingest, a JSON
/// lookup, a URL path) produced the values.
pub fn encode_key(values: &[Value]) -> Vec<u8> {
    postcard::to_allocvec(values).expect("values always serialize")
}

/// Decodes bytes made by [`encode_key`].
pub fn decode_key(bytes: &[u8]) -> Option<Vec<Value>> {
    postcard::from_bytes(bytes).ok()
}

/// The row the online store keeps for one primary key: the feature values in schema order, and
/// where the row came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OnlineRow {
    /// Event time in microseconds; the row with the greatest event time wins.
    pub event_time: i64,
    /// The row's log offset; breaks event-time ties (the later write wins).
    pub offset: u64,
    /// When the row was appended to the log, in microseconds.
    pub ingested_at: i64,
    pub values: Vec<Value>,
}

impl OnlineRow {
    /// Whether this row should replace `current` (DESIGN invariant 2): a greater event time wins;
    /// on a tie, the later log offset wins. An older, late event never overwrites a newer one.
    pub fn supersedes(&self, current: &OnlineRow) -> bool {
        self.rank() > current.rank()
    }

    /// What orders the rows of one key: of two, the one with the greater rank supersedes.
    pub fn rank(&self) -> (i64, u64) {
        (self.event_time, self.offset)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::new();
        self.encode_onto(&mut bytes);
        bytes
    }

    /// Appends the row's encoding to `bytes` (many rows to one buffer, without a buffer each).
    pub fn encode_onto(&self, bytes: &mut Vec<u8>) {
        *bytes = postcard::to_extend(self, std::mem::take(bytes)).expect("rows always serialize");
    }

    pub fn decode(bytes: &[u8]) -> Result<OnlineRow, String> {
        postcard::from_bytes(bytes).map_err(|e| format!("corrupt online row: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(event_time: i64, offset: u64) -> OnlineRow {
        OnlineRow {
            event_time,
            offset,
            ingested_at: 0,
            values: vec![],
        }
    }

    #[test]
    fn newer_event_time_wins_and_ties_go_to_the_later_offset() {
        assert!(row(10, 1).supersedes(&row(9, 5)));
        assert!(!row(9, 7).supersedes(&row(10, 1)));
        assert!(row(10, 2).supersedes(&row(10, 1)));
        assert!(!row(10, 1).supersedes(&row(10, 1)));
    }

    #[test]
    fn keys_from_json_and_text_encode_alike() {
        let from_json = Value::from_json(&serde_json::json!(42), FeatureType::Int64).unwrap();
        let from_text = Value::parse_text("42", FeatureType::Int64).unwrap();
        assert_eq!(encode_key(&[from_json]), encode_key(&[from_text]));
        assert_eq!(
            decode_key(&encode_key(&[Value::Int64(42)])),
            Some(vec![Value::Int64(42)])
        );
    }

    #[test]
    fn json_output_is_readable() {
        assert_eq!(
            Value::Timestamp(1_700_000_000_000_000).to_json(),
            "2023-11-14T22:13:20Z"
        );
        assert_eq!(Value::Date(19_000).to_json(), "2022-01-08");
        assert!(Value::from_json(&serde_json::json!(1.5), FeatureType::Int64).is_err());
    }
}
