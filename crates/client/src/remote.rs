//! The platform behind a server: each operation is a request to its REST API, over pooled
//! keep-alive connections.

use std::time::Duration;

use arrow::ipc::reader::StreamReader;
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use futures::StreamExt;
use kairos_store::{CheckReport, CompactReport, GroupStatus, InsertAck, OnlineResponse};
use kairos_types::export::encode_ipc;
use kairos_types::value::format_timestamp;
use kairos_types::{FeatureGroup, FeatureGroupSpec, Format};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;

use crate::{
    ApiKey, Artifact, Batches, ClientError, Deployment, DeploymentSpec, DeploymentStatus,
    ErrorKind, FeatureView, FeatureViewSpec, History, InteractionEvent, IssuedKey, KeySpec, Model,
    Monitor, MonitorRun, MonitorSpec, PredictRequest, PredictResponse, ReadFilter,
    RecommendRequest, RecommendResponse, RecommenderSpec, RecommenderStatus, Result,
    RetrainDecision, Rows, Spine, SplitName, TrainRequest, TrainingData, TrainingDataset,
    VectorRequest, Vectors, ViewStatus, Wait,
};
use crate::{Deployed, PipelineSpec, PipelineStatus};

/// How long an idle connection to the server is kept for reuse: less than the server's own
/// header timeout (10 s by default), so a request never races a closing connection.
const IDLE: Duration = Duration::from_secs(5);

/// How a client reaches its server.
#[derive(Debug, Clone, Default)]
pub struct RemoteOptions {
    /// Sent with every request as `Authorization: Bearer <key>`.
    pub api_key: Option<String>,
    /// A CA certificate (PEM) trusted beside the system's, for a server with a certificate of
    /// its own.
    pub ca_cert_pem: Option<Vec<u8>>,
}

/// A server's REST API.
#[derive(Debug, Clone)]
pub struct Remote {
    base: String,
    http: reqwest::Client,
}

impl Remote {
    /// A client of the server at `url` (`http://host:7070`).
    pub fn connect(url: &str, options: &RemoteOptions) -> Result<Remote> {
        let bad = |why: String| ClientError::new(ErrorKind::BadInput, why);
        let mut builder = reqwest::Client::builder().pool_idle_timeout(IDLE);
        if let Some(key) = &options.api_key {
            let mut value = HeaderValue::from_str(&format!("Bearer {key}"))
                .map_err(|_| bad("the API key holds characters a header cannot carry".into()))?;
            value.set_sensitive(true);
            builder = builder.default_headers(HeaderMap::from_iter([(AUTHORIZATION, value)]));
        }
        if let Some(pem) = &options.ca_cert_pem {
            let cert = reqwest::Certificate::from_pem(pem)
                .map_err(|e| bad(format!("the CA certificate is not PEM: {e}")))?;
            builder = builder.add_root_certificate(cert);
        }
        let http = builder
            .build()
            .map_err(|e| ClientError::new(ErrorKind::Internal, e.to_string()))?;
        Ok(Remote {
            base: url.trim_end_matches('/').to_string(),
            http,
        })
    }

    /// The server's address, as given.
    pub fn url(&self) -> &str {
        &self.base
    }

    /// A request to `path` (from `/v1/…` on), for what the typed methods do not cover yet.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, format!("{}{path}", self.base))
    }

    /// Sends `request`; an error answer becomes a [`ClientError`] with the server's message,
    /// classified by its status, and a server out of reach an `Unavailable` one naming it.
    pub async fn send(&self, request: RequestBuilder) -> Result<reqwest::Response> {
        let response = request.send().await.map_err(|e| {
            ClientError::new(
                ErrorKind::Unavailable,
                format!("cannot reach kairos at {}: {e}", self.base),
            )
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        let message = body["error"]["message"]
            .as_str()
            .map_or_else(|| format!("{status} from {}", self.base), str::to_owned);
        Err(ClientError {
            status: Some(status),
            ..ClientError::new(kind_of(status), message)
        })
    }

    /// Sends `request` and reads its answer as JSON.
    pub async fn json<T: DeserializeOwned>(&self, request: RequestBuilder) -> Result<T> {
        let response = self.send(request).await?;
        response.json().await.map_err(|e| {
            ClientError::new(
                ErrorKind::Internal,
                format!(
                    "kairos at {} answered what this client cannot read: {e}",
                    self.base
                ),
            )
        })
    }

    /// Sends `request` and reads its whole answer.
    pub async fn bytes(&self, request: RequestBuilder) -> Result<Bytes> {
        let response = self.send(request).await?;
        response.bytes().await.map_err(|e| {
            ClientError::new(
                ErrorKind::Unavailable,
                format!("kairos at {} broke off its answer: {e}", self.base),
            )
        })
    }

    fn group_path(name: &str, tail: &str) -> String {
        format!("/v1/feature-groups/{name}{tail}")
    }

    pub(crate) async fn create_group(&self, spec: &FeatureGroupSpec) -> Result<FeatureGroup> {
        self.json(self.request(Method::POST, "/v1/feature-groups").json(spec))
            .await
    }

    pub(crate) async fn list_groups(&self) -> Result<Vec<FeatureGroup>> {
        self.json(self.request(Method::GET, "/v1/feature-groups"))
            .await
    }

    pub(crate) async fn describe_group(
        &self,
        name: &str,
        version: Option<u32>,
    ) -> Result<GroupStatus> {
        let request = self.request(Method::GET, &Self::group_path(name, ""));
        self.json(request.query(&version_query(version))).await
    }

    pub(crate) async fn insert(
        &self,
        name: &str,
        version: Option<u32>,
        rows: Rows,
        wait: Wait,
    ) -> Result<InsertAck> {
        let mut query = version_query(version);
        if wait != Wait::Logged {
            query.push(("wait", wait.name().into()));
        }
        let request = self
            .request(Method::POST, &Self::group_path(name, "/rows"))
            .query(&query)
            .header(CONTENT_TYPE, rows.format.content_type())
            .body(rows.bytes);
        self.json(request).await
    }

    pub(crate) async fn insert_batch(
        &self,
        name: &str,
        version: Option<u32>,
        batch: &RecordBatch,
        wait: Wait,
    ) -> Result<InsertAck> {
        let bytes = encode_ipc(batch).map_err(|e| {
            ClientError::new(
                ErrorKind::BadInput,
                format!("the rows cannot be sent as Arrow IPC: {e}"),
            )
        })?;
        let rows = Rows {
            format: Format::ArrowIpc,
            bytes,
        };
        self.insert(name, version, rows, wait).await
    }

    pub(crate) async fn get_online(
        &self,
        name: &str,
        version: Option<u32>,
        entries: &[serde_json::Value],
    ) -> Result<OnlineResponse> {
        let request = self
            .request(Method::POST, &Self::group_path(name, "/online"))
            .query(&version_query(version))
            .json(&serde_json::json!({ "entries": entries }));
        self.json(request).await
    }

    pub(crate) async fn read_offline(
        &self,
        name: &str,
        version: Option<u32>,
        filter: ReadFilter,
    ) -> Result<Batches> {
        let mut query = version_query(version);
        query.push(("format", Format::ArrowIpc.to_string()));
        let times = [
            ("start", filter.start),
            ("end", filter.end),
            ("as_of", filter.as_of),
        ];
        for (key, micros) in times {
            if let Some(micros) = micros {
                query.push((key, format_timestamp(micros)));
            }
        }
        let request = self
            .request(Method::GET, &Self::group_path(name, "/offline"))
            .query(&query);
        self.arrow(request).await
    }

    /// Sends `request` and reads its answer as an Arrow IPC stream.
    async fn arrow(&self, request: RequestBuilder) -> Result<Batches> {
        let body = self.bytes(request).await?;
        let unreadable = |e: arrow::error::ArrowError| {
            ClientError::new(
                ErrorKind::Internal,
                format!(
                    "kairos at {} sent rows that are not an Arrow stream: {e}",
                    self.base
                ),
            )
        };
        let reader = StreamReader::try_new(std::io::Cursor::new(body), None).map_err(unreadable)?;
        let schema = reader.schema();
        let batches: Vec<_> = reader.map(|b| b.map_err(unreadable)).collect();
        Ok(Batches {
            schema,
            batches: futures::stream::iter(batches).boxed(),
        })
    }

    fn view_path(name: &str, tail: &str) -> String {
        format!("/v1/feature-views/{name}{tail}")
    }

    pub(crate) async fn apply_view(&self, spec: &FeatureViewSpec) -> Result<FeatureView> {
        self.json(self.request(Method::POST, "/v1/feature-views").json(spec))
            .await
    }

    pub(crate) async fn list_views(&self) -> Result<Vec<FeatureView>> {
        self.json(self.request(Method::GET, "/v1/feature-views"))
            .await
    }

    pub(crate) async fn describe_view(
        &self,
        name: &str,
        version: Option<u32>,
    ) -> Result<ViewStatus> {
        let request = self.request(Method::GET, &Self::view_path(name, ""));
        self.json(request.query(&version_query(version))).await
    }

    pub(crate) async fn delete_view(&self, name: &str, version: u32) -> Result<()> {
        let request = self.request(Method::DELETE, &Self::view_path(name, ""));
        self.send(request.query(&[("version", version)])).await?;
        Ok(())
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
        if tuning.is_some() {
            return Err(ClientError::new(
                ErrorKind::BadInput,
                "the join's memory budget applies in process only; a server uses its own",
            ));
        }
        let time = |micros: Option<i64>| micros.map(format_timestamp);
        let mut body = serde_json::json!({
            "start": time(request.start),
            "end": time(request.end),
            "split": request.split,
            "strict": request.strict,
            "as_known_at": request.as_known_at,
            "description": request.description,
        });
        if let Some(spine) = spine {
            body["spine"] = inline_spine(spine)?;
        }
        let request = self
            .request(Method::POST, &Self::view_path(view, "/training-datasets"))
            .query(&version_query(version))
            .json(&body);
        self.json(request).await
    }

    pub(crate) async fn training_dataset(
        &self,
        view: &str,
        version: Option<u32>,
        dataset: Option<u32>,
    ) -> Result<TrainingDataset> {
        let dataset = match dataset {
            Some(dataset) => dataset,
            None => {
                let status = self.describe_view(view, version).await?;
                let latest = status.training_datasets.iter().map(|td| td.version).max();
                latest.ok_or_else(|| {
                    ClientError::new(
                        ErrorKind::NotFound,
                        format!("feature view '{view}' has no training dataset"),
                    )
                })?
            }
        };
        let path = Self::view_path(view, &format!("/training-datasets/{dataset}"));
        let request = self.request(Method::GET, &path);
        self.json(request.query(&version_query(version))).await
    }

    pub(crate) async fn read_training_dataset(
        &self,
        view: &str,
        version: Option<u32>,
        dataset: u32,
        split: SplitName,
        transformed: bool,
    ) -> Result<Batches> {
        let mut query = version_query(version);
        query.push(("split", split.as_str().to_string()));
        query.push(("transformed", transformed.to_string()));
        query.push(("format", Format::ArrowIpc.to_string()));
        let path = Self::view_path(view, &format!("/training-datasets/{dataset}/data"));
        self.arrow(self.request(Method::GET, &path).query(&query))
            .await
    }

    pub(crate) async fn get_vectors(
        &self,
        view: &str,
        version: Option<u32>,
        request: &VectorRequest,
    ) -> Result<Vectors> {
        let body = serde_json::json!({
            "entries": request.entries,
            "request": request.request,
            "training_dataset_version": request.training_dataset,
        });
        let mut query = version_query(version);
        query.push(("format", "arrow".to_string()));
        let request = self
            .request(Method::POST, &Self::view_path(view, "/vectors"))
            .query(&query)
            .json(&body);
        Ok(Vectors::from_ipc(self.bytes(request).await?)?)
    }

    pub(crate) async fn check_group(
        &self,
        name: &str,
        version: Option<u32>,
    ) -> Result<CheckReport> {
        let request = self.request(Method::GET, &Self::group_path(name, "/check"));
        self.json(request.query(&version_query(version))).await
    }

    pub(crate) async fn compact_group(
        &self,
        name: &str,
        version: Option<u32>,
    ) -> Result<CompactReport> {
        let request = self.request(Method::POST, &Self::group_path(name, "/compact"));
        self.json(request.query(&version_query(version))).await
    }

    pub(crate) async fn delete_group(&self, name: &str, version: u32) -> Result<()> {
        let request = self.request(Method::DELETE, &Self::group_path(name, ""));
        self.send(request.query(&[("version", version)])).await?;
        Ok(())
    }
}

impl Remote {
    pub(crate) async fn list_models(&self) -> Result<Vec<Model>> {
        self.json(self.request(Method::GET, "/v1/models")).await
    }

    pub(crate) async fn describe_model(&self, name: &str, version: Option<u32>) -> Result<Model> {
        let request = self.request(Method::GET, &format!("/v1/models/{name}"));
        self.json(request.query(&version_query(version))).await
    }

    pub(crate) async fn register_model(
        &self,
        definition: &str,
        artifact: Artifact,
    ) -> Result<Model> {
        use reqwest::multipart::{Form, Part};
        let form = Form::new()
            .part("definition", Part::text(definition.to_owned()))
            .part(
                "artifact",
                Part::stream(artifact.bytes).file_name(artifact.file_name),
            );
        self.json(self.request(Method::POST, "/v1/models").multipart(form))
            .await
    }

    pub(crate) async fn delete_model(&self, name: &str, version: u32) -> Result<()> {
        let path = format!("/v1/models/{name}/versions/{version}");
        self.send(self.request(Method::DELETE, &path)).await?;
        Ok(())
    }

    pub(crate) async fn train(&self, request: &TrainRequest) -> Result<Model> {
        self.json(self.request(Method::POST, "/v1/train").json(request))
            .await
    }

    pub(crate) async fn apply_deployment(&self, spec: &DeploymentSpec) -> Result<Deployment> {
        self.json(self.request(Method::POST, "/v1/deployments").json(spec))
            .await
    }

    pub(crate) async fn list_deployments(&self) -> Result<Vec<DeploymentStatus>> {
        self.json(self.request(Method::GET, "/v1/deployments"))
            .await
    }

    pub(crate) async fn deployment_status(&self, name: &str) -> Result<DeploymentStatus> {
        self.json(self.request(Method::GET, &format!("/v1/deployments/{name}")))
            .await
    }

    pub(crate) async fn delete_deployment(&self, name: &str) -> Result<()> {
        let path = format!("/v1/deployments/{name}");
        self.send(self.request(Method::DELETE, &path)).await?;
        Ok(())
    }

    pub(crate) async fn predict(
        &self,
        name: &str,
        request: &PredictRequest,
    ) -> Result<PredictResponse> {
        let path = format!("/v1/deployments/{name}/predict");
        self.json(self.request(Method::POST, &path).json(request))
            .await
    }

    pub(crate) async fn deploy_pipeline(&self, spec: &PipelineSpec) -> Result<Deployed> {
        self.json(self.request(Method::POST, "/v1/pipelines").json(spec))
            .await
    }

    pub(crate) async fn list_pipelines(&self) -> Result<Vec<PipelineStatus>> {
        self.json(self.request(Method::GET, "/v1/pipelines")).await
    }

    pub(crate) async fn pipeline_status(&self, name: &str) -> Result<PipelineStatus> {
        self.json(self.request(Method::GET, &format!("/v1/pipelines/{name}")))
            .await
    }

    pub(crate) async fn start_pipeline(&self, name: &str) -> Result<PipelineStatus> {
        let path = format!("/v1/pipelines/{name}/start");
        self.json(self.request(Method::POST, &path)).await
    }

    pub(crate) async fn stop_pipeline(&self, name: &str) -> Result<PipelineStatus> {
        let path = format!("/v1/pipelines/{name}/stop");
        self.json(self.request(Method::POST, &path)).await
    }

    pub(crate) async fn push_events(&self, stream: &str, events: Bytes) -> Result<u64> {
        #[derive(serde::Deserialize)]
        struct PushAck {
            position: u64,
        }
        let request = self
            .request(Method::POST, &format!("/v1/streams/{stream}/events"))
            .header(CONTENT_TYPE, "application/x-ndjson")
            .body(events);
        let ack: PushAck = self.json(request).await?;
        Ok(ack.position)
    }

    pub(crate) async fn apply_monitor(&self, spec: &MonitorSpec) -> Result<Monitor> {
        self.json(self.request(Method::POST, "/v1/monitors").json(spec))
            .await
    }

    pub(crate) async fn list_monitors(&self) -> Result<Vec<Monitor>> {
        self.json(self.request(Method::GET, "/v1/monitors")).await
    }

    pub(crate) async fn get_monitor(&self, name: &str) -> Result<Monitor> {
        self.json(self.request(Method::GET, &format!("/v1/monitors/{name}")))
            .await
    }

    pub(crate) async fn delete_monitor(&self, name: &str) -> Result<()> {
        let path = format!("/v1/monitors/{name}");
        self.send(self.request(Method::DELETE, &path)).await?;
        Ok(())
    }

    pub(crate) async fn run_monitor(&self, name: &str) -> Result<MonitorRun> {
        self.json(self.request(Method::POST, &format!("/v1/monitors/{name}/run")))
            .await
    }

    pub(crate) async fn retrain(&self, name: &str) -> Result<RetrainDecision> {
        let path = format!("/v1/monitors/{name}/retrain");
        self.json(self.request(Method::POST, &path)).await
    }

    pub(crate) async fn monitor_history(&self, name: &str) -> Result<History> {
        let path = format!("/v1/monitors/{name}/history");
        self.json(self.request(Method::GET, &path)).await
    }

    pub(crate) async fn monitoring_report(
        &self,
        deployment: &str,
        monitor: Option<&str>,
    ) -> Result<String> {
        let path = format!("/v1/deployments/{deployment}/monitoring/report");
        let query: Vec<(&str, &str)> = monitor.map(|m| ("monitor", m)).into_iter().collect();
        let body = self
            .bytes(self.request(Method::GET, &path).query(&query))
            .await?;
        String::from_utf8(body.to_vec()).map_err(|e| {
            ClientError::new(
                ErrorKind::Internal,
                format!(
                    "kairos at {} sent a report that is not UTF-8: {e}",
                    self.base
                ),
            )
        })
    }

    pub(crate) async fn apply_recommender(
        &self,
        spec: &RecommenderSpec,
    ) -> Result<RecommenderStatus> {
        self.json(self.request(Method::POST, "/v1/recommenders").json(spec))
            .await
    }

    pub(crate) async fn list_recommenders(&self) -> Result<Vec<RecommenderStatus>> {
        self.json(self.request(Method::GET, "/v1/recommenders"))
            .await
    }

    pub(crate) async fn recommender_status(&self, name: &str) -> Result<RecommenderStatus> {
        self.json(self.request(Method::GET, &format!("/v1/recommenders/{name}")))
            .await
    }

    pub(crate) async fn recommend(
        &self,
        name: &str,
        request: &RecommendRequest,
    ) -> Result<RecommendResponse> {
        let path = format!("/v1/recommenders/{name}/recommend");
        self.json(self.request(Method::POST, &path).json(request))
            .await
    }

    pub(crate) async fn interact(
        &self,
        name: &str,
        events: Vec<InteractionEvent>,
    ) -> Result<InsertAck> {
        let path = format!("/v1/recommenders/{name}/interactions");
        self.json(self.request(Method::POST, &path).json(&events))
            .await
    }

    pub(crate) async fn create_key(&self, spec: &KeySpec) -> Result<IssuedKey> {
        self.json(self.request(Method::POST, "/v1/auth/keys").json(spec))
            .await
    }

    pub(crate) async fn list_keys(&self) -> Result<Vec<ApiKey>> {
        self.json(self.request(Method::GET, "/v1/auth/keys")).await
    }

    pub(crate) async fn revoke_key(&self, id: &str) -> Result<ApiKey> {
        let path = format!("/v1/auth/keys/{id}");
        self.json(self.request(Method::DELETE, &path)).await
    }
}

/// A spine as the REST API takes it inline: CSV or JSON lines as they are, any other format
/// (Arrow IPC, Parquet) rewritten as CSV.
fn inline_spine(spine: Spine) -> Result<serde_json::Value> {
    let text = |bytes: Bytes| {
        String::from_utf8(bytes.to_vec())
            .map_err(|_| ClientError::new(ErrorKind::BadInput, "the spine's text is not UTF-8"))
    };
    let (format, data) = match spine.format {
        Format::Csv => ("csv", text(spine.bytes)?),
        Format::JsonLines => ("jsonl", text(spine.bytes)?),
        Format::ArrowIpc => {
            let bad = |e: arrow::error::ArrowError| {
                ClientError::new(
                    ErrorKind::BadInput,
                    format!("the spine's Arrow stream: {e}"),
                )
            };
            let reader =
                StreamReader::try_new(std::io::Cursor::new(spine.bytes), None).map_err(bad)?;
            let mut csv = Vec::new();
            let mut writer = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut csv);
            for batch in reader {
                writer.write(&batch.map_err(bad)?).map_err(bad)?;
            }
            drop(writer);
            ("csv", text(csv.into())?)
        }
        Format::Parquet => {
            return Err(ClientError::new(
                ErrorKind::BadInput,
                "a spine sent to a server must be CSV, JSON lines or Arrow, not Parquet",
            ));
        }
    };
    Ok(serde_json::json!({ "format": format, "data": data }))
}

fn version_query(version: Option<u32>) -> Vec<(&'static str, String)> {
    version
        .map(|v| ("version", v.to_string()))
        .into_iter()
        .collect()
}

/// Whose fault an error answer is, as the server's status says (the inverse of the server's
/// one mapping of [`ErrorKind`] to statuses).
fn kind_of(status: StatusCode) -> ErrorKind {
    match status {
        StatusCode::NOT_FOUND => ErrorKind::NotFound,
        StatusCode::CONFLICT => ErrorKind::Conflict,
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => ErrorKind::Unauthorised,
        StatusCode::SERVICE_UNAVAILABLE
        | StatusCode::GATEWAY_TIMEOUT
        | StatusCode::TOO_MANY_REQUESTS => ErrorKind::Unavailable,
        s if s.is_client_error() => ErrorKind::BadInput,
        _ => ErrorKind::Internal,
    }
}
