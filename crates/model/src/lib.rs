//! Kairos models: what the registry holds about a model, how models are trained, and how they
//! are scored.
//!
//! [`metrics`] evaluates predictions against labels the way scikit-learn does (its values are
//! the reference of the tests), so a model's recorded metrics mean what a data scientist
//! expects.

pub mod metrics;

pub use metrics::{BinaryMetrics, MetricsError, RegressionMetrics};
