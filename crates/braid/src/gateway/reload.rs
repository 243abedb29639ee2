//! SIGHUP: re-read gateway.toml and apply what can change while connections run.
//!
//! - Live: the uplink list (added uplinks are installed, removed ones taken down; the others
//!   and every connection are untouched, see `uplink::reload`), the `[health]` settings
//!   (every uplink keeps its state; the new thresholds and probe interval apply at once), and
//!   the caps (`max_connections`, `max_handshakes`, `max_handshakes_per_source`: running
//!   connections are never cut).
//! - Not live, named in the log and left as running: everything else (relay address, method,
//!   key, listeners, LAN capture, TFO, MPTCP, congestion control, timeouts). Restart to apply.
//!
//! systemd hears `RELOADING=1` before and `READY=1` after, as `Type=notify` units expect.

use std::path::PathBuf;

use tokio::signal::unix::Signal;
use tokio::sync::{oneshot, watch};
use tracing::{info, warn};

use super::uplink::reload::Live;
use super::uplink::ManagerView;
use crate::config::gateway::{GatewayConfig, Uplink};

/// Where the config is, and the signal that asks for a reload.
pub struct Reload {
    /// gateway.toml.
    pub path: PathBuf,
    /// SIGHUP (installed before the daemon starts, so an early one does not kill it).
    pub signal: Signal,
}

impl Reload {
    /// Follows reload signals until aborted; `live` reaches the uplink manager.
    pub async fn follow(
        mut self,
        mut running: GatewayConfig,
        live: watch::Sender<Live>,
        admission: std::sync::Arc<crate::admission::Admission>,
    ) {
        while self.signal.recv().await.is_some() {
            crate::systemd::notify("RELOADING=1");
            match GatewayConfig::load(&self.path) {
                Err(e) => warn!("reload: {e}; the running configuration stays as it was"),
                Ok(new) => apply(&mut running, new, &live, &admission),
            }
            crate::systemd::ready("reloaded");
        }
    }
}

fn apply(
    running: &mut GatewayConfig,
    new: GatewayConfig,
    live: &watch::Sender<Live>,
    admission: &crate::admission::Admission,
) {
    let fixed = not_live(running, &new);
    for key in &fixed {
        warn!("reload: `{key}` changed, but cannot change while braid runs; it stays as it was until `systemctl restart braid-gateway`");
    }
    let mut changed = false;
    if new.uplinks != running.uplinks {
        let names = |l: &[Uplink]| {
            l.iter()
                .map(|u| u.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        info!(
            "reload: uplinks [{}] → [{}]",
            names(&running.uplinks),
            names(&new.uplinks)
        );
        if running.uplinks.is_empty() {
            warn!("reload: the gateway started without uplinks, so it has no uplink manager; restart it to bond the new ones");
        }
        running.uplinks = new.uplinks;
        changed = true;
    }
    if new.health != running.health {
        info!(
            "reload: [health] → probes every {:?}, timeout {:?}–{:?}, Suspect after {}, Down after {}, Up after {} (each uplink keeps its state)",
            new.health.interval,
            new.health.timeout,
            new.health.timeout_max,
            new.health.suspect_after,
            new.health.down_after,
            new.health.recover_after
        );
        running.health = new.health;
        changed = true;
    }
    if new.limits != running.limits {
        info!("reload: new caps on LAN connections (running connections stay)");
        admission.set_limits(crate::admission::resolved(&new.limits));
        running.limits = new.limits;
        changed = true;
    }
    if changed {
        let _ = live.send(Live {
            uplinks: running.uplinks.clone(),
            health: running.health.clone(),
        });
    } else if fixed.is_empty() {
        info!("reload: nothing changed");
    }
}

/// The keys that differ and cannot change live.
pub fn not_live(a: &GatewayConfig, b: &GatewayConfig) -> Vec<&'static str> {
    let mut out = Vec::new();
    let mut differ = |key, changed: bool| {
        if changed {
            out.push(key);
        }
    };
    differ("server", a.server != b.server);
    differ("method", a.method != b.method);
    differ("key", a.key != b.key);
    differ("fast_open", a.fast_open != b.fast_open);
    differ("redirect", a.redirect != b.redirect);
    differ("lan", a.lan != b.lan);
    differ("socks", a.socks != b.socks);
    differ("mptcp", a.mptcp != b.mptcp);
    differ("nft_table", a.nft_table != b.nft_table);
    differ(
        "connect_timeout_secs",
        a.connect_timeout != b.connect_timeout,
    );
    differ("idle_timeout_secs", a.idle_timeout != b.idle_timeout);
    differ(
        "mptcp_blackhole_timeout_secs",
        a.mptcp_blackhole_timeout != b.mptcp_blackhole_timeout,
    );
    differ("control", a.control != b.control);
    differ("congestion", a.congestion != b.congestion);
    differ("state_dir", a.state_dir != b.state_dir);
    differ("bypass", a.bypass != b.bypass);
    differ("capture", a.capture != b.capture);
    differ("socks_allow_from", a.socks_allow_from != b.socks_allow_from);
    differ(
        "control_allow_from / control_token / control_hosts",
        a.control_access != b.control_access,
    );
    differ(
        "udp / udp_uplink / udp_*_timeout_secs / udp_max_sessions",
        a.udp != b.udp,
    );
    differ("warm_pool", a.warm_pool != b.warm_pool);
    differ(
        "relay_handshake_timeout_secs",
        a.relay_handshake_timeout != b.relay_handshake_timeout,
    );
    differ("tunnel_retry_secs", a.tunnel_retry != b.tunnel_retry);
    out
}

/// Sends READY=1 once `up` fired (listeners served, capture table in place) and, when there are
/// uplinks, the uplink manager has published its first reconcile.
pub async fn ready_when_up(
    up: oneshot::Receiver<()>,
    mut view: watch::Receiver<ManagerView>,
    uplinks: bool,
) {
    if up.await.is_err() {
        return;
    }
    if uplinks && view.wait_for(|v| !v.uplinks.is_empty()).await.is_err() {
        return;
    }
    crate::systemd::ready("gateway up");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: &str) -> GatewayConfig {
        let key = crate::keygen::generate(crate::config::Method::Aes256Gcm).unwrap();
        let text = format!("server = \"203.0.113.7:8388\"\nmethod = \"2022-blake3-aes-256-gcm\"\nkey = \"{key}\"\n{extra}[[uplink]]\nname = \"a\"\ninterface = \"eth0\"\n");
        GatewayConfig::from_toml(std::path::Path::new("gateway.toml"), &text).unwrap()
    }

    #[test]
    fn not_live_names_what_needs_a_restart() {
        let a = cfg("");
        let mut b = a.clone();
        assert!(not_live(&a, &b).is_empty());
        b.redirect = "0.0.0.0:1200".parse().unwrap();
        b.mptcp = false;
        assert_eq!(not_live(&a, &b), ["redirect", "mptcp"]);
        assert!(not_live(&a, &cfg("")).contains(&"key"));
        assert_eq!(
            not_live(&a, &cfg("warm_pool = 2\nmax_connections = 100\n")),
            ["key", "warm_pool"],
            "the caps change live"
        );
    }
}
