//! The Kairos client: the platform's operations with one API, in this process or against a
//! server.
//!
//! [`Client`] is the seam the CLI calls (and the Python SDK will): [`Embedded`] runs each
//! operation on a store opened in this process, [`Remote`] sends it to a server's REST API.
//! Both answer with the same types and fail with the same [`ClientError`], classified as the
//! server classifies its errors ([`ErrorKind`]), so a caller never needs to ask which it has.
//!
//! Bulk data goes as Arrow: rows read from the offline store come back as record batches
//! from either backend (a server sends them as an Arrow IPC stream).

mod embedded;
mod remote;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use futures::stream::BoxStream;
pub use kairos_deploy::training::TrainRequest;
pub use kairos_deploy::{DeploymentStatus, PredictRequest, PredictResponse};
pub use kairos_model::{Deployment, DeploymentSpec, Model};
pub use kairos_monitor::{History, Monitor, MonitorRun, MonitorSpec, RetrainDecision};
pub use kairos_pipeline::{Deployed, PipelineStatus};
pub use kairos_recommend::{
    InteractionEvent, RecommendRequest, RecommendResponse, RecommenderSpec, RecommenderStatus,
};
use kairos_store::{CheckReport, GroupStatus, InsertAck, OnlineResponse};
pub use kairos_store::{CompactReport, JoinTuning, Spine, VectorAnswer, Vectors, ViewStatus};
pub use kairos_stream::PipelineSpec;
use kairos_types::{FeatureGroup, FeatureGroupSpec, Format};
pub use kairos_view::{
    FeatureView, FeatureViewSpec, Split, SplitName, TrainingDataset, TrainingDatasetRequest,
};

pub use embedded::Embedded;
pub use kairos_auth::{ApiKey, IssuedKey, KeySpec, Scope};
pub use kairos_store::ErrorKind;

pub use remote::{Remote, RemoteOptions};

/// An operation that failed: whose fault it is, and the engine's message (naming the field,
/// the row and what was expected, where the input was at fault). Shown after the HTTP status
/// when a server answered with one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", .status.map(|s| format!("{s}: ")).unwrap_or_default())]
pub struct ClientError {
    pub kind: ErrorKind,
    pub message: String,
    /// The status a server answered with, when one did.
    pub status: Option<reqwest::StatusCode>,
}

impl ClientError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> ClientError {
        ClientError {
            kind,
            message: message.into(),
            status: None,
        }
    }
}

impl From<kairos_store::StoreError> for ClientError {
    fn from(e: kairos_store::StoreError) -> Self {
        ClientError::new(e.kind(), e.to_string())
    }
}

impl From<kairos_auth::AuthError> for ClientError {
    fn from(e: kairos_auth::AuthError) -> Self {
        use kairos_auth::AuthError;
        match e {
            AuthError::Invalid(_) => ClientError::new(ErrorKind::BadInput, e.to_string()),
            AuthError::NotFound(m) => ClientError::new(ErrorKind::NotFound, m),
            AuthError::Catalog(e) => kairos_store::StoreError::from(e).into(),
            AuthError::Corrupt { .. } => ClientError::new(ErrorKind::Internal, e.to_string()),
        }
    }
}

pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// How long an insert waits before it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Wait {
    /// Until the log holds the rows durably: they will reach both stores.
    #[default]
    Logged,
    /// Until the online store shows them too (read-your-writes).
    Online,
    /// Until both stores hold them: online (for an online-enabled group) and offline, so a
    /// read of either, or training data, sees them.
    Stored,
}

impl Wait {
    /// The name the REST API's `wait` parameter and the Python SDK give it.
    pub fn name(self) -> &'static str {
        match self {
            Wait::Logged => "logged",
            Wait::Online => "online",
            Wait::Stored => "stored",
        }
    }
}

/// Rows to insert: a body in one of the batch formats, validated whole and refused whole.
#[derive(Debug, Clone)]
pub struct Rows {
    pub format: Format,
    pub bytes: Bytes,
}

/// Which rows of the offline store a read answers; times in microseconds since the epoch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadFilter {
    /// Event time at or after.
    pub start: Option<i64>,
    /// Event time before.
    pub end: Option<i64>,
    /// The rows as they were known at this time (ingested at or before it).
    pub as_of: Option<i64>,
}

/// Rows read from the offline store: their schema, and the batches as they come.
pub struct Batches {
    pub schema: SchemaRef,
    pub batches: BoxStream<'static, Result<RecordBatch>>,
}

impl std::fmt::Debug for Batches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batches")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

/// A training dataset to build: which root rows (or a spine's), how to split them, how strict
/// the point-in-time join is.
#[derive(Debug, Clone, Default)]
pub struct TrainingData {
    pub request: TrainingDatasetRequest,
    /// The rows to build training data for (root keys and event times), instead of the root
    /// group's rows. A server takes it as CSV, which the client writes from any format.
    pub spine: Option<Spine>,
    /// Memory for the join before it spills to disk: in process only (a server has its own).
    pub tuning: Option<JoinTuning>,
}

/// An online feature-vector request.
#[derive(Debug, Clone, Default)]
pub struct VectorRequest {
    /// Per entity: an object of the root's key columns, an array in key order, or a bare
    /// value for a one-column key.
    pub entries: Vec<serde_json::Value>,
    /// Request-time values (and optionally the event time): one object for every entry, or a
    /// list of one object per entry.
    pub request: Option<serde_json::Value>,
    /// Apply the transforms frozen with this training dataset version.
    pub training_dataset: Option<u32>,
}

/// A model's file to register: an ONNX graph, or a model Kairos trained.
#[derive(Debug, Clone)]
pub struct Artifact {
    /// The artifact's name, unless the definition gives one.
    pub file_name: String,
    pub bytes: Bytes,
}

/// The platform, embedded or remote. A closed enum, as the stores' backends are.
#[derive(Debug)]
pub enum Client {
    Embedded(Embedded),
    Remote(Remote),
}

/// Runs `$call` on whichever backend `$client` is.
macro_rules! on_backend {
    ($client:expr, $backend:ident => $call:expr) => {
        match $client {
            Client::Embedded($backend) => $call,
            Client::Remote($backend) => $call,
        }
    };
}

impl Client {
    /// Creates a feature group, or the next version of one.
    pub async fn create_group(&self, spec: &FeatureGroupSpec) -> Result<FeatureGroup> {
        on_backend!(self, b => b.create_group(spec).await)
    }

    /// Every version of every feature group.
    pub async fn list_groups(&self) -> Result<Vec<FeatureGroup>> {
        on_backend!(self, b => b.list_groups().await)
    }

    /// A feature group's definition and where its log and materialisers stand.
    pub async fn describe_group(&self, name: &str, version: Option<u32>) -> Result<GroupStatus> {
        on_backend!(self, b => b.describe_group(name, version).await)
    }

    /// Inserts rows into a feature group; answers once they are as far as `wait` says.
    pub async fn insert(
        &self,
        name: &str,
        version: Option<u32>,
        rows: Rows,
        wait: Wait,
    ) -> Result<InsertAck> {
        on_backend!(self, b => b.insert(name, version, rows, wait).await)
    }

    /// Inserts rows already in memory (what the Python SDK hands over): validated and refused
    /// whole like any other batch; a server receives them as one Arrow IPC stream.
    pub async fn insert_batch(
        &self,
        name: &str,
        version: Option<u32>,
        batch: &RecordBatch,
        wait: Wait,
    ) -> Result<InsertAck> {
        on_backend!(self, b => b.insert_batch(name, version, batch, wait).await)
    }

    /// The latest row of each key. Per entry an object of key columns, an array in key
    /// order, or a bare value for a single-column key.
    pub async fn get_online(
        &self,
        name: &str,
        version: Option<u32>,
        entries: &[serde_json::Value],
    ) -> Result<OnlineResponse> {
        on_backend!(self, b => b.get_online(name, version, entries).await)
    }

    /// Rows of a feature group's offline store.
    pub async fn read_offline(
        &self,
        name: &str,
        version: Option<u32>,
        filter: ReadFilter,
    ) -> Result<Batches> {
        on_backend!(self, b => b.read_offline(name, version, filter).await)
    }

    /// Whether the online and offline stores agree with each other and with the log.
    pub async fn check_group(&self, name: &str, version: Option<u32>) -> Result<CheckReport> {
        on_backend!(self, b => b.check_group(name, version).await)
    }

    /// Compacts a feature group's offline table.
    pub async fn compact_group(&self, name: &str, version: Option<u32>) -> Result<CompactReport> {
        on_backend!(self, b => b.compact_group(name, version).await)
    }

    /// Deletes one version of a feature group and all its data.
    pub async fn delete_group(&self, name: &str, version: u32) -> Result<()> {
        on_backend!(self, b => b.delete_group(name, version).await)
    }

    /// Creates a feature view, or the next version of one, checked against its groups.
    pub async fn apply_view(&self, spec: &FeatureViewSpec) -> Result<FeatureView> {
        on_backend!(self, b => b.apply_view(spec).await)
    }

    /// Every version of every feature view.
    pub async fn list_views(&self) -> Result<Vec<FeatureView>> {
        on_backend!(self, b => b.list_views().await)
    }

    /// A view's definition, its online vector's columns, labels and training datasets.
    pub async fn describe_view(&self, name: &str, version: Option<u32>) -> Result<ViewStatus> {
        on_backend!(self, b => b.describe_view(name, version).await)
    }

    /// Deletes one version of a feature view and its training datasets.
    pub async fn delete_view(&self, name: &str, version: u32) -> Result<()> {
        on_backend!(self, b => b.delete_view(name, version).await)
    }

    /// Materialises a point-in-time correct training dataset (its splits as Parquet, its
    /// statistics and fitted transforms in the catalog).
    pub async fn create_training_dataset(
        &self,
        view: &str,
        version: Option<u32>,
        data: TrainingData,
    ) -> Result<TrainingDataset> {
        on_backend!(self, b => b.create_training_dataset(view, version, data).await)
    }

    /// A training dataset's metadata (the latest when `dataset` is `None`).
    pub async fn training_dataset(
        &self,
        view: &str,
        version: Option<u32>,
        dataset: Option<u32>,
    ) -> Result<TrainingDataset> {
        on_backend!(self, b => b.training_dataset(view, version, dataset).await)
    }

    /// One split of a training dataset, with its frozen transforms applied when `transformed`.
    pub async fn read_training_dataset(
        &self,
        view: &str,
        version: Option<u32>,
        dataset: u32,
        split: SplitName,
        transformed: bool,
    ) -> Result<Batches> {
        on_backend!(self, b => b.read_training_dataset(view, version, dataset, split, transformed).await)
    }

    /// Online feature vectors: one multi-get per group, on-demand features computed.
    pub async fn get_vectors(
        &self,
        view: &str,
        version: Option<u32>,
        request: &VectorRequest,
    ) -> Result<Vectors> {
        on_backend!(self, b => b.get_vectors(view, version, request).await)
    }

    /// Every version of every registered model.
    pub async fn list_models(&self) -> Result<Vec<Model>> {
        on_backend!(self, b => b.list_models().await)
    }

    /// One model version, the latest unless `version` says.
    pub async fn describe_model(&self, name: &str, version: Option<u32>) -> Result<Model> {
        on_backend!(self, b => b.describe_model(name, version).await)
    }

    /// Registers a model trained elsewhere: its definition (JSON or TOML: name, framework,
    /// signature, metrics, lineage) and its artifact, which must load, become its next version.
    pub async fn register_model(&self, definition: &str, artifact: Artifact) -> Result<Model> {
        on_backend!(self, b => b.register_model(definition, artifact).await)
    }

    /// Deletes one model version and its artifact.
    pub async fn delete_model(&self, name: &str, version: u32) -> Result<()> {
        on_backend!(self, b => b.delete_model(name, version).await)
    }

    /// Trains a model on a feature view's training dataset and registers it with its metrics.
    pub async fn train(&self, request: &TrainRequest) -> Result<Model> {
        on_backend!(self, b => b.train(request).await)
    }

    /// Applies a deployment: its model version is loaded, checked against its feature view
    /// and swapped in.
    pub async fn apply_deployment(&self, spec: &DeploymentSpec) -> Result<Deployment> {
        on_backend!(self, b => b.apply_deployment(spec).await)
    }

    /// Every live deployment's status.
    pub async fn list_deployments(&self) -> Result<Vec<DeploymentStatus>> {
        on_backend!(self, b => b.list_deployments().await)
    }

    /// A deployment's revision, model, feature view and latency.
    pub async fn deployment_status(&self, name: &str) -> Result<DeploymentStatus> {
        on_backend!(self, b => b.deployment_status(name).await)
    }

    /// Deletes a deployment (its inference log stays).
    pub async fn delete_deployment(&self, name: &str) -> Result<()> {
        on_backend!(self, b => b.delete_deployment(name).await)
    }

    /// Predicts for entities: their vectors built online, then the deployment's model.
    pub async fn predict(&self, name: &str, request: &PredictRequest) -> Result<PredictResponse> {
        on_backend!(self, b => b.predict(name, request).await)
    }

    /// Deploys a streaming pipeline (or its next version) and starts it.
    pub async fn deploy_pipeline(&self, spec: &PipelineSpec) -> Result<Deployed> {
        on_backend!(self, b => b.deploy_pipeline(spec).await)
    }

    /// Every pipeline and where it stands.
    pub async fn list_pipelines(&self) -> Result<Vec<PipelineStatus>> {
        on_backend!(self, b => b.list_pipelines().await)
    }

    /// A pipeline's state, watermark, lag and counts.
    pub async fn pipeline_status(&self, name: &str) -> Result<PipelineStatus> {
        on_backend!(self, b => b.pipeline_status(name).await)
    }

    /// Starts a stopped pipeline, and keeps it running across restarts.
    pub async fn start_pipeline(&self, name: &str) -> Result<PipelineStatus> {
        on_backend!(self, b => b.start_pipeline(name).await)
    }

    /// Stops a pipeline, and keeps it stopped across restarts.
    pub async fn stop_pipeline(&self, name: &str) -> Result<PipelineStatus> {
        on_backend!(self, b => b.stop_pipeline(name).await)
    }

    /// Pushes events (JSON lines) into an HTTP stream; answers their position in its log.
    pub async fn push_events(&self, stream: &str, events: Bytes) -> Result<u64> {
        on_backend!(self, b => b.push_events(stream, events).await)
    }

    /// Applies a monitor of a deployment (drift, quality, retraining).
    pub async fn apply_monitor(&self, spec: &MonitorSpec) -> Result<Monitor> {
        on_backend!(self, b => b.apply_monitor(spec).await)
    }

    /// Every monitor.
    pub async fn list_monitors(&self) -> Result<Vec<Monitor>> {
        on_backend!(self, b => b.list_monitors().await)
    }

    /// One monitor.
    pub async fn get_monitor(&self, name: &str) -> Result<Monitor> {
        on_backend!(self, b => b.get_monitor(name).await)
    }

    /// Deletes a monitor (its history stays).
    pub async fn delete_monitor(&self, name: &str) -> Result<()> {
        on_backend!(self, b => b.delete_monitor(name).await)
    }

    /// Runs a monitor now: its drift and quality checks over the inference log.
    pub async fn run_monitor(&self, name: &str) -> Result<MonitorRun> {
        on_backend!(self, b => b.run_monitor(name).await)
    }

    /// Retrains a monitor's model now, promoting the challenger only if it wins.
    pub async fn retrain(&self, name: &str) -> Result<RetrainDecision> {
        on_backend!(self, b => b.retrain(name).await)
    }

    /// A monitor's runs, alerts and retrainings.
    pub async fn monitor_history(&self, name: &str) -> Result<History> {
        on_backend!(self, b => b.monitor_history(name).await)
    }

    /// A deployment's monitoring report, as HTML.
    pub async fn monitoring_report(
        &self,
        deployment: &str,
        monitor: Option<&str>,
    ) -> Result<String> {
        on_backend!(self, b => b.monitoring_report(deployment, monitor).await)
    }

    /// Applies a recommender whose models exist.
    pub async fn apply_recommender(&self, spec: &RecommenderSpec) -> Result<RecommenderStatus> {
        on_backend!(self, b => b.apply_recommender(spec).await)
    }

    /// Every live recommender.
    pub async fn list_recommenders(&self) -> Result<Vec<RecommenderStatus>> {
        on_backend!(self, b => b.list_recommenders().await)
    }

    /// A recommender's definition, models and history position.
    pub async fn recommender_status(&self, name: &str) -> Result<RecommenderStatus> {
        on_backend!(self, b => b.recommender_status(name).await)
    }

    /// The top items for a user: retrieval, filter rules, ranking, diversity.
    pub async fn recommend(
        &self,
        name: &str,
        request: &RecommendRequest,
    ) -> Result<RecommendResponse> {
        on_backend!(self, b => b.recommend(name, request).await)
    }

    /// Interactions appended to a recommender's interactions group.
    pub async fn interact(&self, name: &str, events: Vec<InteractionEvent>) -> Result<InsertAck> {
        on_backend!(self, b => b.interact(name, events).await)
    }

    /// Issues an API key; its token is in the answer and nowhere else.
    pub async fn create_key(&self, spec: &KeySpec) -> Result<IssuedKey> {
        on_backend!(self, b => b.create_key(spec).await)
    }

    /// Every API key, revoked ones too (never their secrets).
    pub async fn list_keys(&self) -> Result<Vec<ApiKey>> {
        on_backend!(self, b => b.list_keys().await)
    }

    /// Revokes an API key for good.
    pub async fn revoke_key(&self, id: &str) -> Result<ApiKey> {
        on_backend!(self, b => b.revoke_key(id).await)
    }

    /// Ends the client. An embedded one first waits until both stores hold every row it
    /// inserted, so the data dir is left whole for the next process; a remote one has nothing
    /// to wait for (the server goes on).
    pub async fn close(&self) -> Result<()> {
        match self {
            Client::Embedded(embedded) => embedded.close().await,
            Client::Remote(_) => Ok(()),
        }
    }
}
