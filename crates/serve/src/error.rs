//! The one place store errors become HTTP responses: `{"error": {"code", "message", "details"}}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kairos_deploy::DeployError;
use kairos_store::StoreError;
use serde::Serialize;
use utoipa::ToSchema;

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable, machine-readable code, e.g. `bad_batch`, `not_found`.
    pub code: &'static str,
    pub message: String,
    /// For refused batches: `column`, `row` (1-based) and `expected`.
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
}

/// An error on its way to a client.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    details: serde_json::Value,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: serde_json::Value::Null,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(m) => ApiError::new(StatusCode::NOT_FOUND, "not_found", m),
            StoreError::InvalidSpec(e) => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_definition", e.to_string())
            }
            e @ StoreError::InvalidView(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_definition", e.to_string())
            }
            StoreError::BadBatch(e) => ApiError {
                status: StatusCode::BAD_REQUEST,
                code: "bad_batch",
                message: format!("batch refused, nothing was written: {e}"),
                details: serde_json::json!({ "column": e.column, "row": e.row, "expected": e.expected }),
            },
            StoreError::BadRequest(m) => ApiError::bad_request(m),
            StoreError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            StoreError::Unavailable(m) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", m)
            }
            StoreError::Internal(cause) => {
                // The cause is for operators; clients get no internals.
                tracing::error!(%cause, "internal error");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error; see the server log",
                )
            }
        }
    }
}

impl From<DeployError> for ApiError {
    fn from(e: DeployError) -> Self {
        match e {
            DeployError::NotFound(m) => ApiError::new(StatusCode::NOT_FOUND, "not_found", m),
            DeployError::BadRequest(m) => ApiError::bad_request(m),
            e @ DeployError::Invalid(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_definition", e.to_string())
            }
            DeployError::Unavailable(m) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", m)
            }
            DeployError::Store(e) => e.into(),
            DeployError::Internal(m) => StoreError::Internal(m).into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
                details: self.details,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

/// `Query`, with a refused query string answered in the JSON error shape rather than axum's
/// plain-text rejection.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequestParts<S>
    for ApiQuery<T>
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(q)| ApiQuery(q))
            .map_err(|rejection| ApiError::bad_request(rejection.body_text()))
    }
}
