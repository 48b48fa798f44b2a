//! Deployment routes: apply a deployment (a model version behind a name), its status, and the
//! simple prediction endpoint. Thin adapters over [`Deployments`].

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use kairos_deploy::{DeploymentStatus, Deployments, PredictRequest, PredictResponse};
use kairos_model::{Deployment, DeploymentSpec};

use crate::error::ErrorBody;
use crate::request::{ApiResult, parse_json};

/// Apply a deployment: its model version is loaded and checked against its feature view, then
/// swapped in atomically; requests in flight finish on the revision they started on.
#[utoipa::path(post, path = "/v1/deployments", request_body = DeploymentSpec,
    responses((status = 201, body = Deployment), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn apply(
    State(deployments): State<Arc<Deployments>>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Deployment>)> {
    let spec: DeploymentSpec = parse_json(&body)?;
    Ok((StatusCode::CREATED, Json(deployments.apply(spec).await?)))
}

/// Every live deployment and its status.
#[utoipa::path(get, path = "/v1/deployments", responses((status = 200, body = [DeploymentStatus])))]
pub async fn list(
    State(deployments): State<Arc<Deployments>>,
) -> ApiResult<Json<Vec<DeploymentStatus>>> {
    let statuses = deployments
        .list()
        .iter()
        .map(|live| deployments.status(&live.deployment.spec.name))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(statuses))
}

/// A deployment's revision, model, feature view, latency percentiles and SLO compliance.
#[utoipa::path(get, path = "/v1/deployments/{name}", params(("name" = String, Path)),
    responses((status = 200, body = DeploymentStatus), (status = 404, body = ErrorBody)))]
pub async fn status(
    State(deployments): State<Arc<Deployments>>,
    Path(name): Path<String>,
) -> ApiResult<Json<DeploymentStatus>> {
    Ok(Json(deployments.status(&name)?))
}

/// Delete a deployment (every revision). Its inference log stays.
#[utoipa::path(delete, path = "/v1/deployments/{name}", params(("name" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete(
    State(deployments): State<Arc<Deployments>>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    deployments.delete(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Predict for one or more entities: their feature vectors are fetched online, on-demand
/// features computed and the training dataset's transforms applied, then the model predicts.
#[utoipa::path(post, path = "/v1/deployments/{name}/predict", params(("name" = String, Path)),
    request_body = PredictRequest,
    responses((status = 200, body = PredictResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn predict(
    State(deployments): State<Arc<Deployments>>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Json<PredictResponse>> {
    let request: PredictRequest = parse_json(&body)?;
    Ok(Json(deployments.predict(&name, request).await?))
}
