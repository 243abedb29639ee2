//! `braid gateway`: bonds the uplinks and carries LAN TCP through the relay.
//!
//! Start-up order matters for clean failure: resolve the relay, decide what TFO can do locally
//! (so `fast_open = "on"` fails before anything touches the kernel), install the per-uplink
//! kernel state, open the listeners, then install the capture table last, so LAN traffic is only
//! redirected once something listens. Shutdown removes everything in reverse, also after a
//! start-up error half-way.

mod capture;
pub mod dialer;
pub mod resolve;
pub mod running;
mod socks;
pub mod tfo_probe;
pub mod uplink;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use braid_proto::tfo::{self, Decision, Policy};
use tracing::{info, warn};

use crate::config::gateway::GatewayConfig;
use crate::config::FastOpen;
use crate::shutdown::Shutdown;
use dialer::Dialer;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The relay's name did not resolve.
    #[error(transparent)]
    Resolve(#[from] resolve::ResolveError),
    /// `fast_open = "on"` and TFO cannot work.
    #[error("fast_open = \"on\", but TCP Fast Open cannot work: {0}")]
    FastOpen(String),
    /// Per-uplink kernel state could not be installed.
    #[error(transparent)]
    Uplink(#[from] uplink::kernel::UplinkError),
    /// A listener could not be opened.
    #[error("cannot listen on {addr} for {what}: {source}; fix: change `{what}` in the config or stop the program holding the port")]
    Listen {
        /// The config key.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The kernel's error.
        #[source]
        source: std::io::Error,
    },
    /// The capture table could not be installed.
    #[error(transparent)]
    Nft(#[from] braid_sys::nftables::NftError),
    /// Netlink could not be opened at all.
    #[error(transparent)]
    Netlink(#[from] braid_sys::netlink::NetlinkError),
}

fn policy(f: FastOpen) -> Policy {
    match f {
        FastOpen::Auto => Policy::Auto,
        FastOpen::On => Policy::On,
        FastOpen::Off => Policy::Off,
    }
}

fn log_decision(d: &Decision) {
    if d.enabled {
        info!("TCP Fast Open on: {}", d.reason);
    } else {
        warn!("TCP Fast Open off: {}", d.reason);
    }
}

/// Runs the gateway until `shutdown`, then removes every piece of kernel state it added.
pub async fn run(cfg: GatewayConfig, shutdown: Shutdown) -> Result<(), GatewayError> {
    let relay = resolve::relay(&cfg.server).await?;
    let facts = tfo_probe::local_facts(relay, cfg.mptcp);
    let dialer = Dialer::new(&cfg, relay).map_err(|source| GatewayError::Listen {
        what: "server",
        addr: relay,
        source,
    })?;
    let mut early = tfo::decide(policy(cfg.fast_open), &facts);
    if early.is_none() && cfg.fast_open == FastOpen::On {
        // "on" must fail at start-up when TFO cannot work, so its end-to-end check runs now.
        let mut f = facts.clone();
        tfo_probe::probe_relay(&dialer, &mut f).await;
        early = tfo::decide(Policy::On, &f);
    }
    if let Some(d) = &early {
        if d.fatal {
            return Err(GatewayError::FastOpen(d.reason.clone()));
        }
    }
    let rtnl = braid_sys::netlink::Rtnl::connect()?;
    let pm = braid_sys::mptcp::pm::MptcpPm::connect()
        .await
        .map_err(uplink::kernel::UplinkError::from)?;
    // The manager stops on the daemon's shutdown, or when serving fails to start.
    let (stop, stop_rx) = crate::shutdown::channel();
    let stop = Arc::new(stop);
    let outer = {
        let stop = stop.clone();
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            shutdown.wait().await;
            stop.fire();
        })
    };
    let (view_tx, view_rx) = tokio::sync::watch::channel(uplink::ManagerView::default());
    let registry = Arc::new(crate::status::registry::Registry::default());
    let status =
        crate::status::gateway::GatewayStatus::new(registry.clone(), view_rx, dialer.clone());
    let mut manager = tokio::spawn(uplink::run(
        cfg.clone(),
        cfg.health.clone(),
        rtnl,
        pm,
        dialer.clone(),
        view_tx,
        stop_rx,
    ));
    // The manager only returns early when it cannot work at all (e.g. MPTCP limits refused):
    // then the gateway stops too, rather than run without its uplinks.
    let (result, manager_done) = tokio::select! {
        r = serve(&cfg, dialer, status, early, facts, shutdown) => (r, None),
        m = &mut manager => (Err(manager_error(m)), Some(())),
    };
    stop.fire();
    outer.abort();
    if !cfg.lan.is_empty() {
        if let Err(e) = braid_sys::nftables::delete_table(&cfg.nft_table) {
            warn!("removing nftables table inet {}: {e}", cfg.nft_table);
        }
    }
    if manager_done.is_none() {
        if let Err(e) = manager
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()))
        {
            warn!("uplink manager: {e}");
        }
    }
    info!("gateway stopped; kernel state removed");
    result
}

fn manager_error(
    m: Result<Result<(), uplink::kernel::UplinkError>, tokio::task::JoinError>,
) -> GatewayError {
    match m {
        Ok(Err(e)) => GatewayError::Uplink(e),
        Ok(Ok(())) => GatewayError::Uplink(uplink::kernel::UplinkError::Stopped),
        Err(e) => GatewayError::Uplink(uplink::kernel::UplinkError::Panicked(e.to_string())),
    }
}

async fn serve(
    cfg: &GatewayConfig,
    dialer: Arc<Dialer>,
    status: Arc<crate::status::gateway::GatewayStatus>,
    early: Option<Decision>,
    facts: braid_proto::tfo::Facts,
    mut shutdown: Shutdown,
) -> Result<(), GatewayError> {
    let mut tasks = Vec::new();
    match early {
        Some(d) => {
            log_decision(&d);
            dialer.set_tfo_decision(d.enabled, &d.reason);
        }
        None => tasks.push(tokio::spawn(decide_tfo(
            dialer.clone(),
            policy(cfg.fast_open),
            facts,
            status.clone(),
        ))),
    }
    tasks.push(tokio::spawn(status.clone().sample_forever()));
    if let Some(addr) = cfg.control {
        let src: Arc<dyn crate::control::StatusSource> = status.clone();
        let h = crate::control::start(addr, src, shutdown.clone())
            .await
            .map_err(|source| GatewayError::Listen {
                what: "control",
                addr,
                source,
            })?;
        tasks.push(h);
    }
    let registry = status.registry.clone();
    let idle = cfg.idle_timeout;
    let redirect = bind(cfg.redirect, "redirect")?;
    info!(
        "transparent listener on {}",
        redirect.local_addr().unwrap_or(cfg.redirect)
    );
    tasks.push(tokio::spawn(capture::serve(
        redirect,
        dialer.clone(),
        registry.clone(),
        idle,
        shutdown.clone(),
    )));
    if let Some(addr) = cfg.socks {
        let l = bind(addr, "socks")?;
        info!("SOCKS5 listener on {}", l.local_addr().unwrap_or(addr));
        tasks.push(tokio::spawn(socks::serve(
            l,
            dialer.clone(),
            registry.clone(),
            idle,
            shutdown.clone(),
        )));
    }
    if !cfg.lan.is_empty() {
        braid_sys::nftables::CaptureRules {
            table: cfg.nft_table.clone(),
            lan: cfg.lan.iter().map(|l| l.to_string()).collect(),
            redirect_port: cfg.redirect.port(),
            exclude: vec![dialer.relay().ip()],
        }
        .apply()?;
        info!(
            "capturing TCP from {} (nftables table inet {})",
            cfg.lan
                .iter()
                .map(|l| l.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            cfg.nft_table
        );
    }
    info!(
        "gateway up: relay {}, {} uplink(s)",
        dialer.relay(),
        cfg.uplinks.len()
    );
    shutdown.wait().await;
    for t in tasks {
        t.abort();
    }
    Ok(())
}

fn bind(addr: SocketAddr, what: &'static str) -> Result<tokio::net::TcpListener, GatewayError> {
    let l = braid_sys::socket::listen(
        addr,
        braid_sys::socket::ListenOptions {
            mptcp: false,
            fastopen_qlen: None,
            backlog: 1024,
        },
    )
    .map_err(|source| GatewayError::Listen { what, addr, source })?;
    tokio::net::TcpListener::from_std(l.listener).map_err(|source| GatewayError::Listen {
        what,
        addr,
        source,
    })
}

/// Probes the relay until the evidence is conclusive, then sets the dialer's TFO switch and says
/// why, once. A relay that cannot be reached yet is retried every 30 s.
async fn decide_tfo(
    dialer: Arc<Dialer>,
    policy: Policy,
    facts: braid_proto::tfo::Facts,
    status: Arc<crate::status::gateway::GatewayStatus>,
) {
    let mut said_waiting = false;
    loop {
        let mut f = facts.clone();
        match tfo_probe::probe_relay(&dialer, &mut f).await {
            Some(r) => {
                info!(
                    "relay is braid {} on Linux {}; the probe connection was {} with {} subflow(s)",
                    r.version, r.kernel, r.connection.transport, r.connection.subflows
                );
                if let Ok(mut relay) = status.relay.lock() {
                    *relay = Some(crate::status::model::RelayInfo {
                        address: dialer.relay().to_string(),
                        version: r.version,
                        kernel: r.kernel,
                    });
                }
            }
            // A stock relay and an unreachable one both fail the control request; only the
            // second is worth waiting for.
            None if dialer.connect_raw(false).await.is_err() => {
                if !said_waiting {
                    warn!("TCP Fast Open off for now: the relay {} cannot be reached yet; braid will check again every 30 s", dialer.relay());
                    said_waiting = true;
                }
                tokio::time::sleep(Duration::from_secs(30)).await;
                continue;
            }
            None => {}
        }
        let d = tfo::decide(policy, &f).unwrap_or(Decision {
            enabled: false,
            reason: "the relay gave no evidence".into(),
            fatal: false,
        });
        log_decision(&d);
        dialer.set_tfo_decision(d.enabled, &d.reason);
        return;
    }
}
