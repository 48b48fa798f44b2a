//! The Kairos server: thin axum handlers over [`kairos_store::FeatureStore`],
//! [`kairos_pipeline::Pipelines`], [`kairos_deploy::Deployments`] and
//! [`kairos_monitor::Monitors`]; the applied pipelines, the deployments and the monitors'
//! schedules run inside the server. One port speaks the REST API, the KServe V2 protocol
//! over REST ([`v2`]) and over gRPC ([`grpc`], HTTP/2), in plain text or TLS, through the
//! server's own accept loop ([`transport`]: connection caps and timeouts). Every routed request
//! passes one gate first ([`access`]: host, origin, API key and scope, content type, body size).
//!
//! Errors are classified once (`kairos_store::ErrorKind`) and mapped in one place
//! ([`error`]: HTTP for REST and V2, codes for gRPC; internal causes logged, never sent); every `/v1` route is in the OpenAPI document
//! ([`api::ApiDoc`], served at `/openapi.json`); request latencies, materialiser lag and serving
//! latencies are on `/metrics` in the Prometheus format.

pub mod access;
pub mod api;
pub mod deployments;
pub mod error;
mod follower;
pub mod groups;
pub mod grpc;
pub mod keys;
pub mod models;
pub mod monitors;
pub mod pipelines;
pub mod recommenders;
mod request;
mod telemetry;
pub mod transport;
pub mod v2;
pub mod views;

use std::net::SocketAddr;
use std::sync::Arc;

use kairos_deploy::Deployments;
use kairos_monitor::Monitors;
use kairos_pipeline::Pipelines;
use kairos_recommend::Recommenders;
use kairos_store::FeatureStore;
use tokio::net::TcpListener;

pub use access::{Access, AccessPolicy};
pub use api::{ApiDoc, router};
pub use follower::FOLLOW_EVERY;

pub use transport::{TlsFiles, TransportOptions};

/// How a server is reached, and what the definitions its clients post may read.
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    pub access: AccessPolicy,
    pub sources: kairos_pipeline::SourcePolicy,
    pub transport: TransportOptions,
    /// Hosts monitors' alert webhooks may call (none: no webhook is called).
    pub webhook_hosts: Vec<String>,
}

/// Serves `store` on `listener`, running every applied pipeline and every deployment, until
/// `shutdown` resolves; then stops the pipelines (each takes a last checkpoint), lets the
/// inference logs write what they hold, and closes the store. With no API key configured it
/// refuses a listener other machines can reach, unless the options say insecure.
pub async fn serve(
    store: FeatureStore,
    listener: TcpListener,
    options: ServerOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let addr: SocketAddr = listener.local_addr()?;
    let access =
        Access::new(store.clone(), options.access, Some(addr)).map_err(std::io::Error::other)?;
    if let Err(why) = access.check_listen(addr) {
        store.close().await;
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            why,
        ));
    }
    let access = Arc::new(access);
    let pipelines = Arc::new(Pipelines::confined(store.clone(), options.sources));
    pipelines.start_all().await;
    let deployments = Arc::new(Deployments::new(store.clone()).map_err(std::io::Error::other)?);
    // Deployments load while the server already answers: /v2/health/ready says 503 until
    // they are in, so an orchestrator routes no predictions here before then.
    let loading = tokio::spawn({
        let deployments = deployments.clone();
        async move { deployments.start_all().await }
    });
    // Recommenders answer the V2 protocol through the deployments' routes.
    let recommenders = Recommenders::new(store.clone());
    deployments.add_application(Arc::new(recommenders.clone()));
    let loading_recommenders = tokio::spawn({
        let recommenders = recommenders.clone();
        async move { recommenders.start_all().await }
    });
    let monitors = Monitors::confined(deployments.clone(), options.webhook_hosts);
    // What another replica or process changes in the catalog (keys, groups, views,
    // deployments, recommenders, monitors) reaches this server within `FOLLOW_EVERY`.
    let following = tokio::spawn(
        follower::Follower {
            access: access.clone(),
            store: store.clone(),
            deployments: deployments.clone(),
            recommenders: recommenders.clone(),
            monitors: monitors.clone(),
            pipelines: pipelines.clone(),
        }
        .run(),
    );
    // Monitors read the deployments, so their schedules start once those are loaded.
    let scheduling = tokio::spawn({
        let (monitors, deployments) = (monitors.clone(), deployments.clone());
        async move {
            while !deployments.is_ready() {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            if let Err(e) = monitors.start_all() {
                tracing::warn!(error = %e, "cannot start the monitors' schedules");
            }
        }
    });
    let app = router(
        pipelines.clone(),
        deployments.clone(),
        monitors.clone(),
        recommenders.clone(),
        access.clone(),
    );
    tracing::info!(
        %addr,
        online = store.online_backend(),
        keys = if access.enforced() { "required" } else { "none configured" },
        "kairos serving"
    );
    let result = transport::run(listener, app, options.transport, shutdown).await;
    // Monitors stop first, then pipelines (they write), then the inference logs flush, then the
    // store closes.
    scheduling.abort();
    following.abort();
    monitors.stop_all();
    pipelines.close().await;
    let _ = loading.await;
    let _ = loading_recommenders.await;
    recommenders.close().await;
    deployments.close().await;
    store.close().await;
    result
}
