//! The Open Inference Protocol (KServe V2) over REST, as KServe and Triton speak it, so their
//! clients (tritonclient, KServe's SDK, curl) work unchanged: server and model metadata,
//! health, readiness, Triton's model configuration, and inference with JSON tensors (flat or
//! nested `data`) or binary tensor data (`Inference-Header-Content-Length`, per-tensor
//! `binary_data_size`). Errors are `{"error": "..."}`, as the protocol has them.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use kairos_deploy::v2::{InferRequest, InferResponse, ModelMetadata};
use kairos_deploy::{DeployError, Deployments};
use kairos_model::TensorSpec;
use kairos_tensor::binary::to_binary;
use kairos_tensor::json::to_json;
use kairos_tensor::rest::{self, HEADER_LENGTH};
use serde_json::{Value, json};

/// The V2 routes.
pub fn routes(deployments: Arc<Deployments>) -> Router {
    Router::new()
        .route("/v2", get(server_metadata))
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(ready))
        .route("/v2/models/{model}", get(model_metadata))
        .route(
            "/v2/models/{model}/versions/{version}",
            get(model_version_metadata),
        )
        .route("/v2/models/{model}/ready", get(model_ready))
        .route(
            "/v2/models/{model}/versions/{version}/ready",
            get(model_version_ready),
        )
        .route("/v2/models/{model}/config", get(model_config))
        .route(
            "/v2/models/{model}/versions/{version}/config",
            get(model_version_config),
        )
        .route("/v2/models/{model}/infer", post(infer))
        .route(
            "/v2/models/{model}/versions/{version}/infer",
            post(infer_version),
        )
        .with_state(deployments)
}

/// A V2 error: `{"error": message}` with its status.
#[derive(Debug)]
pub struct V2Error(StatusCode, String);

impl V2Error {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> V2Error {
        V2Error(status, message.into())
    }

    fn bad(message: impl Into<String>) -> V2Error {
        V2Error(StatusCode::BAD_REQUEST, message.into())
    }
}

impl From<DeployError> for V2Error {
    fn from(e: DeployError) -> Self {
        let kind = e.kind();
        V2Error(
            crate::error::http_status(kind),
            crate::error::client_message(kind, &e),
        )
    }
}

impl IntoResponse for V2Error {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

type V2Result<T> = Result<T, V2Error>;

async fn server_metadata() -> Json<Value> {
    Json(json!({
        "name": "kairos",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": ["binary_tensor_data", "model_configuration"],
    }))
}

async fn live() -> Json<Value> {
    Json(json!({ "live": true }))
}

async fn ready(State(deployments): State<Arc<Deployments>>) -> (StatusCode, Json<Value>) {
    let ready = deployments.is_ready();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(json!({ "ready": ready })))
}

fn metadata_json(m: &ModelMetadata) -> Value {
    json!({
        "name": m.name,
        "versions": m.versions,
        "platform": m.platform,
        "inputs": m.inputs,
        "outputs": m.outputs,
    })
}

async fn model_metadata(
    State(d): State<Arc<Deployments>>,
    Path(model): Path<String>,
) -> V2Result<Json<Value>> {
    Ok(Json(metadata_json(&d.v2_metadata(&model, None).await?)))
}

async fn model_version_metadata(
    State(d): State<Arc<Deployments>>,
    Path((model, version)): Path<(String, String)>,
) -> V2Result<Json<Value>> {
    Ok(Json(metadata_json(
        &d.v2_metadata(&model, Some(&version)).await?,
    )))
}

async fn readiness(d: &Deployments, model: &str, version: Option<&str>) -> Response {
    match d.v2_metadata(model, version).await {
        Ok(m) => Json(json!({ "name": m.name, "ready": true })).into_response(),
        Err(e) => V2Error::from(e).into_response(),
    }
}

async fn model_ready(State(d): State<Arc<Deployments>>, Path(model): Path<String>) -> Response {
    readiness(&d, &model, None).await
}

async fn model_version_ready(
    State(d): State<Arc<Deployments>>,
    Path((model, version)): Path<(String, String)>,
) -> Response {
    readiness(&d, &model, Some(&version)).await
}

/// Triton's model configuration, from the metadata.
fn config_json(m: &ModelMetadata) -> Value {
    let tensors = |specs: &[TensorSpec]| -> Vec<Value> {
        specs
            .iter()
            .map(|t| {
                json!({
                    "name": t.name,
                    "data_type": crate::grpc::triton_type(t.datatype).as_str_name(),
                    "dims": t.shape,
                })
            })
            .collect()
    };
    json!({
        "name": m.name,
        "platform": m.platform,
        "backend": "kairos",
        "max_batch_size": 0,
        "input": tensors(&m.inputs),
        "output": tensors(&m.outputs),
    })
}

async fn model_config(
    State(d): State<Arc<Deployments>>,
    Path(model): Path<String>,
) -> V2Result<Json<Value>> {
    Ok(Json(config_json(&d.v2_metadata(&model, None).await?)))
}

async fn model_version_config(
    State(d): State<Arc<Deployments>>,
    Path((model, version)): Path<(String, String)>,
) -> V2Result<Json<Value>> {
    Ok(Json(config_json(
        &d.v2_metadata(&model, Some(&version)).await?,
    )))
}

async fn infer(
    State(d): State<Arc<Deployments>>,
    Path(model): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    answer(infer_on(&d, &model, None, &headers, &body).await)
}

async fn infer_version(
    State(d): State<Arc<Deployments>>,
    Path((model, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    answer(infer_on(&d, &model, Some(&version), &headers, &body).await)
}

fn answer(result: V2Result<Response>) -> Response {
    result.unwrap_or_else(IntoResponse::into_response)
}

async fn infer_on(
    d: &Deployments,
    model: &str,
    version: Option<&str>,
    headers: &HeaderMap,
    body: &Bytes,
) -> V2Result<Response> {
    let request = rest::decode(body, headers.get(HEADER_LENGTH).map(|v| v.as_bytes()))
        .map_err(V2Error::bad)?;
    let response = d
        .v2_infer(
            model,
            version,
            InferRequest {
                id: request.id,
                inputs: request.inputs,
                outputs: request.outputs,
            },
        )
        .await?;
    Ok(respond(
        response,
        request.all_binary,
        &request.binary_outputs,
    ))
}

fn respond(response: InferResponse, all_binary: bool, binary_outputs: &[String]) -> Response {
    let mut tail: Vec<u8> = Vec::new();
    let outputs: Vec<Value> = response
        .outputs
        .iter()
        .map(|t| {
            let mut out = json!({
                "name": t.name,
                "datatype": t.datatype(),
                "shape": t.shape,
            });
            if all_binary || binary_outputs.contains(&t.name) {
                let bytes = to_binary(&t.data);
                out["parameters"] = json!({ "binary_data_size": bytes.len() });
                tail.extend_from_slice(&bytes);
            } else {
                out["data"] = to_json(&t.data);
            }
            out
        })
        .collect();
    let body = json!({
        "model_name": response.model_name,
        "model_version": response.model_version,
        "id": response.id,
        "outputs": outputs,
    });
    let head = serde_json::to_vec(&body).expect("JSON serialises");
    if tail.is_empty() {
        return ([(header::CONTENT_TYPE, "application/json")], head).into_response();
    }
    let length = head.len();
    let mut bytes = head;
    bytes.extend_from_slice(&tail);
    let mut response =
        ([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response();
    response
        .headers_mut()
        .insert(HEADER_LENGTH, HeaderValue::from(length));
    response
}
