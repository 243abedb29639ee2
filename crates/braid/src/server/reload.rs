//! SIGHUP on the relay: re-read server.toml and name every key that changed. None of them
//! changes while the relay runs yet (listen address, key, method and listener options cannot;
//! allowlist and timeouts are read by live connections and are not swapped in), so each is
//! named with the restart that applies it. A broken file is reported and the running config
//! stays.

use std::path::PathBuf;

use tokio::signal::unix::Signal;
use tracing::{info, warn};

use crate::config::server::ServerConfig;

/// Follows reload signals until aborted.
pub async fn follow(path: PathBuf, mut signal: Signal, running: ServerConfig) {
    while signal.recv().await.is_some() {
        crate::systemd::notify("RELOADING=1");
        match ServerConfig::load(&path) {
            Err(e) => warn!("reload: {e}; the running configuration stays as it was"),
            Ok(new) => {
                let changed = changed(&running, &new);
                if changed.is_empty() {
                    info!("reload: nothing changed");
                }
                for key in changed {
                    warn!("reload: `{key}` changed, but cannot change while the relay runs; it stays as it was until `systemctl restart braid-server`");
                }
            }
        }
        crate::systemd::ready("reloaded");
    }
}

/// The keys that differ.
pub fn changed(a: &ServerConfig, b: &ServerConfig) -> Vec<&'static str> {
    [
        ("listen", a.listen != b.listen),
        ("method", a.method != b.method),
        ("key", a.key != b.key),
        ("fast_open", a.fast_open != b.fast_open),
        ("mptcp", a.mptcp != b.mptcp),
        (
            "allow_destinations",
            a.allow_destinations != b.allow_destinations,
        ),
        (
            "handshake_timeout_secs",
            a.handshake_timeout != b.handshake_timeout,
        ),
        (
            "connect_timeout_secs",
            a.connect_timeout != b.connect_timeout,
        ),
        ("idle_timeout_secs", a.idle_timeout != b.idle_timeout),
        ("control", a.control != b.control),
    ]
    .into_iter()
    .filter_map(|(k, c)| c.then_some(k))
    .collect()
}
