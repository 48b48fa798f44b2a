//! The routes: every path of the REST API, the V2 protocol and gRPC, with the access gate in
//! front of them all and the OpenAPI document generated from the handlers. Handlers live in the
//! route modules; nothing here but wiring.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use kairos_deploy::Deployments;
use kairos_monitor::Monitors;
use kairos_pipeline::{PipelineStatus, Pipelines};
use kairos_recommend::Recommenders;
use kairos_store::{
    CheckReport, FeatureStore, GroupStatus, InsertAck, KeyStatus, NearestQuery, VectorAnswer,
    ViewStatus,
};
use kairos_stream::PipelineSpec;
use kairos_stream::spec::PipelineDef;
use kairos_types::{FeatureGroup, FeatureGroupSpec};
use kairos_view::{FeatureView, FeatureViewSpec, TrainingDataset};
use utoipa::OpenApi;

use crate::access::{Access, gate};
use crate::error::{ApiError, ErrorBody};
use crate::{
    deployments, groups, keys, models, monitors, pipelines, recommenders, telemetry, views,
};

/// The OpenAPI document of the REST API, generated from the handlers.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Kairos",
        description = "Kairos REST API: feature groups, feature views, pipelines, models, deployments and monitors"
    ),
    paths(
        groups::create_group,
        groups::list_groups,
        groups::describe_group,
        groups::delete_group,
        groups::insert_rows,
        groups::nearest,
        groups::get_online_one,
        groups::get_online_many,
        groups::read_offline,
        groups::check_group,
        groups::compact_group,
        healthz,
        readyz,
        views::apply_view,
        views::list_views,
        views::describe_view,
        views::delete_view,
        views::create_training_dataset,
        views::get_training_dataset,
        views::read_training_dataset,
        views::get_vectors,
        pipelines::deploy,
        pipelines::list,
        pipelines::status,
        pipelines::start,
        pipelines::stop,
        pipelines::push,
        models::list_models,
        models::register_model,
        models::describe_model,
        models::delete_model,
        models::train,
        deployments::apply,
        deployments::list,
        deployments::status,
        deployments::delete,
        deployments::predict,
        monitors::apply,
        monitors::list,
        monitors::get,
        monitors::delete,
        monitors::run,
        monitors::retrain,
        monitors::history,
        monitors::report,
        recommenders::apply,
        recommenders::list,
        recommenders::status,
        recommenders::recommend,
        recommenders::interact,
        keys::create,
        keys::list,
        keys::revoke
    ),
    components(schemas(
        FeatureGroupSpec,
        kairos_types::VectorIndexSpec,
        NearestQuery,
        groups::NearestResponse,
        groups::NearestNeighbour,
        FeatureGroup,
        GroupStatus,
        kairos_store::PartitionStatus,
        InsertAck,
        kairos_store::PartitionEnd,
        KeyStatus,
        kairos_store::OnlineResponse,
        kairos_store::OnlineResult,
        groups::OnlineRequest,
        CheckReport,
        ErrorBody,
        groups::CompactResponse,
        FeatureViewSpec,
        FeatureView,
        ViewStatus,
        TrainingDataset,
        VectorAnswer,
        views::TrainingDataBody,
        views::SpineBody,
        views::VectorRequest,
        PipelineSpec,
        PipelineDef,
        PipelineStatus,
        kairos_pipeline::Deployed,
        pipelines::PushAck,
        kairos_deploy::training::TrainRequest,
        kairos_deploy::training::AlgorithmName,
        kairos_deploy::training::TaskName,
        kairos_model::Deployment,
        kairos_model::DeploymentSpec,
        kairos_model::Slo,
        kairos_deploy::DeploymentStatus,
        kairos_deploy::telemetry::LatencyReport,
        kairos_deploy::PredictRequest,
        kairos_deploy::PredictResponse,
        kairos_deploy::EntryPrediction,
        kairos_monitor::MonitorSpec,
        kairos_monitor::Monitor,
        kairos_monitor::MonitorRun,
        kairos_monitor::History,
        kairos_monitor::Score,
        kairos_monitor::RetrainDecision,
        kairos_monitor::Outcome,
        kairos_monitor::quality::WindowQuality,
        kairos_monitor::spec::Reference,
        kairos_monitor::spec::LabelSource,
        kairos_monitor::spec::AlertSpec,
        kairos_monitor::spec::RetrainPolicy,
        kairos_monitor::spec::RetrainMetric,
        kairos_recommend::RecommenderSpec,
        kairos_recommend::spec::UsersSpec,
        kairos_recommend::spec::ItemsSpec,
        kairos_recommend::spec::InteractionsSpec,
        kairos_recommend::spec::ModelsSpec,
        kairos_recommend::spec::FilterRule,
        kairos_recommend::spec::Diversity,
        kairos_recommend::RecommenderStatus,
        kairos_recommend::RecommendRequest,
        kairos_recommend::RecommendResponse,
        kairos_recommend::Stages,
        kairos_recommend::Recommended,
        kairos_auth::KeySpec,
        kairos_auth::Scope,
        kairos_auth::ApiKey,
        kairos_auth::IssuedKey
    ))
)]
pub struct ApiDoc;

/// The whole HTTP application.
pub fn router(
    pipelines: Arc<Pipelines>,
    deployments: Arc<Deployments>,
    monitors: Monitors,
    recommenders: Recommenders,
    access: Arc<Access>,
) -> Router {
    let store = pipelines.store().clone();
    let max_body = store.config().max_batch_bytes;
    let _ = telemetry::prometheus();
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .route(
            "/v1/feature-groups",
            post(groups::create_group).get(groups::list_groups),
        )
        .route(
            "/v1/feature-groups/{name}",
            get(groups::describe_group).delete(groups::delete_group),
        )
        .route("/v1/feature-groups/{name}/rows", post(groups::insert_rows))
        .route(
            "/v1/feature-groups/{name}/online",
            get(groups::get_online_one).post(groups::get_online_many),
        )
        .route("/v1/feature-groups/{name}/nearest", post(groups::nearest))
        .route(
            "/v1/feature-groups/{name}/offline",
            get(groups::read_offline),
        )
        .route("/v1/feature-groups/{name}/check", get(groups::check_group))
        .route(
            "/v1/feature-groups/{name}/compact",
            post(groups::compact_group),
        )
        .route(
            "/v1/feature-views",
            post(views::apply_view).get(views::list_views),
        )
        .route(
            "/v1/feature-views/{name}",
            get(views::describe_view).delete(views::delete_view),
        )
        .route(
            "/v1/feature-views/{name}/training-datasets",
            post(views::create_training_dataset),
        )
        .route(
            "/v1/feature-views/{name}/training-datasets/{td}",
            get(views::get_training_dataset),
        )
        .route(
            "/v1/feature-views/{name}/training-datasets/{td}/data",
            get(views::read_training_dataset),
        )
        .route("/v1/feature-views/{name}/vectors", post(views::get_vectors))
        .route("/v1/train", post(models::train))
        .route(
            "/v1/models",
            get(models::list_models).post(models::register_model),
        )
        .route("/v1/models/{name}", get(models::describe_model))
        .route(
            "/v1/models/{name}/versions/{version}",
            axum::routing::delete(models::delete_model),
        )
        .with_state(store)
        .merge(
            Router::new()
                .route(
                    "/v1/pipelines",
                    post(pipelines::deploy).get(pipelines::list),
                )
                .route("/v1/pipelines/{name}", get(pipelines::status))
                .route("/v1/pipelines/{name}/start", post(pipelines::start))
                .route("/v1/pipelines/{name}/stop", post(pipelines::stop))
                .route("/v1/streams/{stream}/events", post(pipelines::push))
                .with_state(pipelines),
        )
        .merge(
            Router::new()
                .route(
                    "/v1/deployments",
                    post(deployments::apply).get(deployments::list),
                )
                .route(
                    "/v1/deployments/{name}",
                    get(deployments::status).delete(deployments::delete),
                )
                .route("/v1/deployments/{name}/predict", post(deployments::predict))
                .with_state(deployments.clone()),
        )
        .merge(
            Router::new()
                .route("/v1/monitors", post(monitors::apply).get(monitors::list))
                .route(
                    "/v1/monitors/{name}",
                    get(monitors::get).delete(monitors::delete),
                )
                .route("/v1/monitors/{name}/run", post(monitors::run))
                .route("/v1/monitors/{name}/retrain", post(monitors::retrain))
                .route("/v1/monitors/{name}/history", get(monitors::history))
                .route(
                    "/v1/deployments/{name}/monitoring/report",
                    get(monitors::report),
                )
                .with_state(monitors),
        )
        .merge(
            Router::new()
                .route(
                    "/v1/recommenders",
                    post(recommenders::apply).get(recommenders::list),
                )
                .route("/v1/recommenders/{name}", get(recommenders::status))
                .route(
                    "/v1/recommenders/{name}/recommend",
                    post(recommenders::recommend),
                )
                .route(
                    "/v1/recommenders/{name}/interactions",
                    post(recommenders::interact),
                )
                .with_state(recommenders),
        )
        .merge(
            Router::new()
                .route("/v1/auth/keys", post(keys::create).get(keys::list))
                .route("/v1/auth/keys/{id}", axum::routing::delete(keys::revoke))
                .with_state(access.clone()),
        )
        .merge(crate::v2::routes(deployments.clone()))
        .merge(crate::grpc::routes(deployments, max_body))
        // Every route above passes the access gate; the fallback answers 404 to anyone.
        .route_layer(axum::middleware::from_fn_with_state(access.clone(), gate))
        .fallback(not_found)
        .layer(axum::middleware::from_fn(telemetry::track_latency))
        .layer(axum::middleware::from_fn(crate::error::catch_panic))
        .layer(DefaultBodyLimit::max(max_body));
    // Outermost, so a browser's preflight is answered before routing.
    match access.cors() {
        Some(cors) => app.layer(cors),
        None => app,
    }
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such route; see /openapi.json",
    )
}

/// Liveness.
#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "alive")))]
async fn healthz() -> &'static str {
    "ok"
}

/// Readiness: whether the catalog, the online store and the data dir answer, each within 2 s;
/// 503 names those that do not (a replica a load balancer should leave out), and the server's
/// log says why.
#[utoipa::path(get, path = "/readyz", responses(
    (status = 200, description = "every engine answers"),
    (status = 503, description = "an engine does not answer; the body names it")))]
async fn readyz(State(store): State<FeatureStore>) -> (StatusCode, Json<serde_json::Value>) {
    let engines = store.readiness().await;
    let ready = engines.iter().all(|e| e.ready);
    // The probe is open to anyone: the causes go to the log, the answer names engines only.
    for engine in engines.iter().filter(|e| !e.ready) {
        tracing::warn!(engine = %engine.engine, error = ?engine.error, "not ready");
    }
    let engines: Vec<serde_json::Value> = engines
        .iter()
        .map(|e| serde_json::json!({ "engine": e.engine, "ready": e.ready }))
        .collect();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(serde_json::json!({ "ready": ready, "engines": engines })),
    )
}

async fn metrics() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        telemetry::prometheus().render(),
    )
}

async fn openapi() -> impl IntoResponse {
    Json(ApiDoc::openapi())
}
