//! Kairos feature views: write to feature groups, read from feature views.
//!
//! - [`spec`]: definitions (root group, point-in-time joins, labels, request values, on-demand
//!   features, transforms) and their validation into a [`ViewPlan`].
//! - [`asof`]: the point-in-time join engine (DESIGN invariant 3), sort-merge within a memory
//!   budget, spilling hash partitions to disk.
//! - [`rows`]: what both paths do after the join — on-demand features, column order, and the
//!   frozen model-dependent transforms (DESIGN invariant 4: one implementation).
//! - [`dataset`]: training datasets: splits, Parquet files, statistics.
//! - [`vector`]: online feature vectors assembled from online-store lookups.
//!
//! Nothing here opens a store: the service layer (`kairos-store`) feeds batches in and writes
//! results out, so every piece is testable on plain Arrow data.

pub mod asof;
pub mod dataset;
pub mod rows;
pub mod spec;
pub mod vector;

pub use asof::{AsofJoin, AsofOptions, AsofOutput, AsofStage, RightInput};
pub use dataset::{DatasetWriter, Split, SplitName, TrainingDataset, TrainingDatasetRequest};
pub use rows::TransformSet;
pub use spec::{FeatureView, FeatureViewSpec, JoinOn, JoinPlan, JoinSpec, RootSpec, ViewPlan};
pub use vector::{EntryStatus, StageTimes, VectorBatch};

#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    /// The view definition is invalid; the message names the part and the reason.
    #[error("invalid feature view definition: {0}")]
    Definition(String),
    /// A request (training data options, an online request) is invalid.
    #[error("{0}")]
    Request(String),
    /// The join could not run on its inputs.
    #[error("point-in-time join: {0}")]
    Join(String),
    #[error("{0}")]
    Transform(#[from] kairos_transform::TransformError),
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("{0}")]
    Io(String),
}

pub type Result<T, E = ViewError> = std::result::Result<T, E>;
