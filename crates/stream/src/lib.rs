//! The Kairos streaming engine: pipeline definitions, event-time windows, aggregations,
//! watermarks and lateness — pure logic, no I/O.
//!
//! [`spec`] checks what a user writes into a [`spec::Plan`]; [`operator::WindowOperator`] folds
//! batches of events into keyed windows and says which rows to write and which state changed
//! since the last checkpoint; [`checkpoint`] is the protocol that makes a restored run write
//! exactly what a straight run writes. The runtime (`kairos-pipeline`) does the I/O around it.

pub mod agg;
pub mod checkpoint;
pub mod operator;
pub mod spec;

pub use agg::AggKind;
pub use operator::{Emission, OperatorCounts, Refused, StateDelta, WindowOperator};
pub use spec::{Duration, PipelineSpec, Plan, SourceSpec, WindowKind};

/// Errors of the engine.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// A definition is wrong; the message names the part and what was expected.
    #[error("{0}")]
    Definition(String),
    /// A checkpoint does not fit the pipeline it is restored into.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl StreamError {
    pub(crate) fn internal(e: impl std::fmt::Display) -> StreamError {
        StreamError::Internal(e.to_string())
    }
}

pub type Result<T, E = StreamError> = std::result::Result<T, E>;
