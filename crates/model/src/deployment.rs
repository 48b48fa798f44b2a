//! What the registry holds about a deployment: which model version answers under a name, with
//! which predictor settings and latency objective. The feature view, its version and the
//! training dataset whose frozen transforms apply come from the model's lineage, so a
//! deployment cannot serve a model features it was not trained on.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::registry::DefinitionError;

/// A deployment as applied: everything but its revision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeploymentSpec {
    pub name: String,
    /// The registered model served.
    pub model: String,
    /// The model version; applying without one pins the latest version at that moment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_version: Option<u32>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// A binary classifier's label is 1 when the probability is at least this.
    #[serde(default = "default_threshold")]
    pub threshold: f64,
    #[serde(default)]
    pub slo: Slo,
    /// Whether every prediction is appended to the deployment's inference-log feature group.
    #[serde(default = "default_true")]
    pub inference_log: bool,
}

/// The latency objective: the given quantile of request latency within `latency_ms`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Slo {
    /// The quantile, e.g. 0.99 for p99.
    #[serde(default = "default_quantile")]
    pub quantile: f64,
    #[serde(default = "default_latency_ms")]
    pub latency_ms: f64,
}

impl Default for Slo {
    fn default() -> Self {
        Slo {
            quantile: default_quantile(),
            latency_ms: default_latency_ms(),
        }
    }
}

fn default_threshold() -> f64 {
    0.5
}

fn default_quantile() -> f64 {
    0.99
}

fn default_latency_ms() -> f64 {
    5.0
}

fn default_true() -> bool {
    true
}

/// An applied deployment: its spec (with the model version pinned) and its revision, counted
/// per name; the latest revision is the live one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Deployment {
    #[serde(flatten)]
    pub spec: DeploymentSpec,
    pub revision: u32,
    pub created_at: String,
}

impl DeploymentSpec {
    /// Reads a definition written as JSON (an object) or TOML.
    pub fn parse(text: &str) -> Result<DeploymentSpec, DefinitionError> {
        let not = |e: String| DefinitionError(format!("not a deployment definition: {e}"));
        if text.trim_start().starts_with('{') {
            serde_json::from_str(text).map_err(|e| not(e.to_string()))
        } else {
            toml::from_str(text).map_err(|e| not(e.to_string()))
        }
    }

    /// Checks the definition whole; the error names the field and what was expected.
    pub fn validate(&self) -> Result<(), DefinitionError> {
        let bad = |what: String| Err(DefinitionError(what));
        for (field, name) in [("name", &self.name), ("model", &self.model)] {
            if !kairos_types::schema::is_identifier(name) {
                return bad(format!(
                    "{field} '{name}' must be 1-128 characters of letters, digits, '_' or '-', starting with a letter"
                ));
            }
        }
        if !(0.0..=1.0).contains(&self.threshold) {
            return bad(format!(
                "threshold {}: expected a probability in [0, 1]",
                self.threshold
            ));
        }
        if !(self.slo.quantile > 0.0 && self.slo.quantile < 1.0) {
            return bad(format!(
                "slo.quantile {}: expected a quantile in (0, 1), e.g. 0.99",
                self.slo.quantile
            ));
        }
        if !(self.slo.latency_ms.is_finite() && self.slo.latency_ms > 0.0) {
            return bad(format!(
                "slo.latency_ms {}: expected a positive number of milliseconds",
                self.slo.latency_ms
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minimal_definition_takes_the_defaults() {
        let spec: DeploymentSpec =
            toml::from_str("name = \"fraud\"\nmodel = \"fraud_gbdt\"").unwrap();
        spec.validate().unwrap();
        assert_eq!(spec.threshold, 0.5);
        assert_eq!(spec.slo, Slo::default());
        assert!(spec.inference_log);
        assert_eq!(spec.model_version, None);
    }

    #[test]
    fn bad_definitions_name_the_field() {
        let cases = [
            ("name = \"9\"\nmodel = \"m\"", "name '9'"),
            (
                "name = \"d\"\nmodel = \"m\"\nthreshold = 2.0",
                "threshold 2",
            ),
            (
                "name = \"d\"\nmodel = \"m\"\n[slo]\nquantile = 1.0",
                "slo.quantile",
            ),
            (
                "name = \"d\"\nmodel = \"m\"\n[slo]\nlatency_ms = 0",
                "slo.latency_ms",
            ),
        ];
        for (text, expected) in cases {
            let spec: DeploymentSpec = toml::from_str(text).unwrap();
            let e = spec.validate().unwrap_err().to_string();
            assert!(e.contains(expected), "{text}: {e}");
        }
        assert!(
            toml::from_str::<DeploymentSpec>("name = \"d\"\nmodel = \"m\"\nreplicas = 3").is_err()
        );
    }
}
