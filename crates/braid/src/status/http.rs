//! The HTTP status API of each daemon: `GET /api/status` (JSON), `GET /metrics` (Prometheus)
//! and `GET /` (the dashboard). It listens on loopback by default (the config key is `control`,
//! kept for compatibility) because it shows addresses and traffic of the whole network. A source
//! outside its [`AllowFrom`] is reset at accept; every request passes [`Access`] (Host header,
//! optional token) first.
//!
//! Not to be confused with the in-tunnel control channel ([`crate::control`]), which carries
//! braid's requests to the relay inside an SS2022 stream.

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

pub use super::access::Access;
use crate::allow_from::AllowFrom;
use crate::log_limit::PerSourceLog;

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
pub fn router(src: Src, access: Access) -> Router {
    Router::new()
        .route("/", get(dashboard))
        .route("/api/status", get(status))
        .route("/metrics", get(metrics))
        .with_state(src)
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(access),
            guard,
        ))
}

/// Lets a request through [`Access`], or answers why not.
async fn guard(State(access): State<Arc<Access>>, req: Request, next: Next) -> Response {
    match access.check(req.uri(), req.headers()) {
        Ok(admitted) => {
            let mut resp = next.run(req).await;
            if let Some(cookie) = admitted.set_cookie {
                resp.headers_mut().insert(header::SET_COOKIE, cookie);
            }
            resp
        }
        Err(denied) => {
            let mut resp = (denied.status, format!("{}\n", denied.reason)).into_response();
            if denied.status == axum::http::StatusCode::UNAUTHORIZED {
                resp.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    axum::http::HeaderValue::from_static("Bearer"),
                );
            }
            resp
        }
    }
}

/// Binds the status API's listener. The daemons' `Listeners::bind` call it at start-up, so a
/// taken port fails there, naming the `control` key.
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

/// Serves the status API on `listener` until `shutdown`; requests in flight then have
/// [`DRAIN_GRACE`] to finish, so a client that never completes its request cannot keep the
/// daemon from stopping.
pub async fn serve(
    listener: tokio::net::TcpListener,
    src: Src,
    access: Access,
    mut shutdown: Shutdown,
) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!("HTTP status API on http://{addr} (status, /metrics, dashboard)");
    }
    let mut stop = shutdown.clone();
    let listener = SourceFiltered {
        inner: listener,
        allow: access.allow_from.clone(),
        refusals: PerSourceLog::new(std::time::Duration::from_secs(60)),
    };
    let server = axum::serve(listener, router(src, access))
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

/// The API's listener, resetting connections from sources it does not serve before a byte of
/// HTTP (a scanner learns no more than from a closed port).
struct SourceFiltered {
    inner: tokio::net::TcpListener,
    allow: AllowFrom,
    refusals: PerSourceLog,
}

impl axum::serve::Listener for SourceFiltered {
    type Io = tokio::net::TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (stream, peer) = axum::serve::Listener::accept(&mut self.inner).await;
            if self.allow.allows(peer.ip()) {
                return (stream, peer);
            }
            crate::listener::reset(&stream);
            if let Some(held) = self.refusals.allow(peer.ip()) {
                tracing::info!(
                    "HTTP status API: refused a connection from {}: not an allowed source (control_allow_from){held}",
                    peer.ip()
                );
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}
