//! A recommender as an Open Inference Protocol model: input `user_id` (INT64, one element per
//! user) and optionally `k`; outputs `item_id` (INT64) and `score` (FP64), shape `[users, k]`,
//! a row per user. Registered with the deployments so their V2 routes (REST and gRPC) answer it.

use futures::FutureExt;
use futures::future::BoxFuture;
use kairos_deploy::v2::{InferRequest, InferResponse, ModelMetadata, Tensor, TensorData};
use kairos_deploy::{DeployError, Result};
use kairos_model::{Datatype, TensorSpec};

use crate::live::RecommendRequest;
use crate::service::Recommenders;

fn tensor(name: &str, datatype: Datatype, shape: Vec<i64>) -> TensorSpec {
    TensorSpec {
        name: name.into(),
        datatype,
        shape,
    }
}

impl kairos_deploy::v2::V2Application for Recommenders {
    fn metadata(&self, name: &str) -> Option<ModelMetadata> {
        let status = self.status(name).ok()?;
        Some(ModelMetadata {
            name: name.to_owned(),
            versions: vec![status.revision.to_string()],
            platform: "kairos_recommender".into(),
            inputs: vec![
                tensor("user_id", Datatype::Int64, vec![-1]),
                tensor("k", Datatype::Int64, vec![1]),
            ],
            outputs: vec![
                tensor("item_id", Datatype::Int64, vec![-1, -1]),
                tensor("score", Datatype::Fp64, vec![-1, -1]),
            ],
        })
    }

    fn infer<'a>(
        &'a self,
        name: &'a str,
        request: InferRequest,
    ) -> BoxFuture<'a, Option<Result<InferResponse>>> {
        async move {
            let status = self.status(name).ok()?;
            Some(
                self.infer_tensors(name, status.revision, status.spec.k, request)
                    .await,
            )
        }
        .boxed()
    }
}

impl Recommenders {
    async fn infer_tensors(
        &self,
        name: &str,
        revision: u32,
        default_k: usize,
        request: InferRequest,
    ) -> Result<InferResponse> {
        let mut users = None;
        let mut k = None;
        for input in &request.inputs {
            match (input.name.as_str(), &input.data) {
                ("user_id", TensorData::Int64(ids)) => users = Some(ids.clone()),
                ("user_id", TensorData::Int32(ids)) => {
                    users = Some(ids.iter().map(|&i| i64::from(i)).collect())
                }
                ("k", TensorData::Int64(v)) if v.len() == 1 => k = Some(v[0] as usize),
                ("k", TensorData::Int32(v)) if v.len() == 1 => k = Some(v[0] as usize),
                (other, data) => {
                    return Err(DeployError::BadRequest(format!(
                        "recommender '{name}' takes user_id (INT64, one per user) and k \
                         (INT64, one element); got '{other}' of {:?} with {} elements",
                        data.datatype(),
                        data.len()
                    )));
                }
            }
        }
        let users = users.ok_or_else(|| {
            DeployError::BadRequest(format!("recommender '{name}' needs the input user_id"))
        })?;
        let k = k.unwrap_or(default_k);
        let mut ids = Vec::new();
        let mut scores = Vec::new();
        for user_id in &users {
            let answer = self
                .recommend(
                    name,
                    &RecommendRequest {
                        user_id: *user_id,
                        k: Some(k),
                        context: Default::default(),
                    },
                )
                .await?;
            // Rows are k wide; a user with fewer items left after the rules is padded with
            // item -1 and score NaN.
            for i in 0..k {
                let item = answer.items.get(i);
                ids.push(item.map_or(-1, |r| r.item_id));
                scores.push(item.map_or(f64::NAN, |r| r.score));
            }
        }
        let shape = vec![users.len() as i64, k as i64];
        let outputs = [
            Tensor {
                name: "item_id".into(),
                shape: shape.clone(),
                data: TensorData::Int64(ids),
            },
            Tensor {
                name: "score".into(),
                shape,
                data: TensorData::Fp64(scores),
            },
        ]
        .into_iter()
        .filter(|t| request.outputs.is_empty() || request.outputs.contains(&t.name))
        .collect();
        Ok(InferResponse {
            model_name: name.to_owned(),
            model_version: revision.to_string(),
            id: request.id.unwrap_or_default(),
            outputs,
        })
    }
}
