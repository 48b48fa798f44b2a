//! The deployments of a store: applied from a definition, loaded, swapped atomically for a new
//! revision, and asked for predictions.
//!
//! The live deployments are one immutable map behind an [`ArcSwap`]: a request takes the
//! deployment's current [`Live`] once and finishes on it, while an apply builds the next
//! revision whole (model loaded, view checked, log ready) before it swaps the map. No request
//! waits for an apply, and none sees half of one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use kairos_model::predictor::Predictor;
use kairos_model::{Artifacts, Deployment, DeploymentSpec, Model};
use kairos_store::{FeatureStore, StoreError, request_objects};
use kairos_view::EntryStatus;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use utoipa::ToSchema;

use crate::error::{DeployError, Result};
use crate::inference_log::{InferenceLog, LoggedRequest, log_group_spec};
use crate::live::{Live, Scored, is_classifier};
use crate::telemetry::{Latency, LatencyReport};

/// How long closing waits for the inference logs to write what they hold.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(30);

/// A prediction request: entity keys and request-time values, as for online feature vectors.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PredictRequest {
    /// A client's id for the request; one is made up when absent.
    #[serde(default)]
    pub id: Option<String>,
    /// Per entity: an object of the key columns, an array in key order, or a bare value for
    /// single-column keys.
    #[schema(value_type = Vec<Object>)]
    pub entries: Vec<serde_json::Value>,
    /// Request-time values: one object for all entries, or one object per entry.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub request: Option<serde_json::Value>,
    /// Return each entry's feature vector (the model's input) with its prediction.
    #[serde(default)]
    pub return_features: bool,
}

/// The answer to a prediction request, one prediction per entry in order.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PredictResponse {
    pub id: String,
    pub deployment: String,
    pub revision: u32,
    pub model: String,
    pub model_version: u32,
    /// The model's feature names, when the request asked for the features.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<Vec<String>>,
    pub predictions: Vec<EntryPrediction>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EntryPrediction {
    #[schema(value_type = String)]
    pub status: EntryStatus,
    /// The feature groups that had no row for the entry; their features were missing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<String>,
    /// A classifier's positive-class probability.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probability: Option<f64>,
    /// A classifier's label: 1 when the probability reaches the deployment's threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<i32>,
    /// A regressor's prediction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prediction: Option<f64>,
    /// The model's input, when asked for (null: missing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<Vec<Option<f64>>>,
}

/// What `kairos deploy status` shows.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeploymentStatus {
    #[serde(flatten)]
    pub deployment: Deployment,
    pub feature_view: String,
    pub feature_view_version: u32,
    pub training_dataset_version: u32,
    pub features: Vec<String>,
    /// The inference-log feature group and version, when logging is on (the definition's
    /// `inference_log` is the switch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inference_log_group: Option<String>,
    pub inference_log_dropped: u64,
    pub latency: LatencyReport,
}

/// The deployments of one store.
#[derive(Debug)]
pub struct Deployments {
    store: FeatureStore,
    artifacts: Artifacts,
    live: ArcSwap<HashMap<String, Arc<Live>>>,
    /// Applies and deletes one at a time; requests never take it.
    changing: tokio::sync::Mutex<()>,
    /// Latency accounts by deployment, kept across revisions.
    latency: Mutex<HashMap<String, Arc<Latency>>>,
    writers: Mutex<Vec<JoinHandle<()>>>,
    /// Registered models loaded for direct inference, by (name, version).
    models: Mutex<HashMap<(String, u32), Arc<Predictor>>>,
    /// Set once the deployments in the catalog have been loaded.
    ready: std::sync::atomic::AtomicBool,
    request_prefix: u32,
    requests: AtomicU64,
    /// Models an application above the deployments serves over the protocol (recommenders).
    applications: Mutex<Vec<Arc<dyn crate::v2::V2Application>>>,
}

impl Deployments {
    pub fn new(store: FeatureStore) -> Result<Deployments> {
        let artifacts = Artifacts::new(store.storage());
        Ok(Deployments {
            store,
            artifacts,
            live: ArcSwap::from_pointee(HashMap::new()),
            changing: tokio::sync::Mutex::new(()),
            latency: Mutex::new(HashMap::new()),
            writers: Mutex::new(Vec::new()),
            models: Mutex::new(HashMap::new()),
            ready: std::sync::atomic::AtomicBool::new(false),
            request_prefix: rand_prefix(),
            requests: AtomicU64::new(0),
            applications: Mutex::new(Vec::new()),
        })
    }

    pub fn store(&self) -> &FeatureStore {
        &self.store
    }

    /// Lets `application` answer the protocol for the models it names (before deployments and
    /// registered models of the same name).
    pub fn add_application(&self, application: Arc<dyn crate::v2::V2Application>) {
        self.applications.lock().expect("lock").push(application);
    }

    pub(crate) fn applications(&self) -> Vec<Arc<dyn crate::v2::V2Application>> {
        self.applications.lock().expect("lock").clone()
    }

    /// Loads every deployment in the catalog. One that cannot load is logged and left out
    /// (its V2 model reads not ready) rather than keeping the others down.
    pub async fn start_all(&self) {
        // An apply arriving meanwhile waits, so an older revision never replaces it.
        let _changing = self.changing.lock().await;
        let orphans = crate::training::sweep_orphan_artifacts(
            self.store.catalog(),
            &self.artifacts,
            crate::training::ORPHAN_MIN_AGE,
        )
        .await;
        if let Err(e) = orphans {
            tracing::warn!(error = %e, "cannot sweep unfinished model registrations");
        }
        let deployments = match self.store.catalog().list_deployments() {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "cannot list deployments");
                Vec::new()
            }
        };
        for deployment in deployments {
            let name = deployment.spec.name.clone();
            let loaded = async {
                let model = self.model_of(&deployment.spec)?;
                self.load(deployment, model).await
            }
            .await;
            match loaded {
                Ok(live) => self.swap_in(live),
                Err(e) => tracing::error!(deployment = %name, error = %e, "deployment not loaded"),
            }
        }
        self.ready.store(true, Ordering::Release);
    }

    /// Whether the deployments in the catalog have been loaded.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Applies a deployment: loads its model and checks it against its feature view, records
    /// the next revision, then swaps it in atomically. Requests in flight finish on the
    /// revision they started on.
    pub async fn apply(&self, spec: DeploymentSpec) -> Result<Deployment> {
        spec.validate()?;
        let _changing = self.changing.lock().await;
        let model = self.model_of(&spec)?;
        let mut pinned = spec;
        pinned.model_version = Some(model.version);
        // The revision and time are the catalog's, once the candidate has loaded.
        let candidate = Deployment {
            spec: pinned.clone(),
            revision: 0,
            created_at: String::new(),
        };
        let mut live = self.load(candidate, model).await?;
        let recorded = self
            .store
            .catalog()
            .create_deployment(&pinned)
            .map_err(StoreError::from)?;
        live.deployment = recorded.clone();
        self.swap_in(live);
        tracing::info!(deployment = %pinned.name, revision = recorded.revision,
            model = %pinned.model, model_version = ?pinned.model_version, "deployment applied");
        Ok(recorded)
    }

    /// Brings one deployment in line with the catalog after another replica (or process)
    /// changed it: loads the catalog's revision when this server serves another one or none,
    /// and takes it out when the catalog no longer has it. A revision this server applied
    /// itself is already live, and nothing happens.
    pub async fn follow(&self, name: &str) -> Result<()> {
        let _changing = self.changing.lock().await;
        let recorded = self
            .store
            .catalog()
            .get_deployment(name)
            .map_err(StoreError::from)?;
        let live_revision = self.live.load().get(name).map(|l| l.deployment.revision);
        match recorded {
            None if live_revision.is_some() => {
                self.live.rcu(|current| {
                    let mut next = HashMap::clone(current);
                    next.remove(name);
                    next
                });
                tracing::info!(deployment = %name, "deployment removed: deleted elsewhere");
            }
            Some(deployment) if live_revision != Some(deployment.revision) => {
                let model = self.model_of(&deployment.spec)?;
                let revision = deployment.revision;
                let live = self.load(deployment, model).await?;
                self.swap_in(live);
                tracing::info!(deployment = %name, revision, "deployment loaded: applied elsewhere");
            }
            _ => {}
        }
        Ok(())
    }

    /// Removes a deployment: every revision, and its live model.
    pub async fn delete(&self, name: &str) -> Result<()> {
        let _changing = self.changing.lock().await;
        if !self
            .store
            .catalog()
            .delete_deployment(name)
            .map_err(StoreError::from)?
        {
            return Err(not_found(name));
        }
        self.live.rcu(|current| {
            let mut next = HashMap::clone(current);
            next.remove(name);
            next
        });
        Ok(())
    }

    /// The live revision of a deployment.
    pub fn get(&self, name: &str) -> Result<Arc<Live>> {
        match self.live.load().get(name) {
            Some(live) => Ok(live.clone()),
            None if !self.is_ready() => Err(DeployError::Unavailable(format!(
                "deployment '{name}' is not loaded yet: the server is still loading its deployments"
            ))),
            None => Err(not_found(name)),
        }
    }

    /// Every live deployment, by name.
    pub fn list(&self) -> Vec<Arc<Live>> {
        let map = self.live.load();
        let mut lives: Vec<Arc<Live>> = map.values().cloned().collect();
        lives.sort_by(|a, b| a.deployment.spec.name.cmp(&b.deployment.spec.name));
        lives
    }

    pub fn status(&self, name: &str) -> Result<DeploymentStatus> {
        let live = self.get(name)?;
        Ok(DeploymentStatus {
            deployment: live.deployment.clone(),
            feature_view: live.view.clone(),
            feature_view_version: live.view_version,
            training_dataset_version: live.training_dataset,
            features: live.features.clone(),
            inference_log_group: live.log.as_ref().map(|l| l.group().to_string()),
            inference_log_dropped: live.log.as_ref().map_or(0, InferenceLog::dropped),
            latency: live.latency.report(),
        })
    }

    /// Predicts for every entry of `request` on the deployment's live revision.
    pub async fn predict(&self, name: &str, request: PredictRequest) -> Result<PredictResponse> {
        let live = self.get(name)?;
        let values = request_objects(request.request)?;
        let (id, scored) = self
            .score(&live, request.id, &request.entries, &values)
            .await?;
        let names = request.return_features.then(|| live.features.clone());
        let width = live.features.len();
        let predictions = (0..scored.rows)
            .map(|i| EntryPrediction {
                status: scored.statuses[i],
                missing: scored.missing[i].clone(),
                probability: live.classifier.then_some(scored.outputs[i]),
                label: scored.labels.as_ref().map(|l| l[i]),
                prediction: (!live.classifier).then_some(scored.outputs[i]),
                features: request.return_features.then(|| {
                    scored.features[i * width..(i + 1) * width]
                        .iter()
                        .map(|v| (!v.is_nan()).then_some(*v))
                        .collect()
                }),
            })
            .collect();
        Ok(PredictResponse {
            id,
            deployment: live.deployment.spec.name.clone(),
            revision: live.deployment.revision,
            model: live.model.spec.name.clone(),
            model_version: live.model.version,
            features: names,
            predictions,
        })
    }

    /// Scores on `live`, accounting latency and logging the predictions: what every transport
    /// calls.
    pub async fn score(
        &self,
        live: &Live,
        id: Option<String>,
        entries: &[serde_json::Value],
        request: &[serde_json::Map<String, serde_json::Value>],
    ) -> Result<(String, Scored)> {
        let started = Instant::now();
        let id = id.unwrap_or_else(|| self.next_request_id());
        match live.score(&self.store, entries, request).await {
            Ok(scored) => {
                let total = started.elapsed();
                live.latency.answered(&scored.stages, scored.predict, total);
                if let Some(log) = live.log.as_ref().filter(|_| scored.rows > 0) {
                    log.record(LoggedRequest {
                        request_id: id.clone(),
                        at_micros: chrono::Utc::now().timestamp_micros(),
                        model_version: live.model.version,
                        keys: live.key_values(entries),
                        features: scored.features.clone(),
                        predictions: scored.outputs.clone(),
                        labels: scored.labels.clone(),
                        latency_us: total.as_micros() as i64,
                    });
                }
                Ok((id, scored))
            }
            Err(e) => {
                live.latency.failed(match e {
                    DeployError::BadRequest(_)
                    | DeployError::Store(StoreError::BadRequest(_) | StoreError::BadBatch(_)) => {
                        "bad_request"
                    }
                    _ => "error",
                });
                Err(e)
            }
        }
    }

    /// A registered model version (the latest when `version` is `None`) loaded to predict on
    /// feature tensors directly; loaded once and kept.
    pub async fn model_predictor(
        &self,
        name: &str,
        version: Option<u32>,
    ) -> Result<(Model, Arc<Predictor>)> {
        let model = self
            .store
            .catalog()
            .get_model(name, version)
            .map_err(StoreError::from)?
            .ok_or_else(|| model_not_found(name, version))?;
        let key = (model.spec.name.clone(), model.version);
        if let Some(p) = self.models.lock().expect("models lock").get(&key) {
            return Ok((model, p.clone()));
        }
        let predictor = self.load_predictor(&model).await?;
        self.models
            .lock()
            .expect("models lock")
            .insert(key, predictor.clone());
        Ok((model, predictor))
    }

    /// Stops taking requests' log entries and waits (bounded) for the inference logs to
    /// write what they hold.
    pub async fn close(&self) {
        self.live.store(Arc::new(HashMap::new()));
        let writers: Vec<JoinHandle<()>> =
            std::mem::take(&mut *self.writers.lock().expect("writers lock"));
        let all = futures::future::join_all(writers);
        if tokio::time::timeout(CLOSE_TIMEOUT, all).await.is_err() {
            tracing::error!("inference logs still writing after {CLOSE_TIMEOUT:?}; giving up");
        }
    }

    fn model_of(&self, spec: &DeploymentSpec) -> Result<Model> {
        self.store
            .catalog()
            .get_model(&spec.model, spec.model_version)
            .map_err(StoreError::from)?
            .ok_or_else(|| {
                DeployError::NotFound(format!(
                    "deployment '{}': {}",
                    spec.name,
                    model_not_found(&spec.model, spec.model_version)
                ))
            })
    }

    async fn load_predictor(&self, model: &Model) -> Result<Arc<Predictor>> {
        let bytes = self
            .artifacts
            .get(&model.spec.name, model.version, &model.spec.artifact)
            .await
            .map_err(|e| {
                DeployError::Internal(format!(
                    "model '{}' v{}: artifact: {e}",
                    model.spec.name, model.version
                ))
            })?;
        let model = model.clone();
        // ONNX graphs are optimised on load, which can take a while.
        let predictor = tokio::task::spawn_blocking(move || Predictor::load(&model, &bytes))
            .await
            .map_err(DeployError::internal)?
            .map_err(|e| DeployError::Invalid(e.to_string()))?;
        Ok(Arc::new(predictor))
    }

    /// Builds a revision whole: model loaded, its lineage checked against the feature view,
    /// inference log ready.
    async fn load(&self, deployment: Deployment, model: Model) -> Result<Live> {
        let spec = &deployment.spec;
        let lineage = &model.spec.lineage;
        let invalid = |what: &str| {
            DeployError::Invalid(format!(
                "deployment '{}': model '{}' v{} {what}",
                spec.name, model.spec.name, model.version
            ))
        };
        let (Some(view), Some(view_version), Some(training_dataset)) = (
            lineage.feature_view.clone(),
            lineage.feature_view_version,
            lineage.training_dataset_version,
        ) else {
            return Err(invalid(
                "records no lineage.feature_view, feature_view_version and training_dataset_version: \
                 a deployment serves a model trained on a feature view (kairos train records them; \
                 add [lineage] to the definition of a model trained elsewhere)",
            ));
        };
        if lineage.features.is_empty() {
            return Err(invalid("records no lineage.features"));
        }
        let predictor = self.load_predictor(&model).await?;
        if predictor.features() != lineage.features.len() {
            return Err(invalid(&format!(
                "takes {} features but its lineage names {}",
                predictor.features(),
                lineage.features.len()
            )));
        }
        let inputs = self.store.view_inputs(&view, Some(view_version))?;
        // The view must still give every feature the model was trained on.
        let probe = self
            .store
            .feature_vectors(&view, Some(view_version), &[], &[], Some(training_dataset))
            .await?;
        let schema = probe.features.schema();
        if let Some(absent) = lineage
            .features
            .iter()
            .find(|f| schema.index_of(f).is_err())
        {
            return Err(invalid(&format!(
                "was trained on feature '{absent}', which feature view '{view}' v{view_version} does not give"
            )));
        }
        let classifier = is_classifier(&model);
        let latency = self
            .latency
            .lock()
            .expect("latency lock")
            .entry(spec.name.clone())
            .or_insert_with(|| Arc::new(Latency::new(&spec.name, spec.slo.clone())))
            .clone();
        latency.set_slo(spec.slo.clone());
        let log = if spec.inference_log {
            Some(
                self.start_log(&spec.name, &inputs.keys, &lineage.features, classifier)
                    .await?,
            )
        } else {
            None
        };
        Ok(Live {
            features: lineage.features.clone(),
            deployment,
            model,
            predictor,
            view,
            view_version,
            training_dataset,
            inputs,
            classifier,
            latency,
            log,
        })
    }

    /// The deployment's inference-log group: the latest version if its columns fit, a new
    /// version if the model's features changed.
    async fn start_log(
        &self,
        deployment: &str,
        keys: &[(String, kairos_types::FeatureType)],
        features: &[String],
        classifier: bool,
    ) -> Result<InferenceLog> {
        let spec = log_group_spec(deployment, keys, features, classifier)?;
        let existing = match self.store.group(&spec.name, None) {
            Ok(group) => Some(group),
            Err(StoreError::NotFound(_)) => None,
            Err(e) => return Err(e.into()),
        };
        let group = match existing {
            Some(g) if g.spec.columns == spec.columns && g.spec.primary_key == spec.primary_key => {
                g
            }
            _ => self.store.create_group(spec.clone()).await?,
        };
        let (log, writer) =
            InferenceLog::start(self.store.clone(), deployment, spec, group.version);
        let mut writers = self.writers.lock().expect("writers lock");
        writers.retain(|w| !w.is_finished());
        writers.push(writer);
        Ok(log)
    }

    fn swap_in(&self, live: Live) {
        let live = Arc::new(live);
        let name = live.deployment.spec.name.clone();
        self.live.rcu(|current| {
            let mut next = HashMap::clone(current);
            next.insert(name.clone(), live.clone());
            next
        });
    }

    fn next_request_id(&self) -> String {
        let n = self.requests.fetch_add(1, Ordering::Relaxed);
        format!("{:08x}-{n:012x}", self.request_prefix)
    }
}

fn not_found(name: &str) -> DeployError {
    DeployError::NotFound(format!("deployment '{name}' not found"))
}

fn model_not_found(name: &str, version: Option<u32>) -> DeployError {
    DeployError::NotFound(match version {
        Some(v) => format!("model '{name}' v{v} not found"),
        None => format!("model '{name}' not found"),
    })
}

/// A per-process prefix for made-up request ids, so ids from two runs do not collide.
fn rand_prefix() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    (nanos as u32) ^ std::process::id().rotate_left(16)
}
