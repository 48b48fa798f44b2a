//! Why a deployment could not be applied or could not answer.

use kairos_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("{0}")]
    NotFound(String),
    /// The request is wrong; the message names the input and what was expected.
    #[error("{0}")]
    BadRequest(String),
    /// The deployment cannot be applied as defined.
    #[error("invalid deployment: {0}")]
    Invalid(String),
    /// The server cannot answer yet (its deployments are still loading).
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Internal(String),
}

impl DeployError {
    pub fn internal(e: impl std::fmt::Display) -> DeployError {
        DeployError::Internal(e.to_string())
    }

    pub fn kind(&self) -> kairos_store::ErrorKind {
        use kairos_store::ErrorKind;
        match self {
            DeployError::NotFound(_) => ErrorKind::NotFound,
            DeployError::BadRequest(_) | DeployError::Invalid(_) => ErrorKind::BadInput,
            DeployError::Unavailable(_) => ErrorKind::Unavailable,
            DeployError::Store(e) => e.kind(),
            DeployError::Internal(_) => ErrorKind::Internal,
        }
    }
}

impl From<kairos_model::registry::DefinitionError> for DeployError {
    fn from(e: kairos_model::registry::DefinitionError) -> Self {
        DeployError::Invalid(e.0)
    }
}

pub type Result<T, E = DeployError> = std::result::Result<T, E>;
