//! Model-registry routes: training on a feature view, and the registered models and their
//! versions. Registering an artifact trained elsewhere is `kairos model register` (in process).

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use kairos_deploy::training::TrainRequest;
use kairos_model::{Artifacts, Model};
use kairos_store::{FeatureStore, StoreError};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::api::parse_json;
use crate::error::{ApiError, ApiQuery, ErrorBody};

type ApiResult<T> = Result<T, ApiError>;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ModelVersionQuery {
    /// The model version; the latest when absent.
    version: Option<u32>,
}

fn not_found(name: &str, version: Option<u32>) -> StoreError {
    StoreError::NotFound(match version {
        Some(v) => format!("model '{name}' v{v} not found"),
        None => format!("model '{name}' not found"),
    })
}

/// List every version of every registered model.
#[utoipa::path(get, path = "/v1/models", responses((status = 200, body = [Model])))]
pub async fn list_models(State(store): State<FeatureStore>) -> ApiResult<Json<Vec<Model>>> {
    Ok(Json(
        store.catalog().list_models().map_err(StoreError::from)?,
    ))
}

/// A model version: framework, signature, metrics and lineage.
#[utoipa::path(get, path = "/v1/models/{name}", params(("name" = String, Path), ModelVersionQuery),
    responses((status = 200, body = Model), (status = 404, body = ErrorBody)))]
pub async fn describe_model(
    State(store): State<FeatureStore>,
    Path(name): Path<String>,
    ApiQuery(q): ApiQuery<ModelVersionQuery>,
) -> ApiResult<Json<Model>> {
    let model = store
        .catalog()
        .get_model(&name, q.version)
        .map_err(StoreError::from)?
        .ok_or_else(|| not_found(&name, q.version))?;
    Ok(Json(model))
}

/// Delete one model version and its artifact.
#[utoipa::path(delete, path = "/v1/models/{name}/versions/{version}",
    params(("name" = String, Path), ("version" = u32, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete_model(
    State(store): State<FeatureStore>,
    Path((name, version)): Path<(String, u32)>,
) -> ApiResult<StatusCode> {
    if !store
        .catalog()
        .delete_model(&name, version)
        .map_err(StoreError::from)?
    {
        return Err(not_found(&name, Some(version)).into());
    }
    let artifacts =
        Artifacts::in_data_dir(&store.config().data_dir).map_err(StoreError::internal)?;
    artifacts
        .delete(&name, version)
        .await
        .map_err(StoreError::internal)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Train a model on a feature view's training dataset (its frozen transforms applied), score it
/// on the validation and test splits, and register it with those metrics and its lineage.
#[utoipa::path(post, path = "/v1/train", request_body = TrainRequest,
    responses((status = 201, body = Model), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn train(
    State(store): State<FeatureStore>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Model>)> {
    let request: TrainRequest = parse_json(&body)?;
    let model = kairos_deploy::training::train(&store, &request).await?;
    Ok((StatusCode::CREATED, Json(model)))
}
