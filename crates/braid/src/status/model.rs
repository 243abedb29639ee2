//! The status document: what `GET /api/status` returns and `braid status --json` prints.
//!
//! Field names are a contract (automated checks read them): `uplinks[].name|state|address|rtt_ms|
//! loss|rx_bps|tx_bps|rx_bytes|tx_bytes|subflows|backup`, `connections.mptcp|fallback`,
//! `tfo.enabled|reason`, `congestion.algorithm|reason`, `blackhole.active`,
//! `tcp_mem.state|pages|max_pages|runaway`, `udp.transport|uplink|sessions|up_bytes|down_bytes|
//! list[].client|target|uplink`, `warm_pool.target|idle|warm|hits|misses` (gateway). More fields
//! may be added, never renamed.

use std::collections::BTreeMap;

use braid_proto::health::LinkState;
use serde::{Deserialize, Serialize};

/// Which daemon serves the document.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// `braid gateway`.
    #[default]
    Gateway,
    /// `braid server`.
    Server,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Gateway => "gateway",
            Role::Server => "server",
        })
    }
}

/// The whole document.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// Which daemon.
    pub role: Role,
    /// braid's version.
    pub version: String,
    /// `uname -r`.
    pub kernel: String,
    /// One entry per configured uplink (empty on the server).
    pub uplinks: Vec<UplinkStatus>,
    /// Live relayed connections.
    pub connections: Connections,
    /// The TCP Fast Open decision.
    pub tfo: Tfo,
    /// The congestion control of the relay sockets.
    #[serde(default)]
    pub congestion: Congestion,
    /// The kernel's MPTCP blackhole state.
    pub blackhole: Blackhole,
    /// The relay, as it answered the gateway's control request (gateway only).
    pub relay: Option<RelayInfo>,
    /// Sum over uplinks.
    pub total: Totals,
    /// UDP relaying: the sessions, their bytes and the uplink each rides.
    #[serde(default)]
    pub udp: UdpStatus,
    /// The kernel's TCP memory accounting, host-wide: when it is exhausted no TCP connection
    /// opens, through braid or anything else.
    #[serde(default)]
    pub tcp_mem: TcpMem,
    /// The gateway's warm pool of relay connections (absent on the server and when older
    /// gateways answer).
    #[serde(default)]
    pub warm_pool: Option<braid_proto::pool::PoolStats>,
    /// The relay's path manager (`bond_after_kib`; server only).
    #[serde(default)]
    pub path_manager: Option<PathManagerStatus>,
}

/// The relay's path manager: whether it runs, why, and what it did
/// (`braid_proto::subflow_priority`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathManagerStatus {
    /// Whether joined subflows are held as backups until a connection is bulk.
    pub active: bool,
    /// Why (or why not).
    pub reason: String,
    /// Bytes in one direction after which a connection bonds.
    pub bond_after_bytes: Option<u64>,
    /// Connections it follows now.
    pub connections: u64,
    /// Joins held as backups since the relay started.
    pub held_total: u64,
    /// Connections released because they moved `bond_after_bytes`.
    pub bonded_bulk_total: u64,
    /// Connections released because their first subflow closed.
    pub bonded_first_lost_total: u64,
    /// Joins closed over `max_joins`.
    pub closed_over_limit_total: u64,
    /// Times the kernel dropped events (every held join was released).
    pub overruns_total: u64,
}

/// Where the TCP memory counter stands against `net.ipv4.tcp_mem`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TcpMemState {
    /// The counter could not be read.
    #[default]
    Unknown,
    /// Below the pressure threshold.
    Ok,
    /// At or above the pressure threshold: the kernel shrinks socket buffers.
    Pressure,
    /// Above the maximum: the kernel refuses memory to every TCP socket; new connections fail.
    Exhausted,
}

impl std::fmt::Display for TcpMemState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TcpMemState::Unknown => "unknown",
            TcpMemState::Ok => "ok",
            TcpMemState::Pressure => "pressure",
            TcpMemState::Exhausted => "exhausted",
        })
    }
}

/// The kernel's TCP memory counter (`/proc/net/sockstat`, in pages), its limits
/// (`net.ipv4.tcp_mem`, visible only in the initial network namespace), what the open sockets
/// could hold, and the MPTCP accounting fault's warnings in the kernel log.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TcpMem {
    /// `ok`, `pressure`, `exhausted` or `unknown`.
    pub state: TcpMemState,
    /// Pages charged to TCP, host-wide.
    pub pages: Option<u64>,
    /// `tcp_mem[1]`: the pressure threshold.
    pub pressure_pages: Option<u64>,
    /// `tcp_mem[2]`: past it no TCP socket gets memory.
    pub max_pages: Option<u64>,
    /// TCP sockets allocated, host-wide.
    pub sockets: Option<u64>,
    /// The most those sockets could hold (their count × 2 × (`tcp_rmem[2]` + `tcp_wmem[2]`)).
    pub socket_bound_pages: Option<u64>,
    /// The counter is above what the sockets could hold: the kernel's accounting ran away.
    pub runaway: bool,
    /// `inet_sock_destruct` warnings with MPTCP in their trace since boot; `None` when the
    /// kernel log is not readable.
    pub mptcp_warnings: Option<u64>,
    /// The newest such warning's line.
    pub last_warning: Option<String>,
    /// One sentence: what this means, and the fix when something is wrong.
    pub reason: String,
}

/// One uplink.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UplinkStatus {
    /// Config name.
    pub name: String,
    /// `up`, `suspect`, `down` or `recovering`.
    pub state: LinkState,
    /// Why it is in that state: the last health transition, or what is wrong with the
    /// interface.
    #[serde(default)]
    pub state_reason: String,
    /// The uplink's address, if it has one.
    pub address: Option<String>,
    /// Smoothed probe RTT in ms.
    pub rtt_ms: Option<f64>,
    /// Probe loss ratio over the recent window, 0–1.
    pub loss: f64,
    /// Receive rate, bits per second, over the last second (interface counters).
    pub rx_bps: f64,
    /// Transmit rate, bits per second.
    pub tx_bps: f64,
    /// Bytes received on the interface since braid started.
    pub rx_bytes: u64,
    /// Bytes sent on the interface since braid started.
    pub tx_bytes: u64,
    /// Subflows of live relay connections that use this uplink.
    pub subflows: u32,
    /// Live UDP sessions riding this uplink.
    #[serde(default)]
    pub udp_sessions: u32,
    /// Configured as backup.
    pub backup: bool,
    /// Interface name.
    pub interface: String,
    /// State changes since start.
    pub state_changes: u64,
    /// Receive rate per second for the last 5 minutes, oldest first (bits per second).
    pub history_rx_bps: Vec<f64>,
    /// Transmit rate per second for the last 5 minutes, oldest first.
    pub history_tx_bps: Vec<f64>,
    /// How the uplink carries subflows: `direct`, `tunnel` (an encrypted UDP tunnel to the
    /// relay, because its path strips or resets MPTCP) or `out` (neither works).
    #[serde(default = "direct")]
    pub path: String,
    /// Why it is on that path.
    #[serde(default)]
    pub path_reason: String,
    /// The tunnel, while it carries the uplink.
    #[serde(default)]
    pub tunnel: Option<TunnelStatus>,
}

fn direct() -> String {
    "direct".into()
}

/// An uplink's tunnel.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TunnelStatus {
    /// The tunnel device (`braid-tNNN`).
    pub interface: String,
    /// The address the relay leased to it: subflows come from here.
    pub address: String,
}

/// Connection counts and the live ones.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Connections {
    /// Live connections that are truly MPTCP.
    pub mptcp: u64,
    /// Live connections that fell back to plain TCP.
    pub fallback: u64,
    /// Live plain-TCP connections (MPTCP not asked for).
    pub tcp: u64,
    /// Fallbacks since start.
    pub fallback_total: u64,
    /// Connections reset since start because the kernel left them without a subflow
    /// (gateway; `braid_proto::stranded`).
    #[serde(default)]
    pub stranded_total: u64,
    /// Live connections without the subflow of an uplink that is up, past a grace: the kernel
    /// never joins it again, so each carries on without that uplink's share (gateway;
    /// `braid_proto::lost_join`).
    #[serde(default)]
    pub lost_join: u64,
    /// Subflows found lost so since start, once per connection and uplink.
    #[serde(default)]
    pub lost_join_total: u64,
    /// The live connections.
    pub list: Vec<ConnectionStatus>,
}

/// One live relayed connection.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConnectionStatus {
    /// Where it goes (gateway) or comes from (server).
    pub target: String,
    /// MPTCP, fallen back to TCP, or plain TCP.
    pub transport: braid_proto::control::Transport,
    /// Subflows in use.
    pub subflows: u32,
    /// Subflows per uplink name (gateway).
    pub subflows_per_uplink: BTreeMap<String, u32>,
    /// Seconds since it opened.
    pub age_secs: f64,
}

/// The TFO decision.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Tfo {
    /// TFO is used for new relay connections.
    pub enabled: bool,
    /// One sentence: why.
    pub reason: String,
}

/// The congestion control of the relay sockets (`congestion` in the config).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Congestion {
    /// The algorithm in use, e.g. `bbr`.
    pub algorithm: String,
    /// The configured one could not be used (the reason says why and how to fix it).
    pub fell_back: bool,
    /// One sentence: why this one.
    pub reason: String,
    /// The congestion window, in segments, accepted relay connections start with (`None`: the
    /// kernel's own). The relay's only (`initial_window`).
    #[serde(default)]
    pub initial_window: Option<u32>,
    /// One sentence: why that initial window (empty on a gateway).
    #[serde(default)]
    pub initial_window_reason: String,
}

impl From<&braid_proto::congestion::Decision> for Congestion {
    fn from(d: &braid_proto::congestion::Decision) -> Self {
        Congestion {
            algorithm: d.algorithm.clone(),
            fell_back: d.fell_back,
            reason: d.reason.clone(),
            ..Default::default()
        }
    }
}

/// The kernel's MPTCP blackhole state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Blackhole {
    /// The kernel disabled MPTCP for new connections recently.
    pub active: bool,
    /// `MPTcpExtBlackhole`.
    pub count: u64,
    /// `net.mptcp.blackhole_timeout`.
    pub timeout_secs: Option<u64>,
}

/// The relay, as it answered.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RelayInfo {
    /// Address.
    pub address: String,
    /// braid version there.
    pub version: String,
    /// Kernel there.
    pub kernel: String,
}

/// Sums over uplinks.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    /// Bonded receive rate, bits per second.
    pub rx_bps: f64,
    /// Bonded transmit rate.
    pub tx_bps: f64,
    /// Bonded receive history, oldest first.
    pub history_rx_bps: Vec<f64>,
    /// Bonded transmit history.
    pub history_tx_bps: Vec<f64>,
}

/// How UDP reaches the relay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UdpTransport {
    /// UDP is not relayed (`udp = false`, or no capture of UDP).
    #[default]
    Off,
    /// Shadowsocks-2022 UDP datagrams, each session over one uplink.
    Udp,
    /// UDP over TCP inside the bonded MPTCP connection (UDP to the relay is blocked).
    Tcp,
}

impl std::fmt::Display for UdpTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            UdpTransport::Off => "off",
            UdpTransport::Udp => "udp",
            UdpTransport::Tcp => "udp-over-tcp",
        })
    }
}

/// UDP relaying.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UdpStatus {
    /// How UDP reaches the relay now.
    pub transport: UdpTransport,
    /// Why, in one sentence.
    pub reason: String,
    /// The uplink new sessions ride, and moved ones move to (gateway).
    pub uplink: Option<String>,
    /// Live sessions.
    pub sessions: u64,
    /// Sessions since start.
    pub sessions_total: u64,
    /// Payload bytes from the LAN (gateway) or from clients (server) since start.
    pub up_bytes: u64,
    /// Payload bytes toward the LAN or the clients since start.
    pub down_bytes: u64,
    /// Datagrams dropped since start: unauthentic, replayed, refused destinations, sessions
    /// over the cap.
    pub dropped: u64,
    /// The live sessions, most recently active first (at most [`UDP_LIST_MAX`]).
    pub list: Vec<UdpSessionStatus>,
}

/// Most sessions listed in a status document.
pub const UDP_LIST_MAX: usize = 200;

/// The sessions for [`UdpStatus::list`] from (idle time, session) rows: most recently active
/// first, at most [`UDP_LIST_MAX`].
pub fn udp_list(mut rows: Vec<(std::time::Duration, UdpSessionStatus)>) -> Vec<UdpSessionStatus> {
    rows.sort_by_key(|(idle, _)| *idle);
    rows.into_iter()
        .take(UDP_LIST_MAX)
        .map(|(_, s)| s)
        .collect()
}

/// Seconds to one decimal, as the document shows ages.
pub fn tenths(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 10.0).round() / 10.0
}

/// One live UDP session.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UdpSessionStatus {
    /// The LAN host and port (gateway) or the client's last address (server).
    pub client: String,
    /// Where its datagrams go (the latest target).
    pub target: String,
    /// The uplink it rides (gateway).
    pub uplink: Option<String>,
    /// Payload bytes toward the target.
    pub up_bytes: u64,
    /// Payload bytes back.
    pub down_bytes: u64,
    /// Seconds since it began.
    pub age_secs: f64,
    /// Seconds since its last datagram either way.
    pub idle_secs: f64,
}
