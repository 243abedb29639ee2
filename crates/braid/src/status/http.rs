//! The HTTP status API of each daemon: `GET /api/status` (JSON), `GET /metrics` (Prometheus)
//! and `GET /` (the dashboard). It listens on loopback by default (the config key is `control`,
//! kept for compatibility) because it shows addresses and traffic of the whole network.
//!
//! Not to be confused with the in-tunnel control channel ([`crate::control`]), which carries
//! braid's requests to the relay inside an SS2022 stream.

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::{Json, Router};

use crate::listener::DRAIN_GRACE;
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

/// Binds the status API's listener. The daemons' `Listeners::bind` call it at start-up, so a
/// taken port fails there, naming the `control` key.
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

/// Serves the status API on `listener` until `shutdown`; requests in flight then have
/// [`DRAIN_GRACE`] to finish, so a client that never completes its request cannot keep the
/// daemon from stopping.
pub async fn serve(listener: tokio::net::TcpListener, src: Src, mut shutdown: Shutdown) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!("HTTP status API on http://{addr} (status, /metrics, dashboard)");
    }
    let mut stop = shutdown.clone();
    let server = axum::serve(listener, router(src))
        .with_graceful_shutdown(async move { stop.wait().await })
        .into_future();
    let grace_over = async {
        shutdown.wait().await;
        tokio::time::sleep(DRAIN_GRACE).await;
    };
    tokio::select! {
        r = server => if let Err(e) = r {
            tracing::warn!("HTTP status API stopped: {e}");
        },
        _ = grace_over => tracing::info!(
            "HTTP status API: requests still open {DRAIN_GRACE:?} after shutdown are dropped"
        ),
    }
}
