//! Kairos transformations (DESIGN invariant 4: no training/serving skew).
//!
//! Every transformation here is one implementation over Arrow arrays. Training runs it on the
//! columns of a whole training dataset; online serving runs the very same code on a batch of
//! one row per requested entity. Nothing has a scalar twin that could drift from it.
//!
//! - [`expr`]: a small arithmetic expression language (`amount / avg_amount_1h`).
//! - [`on_demand`]: features computed at request time from request values and stored
//!   features (haversine distance, seconds since, hour of day, log1p, bucketize, expressions,
//!   user-registered Rust functions through a [`FunctionRegistry`], and Python functions a
//!   view stores with its version, run by the process's [`PythonHost`]).
//! - [`python_workers`]: the [`PythonHost`] of a process that does not run Python itself (a
//!   server): a pool of Python worker processes fed Arrow IPC.
//! - [`stats`]: per-feature statistics of a training split.
//! - [`model`]: model-dependent transforms (scalers, encoders) fitted on those statistics and
//!   frozen with the training dataset.

pub mod expr;
pub mod model;
pub mod on_demand;
pub mod python_workers;
pub mod stats;

pub use expr::Expr;
pub use model::{FittedTransform, TransformKind, TransformSpec, UnknownCategory};
pub use on_demand::{
    FunctionRegistry, OnDemand, OnDemandSpec, PythonHost, PythonUdf, UdfMode, UserFn, UserFunction,
};
pub use python_workers::{PythonWorkers, PythonWorkersConfig};
pub use stats::{CategoricalStats, FeatureStatistics, NumericStats, StatisticsBuilder};

/// Why a transformation could not be defined or applied.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TransformError {
    /// The definition is wrong: unknown function, wrong inputs, a parse error.
    #[error("{0}")]
    Definition(String),
    /// A value could not be transformed (an unknown category under the `error` rule).
    #[error("{0}")]
    Value(String),
}

pub type Result<T, E = TransformError> = std::result::Result<T, E>;

pub(crate) fn definition<T>(message: impl Into<String>) -> Result<T> {
    Err(TransformError::Definition(message.into()))
}
