//! Resolving the relay's address: the one place that turns `server` into a socket address, for
//! the daemon, `braid doctor` and `braid speedtest`.

use std::net::SocketAddr;
use std::time::Duration;

use crate::config::gateway::RelayAddr;

/// How long a DNS lookup of the relay may take: a resolver that never answers must not hang
/// start-up or doctor.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);

/// The relay's name did not resolve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot resolve the relay {server}: {reason}; fix: check `server` in gateway.toml and the gateway's DNS")]
pub struct ResolveError {
    /// As configured.
    pub server: String,
    /// The resolver's answer.
    pub reason: String,
}

/// The relay's address: the configured one, or the first answer for its name.
pub async fn relay(server: &RelayAddr) -> Result<SocketAddr, ResolveError> {
    let (host, port) = match server {
        RelayAddr::Socket(a) => return Ok(*a),
        RelayAddr::Host(h, p) => (h.as_str(), *p),
    };
    let fail = |reason: String| ResolveError {
        server: server.to_string(),
        reason,
    };
    tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((host, port)))
        .await
        .map_err(|_| {
            fail(format!(
                "the resolver did not answer within {} s",
                RESOLVE_TIMEOUT.as_secs()
            ))
        })?
        .map_err(|e| fail(e.to_string()))?
        .next()
        .ok_or_else(|| fail("no address".into()))
}
