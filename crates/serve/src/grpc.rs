//! The Open Inference Protocol (KServe V2) over gRPC: package `inference`, service
//! `GRPCInferenceService`, served on the REST port (HTTP/2). Inputs come typed (`contents`) or
//! raw (`raw_input_contents`); outputs go back raw (`raw_output_contents`), as Triton does.

use std::sync::Arc;

use kairos_auth::{Need, Scope, Target};
use kairos_deploy::v2::{InferRequest, ModelMetadata, Tensor, TensorData};
use kairos_deploy::{DeployError, Deployments};
use kairos_model::{Datatype, TensorSpec};
use kairos_tensor::binary::{from_binary, to_binary};
use tonic::{Request, Response, Status};

/// The code generated from `proto/inference.proto`.
#[allow(clippy::all, missing_docs)]
pub mod proto {
    tonic::include_proto!("inference");
}

use proto::grpc_inference_service_server::{GrpcInferenceService, GrpcInferenceServiceServer};
use proto::model_infer_response::InferOutputTensor;
use proto::model_metadata_response::TensorMetadata;
use proto::*;

/// The route the service is mounted at (what the access gate sees as the matched path).
pub(crate) const ROUTE: &str = "/inference.GRPCInferenceService/{*rest}";

/// The gRPC service as axum routes, to merge into the REST router.
pub fn routes(deployments: Arc<Deployments>, max_message: usize) -> axum::Router {
    let service = GrpcInferenceServiceServer::new(Inference { deployments })
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(max_message);
    tonic::service::Routes::new(service).into_axum_router()
}

#[derive(Debug)]
struct Inference {
    deployments: Arc<Deployments>,
}

fn status(e: DeployError) -> Status {
    let kind = e.kind();
    Status::new(
        crate::error::grpc_code(kind),
        crate::error::client_message(kind, &e),
    )
}

/// The gate passes model calls on the `read` scope alone, since the model's name is inside
/// the message; this checks the caller's limits against the deployment it names.
fn authorize<T>(request: &Request<T>, deployment: &str) -> Result<(), Status> {
    let principal = request
        .extensions()
        .get::<kairos_auth::Principal>()
        .ok_or_else(|| Status::internal("no principal: the access gate did not run"))?;
    principal
        .check(Need::new(Scope::Read, Target::Deployment(deployment)))
        .map_err(|denial| Status::permission_denied(denial.to_string()))
}

fn version(v: &str) -> Option<&str> {
    (!v.is_empty()).then_some(v)
}

/// Triton's configuration type of a datatype.
pub(crate) fn triton_type(d: Datatype) -> DataType {
    match d {
        Datatype::Bool => DataType::TypeBool,
        Datatype::Int32 => DataType::TypeInt32,
        Datatype::Int64 => DataType::TypeInt64,
        Datatype::Fp32 => DataType::TypeFp32,
        Datatype::Fp64 => DataType::TypeFp64,
        Datatype::Bytes => DataType::TypeString,
    }
}

fn tensor_metadata(specs: &[TensorSpec]) -> Vec<TensorMetadata> {
    specs
        .iter()
        .map(|t| TensorMetadata {
            name: t.name.clone(),
            datatype: t.datatype.as_str().into(),
            shape: t.shape.clone(),
        })
        .collect()
}

fn typed_contents(datatype: Datatype, c: InferTensorContents) -> TensorData {
    match datatype {
        Datatype::Bool => TensorData::Bool(c.bool_contents),
        Datatype::Int32 => TensorData::Int32(c.int_contents),
        Datatype::Int64 => TensorData::Int64(c.int64_contents),
        Datatype::Fp32 => TensorData::Fp32(c.fp32_contents),
        Datatype::Fp64 => TensorData::Fp64(c.fp64_contents),
        Datatype::Bytes => TensorData::Bytes(c.bytes_contents),
    }
}

#[tonic::async_trait]
impl GrpcInferenceService for Inference {
    async fn server_live(
        &self,
        _: Request<ServerLiveRequest>,
    ) -> Result<Response<ServerLiveResponse>, Status> {
        Ok(Response::new(ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: Request<ServerReadyRequest>,
    ) -> Result<Response<ServerReadyResponse>, Status> {
        Ok(Response::new(ServerReadyResponse {
            ready: self.deployments.is_ready(),
        }))
    }

    async fn model_ready(
        &self,
        request: Request<ModelReadyRequest>,
    ) -> Result<Response<ModelReadyResponse>, Status> {
        authorize(&request, &request.get_ref().name)?;
        let r = request.into_inner();
        let ready = self
            .deployments
            .v2_model(&r.name, version(&r.version))
            .await
            .is_ok();
        Ok(Response::new(ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        _: Request<ServerMetadataRequest>,
    ) -> Result<Response<ServerMetadataResponse>, Status> {
        Ok(Response::new(ServerMetadataResponse {
            name: "kairos".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: vec!["binary_tensor_data".into(), "model_configuration".into()],
        }))
    }

    async fn model_metadata(
        &self,
        request: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        authorize(&request, &request.get_ref().name)?;
        let r = request.into_inner();
        let m: ModelMetadata = self
            .deployments
            .v2_metadata(&r.name, version(&r.version))
            .await
            .map_err(status)?;
        Ok(Response::new(ModelMetadataResponse {
            name: m.name,
            versions: m.versions,
            platform: m.platform,
            inputs: tensor_metadata(&m.inputs),
            outputs: tensor_metadata(&m.outputs),
        }))
    }

    async fn model_config(
        &self,
        request: Request<ModelConfigRequest>,
    ) -> Result<Response<ModelConfigResponse>, Status> {
        authorize(&request, &request.get_ref().name)?;
        let r = request.into_inner();
        let m = self
            .deployments
            .v2_metadata(&r.name, version(&r.version))
            .await
            .map_err(status)?;
        Ok(Response::new(ModelConfigResponse {
            config: Some(ModelConfig {
                name: m.name,
                platform: m.platform,
                backend: "kairos".into(),
                max_batch_size: 0,
                input: m
                    .inputs
                    .iter()
                    .map(|t| ModelInput {
                        name: t.name.clone(),
                        data_type: triton_type(t.datatype).into(),
                        dims: t.shape.clone(),
                    })
                    .collect(),
                output: m
                    .outputs
                    .iter()
                    .map(|t| ModelOutput {
                        name: t.name.clone(),
                        data_type: triton_type(t.datatype).into(),
                        dims: t.shape.clone(),
                    })
                    .collect(),
            }),
        }))
    }

    async fn model_infer(
        &self,
        request: Request<ModelInferRequest>,
    ) -> Result<Response<ModelInferResponse>, Status> {
        authorize(&request, &request.get_ref().model_name)?;
        let r = request.into_inner();
        if !r.raw_input_contents.is_empty() && r.raw_input_contents.len() != r.inputs.len() {
            return Err(Status::invalid_argument(format!(
                "raw_input_contents: {} entries for {} inputs; give one per input or none",
                r.raw_input_contents.len(),
                r.inputs.len()
            )));
        }
        let mut raw = r.raw_input_contents.into_iter();
        let mut inputs = Vec::with_capacity(r.inputs.len());
        for input in r.inputs {
            let datatype = Datatype::parse(&input.datatype).ok_or_else(|| {
                Status::invalid_argument(format!(
                    "input '{}': unknown datatype '{}'",
                    input.name, input.datatype
                ))
            })?;
            let data = match (raw.next(), input.contents) {
                (Some(bytes), _) => from_binary(datatype, &bytes).map_err(|e| {
                    Status::invalid_argument(format!("input '{}': {e}", input.name))
                })?,
                (None, Some(contents)) => typed_contents(datatype, contents),
                (None, None) => {
                    return Err(Status::invalid_argument(format!(
                        "input '{}': no contents and no raw_input_contents",
                        input.name
                    )));
                }
            };
            inputs.push(Tensor {
                name: input.name,
                shape: input.shape,
                data,
            });
        }
        let answer = self
            .deployments
            .v2_infer(
                &r.model_name,
                version(&r.model_version),
                InferRequest {
                    id: version(&r.id).map(str::to_string),
                    inputs,
                    outputs: r.outputs.into_iter().map(|o| o.name).collect(),
                },
            )
            .await
            .map_err(status)?;
        let raw_output_contents = answer.outputs.iter().map(|t| to_binary(&t.data)).collect();
        Ok(Response::new(ModelInferResponse {
            model_name: answer.model_name,
            model_version: answer.model_version,
            id: answer.id,
            parameters: Default::default(),
            outputs: answer
                .outputs
                .into_iter()
                .map(|t| InferOutputTensor {
                    name: t.name.clone(),
                    datatype: t.datatype().as_str().into(),
                    shape: t.shape,
                    parameters: Default::default(),
                    contents: None,
                })
                .collect(),
            raw_output_contents,
        }))
    }
}
