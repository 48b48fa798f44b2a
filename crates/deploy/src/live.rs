//! A deployment loaded to answer: its model's predictor, the feature view and training
//! dataset the model was trained on, its latency account and its inference log. One `Live` is
//! one revision; a new revision is a new `Live`, swapped in whole.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Float64Type};
use kairos_model::predictor::Predictor;
use kairos_model::{Deployment, Evaluation, Model};
use kairos_store::{FeatureStore, ViewInputs};
use kairos_types::{FeatureType, Value};
use kairos_view::{EntryStatus, StageTimes};

use crate::error::{DeployError, Result};
use crate::inference_log::InferenceLog;
use crate::telemetry::Latency;

/// Predictions of one request, with what went into them.
#[derive(Debug)]
pub struct Scored {
    pub rows: usize,
    pub statuses: Vec<EntryStatus>,
    /// Per entry, the feature groups that had no row for it.
    pub missing: Vec<Vec<String>>,
    /// Row-major: the model's features per entry, in the model's order (NaN: missing).
    pub features: Vec<f64>,
    /// Per entry: the positive class's probability (classifiers) or the predicted value.
    pub outputs: Vec<f64>,
    /// Per entry, for classifiers: 1 when the probability reaches the threshold.
    pub labels: Option<Vec<i32>>,
    pub stages: StageTimes,
    pub predict: Duration,
}

/// Batches at least this large are predicted off the async workers.
const BLOCKING_ROWS: usize = 1024;

#[derive(Debug)]
pub struct Live {
    pub deployment: Deployment,
    pub model: Model,
    pub(crate) predictor: Arc<Predictor>,
    pub(crate) view: String,
    pub(crate) view_version: u32,
    pub(crate) training_dataset: u32,
    pub(crate) inputs: ViewInputs,
    /// The model's features, in the order its input tensor holds them.
    pub(crate) features: Vec<String>,
    pub(crate) classifier: bool,
    pub(crate) latency: Arc<Latency>,
    pub(crate) log: Option<InferenceLog>,
}

impl Live {
    pub fn is_classifier(&self) -> bool {
        self.classifier
    }

    /// The entity key columns and request-time values a request carries.
    pub fn inputs(&self) -> &ViewInputs {
        &self.inputs
    }

    /// Builds the feature vectors of `entries` (online lookups, on-demand features, the
    /// training dataset's frozen transforms) and predicts.
    pub async fn score(
        &self,
        store: &FeatureStore,
        entries: &[serde_json::Value],
        request: &[serde_json::Map<String, serde_json::Value>],
    ) -> Result<Scored> {
        let vectors = store
            .feature_vectors(
                &self.view,
                Some(self.view_version),
                entries,
                request,
                Some(self.training_dataset),
            )
            .await?;
        let rows = vectors.features.num_rows();
        let features = self.feature_matrix(&vectors.features)?;
        let started = Instant::now();
        let outputs = if rows >= BLOCKING_ROWS {
            let predictor = self.predictor.clone();
            let values = features.clone();
            tokio::task::spawn_blocking(move || predictor.predict(&values, rows))
                .await
                .map_err(DeployError::internal)?
        } else {
            self.predictor.predict(&features, rows)
        }
        .map_err(DeployError::internal)?;
        let predict = started.elapsed();
        let labels = self.classifier.then(|| {
            let threshold = self.deployment.spec.threshold;
            outputs.iter().map(|p| i32::from(*p >= threshold)).collect()
        });
        Ok(Scored {
            rows,
            statuses: vectors.statuses,
            missing: vectors.missing,
            features,
            outputs,
            labels,
            stages: vectors.stages,
            predict,
        })
    }

    /// The vectors' columns the model takes, row-major as floats; null becomes NaN, which the
    /// tree models read as missing.
    fn feature_matrix(&self, batch: &arrow::array::RecordBatch) -> Result<Vec<f64>> {
        let rows = batch.num_rows();
        let width = self.features.len();
        let mut values = vec![f64::NAN; rows * width];
        for (c, name) in self.features.iter().enumerate() {
            let column = batch.column_by_name(name).ok_or_else(|| {
                DeployError::Internal(format!(
                    "feature view '{}' v{} no longer gives the model's feature '{name}'",
                    self.view, self.view_version
                ))
            })?;
            let floats = arrow::compute::cast(column, &DataType::Float64).map_err(|e| {
                DeployError::Internal(format!("feature '{name}' is not numeric: {e}"))
            })?;
            let floats = floats.as_primitive::<Float64Type>();
            for r in 0..rows {
                if floats.is_valid(r) {
                    values[r * width + c] = floats.value(r);
                }
            }
        }
        Ok(values)
    }

    /// Each entry's key values, for the inference log (the store has validated them).
    pub(crate) fn key_values(&self, entries: &[serde_json::Value]) -> Vec<Vec<Value>> {
        let keys = &self.inputs.keys;
        entries
            .iter()
            .map(|entry| {
                keys.iter()
                    .enumerate()
                    .map(|(i, (name, ty))| {
                        let json = match entry {
                            serde_json::Value::Object(map) => map.get(name),
                            serde_json::Value::Array(items) => items.get(i),
                            bare => Some(bare),
                        };
                        json.and_then(|j| Value::from_json(j, *ty).ok())
                            .unwrap_or(Value::Null)
                    })
                    .collect()
            })
            .collect()
    }
}

/// Whether a model predicts a class probability (rather than a value).
pub(crate) fn is_classifier(model: &Model) -> bool {
    !matches!(model.spec.metrics, Some(Evaluation::Regression { .. }))
}

/// The V2 datatype name of a feature type, for the tensors a deployment takes.
pub fn tensor_type(ty: FeatureType) -> kairos_model::Datatype {
    use kairos_model::Datatype;
    match ty {
        FeatureType::Bool => Datatype::Bool,
        FeatureType::Int32 | FeatureType::Date => Datatype::Int32,
        FeatureType::Int64 | FeatureType::Timestamp => Datatype::Int64,
        FeatureType::Float32 => Datatype::Fp32,
        FeatureType::Float64 | FeatureType::Embedding { .. } => Datatype::Fp64,
        FeatureType::String => Datatype::Bytes,
    }
}
