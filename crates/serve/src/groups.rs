//! `/v1/feature-groups`: definitions, inserts, online and offline reads, nearest neighbours,
//! checks and compaction. Thin adapters over [`FeatureStore`].

use std::collections::HashMap;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kairos_store::{
    CheckReport, FeatureStore, GroupStatus, InsertAck, InsertOptions, NearestQuery, OfflineFilter,
    OnlineResponse, SearchPath,
};
use kairos_types::export::BatchEncoder;
use kairos_types::{FeatureGroup, FeatureGroupSpec, Format};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::{ApiError, ApiQuery, ErrorBody};
use crate::request::{ApiResult, parse_json, time_param};

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct VersionQuery {
    /// The feature-group version; the latest when absent.
    version: Option<u32>,
}

/// Create a feature group, or the next version of an existing name.
#[utoipa::path(post, path = "/v1/feature-groups", request_body = FeatureGroupSpec,
    responses((status = 201, body = FeatureGroup), (status = 400, body = ErrorBody)))]
pub async fn create_group(
    State(store): State<FeatureStore>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<FeatureGroup>)> {
    let spec: FeatureGroupSpec = parse_json(&body)?;
    Ok((StatusCode::CREATED, Json(store.create_group(spec).await?)))
}

/// List every version of every feature group.
#[utoipa::path(get, path = "/v1/feature-groups", responses((status = 200, body = [FeatureGroup])))]
pub async fn list_groups(State(store): State<FeatureStore>) -> ApiResult<Json<Vec<FeatureGroup>>> {
    Ok(Json(store.list_groups()?))
}

/// Describe a feature group with its log and materialiser positions.
#[utoipa::path(get, path = "/v1/feature-groups/{name}", params(("name" = String, Path), VersionQuery),
    responses((status = 200, body = GroupStatus), (status = 404, body = ErrorBody)))]
pub async fn describe_group(
    State(store): State<FeatureStore>,
    Path(name): Path<String>,
    ApiQuery(q): ApiQuery<VersionQuery>,
) -> ApiResult<Json<GroupStatus>> {
    Ok(Json(store.describe(&name, q.version).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeleteQuery {
    /// The version to delete; required, so a delete is never a guess.
    version: Option<u32>,
}

/// Delete one version of a feature group, with its data.
#[utoipa::path(delete, path = "/v1/feature-groups/{name}", params(("name" = String, Path), DeleteQuery),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delete_group(
    State(store): State<FeatureStore>,
    Path(name): Path<String>,
    ApiQuery(q): ApiQuery<DeleteQuery>,
) -> ApiResult<StatusCode> {
    let version = q.version.ok_or_else(|| {
        ApiError::bad_request("the query parameter 'version' is required to delete")
    })?;
    store.delete_group(&name, version).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct InsertQuery {
    version: Option<u32>,
    /// When to answer: `logged` (the default) once the log holds the rows durably, `online`
    /// once the online store shows them too (read-your-writes), `stored` once both stores
    /// hold them.
    wait: Option<String>,
    /// The body's format when the Content-Type does not say: arrow, parquet, csv or jsonl.
    format: Option<String>,
    /// Makes the insert idempotent: the rows are tagged with this producer tag and not
    /// appended again if the log already holds them so tagged after `after` (what pipeline
    /// workers send their window rows with).
    producer: Option<String>,
    /// With `producer`: where to look for the tag from, one log offset per partition of the
    /// group's log, comma-separated, by partition (default 0 for each).
    after: Option<String>,
}

/// Insert a batch of rows. The body's Content-Type picks the format: `text/csv`,
/// `application/x-ndjson`, `application/vnd.apache.parquet`, `application/vnd.apache.arrow.stream`.
/// The batch is validated whole and refused whole. With `producer`, a batch sent again is
/// acknowledged without being appended twice.
#[utoipa::path(post, path = "/v1/feature-groups/{name}/rows", params(("name" = String, Path), InsertQuery),
    request_body(content = String, description = "rows in CSV, JSON lines, Parquet or Arrow IPC"),
    responses((status = 200, body = InsertAck), (status = 400, body = ErrorBody), (status = 413, body = ErrorBody),
              (status = 415, body = ErrorBody)))]
pub async fn insert_rows(
    State(store): State<FeatureStore>,
    Path(name): Path<String>,
    ApiQuery(q): ApiQuery<InsertQuery>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<InsertAck>> {
    // `stored` waits after the append for both stores; `online` inside it, as before.
    let (wait_online, wait_stored) = match q.wait.as_deref() {
        None | Some("logged") => (false, false),
        Some("online") => (true, false),
        Some("stored") => (false, true),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "wait: expected 'logged', 'online' or 'stored', got '{other}'"
            )));
        }
    };
    let limit = store.config().max_batch_bytes;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the body is over the limit of {limit} bytes; split the batch"),
        )
    };
    // Refuse a declared oversize before reading it, so a client that sent `Expect: 100-continue`
    // never uploads it.
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| too_large())?;
    // The body is read before its format is judged, so the connection stays usable after a 415.
    let format = match &q.format {
        Some(f) => Format::from_name(f)
            .ok_or_else(|| ApiError::bad_request(format!("unknown format '{f}'")))?,
        None => {
            let content_type = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            Format::from_content_type(content_type).ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    format!(
                        "Content-Type '{content_type}' is not a batch format; use text/csv, application/x-ndjson, \
                         application/vnd.apache.parquet or application/vnd.apache.arrow.stream"
                    ),
                )
            })?
        }
    };
    let group = store.group(&name, q.version)?;
    let Some(producer) = &q.producer else {
        let mut ack = store
            .insert(
                &name,
                Some(group.version),
                format,
                bytes,
                InsertOptions { wait_online },
            )
            .await?;
        if wait_stored {
            store.wait_stored(&name, Some(group.version), &ack).await?;
            ack.online_visible = group.spec.online;
        }
        return Ok(Json(ack));
    };
    let search_from = match q.after.as_deref() {
        None | Some("") => Vec::new(),
        Some(after) => after
            .split(',')
            .map(|offset| offset.trim().parse::<u64>())
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| {
                ApiError::bad_request(format!(
                    "the query parameter 'after' is '{after}'; expected log offsets, one per \
                     partition, comma-separated"
                ))
            })?,
    };
    let batch = kairos_types::ingest::decode(&group.spec, format, bytes)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let mut ack = store
        .append_once(&name, Some(group.version), &batch, producer, &search_from)
        .await?;
    if wait_stored {
        store.wait_stored(&name, Some(group.version), &ack).await?;
        ack.online_visible = group.spec.online;
    } else if wait_online {
        store.wait_visible(&name, Some(group.version), &ack).await?;
        ack.online_visible = true;
    }
    Ok(Json(ack))
}

/// Read the latest row of one key, given as query parameters named after the key columns
/// (e.g. `?cc_num=4000123412341234`).
#[utoipa::path(get, path = "/v1/feature-groups/{name}/online", params(("name" = String, Path), VersionQuery),
    responses((status = 200, body = OnlineResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_online_one(
    State(store): State<FeatureStore>,
    Path(name): Path<String>,
    ApiQuery(mut q): ApiQuery<HashMap<String, String>>,
) -> ApiResult<Json<OnlineResponse>> {
    let version = match q.remove("version") {
        Some(v) => Some(v.parse::<u32>().map_err(|_| {
            ApiError::bad_request(format!("version: expected an integer, got '{v}'"))
        })?),
        None => None,
    };
    let entry = serde_json::Value::Object(
        q.into_iter()
            .map(|(k, v)| (k, serde_json::Value::String(v)))
            .collect(),
    );
    let answer = store.get_online_json(&name, version, &[entry]).await?;
    Ok(Json(OnlineResponse::from(answer)))
}

/// The nearest keys, nearest first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct NearestResponse {
    pub neighbours: Vec<NearestNeighbour>,
    /// `graph` (the HNSW walk) or `exact` (a scan of the keys passing the filter).
    pub path: String,
    /// Keys that passed the filter, when there was one.
    pub allowed: Option<usize>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct NearestNeighbour {
    pub key: i64,
    /// Smaller is nearer: 1 − cosine, −dot, or the squared L2 distance.
    pub distance: f32,
}

/// Nearest neighbours in the group's vector index: of a vector, or of a key's own vector
/// ("similar items", the key left out); optionally only keys whose attributes pass a filter
/// (`in_stock = true AND region = 'SE'`).
#[utoipa::path(post, path = "/v1/feature-groups/{name}/nearest", params(("name" = String, Path), VersionQuery),
    request_body = NearestQuery,
    responses((status = 200, body = NearestResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn nearest(
    State(store): State<FeatureStore>,
    Path(name): Path<String>,
    ApiQuery(q): ApiQuery<VersionQuery>,
    body: Bytes,
) -> ApiResult<Json<NearestResponse>> {
    let query: NearestQuery = parse_json(&body)?;
    let outcome = store.nearest(&name, q.version, &query)?;
    Ok(Json(NearestResponse {
        neighbours: outcome
            .neighbours
            .iter()
            .map(|n| NearestNeighbour {
                key: n.key as i64,
                distance: n.distance,
            })
            .collect(),
        path: match outcome.path {
            SearchPath::Graph => "graph".into(),
            SearchPath::Exact => "exact".into(),
        },
        allowed: outcome.allowed,
    }))
}

/// A batch online read.
#[derive(Debug, Deserialize, ToSchema)]
pub struct OnlineRequest {
    /// Per key: an object of key columns (`{"cc_num": 1}`), an array in key order, or a bare
    /// value for single-column keys.
    #[schema(value_type = Vec<Object>)]
    pub entries: Vec<serde_json::Value>,
}

/// Read the latest rows of many keys in one multi-get.
#[utoipa::path(post, path = "/v1/feature-groups/{name}/online", params(("name" = String, Path), VersionQuery),
    request_body = OnlineRequest,
    responses((status = 200, body = OnlineResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_online_many(
    State(store): State<FeatureStore>,
    Path(name): Path<String>,
    ApiQuery(q): ApiQuery<VersionQuery>,
    body: Bytes,
) -> ApiResult<Json<OnlineResponse>> {
    let request: OnlineRequest = parse_json(&body)?;
    let answer = store
        .get_online_json(&name, q.version, &request.entries)
        .await?;
    Ok(Json(OnlineResponse::from(answer)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OfflineQuery {
    version: Option<u32>,
    /// Event time at or after this (RFC 3339 or epoch seconds/milliseconds).
    start: Option<String>,
    /// Event time before this.
    end: Option<String>,
    /// Only rows ingested at or before this: the group as it was known then.
    as_of: Option<String>,
    /// jsonl (default), csv, arrow or parquet.
    format: Option<String>,
}

/// Read offline rows (streamed), in log order, with `_ingested_at` and `_offset`.
#[utoipa::path(get, path = "/v1/feature-groups/{name}/offline", params(("name" = String, Path), OfflineQuery),
    responses((status = 200, description = "rows in the asked format"), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
pub async fn read_offline(
    State(store): State<FeatureStore>,
    Path(name): Path<String>,
    ApiQuery(q): ApiQuery<OfflineQuery>,
) -> ApiResult<Response> {
    let format = match &q.format {
        Some(f) => Format::from_name(f)
            .ok_or_else(|| ApiError::bad_request(format!("unknown format '{f}'")))?,
        None => Format::JsonLines,
    };
    let filter = OfflineFilter {
        start: time_param("start", &q.start)?,
        end: time_param("end", &q.end)?,
        as_of: time_param("as_of", &q.as_of)?,
        before: None,
    };
    let mut stream = store.read_offline(&name, q.version, filter).await?;
    let mut encoder = BatchEncoder::new(format, &stream.schema())
        .map_err(|e| ApiError::from(kairos_store::StoreError::internal(e)))?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::spawn(async move {
        let io = |e: String| std::io::Error::other(e);
        while let Some(batch) = stream.next().await {
            let chunk = batch
                .map_err(|e| io(e.to_string()))
                .and_then(|b| encoder.encode(&b).map_err(|e| io(e.to_string())));
            let failed = chunk.is_err();
            if tx.send(chunk).await.is_err() || failed {
                return;
            }
        }
        let _ = tx
            .send(encoder.finish().map_err(|e| io(e.to_string())))
            .await;
    });
    let body = Body::from_stream(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|c| (c, rx))
    }));
    Ok(([(header::CONTENT_TYPE, format.content_type())], body).into_response())
}

/// Compare the online store to the latest row per key of the offline store.
#[utoipa::path(get, path = "/v1/feature-groups/{name}/check", params(("name" = String, Path), VersionQuery),
    responses((status = 200, body = CheckReport), (status = 404, body = ErrorBody)))]
pub async fn check_group(
    State(store): State<FeatureStore>,
    Path(name): Path<String>,
    ApiQuery(q): ApiQuery<VersionQuery>,
) -> ApiResult<Json<CheckReport>> {
    Ok(Json(store.check(&name, q.version).await?))
}

/// What a compaction did.
#[derive(Debug, Serialize, ToSchema)]
pub struct CompactResponse {
    pub files_removed: u64,
    pub files_added: u64,
}

/// Compact the offline table's small files.
#[utoipa::path(post, path = "/v1/feature-groups/{name}/compact", params(("name" = String, Path), VersionQuery),
    responses((status = 200, body = CompactResponse), (status = 404, body = ErrorBody)))]
pub async fn compact_group(
    State(store): State<FeatureStore>,
    Path(name): Path<String>,
    ApiQuery(q): ApiQuery<VersionQuery>,
) -> ApiResult<Json<CompactResponse>> {
    let report = store.compact(&name, q.version).await?;
    Ok(Json(CompactResponse {
        files_removed: report.files_removed,
        files_added: report.files_added,
    }))
}
