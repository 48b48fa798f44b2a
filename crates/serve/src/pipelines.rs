//! Pipeline routes: apply and run definitions, status, stop, and the HTTP push endpoint of
//! streams. Thin adapters over [`Pipelines`].

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use kairos_pipeline::{Deployed, PipelineStatus, Pipelines};
use kairos_stream::PipelineSpec;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::ErrorBody;
use crate::request::{ApiResult, parse_json};

/// Apply a pipeline definition and run it. The output feature group is created if absent; a
/// changed definition becomes the next version and replaces the running one.
#[utoipa::path(post, path = "/v1/pipelines", request_body = PipelineSpec,
    responses((status = 201, body = Deployed), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn deploy(
    State(pipelines): State<Arc<Pipelines>>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Deployed>)> {
    let spec: PipelineSpec = parse_json(&body)?;
    let (pipeline, status) = pipelines.deploy(spec).await?;
    Ok((StatusCode::CREATED, Json(Deployed { pipeline, status })))
}

/// Every pipeline (latest version) and its status.
#[utoipa::path(get, path = "/v1/pipelines", responses((status = 200, body = [PipelineStatus])))]
pub async fn list(State(pipelines): State<Arc<Pipelines>>) -> ApiResult<Json<Vec<PipelineStatus>>> {
    Ok(Json(pipelines.list().await?))
}

/// A pipeline's status: state, counts, watermark, positions and freshness percentiles.
#[utoipa::path(get, path = "/v1/pipelines/{name}", params(("name" = String, Path)),
    responses((status = 200, body = PipelineStatus), (status = 404, body = ErrorBody)))]
pub async fn status(
    State(pipelines): State<Arc<Pipelines>>,
    Path(name): Path<String>,
) -> ApiResult<Json<PipelineStatus>> {
    Ok(Json(pipelines.status(&name).await?))
}

/// Start a pipeline that is not running, from its last checkpoint, and keep it running: on
/// every replica that shares its partitions, and when a server starts.
#[utoipa::path(post, path = "/v1/pipelines/{name}/start", params(("name" = String, Path)),
    responses((status = 200, body = PipelineStatus), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn start(
    State(pipelines): State<Arc<Pipelines>>,
    Path(name): Path<String>,
) -> ApiResult<Json<PipelineStatus>> {
    Ok(Json(pipelines.resume(&name).await?))
}

/// Stop a running pipeline after a last checkpoint, and keep it stopped: on every replica,
/// and when a server starts, until it is started again.
#[utoipa::path(post, path = "/v1/pipelines/{name}/stop", params(("name" = String, Path)),
    responses((status = 200, body = PipelineStatus), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn stop(
    State(pipelines): State<Arc<Pipelines>>,
    Path(name): Path<String>,
) -> ApiResult<Json<PipelineStatus>> {
    Ok(Json(pipelines.pause(&name).await?))
}

/// Where pushed events landed in their stream.
#[derive(Debug, Serialize, ToSchema)]
pub struct PushAck {
    pub stream: String,
    /// The body's position in the stream's log.
    pub position: u64,
}

/// Push events (JSON lines, or CSV with a header, as the reading pipeline's source says) to a
/// stream. Acknowledged once durable; malformed events go to the pipeline's dead-letter file.
#[utoipa::path(post, path = "/v1/streams/{stream}/events", params(("stream" = String, Path)),
    request_body(content = String, content_type = "application/x-ndjson"),
    responses((status = 200, body = PushAck), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn push(
    State(pipelines): State<Arc<Pipelines>>,
    Path(stream): Path<String>,
    body: Bytes,
) -> ApiResult<Json<PushAck>> {
    let position = pipelines.push(&stream, body).await?;
    Ok(Json(PushAck { stream, position }))
}
