//! Monitor routes: apply and list monitors, run one now, retrain, read its history, and a
//! deployment's HTML monitoring report. Thin adapters over [`Monitors`].

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use kairos_monitor::{History, Monitor, MonitorRun, MonitorSpec, Monitors, RetrainDecision};
use serde::Deserialize;

use crate::error::ErrorBody;
use crate::request::{ApiResult, parse_json};

/// Apply a monitor: checked against its deployment and label group, stored as the name's
/// next version, and scheduled.
#[utoipa::path(post, path = "/v1/monitors", request_body = MonitorSpec,
    responses((status = 201, body = Monitor), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn apply(
    State(monitors): State<Monitors>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Monitor>)> {
    let spec: MonitorSpec = parse_json(&body)?;
    Ok((StatusCode::CREATED, Json(monitors.apply(spec).await?)))
}

/// Every monitor's latest definition.
#[utoipa::path(get, path = "/v1/monitors", responses((status = 200, body = [Monitor])))]
pub async fn list(State(monitors): State<Monitors>) -> ApiResult<Json<Vec<Monitor>>> {
    Ok(Json(monitors.list()?))
}

/// A monitor's definition.
#[utoipa::path(get, path = "/v1/monitors/{name}", params(("name" = String, Path)),
    responses((status = 200, body = Monitor), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(monitors): State<Monitors>,
    Path(name): Path<String>,
) -> ApiResult<Json<Monitor>> {
    Ok(Json(monitors.get(&name)?))
}

/// Delete a monitor and stop its schedule; its history stays.
#[utoipa::path(delete, path = "/v1/monitors/{name}", params(("name" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete(
    State(monitors): State<Monitors>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    monitors.delete(&name)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Evaluate a monitor now: feature and prediction drift, label metrics, alerts (and a
/// retraining when its policy says so). The scores go to its history.
#[utoipa::path(post, path = "/v1/monitors/{name}/run", params(("name" = String, Path)),
    responses((status = 200, body = MonitorRun), (status = 404, body = ErrorBody)))]
pub async fn run(
    State(monitors): State<Monitors>,
    Path(name): Path<String>,
) -> ApiResult<Json<MonitorRun>> {
    Ok(Json(monitors.run(&name, None).await?))
}

/// Retrain now: fresh training data, a challenger with the champion's settings, promoted only
/// when it beats the champion by the policy's margin.
#[utoipa::path(post, path = "/v1/monitors/{name}/retrain", params(("name" = String, Path)),
    responses((status = 200, body = RetrainDecision), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn retrain(
    State(monitors): State<Monitors>,
    Path(name): Path<String>,
) -> ApiResult<Json<RetrainDecision>> {
    Ok(Json(monitors.retrain(&name, "requested").await?))
}

/// Every score and retraining decision of a monitor, oldest first.
#[utoipa::path(get, path = "/v1/monitors/{name}/history", params(("name" = String, Path)),
    responses((status = 200, body = History), (status = 404, body = ErrorBody)))]
pub async fn history(
    State(monitors): State<Monitors>,
    Path(name): Path<String>,
) -> ApiResult<Json<History>> {
    Ok(Json(monitors.history(&name).await?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct ReportQuery {
    /// The monitor, when the deployment has several.
    monitor: Option<String>,
}

/// A deployment's monitoring report: one self-contained HTML page.
#[utoipa::path(get, path = "/v1/deployments/{name}/monitoring/report",
    params(("name" = String, Path), ReportQuery),
    responses((status = 200, content_type = "text/html", body = String), (status = 404, body = ErrorBody)))]
pub async fn report(
    State(monitors): State<Monitors>,
    Path(name): Path<String>,
    Query(query): Query<ReportQuery>,
) -> ApiResult<impl IntoResponse> {
    let html = monitors.report(&name, query.monitor.as_deref()).await?;
    Ok(([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html))
}
