//! Real-time recommendations: the two-tower retrieval model, the ranking model, the baselines
//! they are measured against, and the offline evaluation on MovieLens.

pub mod baselines;
pub mod data;
pub mod eval;
pub mod metrics;
pub mod movielens;
pub mod ranking;
pub mod two_tower;

/// Why a recommender step failed.
#[derive(Debug, thiserror::Error)]
pub enum RecsysError {
    #[error("{0}")]
    Data(String),
    #[error("model: {0}")]
    Model(String),
    #[error("vector index: {0}")]
    Index(String),
}

impl RecsysError {
    pub(crate) fn index(e: kairos_vector::VectorError) -> RecsysError {
        RecsysError::Index(e.to_string())
    }
}
