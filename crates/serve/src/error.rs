//! The one place store errors become HTTP responses: `{"error": {"code", "message", "details"}}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kairos_deploy::DeployError;
use kairos_store::{ErrorKind, StoreError};
use serde::Serialize;
use utoipa::ToSchema;

/// The HTTP status of each kind of error: the one mapping REST and the V2 protocol share.
pub(crate) fn http_status(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::BadInput => StatusCode::BAD_REQUEST,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::Unauthorised => StatusCode::FORBIDDEN,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The gRPC code of each kind of error.
pub(crate) fn grpc_code(kind: ErrorKind) -> tonic::Code {
    match kind {
        ErrorKind::BadInput => tonic::Code::InvalidArgument,
        ErrorKind::NotFound => tonic::Code::NotFound,
        ErrorKind::Conflict => tonic::Code::Aborted,
        ErrorKind::Unauthorised => tonic::Code::PermissionDenied,
        ErrorKind::Unavailable => tonic::Code::Unavailable,
        ErrorKind::Internal => tonic::Code::Internal,
    }
}

/// What a client is told of an error: its message, unless the error is internal; then the
/// cause goes to the log under an incident id, and the client gets only the id.
pub(crate) fn client_message(kind: ErrorKind, cause: &dyn std::fmt::Display) -> String {
    if kind != ErrorKind::Internal {
        return cause.to_string();
    }
    let incident = incident_id();
    tracing::error!(%incident, %cause, "internal error");
    format!("internal error; the server log has its cause under incident {incident}")
}

/// An id unique within the process and unlikely to repeat across restarts.
pub(crate) fn incident_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static START: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let start = *START.get_or_init(|| chrono::Utc::now().timestamp_millis() as u64);
    format!("{start:x}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

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
            StoreError::BadBatch(e) => {
                let details =
                    serde_json::json!({ "column": e.column, "row": e.row, "expected": e.expected });
                ApiError {
                    status: StatusCode::BAD_REQUEST,
                    code: "bad_batch",
                    message: StoreError::BadBatch(e).to_string(),
                    details,
                }
            }
            StoreError::BadRequest(m) => ApiError::bad_request(m),
            StoreError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            StoreError::Unavailable(m) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", m)
            }
            // The cause is for operators; clients get no internals.
            StoreError::Internal(cause) => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                client_message(ErrorKind::Internal, &cause),
            ),
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

/// A handler that panics answers 500 with an incident id, and the connection and the process
/// go on. (Each panic is a bug to fix; this keeps it from costing more than its request.)
pub(crate) async fn catch_panic(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use futures::FutureExt;
    match std::panic::AssertUnwindSafe(next.run(request))
        .catch_unwind()
        .await
    {
        Ok(response) => response,
        Err(panic) => {
            let what = kairos_types::panic::message(&*panic);
            metrics::counter!(crate::telemetry::PANICS).increment(1);
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                client_message(ErrorKind::Internal, &format!("handler panicked: {what}")),
            )
            .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use tower::ServiceExt;

    #[tokio::test]
    async fn a_panicking_handler_answers_500_without_its_cause() {
        async fn boom() -> &'static str {
            panic!("secret detail")
        }
        let app = axum::Router::new()
            .route("/boom", get(boom))
            .layer(axum::middleware::from_fn(catch_panic));
        let request = axum::http::Request::get("/boom")
            .body(axum::body::Body::empty())
            .unwrap();
        let response = app.oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&body);
        assert!(text.contains("incident"), "{text}");
        assert!(!text.contains("secret detail"), "{text}");
    }
}
