//! The Kairos REST server: thin axum handlers over [`kairos_store::FeatureStore`].
//!
//! Errors are mapped to HTTP in one place ([`error::ApiError`]); every route is in the OpenAPI
//! document ([`api::ApiDoc`], served at `/openapi.json`); request latencies and materialiser lag
//! are on `/metrics` in the Prometheus format.

pub mod api;
pub mod error;
mod telemetry;
pub mod views;

use std::net::SocketAddr;

use kairos_store::FeatureStore;
use tokio::net::TcpListener;

pub use api::{ApiDoc, router};

/// Serves `store` on `listener` until `shutdown` resolves; then closes the store.
pub async fn serve(
    store: FeatureStore,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(store.clone());
    let addr: SocketAddr = listener.local_addr()?;
    tracing::info!(%addr, online = store.online_backend(), "kairos serving");
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
    store.close().await;
    result
}
