//! Model-dependent transforms: fitted on a training split's statistics, frozen with the training
//! dataset version, and applied unchanged to every online vector that asks for that version.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Float64Array, Int32Array};
use arrow::datatypes::DataType;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::expr::as_f64;
use crate::stats::{FeatureStatistics, categories};
use crate::{Result, TransformError, definition};

/// Which transform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TransformKind {
    /// (x − mean) / std.
    StandardScaler,
    /// (x − min) / (max − min).
    MinMax,
    /// (x − median) / (q75 − q25).
    RobustScaler,
    /// One float64 column per category seen in training.
    OneHot,
    /// The category's rank by training frequency (0 = most frequent), as int32.
    LabelEncoding,
}

/// What a categorical transform does with a value it did not see in training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum UnknownCategory {
    /// One-hot: all zeros. Label encoding: null.
    #[default]
    Ignore,
    /// One-hot: a `<feature>__unknown` column set to 1. Label encoding: the code after the last.
    Category,
    /// Refuse the vector or the dataset, naming the value.
    Error,
}

/// A transform as written in a feature-view definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransformSpec {
    pub feature: String,
    pub kind: TransformKind,
    #[serde(default)]
    pub unknown: UnknownCategory,
    /// Categorical transforms keep at most this many of the most frequent categories (default 32).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_categories: Option<usize>,
}

const DEFAULT_MAX_CATEGORIES: usize = 32;

impl TransformSpec {
    pub fn is_categorical(&self) -> bool {
        matches!(
            self.kind,
            TransformKind::OneHot | TransformKind::LabelEncoding
        )
    }

    /// Checks the input column's type.
    pub fn check_input(&self, ty: &DataType) -> Result<()> {
        let ok = if self.is_categorical() {
            matches!(ty, DataType::Utf8 | DataType::Boolean)
        } else {
            ty.is_integer() || ty.is_floating()
        };
        if ok {
            return Ok(());
        }
        let expected = if self.is_categorical() {
            "string or bool"
        } else {
            "a number"
        };
        definition(format!(
            "transform {:?} of '{}': the feature has type {ty}, expected {expected}",
            self.kind, self.feature
        ))
    }

    /// Fits the transform on the training split's statistics of its feature.
    pub fn fit(&self, stats: &FeatureStatistics) -> Result<FittedTransform> {
        let params = if self.is_categorical() {
            let max = self.max_categories.unwrap_or(DEFAULT_MAX_CATEGORIES);
            let categories = stats
                .categorical
                .as_ref()
                .map(|c| c.top.iter().take(max).map(|(v, _)| v.clone()).collect())
                .unwrap_or_default();
            Params::Categories { categories }
        } else {
            let Some(n) = &stats.numeric else {
                // The data's fault, not the definition's: e.g. every joined row was filtered out.
                return Err(TransformError::Value(format!(
                    "cannot fit transform {:?} of '{}': the training split has no non-null values of it",
                    self.kind, self.feature
                )));
            };
            let (offset, scale) = match self.kind {
                TransformKind::StandardScaler => (n.mean, n.std),
                TransformKind::MinMax => (n.min, n.max - n.min),
                TransformKind::RobustScaler => {
                    let q = |p| n.quantile(p).expect("recorded quantile");
                    (q(0.5), q(0.75) - q(0.25))
                }
                TransformKind::OneHot | TransformKind::LabelEncoding => unreachable!(),
            };
            Params::Affine { offset, scale }
        };
        Ok(FittedTransform {
            feature: self.feature.clone(),
            kind: self.kind,
            unknown: self.unknown,
            params,
        })
    }
}

/// The frozen parameters of a transform.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Params {
    /// Output (x − offset) / scale; 0 when scale is 0 (a constant feature).
    Affine {
        offset: f64,
        scale: f64,
    },
    Categories {
        categories: Vec<String>,
    },
}

/// A transform with its parameters frozen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FittedTransform {
    pub feature: String,
    pub kind: TransformKind,
    pub unknown: UnknownCategory,
    pub params: Params,
}

impl FittedTransform {
    /// The columns this transform outputs in place of its feature.
    pub fn output_columns(&self) -> Vec<(String, DataType)> {
        match (&self.params, self.kind) {
            (Params::Affine { .. }, _) => vec![(self.feature.clone(), DataType::Float64)],
            (Params::Categories { .. }, TransformKind::LabelEncoding) => {
                vec![(self.feature.clone(), DataType::Int32)]
            }
            (Params::Categories { categories }, _) => {
                let mut out: Vec<_> = categories
                    .iter()
                    .map(|c| (format!("{}_{c}", self.feature), DataType::Float64))
                    .collect();
                if self.unknown == UnknownCategory::Category {
                    out.push((format!("{}__unknown", self.feature), DataType::Float64));
                }
                out
            }
        }
    }

    /// Transforms a column; the arrays match [`Self::output_columns`].
    pub fn apply(&self, input: &ArrayRef) -> Result<Vec<ArrayRef>> {
        match &self.params {
            Params::Affine { offset, scale } => {
                let x = as_f64(&self.feature, input)?;
                let out: Float64Array = x
                    .iter()
                    .map(|v| {
                        v.map(|v| {
                            if *scale == 0.0 {
                                0.0
                            } else {
                                (v - offset) / scale
                            }
                        })
                    })
                    .collect();
                Ok(vec![Arc::new(out)])
            }
            Params::Categories { categories } => {
                let index: HashMap<&str, usize> = categories
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (c.as_str(), i))
                    .collect();
                let values = categories_of(input);
                let codes = values
                    .iter()
                    .enumerate()
                    .map(|(row, v)| match v {
                        None => Ok(Code::Null),
                        Some(v) => match index.get(v.as_str()) {
                            Some(i) => Ok(Code::Known(*i)),
                            None if self.unknown == UnknownCategory::Error => Err(TransformError::Value(format!(
                                "feature '{}': value '{v}' at row {} is not a category seen in training",
                                self.feature,
                                row + 1
                            ))),
                            None => Ok(Code::Unknown),
                        },
                    })
                    .collect::<Result<Vec<Code>>>()?;
                Ok(self.encode(&codes, categories.len()))
            }
        }
    }

    fn encode(&self, codes: &[Code], n: usize) -> Vec<ArrayRef> {
        let as_category = self.unknown == UnknownCategory::Category;
        if self.kind == TransformKind::LabelEncoding {
            let out: Int32Array = codes
                .iter()
                .map(|c| match c {
                    Code::Known(i) => Some(*i as i32),
                    Code::Unknown if as_category => Some(n as i32),
                    Code::Unknown | Code::Null => None,
                })
                .collect();
            return vec![Arc::new(out)];
        }
        let mut columns: Vec<ArrayRef> = (0..n)
            .map(|i| {
                let col: Float64Array = codes
                    .iter()
                    .map(|c| Some(if *c == Code::Known(i) { 1.0 } else { 0.0 }))
                    .collect();
                Arc::new(col) as ArrayRef
            })
            .collect();
        if as_category {
            let col: Float64Array = codes
                .iter()
                .map(|c| Some(if *c == Code::Unknown { 1.0 } else { 0.0 }))
                .collect();
            columns.push(Arc::new(col));
        }
        columns
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Code {
    Known(usize),
    Unknown,
    Null,
}

fn categories_of(input: &ArrayRef) -> Vec<Option<String>> {
    if input.data_type() == &DataType::Null {
        return vec![None; input.len()];
    }
    categories(input)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::StatisticsBuilder;
    use arrow::array::{AsArray, StringArray};
    use arrow::datatypes::{Field, Float64Type, Int32Type, Schema};
    use arrow::record_batch::RecordBatch;

    fn stats_of(name: &str, array: ArrayRef) -> FeatureStatistics {
        let ty = array.data_type().clone();
        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new(name, ty.clone(), true)])),
            vec![array],
        )
        .unwrap();
        let mut b = StatisticsBuilder::new(&[(name.to_string(), ty)]);
        b.push(&batch);
        b.finish().remove(0)
    }

    fn spec(kind: TransformKind, unknown: UnknownCategory) -> TransformSpec {
        TransformSpec {
            feature: "x".into(),
            kind,
            unknown,
            max_categories: None,
        }
    }

    #[test]
    fn scalers_use_the_frozen_statistics() {
        let train: ArrayRef = Arc::new(Float64Array::from(vec![1.0, 2.0, 3.0, 4.0, 5.0]));
        let stats = stats_of("x", train);
        let online: ArrayRef = Arc::new(Float64Array::from(vec![Some(3.0), None, Some(7.0)]));
        let apply = |kind| {
            let fitted = spec(kind, UnknownCategory::Ignore).fit(&stats).unwrap();
            fitted.apply(&online).unwrap()[0]
                .as_primitive::<Float64Type>()
                .clone()
        };
        let std = apply(TransformKind::StandardScaler);
        assert_eq!(std.value(0), 0.0);
        assert!(std.is_null(1));
        assert_eq!(std.value(2), 4.0 / 2f64.sqrt());
        assert_eq!(apply(TransformKind::MinMax).value(2), 1.5);
        // median 3, q25 2, q75 4.
        assert_eq!(apply(TransformKind::RobustScaler).value(2), 2.0);
    }

    #[test]
    fn encoders_follow_the_unknown_rule() {
        let train: ArrayRef = Arc::new(StringArray::from(vec!["b", "a", "b", "c", "b", "a"]));
        let stats = stats_of("x", train);
        let online: ArrayRef = Arc::new(StringArray::from(vec![Some("a"), Some("zzz"), None]));

        let onehot = spec(TransformKind::OneHot, UnknownCategory::Category)
            .fit(&stats)
            .unwrap();
        let names: Vec<_> = onehot.output_columns().into_iter().map(|c| c.0).collect();
        assert_eq!(names, ["x_b", "x_a", "x_c", "x__unknown"]);
        let cols = onehot.apply(&online).unwrap();
        let row = |r: usize| -> Vec<f64> {
            cols.iter()
                .map(|c| c.as_primitive::<Float64Type>().value(r))
                .collect()
        };
        assert_eq!(row(0), [0.0, 1.0, 0.0, 0.0]);
        assert_eq!(row(1), [0.0, 0.0, 0.0, 1.0]);
        assert_eq!(row(2), [0.0, 0.0, 0.0, 0.0]);

        let label = spec(TransformKind::LabelEncoding, UnknownCategory::Ignore)
            .fit(&stats)
            .unwrap();
        let codes = label.apply(&online).unwrap();
        let codes = codes[0].as_primitive::<Int32Type>();
        assert_eq!(codes.value(0), 1);
        assert!(codes.is_null(1) && codes.is_null(2));

        let strict = spec(TransformKind::LabelEncoding, UnknownCategory::Error)
            .fit(&stats)
            .unwrap();
        let err = strict.apply(&online).unwrap_err().to_string();
        assert!(err.contains("'zzz' at row 2"), "{err}");
    }
}
