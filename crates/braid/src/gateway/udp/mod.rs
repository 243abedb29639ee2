//! The gateway's UDP: LAN UDP captured with TPROXY and carried to its destination as
//! Shadowsocks-2022 UDP through the relay, each session over one uplink chosen from the health
//! machine.
//!
//! ```text
//!  LAN host ─► nft capture_udp: mark, tproxy ─► fwmark rule → local ─► LanSockets (lan.rs)
//!                                    session per LAN source (session.rs) ─► seal ─► Paths
//!  relay ◄── the chosen uplink's socket (paths.rs) ◄───────────────────────────────┘
//!  relay ─► any uplink's socket ─► open ─► session by id ─► reply socket bound to the far end
//!                                                          ─► LAN host
//!  chosen uplink changes ─► moved.rs: one empty datagram per session over the new uplink, so a
//!                           braid relay's replies follow sessions that only receive
//! ```
//!
//! When UDP to the relay is blocked on every uplink (its probes go unanswered while braid's TCP
//! probes are answered: `probe.rs`), datagrams ride inside the bonded TCP connection instead
//! (`uot.rs`), until a probe gets through again.
//!
//! Kernel state: the `capture_udp` chain in braid's nftables table (installed with the TCP
//! capture), and the TPROXY policy routing (`ip rule fwmark 0xb1d lookup 100`, `local default
//! dev lo table 100`, both families, protocol 212), installed here, kept in place every few
//! seconds, and removed at shutdown.

mod lan;
mod moved;
mod paths;
mod probe;
mod session;
mod uot;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use braid_proto::control::{CONTROL_HOST, CONTROL_PORT};
use braid_proto::udp::blocked::{Reachability, Route};
use shadowsocks::relay::socks5::Address;
use std::time::{Duration, Instant};

use braid_sys::netlink::{NetlinkError, Rtnl};
use braid_sys::tproxy::TransparentUdp;
use braid_sys::tproxy_route::TproxyRouting;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::config::gateway::GatewayConfig;
use crate::config::udp::{GatewayUdp, UdpLimits, TPROXY_MARK, TPROXY_RULE_PRIORITY, TPROXY_TABLE};
use crate::datagram::Codec;
use crate::gateway::dialer::Dialer;
use crate::gateway::uplink::plan::RTPROT_BRAID;
use crate::gateway::uplink::{ManagerView, UplinkView};
use crate::shutdown::Shutdown;
use crate::status::model::{tenths, udp_list, UdpSessionStatus, UdpStatus, UdpTransport};
use crate::throttle::Throttle;
pub(crate) use paths::bind as uplink_socket;
use paths::Paths;
use session::Table;

/// How often the TPROXY routing is checked and put back if someone removed it.
const KEEP_ROUTING: Duration = Duration::from_secs(2);
/// How often idle sessions are looked for.
const SWEEP: Duration = Duration::from_secs(1);
/// How often a flood of bad datagrams or a full table is logged at most.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// The TPROXY policy routing braid installs (recorded as plain data for crash recovery).
pub const ROUTING: TproxyRouting = TproxyRouting {
    mark: TPROXY_MARK,
    table: TPROXY_TABLE,
    priority: TPROXY_RULE_PRIORITY,
    protocol: RTPROT_BRAID,
};

/// Why UDP capture could not start.
#[derive(Debug, thiserror::Error)]
pub enum UdpError {
    /// The transparent sockets could not be opened.
    #[error("cannot open the transparent UDP socket on port {port} ({source}); fix: run braid gateway as root (IP_TRANSPARENT needs CAP_NET_ADMIN) and free UDP port {port}, or set udp = false")]
    Bind {
        /// The port (the `redirect` port).
        port: u16,
        /// The kernel's error.
        #[source]
        source: std::io::Error,
    },
    /// A socket to the relay could not be opened.
    #[error("cannot open a UDP socket to the relay: {0}")]
    Socket(#[source] std::io::Error),
    /// The TPROXY policy routing could not be installed.
    #[error("cannot install the policy routing for captured UDP ({ROUTING}): {0}")]
    Routing(#[source] NetlinkError),
}

/// The TPROXY sockets, IPv4 and (when the kernel has it) IPv6, bound before the daemon starts
/// so a taken port fails early.
pub struct LanSockets {
    v4: TransparentUdp,
    v6: Option<TransparentUdp>,
}

impl LanSockets {
    /// Binds `0.0.0.0:PORT` and `[::]:PORT` with `IP_TRANSPARENT`.
    pub fn bind(port: u16) -> Result<LanSockets, UdpError> {
        let bind = |a: SocketAddr| {
            TransparentUdp::bind(a).map_err(|source| UdpError::Bind { port, source })
        };
        let v4 = bind(SocketAddr::from(([0, 0, 0, 0], port)))?;
        let v6 = match bind(SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port))) {
            Ok(s) => Some(s),
            Err(UdpError::Bind { source, .. })
                if source.raw_os_error() == Some(libc::EAFNOSUPPORT) =>
            {
                None
            }
            Err(e) => return Err(e),
        };
        Ok(LanSockets { v4, v6 })
    }

    /// The port TPROXY must send to.
    pub fn port(&self) -> u16 {
        self.v4.local_addr().map(|a| a.port()).unwrap_or(0)
    }
}

/// Counters since start.
#[derive(Debug, Default)]
struct Counters {
    sessions_total: AtomicU64,
    up: AtomicU64,
    down: AtomicU64,
    /// Unusable datagrams from the relay.
    rejected: AtomicU64,
    replayed: AtomicU64,
    /// New LAN flows over `udp_max_sessions`.
    full: AtomicU64,
}

/// What the LAN loops, the relay sockets and the sweeper share.
struct Shared {
    codec: Codec,
    sessions: Table,
    paths: Paths,
    limits: UdpLimits,
    counters: Counters,
    epoch: Instant,
    full_log: Throttle,
    bad_log: Throttle,
    /// For UDP over TCP.
    dialer: Arc<Dialer>,
    uot: uot::Flows,
    /// Whether UDP reaches the relay.
    reach: Mutex<Reachability>,
    /// The probe sessions' ids are `probe_base + slot`.
    probe_base: u64,
}

impl Shared {
    fn reach(&self) -> MutexGuard<'_, Reachability> {
        self.reach.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether datagrams ride inside TCP now.
    fn over_tcp(&self) -> bool {
        self.reach().route() == Route::OverTcp
    }

    /// Whether an opened datagram answers one of our UDP probes.
    fn is_probe(&self, o: &crate::datagram::Opened) -> bool {
        matches!(&o.addr, Address::DomainNameAddress(h, p) if h == CONTROL_HOST && *p == CONTROL_PORT)
            && o.client_session.wrapping_sub(self.probe_base)
                <= crate::config::gateway::MAX_UPLINKS as u64
    }

    /// The sessions' clock.
    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    /// Carries a sealed datagram to the relay; returns the uplink it left on.
    async fn carry(&self, datagram: &[u8]) -> (Option<usize>, std::io::Result<()>) {
        self.paths.send(datagram).await
    }
}

/// The UDP capture; cheap to clone (the status API holds one).
#[derive(Clone)]
pub struct UdpCapture {
    shared: Arc<Shared>,
}

impl UdpCapture {
    /// Installs the TPROXY policy routing and prepares sessions to `relay`.
    pub async fn start(
        cfg: &GatewayConfig,
        udp: &GatewayUdp,
        dialer: Arc<Dialer>,
        rtnl: &Rtnl,
    ) -> Result<UdpCapture, UdpError> {
        let relay = dialer.relay();
        ROUTING.ensure(rtnl).await.map_err(UdpError::Routing)?;
        let paths =
            Paths::new(relay, &cfg.uplinks, udp.uplink.as_deref()).map_err(UdpError::Socket)?;
        Ok(UdpCapture {
            shared: Arc::new(Shared {
                codec: Codec::new(cfg.method, &cfg.key),
                sessions: Table::new(udp.limits.max_sessions),
                paths,
                limits: udp.limits,
                counters: Counters::default(),
                epoch: Instant::now(),
                full_log: Throttle::new(LOG_EVERY),
                bad_log: Throttle::new(LOG_EVERY),
                dialer,
                uot: uot::Flows::default(),
                reach: Mutex::new(Reachability::new(Duration::ZERO)),
                probe_base: random_u64(),
            }),
        })
    }

    /// Relays until `shutdown`, then removes the TPROXY policy routing.
    pub async fn run(
        self,
        sockets: LanSockets,
        view: watch::Receiver<ManagerView>,
        rtnl: Rtnl,
        mut shutdown: Shutdown,
    ) {
        let shared = self.shared;
        let mut tasks = JoinSet::new();
        tasks.spawn(lan::receive(shared.clone(), sockets.v4));
        if let Some(v6) = sockets.v6 {
            tasks.spawn(lan::receive(shared.clone(), v6));
        }
        tasks.spawn(paths::receive(shared.clone(), shared.paths.unbound()));
        tasks.spawn(Paths::follow(shared.clone(), view.clone()));
        tasks.spawn(probe::run(shared.clone(), view));
        tasks.spawn(sweep(shared.clone()));
        let mut keep = tokio::time::interval(KEEP_ROUTING);
        keep.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.wait() => break,
                _ = keep.tick() => {
                    if let Err(e) = ROUTING.ensure(&rtnl).await {
                        warn!("UDP: putting back the policy routing for captured UDP: {e}");
                    }
                }
            }
        }
        tasks.abort_all();
        if let Err(e) = ROUTING.remove(&rtnl).await {
            warn!("UDP: removing the policy routing for captured UDP: {e}");
        }
    }

    /// The UDP part of the status document.
    pub fn status(&self) -> UdpStatus {
        let s = &self.shared;
        let c = &s.counters;
        let now = s.now();
        let list: Vec<(Duration, UdpSessionStatus)> = (s.sessions.all().iter())
            .map(|x| {
                let (target, uplink, idle) = x.view(now);
                (
                    idle,
                    UdpSessionStatus {
                        client: x.lan.to_string(),
                        target: target.map(|t| t.to_string()).unwrap_or_default(),
                        uplink: uplink.and_then(|i| s.paths.name(i)).map(str::to_string),
                        up_bytes: x.up.load(Ordering::Relaxed),
                        down_bytes: x.down.load(Ordering::Relaxed),
                        age_secs: tenths(x.started.elapsed()),
                        idle_secs: tenths(idle),
                    },
                )
            })
            .collect();
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let over_tcp = s.over_tcp();
        let uplink = (s.paths.chosen().and_then(|i| s.paths.name(i)))
            .filter(|_| !over_tcp)
            .map(str::to_string);
        UdpStatus {
            transport: if over_tcp {
                UdpTransport::Tcp
            } else {
                UdpTransport::Udp
            },
            reason: match (&uplink, over_tcp) {
                (_, true) => "UDP to the relay is blocked on every uplink: datagrams ride inside the bonded TCP connection".into(),
                (Some(u), false) => format!("Shadowsocks-2022 UDP to the relay, sessions over {u}"),
                (None, false) => "Shadowsocks-2022 UDP to the relay, by the main routing table".into(),
            },
            uplink,
            sessions: list.len() as u64,
            sessions_total: load(&c.sessions_total),
            up_bytes: load(&c.up),
            down_bytes: load(&c.down),
            dropped: load(&c.rejected) + load(&c.replayed) + load(&c.full),
            list: udp_list(list),
        }
    }

    /// Live sessions per uplink name (sessions whose last datagram left on it).
    pub fn sessions_per_uplink(&self) -> BTreeMap<String, u32> {
        let s = &self.shared;
        let mut out: BTreeMap<String, u32> = s.paths.names().into_iter().map(|n| (n, 0)).collect();
        let now = s.now();
        for x in s.sessions.all() {
            if let Some(name) = x.view(now).1.and_then(|i| s.paths.name(i)) {
                *out.entry(name.to_string()).or_default() += 1;
            }
        }
        out
    }
}

/// Whether the relay is braid: it answers braid's TCP probes on a working uplink right now.
fn relay_is_braid(uplinks: &[UplinkView]) -> bool {
    uplinks
        .iter()
        .any(|u| u.rtt_ms.is_some() && u.state.carries_traffic())
}

fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    u64::from_ne_bytes(b)
}

/// Ends idle sessions every [`SWEEP`].
async fn sweep(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(SWEEP);
    loop {
        tick.tick().await;
        for s in shared.sessions.sweep(&shared.limits.timeouts, shared.now()) {
            debug!(
                "UDP session {:016x} from {} ended after {:.1} s (idle timeout); up={} down={}",
                s.id,
                s.lan,
                s.started.elapsed().as_secs_f64(),
                s.up.load(Ordering::Relaxed),
                s.down.load(Ordering::Relaxed)
            );
        }
    }
}

/// Says what the capture does, once at start.
pub fn log_start(cfg: &GatewayConfig, port: u16) {
    info!(
        "capturing UDP from {} with TPROXY on port {port} ({ROUTING})",
        cfg.lan
            .iter()
            .map(|l| l.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
}
