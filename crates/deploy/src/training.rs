//! Training on a feature view and registering the result: what `kairos train` and
//! `POST /v1/train` run. The model is fitted on the training dataset's train split with its
//! frozen transforms applied, scored on the validation and test splits, and registered with
//! those metrics and its lineage (view, versions, feature columns, frozen transforms) — what a
//! deployment later reads to serve it the same features.

use kairos_catalog::Catalog;
use kairos_model::gbdt::{GbdtParams, Task};
use kairos_model::predictor::Predictor;
use kairos_model::train::{Algorithm, Labelled};
use kairos_model::{Artifacts, Lineage, Model, ModelSpec};
use kairos_store::{FeatureStore, StoreError};
use kairos_view::SplitName;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{DeployError, Result};

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlgorithmName {
    /// Gradient-boosted trees.
    #[default]
    Gbdt,
    /// L2-penalised logistic regression.
    Logistic,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TaskName {
    /// A binary classifier: labels 0/1 or booleans.
    #[default]
    Binary,
    /// A regressor (gbdt only).
    Regression,
}

/// What to train.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TrainRequest {
    /// The feature view whose training dataset to train on.
    pub feature_view: String,
    /// The view's version; the latest when absent.
    #[serde(default)]
    pub view_version: Option<u32>,
    /// The training dataset's version; the view version's latest when absent.
    #[serde(default)]
    pub training_dataset: Option<u32>,
    /// The label column: one of the view's labels.
    pub label: String,
    /// The features to train on, in this order; when absent, every feature of the view but
    /// timestamps (a point in time is not something a model generalises from: derive a
    /// duration from it with an on-demand feature) and those in `exclude`.
    #[serde(default)]
    pub features: Option<Vec<String>>,
    /// Features left out of the default set (an ablation, or an input kept for on-demand
    /// features only).
    #[serde(default)]
    pub exclude: Vec<String>,
    #[serde(default)]
    pub algorithm: AlgorithmName,
    #[serde(default)]
    pub task: TaskName,
    /// The model's name in the registry; the feature view's name when absent.
    #[serde(default)]
    pub name: Option<String>,
    /// GBDT: number of trees.
    #[serde(default = "default_trees")]
    pub trees: usize,
    /// GBDT: shrinkage of each tree.
    #[serde(default = "default_learning_rate")]
    pub learning_rate: f32,
    /// GBDT: greatest tree depth.
    #[serde(default = "default_max_depth")]
    pub max_depth: usize,
    /// Logistic regression: inverse L2 penalty, as scikit-learn's C.
    #[serde(default = "default_c")]
    pub c: f64,
    /// The probability from which precision and recall count a row as positive.
    #[serde(default = "default_threshold")]
    pub threshold: f64,
    #[serde(default)]
    pub seed: u64,
}

fn default_trees() -> usize {
    100
}
fn default_learning_rate() -> f32 {
    0.1
}
fn default_max_depth() -> usize {
    5
}
fn default_c() -> f64 {
    1.0
}
fn default_threshold() -> f64 {
    0.5
}

/// The most training jobs that run at once in a process; more are refused (503), not queued,
/// so a burst of requests cannot take every core and all the memory.
pub const MAX_CONCURRENT_TRAINING: usize = 2;

static TRAINING_SLOTS: tokio::sync::Semaphore =
    tokio::sync::Semaphore::const_new(MAX_CONCURRENT_TRAINING);

impl TrainRequest {
    /// Refuses parameters whose cost has no bound, or that no fit can use.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(DeployError::BadRequest(m));
        if !(1..=5000).contains(&self.trees) {
            return bad(format!("trees: expected 1 to 5000, got {}", self.trees));
        }
        if !(1..=16).contains(&self.max_depth) {
            return bad(format!(
                "max_depth: expected 1 to 16, got {}",
                self.max_depth
            ));
        }
        if !(self.learning_rate > 0.0 && self.learning_rate <= 1.0) {
            return bad(format!(
                "learning_rate: expected a number in (0, 1], got {}",
                self.learning_rate
            ));
        }
        if !(self.c.is_finite() && self.c > 0.0) {
            return bad(format!("c: expected a positive number, got {}", self.c));
        }
        if !(0.0..=1.0).contains(&self.threshold) {
            return bad(format!(
                "threshold: expected a probability in [0, 1], got {}",
                self.threshold
            ));
        }
        Ok(())
    }
}

/// Trains as `request` says and registers the model as its name's next version.
pub async fn train(store: &FeatureStore, request: &TrainRequest) -> Result<Model> {
    request.validate()?;
    let _slot = TRAINING_SLOTS.try_acquire().map_err(|_| {
        DeployError::Unavailable(format!(
            "{MAX_CONCURRENT_TRAINING} training jobs are running; retry when one has finished"
        ))
    })?;
    let view = store.describe_view(&request.feature_view, request.view_version)?;
    if !view.labels.contains(&request.label) {
        return Err(DeployError::BadRequest(format!(
            "'{}' is not a label of feature view {} v{} (its labels: {:?})",
            request.label, request.feature_view, view.view.version, view.labels
        )));
    }
    let dataset = store.training_dataset(
        &request.feature_view,
        Some(view.view.version),
        request.training_dataset,
    )?;
    let root = store.group(&view.view.spec.root.group, view.view.spec.root.version)?;
    let root = &root.spec;
    let split = async |name: SplitName| -> Result<Vec<arrow::array::RecordBatch>> {
        if dataset.row_counts.get(&name).copied().unwrap_or(0) == 0 {
            return Ok(Vec::new());
        }
        Ok(store.read_training_dataset(&dataset, name, true).await?)
    };
    let train_rows = split(SplitName::Train).await?;
    let schema = train_rows.first().map(|b| b.schema()).ok_or_else(|| {
        DeployError::BadRequest("the training dataset's train split has no rows".into())
    })?;
    // Everything but the keys, the event time and the labels is a feature.
    let candidates: Vec<&arrow::datatypes::Field> = schema
        .fields()
        .iter()
        .map(|f| f.as_ref())
        .filter(|f| {
            let n = f.name();
            !root.primary_key.contains(n) && *n != root.event_time && !view.labels.contains(n)
        })
        .collect();
    let known = |n: &String| candidates.iter().any(|f| f.name() == n);
    if let Some(unknown) = request
        .features
        .iter()
        .flatten()
        .chain(&request.exclude)
        .find(|n| !known(n))
    {
        return Err(DeployError::BadRequest(format!(
            "'{unknown}' is not a feature of feature view {} v{} (its features, after transforms: {})",
            request.feature_view,
            view.view.version,
            candidates
                .iter()
                .map(|f| f.name().as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let features: Vec<String> = match &request.features {
        Some(list) => list.clone(),
        None => candidates
            .iter()
            .filter(|f| !matches!(f.data_type(), arrow::datatypes::DataType::Timestamp(..)))
            .map(|f| f.name().clone())
            .filter(|n| !request.exclude.contains(n))
            .collect(),
    };
    if features.is_empty() {
        return Err(DeployError::BadRequest(
            "no features left to train on".into(),
        ));
    }
    let labelled = |name: SplitName, batches: &[arrow::array::RecordBatch]| {
        Labelled::from_batches(name.as_str(), batches, &features, &request.label)
            .map_err(|e| DeployError::BadRequest(e.to_string()))
    };
    let train = labelled(SplitName::Train, &train_rows)?;
    let validation = labelled(SplitName::Validation, &split(SplitName::Validation).await?)?;
    let test = labelled(SplitName::Test, &split(SplitName::Test).await?)?;
    let task = match request.task {
        TaskName::Binary => Task::Binary,
        TaskName::Regression => Task::Regression,
    };
    let algorithm = match request.algorithm {
        AlgorithmName::Gbdt => Algorithm::Gbdt(GbdtParams {
            trees: request.trees,
            learning_rate: request.learning_rate,
            max_depth: request.max_depth,
            seed: request.seed,
        }),
        AlgorithmName::Logistic => Algorithm::Logistic { c: request.c },
    };
    // Fitting is CPU work: off the async workers.
    let threshold = request.threshold;
    let trained = tokio::task::spawn_blocking(move || {
        kairos_model::train::train(
            algorithm,
            task,
            &train,
            Some(&validation),
            Some(&test),
            threshold,
        )
    })
    .await
    .map_err(DeployError::internal)?
    .map_err(|e| DeployError::BadRequest(e.to_string()))?;
    let spec = ModelSpec {
        name: request
            .name
            .clone()
            .unwrap_or_else(|| request.feature_view.clone()),
        framework: trained.framework,
        artifact: trained.artifact_name.clone(),
        signature: trained.signature.clone(),
        description: format!(
            "{:?} on feature view {} v{}, training dataset {}",
            request.algorithm, request.feature_view, view.view.version, dataset.version
        ),
        metrics: Some(trained.evaluation.clone()),
        lineage: Lineage {
            feature_view: Some(request.feature_view.clone()),
            feature_view_version: Some(view.view.version),
            training_dataset_version: Some(dataset.version),
            transforms: Some(
                serde_json::to_value(&dataset.transforms).map_err(DeployError::internal)?,
            ),
            features,
            label: Some(request.label.clone()),
            training: Some(serde_json::to_value(request).map_err(DeployError::internal)?),
        },
    };
    let artifacts = Artifacts::new(store.storage());
    register(store.catalog(), &artifacts, &spec, trained.artifact).await
}

/// Checks `spec` and that its artifact loads (an ONNX graph tract cannot run is refused now,
/// with tract's reason, rather than when a deployment loads it), takes the next version in the
/// catalog and stores the artifact under it; an artifact that cannot be stored takes the
/// version back out.
pub async fn register(
    catalog: &dyn Catalog,
    artifacts: &Artifacts,
    spec: &ModelSpec,
    artifact: Vec<u8>,
) -> Result<Model> {
    spec.validate()?;
    let candidate = Model {
        spec: spec.clone(),
        version: 0,
        created_at: String::new(),
    };
    // A candle network's weights are checked by the application that loads them.
    if spec.framework == kairos_model::registry::Framework::Candle {
        return register_with_files(catalog, artifacts, spec, artifact, Vec::new()).await;
    }
    let artifact = tokio::task::spawn_blocking(move || {
        Predictor::load(&candidate, &artifact).map(|_| artifact)
    })
    .await
    .map_err(DeployError::internal)?
    .map_err(|e| DeployError::Invalid(format!("artifact of model '{}': {e}", spec.name)))?;
    register_with_files(catalog, artifacts, spec, artifact, Vec::new()).await
}

/// Takes the next version of the name, stores the artifact under it with the files that go
/// beside it (a vocabulary), and only then records the model: a listed version always has its
/// artifact. A failure removes what was stored; a crash leaves an unlisted folder, which
/// [`sweep_orphan_artifacts`] removes.
pub async fn register_with_files(
    catalog: &dyn Catalog,
    artifacts: &Artifacts,
    spec: &ModelSpec,
    artifact: Vec<u8>,
    files: Vec<(String, Vec<u8>)>,
) -> Result<Model> {
    let version = catalog
        .reserve_model_version(&spec.name)
        .map_err(StoreError::from)?;
    let stored = async {
        for (file, bytes) in files {
            artifacts
                .put(&spec.name, version, &file, bytes.into())
                .await?;
        }
        artifacts
            .put(&spec.name, version, &spec.artifact, artifact.into())
            .await
    };
    if let Err(e) = stored.await {
        if let Err(cleanup) = artifacts.delete(&spec.name, version).await {
            tracing::warn!(model = %spec.name, version, error = %cleanup, "cannot remove a failed registration's files");
        }
        return Err(DeployError::internal(e));
    }
    kairos_types::fault::point("model.before_catalog");
    let model = Model {
        spec: spec.clone(),
        version,
        created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    };
    catalog.save_model(&model).map_err(StoreError::from)?;
    Ok(model)
}

/// How old an unlisted artifact folder must be before a start removes it: a registration in
/// another process takes seconds, not this long.
pub const ORPHAN_MIN_AGE: std::time::Duration = std::time::Duration::from_secs(600);

/// Removes artifact folders no listed model version owns, left by registrations that crashed
/// between storing the artifact and recording the model. Only folders older than `min_age`
/// go: another process may be registering into the same data dir right now.
pub async fn sweep_orphan_artifacts(
    catalog: &dyn Catalog,
    artifacts: &Artifacts,
    min_age: std::time::Duration,
) -> Result<usize> {
    let listed: std::collections::HashSet<(String, u32)> = catalog
        .list_models()
        .map_err(StoreError::from)?
        .into_iter()
        .map(|m| (m.spec.name, m.version))
        .collect();
    let mut removed = 0;
    for (name, version, age) in artifacts.versions().await.map_err(DeployError::internal)? {
        if listed.contains(&(name.clone(), version)) || age < min_age {
            continue;
        }
        artifacts
            .delete(&name, version)
            .await
            .map_err(DeployError::internal)?;
        tracing::warn!(model = %name, version, "removed the files of a registration that never finished");
        removed += 1;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(extra: serde_json::Value) -> TrainRequest {
        let mut body = serde_json::json!({"feature_view": "v", "label": "y"});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        serde_json::from_value(body).unwrap()
    }

    #[tokio::test]
    async fn a_model_is_listed_only_with_its_artifact_and_unfinished_ones_are_swept() {
        use kairos_catalog::{Catalog, SqliteCatalog};
        let dir = tempfile::tempdir().unwrap();
        let catalog = SqliteCatalog::in_memory().unwrap();
        let artifacts = Artifacts::new(&kairos_store::Storage::data_dir(dir.path()).unwrap());
        let spec: ModelSpec = serde_json::from_value(serde_json::json!({
            "name": "m", "framework": "candle", "artifact": "weights.safetensors",
            "signature": {"inputs": [], "outputs": []}
        }))
        .unwrap();
        let model = register_with_files(&catalog, &artifacts, &spec, b"w".to_vec(), vec![])
            .await
            .unwrap();
        assert_eq!(model.version, 1);
        // A registration killed after its files and before its record: version 2 is taken,
        // its files are there, and nothing lists it.
        let crashed = catalog.reserve_model_version("m").unwrap();
        artifacts
            .put("m", crashed, "weights.safetensors", b"w".to_vec().into())
            .await
            .unwrap();
        assert_eq!(catalog.list_models().unwrap().len(), 1);
        // Too young to be swept: another process may be registering it.
        let young = sweep_orphan_artifacts(&catalog, &artifacts, ORPHAN_MIN_AGE).await;
        assert_eq!(young.unwrap(), 0);
        let swept = sweep_orphan_artifacts(&catalog, &artifacts, std::time::Duration::ZERO);
        assert_eq!(swept.await.unwrap(), 1);
        let left: Vec<_> = artifacts.versions().await.unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!((left[0].0.as_str(), left[0].1), ("m", 1));
        // The next registration takes a new number: versions are never reused.
        let next = register_with_files(&catalog, &artifacts, &spec, b"w".to_vec(), vec![]);
        assert_eq!(next.await.unwrap().version, 3);
    }

    #[test]
    fn parameters_without_a_bound_are_refused() {
        assert!(request(serde_json::json!({})).validate().is_ok());
        for (extra, field) in [
            (serde_json::json!({"trees": 1_000_000_000usize}), "trees"),
            (serde_json::json!({"trees": 0}), "trees"),
            (serde_json::json!({"max_depth": 64}), "max_depth"),
            (serde_json::json!({"learning_rate": 0.0}), "learning_rate"),
            (serde_json::json!({"c": -1.0}), "c:"),
            (serde_json::json!({"threshold": 2.0}), "threshold"),
        ] {
            let err = request(extra).validate().unwrap_err().to_string();
            assert!(err.contains(field), "{err}");
        }
    }
}
