//! Recommender routes: apply a recommender definition, its status, recommendations for a user,
//! and interactions posted back. Thin adapters over [`Recommenders`].

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use kairos_recommend::{
    InteractionEvent, RecommendRequest, RecommendResponse, RecommenderSpec, RecommenderStatus,
    Recommenders,
};
use kairos_store::InsertAck;

use crate::error::{ApiError, ErrorBody};
use crate::request::{ApiResult, parse_json};

/// Apply a recommender: its models are loaded, its groups and rules checked and the
/// interaction history read, then it is swapped in whole.
#[utoipa::path(post, path = "/v1/recommenders", request_body = RecommenderSpec,
    responses((status = 201, body = RecommenderStatus), (status = 400, body = ErrorBody)))]
pub async fn apply(
    State(recommenders): State<Recommenders>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<RecommenderStatus>)> {
    let spec: RecommenderSpec = parse_json(&body)?;
    Ok((StatusCode::CREATED, Json(recommenders.apply(spec).await?)))
}

/// Every live recommender.
#[utoipa::path(get, path = "/v1/recommenders", responses((status = 200, body = [RecommenderStatus])))]
pub async fn list(State(recommenders): State<Recommenders>) -> Json<Vec<RecommenderStatus>> {
    Json(recommenders.list())
}

/// A recommender's definition, models and history position.
#[utoipa::path(get, path = "/v1/recommenders/{name}", params(("name" = String, Path)),
    responses((status = 200, body = RecommenderStatus), (status = 404, body = ErrorBody)))]
pub async fn status(
    State(recommenders): State<Recommenders>,
    Path(name): Path<String>,
) -> ApiResult<Json<RecommenderStatus>> {
    Ok(Json(recommenders.status(&name)?))
}

/// The top k items for a user: retrieval, filter rules, ranking, diversity.
#[utoipa::path(post, path = "/v1/recommenders/{name}/recommend", params(("name" = String, Path)),
    request_body = RecommendRequest,
    responses((status = 200, body = RecommendResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn recommend(
    State(recommenders): State<Recommenders>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Json<RecommendResponse>> {
    let request: RecommendRequest = parse_json(&body)?;
    Ok(Json(recommenders.recommend(&name, &request).await?))
}

/// Interactions (one object or a list) appended to the recommender's interactions group; they
/// take effect in its "already interacted" rule and the user's recent history once its log
/// follower reads them.
#[utoipa::path(post, path = "/v1/recommenders/{name}/interactions", params(("name" = String, Path)),
    request_body = Object,
    responses((status = 200, body = InsertAck), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn interact(
    State(recommenders): State<Recommenders>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Json<InsertAck>> {
    let value: serde_json::Value = parse_json(&body)?;
    let events: Vec<InteractionEvent> = match value {
        serde_json::Value::Array(items) => items
            .into_iter()
            .map(|v| match v {
                serde_json::Value::Object(o) => Ok(o),
                other => Err(ApiError::bad_request(format!(
                    "an interaction is an object, got {other}"
                ))),
            })
            .collect::<Result<_, _>>()?,
        serde_json::Value::Object(o) => vec![o],
        other => {
            return Err(ApiError::bad_request(format!(
                "expected an interaction object or a list of them, got {other}"
            )));
        }
    };
    Ok(Json(recommenders.interact(&name, events).await?))
}
