//! `braid server`: the relay on the VPS.
//!
//! It accepts Shadowsocks-2022 streams on an MPTCP listener, records for every connection whether
//! it is really MPTCP (and with how many subflows) or fell back to TCP, answers braid's control
//! requests, and relays everything else to destinations its policy allows. Shadowsocks-2022 UDP
//! is relayed on the same address and port ([`udp`]).

mod connection;
pub use connection::transport_of;
mod control;
mod own_addrs;
pub mod path_manager;
pub mod reload;
mod salt_store;
pub(crate) mod salts;
mod tfo_push;
pub use own_addrs::OwnAddrs;
pub use path_manager::View as PathManagerView;
mod stream;
mod udp;
mod upstream;
pub use udp::UdpRelay;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use braid_proto::destination::DestinationPolicy;
use braid_proto::tfo::{decide_listener, Decision};
use braid_sys::socket::{self, ListenOptions, Transport};
use shadowsocks::config::ServerType;
use shadowsocks::context::Context;
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::config::server::ServerConfig;
use crate::config::FastOpen;
use crate::listener::Listener;
use crate::shutdown::Shutdown;

/// How often one client's rejected handshakes are logged.
const REJECT_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// Why the relay could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// bind/listen failed.
    #[error("cannot listen on {addr}: {source}; fix: pick a free port in `listen`, or stop the program that holds it (ss -ltnp)")]
    Listen {
        /// The configured address.
        addr: SocketAddr,
        /// The kernel's error.
        #[source]
        source: std::io::Error,
    },
    /// `fast_open = "on"` but the kernel cannot do TFO on this listener.
    #[error("fast_open = \"on\", but TCP Fast Open cannot work on this listener: {reason}")]
    FastOpen {
        /// Why, with the fix.
        reason: String,
    },
}

/// Counters of accepted connections by transport.
#[derive(Debug, Default)]
pub struct ServerStats {
    /// Accepted connections that are live MPTCP.
    pub mptcp: AtomicU64,
    /// MPTCP sockets that fell back to plain TCP.
    pub fallback: AtomicU64,
    /// Clients that did not ask for MPTCP.
    pub tcp: AtomicU64,
}

/// The relay's listening sockets, bound before the [`Server`] is made (by [`Listeners::bind`]
/// from the config, or by a test on port 0).
pub struct Listeners {
    /// The relay (`listen`).
    pub relay: TcpListener,
    /// Whether `relay` takes TCP Fast Open, and why.
    pub relay_tfo: Decision,
    /// The UDP relay's socket, on `relay`'s address and port (`None` when `udp = false`).
    pub relay_udp: Option<tokio::net::UdpSocket>,
    /// The HTTP status API (`control`), if wanted and its port was free.
    pub status_http: Option<TcpListener>,
}

impl Listeners {
    /// Binds the relay listener, deciding MPTCP and TFO now so that the log says once what is
    /// used, and the HTTP status API (a port in use there only costs the API, with a warning).
    pub async fn bind(cfg: &ServerConfig) -> Result<Listeners, ServerError> {
        let (relay, relay_tfo) = bind_relay(cfg)?;
        let relay_udp = match cfg.udp {
            Some(_) => Some(bind_udp(relay.local_addr().unwrap_or(cfg.listen))?),
            None => None,
        };
        let status_http = match cfg.control {
            Some(addr) => match crate::status::http::bind(addr).await {
                Ok(l) => Some(l),
                Err(e) => {
                    warn!("HTTP status API not started: cannot listen on {addr}: {e}; fix: change `control` in server.toml");
                    None
                }
            },
            None => None,
        };
        Ok(Listeners {
            relay,
            relay_tfo,
            relay_udp,
            status_http,
        })
    }
}

/// The UDP relay's socket on the TCP listener's address (its real port when `listen` asked for
/// port 0).
fn bind_udp(addr: SocketAddr) -> Result<tokio::net::UdpSocket, ServerError> {
    let listen = |source| ServerError::Listen { addr, source };
    let std = braid_sys::socket::udp_bind(addr).map_err(listen)?;
    // Replies leave from the address each client wrote to (a host may have several).
    braid_sys::pktinfo::enable(&std).map_err(listen)?;
    tokio::net::UdpSocket::from_std(std).map_err(listen)
}

/// The MPTCP listener of `listen`, with TFO when [`decide_listener`] says the kernel takes it
/// (the same decision `braid doctor` reports).
fn bind_relay(cfg: &ServerConfig) -> Result<(TcpListener, Decision), ServerError> {
    let facts = crate::fast_open::listener_facts(
        cfg.listen,
        cfg.mptcp,
        &braid_sys::sysctl::Procfs::default(),
        &braid_sys::kernel::KernelRelease::running().release,
    );
    let tfo = decide_listener(cfg.fast_open, &facts);
    if tfo.fatal {
        return Err(ServerError::FastOpen { reason: tfo.reason });
    }
    if !tfo.enabled && cfg.fast_open != FastOpen::Off {
        warn!("TCP Fast Open off on the listener: {}", tfo.reason);
    }
    let opts = ListenOptions {
        mptcp: cfg.mptcp,
        fastopen_qlen: tfo.enabled.then_some(1024),
        backlog: 1024,
    };
    let bound = socket::listen(cfg.listen, opts).map_err(|source| ServerError::Listen {
        addr: cfg.listen,
        source,
    })?;
    if let Some(why) = &bound.mptcp_unavailable {
        warn!("MPTCP UNAVAILABLE, relaying over plain TCP: {why}. Gateways will get no bonding until this is fixed.");
    }
    let listener = TcpListener::from_std(bound.listener).map_err(|source| ServerError::Listen {
        addr: cfg.listen,
        source,
    })?;
    let local = listener.local_addr().unwrap_or(cfg.listen);
    info!(
        "listening on {local} ({}{}), method {}",
        if bound.transport == Transport::Mptcp {
            "MPTCP"
        } else {
            "plain TCP"
        },
        if tfo.enabled {
            ", TCP Fast Open on"
        } else {
            ""
        },
        cfg.method
    );
    Ok((listener, tfo))
}

/// The tunnel for hostile paths on `tunnel_port` of the relay's address, if it is on; nothing
/// is opened until a gateway asks for a tunnel.
fn tunnels_of(
    cfg: &ServerConfig,
    bound: Option<SocketAddr>,
) -> Option<Arc<crate::tunnel::relay::Tunnels>> {
    let port = cfg.tunnel_port?;
    let ip = bound.map_or(cfg.listen.ip(), |b| b.ip());
    Some(Arc::new(crate::tunnel::relay::Tunnels::new(
        crate::tunnel::relay::TunnelConfig {
            listen: SocketAddr::new(ip, port),
            net: cfg.tunnel_net,
            psk: crate::tunnel::keys::preshared(&cfg.key),
            device: format!("braid{port}"),
        },
    )))
}

/// A relay over bound listeners, ready to run.
pub struct Server {
    listener: TcpListener,
    tfo: Decision,
    status_http: Option<TcpListener>,
    udp: Option<UdpRelay>,
    shared: Arc<Shared>,
}

struct Shared {
    cfg: ServerConfig,
    ctx: shadowsocks::context::SharedContext,
    /// Swapped by a SIGHUP reload (see [`reload`]).
    policy: reload::LivePolicy,
    own: OwnAddrs,
    stats: ServerStats,
    tfo_listener: bool,
    /// The congestion control of accepted relay sockets.
    congestion: braid_proto::congestion::Decision,
    registry: Arc<crate::status::registry::Registry>,
    admission: Arc<crate::admission::Admission>,
    /// Lines about one client (rejected handshakes, fallbacks): at most one a minute each.
    rejects: crate::log_limit::PerSourceLog,
    /// The salts of accepted requests, kept across a restart.
    salts: Arc<salt_store::SaltStore>,
    /// The tunnel for hostile paths (`tunnel_port`), started by the first gateway that asks.
    tunnels: Option<Arc<crate::tunnel::relay::Tunnels>>,
    /// The relay's path manager (`bond_after_kib`), once it runs.
    path_manager: std::sync::OnceLock<path_manager::Handle>,
    /// Joined subflows a connection may have, once known (control reports tell gateways).
    joins: std::sync::OnceLock<u32>,
}

impl Server {
    /// A relay for `cfg` on `listeners` (whose addresses may differ from the config's).
    pub fn new(cfg: ServerConfig, listeners: Listeners) -> Server {
        let mut ctx = Context::new(ServerType::Server);
        ctx.set_replay_attack_policy(shadowsocks::config::ReplayAttackPolicy::Reject);
        let salts = salt_store::SaltStore::open(
            salt_store::path(&cfg.state_dir, cfg.listen.port()),
            &ctx,
            cfg.method.cipher(),
        );
        let policy = DestinationPolicy {
            allow: cfg.allow_destinations.clone(),
        };
        let congestion =
            crate::congestion::decide(&cfg.congestion, &braid_sys::sysctl::Procfs::default());
        crate::congestion::log(&congestion);
        let tunnels = tunnels_of(&cfg, listeners.relay.local_addr().ok());
        let shared = Shared {
            tunnels,
            ctx: Arc::new(ctx),
            policy: reload::LivePolicy::new(policy),
            own: OwnAddrs::new(cfg.public_addresses.clone()),
            stats: ServerStats::default(),
            tfo_listener: listeners.relay_tfo.enabled,
            congestion,
            registry: Arc::new(crate::status::registry::Registry::default()),
            admission: crate::admission::for_daemon(&cfg.limits),
            rejects: crate::log_limit::PerSourceLog::new(REJECT_LOG_EVERY),
            salts: Arc::new(salts),
            path_manager: std::sync::OnceLock::new(),
            joins: std::sync::OnceLock::new(),
            cfg,
        };
        let shared = Arc::new(shared);
        let udp = match (listeners.relay_udp, shared.cfg.udp) {
            (Some(socket), Some(limits)) => Some(UdpRelay::new(socket, shared.clone(), limits)),
            _ => None,
        };
        Server {
            listener: listeners.relay,
            tfo: listeners.relay_tfo,
            status_http: listeners.status_http,
            udp,
            shared,
        }
    }

    /// What a SIGHUP reload may change while the relay runs.
    pub fn reloader(&self) -> reload::Reloader {
        reload::Reloader::new(self.shared.clone())
    }

    /// The relay's bound address (the port is real when the config asked for port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Starts the relay's path manager when `bond_after_kib` asks for it; when it cannot run,
    /// says why and leaves subflows to the in-kernel path manager.
    async fn start_path_manager(
        &self,
        shutdown: &Shutdown,
    ) -> (Option<path_manager::Running>, PathManagerView) {
        let cfg = &self.shared.cfg;
        let off = |why: String| (None, PathManagerView::Off(path_manager::inactive(why)));
        if !cfg.mptcp {
            return off("mptcp = false".into());
        }
        let kernel_joins = || async {
            if let Some(n) = path_manager::kernel_joins_at_start(cfg.max_joins).await {
                let _ = self.shared.joins.set(n);
            }
        };
        let Some(after) = cfg.bond_after else {
            kernel_joins().await;
            return off("bond_after_kib = 0: every subflow carries data from its start (the in-kernel path manager)".into());
        };
        let port = match self.listener.local_addr() {
            Ok(a) => a.port(),
            Err(e) => return off(format!("the relay's port is unknown ({e})")),
        };
        let started = path_manager::start(
            after,
            cfg.max_joins,
            vec![port],
            &cfg.state_dir,
            shutdown.clone(),
        );
        match started.await {
            Ok(running) => {
                let _ = self.shared.path_manager.set(running.handle().clone());
                let _ = self.shared.joins.set(cfg.max_joins as u32);
                let view = PathManagerView::On(running.handle().clone());
                (Some(running), view)
            }
            Err(why) => {
                warn!("{why}; every subflow of a connection carries data from its start (set bond_after_kib = 0 to silence this)");
                kernel_joins().await;
                off(why)
            }
        }
    }

    /// Starts accepted connections with `initial_window` segments (a cgroup BPF program, held
    /// while the relay runs); when it cannot, says why and leaves the kernel's window.
    fn attach_initial_window(&self) -> crate::initial_window::Applied {
        let port = match self.listener.local_addr() {
            Ok(a) => a.port(),
            Err(e) => {
                return crate::initial_window::Applied {
                    guard: None,
                    segments: None,
                    why: format!("the relay's port is unknown ({e})"),
                    error: Some(e.to_string()),
                }
            }
        };
        let applied = crate::initial_window::apply(self.shared.cfg.initial_window, port);
        match &applied.error {
            None => info!("initial congestion window: {}", applied.why),
            Some(e) => warn!(
                "{}; accepted connections start with the kernel's window ({e}); fix: {}",
                applied.why,
                crate::initial_window::FIX
            ),
        }
        applied
    }

    /// The UDP relay, if `udp` is on.
    pub fn udp(&self) -> Option<&UdpRelay> {
        self.udp.as_ref()
    }

    /// Accepts and serves until `shutdown` fires, then drains the connections.
    pub async fn run(self, shutdown: Shutdown) {
        let (path_manager, pm_view) = self.start_path_manager(&shutdown).await;
        // Held until the relay stops: dropping it detaches the program.
        let initial_window = self.attach_initial_window();
        let tcp_mem = crate::status::kernel::KernelWatch::system();
        let tcp_mem_watch = tokio::spawn(tcp_mem.clone().watch_forever());
        let mut status_http = None;
        if let Some(l) = self.status_http {
            let src: Arc<dyn crate::status::http::StatusSource> =
                crate::status::server::ServerStatus::new(
                    self.shared.registry.clone(),
                    self.tfo.enabled,
                    self.tfo.reason.clone(),
                    tcp_mem,
                    crate::status::model::Congestion {
                        initial_window: initial_window.segments,
                        initial_window_reason: initial_window.why.clone(),
                        ..(&self.shared.congestion).into()
                    },
                    self.udp.clone(),
                    pm_view,
                );
            let access = &self.shared.cfg.control_access;
            let allow = crate::allow_from::AllowFrom::new(access.allow_from.clone());
            status_http = Some(tokio::spawn(crate::status::http::serve(
                l,
                src,
                crate::status::http::Access::new(allow, access),
                shutdown.clone(),
            )));
        }
        let udp = self.udp.map(|u| tokio::spawn(u.run(shutdown.clone())));
        let salts = self.shared.salts.clone();
        let keep_salts = tokio::spawn(salts.clone().keep(shutdown.clone()));
        let admission = self.shared.admission.clone();
        Listener::new("relay", self.listener, self.shared.clone(), admission)
            .run(shutdown)
            .await;
        if let Some(p) = path_manager {
            p.stop();
        }
        drop(initial_window);
        tcp_mem_watch.abort();
        if let Some(t) = &self.shared.tunnels {
            t.stop().await;
        }
        if let Some(u) = udp {
            let _ = u.await;
        }
        let _ = keep_salts.await;
        // The connections have drained: no salt comes after this write.
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || salts.save()).await {
            warn!("replay filter: {e}");
        }
        if let Some(h) = status_http {
            let _ = h.await;
        }
        let s = &self.shared.stats;
        info!(
            "relay stopped; connections served: {} MPTCP, {} fallen back to TCP, {} plain TCP",
            s.mptcp.load(Ordering::Relaxed),
            s.fallback.load(Ordering::Relaxed),
            s.tcp.load(Ordering::Relaxed)
        );
    }
}
