//! SIGHUP on the relay: re-read server.toml and apply what can change while connections run.
//!
//! - Live: `allow_destinations` (the next destination check uses it, TCP and UDP; connections
//!   and UDP sessions already relayed are not cut) and the caps (`max_connections`,
//!   `max_handshakes`, `max_handshakes_per_source`: running connections are never cut).
//! - Not live, named in the log and left as running: the listen address, key, method, listener
//!   options (TFO, MPTCP), congestion control, timeouts and the status API. Restart to apply.
//!
//! A broken file is reported and the running config stays. systemd hears `RELOADING=1` before
//! and `READY=1` after.

use std::path::PathBuf;
use std::sync::Arc;

use std::net::IpAddr;
use std::sync::RwLock;

use braid_proto::destination::{DestinationPolicy, Refused};
use tokio::signal::unix::Signal;
use tracing::{info, warn};

use super::Shared;
use crate::config::server::ServerConfig;

/// The relay's destination policy, which a reload may replace: every check reads the current
/// one (TCP connects, UDP sessions' first datagram to a destination, UDP over TCP).
#[derive(Debug)]
pub struct LivePolicy(RwLock<DestinationPolicy>);

impl LivePolicy {
    /// The policy the relay starts with.
    pub fn new(p: DestinationPolicy) -> LivePolicy {
        LivePolicy(RwLock::new(p))
    }

    /// [`DestinationPolicy::check`] on the current policy.
    pub fn check(
        &self,
        ip: IpAddr,
        is_own: impl FnMut(IpAddr) -> Option<bool>,
    ) -> Result<(), Refused> {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .check(ip, is_own)
    }

    fn set(&self, p: DestinationPolicy) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = p;
    }
}

/// The handle a reload changes the running relay through.
pub struct Reloader(Arc<Shared>);

impl Reloader {
    pub(super) fn new(shared: Arc<Shared>) -> Reloader {
        Reloader(shared)
    }

    /// The caps from now on; running connections are never cut.
    pub fn set_limits(&self, cfg: &crate::config::LimitsConfig) {
        self.0.admission.set_limits(crate::admission::resolved(cfg));
    }

    /// The destinations allowed despite the safety rules, from now on.
    pub fn set_allow_destinations(&self, allow: Vec<ipnet::IpNet>) {
        self.0.policy.set(DestinationPolicy { allow });
    }
}

/// The caps' keys, as the log names them.
const LIMITS: &str = "max_connections / max_handshakes / max_handshakes_per_source";

/// Follows reload signals until aborted.
pub async fn follow(path: PathBuf, mut signal: Signal, mut running: ServerConfig, live: Reloader) {
    while signal.recv().await.is_some() {
        crate::systemd::notify("RELOADING=1");
        match ServerConfig::load(&path) {
            Err(e) => warn!("reload: {e}; the running configuration stays as it was"),
            Ok(new) => apply(&mut running, new, &live),
        }
        crate::systemd::ready("reloaded");
    }
}

fn apply(running: &mut ServerConfig, new: ServerConfig, live: &Reloader) {
    let changed = changed(running, &new);
    if changed.is_empty() {
        info!("reload: nothing changed");
    }
    for key in changed {
        if key == "allow_destinations" {
            let list: Vec<String> = new
                .allow_destinations
                .iter()
                .map(|n| n.to_string())
                .collect();
            info!("reload: allow_destinations = [{}]", list.join(", "));
            live.set_allow_destinations(new.allow_destinations.clone());
            running.allow_destinations = new.allow_destinations.clone();
        } else if key == LIMITS {
            info!("reload: new caps on relay connections (running connections stay)");
            live.set_limits(&new.limits);
            running.limits = new.limits;
        } else {
            warn!("reload: `{key}` changed, but cannot change while the relay runs; it stays as it was until `systemctl restart braid-server`");
        }
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
        ("congestion", a.congestion != b.congestion),
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
        ("public_addresses", a.public_addresses != b.public_addresses),
        (LIMITS, a.limits != b.limits),
        (
            "control_allow_from / control_token / control_hosts",
            a.control_access != b.control_access,
        ),
        (
            "udp / udp_*_timeout_secs / udp_max_sessions",
            a.udp != b.udp,
        ),
        ("state_dir", a.state_dir != b.state_dir),
        ("tunnel_port", a.tunnel_port != b.tunnel_port),
        ("tunnel_net", a.tunnel_net != b.tunnel_net),
        ("bond_after_kib", a.bond_after != b.bond_after),
        ("max_joins", a.max_joins != b.max_joins),
        ("initial_window", a.initial_window != b.initial_window),
    ]
    .into_iter()
    .filter_map(|(k, c)| c.then_some(k))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: &str) -> ServerConfig {
        let text = format!(
            "listen = \"0.0.0.0:8388\"\nmethod = \"2022-blake3-aes-256-gcm\"\nkey = \"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\"\n{extra}"
        );
        ServerConfig::from_toml(std::path::Path::new("server.toml"), &text).expect("config")
    }

    #[test]
    fn the_path_manager_keys_are_named_when_they_change() {
        assert!(changed(&cfg(""), &cfg("")).is_empty());
        assert_eq!(
            changed(
                &cfg(""),
                &cfg("max_joins = 3\nbond_after_kib = 0\ninitial_window = 10\n")
            ),
            ["bond_after_kib", "max_joins", "initial_window"]
        );
    }
}
