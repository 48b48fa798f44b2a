//! The store's errors, classified by whose fault they are. The HTTP layer maps each class to a
//! status in one place.

use kairos_types::{IngestError, SpecError};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The caller named something that does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The caller's definition is invalid.
    #[error(transparent)]
    InvalidSpec(#[from] SpecError),
    /// The caller's feature-view definition is invalid; the message names the part.
    #[error("invalid feature view definition: {0}")]
    InvalidView(String),
    /// The caller's batch was refused; nothing of it was written.
    #[error("batch refused, nothing was written: {0}")]
    BadBatch(#[from] IngestError),
    /// Any other mistake of the caller's.
    #[error("{0}")]
    BadRequest(String),
    /// The request conflicts with the state of the store.
    #[error("{0}")]
    Conflict(String),
    /// The store could not finish in time; retrying may succeed.
    #[error("{0}")]
    Unavailable(String),
    /// The system's fault. The message is for logs, not for clients.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Whose fault an error is and what the caller can do about it: the one classification every
/// transport maps once (HTTP statuses, gRPC codes, the V2 error body).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The caller's input is wrong; the message says which part and what was expected.
    BadInput,
    NotFound,
    /// The request conflicts with the state (a name taken, a pipeline already running).
    Conflict,
    /// Who the caller is, or what they may do, does not allow it.
    Unauthorised,
    /// Not now: retrying may succeed (loading, an engine out of reach, at capacity).
    Unavailable,
    /// The system's fault: the cause is logged, never sent.
    Internal,
}

impl StoreError {
    pub fn internal(e: impl std::fmt::Display) -> Self {
        StoreError::Internal(e.to_string())
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            StoreError::NotFound(_) => ErrorKind::NotFound,
            StoreError::InvalidSpec(_)
            | StoreError::InvalidView(_)
            | StoreError::BadBatch(_)
            | StoreError::BadRequest(_) => ErrorKind::BadInput,
            StoreError::Conflict(_) => ErrorKind::Conflict,
            StoreError::Unavailable(_) => ErrorKind::Unavailable,
            StoreError::Internal(_) => ErrorKind::Internal,
        }
    }
}

impl From<kairos_stream::StreamError> for StoreError {
    fn from(e: kairos_stream::StreamError) -> Self {
        match e {
            kairos_stream::StreamError::Definition(m) => {
                StoreError::BadRequest(format!("invalid pipeline definition: {m}"))
            }
            other => StoreError::Internal(other.to_string()),
        }
    }
}

impl From<kairos_catalog::CatalogError> for StoreError {
    fn from(e: kairos_catalog::CatalogError) -> Self {
        match e {
            // Names the engine: "catalog unavailable (postgresql): …".
            kairos_catalog::CatalogError::Unavailable { .. } => {
                StoreError::Unavailable(e.to_string())
            }
            other => StoreError::internal(other),
        }
    }
}

impl From<kairos_storage::StorageError> for StoreError {
    fn from(e: kairos_storage::StorageError) -> Self {
        match e {
            kairos_storage::StorageError::BadUrl(_) => StoreError::BadRequest(e.to_string()),
            // Names the engine: "S3 s3://bucket/prefix: …".
            _ => StoreError::Unavailable(e.to_string()),
        }
    }
}

impl From<kairos_log::LogError> for StoreError {
    fn from(e: kairos_log::LogError) -> Self {
        match e {
            kairos_log::LogError::TooLarge(..) => StoreError::BadRequest(e.to_string()),
            // The group's log closes when the group is deleted or the server stops.
            kairos_log::LogError::Closed => StoreError::Conflict(
                "the feature group is being deleted or the server is stopping".into(),
            ),
            // A full disk or a data dir taken away from the server: the operator's to fix,
            // and the batch was not written; said as such, not as an internal error.
            kairos_log::LogError::Io { source, .. } if storage_refused(&source) => {
                StoreError::Unavailable(format!(
                    "the data dir takes no more writes ({source}); nothing of the batch was written"
                ))
            }
            e => StoreError::internal(e),
        }
    }
}

/// Whether an I/O error says the storage itself refuses writes, whatever is written.
fn storage_refused(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        StorageFull | QuotaExceeded | ReadOnlyFilesystem | PermissionDenied
    )
}

impl From<kairos_online::OnlineError> for StoreError {
    fn from(e: kairos_online::OnlineError) -> Self {
        StoreError::internal(e)
    }
}

impl From<kairos_view::ViewError> for StoreError {
    fn from(e: kairos_view::ViewError) -> Self {
        use kairos_transform::TransformError;
        use kairos_view::ViewError;
        match e {
            ViewError::Definition(m) | ViewError::Transform(TransformError::Definition(m)) => {
                StoreError::InvalidView(m)
            }
            ViewError::Request(m) | ViewError::Transform(TransformError::Value(m)) => {
                StoreError::BadRequest(m)
            }
            e => StoreError::internal(e),
        }
    }
}

impl From<kairos_transform::TransformError> for StoreError {
    fn from(e: kairos_transform::TransformError) -> Self {
        kairos_view::ViewError::from(e).into()
    }
}

impl From<kairos_offline::OfflineError> for StoreError {
    fn from(e: kairos_offline::OfflineError) -> Self {
        StoreError::internal(e)
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
