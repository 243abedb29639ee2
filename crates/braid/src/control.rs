//! The local control API of each daemon: `GET /api/status` (JSON), `GET /metrics`
//! (Prometheus) and `GET /` (the dashboard). It listens on loopback by default (`control` in
//! the config) because it shows addresses and traffic of the whole network.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::{Json, Router};

use crate::shutdown::Shutdown;
use crate::status::model::Status;

/// Anything that can produce a status document on demand.
pub trait StatusSource: Send + Sync + 'static {
    /// The current document.
    fn snapshot(&self) -> Status;
}

type Src = Arc<dyn StatusSource>;

async fn status(State(src): State<Src>) -> Json<Status> {
    Json(src.snapshot())
}

async fn metrics(State(src): State<Src>) -> impl IntoResponse {
    let body = crate::status::metrics::render(&src.snapshot());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
}

async fn dashboard() -> Html<&'static str> {
    Html(crate::status::dashboard::DASHBOARD_HTML)
}

/// The router, separate from the listener so tests can drive it.
pub fn router(src: Src) -> Router {
    Router::new()
        .route("/", get(dashboard))
        .route("/api/status", get(status))
        .route("/metrics", get(metrics))
        .with_state(src)
}

/// Binds the control listener now (so a taken port fails start-up), and serves it until
/// shutdown in the background.
pub async fn start(
    addr: SocketAddr,
    src: Src,
    mut shutdown: Shutdown,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(
        "control API on http://{} (status, /metrics, dashboard)",
        listener.local_addr().unwrap_or(addr)
    );
    let app = router(src);
    Ok(tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.wait().await })
            .await;
    }))
}
