//! What every route module shares to read a request: the result type, JSON bodies and time
//! parameters.

use axum::body::Bytes;
use kairos_types::ingest::parse_timestamp;

use crate::error::ApiError;

pub(crate) type ApiResult<T> = Result<T, ApiError>;

pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(body: &Bytes) -> ApiResult<T> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

pub(crate) fn time_param(name: &str, value: &Option<String>) -> ApiResult<Option<i64>> {
    value
        .as_deref()
        .map(|v| {
            parse_timestamp(v).map_err(|e| ApiError::bad_request(format!("{name}: {e}, got '{v}'")))
        })
        .transpose()
}
