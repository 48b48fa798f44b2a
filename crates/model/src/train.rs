//! Training a model on a training dataset's splits: the numeric feature columns become a
//! matrix, the label a vector; the model is fitted on `train` and scored on `validation` and
//! `test` with [`crate::metrics`]. What comes out is what the registry stores: the artifact,
//! its framework and signature, and the evaluation.

use arrow::array::{Array, AsArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type};
use arrow::record_batch::RecordBatch;

use crate::gbdt::{Features, Gbdt, GbdtParams, Task};
use crate::logistic::Logistic;
use crate::metrics::{self, MetricsError};
use crate::registry::{Datatype, Evaluation, Framework, Signature, TensorSpec};

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(
        "feature '{column}' is {ty}: give it a transform that makes numbers (one_hot) or leave it out"
    )]
    NotNumeric { column: String, ty: DataType },
    #[error("the training data has no column '{0}'")]
    NoColumn(String),
    #[error("{split} row {row}: label '{label}' is missing")]
    MissingLabel {
        split: String,
        row: usize,
        label: String,
    },
    #[error("the train split has no rows")]
    Empty,
    #[error(
        "train row {row}: feature '{feature}' is missing; logistic regression needs every value (impute it in the view, or use gbdt)"
    )]
    MissingFeature { row: usize, feature: String },
    #[error("logistic regression is a binary classifier; use gbdt for a regression")]
    LogisticRegression,
    #[error(transparent)]
    Gbdt(#[from] crate::gbdt::GbdtError),
    #[error(transparent)]
    Logistic(#[from] crate::logistic::LogisticError),
    #[error(transparent)]
    Metrics(#[from] MetricsError),
}

/// The rows of one split: features and labels.
#[derive(Debug, Clone)]
pub struct Labelled {
    /// The feature columns' names, in the matrix's order.
    pub names: Vec<String>,
    pub features: Features,
    pub labels: Vec<f64>,
}

/// A numeric or boolean column of `batch` as `f64`s, `None` for nulls.
pub fn as_f64(batch: &RecordBatch, column: &str) -> Result<Vec<Option<f64>>, TrainError> {
    let array = batch
        .column_by_name(column)
        .ok_or_else(|| TrainError::NoColumn(column.to_owned()))?;
    let numeric = array.data_type().is_numeric() || array.data_type() == &DataType::Boolean;
    if !numeric {
        return Err(TrainError::NotNumeric {
            column: column.to_owned(),
            ty: array.data_type().clone(),
        });
    }
    let values = cast(array, &DataType::Float64).map_err(|_| TrainError::NotNumeric {
        column: column.to_owned(),
        ty: array.data_type().clone(),
    })?;
    let values = values.as_primitive::<Float64Type>();
    Ok((0..values.len())
        .map(|i| values.is_valid(i).then(|| values.value(i)))
        .collect())
}

impl Labelled {
    /// The `features` columns (nulls become missing values) and the `label` column of a
    /// split's batches; `split` names the split in errors.
    pub fn from_batches(
        split: &str,
        batches: &[RecordBatch],
        features: &[String],
        label: &str,
    ) -> Result<Labelled, TrainError> {
        let mut columns = vec![Vec::new(); features.len()];
        let mut labels = Vec::new();
        for batch in batches {
            for (column, name) in columns.iter_mut().zip(features) {
                column.extend(
                    as_f64(batch, name)?
                        .into_iter()
                        .map(|v| v.unwrap_or(f64::NAN)),
                );
            }
            for value in as_f64(batch, label)? {
                let row = labels.len();
                labels.push(value.ok_or_else(|| TrainError::MissingLabel {
                    split: split.to_owned(),
                    row,
                    label: label.to_owned(),
                })?);
            }
        }
        Ok(Labelled {
            names: features.to_vec(),
            features: Features::from_columns(&columns),
            labels,
        })
    }
}

/// A fitted model's prediction function.
type Predictor = Box<dyn Fn(&Features) -> Vec<f64>>;

/// How to fit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Algorithm {
    Gbdt(GbdtParams),
    /// Logistic regression with inverse penalty `c`.
    Logistic {
        c: f64,
    },
}

/// A fitted model, ready for the registry.
#[derive(Debug)]
pub struct Trained {
    pub framework: Framework,
    pub artifact: Vec<u8>,
    pub artifact_name: String,
    pub signature: Signature,
    pub evaluation: Evaluation,
}

fn with_rows(split: Option<&Labelled>) -> Option<&Labelled> {
    split.filter(|s| !s.labels.is_empty())
}

/// Fits on `train` and scores on the other splits (those with rows).
pub fn train(
    algorithm: Algorithm,
    task: Task,
    train: &Labelled,
    validation: Option<&Labelled>,
    test: Option<&Labelled>,
    threshold: f64,
) -> Result<Trained, TrainError> {
    if train.labels.is_empty() {
        return Err(TrainError::Empty);
    }
    let (framework, artifact, predict): (Framework, Vec<u8>, Predictor) = match algorithm {
        Algorithm::Gbdt(params) => {
            let model = Gbdt::train(task, &train.features, &train.labels, params)?;
            let artifact = model.to_json()?;
            (
                Framework::Gbdt,
                artifact,
                Box::new(move |f: &Features| model.predict(f)),
            )
        }
        Algorithm::Logistic { c } => {
            if task != Task::Binary {
                return Err(TrainError::LogisticRegression);
            }
            let model =
                Logistic::train(&train.features, &train.labels, c).map_err(|e| match e {
                    crate::logistic::LogisticError::MissingValue { row, col } => {
                        TrainError::MissingFeature {
                            row,
                            feature: train.names[col].clone(),
                        }
                    }
                    other => other.into(),
                })?;
            let artifact = serde_json::to_vec(&model).expect("a model serialises");
            (
                Framework::Logistic,
                artifact,
                Box::new(move |f: &Features| model.predict(f)),
            )
        }
    };
    let (validation, test) = (with_rows(validation), with_rows(test));
    let evaluation = match task {
        Task::Binary => {
            let score = |s: &Labelled| {
                let truth: Vec<bool> = s.labels.iter().map(|l| *l == 1.0).collect();
                metrics::binary(&truth, &predict(&s.features), threshold)
            };
            Evaluation::Binary {
                validation: validation.map(score).transpose()?,
                test: test.map(score).transpose()?,
            }
        }
        Task::Regression => {
            let score = |s: &Labelled| metrics::regression(&s.labels, &predict(&s.features));
            Evaluation::Regression {
                validation: validation.map(score).transpose()?,
                test: test.map(score).transpose()?,
            }
        }
    };
    let output = match task {
        Task::Binary => "probability",
        Task::Regression => "prediction",
    };
    Ok(Trained {
        framework,
        artifact,
        artifact_name: "model.json".into(),
        signature: Signature {
            inputs: vec![TensorSpec {
                name: "features".into(),
                datatype: Datatype::Fp64,
                shape: vec![-1, train.features.cols as i64],
            }],
            outputs: vec![TensorSpec {
                name: output.into(),
                datatype: Datatype::Fp64,
                shape: vec![-1],
            }],
        },
        evaluation,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{BooleanArray, Float64Array, Int64Array, StringArray};
    use std::sync::Arc;

    fn batch(rows: usize) -> RecordBatch {
        let x: Vec<f64> = (0..rows).map(|i| (i as f64 * 0.37).sin()).collect();
        let n: Vec<i64> = (0..rows).map(|i| (i % 7) as i64).collect();
        let y: Vec<bool> = x
            .iter()
            .zip(&n)
            .map(|(x, n)| x + *n as f64 / 7.0 > 0.4)
            .collect();
        RecordBatch::try_from_iter([
            ("x", Arc::new(Float64Array::from(x)) as _),
            ("n", Arc::new(Int64Array::from(n)) as _),
            ("name", Arc::new(StringArray::from(vec!["a"; rows])) as _),
            ("y", Arc::new(BooleanArray::from(y)) as _),
        ])
        .unwrap()
    }

    #[test]
    fn both_algorithms_fit_a_split_and_score_the_others() {
        let features = ["x".to_string(), "n".to_string()];
        let split = |rows| Labelled::from_batches("train", &[batch(rows)], &features, "y").unwrap();
        let (tr, va, te) = (split(400), split(100), split(0));
        for algorithm in [
            Algorithm::Gbdt(GbdtParams::default()),
            Algorithm::Logistic { c: 1.0 },
        ] {
            let t = train(algorithm, Task::Binary, &tr, Some(&va), Some(&te), 0.5).unwrap();
            let Evaluation::Binary { validation, test } = &t.evaluation else {
                panic!("a binary evaluation")
            };
            assert!(test.is_none(), "an empty split is not scored");
            let v = validation.as_ref().unwrap();
            assert_eq!(v.rows, 100);
            assert!(v.roc_auc.unwrap() > 0.9, "{algorithm:?}: {v:?}");
            assert_eq!(t.signature.inputs[0].shape, vec![-1, 2]);
        }
    }

    #[test]
    fn a_text_feature_and_a_missing_label_are_refused_by_name() {
        let e = Labelled::from_batches("train", &[batch(5)], &["name".into()], "y").unwrap_err();
        assert!(e.to_string().starts_with("feature 'name' is Utf8"), "{e}");
        let with_null = RecordBatch::try_from_iter([
            ("x", Arc::new(Float64Array::from(vec![1.0, 2.0])) as _),
            (
                "y",
                Arc::new(BooleanArray::from(vec![Some(true), None])) as _,
            ),
        ])
        .unwrap();
        let e = Labelled::from_batches("validation", &[with_null], &["x".into()], "y").unwrap_err();
        assert_eq!(e.to_string(), "validation row 1: label 'y' is missing");
    }
}
