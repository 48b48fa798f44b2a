//! Kairos models: what the registry holds about a model, how models are trained, and how they
//! are scored.
//!
//! [`registry`] defines what the registry holds about a model version. [`metrics`] evaluates predictions against labels the way scikit-learn does (its values are
//! the reference of the tests), so a model's recorded metrics mean what a data scientist
//! expects.

pub mod artifacts;
pub mod deployment;
pub mod gbdt;
pub mod logistic;
pub mod metrics;
pub mod onnx;
pub mod predictor;
pub mod registry;
pub mod train;

pub use artifacts::Artifacts;
pub use deployment::{Deployment, DeploymentSpec, Slo};
pub use metrics::{BinaryMetrics, MetricsError, RegressionMetrics};
pub use registry::{
    Datatype, Evaluation, Framework, Lineage, Model, ModelSpec, Signature, TensorSpec,
};
