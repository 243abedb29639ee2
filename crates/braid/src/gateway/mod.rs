//! `braid gateway`: bonds the uplinks and carries LAN TCP through the relay.
//!
//! Start-up order matters for clean failure: the caller first undoes what an earlier run left in
//! the kernel ([`recover`], from the state record, see [`crate::state`]), then binds the listeners
//! ([`Listeners::bind`], so a port in use fails before anything else happens), then [`run`]
//! resolves the relay, decides what TFO can do locally (so `fast_open = "on"` fails before
//! anything touches the kernel), installs the per-uplink kernel state, starts serving, and
//! installs the capture table last, so LAN traffic is only redirected once something listens.
//! Shutdown drains the connections, then removes everything in reverse, also after a start-up
//! error half-way. Every kernel change is noted in the state record before it is made, so a
//! SIGKILL at any point is undone by the next start.
//!
//! With no uplinks (a config file must name one; the library accepts none) nothing is bonded and
//! the kernel's routing and MPTCP state is left alone: relay connections follow the main routing
//! table. That is how tests run a gateway without root.

mod capture;
pub mod dialer;
pub mod lost_join;
pub mod pool;
pub mod reload;
pub mod resolve;
pub mod running;
mod socks;
pub mod stranded;
pub mod tfo_probe;
pub mod udp;
pub mod uplink;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use braid_proto::tfo::{self, Decision, Policy};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tracing::{info, warn};

use crate::allow_from::{self, AllowFrom};
use crate::config::gateway::GatewayConfig;
use crate::config::FastOpen;
use crate::listener::Listener;
use crate::shutdown::Shutdown;
use crate::state::{Journal, StateError};
use crate::status::gateway::GatewayStatus;
use crate::status::registry::Registry;
use dialer::{Dialer, RelayStream};

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
    /// The record of braid's kernel changes cannot be kept or reconciled.
    #[error(transparent)]
    State(#[from] StateError),
    /// A LAN-facing listener's address does not say who may use it.
    #[error(transparent)]
    Bind(#[from] allow_from::BindError),
    /// LAN UDP could not be captured.
    #[error(transparent)]
    Udp(#[from] udp::UdpError),
}

/// The role and instance name of the gateway's state record: `gateway-<nft_table>.json`.
const STATE_ROLE: &str = "gateway";

/// Undoes what an earlier gateway with this config left in the kernel (killed, crashed, or its
/// start failed), before anything else happens. See [`crate::state`].
pub async fn recover(cfg: &GatewayConfig) -> Result<(), GatewayError> {
    Ok(crate::state::recover(&cfg.state_dir, STATE_ROLE, &cfg.nft_table).await?)
}

/// Whether this config makes the gateway change kernel state (and so keep a record of it).
fn changes_kernel(cfg: &GatewayConfig) -> bool {
    !cfg.uplinks.is_empty() || !cfg.lan.is_empty() || cfg.mptcp_blackhole_timeout.is_some()
}

fn log_decision(d: &Decision) {
    if d.enabled {
        info!("TCP Fast Open on: {}", d.reason);
    } else {
        warn!("TCP Fast Open off: {}", d.reason);
    }
}

/// The gateway's listening sockets, bound before [`run`] (by [`Listeners::bind`] from the config,
/// or by a test on port 0).
pub struct Listeners {
    /// Transparent capture (`redirect`); the capture table redirects to its port.
    pub redirect: TcpListener,
    /// SOCKS5 (`socks`), if wanted.
    pub socks: Option<TcpListener>,
    /// The HTTP status API (`control`), if wanted.
    pub status_http: Option<TcpListener>,
    /// Who may use SOCKS5 (see [`crate::allow_from`]).
    pub socks_allow: AllowFrom,
    /// Who may read the status API (sources), and how (Host names, token).
    pub status_access: crate::status::http::Access,
    /// The TPROXY sockets for LAN UDP, on the redirect port (when `lan` is set and `udp` on).
    pub udp: Option<udp::LanSockets>,
}

impl Listeners {
    /// Binds every listener the config asks for; an address in use fails here, naming its key,
    /// and so does a SOCKS5 or status address that is neither loopback nor on a `lan` interface
    /// without a list of who may connect.
    pub async fn bind(cfg: &GatewayConfig) -> Result<Listeners, GatewayError> {
        let socks_allow = match cfg.socks {
            Some(addr) => allow_from::for_bind("socks", addr, &cfg.socks_allow_from, &cfg.lan)?,
            None => AllowFrom::default(),
        };
        let control_allow = match cfg.control {
            Some(addr) => {
                allow_from::for_bind("control", addr, &cfg.control_access.allow_from, &cfg.lan)?
            }
            None => AllowFrom::default(),
        };
        let status_http = match cfg.control {
            Some(addr) => Some(crate::status::http::bind(addr).await.map_err(|source| {
                GatewayError::Listen {
                    what: "control",
                    addr,
                    source,
                }
            })?),
            None => None,
        };
        let redirect = bind_redirect(cfg.redirect)?;
        let udp = match (&cfg.udp, cfg.lan.is_empty()) {
            (Some(_), false) => {
                let port = redirect
                    .local_addr()
                    .map_or(cfg.redirect.port(), |a| a.port());
                Some(udp::LanSockets::bind(port)?)
            }
            _ => None,
        };
        Ok(Listeners {
            redirect,
            socks: cfg.socks.map(|a| bind(a, "socks")).transpose()?,
            status_http,
            socks_allow,
            status_access: crate::status::http::Access::new(control_allow, &cfg.control_access),
            udp,
        })
    }
}

/// Binds `redirect`; the dual-stack default `[::]` falls back to `0.0.0.0` on a host whose
/// kernel has no IPv6 at all (EAFNOSUPPORT), where only IPv4 can be captured anyway.
fn bind_redirect(addr: SocketAddr) -> Result<TcpListener, GatewayError> {
    match bind(addr, "redirect") {
        Err(GatewayError::Listen { source, .. })
            if addr.ip() == std::net::Ipv6Addr::UNSPECIFIED
                && source.raw_os_error() == Some(libc::EAFNOSUPPORT) =>
        {
            let v4 = SocketAddr::from(([0, 0, 0, 0], addr.port()));
            warn!("this kernel has no IPv6, so the redirect listener takes IPv4 only ({v4})");
            bind(v4, "redirect")
        }
        other => other,
    }
}

fn bind(addr: SocketAddr, what: &'static str) -> Result<TcpListener, GatewayError> {
    let l = braid_sys::socket::listen(
        addr,
        braid_sys::socket::ListenOptions {
            mptcp: false,
            fastopen_qlen: None,
            backlog: 1024,
        },
    )
    .map_err(|source| GatewayError::Listen { what, addr, source })?;
    TcpListener::from_std(l.listener).map_err(|source| GatewayError::Listen { what, addr, source })
}

/// Runs the gateway on `listeners` until `shutdown`, then drains the connections and removes
/// every piece of kernel state it added. What it changes is noted in its state record first
/// (after undoing what an earlier run left there), and the record is deleted at the end once
/// the kernel is as it was found.
pub async fn run(
    cfg: GatewayConfig,
    listeners: Listeners,
    shutdown: Shutdown,
) -> Result<(), GatewayError> {
    run_reloadable(cfg, listeners, shutdown, None).await
}

/// [`run`], re-reading the config on each of `reload`'s signals (see [`reload`]), and telling
/// systemd READY=1 once the listeners, the capture table and the uplinks' first reconcile are up.
pub async fn run_reloadable(
    cfg: GatewayConfig,
    listeners: Listeners,
    shutdown: Shutdown,
    reload: Option<reload::Reload>,
) -> Result<(), GatewayError> {
    let journal = if changes_kernel(&cfg) {
        Some(Journal::open(&cfg.state_dir, STATE_ROLE, &cfg.nft_table).await?)
    } else {
        None
    };
    let result = run_recorded(cfg, listeners, shutdown, journal.clone(), reload).await;
    if let Some(j) = journal {
        j.finish().await;
    }
    result
}

async fn run_recorded(
    cfg: GatewayConfig,
    listeners: Listeners,
    shutdown: Shutdown,
    journal: Option<Arc<Journal>>,
    reload: Option<reload::Reload>,
) -> Result<(), GatewayError> {
    let relay = resolve::relay(&cfg.server).await?;
    let facts = crate::fast_open::client_facts(
        relay,
        cfg.mptcp,
        &braid_sys::sysctl::Procfs::default(),
        &braid_sys::kernel::KernelRelease::running().release,
    );
    let dialer = Dialer::new(&cfg, relay).map_err(|source| GatewayError::Listen {
        what: "server",
        addr: relay,
        source,
    })?;
    crate::congestion::log(dialer.congestion());
    dialer.attach_pool(pool::WarmPool::new(
        cfg.warm_pool,
        cfg.relay_handshake_timeout,
    ));
    let mut early = tfo::decide(cfg.fast_open, &facts);
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
    let (live_tx, live_rx) = tokio::sync::watch::channel(uplink::reload::Live {
        uplinks: cfg.uplinks.clone(),
        health: cfg.health.clone(),
    });
    let (up_tx, up_rx) = tokio::sync::oneshot::channel();
    let ready = tokio::spawn(reload::ready_when_up(
        up_rx,
        view_rx.clone(),
        !cfg.uplinks.is_empty(),
    ));
    // Before the follower: a reload may change the caps.
    let admission = crate::admission::for_daemon(&cfg.limits);
    let follower = reload.map(|r| tokio::spawn(r.follow(cfg.clone(), live_tx, admission.clone())));
    let registry = Arc::new(Registry::default());
    let view_rx_udp = view_rx.clone();
    let tcp_mem = crate::status::kernel::KernelWatch::system();
    let status = GatewayStatus::new(registry.clone(), view_rx, dialer.clone(), tcp_mem);
    let served = uplink::Served {
        dialer: dialer.clone(),
        registry: registry.clone(),
    };
    let manager =
        match start_manager(&cfg, served, journal.clone(), view_tx, stop_rx, live_rx).await {
            Ok(m) => m,
            Err(e) => {
                outer.abort();
                return Err(e);
            }
        };
    let tfo = TfoStart { early, facts };
    let asked = shutdown.clone();
    let serving = serve(
        &cfg,
        listeners,
        dialer,
        (status, view_rx_udp),
        tfo,
        journal,
        shutdown,
        up_tx,
        admission,
    );
    // The manager only returns early when it cannot work at all (e.g. MPTCP limits refused):
    // then the gateway stops too, rather than run without its uplinks. At a shutdown it
    // returns at once, while the listeners still drain their connections: that is no error.
    tokio::pin!(serving);
    let (result, manager) = match manager {
        None => (serving.await, None),
        Some(mut m) => tokio::select! {
            r = &mut serving => (r, Some(m)),
            done = &mut m => match done {
                Ok(Ok(())) if asked.requested() => (serving.await, None),
                done => (Err(manager_error(done)), None),
            },
        },
    };
    stop.fire();
    outer.abort();
    ready.abort();
    if let Some(f) = follower {
        f.abort();
    }
    if !cfg.lan.is_empty() {
        if let Err(e) = braid_sys::nftables::delete_table(&cfg.nft_table) {
            warn!("removing nftables table inet {}: {e}", cfg.nft_table);
        }
    }
    if let Some(manager) = manager {
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

type ManagerTask = JoinHandle<Result<(), uplink::kernel::UplinkError>>;

/// Starts the uplink manager, which installs and heals the per-uplink kernel state; with no
/// uplinks there is nothing to manage, and netlink is not even opened.
async fn start_manager(
    cfg: &GatewayConfig,
    served: uplink::Served,
    journal: Option<Arc<Journal>>,
    view: tokio::sync::watch::Sender<uplink::ManagerView>,
    stop: Shutdown,
    live: tokio::sync::watch::Receiver<uplink::reload::Live>,
) -> Result<Option<ManagerTask>, GatewayError> {
    let Some(journal) = journal.filter(|_| !cfg.uplinks.is_empty()) else {
        info!("no uplinks configured: nothing is bonded, relay connections follow the main routing table");
        return Ok(None);
    };
    let rtnl = braid_sys::netlink::Rtnl::connect()?;
    let pm = braid_sys::mptcp::pm::MptcpPm::connect()
        .await
        .map_err(uplink::kernel::UplinkError::from)?;
    // Before anything of this run is installed (the uplinks' state here, the UDP capture's
    // policy routing in `serve`), so that only a crashed run's leftovers go.
    uplink::kernel::remove_leftovers(&rtnl).await;
    Ok(Some(tokio::spawn(uplink::run(
        cfg.clone(),
        cfg.health.clone(),
        uplink::KernelAccess { rtnl, pm, journal },
        served,
        view,
        stop,
        live,
    ))))
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

/// What the LAN-facing listeners (capture and SOCKS5) need to carry a connection to the relay.
#[derive(Clone)]
struct Carrier {
    dialer: Arc<Dialer>,
    registry: Arc<Registry>,
    /// `idle_timeout_secs`.
    idle: Duration,
    /// Lines about one LAN client (refusals, failures): at most one a minute each.
    log: Arc<crate::log_limit::PerSourceLog>,
}

impl Carrier {
    /// Relays `lan` over `remote`, listed in status as `label` while it lasts. A relay that
    /// ends in error resets `lan`: a FIN would let the LAN client take a broken transfer for a
    /// whole one.
    async fn carry(
        &self,
        label: String,
        lan: &mut TcpStream,
        remote: &mut RelayStream,
    ) -> (crate::relay::Moved, crate::relay::End) {
        let r = dialer::carry(&self.dialer, &self.registry, label, lan, remote, self.idle).await;
        if matches!(r.1, crate::relay::End::Error(_)) {
            crate::listener::reset(lan);
        }
        r
    }
}

/// What start-up knows of TCP Fast Open: a decision already (`fast_open = "on"`/`"off"` or
/// local facts that settle it), or the facts to probe the relay with.
struct TfoStart {
    early: Option<Decision>,
    facts: braid_proto::tfo::Facts,
}

/// Serves until `shutdown`: the listeners, the HTTP status API and the TFO decision, with the
/// capture table installed (noted in `journal` first) once the redirect listener is served.
/// Returns after the listeners drained; on an error every task started here is aborted.
// One argument per thing serving needs; `up` tells systemd's readiness task it is serving.
#[allow(clippy::too_many_arguments)]
async fn serve(
    cfg: &GatewayConfig,
    mut listeners: Listeners,
    dialer: Arc<Dialer>,
    (status, view): (
        Arc<GatewayStatus>,
        tokio::sync::watch::Receiver<uplink::ManagerView>,
    ),
    tfo: TfoStart,
    journal: Option<Arc<Journal>>,
    mut shutdown: Shutdown,
    up: tokio::sync::oneshot::Sender<()>,
    admission: Arc<crate::admission::Admission>,
) -> Result<(), GatewayError> {
    let TfoStart { early, facts } = tfo;
    // Both sets abort their tasks when dropped, also on an early return.
    let mut background = JoinSet::new();
    let mut serving = JoinSet::new();
    match early {
        Some(d) => {
            log_decision(&d);
            dialer.set_tfo_decision(d.enabled, &d.reason);
        }
        None => {
            background.spawn(decide_tfo(
                dialer.clone(),
                cfg.fast_open,
                facts,
                status.clone(),
            ));
        }
    }
    if let Some(p) = dialer.pool() {
        background.spawn(p.clone().run(dialer.clone(), status.uplink_view()));
    }
    background.spawn(status.clone().sample_forever());
    background.spawn(status.tcp_mem.clone().watch_forever());
    let udp_tproxy = match (listeners.udp.take(), &cfg.udp) {
        (Some(sockets), Some(udp_cfg)) => {
            // TPROXY's rule and local route (protocol 212) live in their own table: recorded
            // first, so that a crashed run's are removed even by a start that fails early.
            if let Some(j) = &journal {
                j.note_route_tables(&[crate::config::udp::TPROXY_TABLE]);
            }
            let rtnl = braid_sys::netlink::Rtnl::connect()?;
            let capture = udp::UdpCapture::start(cfg, udp_cfg, dialer.clone(), &rtnl).await?;
            status.set_udp(capture.clone());
            let port = sockets.port();
            udp::log_start(cfg, port);
            serving.spawn(capture.run(sockets, view, rtnl, shutdown.clone()));
            Some(braid_sys::nftables::UdpTproxy {
                port,
                mark: crate::config::udp::TPROXY_MARK,
            })
        }
        _ => None,
    };
    let carrier = Carrier {
        dialer: dialer.clone(),
        registry: status.registry.clone(),
        idle: cfg.idle_timeout,
        log: Arc::new(crate::log_limit::PerSourceLog::new(Duration::from_secs(60))),
    };
    let redirect_port = spawn_listeners(
        &mut serving,
        listeners,
        carrier,
        status,
        admission,
        &shutdown,
        cfg.redirect.port(),
    );
    if !cfg.lan.is_empty() {
        if let Some(j) = &journal {
            j.note_nft_table(&cfg.nft_table);
        }
        let mut rules = capture_rules(cfg, redirect_port, dialer.relay().ip());
        rules.udp = udp_tproxy;
        rules.apply()?;
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
    let _ = up.send(());
    shutdown.wait().await;
    background.abort_all();
    while serving.join_next().await.is_some() {}
    Ok(())
}

/// The capture table for `cfg`: LAN TCP to `redirect_port`, except to the relay, to the
/// non-global ranges and `bypass` (unless in `capture`), and to destinations routed elsewhere
/// than through an uplink.
fn capture_rules(
    cfg: &GatewayConfig,
    redirect_port: u16,
    relay: std::net::IpAddr,
) -> braid_sys::nftables::CaptureRules {
    let mut bypass = braid_proto::destination::non_global_ranges();
    bypass.extend(cfg.bypass.iter().copied());
    braid_sys::nftables::CaptureRules {
        table: cfg.nft_table.clone(),
        lan: cfg.lan.clone(),
        redirect_port,
        exclude: vec![relay],
        bypass,
        capture: cfg.capture.clone(),
        uplinks: cfg.uplinks.iter().map(|u| u.interface.clone()).collect(),
        udp: None,
    }
}

/// Serves the HTTP status API and the LAN-facing listeners on `serving`, each until `shutdown`.
/// Returns the port the capture table must redirect to.
fn spawn_listeners(
    serving: &mut JoinSet<()>,
    listeners: Listeners,
    carrier: Carrier,
    status: Arc<GatewayStatus>,
    admission: Arc<crate::admission::Admission>,
    shutdown: &Shutdown,
    configured_redirect_port: u16,
) -> u16 {
    if let Some(l) = listeners.status_http {
        let src: Arc<dyn crate::status::http::StatusSource> = status;
        serving.spawn(crate::status::http::serve(
            l,
            src,
            listeners.status_access,
            shutdown.clone(),
        ));
    }
    let own = listeners.redirect.local_addr().ok();
    if let Some(a) = own {
        info!("transparent listener on {a}");
    }
    let capture = capture::Capture {
        carrier: carrier.clone(),
    };
    let redirect = Listener::new(
        "redirect",
        listeners.redirect,
        Arc::new(capture),
        admission.clone(),
    );
    let sd = shutdown.clone();
    serving.spawn(async move {
        redirect.run(sd).await;
    });
    if let Some(l) = listeners.socks {
        let socks = Listener::new("SOCKS5", l, Arc::new(socks::Socks { carrier }), admission)
            .allow_from(listeners.socks_allow);
        if let Ok(a) = socks.local_addr() {
            info!("SOCKS5 listener on {a}");
        }
        let sd = shutdown.clone();
        serving.spawn(async move {
            socks.run(sd).await;
        });
    }
    own.map_or(configured_redirect_port, |a| a.port())
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
