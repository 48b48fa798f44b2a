//! Feature-view routes: definitions, training datasets and online feature vectors. Thin
//! adapters over [`FeatureStore`], like every handler.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use kairos_store::{FeatureStore, Spine, VectorAnswer, ViewStatus};
use kairos_types::Format;
use kairos_types::export::BatchEncoder;
use kairos_view::{
    FeatureView, FeatureViewSpec, Split, SplitName, TrainingDataset, TrainingDatasetRequest,
};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use crate::error::{ApiError, ApiQuery, ErrorBody};
use crate::request::{ApiResult, parse_json, time_param};

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ViewVersionQuery {
    /// The feature-view version; the latest when absent.
    version: Option<u32>,
}

/// Create a feature view, or the next version of an existing name. The definition is checked
/// against the feature groups it reads and stored with their versions pinned.
#[utoipa::path(post, path = "/v1/feature-views", request_body = FeatureViewSpec,
    responses((status = 201, body = FeatureView), (status = 400, body = ErrorBody)))]
pub async fn apply_view(
    State(store): State<FeatureStore>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<FeatureView>)> {
    let spec: FeatureViewSpec = parse_json(&body)?;
    Ok((StatusCode::CREATED, Json(store.apply_view(spec).await?)))
}

/// List every version of every feature view.
#[utoipa::path(get, path = "/v1/feature-views", responses((status = 200, body = [FeatureView])))]
pub async fn list_views(State(store): State<FeatureStore>) -> ApiResult<Json<Vec<FeatureView>>> {
    Ok(Json(store.list_views()?))
}

/// Describe a feature view: its definition, vector columns and training datasets.
#[utoipa::path(get, path = "/v1/feature-views/{name}", params(("name" = String, Path), ViewVersionQuery),
    responses((status = 200, body = ViewStatus), (status = 404, body = ErrorBody)))]
pub async fn describe_view(
    State(store): State<FeatureStore>,
    Path(name): Path<String>,
    ApiQuery(q): ApiQuery<ViewVersionQuery>,
) -> ApiResult<Json<ViewStatus>> {
    Ok(Json(store.describe_view(&name, q.version)?))
}

/// Delete one version of a feature view with its training datasets.
#[utoipa::path(delete, path = "/v1/feature-views/{name}", params(("name" = String, Path), ViewVersionQuery),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delete_view(
    State(store): State<FeatureStore>,
    Path(name): Path<String>,
    ApiQuery(q): ApiQuery<ViewVersionQuery>,
) -> ApiResult<StatusCode> {
    let version = q.version.ok_or_else(|| {
        ApiError::bad_request("the query parameter 'version' is required to delete")
    })?;
    store.delete_view(&name, version).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A spine sent inline: CSV with a header or JSON lines.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SpineBody {
    /// `csv` or `jsonl`.
    pub format: String,
    pub data: String,
}

/// What to materialise.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TrainingDataBody {
    /// Root event time at or after (RFC 3339).
    pub start: Option<String>,
    /// Root event time before.
    pub end: Option<String>,
    #[serde(default)]
    pub split: Split,
    /// Joined rows strictly older than the root row.
    #[serde(default)]
    pub strict: bool,
    /// Only joined rows ingested by the root row's time.
    #[serde(default)]
    pub as_known_at: bool,
    #[serde(default)]
    pub description: String,
    /// Rows to build training data for, instead of the root group's.
    pub spine: Option<SpineBody>,
}

/// Materialise a point-in-time correct training dataset (Parquet per split, statistics and
/// fitted transforms in the catalog).
#[utoipa::path(post, path = "/v1/feature-views/{name}/training-datasets", params(("name" = String, Path), ViewVersionQuery),
    request_body = TrainingDataBody,
    responses((status = 201, body = TrainingDataset), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn create_training_dataset(
    State(store): State<FeatureStore>,
    Path(name): Path<String>,
    ApiQuery(q): ApiQuery<ViewVersionQuery>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<TrainingDataset>)> {
    let body: TrainingDataBody = parse_json(&body)?;
    let spine = match body.spine {
        None => None,
        Some(s) => {
            let format = Format::from_name(&s.format)
                .filter(|f| matches!(f, Format::Csv | Format::JsonLines))
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "spine.format: expected csv or jsonl, got '{}'",
                        s.format
                    ))
                })?;
            Some(Spine {
                name: format!("inline.{}", s.format),
                format,
                bytes: Bytes::from(s.data),
            })
        }
    };
    let request = TrainingDatasetRequest {
        start: time_param("start", &body.start)?,
        end: time_param("end", &body.end)?,
        split: body.split,
        strict: body.strict,
        as_known_at: body.as_known_at,
        description: body.description,
    };
    let td = store
        .create_training_dataset(&name, q.version, request, spine, None)
        .await?;
    Ok((StatusCode::CREATED, Json(td)))
}

/// A training dataset's metadata: time range, split, row counts, log offsets, statistics and
/// fitted transforms.
#[utoipa::path(get, path = "/v1/feature-views/{name}/training-datasets/{td}", params(("name" = String, Path),
    ("td" = u32, Path, description = "training dataset version"), ViewVersionQuery),
    responses((status = 200, body = TrainingDataset), (status = 404, body = ErrorBody)))]
pub async fn get_training_dataset(
    State(store): State<FeatureStore>,
    Path((name, td)): Path<(String, u32)>,
    ApiQuery(q): ApiQuery<ViewVersionQuery>,
) -> ApiResult<Json<TrainingDataset>> {
    Ok(Json(store.training_dataset(&name, q.version, Some(td))?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DataQuery {
    version: Option<u32>,
    /// train (default), validation or test.
    split: Option<String>,
    /// Apply the frozen model-dependent transforms (what a model trains on).
    #[serde(default)]
    transformed: bool,
    /// jsonl (default), csv, arrow or parquet.
    format: Option<String>,
}

/// Read one split of a training dataset.
#[utoipa::path(get, path = "/v1/feature-views/{name}/training-datasets/{td}/data", params(("name" = String, Path),
    ("td" = u32, Path, description = "training dataset version"), DataQuery),
    responses((status = 200, description = "rows in the asked format"), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn read_training_dataset(
    State(store): State<FeatureStore>,
    Path((name, td)): Path<(String, u32)>,
    ApiQuery(q): ApiQuery<DataQuery>,
) -> ApiResult<Response> {
    let split = match q.split.as_deref() {
        None => SplitName::Train,
        Some(s) => SplitName::parse(s).ok_or_else(|| {
            ApiError::bad_request(format!(
                "split: expected train, validation or test, got '{s}'"
            ))
        })?,
    };
    let format = match &q.format {
        Some(f) => Format::from_name(f)
            .ok_or_else(|| ApiError::bad_request(format!("unknown format '{f}'")))?,
        None => Format::JsonLines,
    };
    let dataset = store.training_dataset(&name, q.version, Some(td))?;
    let batches = store
        .read_training_dataset(&dataset, split, q.transformed)
        .await?;
    let internal =
        |e: arrow::error::ArrowError| ApiError::from(kairos_store::StoreError::internal(e));
    // An empty split still answers its columns (an Arrow stream or a CSV header).
    let schema = batches
        .first()
        .map_or_else(|| std::sync::Arc::new(dataset.schema()), |b| b.schema());
    let mut encoder = BatchEncoder::new(format, &schema).map_err(internal)?;
    let mut out = Vec::new();
    for b in &batches {
        out.extend_from_slice(&encoder.encode(b).map_err(internal)?);
    }
    out.extend_from_slice(&encoder.finish().map_err(internal)?);
    Ok(([(header::CONTENT_TYPE, format.content_type())], out).into_response())
}

/// An online vector request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VectorRequest {
    /// Per entity: an object of the root's key columns, an array in key order, or a bare value
    /// for single-column keys.
    #[schema(value_type = Vec<Object>)]
    pub entries: Vec<serde_json::Value>,
    /// Request-time values (and optionally the event time): one object for all entries, or a
    /// list with one object per entry.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub request: Option<serde_json::Value>,
    /// Apply the transforms frozen with this training dataset version.
    pub training_dataset_version: Option<u32>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct VectorsQuery {
    /// The feature-view version; the latest when absent.
    version: Option<u32>,
    /// json (default), or arrow: one Arrow IPC stream, the entries' statuses in its schema's
    /// metadata (`kairos.vectors`).
    format: Option<String>,
}

/// Get online feature vectors: one multi-get per feature group, on-demand features computed,
/// frozen transforms applied; a missing entity gets a status, not an error.
#[utoipa::path(post, path = "/v1/feature-views/{name}/vectors", params(("name" = String, Path), VectorsQuery),
    request_body = VectorRequest,
    responses((status = 200, body = VectorAnswer), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_vectors(
    State(store): State<FeatureStore>,
    Path(name): Path<String>,
    ApiQuery(q): ApiQuery<VectorsQuery>,
    body: Bytes,
) -> ApiResult<Response> {
    let arrow = match q.format.as_deref() {
        None | Some("json") => false,
        Some("arrow") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "format: expected json or arrow, got '{other}'"
            )));
        }
    };
    let request: VectorRequest = parse_json(&body)?;
    let values = kairos_store::request_objects(request.request)?;
    let vectors = store
        .online_vectors(
            &name,
            q.version,
            &request.entries,
            &values,
            request.training_dataset_version,
        )
        .await?;
    Ok(if arrow {
        let content_type = Format::ArrowIpc.content_type();
        ([(header::CONTENT_TYPE, content_type)], vectors.to_ipc()?).into_response()
    } else {
        Json(vectors.to_answer()).into_response()
    })
}
