//! Per-feature statistics of a training split: what model-dependent transforms are fitted on and
//! what drift monitoring compares against.
//!
//! Numbers: count, nulls, mean, population standard deviation (as scikit-learn's
//! `StandardScaler`), min, max, exact quantiles (linear interpolation, as NumPy's default) and a
//! 20-bin histogram. Categories (strings, bools): distinct count and the most frequent values.

use std::collections::HashMap;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::expr::as_f64;

/// The quantiles every numeric feature records.
pub const QUANTILES: [f64; 7] = [0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99];
const HISTOGRAM_BINS: usize = 20;
/// How many of the most frequent categories are kept.
pub const TOP_VALUES: usize = 50;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FeatureStatistics {
    pub name: String,
    /// Non-null values.
    pub count: u64,
    pub nulls: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numeric: Option<NumericStats>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub categorical: Option<CategoricalStats>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NumericStats {
    pub mean: f64,
    pub std: f64,
    pub min: f64,
    pub max: f64,
    /// `(q, value)` for each q in [`QUANTILES`].
    pub quantiles: Vec<(f64, f64)>,
    /// Equal-width bins over [min, max]: `(lower, upper, count)`.
    pub histogram: Vec<(f64, f64, u64)>,
}

impl NumericStats {
    /// The recorded value of quantile `q`, if it is one of [`QUANTILES`].
    pub fn quantile(&self, q: f64) -> Option<f64> {
        self.quantiles
            .iter()
            .find(|(at, _)| *at == q)
            .map(|(_, v)| *v)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CategoricalStats {
    pub distinct: u64,
    /// The most frequent values, most frequent first (ties by value), at most [`TOP_VALUES`].
    pub top: Vec<(String, u64)>,
}

enum Accumulator {
    Numeric(Vec<f64>),
    Categorical(HashMap<String, u64>),
    /// Timestamps, dates, embeddings: counted only.
    Counted,
}

struct Column {
    name: String,
    nulls: u64,
    count: u64,
    acc: Accumulator,
}

/// Folds batches into statistics for the named columns.
pub struct StatisticsBuilder {
    columns: Vec<Column>,
}

impl std::fmt::Debug for StatisticsBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatisticsBuilder")
            .field("columns", &self.columns.len())
            .finish()
    }
}

fn is_numeric(ty: &DataType) -> bool {
    ty.is_integer() || ty.is_floating()
}

impl StatisticsBuilder {
    /// Statistics for `columns`, each `(name, arrow type)`.
    pub fn new(columns: &[(String, DataType)]) -> Self {
        let columns = columns
            .iter()
            .map(|(name, ty)| Column {
                name: name.clone(),
                nulls: 0,
                count: 0,
                acc: if is_numeric(ty) {
                    Accumulator::Numeric(Vec::new())
                } else if matches!(ty, DataType::Utf8 | DataType::Boolean) {
                    Accumulator::Categorical(HashMap::new())
                } else {
                    Accumulator::Counted
                },
            })
            .collect();
        Self { columns }
    }

    /// Adds the rows of `batch`, which holds every column by name.
    pub fn push(&mut self, batch: &RecordBatch) {
        for column in &mut self.columns {
            let Some(array) = batch.column_by_name(&column.name) else {
                continue;
            };
            column.nulls += array.null_count() as u64;
            column.count += (array.len() - array.null_count()) as u64;
            match &mut column.acc {
                Accumulator::Numeric(values) => {
                    let floats = as_f64(&column.name, array).expect("numeric column");
                    values.extend(floats.iter().flatten());
                }
                Accumulator::Categorical(counts) => {
                    for value in categories(array).into_iter().flatten() {
                        *counts.entry(value).or_default() += 1;
                    }
                }
                Accumulator::Counted => {}
            }
        }
    }

    pub fn finish(self) -> Vec<FeatureStatistics> {
        self.columns
            .into_iter()
            .map(|c| {
                let (numeric, categorical) = match c.acc {
                    Accumulator::Numeric(values) => (numeric(values), None),
                    Accumulator::Categorical(counts) => (None, Some(categorical(counts))),
                    Accumulator::Counted => (None, None),
                };
                FeatureStatistics {
                    name: c.name,
                    count: c.count,
                    nulls: c.nulls,
                    numeric,
                    categorical,
                }
            })
            .collect()
    }
}

/// A categorical column's values as strings (bools as `true`/`false`).
pub(crate) fn categories(array: &ArrayRef) -> Vec<Option<String>> {
    match array.data_type() {
        DataType::Utf8 => array
            .as_string::<i32>()
            .iter()
            .map(|v| v.map(str::to_string))
            .collect(),
        DataType::Boolean => array
            .as_boolean()
            .iter()
            .map(|v| v.map(|b| b.to_string()))
            .collect(),
        _ => vec![None; array.len()],
    }
}

fn numeric(mut values: Vec<f64>) -> Option<NumericStats> {
    // NaN is not a number a scaler can use; it does not enter the statistics.
    values.retain(|v| !v.is_nan());
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    let (min, max) = (values[0], values[values.len() - 1]);
    let quantiles = QUANTILES
        .iter()
        .map(|&q| (q, quantile(&values, q)))
        .collect();
    let width = (max - min) / HISTOGRAM_BINS as f64;
    let mut counts = [0u64; HISTOGRAM_BINS];
    for v in &values {
        let bin = if width > 0.0 {
            (((v - min) / width) as usize).min(HISTOGRAM_BINS - 1)
        } else {
            0
        };
        counts[bin] += 1;
    }
    let histogram = counts
        .iter()
        .enumerate()
        .map(|(i, c)| (min + width * i as f64, min + width * (i + 1) as f64, *c))
        .collect();
    Some(NumericStats {
        mean,
        std: var.sqrt(),
        min,
        max,
        quantiles,
        histogram,
    })
}

/// Quantile `q` of sorted values, interpolated linearly (NumPy's default method).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

fn categorical(counts: HashMap<String, u64>) -> CategoricalStats {
    let distinct = counts.len() as u64;
    let mut top: Vec<(String, u64)> = counts.into_iter().collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    top.truncate(TOP_VALUES);
    CategoricalStats { distinct, top }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use arrow::array::{Float64Array, StringArray};
    use arrow::datatypes::{Field, Schema};

    #[test]
    fn numbers_and_categories() {
        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("x", DataType::Float64, true),
                Field::new("c", DataType::Utf8, true),
            ])),
            vec![
                Arc::new(Float64Array::from(vec![
                    Some(1.0),
                    Some(2.0),
                    None,
                    Some(3.0),
                    Some(4.0),
                ])),
                Arc::new(StringArray::from(vec![
                    Some("a"),
                    Some("b"),
                    Some("a"),
                    None,
                    Some("c"),
                ])),
            ],
        )
        .unwrap();
        let mut builder = StatisticsBuilder::new(&[
            ("x".into(), DataType::Float64),
            ("c".into(), DataType::Utf8),
        ]);
        builder.push(&batch);
        let stats = builder.finish();
        let x = stats[0].numeric.as_ref().unwrap();
        assert_eq!((stats[0].count, stats[0].nulls), (4, 1));
        assert_eq!((x.mean, x.min, x.max), (2.5, 1.0, 4.0));
        // numpy.std([1, 2, 3, 4]) and numpy.quantile(..., 0.25) = 1.75.
        assert!((x.std - 1.118_033_988_749_895).abs() < 1e-12);
        assert_eq!(x.quantile(0.25), Some(1.75));
        assert_eq!(x.quantile(0.5), Some(2.5));
        assert_eq!(x.histogram.iter().map(|b| b.2).sum::<u64>(), 4);
        let c = stats[1].categorical.as_ref().unwrap();
        assert_eq!(c.distinct, 3);
        assert_eq!(c.top[0], ("a".to_string(), 2));
    }
}
