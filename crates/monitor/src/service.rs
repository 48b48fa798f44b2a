//! `Monitors`: the monitoring service every transport calls. A run reads the deployment's
//! inference log over the monitor's window, compares its features and predictions with the
//! reference, joins the late labels that have arrived, decides the alerts, writes every score
//! to the monitor's feature group (its history), exports them on `/metrics`, tells the log and
//! the webhook, and on an alert may retrain (`retrain`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, TimestampMicrosecondType};
use arrow::util::display::array_value_to_string;
use kairos_deploy::{DeployError, Deployments, Result};
use kairos_offline::ReadFilter;
use kairos_store::{FeatureStore, InsertOptions, StoreError};
use kairos_types::{Column, FeatureGroupSpec, FeatureType, Format};
use kairos_view::SplitName;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use utoipa::ToSchema;

use crate::drift::{ColumnDrift, DatasetDrift, Samples, column_drift, dataset_drift};
use crate::quality::{Labelled, WindowQuality, window_quality};
use crate::retrain::{self, RetrainDecision};
use crate::spec::{Monitor, MonitorSpec, Reference};
use crate::telemetry;

/// The catalog's service-document kind monitors are stored under.
pub const KIND: &str = "monitor";

/// Inference-log columns (kairos-deploy writes them).
const LOGGED_AT: &str = "logged_at";
const PREDICTION: &str = "prediction";

/// The monitoring service; cheap to clone.
#[derive(Clone)]
pub struct Monitors {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Monitors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitors").finish_non_exhaustive()
    }
}

struct Inner {
    deployments: Arc<Deployments>,
    http: reqwest::Client,
    /// The running schedules, by monitor name, with the version each runs.
    schedules: Mutex<HashMap<String, (u32, JoinHandle<()>)>>,
    /// The hosts alert webhooks may call, in a server (whose monitor definitions come from
    /// clients); `None` in the operator's own process.
    webhook_hosts: Option<Vec<String>>,
    /// Reference samples by (deployment, model name, model version): a training dataset's
    /// train split is read and scored once per model.
    references: tokio::sync::Mutex<HashMap<(String, String, u32), Arc<Sample>>>,
}

/// What one run found.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MonitorRun {
    pub monitor: String,
    pub run_id: String,
    /// The run's time and its window, RFC 3339.
    pub at: String,
    pub window_start: String,
    pub deployment: String,
    pub model: String,
    pub model_version: u32,
    /// Logged predictions in the window.
    pub rows: u64,
    pub reference_rows: u64,
    /// Feature drift; absent when the window held fewer than `min_rows` predictions.
    #[schema(value_type = Option<Object>)]
    pub features: Option<DatasetDrift>,
    /// Drift of the predicted probability and of the predicted label (the positive rate).
    #[schema(value_type = Vec<Object>)]
    pub predictions: Vec<ColumnDrift>,
    /// Quality over the predictions whose labels have arrived.
    pub quality: Option<WindowQuality>,
    /// Why this run alerts; empty when it does not.
    pub alerts: Vec<String>,
    /// Why parts were left out (too few rows, no labels yet).
    pub notes: Vec<String>,
    /// The retraining an alert started, when the monitor retrains.
    pub retraining: Option<RetrainDecision>,
}

/// A column of samples read from batches.
#[derive(Debug, Default)]
pub(crate) struct Sample {
    pub(crate) rows: usize,
    pub(crate) features: HashMap<String, Vec<f64>>,
    pub(crate) predictions: Vec<f64>,
    pub(crate) labels: Vec<String>,
}

/// The alert a webhook receives.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Alert {
    pub monitor: String,
    pub deployment: String,
    pub run_id: String,
    pub at: String,
    pub reasons: Vec<String>,
}

fn micros_to_rfc3339(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Everything the group's log held when called, read from the offline store once it has it
/// (the inference log, the labels and the monitor's own groups are offline reads).
pub(crate) async fn read_group(
    store: &FeatureStore,
    group: &str,
    filter: ReadFilter,
) -> Result<Vec<RecordBatch>> {
    store.wait_materialised(group, None).await?;
    Ok(store
        .read_offline(group, None, filter)
        .await?
        .collect()
        .await
        .map_err(StoreError::from)?)
}

/// RFC 3339 to the microsecond, as the history stores it.
pub(crate) fn precise(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

impl Monitors {
    /// The monitors of the operator's own process: a webhook may name any host.
    pub fn new(deployments: Arc<Deployments>) -> Monitors {
        Self::with_webhook_hosts(deployments, None)
    }

    /// The monitors of a server: webhooks may call only these hosts, so a monitor definition
    /// cannot make the server send requests into its network.
    pub fn confined(deployments: Arc<Deployments>, webhook_hosts: Vec<String>) -> Monitors {
        let hosts = webhook_hosts
            .iter()
            .map(|h| h.trim_matches(['[', ']']).to_ascii_lowercase())
            .collect();
        Self::with_webhook_hosts(deployments, Some(hosts))
    }

    fn with_webhook_hosts(deployments: Arc<Deployments>, hosts: Option<Vec<String>>) -> Monitors {
        Monitors {
            inner: Arc::new(Inner {
                deployments,
                http: reqwest::Client::builder()
                    .timeout(std::time::Duration::from_secs(5))
                    .build()
                    .expect("an HTTP client"),
                schedules: Mutex::new(HashMap::new()),
                webhook_hosts: hosts,
                references: Default::default(),
            }),
        }
    }

    pub fn deployments(&self) -> &Arc<Deployments> {
        &self.inner.deployments
    }

    fn store(&self) -> &FeatureStore {
        self.inner.deployments.store()
    }

    /// Checks `spec` against its deployment, creates its history group, stores it as the
    /// name's next version and (re)starts its schedule.
    pub async fn apply(&self, spec: MonitorSpec) -> Result<Monitor> {
        spec.validate().map_err(DeployError::Invalid)?;
        if let Some(webhook) = &spec.alert.webhook {
            self.webhook_allowed(webhook)
                .map_err(DeployError::Invalid)?;
        }
        let live = self.inner.deployments.get(&spec.deployment)?;
        let features = &live.model.spec.lineage.features;
        let named = spec.features.iter().map(|f| ("features", f));
        let excluded = spec.exclude.iter().map(|f| ("exclude", f));
        if let Some((field, unknown)) = named.chain(excluded).find(|(_, f)| !features.contains(f)) {
            return Err(DeployError::Invalid(format!(
                "{field}: '{unknown}' is not an input of model {} v{} (its features: {})",
                live.model.spec.name,
                live.model.version,
                features.join(", ")
            )));
        }
        if let Some(labels) = &spec.labels {
            let group = self.store().group(&labels.group, None)?;
            let keys = &group.spec.primary_key;
            if keys.len() != 1 {
                return Err(DeployError::Invalid(format!(
                    "labels.group {} has a key of {} columns; a label group is keyed by one (the request id or the entity key)",
                    labels.group,
                    keys.len()
                )));
            }
            if group.spec.column(&labels.label).is_none() {
                return Err(DeployError::Invalid(format!(
                    "labels.label: group {} has no column '{}'",
                    labels.group, labels.label
                )));
            }
            let entity_keys = &live.inputs().keys;
            let joinable = labels.join_on == "request_id"
                || entity_keys.iter().any(|(k, _)| *k == labels.join_on);
            if !joinable {
                return Err(DeployError::Invalid(format!(
                    "labels.join_on '{}' must be request_id or one of the deployment's entity keys ({})",
                    labels.join_on,
                    entity_keys
                        .iter()
                        .map(|(k, _)| k.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
        self.ensure_history_group(&spec.name).await?;
        retrain::ensure_decisions_group(self.store(), &spec.name).await?;
        let body = serde_json::to_value(&spec).map_err(DeployError::internal)?;
        let version = self
            .store()
            .catalog()
            .put_service_document(KIND, &spec.name, &body)
            .map_err(StoreError::from)?;
        let monitor = Monitor { spec, version };
        self.schedule(&monitor);
        Ok(monitor)
    }

    pub fn get(&self, name: &str) -> Result<Monitor> {
        let (version, body) = self
            .store()
            .catalog()
            .get_service_document(KIND, name, None)
            .map_err(StoreError::from)?
            .ok_or_else(|| DeployError::NotFound(format!("monitor '{name}' not found")))?;
        let spec = serde_json::from_value(body).map_err(DeployError::internal)?;
        Ok(Monitor { spec, version })
    }

    pub fn list(&self) -> Result<Vec<Monitor>> {
        self.store()
            .catalog()
            .list_service_documents(KIND)
            .map_err(StoreError::from)?
            .into_iter()
            .map(|(_, version, body)| {
                let spec = serde_json::from_value(body).map_err(DeployError::internal)?;
                Ok(Monitor { spec, version })
            })
            .collect()
    }

    /// Stops the monitor's schedule and removes its definition; its history stays.
    pub fn delete(&self, name: &str) -> Result<()> {
        self.unschedule(name);
        let deleted = self
            .store()
            .catalog()
            .delete_service_document(KIND, name)
            .map_err(StoreError::from)?;
        if !deleted {
            return Err(DeployError::NotFound(format!("monitor '{name}' not found")));
        }
        Ok(())
    }

    /// Starts the schedule of every monitor that has one (the server does this on start).
    pub fn start_all(&self) -> Result<()> {
        for monitor in self.list()? {
            self.schedule(&monitor);
        }
        Ok(())
    }

    /// Stops every schedule.
    pub fn stop_all(&self) {
        for (_, (_, task)) in self.inner.schedules.lock().expect("schedules").drain() {
            task.abort();
        }
    }

    /// Brings the monitor's schedule in line with the catalog, after a change another replica
    /// made: started (or restarted) at its latest version, stopped when the monitor is gone.
    /// Every replica schedules every monitor; the catalog's claims run each slot once.
    pub fn follow(&self, name: &str) -> Result<()> {
        match self.get(name) {
            Ok(monitor) => {
                let running = self
                    .inner
                    .schedules
                    .lock()
                    .expect("schedules")
                    .get(name)
                    .map(|(v, _)| *v);
                if running != Some(monitor.version) {
                    self.schedule(&monitor);
                }
                Ok(())
            }
            Err(DeployError::NotFound(_)) => {
                self.unschedule(name);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// The names of the monitors scheduled here.
    pub fn scheduled(&self) -> Vec<String> {
        self.inner
            .schedules
            .lock()
            .expect("schedules")
            .keys()
            .cloned()
            .collect()
    }

    fn unschedule(&self, name: &str) {
        if let Some((_, task)) = self.inner.schedules.lock().expect("schedules").remove(name) {
            task.abort();
        }
    }

    fn schedule(&self, monitor: &Monitor) {
        let mut schedules = self.inner.schedules.lock().expect("schedules");
        if let Some((_, task)) = schedules.remove(&monitor.spec.name) {
            task.abort();
        }
        let Some(every) = monitor.spec.schedule else {
            return;
        };
        let this = self.clone();
        let name = monitor.spec.name.clone();
        // The schedule's slots are the multiples of `every` since the epoch; every replica
        // wakes at each, and the one that claims the slot in the catalog runs it, over the
        // window ending there — so a slot runs once among replicas, and a replica that died
        // leaves the next one to whoever is alive.
        let every = every.micros().max(1);
        let task = tokio::spawn(async move {
            loop {
                let slot = now_micros().div_euclid(every) + 1;
                let at = slot * every;
                let wait = u64::try_from(at - now_micros()).unwrap_or(0);
                tokio::time::sleep(std::time::Duration::from_micros(wait)).await;
                let (store, work) = (this.store().clone(), format!("monitor/{name}"));
                let claimed =
                    tokio::task::spawn_blocking(move || store.catalog().claim(&work, slot as u64))
                        .await;
                match claimed {
                    Ok(Ok(here)) => {
                        telemetry::schedule_slot(&name, here);
                        if here && let Err(e) = this.run(&name, Some(at)).await {
                            tracing::warn!(monitor = %name, error = %e, "monitor run failed");
                        }
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(monitor = %name, error = %e, "a scheduled slot could not be claimed; skipped");
                    }
                    Err(e) => {
                        tracing::warn!(monitor = %name, error = %e, "a scheduled slot's claim failed; skipped");
                    }
                }
            }
        });
        schedules.insert(monitor.spec.name.clone(), (monitor.version, task));
    }

    /// Evaluates the monitor over the window ending at `at` (microseconds; now when absent),
    /// records the scores, alerts, and retrains when the policy says so.
    pub async fn run(&self, name: &str, at: Option<i64>) -> Result<MonitorRun> {
        let monitor = self.get(name)?;
        let spec = &monitor.spec;
        let at = at.unwrap_or_else(now_micros);
        let mut run = self.evaluate(spec, at).await?;
        self.record(&run, at, at - spec.window.micros()).await?;
        telemetry::record_run(&run);
        if !run.alerts.is_empty() {
            self.alert(spec, &run).await;
            if let Some(policy) = &spec.retrain
                && policy.on_alert
            {
                let decision = retrain::retrain(
                    &self.inner.deployments,
                    spec,
                    policy,
                    &format!("alert of run {}", run.run_id),
                )
                .await;
                run.retraining = Some(decision);
            }
        }
        Ok(run)
    }

    /// The HTML report of a deployment's monitor (its only one, or `monitor`): the current
    /// window evaluated now (not recorded) and the monitor's history.
    pub async fn report(&self, deployment: &str, monitor: Option<&str>) -> Result<String> {
        let monitors: Vec<Monitor> = self
            .list()?
            .into_iter()
            .filter(|m| m.spec.deployment == deployment && monitor.is_none_or(|n| m.spec.name == n))
            .collect();
        let monitor = match monitors.as_slice() {
            [one] => one,
            [] => {
                return Err(DeployError::NotFound(format!(
                    "no monitor of deployment '{deployment}'{}",
                    monitor.map(|m| format!(" named '{m}'")).unwrap_or_default()
                )));
            }
            many => {
                return Err(DeployError::BadRequest(format!(
                    "deployment '{deployment}' has {} monitors ({}); name one",
                    many.len(),
                    many.iter()
                        .map(|m| m.spec.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        };
        let latest = self.evaluate(&monitor.spec, now_micros()).await?;
        let history = self.history(&monitor.spec.name).await?;
        Ok(crate::report::render(
            &format!("Monitoring report: {deployment}"),
            &latest,
            &history,
        ))
    }

    /// Reads the window and the reference and computes every score and alert; writes nothing.
    pub async fn evaluate(&self, spec: &MonitorSpec, at: i64) -> Result<MonitorRun> {
        let name = &spec.name;
        let live = self.inner.deployments.get(&spec.deployment)?;
        let model = &live.model;
        let threshold = live.deployment.spec.threshold;
        let features: Vec<String> = if spec.features.is_empty() {
            &model.spec.lineage.features
        } else {
            &spec.features
        }
        .iter()
        .filter(|f| !spec.exclude.contains(f))
        .cloned()
        .collect();
        let window_start = at - spec.window.micros();
        let log_group = format!("{}_inference_log", spec.deployment);
        let current_batches = self.read_log(&log_group, window_start, at).await?;
        let current = sample(&current_batches, &features, threshold)?;
        let reference = match &spec.reference {
            Reference::TrainingDataset => self.training_reference(&live, &features).await?,
            Reference::Logs { before } => {
                let end = at - before.micros();
                let batches = self
                    .read_log(&log_group, end - spec.window.micros(), end)
                    .await?;
                Arc::new(sample(&batches, &features, threshold)?)
            }
        };
        let run_id = format!("{name}-{at}");
        let mut run = MonitorRun {
            monitor: name.to_string(),
            run_id: run_id.clone(),
            at: micros_to_rfc3339(at),
            window_start: micros_to_rfc3339(window_start),
            deployment: spec.deployment.clone(),
            model: model.spec.name.clone(),
            model_version: model.version,
            rows: current.rows as u64,
            reference_rows: reference.rows as u64,
            features: None,
            predictions: Vec::new(),
            quality: None,
            alerts: Vec::new(),
            notes: Vec::new(),
            retraining: None,
        };
        if current.rows < spec.min_rows || reference.rows == 0 {
            run.notes.push(format!(
                "{} predictions in the window and {} in the reference; drift needs {} and 1",
                current.rows, reference.rows, spec.min_rows
            ));
        } else {
            let drift = tokio::task::block_in_place(|| {
                compare(
                    &reference,
                    &current,
                    &features,
                    spec.predictions,
                    &spec.drift,
                )
            })
            .map_err(|e| DeployError::BadRequest(e.to_string()))?;
            let (features_drift, predictions) = drift;
            if features_drift.drifted {
                run.alerts.push(format!(
                    "feature drift: {} of {} features drifted ({}), share {:.2} ≥ {}",
                    features_drift.drifted_columns,
                    features_drift.columns.len(),
                    features_drift
                        .columns
                        .iter()
                        .filter(|c| c.drifted)
                        .map(|c| format!("{} {} {:.3}", c.column, c.method.name(), c.score))
                        .collect::<Vec<_>>()
                        .join(", "),
                    features_drift.share,
                    spec.drift.dataset_drift_share
                ));
            }
            for p in predictions.iter().filter(|p| p.drifted) {
                run.alerts.push(format!(
                    "prediction drift: {} {} {:.4} (threshold {})",
                    p.column,
                    p.method.name(),
                    p.score,
                    p.threshold
                ));
            }
            let compared = features_drift.columns.len();
            if compared < features.len() {
                run.notes.push(format!(
                    "{} feature(s) left out of drift: missing on every row of the window or the reference",
                    features.len() - compared
                ));
            }
            run.features = Some(features_drift);
            run.predictions = predictions;
        }
        if let Some(labels) = &spec.labels {
            let mut labelled = self.join_labels(labels, &current_batches).await?;
            if labelled.len() < labels.min_labelled {
                run.notes.push(format!(
                    "{} of the window's predictions have labels so far; quality needs {}",
                    labelled.len(),
                    labels.min_labelled
                ));
            } else if let Some(q) = window_quality(&mut labelled, threshold, &labels.detector) {
                for (what, floor, value) in [
                    ("PR-AUC", labels.min_pr_auc, q.pr_auc),
                    ("recall", labels.min_recall, Some(q.recall)),
                    ("precision", labels.min_precision, Some(q.precision)),
                ] {
                    if let (Some(floor), Some(value)) = (floor, value)
                        && value < floor
                    {
                        run.alerts.push(format!(
                            "{what} {value:.3} over {} labelled predictions is below {floor}",
                            q.labelled
                        ));
                    }
                }
                if let Some(first) = q.first_drift_at {
                    run.alerts.push(format!(
                        "concept drift: {} signalled on the error stream at {}",
                        q.detector,
                        micros_to_rfc3339(first)
                    ));
                }
                run.quality = Some(q);
            }
        }
        Ok(run)
    }

    /// Retrains now (a schedule or a person asked), whatever the drift.
    pub async fn retrain(&self, name: &str, trigger: &str) -> Result<RetrainDecision> {
        let monitor = self.get(name)?;
        let policy = monitor.spec.retrain.as_ref().ok_or_else(|| {
            DeployError::BadRequest(format!("monitor '{name}' has no retrain policy"))
        })?;
        Ok(retrain::retrain(&self.inner.deployments, &monitor.spec, policy, trigger).await)
    }

    /// The monitor's scores, oldest first, and its retraining decisions.
    pub async fn history(&self, name: &str) -> Result<History> {
        let batches = read_group(self.store(), &history_group(name), ReadFilter::default()).await?;
        let mut scores = Vec::new();
        for batch in &batches {
            let text = |c: &str| {
                batch
                    .column_by_name(c)
                    .expect("history column")
                    .as_string::<i32>()
                    .clone()
            };
            let (run_id, metric, kind, method) =
                (text("run_id"), text("metric"), text("kind"), text("method"));
            let at = batch
                .column_by_name("run_at")
                .expect("run_at")
                .as_primitive::<TimestampMicrosecondType>();
            let value = batch
                .column_by_name("value")
                .expect("value")
                .as_primitive::<arrow::datatypes::Float64Type>();
            let threshold = batch
                .column_by_name("threshold")
                .expect("threshold")
                .as_primitive::<arrow::datatypes::Float64Type>();
            let alert = batch.column_by_name("alert").expect("alert").as_boolean();
            for row in 0..batch.num_rows() {
                scores.push(Score {
                    run_id: run_id.value(row).to_string(),
                    at: at.value(row),
                    metric: metric.value(row).to_string(),
                    kind: kind.value(row).to_string(),
                    method: method.value(row).to_string(),
                    value: value.is_valid(row).then(|| value.value(row)),
                    threshold: threshold.is_valid(row).then(|| threshold.value(row)),
                    alert: alert.value(row),
                });
            }
        }
        scores.sort_by(|a, b| (a.at, &a.metric).cmp(&(b.at, &b.metric)));
        let decisions = retrain::decisions(self.store(), name).await?;
        Ok(History { scores, decisions })
    }

    async fn read_log(&self, group: &str, start: i64, end: i64) -> Result<Vec<RecordBatch>> {
        let filter = ReadFilter {
            start: Some(start),
            end: Some(end),
            ..Default::default()
        };
        read_group(self.store(), group, filter).await
    }

    /// The train split of the live model's training dataset, as the model saw it, and the
    /// model's predictions on it.
    async fn training_reference(
        &self,
        live: &kairos_deploy::Live,
        features: &[String],
    ) -> Result<Arc<Sample>> {
        let model = &live.model;
        let key = (
            live.deployment.spec.name.clone(),
            model.spec.name.clone(),
            model.version,
        );
        let mut cache = self.inner.references.lock().await;
        if let Some(sample) = cache.get(&key) {
            return Ok(sample.clone());
        }
        let lineage = &model.spec.lineage;
        let (Some(view), Some(view_version), Some(dataset)) = (
            &lineage.feature_view,
            lineage.feature_view_version,
            lineage.training_dataset_version,
        ) else {
            return Err(DeployError::BadRequest(format!(
                "model {} v{} has no training dataset in its lineage; use a reference of kind \"logs\"",
                model.spec.name, model.version
            )));
        };
        let store = self.store();
        let dataset = store.training_dataset(view, Some(view_version), Some(dataset))?;
        let batches = store
            .read_training_dataset(&dataset, SplitName::Train, true)
            .await?;
        let (_, predictor) = self
            .inner
            .deployments
            .model_predictor(&model.spec.name, Some(model.version))
            .await?;
        let threshold = live.deployment.spec.threshold;
        let model_features = lineage.features.clone();
        let features = features.to_vec();
        let sample = tokio::task::spawn_blocking(move || -> Result<Sample> {
            let mut sample = Sample::default();
            for batch in &batches {
                let mut columns = Vec::with_capacity(model_features.len());
                for f in &model_features {
                    let values = kairos_model::train::as_f64(batch, f)
                        .map_err(|e| DeployError::BadRequest(e.to_string()))?;
                    columns.push(values);
                }
                let rows = batch.num_rows();
                let mut row_major = Vec::with_capacity(rows * columns.len());
                for r in 0..rows {
                    row_major.extend(columns.iter().map(|c| c[r].unwrap_or(f64::NAN)));
                }
                let scores = predictor
                    .predict(&row_major, rows)
                    .map_err(|e| DeployError::Internal(e.to_string()))?;
                for (f, column) in model_features.iter().zip(&columns) {
                    if features.contains(f) {
                        sample
                            .features
                            .entry(f.clone())
                            .or_default()
                            .extend(column.iter().map(|v| v.unwrap_or(f64::NAN)));
                    }
                }
                sample
                    .labels
                    .extend(scores.iter().map(|s| label_text(*s >= threshold)));
                sample.predictions.extend(scores);
                sample.rows += rows;
            }
            Ok(sample)
        })
        .await
        .map_err(DeployError::internal)??;
        let sample = Arc::new(sample);
        cache.insert(key, sample.clone());
        Ok(sample)
    }

    /// The window's predictions whose labels are in the label group (its latest row per key).
    async fn join_labels(
        &self,
        labels: &crate::spec::LabelSource,
        window: &[RecordBatch],
    ) -> Result<Vec<Labelled>> {
        let store = self.store();
        let group = store.group(&labels.group, None)?;
        let key = group.spec.primary_key[0].clone();
        let batches = read_group(store, &labels.group, ReadFilter::default()).await?;
        let mut known: HashMap<String, bool> = HashMap::new();
        for batch in &batches {
            let keys = batch.column_by_name(&key).expect("key column");
            let values = kairos_model::train::as_f64(batch, &labels.label)
                .map_err(|e| DeployError::BadRequest(format!("labels.label: {e}")))?;
            for (row, value) in values.iter().enumerate() {
                if let Some(v) = value {
                    let k = array_value_to_string(keys, row).map_err(DeployError::internal)?;
                    known.insert(k, *v >= 0.5);
                }
            }
        }
        let mut joined = Vec::new();
        for batch in window {
            let on = batch.column_by_name(&labels.join_on).ok_or_else(|| {
                DeployError::BadRequest(format!(
                    "the inference log has no column '{}'",
                    labels.join_on
                ))
            })?;
            let at = batch
                .column_by_name(LOGGED_AT)
                .expect("logged_at")
                .as_primitive::<TimestampMicrosecondType>();
            let scores = batch
                .column_by_name(PREDICTION)
                .expect("prediction")
                .as_primitive::<arrow::datatypes::Float64Type>();
            for row in 0..batch.num_rows() {
                if scores.is_null(row) {
                    continue;
                }
                let k = array_value_to_string(on, row).map_err(DeployError::internal)?;
                if let Some(label) = known.get(&k) {
                    joined.push(Labelled {
                        at: at.value(row),
                        score: scores.value(row),
                        label: *label,
                    });
                }
            }
        }
        Ok(joined)
    }

    async fn ensure_history_group(&self, monitor: &str) -> Result<()> {
        let name = history_group(monitor);
        if self.store().group(&name, None).is_ok() {
            return Ok(());
        }
        let column = |name: &str, ty, nullable| Column {
            name: name.into(),
            ty,
            nullable,
            description: None,
        };
        let spec = FeatureGroupSpec {
            name,
            description: format!("Every score of monitor {monitor}, one row per run and metric"),
            columns: vec![
                column("run_id", FeatureType::String, false),
                column("metric", FeatureType::String, false),
                column("run_at", FeatureType::Timestamp, false),
                column("window_start", FeatureType::Timestamp, false),
                column("kind", FeatureType::String, false),
                column("method", FeatureType::String, false),
                column("value", FeatureType::Float64, true),
                column("threshold", FeatureType::Float64, true),
                column("alert", FeatureType::Bool, false),
            ],
            primary_key: vec!["run_id".into(), "metric".into()],
            event_time: "run_at".into(),
            online: false,
            ttl_seconds: None,
            vector_index: None,
            expectations: Vec::new(),
        };
        self.store().create_group(spec).await?;
        Ok(())
    }

    /// One row per score of the run in its history group, as one insert.
    async fn record(&self, run: &MonitorRun, at: i64, window_start: i64) -> Result<()> {
        let rows = scores_of(run);
        if rows.is_empty() {
            return Ok(());
        }
        let mut lines = String::new();
        for s in &rows {
            let line = serde_json::json!({
                "run_id": run.run_id,
                "metric": s.metric,
                // Timestamps as RFC 3339: a JSON number would be read as epoch milliseconds.
                "run_at": precise(at),
                "window_start": precise(window_start),
                "kind": s.kind,
                "method": s.method,
                "value": s.value.filter(|v| v.is_finite()),
                "threshold": s.threshold,
                "alert": s.alert,
            });
            lines.push_str(&line.to_string());
            lines.push('\n');
        }
        self.store()
            .insert(
                &history_group(&run.monitor),
                None,
                Format::JsonLines,
                lines.into(),
                InsertOptions::default(),
            )
            .await?;
        Ok(())
    }

    /// Whether a webhook's host is one this process may call.
    fn webhook_allowed(&self, webhook: &str) -> std::result::Result<(), String> {
        let host = crate::spec::webhook_host(webhook)?;
        match &self.inner.webhook_hosts {
            Some(hosts) if !hosts.contains(&host) => Err(format!(
                "alert.webhook: the host '{host}' is not among the hosts this server calls \
                 (server.webhook_hosts: {})",
                hosts.join(", ")
            )),
            _ => Ok(()),
        }
    }

    async fn alert(&self, spec: &MonitorSpec, run: &MonitorRun) {
        tracing::warn!(
            monitor = %spec.name,
            deployment = %spec.deployment,
            run = %run.run_id,
            reasons = %run.alerts.join("; "),
            "monitor alert"
        );
        let Some(url) = &spec.alert.webhook else {
            return;
        };
        // Checked again: a stored definition may predate the server's list.
        if let Err(why) = self.webhook_allowed(url) {
            telemetry::webhook(&spec.name, false);
            tracing::warn!(monitor = %spec.name, error = %why, "alert webhook not called");
            return;
        }
        let alert = Alert {
            monitor: spec.name.clone(),
            deployment: spec.deployment.clone(),
            run_id: run.run_id.clone(),
            at: run.at.clone(),
            reasons: run.alerts.clone(),
        };
        let sent = self.inner.http.post(url).json(&alert).send().await;
        let delivered = matches!(&sent, Ok(r) if r.status().is_success());
        telemetry::webhook(&spec.name, delivered);
        if !delivered {
            let why = match sent {
                Ok(r) => r.status().to_string(),
                Err(e) => e.to_string(),
            };
            tracing::warn!(monitor = %spec.name, url = %url, error = %why, "alert webhook failed");
        }
    }
}

/// A monitor's history: every score, oldest first, and every retraining decision.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct History {
    pub scores: Vec<Score>,
    pub decisions: Vec<RetrainDecision>,
}

/// One score of one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Score {
    pub run_id: String,
    /// Microseconds since the epoch.
    pub at: i64,
    /// `feature:<name>`, `prediction:<column>`, `dataset:drift_share`, `quality:<metric>`.
    pub metric: String,
    pub kind: String,
    pub method: String,
    pub value: Option<f64>,
    pub threshold: Option<f64>,
    pub alert: bool,
}

pub fn history_group(monitor: &str) -> String {
    format!("{monitor}_monitoring")
}

fn label_text(positive: bool) -> String {
    if positive { "1" } else { "0" }.to_string()
}

/// The scores a run writes to its history.
fn scores_of(run: &MonitorRun) -> Vec<Score> {
    let score = |metric: String, kind: &str, method: &str, value, threshold, alert| Score {
        run_id: run.run_id.clone(),
        at: 0,
        metric,
        kind: kind.into(),
        method: method.into(),
        value,
        threshold,
        alert,
    };
    let mut scores = Vec::new();
    if let Some(f) = &run.features {
        for c in &f.columns {
            scores.push(score(
                format!("feature:{}", c.column),
                "feature",
                c.method.name(),
                Some(c.score),
                Some(c.threshold),
                c.drifted,
            ));
        }
        scores.push(score(
            "dataset:drift_share".into(),
            "dataset",
            "share",
            Some(f.share),
            None,
            f.drifted,
        ));
    }
    for p in &run.predictions {
        scores.push(score(
            format!("prediction:{}", p.column),
            "prediction",
            p.method.name(),
            Some(p.score),
            Some(p.threshold),
            p.drifted,
        ));
    }
    if let Some(q) = &run.quality {
        for (name, value) in [
            ("pr_auc", q.pr_auc),
            ("roc_auc", q.roc_auc),
            ("precision", Some(q.precision)),
            ("recall", Some(q.recall)),
            ("calibration_error", Some(q.calibration_error)),
            ("labelled", Some(q.labelled as f64)),
            ("detector_drifts", Some(q.detector_drifts as f64)),
        ] {
            scores.push(score(
                format!("quality:{name}"),
                "quality",
                name,
                value,
                None,
                false,
            ));
        }
    }
    scores.push(score(
        "run:alerts".into(),
        "run",
        "count",
        Some(run.alerts.len() as f64),
        None,
        !run.alerts.is_empty(),
    ));
    scores
}

/// The window's model features, predictions and predicted labels.
fn sample(batches: &[RecordBatch], features: &[String], threshold: f64) -> Result<Sample> {
    let mut sample = Sample::default();
    for batch in batches {
        for f in features {
            let column = batch.column_by_name(f).ok_or_else(|| {
                DeployError::BadRequest(format!(
                    "the inference log has no column '{f}': the window holds another model's predictions"
                ))
            })?;
            let values =
                arrow::compute::cast(column, &DataType::Float64).map_err(DeployError::internal)?;
            let values = values.as_primitive::<arrow::datatypes::Float64Type>();
            sample
                .features
                .entry(f.clone())
                .or_default()
                .extend((0..values.len()).map(|i| {
                    if values.is_null(i) {
                        f64::NAN
                    } else {
                        values.value(i)
                    }
                }));
        }
        let scores = batch
            .column_by_name(PREDICTION)
            .ok_or_else(|| {
                DeployError::Internal("the inference log has no prediction column".into())
            })?
            .as_primitive::<arrow::datatypes::Float64Type>();
        for i in 0..scores.len() {
            let s = if scores.is_null(i) {
                f64::NAN
            } else {
                scores.value(i)
            };
            sample.predictions.push(s);
            sample.labels.push(label_text(s >= threshold));
        }
        sample.rows += batch.num_rows();
    }
    Ok(sample)
}

/// Drift of the features, and of the predictions (probability and predicted label).
fn compare(
    reference: &Sample,
    current: &Sample,
    features: &[String],
    predictions: bool,
    options: &crate::drift::DriftOptions,
) -> std::result::Result<(DatasetDrift, Vec<ColumnDrift>), crate::drift::DriftError> {
    let columns = features
        .iter()
        .filter_map(|f| {
            let reference = reference.features.get(f)?;
            let current = current.features.get(f)?;
            // A feature missing on every row of either side has no distribution to compare.
            let present = |v: &[f64]| v.iter().any(|x| x.is_finite());
            (present(reference) && present(current)).then(|| {
                (
                    f.clone(),
                    Samples::Numerical {
                        reference: reference.as_slice(),
                        current: current.as_slice(),
                    },
                )
            })
        })
        .collect();
    let features = dataset_drift(columns, options)?;
    let mut drifts = Vec::new();
    if predictions {
        drifts.push(column_drift(
            PREDICTION,
            Samples::Numerical {
                reference: &reference.predictions,
                current: &current.predictions,
            },
            options,
        )?);
        drifts.push(column_drift(
            "predicted_label",
            Samples::Categorical {
                reference: &reference.labels,
                current: &current.labels,
            },
            options,
        )?);
    }
    Ok((features, drifts))
}
