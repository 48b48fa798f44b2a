//! The Open Inference Protocol (KServe V2) view of the deployments and the registry, shared by
//! the REST and gRPC transports: what a model is called, the tensors it takes and gives, and
//! inference on tensors.
//!
//! A **deployment** is a V2 model whose inputs are its entity keys and request-time values,
//! one element per entity (shape `[-1]`); the transformer runs inside, and it gives
//! `probability` (FP64) and `label` (INT64) for a classifier, `prediction` (FP64) for a
//! regressor. Its version is the model version it serves. A **registered model** is a V2 model
//! taking its feature tensor directly, as its signature declares. A model computes one number
//! per row (the positive class's probability, or the value); its declared outputs are filled
//! from it: a `[-1, 2]` output with both class probabilities, an integer or bool output with
//! the label at 0.5, any other output with the number itself.

use std::sync::Arc;

use kairos_model::predictor::Predictor;
use kairos_model::{Datatype, Model, TensorSpec};
use kairos_types::FeatureType;

pub use kairos_tensor::{Tensor, TensorData};

use crate::deployments::Deployments;
use crate::error::{DeployError, Result};
use crate::live::{Live, tensor_type};

/// An inference request on tensors.
#[derive(Debug, Clone, Default)]
pub struct InferRequest {
    pub id: Option<String>,
    pub inputs: Vec<Tensor>,
    /// The outputs wanted, by name; all of them when empty.
    pub outputs: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct InferResponse {
    pub model_name: String,
    pub model_version: String,
    pub id: String,
    pub outputs: Vec<Tensor>,
}

/// What the protocol's model metadata says.
#[derive(Debug, Clone)]
pub struct ModelMetadata {
    pub name: String,
    pub versions: Vec<String>,
    pub platform: String,
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
}

/// Models served over the protocol by an application above the deployments — a recommender
/// answers `user_id` with its top items — registered with `Deployments::add_application`.
pub trait V2Application: Send + Sync + std::fmt::Debug {
    /// The model's metadata, when the application serves a model of that name.
    fn metadata(&self, name: &str) -> Option<ModelMetadata>;

    /// Inference, when the application serves a model of that name.
    fn infer<'a>(
        &'a self,
        name: &'a str,
        request: InferRequest,
    ) -> futures::future::BoxFuture<'a, Option<Result<InferResponse>>>;
}

/// A model as the protocol serves it.
#[derive(Debug, Clone)]
pub enum V2Model {
    Deployment(Arc<Live>),
    Registered {
        model: Model,
        predictor: Arc<Predictor>,
    },
}

impl V2Model {
    pub fn name(&self) -> &str {
        match self {
            V2Model::Deployment(live) => &live.deployment.spec.name,
            V2Model::Registered { model, .. } => &model.spec.name,
        }
    }

    pub fn version(&self) -> String {
        match self {
            V2Model::Deployment(live) => live.model.version.to_string(),
            V2Model::Registered { model, .. } => model.version.to_string(),
        }
    }

    pub fn platform(&self) -> String {
        let framework = match self {
            V2Model::Deployment(live) => live.model.spec.framework,
            V2Model::Registered { model, .. } => model.spec.framework,
        };
        let framework = serde_json::to_value(framework).expect("a framework serialises");
        format!("kairos_{}", framework.as_str().unwrap_or("model"))
    }

    pub fn inputs(&self) -> Vec<TensorSpec> {
        match self {
            V2Model::Deployment(live) => {
                let inputs = live.inputs();
                inputs
                    .keys
                    .iter()
                    .chain(&inputs.request)
                    .map(|(name, ty)| TensorSpec {
                        name: name.clone(),
                        datatype: tensor_type(*ty),
                        shape: vec![-1],
                    })
                    .collect()
            }
            V2Model::Registered { model, .. } => model.spec.signature.inputs.clone(),
        }
    }

    pub fn outputs(&self) -> Vec<TensorSpec> {
        match self {
            V2Model::Deployment(live) => {
                let spec = |name: &str, datatype| TensorSpec {
                    name: name.into(),
                    datatype,
                    shape: vec![-1],
                };
                if live.is_classifier() {
                    vec![
                        spec("probability", Datatype::Fp64),
                        spec("label", Datatype::Int64),
                    ]
                } else {
                    vec![spec("prediction", Datatype::Fp64)]
                }
            }
            V2Model::Registered { model, .. } => model.spec.signature.outputs.clone(),
        }
    }
}

impl Deployments {
    /// The V2 model `name`: a live deployment of that name, else a registered model (the
    /// latest version unless `version`).
    pub async fn v2_model(&self, name: &str, version: Option<&str>) -> Result<V2Model> {
        let version = version
            .map(|v| {
                v.parse::<u32>().map_err(|_| {
                    DeployError::BadRequest(format!("model version '{v}' is not a version number"))
                })
            })
            .transpose()?;
        let live = match self.get(name) {
            Err(DeployError::NotFound(_)) => None,
            found => Some(found?),
        };
        if let Some(live) = live {
            return match version {
                Some(v) if v != live.model.version => Err(DeployError::NotFound(format!(
                    "deployment '{name}' serves model version {}, not {v}",
                    live.model.version
                ))),
                _ => Ok(V2Model::Deployment(live)),
            };
        }
        let (model, predictor) = self.model_predictor(name, version).await?;
        Ok(V2Model::Registered { model, predictor })
    }

    pub async fn v2_metadata(&self, name: &str, version: Option<&str>) -> Result<ModelMetadata> {
        if let Some(metadata) = self.applications().iter().find_map(|a| a.metadata(name)) {
            return Ok(metadata);
        }
        let model = self.v2_model(name, version).await?;
        let versions = match &model {
            V2Model::Deployment(_) => vec![model.version()],
            V2Model::Registered { model, .. } => self
                .store()
                .catalog()
                .list_models()
                .map_err(kairos_store::StoreError::from)?
                .into_iter()
                .filter(|m| m.spec.name == model.spec.name)
                .map(|m| m.version.to_string())
                .collect(),
        };
        Ok(ModelMetadata {
            name: model.name().to_string(),
            platform: model.platform(),
            inputs: model.inputs(),
            outputs: model.outputs(),
            versions,
        })
    }

    /// Inference on tensors.
    pub async fn v2_infer(
        &self,
        name: &str,
        version: Option<&str>,
        request: InferRequest,
    ) -> Result<InferResponse> {
        for input in &request.inputs {
            input.check().map_err(DeployError::BadRequest)?;
        }
        for application in self.applications() {
            if let Some(answer) = application.infer(name, request.clone()).await {
                return answer;
            }
        }
        let model = self.v2_model(name, version).await?;
        let declared = model.outputs();
        for wanted in &request.outputs {
            if !declared.iter().any(|o| o.name == *wanted) {
                return Err(DeployError::BadRequest(format!(
                    "model '{name}' has no output '{wanted}'; its outputs are: {}",
                    names(&declared)
                )));
            }
        }
        let (id, outputs) = match &model {
            V2Model::Deployment(live) => {
                self.infer_deployment(live, request.id, &request.inputs)
                    .await?
            }
            V2Model::Registered { model, predictor } => {
                let id = request.id.clone().unwrap_or_default();
                (id, infer_registered(model, predictor, &request.inputs)?)
            }
        };
        let rows = outputs.len();
        let outputs = declared
            .iter()
            .filter(|o| request.outputs.is_empty() || request.outputs.contains(&o.name))
            .map(|o| output_tensor(o, &outputs, rows))
            .collect();
        Ok(InferResponse {
            model_name: model.name().to_string(),
            model_version: model.version(),
            id,
            outputs,
        })
    }

    /// A deployment's tensors become entries and request values, one per element.
    async fn infer_deployment(
        &self,
        live: &Live,
        id: Option<String>,
        inputs: &[Tensor],
    ) -> Result<(String, Vec<f64>)> {
        let view = live.inputs();
        let expected: Vec<&(String, FeatureType)> = view.keys.iter().chain(&view.request).collect();
        for input in inputs {
            if input.name != view.event_time && !expected.iter().any(|(n, _)| *n == input.name) {
                return Err(DeployError::BadRequest(format!(
                    "deployment '{}' has no input '{}'; its inputs are: {} (and optionally {})",
                    live.deployment.spec.name,
                    input.name,
                    expected
                        .iter()
                        .map(|(n, _)| n.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    view.event_time
                )));
            }
        }
        for input in inputs {
            if let Some((_, ty)) = expected.iter().find(|(n, _)| *n == input.name) {
                check_entity_input(input, *ty)?;
            }
        }
        let find = |name: &str| inputs.iter().find(|t| t.name == name);
        let rows = inputs.first().map_or(0, |t| t.data.len());
        for (name, _) in &expected {
            if find(name).is_none() {
                return Err(DeployError::BadRequest(format!(
                    "input '{name}' is missing"
                )));
            }
        }
        // Every input, the optional event time too, holds one element per entity.
        if let Some(odd) = inputs.iter().find(|t| t.data.len() != rows) {
            return Err(DeployError::BadRequest(format!(
                "input '{}' has {} elements where the others have {rows}: one per entity",
                odd.name,
                odd.data.len()
            )));
        }
        let element = |name: &str, i: usize| -> Result<serde_json::Value> {
            let tensor = find(name).expect("checked above");
            tensor
                .data
                .json(i)
                .map_err(|e| DeployError::BadRequest(format!("input '{name}': {e}")))
        };
        let mut entries = Vec::with_capacity(rows);
        let mut request = Vec::with_capacity(rows);
        for i in 0..rows {
            entries.push(match view.keys.as_slice() {
                [(key, _)] => element(key, i)?,
                keys => serde_json::Value::Object(
                    keys.iter()
                        .map(|(k, _)| Ok((k.clone(), element(k, i)?)))
                        .collect::<Result<_>>()?,
                ),
            });
            let mut values = serde_json::Map::new();
            for (name, _) in &view.request {
                values.insert(name.clone(), element(name, i)?);
            }
            if find(&view.event_time).is_some() {
                values.insert(view.event_time.clone(), element(&view.event_time, i)?);
            }
            request.push(values);
        }
        let (id, scored) = self.score(live, id, &entries, &request).await?;
        Ok((id, scored.outputs))
    }
}

/// A deployment's input holds one element per entity of its column's type: a tensor of another
/// datatype or shape would be read as something it is not (a float key rounded, a matrix
/// flattened), so it is refused, as Triton refuses one that does not match its model.
fn check_entity_input(input: &Tensor, ty: FeatureType) -> Result<()> {
    let given = input.datatype();
    let fits = match ty {
        // An embedding is a vector per entity; its length is checked with the values.
        FeatureType::Embedding { .. } => return Ok(()),
        // Times and dates come as numbers or as text (RFC 3339, YYYY-MM-DD).
        FeatureType::Timestamp | FeatureType::Date => {
            given == tensor_type(ty) || given == Datatype::Bytes
        }
        _ => given == tensor_type(ty),
    };
    if !fits {
        return Err(DeployError::BadRequest(format!(
            "input '{}': datatype {}, expected {}",
            input.name,
            given.as_str(),
            tensor_type(ty).as_str()
        )));
    }
    match input.shape.as_slice() {
        [_] | [_, 1] => Ok(()),
        shape => Err(DeployError::BadRequest(format!(
            "input '{}': shape {shape:?}, expected [entities] (one element per entity)",
            input.name
        ))),
    }
}

/// A registered model's one input tensor becomes rows of features.
fn infer_registered(model: &Model, predictor: &Predictor, inputs: &[Tensor]) -> Result<Vec<f64>> {
    let declared = &model.spec.signature.inputs;
    let [input] = inputs else {
        return Err(DeployError::BadRequest(format!(
            "model '{}' takes one input ({}); {} were given",
            model.spec.name,
            names(declared),
            inputs.len()
        )));
    };
    if declared.first().is_some_and(|d| d.name != input.name) {
        return Err(DeployError::BadRequest(format!(
            "model '{}' has no input '{}'; its input is '{}'",
            model.spec.name, input.name, declared[0].name
        )));
    }
    if let Some(want) = declared.first().map(|d| d.datatype)
        && input.datatype() != want
    {
        return Err(DeployError::BadRequest(format!(
            "input '{}': datatype {}, expected {}",
            input.name,
            input.datatype().as_str(),
            want.as_str()
        )));
    }
    let width = predictor.features();
    let rows = match input.shape.as_slice() {
        [rows, w] if *w as usize == width => *rows as usize,
        [n] if width == 1 => *n as usize,
        shape => {
            return Err(DeployError::BadRequest(format!(
                "input '{}': shape {shape:?}, expected [rows, {width}]",
                input.name
            )));
        }
    };
    let values = (0..input.data.len())
        .map(|i| input.data.float(i))
        .collect::<Option<Vec<f64>>>()
        .ok_or_else(|| {
            DeployError::BadRequest(format!(
                "input '{}': expected numbers, got BYTES",
                input.name
            ))
        })?;
    predictor
        .predict(&values, rows)
        .map_err(|e| DeployError::BadRequest(e.to_string()))
}

/// An output as declared, filled from one number per row.
fn output_tensor(spec: &TensorSpec, values: &[f64], rows: usize) -> Tensor {
    let pairs = spec.shape.len() == 2 && spec.shape[1] == 2;
    let (shape, numbers): (Vec<i64>, Vec<f64>) = if pairs {
        (
            vec![rows as i64, 2],
            values.iter().flat_map(|p| [1.0 - p, *p]).collect(),
        )
    } else {
        let mut shape = vec![rows as i64];
        shape.extend(spec.shape.iter().skip(1).copied());
        (shape, values.to_vec())
    };
    let label = |p: &f64| *p >= 0.5;
    let data = match spec.datatype {
        Datatype::Fp64 => TensorData::Fp64(numbers),
        Datatype::Fp32 => TensorData::Fp32(numbers.iter().map(|v| *v as f32).collect()),
        Datatype::Int64 => TensorData::Int64(numbers.iter().map(|p| i64::from(label(p))).collect()),
        Datatype::Int32 => TensorData::Int32(numbers.iter().map(|p| i32::from(label(p))).collect()),
        Datatype::Bool => TensorData::Bool(numbers.iter().map(label).collect()),
        Datatype::Bytes => {
            TensorData::Bytes(numbers.iter().map(|v| v.to_string().into_bytes()).collect())
        }
    };
    Tensor {
        name: spec.name.clone(),
        shape,
        data,
    }
}

fn names(tensors: &[TensorSpec]) -> String {
    tensors
        .iter()
        .map(|t| t.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, datatype: Datatype, shape: Vec<i64>) -> TensorSpec {
        TensorSpec {
            name: name.into(),
            datatype,
            shape,
        }
    }

    #[test]
    fn declared_outputs_are_filled_from_one_number_per_row() {
        let p = [0.25, 0.75];
        let probabilities =
            output_tensor(&spec("probabilities", Datatype::Fp32, vec![-1, 2]), &p, 2);
        assert_eq!(probabilities.shape, [2, 2]);
        assert_eq!(
            probabilities.data,
            TensorData::Fp32(vec![0.75, 0.25, 0.25, 0.75])
        );
        let label = output_tensor(&spec("label", Datatype::Int64, vec![-1]), &p, 2);
        assert_eq!(label.data, TensorData::Int64(vec![0, 1]));
        let value = output_tensor(&spec("prediction", Datatype::Fp64, vec![-1]), &p, 2);
        assert_eq!(value.data, TensorData::Fp64(p.to_vec()));
    }

    #[test]
    fn an_entity_input_must_have_its_columns_datatype_and_one_element_each() {
        let tensor = |data: TensorData, shape: Vec<i64>| Tensor {
            name: "cc_num".into(),
            shape,
            data,
        };
        let ok = tensor(TensorData::Int64(vec![1, 2]), vec![2]);
        assert!(check_entity_input(&ok, FeatureType::Int64).is_ok());
        let float_key = tensor(TensorData::Fp32(vec![1.0, 2.0]), vec![2]);
        let err = check_entity_input(&float_key, FeatureType::Int64).unwrap_err();
        assert!(
            err.to_string().contains("datatype FP32, expected INT64"),
            "{err}"
        );
        let matrix = tensor(TensorData::Int64(vec![1, 2, 3, 4]), vec![2, 2]);
        assert!(check_entity_input(&matrix, FeatureType::Int64).is_err());
        let text_time = tensor(
            TensorData::Bytes(vec![b"2024-05-01T10:00:00Z".to_vec()]),
            vec![1],
        );
        assert!(check_entity_input(&text_time, FeatureType::Timestamp).is_ok());
    }

    #[test]
    fn a_shape_must_hold_the_elements_given() {
        let t = Tensor {
            name: "x".into(),
            shape: vec![2, 3],
            data: TensorData::Fp32(vec![0.0; 5]),
        };
        assert!(
            t.check()
                .unwrap_err()
                .to_string()
                .contains("input 'x': shape [2, 3]")
        );
        let t = Tensor {
            shape: vec![-1, 5],
            ..t
        };
        assert!(t.check().is_err());
    }
}
