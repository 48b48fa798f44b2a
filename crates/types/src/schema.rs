//! Feature types, columns and feature-group definitions, and their Arrow mapping.

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::expectations::{Expectation, Expectations};

/// The time zone every timestamp is stored in.
pub const UTC: &str = "UTC";

/// The type of one feature column.
///
/// Written as a string in definitions and JSON: `bool`, `int32`, `int64`, `float32`, `float64`,
/// `string`, `timestamp` (UTC, microseconds), `date`, or `embedding(N)` (N float32 values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum FeatureType {
    Bool,
    Int32,
    Int64,
    Float32,
    Float64,
    String,
    Timestamp,
    Date,
    Embedding { dim: u32 },
}

impl FeatureType {
    /// The canonical Arrow type a column of this feature type is stored as.
    pub fn arrow_type(self) -> DataType {
        match self {
            FeatureType::Bool => DataType::Boolean,
            FeatureType::Int32 => DataType::Int32,
            FeatureType::Int64 => DataType::Int64,
            FeatureType::Float32 => DataType::Float32,
            FeatureType::Float64 => DataType::Float64,
            FeatureType::String => DataType::Utf8,
            FeatureType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into())),
            FeatureType::Date => DataType::Date32,
            FeatureType::Embedding { dim } => DataType::FixedSizeList(
                Arc::new(Field::new("item", DataType::Float32, true)),
                dim as i32,
            ),
        }
    }

    /// The feature type a column of Arrow type `ty` holds, if it is one Kairos stores (the
    /// inverse of [`Self::arrow_type`], any time zone and list field).
    pub fn from_arrow(ty: &DataType) -> Option<FeatureType> {
        Some(match ty {
            DataType::Boolean => FeatureType::Bool,
            DataType::Int32 => FeatureType::Int32,
            DataType::Int64 => FeatureType::Int64,
            DataType::Float32 => FeatureType::Float32,
            DataType::Float64 => FeatureType::Float64,
            DataType::Utf8 => FeatureType::String,
            DataType::Timestamp(TimeUnit::Microsecond, _) => FeatureType::Timestamp,
            DataType::Date32 => FeatureType::Date,
            DataType::FixedSizeList(item, n)
                if item.data_type() == &DataType::Float32 && *n > 0 =>
            {
                FeatureType::Embedding { dim: *n as u32 }
            }
            _ => return None,
        })
    }

    /// Whether values of this type are numbers (expressions and numeric aggregations read them).
    pub fn is_numeric(self) -> bool {
        matches!(
            self,
            FeatureType::Int32 | FeatureType::Int64 | FeatureType::Float32 | FeatureType::Float64
        )
    }

    /// Whether values of this type can identify an entity (primary-key columns).
    pub fn is_key_type(self) -> bool {
        matches!(
            self,
            FeatureType::Bool
                | FeatureType::Int32
                | FeatureType::Int64
                | FeatureType::String
                | FeatureType::Date
                | FeatureType::Timestamp
        )
    }
}

impl fmt::Display for FeatureType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FeatureType::Bool => f.write_str("bool"),
            FeatureType::Int32 => f.write_str("int32"),
            FeatureType::Int64 => f.write_str("int64"),
            FeatureType::Float32 => f.write_str("float32"),
            FeatureType::Float64 => f.write_str("float64"),
            FeatureType::String => f.write_str("string"),
            FeatureType::Timestamp => f.write_str("timestamp"),
            FeatureType::Date => f.write_str("date"),
            FeatureType::Embedding { dim } => write!(f, "embedding({dim})"),
        }
    }
}

impl FromStr for FeatureType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim().to_ascii_lowercase();
        Ok(match s.as_str() {
            "bool" | "boolean" => FeatureType::Bool,
            "int32" | "int" => FeatureType::Int32,
            "int64" | "bigint" | "long" => FeatureType::Int64,
            "float32" | "float" => FeatureType::Float32,
            "float64" | "double" => FeatureType::Float64,
            "string" | "str" | "utf8" => FeatureType::String,
            "timestamp" => FeatureType::Timestamp,
            "date" => FeatureType::Date,
            other => {
                let dim = other
                    .strip_prefix("embedding(")
                    .and_then(|rest| rest.strip_suffix(')'))
                    .and_then(|dim| dim.trim().parse::<u32>().ok())
                    .filter(|dim| *dim > 0)
                    .ok_or_else(|| {
                        format!(
                            "unknown feature type '{other}': expected one of bool, int32, int64, \
                             float32, float64, string, timestamp, date, embedding(N)"
                        )
                    })?;
                FeatureType::Embedding { dim }
            }
        })
    }
}

impl TryFrom<String> for FeatureType {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<FeatureType> for String {
    fn from(t: FeatureType) -> String {
        t.to_string()
    }
}

/// One column of a feature group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Column {
    pub name: String,
    #[serde(rename = "type")]
    #[schema(value_type = String, example = "float64")]
    pub ty: FeatureType,
    /// Whether the column may hold nulls. Primary-key and event-time columns never may.
    #[serde(default = "default_true")]
    pub nullable: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

fn default_true() -> bool {
    true
}

impl Column {
    pub fn new(name: impl Into<String>, ty: FeatureType) -> Self {
        Self {
            name: name.into(),
            ty,
            nullable: true,
            description: None,
        }
    }

    pub fn required(mut self) -> Self {
        self.nullable = false;
        self
    }
}

/// What a user supplies to create a feature group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FeatureGroupSpec {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub columns: Vec<Column>,
    /// The columns that identify an entity; one or more.
    pub primary_key: Vec<String>,
    /// The column holding each row's event time; must be of type `timestamp`.
    pub event_time: String,
    /// Whether rows are materialised into the online store.
    #[serde(default = "default_true")]
    pub online: bool,
    /// Online rows whose event time is older than this many seconds read as expired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
    /// An approximate-nearest-neighbour index over an embedding column, fed by the log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vector_index: Option<VectorIndexSpec>,
    /// Rules every written row must meet, checked on every insert (see [`crate::expectations`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expectations: Vec<Expectation>,
}

/// A feature group's vector index: which embedding column, which distance, how the graph is
/// built, and which columns are kept beside the vectors for filtered search. The key is the
/// group's primary key, which must then be one integer column. A row whose embedding is null
/// takes its key out of the index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VectorIndexSpec {
    pub column: String,
    #[serde(default)]
    #[schema(value_type = String, example = "cosine")]
    pub metric: kairos_vector::Metric,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub hnsw: kairos_vector::HnswParams,
    /// Below this share of keys passing a filter, a filtered search scans them exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact_below: Option<f64>,
    /// Columns a filtered search may test (`in_stock = true AND region = 'SE'`).
    #[serde(default)]
    pub attributes: Vec<String>,
}

impl VectorIndexSpec {
    /// The index's configuration for an embedding of `dim` components.
    pub fn config(&self, dim: usize) -> kairos_vector::IndexConfig {
        let mut config = kairos_vector::IndexConfig::new(dim, self.metric);
        config.hnsw = self.hnsw;
        if let Some(share) = self.exact_below {
            config.exact_below = share;
        }
        config
    }
}

/// Why a feature-group definition was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid feature group definition: {0}")]
pub struct SpecError(pub String);

impl FeatureGroupSpec {
    /// Checks the definition on its own terms: names, keys, event time.
    pub fn validate(&self) -> Result<(), SpecError> {
        let err = |m: String| Err(SpecError(m));
        if !is_identifier(&self.name) {
            return err(format!(
                "name '{}' must be 1-128 characters of letters, digits, '_' or '-', starting with a letter",
                self.name
            ));
        }
        if self.columns.is_empty() {
            return err("columns: at least one column is required".into());
        }
        let mut seen = HashSet::new();
        for (i, col) in self.columns.iter().enumerate() {
            if !is_identifier(&col.name) {
                return err(format!(
                    "columns[{i}]: name '{}' is not a valid column name",
                    col.name
                ));
            }
            if col.name.starts_with('_') {
                return err(format!(
                    "columns[{i}]: names starting with '_' are reserved"
                ));
            }
            if !seen.insert(col.name.as_str()) {
                return err(format!("columns[{i}]: duplicate column '{}'", col.name));
            }
        }
        if self.primary_key.is_empty() {
            return err("primary_key: at least one column is required".into());
        }
        let mut key_seen = HashSet::new();
        for key in &self.primary_key {
            let Some(col) = self.column(key) else {
                return err(format!("primary_key: column '{key}' is not in columns"));
            };
            if !col.ty.is_key_type() {
                return err(format!(
                    "primary_key: column '{key}' has type {}, which cannot be a key",
                    col.ty
                ));
            }
            if !key_seen.insert(key) {
                return err(format!("primary_key: column '{key}' is listed twice"));
            }
        }
        match self.column(&self.event_time) {
            None => {
                return err(format!(
                    "event_time: column '{}' is not in columns",
                    self.event_time
                ));
            }
            Some(col) if col.ty != FeatureType::Timestamp => {
                return err(format!(
                    "event_time: column '{}' has type {}, expected timestamp",
                    self.event_time, col.ty
                ));
            }
            Some(_) => {}
        }
        if self.ttl_seconds == Some(0) {
            return err("ttl_seconds: must be positive when given".into());
        }
        if let Some(index) = &self.vector_index {
            self.validate_vector_index(index)?;
        }
        Expectations::compile(self)?;
        Ok(())
    }

    fn validate_vector_index(&self, index: &VectorIndexSpec) -> Result<(), SpecError> {
        let err = |m: String| Err(SpecError(format!("vector_index: {m}")));
        let dim = match self.column(&index.column) {
            None => return err(format!("column '{}' is not in columns", index.column)),
            Some(Column {
                ty: FeatureType::Embedding { dim },
                ..
            }) => *dim as usize,
            Some(col) => {
                return err(format!(
                    "column '{}' has type {}, expected an embedding",
                    col.name, col.ty
                ));
            }
        };
        match self.primary_key.as_slice() {
            [key]
                if matches!(
                    self.column(key).map(|c| c.ty),
                    Some(FeatureType::Int32 | FeatureType::Int64)
                ) => {}
            _ => {
                return err("the primary key must be one integer column (the index's keys)".into());
            }
        }
        for attribute in &index.attributes {
            match self.column(attribute) {
                None => return err(format!("attribute '{attribute}' is not in columns")),
                Some(col) if matches!(col.ty, FeatureType::Embedding { .. }) => {
                    return err(format!(
                        "attribute '{attribute}' is an embedding; filters test scalar columns"
                    ));
                }
                Some(_) => {}
            }
        }
        index
            .config(dim)
            .validate()
            .map_err(|e| SpecError(format!("vector_index: {e}")))
    }

    /// The definition as stored: key and event-time columns marked non-nullable, as they are
    /// enforced, so what `describe` shows is what ingestion checks.
    pub fn normalised(mut self) -> Self {
        let required: Vec<String> = self
            .columns
            .iter()
            .filter(|c| !self.is_nullable(c))
            .map(|c| c.name.clone())
            .collect();
        for col in &mut self.columns {
            if required.contains(&col.name) {
                col.nullable = false;
            }
        }
        self
    }

    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// Whether a column may hold nulls, after the key and event-time rules.
    pub fn is_nullable(&self, col: &Column) -> bool {
        col.nullable && col.name != self.event_time && !self.primary_key.contains(&col.name)
    }

    /// The canonical Arrow schema of the group's rows, in column order.
    pub fn arrow_schema(&self) -> SchemaRef {
        let fields: Vec<Field> = self
            .columns
            .iter()
            .map(|c| Field::new(&c.name, c.ty.arrow_type(), self.is_nullable(c)))
            .collect();
        Arc::new(Schema::new(fields))
    }

    /// Positions of the primary-key columns in `columns`.
    pub fn key_indices(&self) -> Vec<usize> {
        self.primary_key
            .iter()
            .map(|k| {
                self.columns
                    .iter()
                    .position(|c| &c.name == k)
                    .expect("validated key")
            })
            .collect()
    }

    /// Position of the event-time column in `columns`.
    pub fn event_time_index(&self) -> usize {
        self.columns
            .iter()
            .position(|c| c.name == self.event_time)
            .expect("validated event time")
    }
}

/// Whether `s` is a valid name: 1-128 letters, digits, `_` or `-`, starting with a letter or `_`.
pub fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// A feature group as the catalog holds it: a definition at a version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FeatureGroup {
    #[serde(flatten)]
    pub spec: FeatureGroupSpec,
    /// Versions count from 1; creating an existing name makes the next version.
    pub version: u32,
    /// RFC 3339 creation time.
    pub created_at: String,
}

impl FeatureGroup {
    pub fn id(&self) -> TableId {
        TableId::new(&self.spec.name, self.version)
    }
}

/// Names one feature group version in the stores.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableId {
    pub name: String,
    pub version: u32,
}

impl TableId {
    pub fn new(name: &str, version: u32) -> Self {
        Self {
            name: name.to_string(),
            version,
        }
    }
}

impl fmt::Display for TableId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}_v{}", self.name, self.version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn spec() -> FeatureGroupSpec {
        FeatureGroupSpec {
            name: "transactions".into(),
            description: String::new(),
            columns: vec![
                Column::new("cc_num", FeatureType::Int64),
                Column::new("ts", FeatureType::Timestamp),
                Column::new("amount", FeatureType::Float64),
            ],
            primary_key: vec!["cc_num".into()],
            event_time: "ts".into(),
            online: true,
            ttl_seconds: None,
            vector_index: None,
            expectations: Vec::new(),
        }
    }

    #[test]
    fn feature_types_round_trip_through_strings() {
        for t in [
            FeatureType::Bool,
            FeatureType::Int32,
            FeatureType::Int64,
            FeatureType::Float32,
            FeatureType::Float64,
            FeatureType::String,
            FeatureType::Timestamp,
            FeatureType::Date,
            FeatureType::Embedding { dim: 16 },
        ] {
            assert_eq!(t.to_string().parse::<FeatureType>().unwrap(), t);
            assert_eq!(FeatureType::from_arrow(&t.arrow_type()), Some(t));
        }
        assert!("embedding(0)".parse::<FeatureType>().is_err());
        assert!(
            "decimal"
                .parse::<FeatureType>()
                .unwrap_err()
                .contains("decimal")
        );
    }

    #[test]
    fn validation_names_the_problem() {
        assert!(spec().validate().is_ok());
        let mut s = spec();
        s.event_time = "amount".into();
        assert!(s.validate().unwrap_err().0.contains("expected timestamp"));
        let mut s = spec();
        s.primary_key = vec!["nope".into()];
        assert!(s.validate().unwrap_err().0.contains("'nope'"));
        let mut s = spec();
        s.columns.push(Column::new("amount", FeatureType::Int32));
        assert!(s.validate().unwrap_err().0.contains("duplicate"));
    }

    #[test]
    fn keys_and_event_time_are_never_nullable() {
        let stored = spec().normalised();
        let nullable: Vec<bool> = stored.columns.iter().map(|c| c.nullable).collect();
        assert_eq!(nullable, [false, false, true]);
        let schema = spec().arrow_schema();
        assert!(!schema.field(0).is_nullable());
        assert!(!schema.field(1).is_nullable());
        assert!(schema.field(2).is_nullable());
    }
}
