//! What the model registry holds about a model: how it computes, the tensors it takes and
//! gives (as the Open Inference Protocol describes them), how it did on held-out data, and
//! where it came from (feature view, training dataset, frozen transforms). The catalog stores
//! these as versioned documents; the artifact lives in the model's directory under the data
//! dir.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::metrics::{BinaryMetrics, RegressionMetrics};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("model definition: {0}")]
pub struct DefinitionError(pub String);

/// How a model computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Framework {
    /// Gradient-boosted trees trained by Kairos.
    Gbdt,
    /// Logistic regression trained by Kairos.
    Logistic,
    /// An ONNX graph trained elsewhere (scikit-learn, XGBoost, PyTorch), run by tract.
    Onnx,
    /// A network trained by Kairos in candle, its weights a safetensors file (a recommender's
    /// towers): served by the application that trained it, not as a plain deployment.
    Candle,
}

pub use kairos_tensor::Datatype;

/// One tensor a model takes or gives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TensorSpec {
    pub name: String,
    pub datatype: Datatype,
    /// Dimensions; -1 where the size varies (the batch dimension).
    pub shape: Vec<i64>,
}

/// The tensors a model takes and gives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Signature {
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
}

/// How a model did on the held-out splits of its training dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "task", rename_all = "snake_case")]
pub enum Evaluation {
    Binary {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        validation: Option<BinaryMetrics>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        test: Option<BinaryMetrics>,
    },
    Regression {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        validation: Option<RegressionMetrics>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        test: Option<RegressionMetrics>,
    },
}

/// Where a model's training data came from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Lineage {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature_view: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature_view_version: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training_dataset_version: Option<u32>,
    /// The columns the feature tensor holds, in its order (after the transforms).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// What `kairos train` was asked (algorithm, settings, features), so that a retraining
    /// can train a challenger the same way on fresh data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub training: Option<serde_json::Value>,
    /// The frozen model-dependent transforms (their fitted statistics), as the training
    /// dataset recorded them, so serving applies exactly what training did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub transforms: Option<serde_json::Value>,
}

/// A model as registered: everything but its version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    pub name: String,
    pub framework: Framework,
    /// The artifact's file name in the model version's directory (`kairos model register`
    /// takes the artifact's own name when this is left out).
    #[serde(default)]
    pub artifact: String,
    pub signature: Signature,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Evaluation>,
    #[serde(default)]
    pub lineage: Lineage,
}

/// A registered model version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Model {
    #[serde(flatten)]
    pub spec: ModelSpec,
    pub version: u32,
    pub created_at: String,
}

fn is_tensor_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.:/".contains(c))
}

impl ModelSpec {
    /// Reads a definition written as JSON (an object) or TOML.
    pub fn parse(text: &str) -> Result<ModelSpec, DefinitionError> {
        if text.trim_start().starts_with('{') {
            serde_json::from_str(text)
                .map_err(|e| DefinitionError(format!("not a model definition: {e}")))
        } else {
            toml::from_str(text)
                .map_err(|e| DefinitionError(format!("not a model definition: {e}")))
        }
    }

    /// Checks the definition whole; the error names the field and what was expected.
    pub fn validate(&self) -> Result<(), DefinitionError> {
        let bad = |what: String| Err(DefinitionError(what));
        if !kairos_types::schema::is_identifier(&self.name) {
            return bad(format!(
                "name '{}' must be 1-128 characters of letters, digits, '_' or '-', starting with a letter",
                self.name
            ));
        }
        let plain_file = !self.artifact.is_empty()
            && !self.artifact.contains(['/', '\\'])
            && self.artifact != "."
            && self.artifact != "..";
        if !plain_file {
            return bad(format!(
                "artifact '{}' must be a plain file name",
                self.artifact
            ));
        }
        for (side, tensors) in [
            ("inputs", &self.signature.inputs),
            ("outputs", &self.signature.outputs),
        ] {
            if tensors.is_empty() {
                return bad(format!("signature.{side}: at least one tensor is needed"));
            }
            let mut seen = BTreeSet::new();
            for (i, t) in tensors.iter().enumerate() {
                if !is_tensor_name(&t.name) {
                    return bad(format!(
                        "signature.{side}[{i}].name '{}' must be 1-128 characters of letters, digits or _-.:/",
                        t.name
                    ));
                }
                if !seen.insert(&t.name) {
                    return bad(format!("signature.{side}: '{}' appears twice", t.name));
                }
                if t.shape.is_empty() || t.shape.iter().any(|d| *d == 0 || *d < -1) {
                    return bad(format!(
                        "signature.{side}[{i}].shape {:?}: expected dimensions > 0, or -1 for a variable one",
                        t.shape
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ModelSpec {
        serde_json::from_str(
            r#"{
                "name": "fraud",
                "framework": "onnx",
                "artifact": "model.onnx",
                "signature": {
                    "inputs": [{"name": "features", "datatype": "FP32", "shape": [-1, 6]}],
                    "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]}]
                },
                "metrics": {"task": "binary", "test": {
                    "rows": 10, "positives": 2, "roc_auc": 0.9, "pr_auc": 0.7, "log_loss": 0.3,
                    "threshold": 0.5, "precision": 0.5, "recall": 0.5}},
                "lineage": {"feature_view": "fraud_fv", "feature_view_version": 2}
            }"#,
        )
        .unwrap()
    }

    #[test]
    fn a_definition_reads_from_json_and_round_trips() {
        let s = spec();
        s.validate().unwrap();
        assert_eq!(s.signature.inputs[0].datatype, Datatype::Fp32);
        let again: ModelSpec = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(again, s);
    }

    /// A change that spoils a definition.
    type Spoil = fn(&mut ModelSpec);

    #[test]
    fn bad_definitions_are_refused_naming_the_field() {
        let cases: [(Spoil, &str); 5] = [
            (|s| s.name = "9lives".into(), "name '9lives'"),
            (|s| s.artifact = "../x.onnx".into(), "artifact '../x.onnx'"),
            (|s| s.signature.outputs.clear(), "signature.outputs"),
            (
                |s| s.signature.inputs[0].shape = vec![-1, 0],
                "signature.inputs[0].shape",
            ),
            (
                |s| {
                    let t = s.signature.inputs[0].clone();
                    s.signature.inputs.push(t);
                },
                "'features' appears twice",
            ),
        ];
        for (change, expected) in cases {
            let mut s = spec();
            change(&mut s);
            let e = s.validate().unwrap_err().to_string();
            assert!(e.contains(expected), "{e}");
        }
        let unknown = r#"{"name": "m", "framework": "torch", "artifact": "m", "signature": {"inputs": [], "outputs": []}}"#;
        assert!(serde_json::from_str::<ModelSpec>(unknown).is_err());
    }
}
