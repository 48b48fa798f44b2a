//! Routes and handlers. Each handler parses the request, calls one [`FeatureStore`] method and
//! shapes the answer; no logic of the store lives here.

use std::collections::HashMap;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use kairos_store::{
    CheckReport, FeatureStore, GroupStatus, InsertAck, InsertOptions, KeyStatus, NearestQuery,
    OfflineFilter, OnlineAnswer, SearchPath,
};
use kairos_types::export::BatchEncoder;
use kairos_types::ingest::parse_timestamp;
use kairos_types::value::format_timestamp;
use kairos_types::{FeatureGroup, FeatureGroupSpec, Format, Value};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::error::{ApiError, ApiQuery, ErrorBody};
use crate::{deployments, models, monitors, pipelines, recommenders, telemetry, views};
use kairos_deploy::Deployments;
use kairos_monitor::Monitors;
use kairos_pipeline::{PipelineStatus, Pipelines};
use kairos_recommend::Recommenders;
use kairos_store::{VectorAnswer, ViewStatus};
use kairos_stream::PipelineSpec;
use kairos_stream::spec::PipelineDef;
use kairos_view::{FeatureView, FeatureViewSpec, TrainingDataset};
use std::sync::Arc;

type ApiResult<T> = Result<T, ApiError>;

/// The OpenAPI document of the REST API, generated from the handlers below.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Kairos",
        description = "Kairos REST API: feature groups, feature views, pipelines, models, deployments and monitors"
    ),
    paths(
        create_group,
        list_groups,
        describe_group,
        delete_group,
        insert_rows,
        nearest,
        get_online_one,
        get_online_many,
        read_offline,
        check_group,
        compact_group,
        healthz,
        views::apply_view,
        views::list_views,
        views::describe_view,
        views::delete_view,
        views::create_training_dataset,
        views::get_training_dataset,
        views::read_training_dataset,
        views::get_vectors,
        pipelines::deploy,
        pipelines::list,
        pipelines::status,
        pipelines::start,
        pipelines::stop,
        pipelines::push,
        models::list_models,
        models::register_model,
        models::describe_model,
        models::delete_model,
        models::train,
        deployments::apply,
        deployments::list,
        deployments::status,
        deployments::delete,
        deployments::predict,
        monitors::apply,
        monitors::list,
        monitors::get,
        monitors::delete,
        monitors::run,
        monitors::retrain,
        monitors::history,
        monitors::report,
        recommenders::apply,
        recommenders::list,
        recommenders::status,
        recommenders::recommend,
        recommenders::interact
    ),
    components(schemas(
        FeatureGroupSpec,
        kairos_types::VectorIndexSpec,
        NearestQuery,
        NearestResponse,
        NearestNeighbour,
        FeatureGroup,
        GroupStatus,
        InsertAck,
        KeyStatus,
        OnlineResponse,
        OnlineResult,
        OnlineRequest,
        CheckReport,
        ErrorBody,
        CompactResponse,
        FeatureViewSpec,
        FeatureView,
        ViewStatus,
        TrainingDataset,
        VectorAnswer,
        views::TrainingDataBody,
        views::SpineBody,
        views::VectorRequest,
        PipelineSpec,
        PipelineDef,
        PipelineStatus,
        pipelines::Deployed,
        pipelines::PushAck,
        kairos_deploy::training::TrainRequest,
        kairos_deploy::training::AlgorithmName,
        kairos_deploy::training::TaskName,
        kairos_model::Deployment,
        kairos_model::DeploymentSpec,
        kairos_model::Slo,
        kairos_deploy::DeploymentStatus,
        kairos_deploy::telemetry::LatencyReport,
        kairos_deploy::PredictRequest,
        kairos_deploy::PredictResponse,
        kairos_deploy::EntryPrediction,
        kairos_monitor::MonitorSpec,
        kairos_monitor::Monitor,
        kairos_monitor::MonitorRun,
        kairos_monitor::History,
        kairos_monitor::Score,
        kairos_monitor::RetrainDecision,
        kairos_monitor::Outcome,
        kairos_monitor::quality::WindowQuality,
        kairos_monitor::spec::Reference,
        kairos_monitor::spec::LabelSource,
        kairos_monitor::spec::AlertSpec,
        kairos_monitor::spec::RetrainPolicy,
        kairos_monitor::spec::RetrainMetric,
        kairos_recommend::RecommenderSpec,
        kairos_recommend::spec::UsersSpec,
        kairos_recommend::spec::ItemsSpec,
        kairos_recommend::spec::InteractionsSpec,
        kairos_recommend::spec::ModelsSpec,
        kairos_recommend::spec::FilterRule,
        kairos_recommend::spec::Diversity,
        kairos_recommend::RecommenderStatus,
        kairos_recommend::RecommendRequest,
        kairos_recommend::RecommendResponse,
        kairos_recommend::Stages,
        kairos_recommend::Recommended
    ))
)]
pub struct ApiDoc;

/// The whole HTTP application.
pub fn router(
    pipelines: Arc<Pipelines>,
    deployments: Arc<Deployments>,
    monitors: Monitors,
    recommenders: Recommenders,
) -> Router {
    let store = pipelines.store().clone();
    let max_body = store.config().max_batch_bytes;
    let _ = telemetry::prometheus();
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .route("/v1/feature-groups", post(create_group).get(list_groups))
        .route(
            "/v1/feature-groups/{name}",
            get(describe_group).delete(delete_group),
        )
        .route("/v1/feature-groups/{name}/rows", post(insert_rows))
        .route(
            "/v1/feature-groups/{name}/online",
            get(get_online_one).post(get_online_many),
        )
        .route("/v1/feature-groups/{name}/nearest", post(nearest))
        .route("/v1/feature-groups/{name}/offline", get(read_offline))
        .route("/v1/feature-groups/{name}/check", get(check_group))
        .route("/v1/feature-groups/{name}/compact", post(compact_group))
        .route(
            "/v1/feature-views",
            post(views::apply_view).get(views::list_views),
        )
        .route(
            "/v1/feature-views/{name}",
            get(views::describe_view).delete(views::delete_view),
        )
        .route(
            "/v1/feature-views/{name}/training-datasets",
            post(views::create_training_dataset),
        )
        .route(
            "/v1/feature-views/{name}/training-datasets/{td}",
            get(views::get_training_dataset),
        )
        .route(
            "/v1/feature-views/{name}/training-datasets/{td}/data",
            get(views::read_training_dataset),
        )
        .route("/v1/feature-views/{name}/vectors", post(views::get_vectors))
        .route("/v1/train", post(models::train))
        .route(
            "/v1/models",
            get(models::list_models).post(models::register_model),
        )
        .route("/v1/models/{name}", get(models::describe_model))
        .route(
            "/v1/models/{name}/versions/{version}",
            axum::routing::delete(models::delete_model),
        )
        .with_state(store)
        .merge(
            Router::new()
                .route(
                    "/v1/pipelines",
                    post(pipelines::deploy).get(pipelines::list),
                )
                .route("/v1/pipelines/{name}", get(pipelines::status))
                .route("/v1/pipelines/{name}/start", post(pipelines::start))
                .route("/v1/pipelines/{name}/stop", post(pipelines::stop))
                .route("/v1/streams/{stream}/events", post(pipelines::push))
                .with_state(pipelines),
        )
        .merge(
            Router::new()
                .route(
                    "/v1/deployments",
                    post(deployments::apply).get(deployments::list),
                )
                .route(
                    "/v1/deployments/{name}",
                    get(deployments::status).delete(deployments::delete),
                )
                .route("/v1/deployments/{name}/predict", post(deployments::predict))
                .with_state(deployments.clone()),
        )
        .merge(
            Router::new()
                .route("/v1/monitors", post(monitors::apply).get(monitors::list))
                .route(
                    "/v1/monitors/{name}",
                    get(monitors::get).delete(monitors::delete),
                )
                .route("/v1/monitors/{name}/run", post(monitors::run))
                .route("/v1/monitors/{name}/retrain", post(monitors::retrain))
                .route("/v1/monitors/{name}/history", get(monitors::history))
                .route(
                    "/v1/deployments/{name}/monitoring/report",
                    get(monitors::report),
                )
                .with_state(monitors),
        )
        .merge(
            Router::new()
                .route(
                    "/v1/recommenders",
                    post(recommenders::apply).get(recommenders::list),
                )
                .route("/v1/recommenders/{name}", get(recommenders::status))
                .route(
                    "/v1/recommenders/{name}/recommend",
                    post(recommenders::recommend),
                )
                .route(
                    "/v1/recommenders/{name}/interactions",
                    post(recommenders::interact),
                )
                .with_state(recommenders),
        )
        .merge(crate::v2::routes(deployments.clone()))
        .merge(crate::grpc::routes(deployments, max_body))
        .fallback(not_found)
        .layer(axum::middleware::from_fn(telemetry::track_latency))
        .layer(DefaultBodyLimit::max(max_body))
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such route; see /openapi.json",
    )
}

/// Liveness.
#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "alive")))]
async fn healthz() -> &'static str {
    "ok"
}

async fn metrics() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        telemetry::prometheus().render(),
    )
}

async fn openapi() -> impl IntoResponse {
    Json(ApiDoc::openapi())
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct VersionQuery {
    /// The feature-group version; the latest when absent.
    version: Option<u32>,
}

pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(body: &Bytes) -> ApiResult<T> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

/// Create a feature group, or the next version of an existing name.
#[utoipa::path(post, path = "/v1/feature-groups", request_body = FeatureGroupSpec,
    responses((status = 201, body = FeatureGroup), (status = 400, body = ErrorBody)))]
async fn create_group(
    State(store): State<FeatureStore>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<FeatureGroup>)> {
    let spec: FeatureGroupSpec = parse_json(&body)?;
    Ok((StatusCode::CREATED, Json(store.create_group(spec).await?)))
}

/// List every version of every feature group.
#[utoipa::path(get, path = "/v1/feature-groups", responses((status = 200, body = [FeatureGroup])))]
async fn list_groups(State(store): State<FeatureStore>) -> ApiResult<Json<Vec<FeatureGroup>>> {
    Ok(Json(store.list_groups()?))
}

/// Describe a feature group with its log and materialiser positions.
#[utoipa::path(get, path = "/v1/feature-groups/{name}", params(("name" = String, Path), VersionQuery),
    responses((status = 200, body = GroupStatus), (status = 404, body = ErrorBody)))]
async fn describe_group(
    State(store): State<FeatureStore>,
    Path(name): Path<String>,
    ApiQuery(q): ApiQuery<VersionQuery>,
) -> ApiResult<Json<GroupStatus>> {
    Ok(Json(store.describe(&name, q.version)?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct DeleteQuery {
    /// The version to delete; required, so a delete is never a guess.
    version: Option<u32>,
}

/// Delete one version of a feature group, with its data.
#[utoipa::path(delete, path = "/v1/feature-groups/{name}", params(("name" = String, Path), DeleteQuery),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn delete_group(
    State(store): State<FeatureStore>,
    Path(name): Path<String>,
    ApiQuery(q): ApiQuery<DeleteQuery>,
) -> ApiResult<StatusCode> {
    let version = q.version.ok_or_else(|| {
        ApiError::bad_request("the query parameter 'version' is required to delete")
    })?;
    store.delete_group(&name, version).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct InsertQuery {
    version: Option<u32>,
    /// `online`: answer only once the online store shows the rows (read-your-writes).
    wait: Option<String>,
    /// The body's format when the Content-Type does not say: arrow, parquet, csv or jsonl.
    format: Option<String>,
    /// Makes the insert idempotent: the rows are tagged with this producer tag and not
    /// appended again if the log already holds a record so tagged after offset `after`
    /// (what pipeline workers send their window rows with).
    producer: Option<String>,
    /// With `producer`: the log offset to look for the tag from (default 0).
    after: Option<u64>,
}

/// Insert a batch of rows. The body's Content-Type picks the format: `text/csv`,
/// `application/x-ndjson`, `application/vnd.apache.parquet`, `application/vnd.apache.arrow.stream`.
/// The batch is validated whole and refused whole. With `producer`, a batch sent again is
/// acknowledged without being appended twice.
#[utoipa::path(post, path = "/v1/feature-groups/{name}/rows", params(("name" = String, Path), InsertQuery),
    request_body(content = String, description = "rows in CSV, JSON lines, Parquet or Arrow IPC"),
    responses((status = 200, body = InsertAck), (status = 400, body = ErrorBody), (status = 413, body = ErrorBody),
              (status = 415, body = ErrorBody)))]
async fn insert_rows(
    State(store): State<FeatureStore>,
    Path(name): Path<String>,
    ApiQuery(q): ApiQuery<InsertQuery>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<InsertAck>> {
    let wait_online = match q.wait.as_deref() {
        None => false,
        Some("online") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "wait: expected 'online', got '{other}'"
            )));
        }
    };
    let limit = store.config().max_batch_bytes;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the body is over the limit of {limit} bytes; split the batch"),
        )
    };
    // Refuse a declared oversize before reading it, so a client that sent `Expect: 100-continue`
    // never uploads it.
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| too_large())?;
    // The body is read before its format is judged, so the connection stays usable after a 415.
    let format = match &q.format {
        Some(f) => Format::from_name(f)
            .ok_or_else(|| ApiError::bad_request(format!("unknown format '{f}'")))?,
        None => {
            let content_type = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            Format::from_content_type(content_type).ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    format!(
                        "Content-Type '{content_type}' is not a batch format; use text/csv, application/x-ndjson, \
                         application/vnd.apache.parquet or application/vnd.apache.arrow.stream"
                    ),
                )
            })?
        }
    };
    let Some(producer) = &q.producer else {
        let ack = store
            .insert(
                &name,
                q.version,
                format,
                bytes,
                InsertOptions { wait_online },
            )
            .await?;
        return Ok(Json(ack));
    };
    let group = store.describe(&name, q.version)?.group;
    let batch = kairos_types::ingest::decode(&group.spec, format, bytes)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let mut ack = store
        .append_once(
            &name,
            Some(group.version),
            &batch,
            producer,
            q.after.unwrap_or(0),
        )
        .await?;
    if wait_online {
        store
            .wait_visible(&name, Some(group.version), ack.end_offset)
            .await?;
        ack.online_visible = true;
    }
    Ok(Json(ack))
}

/// One key's answer in an online read.
#[derive(Debug, Serialize, ToSchema)]
pub struct OnlineResult {
    pub status: KeyStatus,
    /// RFC 3339 event time of the row.
    pub event_time: Option<String>,
    /// Feature values in the order of `columns`.
    #[schema(value_type = Option<Vec<Object>>)]
    pub values: Option<Vec<serde_json::Value>>,
}

/// An online read's answer: the column names once, then one result per requested key, in order.
#[derive(Debug, Serialize, ToSchema)]
pub struct OnlineResponse {
    pub columns: Vec<String>,
    pub results: Vec<OnlineResult>,
}

fn online_response(answer: OnlineAnswer) -> OnlineResponse {
    let OnlineAnswer { columns, lookups } = answer;
    let results = lookups
        .into_iter()
        .map(|l| OnlineResult {
            status: l.status,
            event_time: l.event_time.map(format_timestamp),
            values: l.values.map(|vs| vs.iter().map(Value::to_json).collect()),
        })
        .collect();
    OnlineResponse { columns, results }
}

/// Read the latest row of one key, given as query parameters named after the key columns
/// (e.g. `?cc_num=4000123412341234`).
#[utoipa::path(get, path = "/v1/feature-groups/{name}/online", params(("name" = String, Path), VersionQuery),
    responses((status = 200, body = OnlineResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_online_one(
    State(store): State<FeatureStore>,
    Path(name): Path<String>,
    ApiQuery(mut q): ApiQuery<HashMap<String, String>>,
) -> ApiResult<Json<OnlineResponse>> {
    let version = match q.remove("version") {
        Some(v) => Some(v.parse::<u32>().map_err(|_| {
            ApiError::bad_request(format!("version: expected an integer, got '{v}'"))
        })?),
        None => None,
    };
    let entry = serde_json::Value::Object(
        q.into_iter()
            .map(|(k, v)| (k, serde_json::Value::String(v)))
            .collect(),
    );
    let answer = store.get_online_json(&name, version, &[entry]).await?;
    Ok(Json(online_response(answer)))
}

/// The nearest keys, nearest first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct NearestResponse {
    pub neighbours: Vec<NearestNeighbour>,
    /// `graph` (the HNSW walk) or `exact` (a scan of the keys passing the filter).
    pub path: String,
    /// Keys that passed the filter, when there was one.
    pub allowed: Option<usize>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct NearestNeighbour {
    pub key: i64,
    /// Smaller is nearer: 1 − cosine, −dot, or the squared L2 distance.
    pub distance: f32,
}

/// Nearest neighbours in the group's vector index: of a vector, or of a key's own vector
/// ("similar items", the key left out); optionally only keys whose attributes pass a filter
/// (`in_stock = true AND region = 'SE'`).
#[utoipa::path(post, path = "/v1/feature-groups/{name}/nearest", params(("name" = String, Path), VersionQuery),
    request_body = NearestQuery,
    responses((status = 200, body = NearestResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn nearest(
    State(store): State<FeatureStore>,
    Path(name): Path<String>,
    ApiQuery(q): ApiQuery<VersionQuery>,
    body: Bytes,
) -> ApiResult<Json<NearestResponse>> {
    let query: NearestQuery = parse_json(&body)?;
    let outcome = store.nearest(&name, q.version, &query)?;
    Ok(Json(NearestResponse {
        neighbours: outcome
            .neighbours
            .iter()
            .map(|n| NearestNeighbour {
                key: n.key as i64,
                distance: n.distance,
            })
            .collect(),
        path: match outcome.path {
            SearchPath::Graph => "graph".into(),
            SearchPath::Exact => "exact".into(),
        },
        allowed: outcome.allowed,
    }))
}

/// A batch online read.
#[derive(Debug, Deserialize, ToSchema)]
pub struct OnlineRequest {
    /// Per key: an object of key columns (`{"cc_num": 1}`), an array in key order, or a bare
    /// value for single-column keys.
    #[schema(value_type = Vec<Object>)]
    pub entries: Vec<serde_json::Value>,
}

/// Read the latest rows of many keys in one multi-get.
#[utoipa::path(post, path = "/v1/feature-groups/{name}/online", params(("name" = String, Path), VersionQuery),
    request_body = OnlineRequest,
    responses((status = 200, body = OnlineResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_online_many(
    State(store): State<FeatureStore>,
    Path(name): Path<String>,
    ApiQuery(q): ApiQuery<VersionQuery>,
    body: Bytes,
) -> ApiResult<Json<OnlineResponse>> {
    let request: OnlineRequest = parse_json(&body)?;
    let answer = store
        .get_online_json(&name, q.version, &request.entries)
        .await?;
    Ok(Json(online_response(answer)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct OfflineQuery {
    version: Option<u32>,
    /// Event time at or after this (RFC 3339 or epoch seconds/milliseconds).
    start: Option<String>,
    /// Event time before this.
    end: Option<String>,
    /// Only rows ingested at or before this: the group as it was known then.
    as_of: Option<String>,
    /// jsonl (default), csv, arrow or parquet.
    format: Option<String>,
}

pub(crate) fn time_param(name: &str, value: &Option<String>) -> ApiResult<Option<i64>> {
    value
        .as_deref()
        .map(|v| {
            parse_timestamp(v).map_err(|e| ApiError::bad_request(format!("{name}: {e}, got '{v}'")))
        })
        .transpose()
}

/// Read offline rows (streamed), in log order, with `_ingested_at` and `_offset`.
#[utoipa::path(get, path = "/v1/feature-groups/{name}/offline", params(("name" = String, Path), OfflineQuery),
    responses((status = 200, description = "rows in the asked format"), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
async fn read_offline(
    State(store): State<FeatureStore>,
    Path(name): Path<String>,
    ApiQuery(q): ApiQuery<OfflineQuery>,
) -> ApiResult<Response> {
    let format = match &q.format {
        Some(f) => Format::from_name(f)
            .ok_or_else(|| ApiError::bad_request(format!("unknown format '{f}'")))?,
        None => Format::JsonLines,
    };
    let filter = OfflineFilter {
        start: time_param("start", &q.start)?,
        end: time_param("end", &q.end)?,
        as_of: time_param("as_of", &q.as_of)?,
        before_offset: None,
    };
    let mut stream = store.read_offline(&name, q.version, filter).await?;
    let mut encoder = BatchEncoder::new(format, &stream.schema())
        .map_err(|e| ApiError::from(kairos_store::StoreError::internal(e)))?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::spawn(async move {
        let io = |e: String| std::io::Error::other(e);
        while let Some(batch) = stream.next().await {
            let chunk = batch
                .map_err(|e| io(e.to_string()))
                .and_then(|b| encoder.encode(&b).map_err(|e| io(e.to_string())));
            let failed = chunk.is_err();
            if tx.send(chunk).await.is_err() || failed {
                return;
            }
        }
        let _ = tx
            .send(encoder.finish().map_err(|e| io(e.to_string())))
            .await;
    });
    let body = Body::from_stream(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|c| (c, rx))
    }));
    Ok(([(header::CONTENT_TYPE, format.content_type())], body).into_response())
}

/// Compare the online store to the latest row per key of the offline store.
#[utoipa::path(get, path = "/v1/feature-groups/{name}/check", params(("name" = String, Path), VersionQuery),
    responses((status = 200, body = CheckReport), (status = 404, body = ErrorBody)))]
async fn check_group(
    State(store): State<FeatureStore>,
    Path(name): Path<String>,
    ApiQuery(q): ApiQuery<VersionQuery>,
) -> ApiResult<Json<CheckReport>> {
    Ok(Json(store.check(&name, q.version).await?))
}

/// What a compaction did.
#[derive(Debug, Serialize, ToSchema)]
pub struct CompactResponse {
    pub files_removed: u64,
    pub files_added: u64,
}

/// Compact the offline table's small files.
#[utoipa::path(post, path = "/v1/feature-groups/{name}/compact", params(("name" = String, Path), VersionQuery),
    responses((status = 200, body = CompactResponse), (status = 404, body = ErrorBody)))]
async fn compact_group(
    State(store): State<FeatureStore>,
    Path(name): Path<String>,
    ApiQuery(q): ApiQuery<VersionQuery>,
) -> ApiResult<Json<CompactResponse>> {
    let report = store.compact(&name, q.version).await?;
    Ok(Json(CompactResponse {
        files_removed: report.files_removed,
        files_added: report.files_added,
    }))
}
