//! `/v1/auth/keys`: API keys, created, listed and revoked by an admin. Thin adapters over
//! [`kairos_auth::Keys`].

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use kairos_auth::{ApiKey, IssuedKey, KeySpec};

use crate::access::Access;
use crate::error::{ApiError, ErrorBody};
use crate::request::{ApiResult, parse_json};

/// Issue an API key. Its `token` is in this answer only: the server keeps a digest of it.
#[utoipa::path(post, path = "/v1/auth/keys", request_body = KeySpec,
    responses((status = 201, body = IssuedKey), (status = 400, body = ErrorBody)))]
pub async fn create(
    State(access): State<Arc<Access>>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<IssuedKey>)> {
    let spec: KeySpec = parse_json(&body)?;
    let issued = access.keys.create(access.store.catalog(), spec)?;
    tracing::info!(key = %issued.key.id, name = %issued.key.spec.name, "API key created");
    Ok((StatusCode::CREATED, Json(issued)))
}

/// Every API key, revoked ones too, without their secrets.
#[utoipa::path(get, path = "/v1/auth/keys", responses((status = 200, body = [ApiKey])))]
pub async fn list(State(access): State<Arc<Access>>) -> Json<Vec<ApiKey>> {
    Json(access.keys.list())
}

/// Revoke an API key for good; it stays listed with its revocation time.
#[utoipa::path(delete, path = "/v1/auth/keys/{id}", params(("id" = String, Path)),
    responses((status = 200, body = ApiKey), (status = 404, body = ErrorBody)))]
pub async fn revoke(
    State(access): State<Arc<Access>>,
    Path(id): Path<String>,
) -> ApiResult<Json<ApiKey>> {
    let key = access.keys.revoke(access.store.catalog(), &id)?;
    tracing::info!(key = %key.id, "API key revoked");
    Ok(Json(key))
}

impl From<kairos_auth::AuthError> for ApiError {
    fn from(e: kairos_auth::AuthError) -> Self {
        use kairos_auth::AuthError;
        match e {
            AuthError::Invalid(m) => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_definition", m)
            }
            AuthError::NotFound(m) => ApiError::new(StatusCode::NOT_FOUND, "not_found", m),
            e @ (AuthError::Catalog(_) | AuthError::Corrupt { .. }) => {
                kairos_store::StoreError::Internal(e.to_string()).into()
            }
        }
    }
}
