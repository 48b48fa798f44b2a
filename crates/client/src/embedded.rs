//! The platform in this process: each operation runs on a [`FeatureStore`] the client opened.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use futures::StreamExt;
use kairos_auth::Keys;
use kairos_deploy::{Deployments, training};
use kairos_model::{Artifacts, ModelSpec};
use kairos_monitor::Monitors;
use kairos_pipeline::Pipelines;
use kairos_recommend::Recommenders;
use kairos_store::{
    CheckReport, CompactReport, FeatureStore, GroupStatus, InsertAck, InsertOptions, OfflineFilter,
    OnlineResponse, StoreConfig, StoreError,
};
use kairos_types::{FeatureGroup, FeatureGroupSpec};
use tokio::sync::OnceCell;

use crate::{
    ApiKey, Artifact, Batches, ClientError, Deployment, DeploymentSpec, DeploymentStatus,
    ErrorKind, FeatureView, FeatureViewSpec, History, InteractionEvent, IssuedKey, KeySpec, Model,
    Monitor, MonitorRun, MonitorSpec, PredictRequest, PredictResponse, ReadFilter,
    RecommendRequest, RecommendResponse, RecommenderSpec, RecommenderStatus, Result,
    RetrainDecision, Rows, SplitName, TrainRequest, TrainingData, TrainingDataset, VectorRequest,
    Vectors, ViewStatus, Wait,
};
use crate::{Deployed, PipelineSpec, PipelineStatus};

/// A store opened in this process.
#[derive(Debug)]
pub struct Embedded {
    store: FeatureStore,
    /// The group versions this client inserted into: [`Embedded::close`] waits for their
    /// materialisers.
    written: Mutex<BTreeSet<(String, u32)>>,
    /// The store's deployments, loaded when first used (applying one, or predicting).
    deployments: OnceCell<Arc<Deployments>>,
    monitors: OnceCell<Monitors>,
    recommenders: OnceCell<Recommenders>,
    pipelines: OnceCell<Pipelines>,
}

fn model_not_found(name: &str, version: Option<u32>) -> ClientError {
    let message = match version {
        Some(v) => format!("model '{name}' v{v} not found"),
        None => format!("model '{name}' not found"),
    };
    ClientError::new(ErrorKind::NotFound, message)
}

impl From<kairos_deploy::DeployError> for ClientError {
    fn from(e: kairos_deploy::DeployError) -> Self {
        ClientError::new(e.kind(), e.to_string())
    }
}

impl Embedded {
    /// Opens the store `config` describes (the data dir, or a cluster's engines).
    pub async fn open(config: StoreConfig) -> Result<Embedded> {
        Ok(Embedded::on(FeatureStore::open(config).await?))
    }

    /// A client of a store already open in this process.
    pub fn on(store: FeatureStore) -> Embedded {
        Embedded {
            store,
            written: Mutex::new(BTreeSet::new()),
            deployments: OnceCell::new(),
            monitors: OnceCell::new(),
            recommenders: OnceCell::new(),
            pipelines: OnceCell::new(),
        }
    }

    pub fn store(&self) -> &FeatureStore {
        &self.store
    }

    pub(crate) async fn create_group(&self, spec: &FeatureGroupSpec) -> Result<FeatureGroup> {
        Ok(self.store.create_group(spec.clone()).await?)
    }

    pub(crate) async fn list_groups(&self) -> Result<Vec<FeatureGroup>> {
        Ok(self.store.list_groups()?)
    }

    pub(crate) async fn describe_group(
        &self,
        name: &str,
        version: Option<u32>,
    ) -> Result<GroupStatus> {
        Ok(self.store.describe(name, version).await?)
    }

    pub(crate) async fn insert(
        &self,
        name: &str,
        version: Option<u32>,
        rows: Rows,
        wait: Wait,
    ) -> Result<InsertAck> {
        let (version, options) = self.pinned(name, version, wait)?;
        let ack = self
            .store
            .insert(name, Some(version), rows.format, rows.bytes, options)
            .await?;
        self.settle(name, version, ack, wait).await
    }

    pub(crate) async fn insert_batch(
        &self,
        name: &str,
        version: Option<u32>,
        batch: &RecordBatch,
        wait: Wait,
    ) -> Result<InsertAck> {
        let (version, options) = self.pinned(name, version, wait)?;
        let ack = self
            .store
            .insert_batch(name, Some(version), batch, options)
            .await?;
        self.settle(name, version, ack, wait).await
    }

    /// The group version an insert writes (so its wait is for the same one), and the store's
    /// options for `wait`.
    fn pinned(&self, name: &str, version: Option<u32>, wait: Wait) -> Result<(u32, InsertOptions)> {
        let version = self.store.group(name, version)?.version;
        let options = InsertOptions {
            wait_online: wait == Wait::Online,
        };
        Ok((version, options))
    }

    /// Notes the group as written, and waits for both stores when `wait` asks.
    async fn settle(
        &self,
        name: &str,
        version: u32,
        mut ack: InsertAck,
        wait: Wait,
    ) -> Result<InsertAck> {
        self.written
            .lock()
            .expect("lock")
            .insert((name.to_owned(), version));
        if wait == Wait::Stored {
            self.store.wait_stored(name, Some(version), &ack).await?;
            ack.online_visible = self.store.group(name, Some(version))?.spec.online;
        }
        Ok(ack)
    }

    pub(crate) async fn get_online(
        &self,
        name: &str,
        version: Option<u32>,
        entries: &[serde_json::Value],
    ) -> Result<OnlineResponse> {
        let answer = self.store.get_online_json(name, version, entries).await?;
        Ok(answer.into())
    }

    pub(crate) async fn read_offline(
        &self,
        name: &str,
        version: Option<u32>,
        filter: ReadFilter,
    ) -> Result<Batches> {
        let filter = OfflineFilter {
            start: filter.start,
            end: filter.end,
            as_of: filter.as_of,
            before: None,
        };
        let stream = self.store.read_offline(name, version, filter).await?;
        let schema = stream.schema();
        let batches = futures::stream::unfold(stream, |mut stream| async move {
            let batch = stream.next().await?;
            Some((
                batch.map_err(|e| ClientError::from(StoreError::from(e))),
                stream,
            ))
        });
        Ok(Batches {
            schema,
            batches: batches.boxed(),
        })
    }

    pub(crate) async fn check_group(
        &self,
        name: &str,
        version: Option<u32>,
    ) -> Result<CheckReport> {
        Ok(self.store.check(name, version).await?)
    }

    pub(crate) async fn compact_group(
        &self,
        name: &str,
        version: Option<u32>,
    ) -> Result<CompactReport> {
        Ok(self.store.compact(name, version).await?)
    }

    pub(crate) async fn delete_group(&self, name: &str, version: u32) -> Result<()> {
        self.store.delete_group(name, version).await?;
        self.written
            .lock()
            .expect("lock")
            .remove(&(name.to_owned(), version));
        Ok(())
    }

    pub(crate) async fn apply_view(&self, spec: &FeatureViewSpec) -> Result<FeatureView> {
        Ok(self.store.apply_view(spec.clone()).await?)
    }

    pub(crate) async fn list_views(&self) -> Result<Vec<FeatureView>> {
        Ok(self.store.list_views()?)
    }

    pub(crate) async fn describe_view(
        &self,
        name: &str,
        version: Option<u32>,
    ) -> Result<ViewStatus> {
        Ok(self.store.describe_view(name, version)?)
    }

    pub(crate) async fn delete_view(&self, name: &str, version: u32) -> Result<()> {
        Ok(self.store.delete_view(name, version).await?)
    }

    pub(crate) async fn create_training_dataset(
        &self,
        view: &str,
        version: Option<u32>,
        data: TrainingData,
    ) -> Result<TrainingDataset> {
        let TrainingData {
            request,
            spine,
            tuning,
        } = data;
        Ok(self
            .store
            .create_training_dataset(view, version, request, spine, tuning)
            .await?)
    }

    pub(crate) async fn training_dataset(
        &self,
        view: &str,
        version: Option<u32>,
        dataset: Option<u32>,
    ) -> Result<TrainingDataset> {
        Ok(self.store.training_dataset(view, version, dataset)?)
    }

    pub(crate) async fn read_training_dataset(
        &self,
        view: &str,
        version: Option<u32>,
        dataset: u32,
        split: SplitName,
        transformed: bool,
    ) -> Result<Batches> {
        let dataset = self.store.training_dataset(view, version, Some(dataset))?;
        let batches = self
            .store
            .read_training_dataset(&dataset, split, transformed)
            .await?;
        let schema = match batches.first() {
            Some(first) => first.schema(),
            None => std::sync::Arc::new(dataset.schema()),
        };
        Ok(Batches {
            schema,
            batches: futures::stream::iter(batches.into_iter().map(Ok)).boxed(),
        })
    }

    pub(crate) async fn get_vectors(
        &self,
        view: &str,
        version: Option<u32>,
        request: &VectorRequest,
    ) -> Result<Vectors> {
        let values = kairos_store::request_objects(request.request.clone())?;
        Ok(self
            .store
            .online_vectors(
                view,
                version,
                &request.entries,
                &values,
                request.training_dataset,
            )
            .await?)
    }

    fn artifacts(&self) -> Artifacts {
        Artifacts::new(self.store.storage())
    }

    pub(crate) async fn list_models(&self) -> Result<Vec<Model>> {
        Ok(self
            .store
            .catalog()
            .list_models()
            .map_err(StoreError::from)?)
    }

    pub(crate) async fn describe_model(&self, name: &str, version: Option<u32>) -> Result<Model> {
        self.store
            .catalog()
            .get_model(name, version)
            .map_err(StoreError::from)?
            .ok_or_else(|| model_not_found(name, version))
    }

    pub(crate) async fn register_model(
        &self,
        definition: &str,
        artifact: Artifact,
    ) -> Result<Model> {
        let mut spec = ModelSpec::parse(definition)
            .map_err(|e| ClientError::new(ErrorKind::BadInput, e.to_string()))?;
        if spec.artifact.is_empty() {
            spec.artifact = artifact.file_name;
        }
        let catalog = self.store.catalog();
        let bytes = artifact.bytes.to_vec();
        Ok(training::register(catalog, &self.artifacts(), &spec, bytes).await?)
    }

    pub(crate) async fn delete_model(&self, name: &str, version: u32) -> Result<()> {
        let deleted = self
            .store
            .catalog()
            .delete_model(name, version)
            .map_err(StoreError::from)?;
        if !deleted {
            return Err(model_not_found(name, Some(version)));
        }
        self.artifacts()
            .delete(name, version)
            .await
            .map_err(|e| ClientError::new(ErrorKind::Internal, e.to_string()))
    }

    pub(crate) async fn train(&self, request: &TrainRequest) -> Result<Model> {
        Ok(training::train(&self.store, request).await?)
    }

    /// The deployments of this store, loaded on first use.
    async fn deployments(&self) -> Result<&Arc<Deployments>> {
        self.deployments
            .get_or_try_init(|| async {
                let deployments = Arc::new(Deployments::new(self.store.clone())?);
                deployments.start_all().await;
                Ok(deployments)
            })
            .await
    }

    pub(crate) async fn apply_deployment(&self, spec: &DeploymentSpec) -> Result<Deployment> {
        Ok(self.deployments().await?.apply(spec.clone()).await?)
    }

    pub(crate) async fn list_deployments(&self) -> Result<Vec<DeploymentStatus>> {
        let deployments = self.deployments().await?;
        let statuses = deployments
            .list()
            .iter()
            .map(|live| deployments.status(&live.deployment.spec.name))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(statuses)
    }

    pub(crate) async fn deployment_status(&self, name: &str) -> Result<DeploymentStatus> {
        Ok(self.deployments().await?.status(name)?)
    }

    pub(crate) async fn delete_deployment(&self, name: &str) -> Result<()> {
        Ok(self.deployments().await?.delete(name).await?)
    }

    pub(crate) async fn predict(
        &self,
        name: &str,
        request: &PredictRequest,
    ) -> Result<PredictResponse> {
        let deployments = self.deployments().await?;
        Ok(deployments.predict(name, request.clone()).await?)
    }

    /// The store's pipelines, started on first use: they run in this process while the
    /// client lives.
    async fn pipelines(&self) -> Result<&Pipelines> {
        self.pipelines
            .get_or_try_init(|| async {
                let pipelines = Pipelines::new(self.store.clone());
                pipelines.start_all().await;
                Ok(pipelines)
            })
            .await
    }

    pub(crate) async fn deploy_pipeline(&self, spec: &PipelineSpec) -> Result<Deployed> {
        let (pipeline, status) = self.pipelines().await?.deploy(spec.clone()).await?;
        Ok(Deployed { pipeline, status })
    }

    pub(crate) async fn list_pipelines(&self) -> Result<Vec<PipelineStatus>> {
        Ok(self.pipelines().await?.list().await?)
    }

    pub(crate) async fn pipeline_status(&self, name: &str) -> Result<PipelineStatus> {
        Ok(self.pipelines().await?.status(name).await?)
    }

    pub(crate) async fn start_pipeline(&self, name: &str) -> Result<PipelineStatus> {
        Ok(self.pipelines().await?.resume(name).await?)
    }

    pub(crate) async fn stop_pipeline(&self, name: &str) -> Result<PipelineStatus> {
        Ok(self.pipelines().await?.pause(name).await?)
    }

    pub(crate) async fn push_events(&self, stream: &str, events: Bytes) -> Result<u64> {
        Ok(self.pipelines().await?.push(stream, events).await?)
    }

    /// The monitors of this store's deployments. A client runs them when asked, not on their
    /// schedules: that is a server's job.
    async fn monitors(&self) -> Result<&Monitors> {
        self.monitors
            .get_or_try_init(|| async { Ok(Monitors::new(self.deployments().await?.clone())) })
            .await
    }

    pub(crate) async fn apply_monitor(&self, spec: &MonitorSpec) -> Result<Monitor> {
        Ok(self.monitors().await?.apply(spec.clone()).await?)
    }

    pub(crate) async fn list_monitors(&self) -> Result<Vec<Monitor>> {
        Ok(self.monitors().await?.list()?)
    }

    pub(crate) async fn get_monitor(&self, name: &str) -> Result<Monitor> {
        Ok(self.monitors().await?.get(name)?)
    }

    pub(crate) async fn delete_monitor(&self, name: &str) -> Result<()> {
        Ok(self.monitors().await?.delete(name)?)
    }

    pub(crate) async fn run_monitor(&self, name: &str) -> Result<MonitorRun> {
        Ok(self.monitors().await?.run(name, None).await?)
    }

    pub(crate) async fn retrain(&self, name: &str) -> Result<RetrainDecision> {
        Ok(self.monitors().await?.retrain(name, "requested").await?)
    }

    pub(crate) async fn monitor_history(&self, name: &str) -> Result<History> {
        Ok(self.monitors().await?.history(name).await?)
    }

    pub(crate) async fn monitoring_report(
        &self,
        deployment: &str,
        monitor: Option<&str>,
    ) -> Result<String> {
        Ok(self.monitors().await?.report(deployment, monitor).await?)
    }

    /// The store's recommenders, loaded on first use.
    async fn recommenders(&self) -> Result<&Recommenders> {
        self.recommenders
            .get_or_try_init(|| async {
                let recommenders = Recommenders::new(self.store.clone());
                recommenders.start_all().await;
                Ok(recommenders)
            })
            .await
    }

    pub(crate) async fn apply_recommender(
        &self,
        spec: &RecommenderSpec,
    ) -> Result<RecommenderStatus> {
        Ok(self.recommenders().await?.apply(spec.clone()).await?)
    }

    pub(crate) async fn list_recommenders(&self) -> Result<Vec<RecommenderStatus>> {
        Ok(self.recommenders().await?.list())
    }

    pub(crate) async fn recommender_status(&self, name: &str) -> Result<RecommenderStatus> {
        Ok(self.recommenders().await?.status(name)?)
    }

    pub(crate) async fn recommend(
        &self,
        name: &str,
        request: &RecommendRequest,
    ) -> Result<RecommendResponse> {
        Ok(self.recommenders().await?.recommend(name, request).await?)
    }

    pub(crate) async fn interact(
        &self,
        name: &str,
        events: Vec<InteractionEvent>,
    ) -> Result<InsertAck> {
        Ok(self.recommenders().await?.interact(name, events).await?)
    }

    /// The catalog's keys, read afresh: a server on the same catalog changes them too.
    fn keys(&self) -> Result<Keys> {
        Ok(Keys::load(self.store.catalog())?)
    }

    pub(crate) async fn create_key(&self, spec: &KeySpec) -> Result<IssuedKey> {
        Ok(self.keys()?.create(self.store.catalog(), spec.clone())?)
    }

    pub(crate) async fn list_keys(&self) -> Result<Vec<ApiKey>> {
        Ok(self.keys()?.list())
    }

    pub(crate) async fn revoke_key(&self, id: &str) -> Result<ApiKey> {
        Ok(self.keys()?.revoke(self.store.catalog(), id)?)
    }

    /// Waits until both stores hold every row this client inserted, then closes the store.
    pub(crate) async fn close(&self) -> Result<()> {
        let written = std::mem::take(&mut *self.written.lock().expect("lock"));
        let mut settled = Ok(());
        for (name, version) in written {
            if let Err(e) = self.store.wait_materialised(&name, Some(version)).await {
                settled = Err(e.into());
                break;
            }
        }
        if let Some(pipelines) = self.pipelines.get() {
            pipelines.close().await;
        }
        if let Some(recommenders) = self.recommenders.get() {
            recommenders.close().await;
        }
        if let Some(deployments) = self.deployments.get() {
            deployments.close().await;
        }
        self.store.close().await;
        settled
    }
}
