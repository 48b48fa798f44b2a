//! Model-registry routes: registering a model trained elsewhere, training on a feature view,
//! and the registered models and their versions.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Multipart, Path, State};
use axum::http::StatusCode;
use kairos_deploy::training::TrainRequest;
use kairos_model::{Artifacts, Model, ModelSpec};
use kairos_store::{FeatureStore, StoreError};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::error::{ApiError, ApiQuery, ErrorBody};
use crate::request::{ApiResult, parse_json};

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
    let artifacts = Artifacts::new(store.storage());
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

/// Register a model trained elsewhere: a `multipart/form-data` body with the part `definition`
/// (the model's definition, JSON or TOML) and the part `artifact` (the file; its file name is
/// the artifact's name unless the definition gives one). The artifact must load (an ONNX graph
/// is run through tract) or nothing is registered.
#[utoipa::path(post, path = "/v1/models",
    request_body(content_type = "multipart/form-data", description = "parts `definition` and `artifact`"),
    responses((status = 201, body = Model), (status = 400, body = ErrorBody)))]
pub async fn register_model(
    State(store): State<FeatureStore>,
    mut form: Multipart,
) -> ApiResult<(StatusCode, Json<Model>)> {
    let bad = |e: axum::extract::multipart::MultipartError| ApiError::bad_request(e.body_text());
    let (mut definition, mut artifact) = (None, None);
    while let Some(part) = form.next_field().await.map_err(bad)? {
        match part.name() {
            Some("definition") => definition = Some(part.text().await.map_err(bad)?),
            Some("artifact") => {
                let file_name = part.file_name().map(str::to_owned);
                artifact = Some((file_name, part.bytes().await.map_err(bad)?));
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unexpected part {other:?}: expected 'definition' and 'artifact'"
                )));
            }
        }
    }
    let (Some(definition), Some((file_name, bytes))) = (definition, artifact) else {
        return Err(ApiError::bad_request(
            "expected the parts 'definition' and 'artifact'",
        ));
    };
    let mut spec = ModelSpec::parse(&definition)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_definition", e.to_string()))?;
    if spec.artifact.is_empty() {
        spec.artifact = file_name.unwrap_or_default();
    }
    let artifacts = Artifacts::new(store.storage());
    let model =
        kairos_deploy::training::register(store.catalog(), &artifacts, &spec, bytes.to_vec())
            .await?;
    Ok((StatusCode::CREATED, Json(model)))
}
