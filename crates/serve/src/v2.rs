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
use kairos_deploy::v2::{InferRequest, InferResponse, ModelMetadata, Tensor, TensorData};
use kairos_deploy::{DeployError, Deployments};
use kairos_model::{Datatype, TensorSpec};
use serde::Deserialize;
use serde_json::{Value, json};

const HEADER_LENGTH: &str = "inference-header-content-length";

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

#[derive(Debug, Deserialize)]
struct RestRequest {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    parameters: Option<serde_json::Map<String, Value>>,
    inputs: Vec<RestInput>,
    #[serde(default)]
    outputs: Vec<RestOutput>,
}

#[derive(Debug, Deserialize)]
struct RestInput {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: Option<serde_json::Map<String, Value>>,
    #[serde(default)]
    data: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct RestOutput {
    name: String,
    #[serde(default)]
    parameters: Option<serde_json::Map<String, Value>>,
}

fn parameter<'a>(p: &'a Option<serde_json::Map<String, Value>>, name: &str) -> Option<&'a Value> {
    p.as_ref().and_then(|p| p.get(name))
}

async fn infer_on(
    d: &Deployments,
    model: &str,
    version: Option<&str>,
    headers: &HeaderMap,
    body: &Bytes,
) -> V2Result<Response> {
    let header_length = headers
        .get(HEADER_LENGTH)
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|s| s.parse::<usize>().ok())
                .filter(|n| *n <= body.len())
                .ok_or_else(|| {
                    V2Error::bad(format!(
                        "{HEADER_LENGTH}: expected a length of at most the body's {} bytes",
                        body.len()
                    ))
                })
        })
        .transpose()?;
    let (json_part, mut binary) = match header_length {
        Some(n) => (&body[..n], &body[n..]),
        None => (&body[..], &[][..]),
    };
    let request: RestRequest = serde_json::from_slice(json_part)
        .map_err(|e| V2Error::bad(format!("the request is not a V2 inference request: {e}")))?;
    let mut inputs = Vec::with_capacity(request.inputs.len());
    for input in request.inputs {
        let datatype = Datatype::parse(&input.datatype).ok_or_else(|| {
            V2Error::bad(format!(
                "input '{}': unknown datatype '{}'",
                input.name, input.datatype
            ))
        })?;
        let data = match parameter(&input.parameters, "binary_data_size") {
            Some(size) => {
                let size = size.as_u64().ok_or_else(|| {
                    V2Error::bad(format!(
                        "input '{}': binary_data_size must be a number",
                        input.name
                    ))
                })? as usize;
                if size > binary.len() {
                    return Err(V2Error::bad(format!(
                        "input '{}': binary_data_size {size} is past the end of the body",
                        input.name
                    )));
                }
                let (mine, rest) = binary.split_at(size);
                binary = rest;
                from_binary(datatype, mine)
                    .map_err(|e| V2Error::bad(format!("input '{}': {e}", input.name)))?
            }
            None => {
                let data = input.data.as_ref().ok_or_else(|| {
                    V2Error::bad(format!(
                        "input '{}': no data and no binary_data_size",
                        input.name
                    ))
                })?;
                from_json(datatype, data)
                    .map_err(|e| V2Error::bad(format!("input '{}': {e}", input.name)))?
            }
        };
        inputs.push(Tensor {
            name: input.name,
            shape: input.shape,
            data,
        });
    }
    let all_binary = parameter(&request.parameters, "binary_data_output")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let binary_outputs: Vec<String> = request
        .outputs
        .iter()
        .filter(|o| {
            parameter(&o.parameters, "binary_data")
                .and_then(Value::as_bool)
                .unwrap_or(all_binary)
        })
        .map(|o| o.name.clone())
        .collect();
    let response = d
        .v2_infer(
            model,
            version,
            InferRequest {
                id: request.id,
                inputs,
                outputs: request.outputs.into_iter().map(|o| o.name).collect(),
            },
        )
        .await?;
    Ok(respond(response, all_binary, &binary_outputs))
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

/// Flattens nested `data` arrays (row-major) into the tensor's elements.
fn from_json(datatype: Datatype, data: &Value) -> Result<TensorData, String> {
    let mut flat = Vec::new();
    flatten(data, &mut flat);
    let bad = |i: usize, v: &Value| format!("element {i} is {v}, not {datatype:?}");
    macro_rules! numbers {
        ($variant:ident, $get:expr) => {
            TensorData::$variant(
                flat.iter()
                    .enumerate()
                    .map(|(i, v)| $get(v).ok_or_else(|| bad(i, v)))
                    .collect::<Result<_, _>>()?,
            )
        };
    }
    Ok(match datatype {
        Datatype::Bool => numbers!(Bool, |v: &Value| v.as_bool()),
        Datatype::Int32 => numbers!(Int32, |v: &Value| v
            .as_i64()
            .and_then(|n| i32::try_from(n).ok())),
        Datatype::Int64 => numbers!(Int64, |v: &Value| v.as_i64()),
        Datatype::Fp32 => numbers!(Fp32, |v: &Value| v.as_f64().map(|f| f as f32)),
        Datatype::Fp64 => numbers!(Fp64, |v: &Value| v.as_f64()),
        Datatype::Bytes => numbers!(Bytes, |v: &Value| v.as_str().map(|s| s.as_bytes().to_vec())),
    })
}

fn flatten<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| flatten(i, out)),
        other => out.push(other),
    }
}

fn to_json(data: &TensorData) -> Value {
    match data {
        TensorData::Bool(v) => json!(v),
        TensorData::Int32(v) => json!(v),
        TensorData::Int64(v) => json!(v),
        TensorData::Fp32(v) => json!(v),
        TensorData::Fp64(v) => json!(v),
        TensorData::Bytes(v) => json!(
            v.iter()
                .map(|b| String::from_utf8_lossy(b))
                .collect::<Vec<_>>()
        ),
    }
}

/// Binary tensor data: little-endian elements; BOOL one byte each; BYTES each prefixed with
/// its 4-byte little-endian length.
pub(crate) fn from_binary(datatype: Datatype, bytes: &[u8]) -> Result<TensorData, String> {
    fn fixed<const N: usize, T>(bytes: &[u8], f: fn([u8; N]) -> T) -> Result<Vec<T>, String> {
        if !bytes.len().is_multiple_of(N) {
            return Err(format!(
                "{} bytes are not a whole number of {N}-byte elements",
                bytes.len()
            ));
        }
        Ok(bytes
            .chunks_exact(N)
            .map(|c| f(c.try_into().expect("chunk of N")))
            .collect())
    }
    Ok(match datatype {
        Datatype::Bool => TensorData::Bool(bytes.iter().map(|b| *b != 0).collect()),
        Datatype::Int32 => TensorData::Int32(fixed(bytes, i32::from_le_bytes)?),
        Datatype::Int64 => TensorData::Int64(fixed(bytes, i64::from_le_bytes)?),
        Datatype::Fp32 => TensorData::Fp32(fixed(bytes, f32::from_le_bytes)?),
        Datatype::Fp64 => TensorData::Fp64(fixed(bytes, f64::from_le_bytes)?),
        Datatype::Bytes => {
            let mut items = Vec::new();
            let mut rest = bytes;
            while !rest.is_empty() {
                if rest.len() < 4 {
                    return Err("a BYTES element's length prefix is cut short".into());
                }
                let n = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
                if rest.len() < 4 + n {
                    return Err(format!("a BYTES element of {n} bytes is cut short"));
                }
                items.push(rest[4..4 + n].to_vec());
                rest = &rest[4 + n..];
            }
            TensorData::Bytes(items)
        }
    })
}

pub(crate) fn to_binary(data: &TensorData) -> Vec<u8> {
    match data {
        TensorData::Bool(v) => v.iter().map(|b| u8::from(*b)).collect(),
        TensorData::Int32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::Int64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::Fp32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::Fp64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::Bytes(v) => v
            .iter()
            .flat_map(|b| {
                (b.len() as u32)
                    .to_le_bytes()
                    .into_iter()
                    .chain(b.iter().copied())
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_and_flat_json_data_read_alike() {
        let nested = from_json(Datatype::Fp32, &json!([[1.0, 2.0], [3.0, 4.5]])).unwrap();
        let flat = from_json(Datatype::Fp32, &json!([1, 2, 3, 4.5])).unwrap();
        assert_eq!(nested, flat);
        let e = from_json(Datatype::Int64, &json!([1, "x"])).unwrap_err();
        assert!(e.contains("element 1"), "{e}");
    }

    #[test]
    fn binary_data_round_trips_for_every_datatype() {
        let cases = [
            TensorData::Bool(vec![true, false]),
            TensorData::Int32(vec![-1, 7]),
            TensorData::Int64(vec![i64::MIN, 4000123412341234]),
            TensorData::Fp32(vec![0.5, -2.25]),
            TensorData::Fp64(vec![1e-300, 3.5]),
            TensorData::Bytes(vec![
                b"travel".to_vec(),
                Vec::new(),
                "kr\u{f6}na".as_bytes().to_vec(),
            ]),
        ];
        for data in cases {
            let bytes = to_binary(&data);
            assert_eq!(from_binary(data.datatype(), &bytes).unwrap(), data);
        }
        assert!(from_binary(Datatype::Fp64, &[0; 12]).is_err());
        assert!(from_binary(Datatype::Bytes, &[9, 0, 0, 0, 1]).is_err());
    }
}
