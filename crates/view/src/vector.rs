//! Online feature vectors: entries and request values in, one multi-get per feature group, then
//! the same on-demand features, column order and frozen transforms as the training data.
//!
//! The service layer does the lookups; this module decides what to look up and assembles the
//! answers into an Arrow batch of one row per entry, which [`crate::rows`] finishes exactly as
//! it finishes a training dataset.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{
    ArrayRef, BooleanBuilder, Date32Builder, FixedSizeListBuilder, Float32Builder, Float64Builder,
    Int32Builder, Int64Builder, RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{Field, Schema, SchemaRef};
use kairos_types::{FeatureType, Value};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::rows::TransformSet;
use crate::spec::ViewPlan;
use crate::{Result, ViewError};

/// Whether every feature group had a row for an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EntryStatus {
    /// Every group had a row.
    Complete,
    /// Some group had no row (or only one past its lookback or TTL); its features are null.
    Incomplete,
}

/// Online vectors, one row per entry.
#[derive(Debug, Clone)]
pub struct VectorBatch {
    /// The vector columns, transformed when a training dataset was named.
    pub features: RecordBatch,
    pub statuses: Vec<EntryStatus>,
    /// Per entry, the groups that had no row.
    pub missing: Vec<Vec<String>>,
    /// Where the time went, for the serving pipeline's per-stage latencies.
    pub stages: StageTimes,
}

/// The time each stage of building online vectors took.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StageTimes {
    /// The online-store lookups (filled in by the store, which does them).
    pub lookup: Duration,
    pub on_demand: Duration,
    pub transforms: Duration,
}

/// The root columns of each entry: from the entry's key, its request values, or the root
/// group's online row.
#[derive(Debug, Clone)]
pub struct RootValues {
    columns: Vec<(String, FeatureType, Vec<Value>)>,
    rows: usize,
    root_missing: Vec<bool>,
}

impl ViewPlan {
    /// The schema of [`Self::assemble`]'s looked-up columns: the root's columns an online
    /// vector reads, then each join's features.
    pub(crate) fn looked_up_fields(&self) -> SchemaRef {
        let rs = &self.root.spec;
        let root = self.vector_root_columns().iter().map(|name| {
            let ty = rs.column(name).expect("root column").ty;
            Field::new(name, ty.arrow_type(), true)
        });
        let joined = self.joins.iter().flat_map(|join| {
            join.features
                .iter()
                .map(|(_, output, ty)| Field::new(output, ty.arrow_type(), true))
        });
        Arc::new(Schema::new(root.chain(joined).collect::<Vec<_>>()))
    }

    /// Whether a root column an online vector needs comes from neither the entry nor the request,
    /// so the root group's online row must be read.
    pub fn needs_root_lookup(&self) -> bool {
        let rs = &self.root.spec;
        self.vector_root_columns().iter().any(|c| {
            !rs.primary_key.contains(c) && *c != rs.event_time && !self.request.contains(c)
        })
    }

    /// Arranges the root columns of each entry. `root_rows` are the root group's online rows (in
    /// the group's column order) when [`Self::needs_root_lookup`].
    pub fn root_values(
        &self,
        keys: &[Vec<Value>],
        times: &[i64],
        request: &[HashMap<String, Value>],
        root_rows: Option<&[Option<Vec<Value>>]>,
    ) -> RootValues {
        let rs = &self.root.spec;
        let rows = keys.len();
        let columns = self
            .vector_root_columns()
            .iter()
            .cloned()
            .map(|name| {
                let ty = rs.column(&name).expect("root column").ty;
                let values = (0..rows)
                    .map(|i| {
                        if let Some(k) = rs.primary_key.iter().position(|k| *k == name) {
                            keys[i][k].clone()
                        } else if name == rs.event_time {
                            Value::Timestamp(times[i])
                        } else if self.request.contains(&name) {
                            request[i].get(&name).cloned().unwrap_or(Value::Null)
                        } else {
                            let index = rs
                                .columns
                                .iter()
                                .position(|c| c.name == name)
                                .expect("root column");
                            root_rows
                                .and_then(|r| r[i].as_ref())
                                .map_or(Value::Null, |row| row[index].clone())
                        }
                    })
                    .collect();
                (name, ty, values)
            })
            .collect();
        let root_missing = match root_rows {
            Some(r) => r.iter().map(Option::is_none).collect(),
            None => vec![false; rows],
        };
        RootValues {
            columns,
            rows,
            root_missing,
        }
    }

    /// The online-store key of join `j` for each entry; `None` where a key value is null.
    pub fn join_keys(&self, root: &RootValues, j: usize) -> Vec<Option<Vec<Value>>> {
        let join = &self.joins[j];
        (0..root.rows)
            .map(|i| {
                join.left
                    .iter()
                    .map(|l| {
                        let (_, _, values) = root
                            .columns
                            .iter()
                            .find(|(n, _, _)| n == l)
                            .expect("join column");
                        Some(values[i].clone()).filter(|v| *v != Value::Null)
                    })
                    .collect()
            })
            .collect()
    }

    /// Assembles the vectors: `joined[j][i]` is join `j`'s online row for entry `i` (in the
    /// group's column order), `None` when it has none usable.
    pub fn assemble(
        &self,
        root: &RootValues,
        joined: &[Vec<Option<Vec<Value>>>],
        transforms: &TransformSet,
    ) -> Result<VectorBatch> {
        let mut arrays = Vec::new();
        for (_, ty, values) in &root.columns {
            arrays.push(array_of(*ty, values.iter())?);
        }
        for (join, rows) in self.joins.iter().zip(joined) {
            let gs = &join.group.spec;
            for (source, _, ty) in &join.features {
                let index = gs
                    .columns
                    .iter()
                    .position(|c| c.name == *source)
                    .expect("feature");
                arrays.push(array_of(
                    *ty,
                    rows.iter()
                        .map(|r| r.as_ref().map_or(&Value::Null, |r| &r[index])),
                )?);
            }
        }
        let batch = RecordBatch::try_new(self.looked_up_schema.clone(), arrays)?;
        let start = Instant::now();
        let computed = self.compute_on_demand(&batch)?;
        let on_demand = start.elapsed();
        let features = transforms.apply(&self.select_into(&computed, &self.vector_schema)?)?;
        let stages = StageTimes {
            lookup: Duration::ZERO,
            on_demand,
            transforms: start.elapsed() - on_demand,
        };
        let missing: Vec<Vec<String>> = (0..root.rows)
            .map(|i| {
                let mut m = Vec::new();
                if root.root_missing[i] {
                    m.push(self.root.spec.name.clone());
                }
                for (join, rows) in self.joins.iter().zip(joined) {
                    if rows[i].is_none() {
                        m.push(join.group.spec.name.clone());
                    }
                }
                m
            })
            .collect();
        Ok(VectorBatch {
            features,
            statuses: missing
                .iter()
                .map(|m| {
                    if m.is_empty() {
                        EntryStatus::Complete
                    } else {
                        EntryStatus::Incomplete
                    }
                })
                .collect(),
            missing,
            stages,
        })
    }
}

/// One Arrow array of `ty` from values; a value of another type is an error naming it.
pub fn array_of<'a>(ty: FeatureType, values: impl Iterator<Item = &'a Value>) -> Result<ArrayRef> {
    let mismatch = |v: &Value| ViewError::Request(format!("expected a {ty} value, got {v:?}"));
    macro_rules! build {
        ($builder:expr, $variant:ident) => {{
            let mut b = $builder;
            for v in values {
                match v {
                    Value::Null => b.append_null(),
                    Value::$variant(x) => b.append_value(x.clone()),
                    other => return Err(mismatch(other)),
                }
            }
            Arc::new(b.finish()) as ArrayRef
        }};
    }
    Ok(match ty {
        FeatureType::Bool => build!(BooleanBuilder::new(), Bool),
        FeatureType::Int32 => build!(Int32Builder::new(), Int32),
        FeatureType::Int64 => build!(Int64Builder::new(), Int64),
        FeatureType::Float32 => build!(Float32Builder::new(), Float32),
        FeatureType::Float64 => build!(Float64Builder::new(), Float64),
        FeatureType::String => build!(StringBuilder::new(), String),
        FeatureType::Date => build!(Date32Builder::new(), Date),
        FeatureType::Timestamp => {
            let mut b = TimestampMicrosecondBuilder::new().with_timezone(kairos_types::schema::UTC);
            for v in values {
                match v {
                    Value::Null => b.append_null(),
                    Value::Timestamp(t) => b.append_value(*t),
                    other => return Err(mismatch(other)),
                }
            }
            Arc::new(b.finish())
        }
        FeatureType::Embedding { dim } => {
            let mut b =
                FixedSizeListBuilder::new(Float32Builder::new(), dim as i32).with_field(Arc::new(
                    Field::new("item", arrow::datatypes::DataType::Float32, true),
                ));
            for v in values {
                match v {
                    Value::Null => {
                        for _ in 0..dim {
                            b.values().append_null();
                        }
                        b.append(false);
                    }
                    Value::Embedding(xs) if xs.len() == dim as usize => {
                        b.values().append_slice(xs);
                        b.append(true);
                    }
                    other => return Err(mismatch(other)),
                }
            }
            Arc::new(b.finish())
        }
    })
}
