use std::path::PathBuf;

/// Why an index refused a request or could not be read.
#[derive(Debug, thiserror::Error)]
pub enum VectorError {
    #[error("vector {what} has {got} components, the index expects {expected}")]
    Dimension {
        what: String,
        expected: usize,
        got: usize,
    },
    #[error("vector {what} has a non-finite component at position {position}")]
    NotFinite { what: String, position: usize },
    #[error("vector {what} is zero, which has no direction for the cosine metric")]
    Zero { what: String },
    #[error("key {0} is not in the index")]
    UnknownKey(u64),
    #[error("{0}")]
    Config(String),
    #[error("index file {path} is unreadable: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("index file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl VectorError {
    /// The caller's mistake, as opposed to the store's.
    pub fn is_bad_request(&self) -> bool {
        matches!(
            self,
            VectorError::Dimension { .. }
                | VectorError::NotFinite { .. }
                | VectorError::Zero { .. }
                | VectorError::UnknownKey(_)
                | VectorError::Config(_)
        )
    }
}
