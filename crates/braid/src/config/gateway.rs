//! `gateway.toml`: the router that bonds the uplinks.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use braid_sys::link::IfName;
use ipnet::IpNet;
use serde::Deserialize;

use super::common::{parse_socket_addr, ControlKeys};
use super::server::{cidrs, timeout};
use super::{parse_toml, read, ConfigError, FastOpen, Invalid, Method, SsKey};

/// Where the relay is: an address, or a name resolved at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayAddr {
    /// `203.0.113.7:8388`
    Socket(SocketAddr),
    /// `relay.example.net:8388`
    Host(String, u16),
}

impl std::fmt::Display for RelayAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RelayAddr::Socket(a) => write!(f, "{a}"),
            RelayAddr::Host(h, p) => write!(f, "{h}:{p}"),
        }
    }
}

/// One bonded uplink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uplink {
    /// Short name used in logs, metrics and status.
    pub name: String,
    /// The Linux interface; its address and next hop are read from the kernel.
    pub interface: IfName,
    /// Carries traffic only while every non-backup uplink is down (MPTCP backup flag).
    pub backup: bool,
    /// Routing table that holds this uplink's default route.
    pub table: u32,
    /// Priority of the `ip rule` that selects the table for this uplink's source address.
    pub rule_priority: u32,
    /// Whether its subflows may move into the encrypted UDP tunnel (`tunnel`).
    pub tunnel: braid_proto::tunnel::Mode,
    /// Routing table of the uplink's tunnel (its table + [`TUNNEL_TABLE_OFFSET`]).
    pub tunnel_table: u32,
}

/// The gateway's typed configuration.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// The relay.
    pub server: RelayAddr,
    /// SS2022 method.
    pub method: Method,
    /// Pre-shared key.
    pub key: SsKey,
    /// TCP Fast Open policy toward the relay.
    pub fast_open: FastOpen,
    /// Congestion control of the relay sockets (`congestion`).
    pub congestion: super::Congestion,
    /// Transparent listener for captured LAN TCP.
    pub redirect: SocketAddr,
    /// LAN interfaces whose forwarded TCP is captured.
    pub lan: Vec<IfName>,
    /// Destinations that go out directly besides the non-global ranges (`bypass`).
    pub bypass: Vec<IpNet>,
    /// Destinations captured even though they are non-global or in `bypass` (`capture`).
    pub capture: Vec<IpNet>,
    /// Optional SOCKS5 listener.
    pub socks: Option<SocketAddr>,
    /// The bonded uplinks.
    pub uplinks: Vec<Uplink>,
    /// Use MPTCP toward the relay (plain TCP when false).
    pub mptcp: bool,
    /// Name of braid's nftables table (family inet).
    pub nft_table: String,
    /// Time to connect to the relay.
    pub connect_timeout: Duration,
    /// A relayed connection idle in both directions for this long is closed.
    pub idle_timeout: Duration,
    /// Health probing thresholds.
    pub health: braid_proto::health::HealthConfig,
    /// Set `net.mptcp.blackhole_timeout` to this many seconds while braid runs (the kernel's
    /// default, 3600, turns MPTCP off for an hour after one path dropped MPTCP SYNs).
    pub mptcp_blackhole_timeout: Option<u32>,
    /// The HTTP status API (status, metrics, dashboard); `None` when `control = "off"`.
    pub control: Option<SocketAddr>,
    /// Where the record of braid's kernel changes is kept (`gateway-<nft_table>.json`), so the
    /// next start can undo them after a crash.
    pub state_dir: PathBuf,
    /// Caps on connections and pending handshakes (unset: sized from the open-file limit).
    pub limits: super::LimitsConfig,
    /// Who may use the SOCKS5 listener besides loopback and its LAN (`socks_allow_from`).
    pub socks_allow_from: Vec<ipnet::IpNet>,
    /// Who may read the status API, and how.
    pub control_access: super::ControlAccess,
    /// LAN UDP captured with TPROXY and relayed; `None` when `udp = false`.
    pub udp: Option<super::udp::GatewayUdp>,
    /// The warm pool of relay connections (`warm_pool`).
    pub warm_pool: braid_proto::pool::Mode,
    /// The handshake timeout assumed of a relay that does not say its own
    /// (`relay_handshake_timeout_secs`; braid's relay says it over the control channel).
    pub relay_handshake_timeout: Duration,
    /// How often a tunnelled uplink's direct path is tried again (`tunnel_retry_secs`).
    pub tunnel_retry: Duration,
}

/// `[health]`: probe thresholds; every key optional (defaults in braid_proto::health).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct HealthDto {
    interval_ms: Option<u64>,
    timeout_ms: Option<u64>,
    timeout_max_ms: Option<u64>,
    suspect_after: Option<u32>,
    down_after: Option<u32>,
    recover_after: Option<u32>,
}

fn parse_health(h: &HealthDto) -> Result<braid_proto::health::HealthConfig, Invalid> {
    let mut c = braid_proto::health::HealthConfig::default();
    let ms = Duration::from_millis;
    if let Some(v) = h.interval_ms {
        c.interval = ms(v);
    }
    if let Some(v) = h.timeout_ms {
        c.timeout = ms(v);
    }
    if let Some(v) = h.timeout_max_ms {
        c.timeout_max = ms(v);
    }
    if let Some(v) = h.suspect_after {
        c.suspect_after = v;
    }
    if let Some(v) = h.down_after {
        c.down_after = v;
    }
    if let Some(v) = h.recover_after {
        c.recover_after = v;
    }
    c.validate().map_err(|e| {
        let msg = e.to_string();
        let (problem, fix) = msg
            .split_once("; fix: ")
            .map(|(p, f)| (p.to_string(), f.to_string()))
            .unwrap_or((msg.clone(), "see [health] in examples/gateway.toml".into()));
        Invalid::new("[health]", "(as configured)", problem, fix)
    })?;
    Ok(c)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Dto {
    server: String,
    method: Option<String>,
    key: Option<String>,
    #[serde(default)]
    fast_open: FastOpen,
    congestion: Option<String>,
    #[serde(default = "default_redirect")]
    redirect: String,
    #[serde(default)]
    lan: Vec<String>,
    #[serde(default)]
    bypass: Vec<String>,
    #[serde(default)]
    capture: Vec<String>,
    socks: Option<String>,
    #[serde(default)]
    uplink: Vec<UplinkDto>,
    #[serde(default = "yes")]
    mptcp: bool,
    #[serde(default = "default_table")]
    nft_table: String,
    #[serde(default = "default_connect")]
    connect_timeout_secs: u64,
    #[serde(default = "default_idle")]
    idle_timeout_secs: u64,
    #[serde(default)]
    health: HealthDto,
    mptcp_blackhole_timeout_secs: Option<u32>,
    #[serde(default = "default_control")]
    control: String,
    #[serde(default = "default_state_dir")]
    state_dir: String,
    max_connections: Option<u64>,
    max_handshakes: Option<u64>,
    max_handshakes_per_source: Option<u64>,
    #[serde(default)]
    socks_allow_from: Vec<String>,
    #[serde(default)]
    control_allow_from: Vec<String>,
    control_token: Option<String>,
    #[serde(default)]
    control_hosts: Vec<String>,
    #[serde(default = "yes")]
    udp: bool,
    udp_uplink: Option<String>,
    #[serde(default = "default_udp_unreplied")]
    udp_unreplied_timeout_secs: u64,
    #[serde(default = "default_udp_stream")]
    udp_timeout_secs: u64,
    #[serde(default = "default_udp_sessions")]
    udp_max_sessions: usize,
    warm_pool: Option<super::warm_pool::WarmPoolDto>,
    relay_handshake_timeout_secs: Option<u64>,
    #[serde(default = "default_tunnel_retry")]
    tunnel_retry_secs: u64,
}

/// conntrack's `nf_conntrack_udp_timeout`.
fn default_udp_unreplied() -> u64 {
    30
}
/// conntrack's `nf_conntrack_udp_timeout_stream`.
fn default_udp_stream() -> u64 {
    120
}
fn default_udp_sessions() -> usize {
    1024
}

/// `udp`, `udp_uplink` and the UDP limits; `udp_uplink` must name an uplink.
fn parse_udp(d: &Dto, uplinks: &[Uplink]) -> Result<Option<super::udp::GatewayUdp>, Invalid> {
    if !d.udp {
        return Ok(None);
    }
    if let Some(name) = &d.udp_uplink {
        if !uplinks.iter().any(|u| &u.name == name) {
            return Err(Invalid::new(
                "udp_uplink",
                format!("{name:?}"),
                "names no [[uplink]]",
                "use the `name` of one of the [[uplink]] sections, or leave it out",
            ));
        }
    }
    Ok(Some(super::udp::GatewayUdp {
        limits: super::udp::limits(
            d.udp_unreplied_timeout_secs,
            d.udp_timeout_secs,
            d.udp_max_sessions,
            1,
        )?,
        uplink: d.udp_uplink.clone(),
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UplinkDto {
    name: String,
    interface: String,
    #[serde(default)]
    backup: bool,
    table: Option<u32>,
    #[serde(default)]
    tunnel: braid_proto::tunnel::Mode,
}

fn default_tunnel_retry() -> u64 {
    60
}

fn default_control() -> String {
    super::common::DEFAULT_CONTROL.into()
}
pub(super) fn default_state_dir() -> String {
    crate::state::DEFAULT_DIR.into()
}
fn yes() -> bool {
    true
}
/// Dual-stack: one listener takes the LAN's IPv4 and IPv6 TCP (IPv4 arrives v4-mapped).
pub const DEFAULT_REDIRECT: &str = "[::]:1100";

fn default_redirect() -> String {
    DEFAULT_REDIRECT.into()
}
fn default_table() -> String {
    "braid".into()
}
fn default_connect() -> u64 {
    10
}
fn default_idle() -> u64 {
    300
}

/// First routing table used for uplinks (uplink i gets `TABLE_BASE + i`).
pub const TABLE_BASE: u32 = 101;
/// First `ip rule` priority used for uplinks; below the main table's 32766.
pub const RULE_PRIORITY_BASE: u32 = 1000;
/// An uplink's tunnel routes live in its table plus this.
pub const TUNNEL_TABLE_OFFSET: u32 = 1000;
/// Most uplinks braid bonds (the kernel caps MPTCP subflows at 8).
pub const MAX_UPLINKS: usize = 8;

/// An interface name, or the error that names the key.
fn ifname(key: String, s: &str) -> Result<IfName, Invalid> {
    s.parse().map_err(|_| {
        Invalid::new(
            key,
            format!("{s:?}"),
            "is not a valid Linux interface name (1–15 letters, digits, '-', '_', '.')",
            "use the name shown by `ip link`",
        )
    })
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn parse_server(d: &Dto) -> Result<(RelayAddr, Method, SsKey), Invalid> {
    if d.server.starts_with("ss://") {
        let url = shadowsocks::config::ServerConfig::from_url(&d.server).map_err(|e| {
            Invalid::new(
                "server",
                "\"ss://…\"",
                format!("is not a valid SIP002 URI ({e:?})"),
                "use ss://METHOD:BASE64KEY@HOST:PORT (userinfo percent-encoded)",
            )
        })?;
        let method = Method::ALL
            .into_iter()
            .find(|m| m.cipher() == url.method())
            .ok_or_else(|| {
                Invalid::new(
                    "server",
                    "\"ss://…\"",
                    format!("uses method {}, which braid does not speak", url.method()),
                    "use a 2022-blake3-* method",
                )
            })?;
        let key = SsKey::parse(
            "server (the key inside the ss:// URI)",
            url.password(),
            method,
        )?;
        if let Some(m) = &d.method {
            if Method::parse("method", m)? != method {
                return Err(Invalid::new(
                    "method",
                    format!("{m:?}"),
                    format!("disagrees with the ss:// URI in `server`, which says {method}"),
                    "remove `method` or make it match",
                ));
            }
        }
        if let Some(k) = &d.key {
            if SsKey::parse("key", k, method)? != key {
                return Err(Invalid::new(
                    "key",
                    "\"<hidden>\"",
                    "disagrees with the key inside the ss:// URI in `server`",
                    "remove `key` or make it match",
                ));
            }
        }
        let addr = match url.addr() {
            shadowsocks::config::ServerAddr::SocketAddr(a) => RelayAddr::Socket(*a),
            shadowsocks::config::ServerAddr::DomainName(h, p) => RelayAddr::Host(h.clone(), *p),
        };
        return Ok((addr, method, key));
    }
    let method_s = d.method.as_deref().ok_or_else(|| {
        Invalid::new(
            "method",
            "(missing)",
            "is required unless `server` is an ss:// URI",
            "add method = \"2022-blake3-aes-256-gcm\"",
        )
    })?;
    let method = Method::parse("method", method_s)?;
    let key_s = d.key.as_deref().ok_or_else(|| {
        Invalid::new(
            "key",
            "(missing)",
            "is required unless `server` is an ss:// URI",
            "add the server's key, from `braid keygen`",
        )
    })?;
    let key = SsKey::parse("key", key_s, method)?;
    let addr = match d.server.parse::<SocketAddr>() {
        Ok(a) => RelayAddr::Socket(a),
        Err(_) => match d.server.rsplit_once(':') {
            Some((h, p)) if valid_host(h) && p.parse::<u16>().is_ok_and(|p| p != 0) => {
                RelayAddr::Host(h.to_string(), p.parse().unwrap_or(0))
            }
            _ => {
                return Err(Invalid::new(
                    "server",
                    format!("{:?}", d.server),
                    "is neither ADDRESS:PORT, HOST:PORT nor an ss:// URI",
                    "write e.g. \"203.0.113.7:8388\"",
                ))
            }
        },
    };
    Ok((addr, method, key))
}

fn valid_host(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
}

fn parse_uplinks(list: &[UplinkDto]) -> Result<Vec<Uplink>, Invalid> {
    if list.is_empty() {
        return Err(Invalid::new(
            "uplink",
            "(none)",
            "no [[uplink]] is configured",
            "add one [[uplink]] with name and interface per WAN link",
        ));
    }
    if list.len() > MAX_UPLINKS {
        return Err(Invalid::new(
            "uplink",
            list.len(),
            format!("more than {MAX_UPLINKS} uplinks"),
            format!("keep at most {MAX_UPLINKS}"),
        ));
    }
    let mut out: Vec<Uplink> = Vec::new();
    for (i, u) in list.iter().enumerate() {
        if !valid_name(&u.name) {
            return Err(Invalid::new(
                format!("uplink[{i}].name"),
                format!("{:?}", u.name),
                "must be 1–32 letters, digits, '-' or '_'",
                "rename it, e.g. \"wifi\"",
            ));
        }
        let interface = ifname(format!("uplink[{i}].interface"), &u.interface)?;
        if out.iter().any(|o| o.name == u.name) {
            return Err(Invalid::new(
                format!("uplink[{i}].name"),
                format!("{:?}", u.name),
                "is used by another uplink",
                "give every uplink its own name",
            ));
        }
        if out.iter().any(|o| o.interface == interface) {
            return Err(Invalid::new(
                format!("uplink[{i}].interface"),
                format!("{:?}", u.interface),
                "is used by another uplink",
                "list each interface once",
            ));
        }
        let table = u.table.unwrap_or(TABLE_BASE + i as u32);
        if table == super::udp::TPROXY_TABLE {
            return Err(Invalid::new(
                format!("uplink[{i}].table"),
                table,
                "is braid's own table for captured LAN UDP (TPROXY)",
                "pick another table number such as 101",
            ));
        }
        if matches!(table, 0 | 253..=255) {
            return Err(Invalid::new(
                format!("uplink[{i}].table"),
                table,
                "is a reserved routing table (unspec, default, main, local)",
                "pick an unused table number such as 101",
            ));
        }
        let tunnel_table = table.saturating_add(TUNNEL_TABLE_OFFSET);
        if out
            .iter()
            .any(|o| [o.table, o.tunnel_table].contains(&table) || o.table == tunnel_table)
        {
            return Err(Invalid::new(
                format!("uplink[{i}].table"),
                table,
                "is used by another uplink",
                "give every uplink its own table",
            ));
        }
        out.push(Uplink {
            name: u.name.clone(),
            interface,
            backup: u.backup,
            table,
            rule_priority: RULE_PRIORITY_BASE + i as u32,
            tunnel: u.tunnel,
            tunnel_table,
        });
    }
    Ok(out)
}

fn tunnel_retry(secs: u64) -> Result<Duration, Invalid> {
    if (1..=3600).contains(&secs) {
        Ok(Duration::from_secs(secs))
    } else {
        Err(Invalid::new(
            "tunnel_retry_secs",
            secs,
            "is outside 1–3600 seconds",
            "use the default 60",
        ))
    }
}

pub(super) fn parse_state_dir(s: &str) -> Result<PathBuf, Invalid> {
    let p = PathBuf::from(s);
    if !p.is_absolute() {
        return Err(Invalid::new(
            "state_dir",
            format!("{s:?}"),
            "must be an absolute path",
            "use the default \"/run/braid\" or another absolute directory",
        ));
    }
    Ok(p)
}

impl GatewayConfig {
    /// Reads and checks a gateway config file.
    pub fn load(path: &Path) -> Result<GatewayConfig, ConfigError> {
        Self::from_toml(path, &read(path)?)
    }

    /// Parses config text; `path` only labels errors.
    pub fn from_toml(path: &Path, text: &str) -> Result<GatewayConfig, ConfigError> {
        let dto: Dto = parse_toml(path, text, "gateway.toml")?;
        Self::from_dto(dto).map_err(|e| e.in_file(path))
    }

    fn from_dto(d: Dto) -> Result<GatewayConfig, Invalid> {
        let (server, method, key) = parse_server(&d)?;
        let lan = d
            .lan
            .iter()
            .enumerate()
            .map(|(i, l)| ifname(format!("lan[{i}]"), l))
            .collect::<Result<Vec<_>, _>>()?;
        if !valid_name(&d.nft_table) {
            return Err(Invalid::new(
                "nft_table",
                format!("{:?}", d.nft_table),
                "must be letters, digits, '-' or '_'",
                "use the default \"braid\"",
            ));
        }
        let redirect = parse_socket_addr("redirect", &d.redirect)?;
        let uplinks = parse_uplinks(&d.uplink)?;
        let udp = parse_udp(&d, &uplinks)?;
        if redirect.port() == 0 {
            return Err(Invalid::new(
                "redirect",
                format!("{:?}", d.redirect),
                "needs a fixed port, because nftables redirects to it",
                "use e.g. \"[::]:1100\"",
            ));
        }
        let socks = d
            .socks
            .as_deref()
            .map(|s| parse_socket_addr("socks", s))
            .transpose()?;
        let socks_allow_from = super::server::cidrs("socks_allow_from", &d.socks_allow_from)?;
        if let Some(addr) = socks {
            crate::allow_from::check_bind("socks", addr, &socks_allow_from)?;
        }
        let (control, control_access) = super::common::parse_control_keys(ControlKeys {
            control: &d.control,
            allow_from: &d.control_allow_from,
            token: d.control_token.as_deref(),
            hosts: &d.control_hosts,
        })?;
        Ok(GatewayConfig {
            server,
            method,
            key,
            fast_open: d.fast_open,
            congestion: super::common::parse_congestion(d.congestion.as_deref())?,
            redirect,
            lan,
            bypass: cidrs("bypass", &d.bypass)?,
            capture: cidrs("capture", &d.capture)?,
            socks,
            socks_allow_from,
            uplinks,
            mptcp: d.mptcp,
            nft_table: d.nft_table.clone(),
            connect_timeout: timeout("connect_timeout_secs", d.connect_timeout_secs)?,
            idle_timeout: timeout("idle_timeout_secs", d.idle_timeout_secs)?,
            health: parse_health(&d.health)?,
            mptcp_blackhole_timeout: d.mptcp_blackhole_timeout_secs,
            control,
            control_access,
            limits: super::common::parse_limits(
                d.max_connections,
                d.max_handshakes,
                d.max_handshakes_per_source,
            )?,
            state_dir: parse_state_dir(&d.state_dir)?,
            udp,
            warm_pool: super::warm_pool::parse_mode(d.warm_pool.as_ref())?,
            relay_handshake_timeout: super::warm_pool::parse_assumed_timeout(
                d.relay_handshake_timeout_secs,
            )?,
            tunnel_retry: tunnel_retry(d.tunnel_retry_secs)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    fn load(text: &str) -> Result<GatewayConfig, ConfigError> {
        GatewayConfig::from_toml(Path::new("gateway.toml"), text)
    }

    fn base() -> String {
        format!("server = \"203.0.113.7:8388\"\nmethod = \"2022-blake3-aes-256-gcm\"\nkey = \"{KEY}\"\nlan = [\"eth1\"]\n[[uplink]]\nname = \"wifi\"\ninterface = \"wan-wifi\"\n[[uplink]]\nname = \"5g\"\ninterface = \"wan-5g\"\nbackup = true\n")
    }

    #[test]
    fn full_example_parses_with_tables_and_priorities() {
        let c = load(&base()).unwrap();
        assert_eq!(
            c.server,
            RelayAddr::Socket("203.0.113.7:8388".parse().unwrap())
        );
        assert_eq!(c.uplinks[0].table, 101);
        assert_eq!(c.uplinks[1].table, 102);
        assert!(c.uplinks[1].backup);
        assert_eq!(c.redirect, "[::]:1100".parse().unwrap());
        assert_eq!(c.socks, None);
        assert!(c.bypass.is_empty() && c.capture.is_empty());
    }

    #[test]
    fn sip002_uri_carries_method_and_key() {
        let uri = format!(
            "ss://2022-blake3-aes-256-gcm:{}@203.0.113.7:8388",
            KEY.replace('=', "%3D")
                .replace('+', "%2B")
                .replace('/', "%2F")
        );
        let c = load(&format!(
            "server = \"{uri}\"\n[[uplink]]\nname = \"a\"\ninterface = \"eth0\"\n"
        ))
        .unwrap();
        assert_eq!(c.method, Method::Aes256Gcm);
        assert_eq!(c.key.as_base64(), KEY);
    }

    #[test]
    fn sip002_uri_that_disagrees_with_method_is_refused() {
        let uri = format!(
            "ss://2022-blake3-aes-256-gcm:{}@203.0.113.7:8388",
            KEY.replace('=', "%3D")
        );
        let e = load(&format!("server = \"{uri}\"\nmethod = \"2022-blake3-chacha20-poly1305\"\n[[uplink]]\nname = \"a\"\ninterface = \"eth0\"\n")).unwrap_err().to_string();
        assert!(e.contains("`method`") && e.contains("disagrees"), "{e}");
    }

    #[test]
    fn hostname_server_is_kept_for_resolution_at_start() {
        let c = load(&base().replace("203.0.113.7:8388", "relay.example.net:8388")).unwrap();
        assert_eq!(c.server, RelayAddr::Host("relay.example.net".into(), 8388));
    }

    #[test]
    fn duplicate_interface_is_named_with_its_index() {
        let e = load(&base().replace("wan-5g", "wan-wifi"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("uplink[1].interface") && e.contains("wan-wifi"),
            "{e}"
        );
    }

    #[test]
    fn missing_uplinks_and_missing_key_are_explained() {
        let e = load(&format!(
            "server = \"1.2.3.4:1\"\nmethod = \"2022-blake3-aes-256-gcm\"\nkey = \"{KEY}\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("[[uplink]]"), "{e}");
        let e = load("server = \"1.2.3.4:1\"\nmethod = \"2022-blake3-aes-256-gcm\"\n[[uplink]]\nname = \"a\"\ninterface = \"eth0\"\n").unwrap_err().to_string();
        assert!(e.contains("`key`") && e.contains("braid keygen"), "{e}");
    }

    #[test]
    fn bad_lan_interface_and_zero_redirect_port_are_named() {
        let e = load(&base().replace("lan = [\"eth1\"]", "lan = [\"this-name-is-way-too-long\"]"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("lan[0]"), "{e}");
        let e = load(&base().replace(
            "lan = [\"eth1\"]",
            "lan = [\"eth1\"]\nredirect = \"0.0.0.0:0\"",
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("`redirect`") && e.contains("fixed port"), "{e}");
    }

    #[test]
    fn health_section_overrides_defaults_and_bad_thresholds_are_named() {
        let c = load(&base().replace(
            "lan = [\"eth1\"]",
            "lan = [\"eth1\"]\n[health]\ninterval_ms = 100\ndown_after = 6",
        ))
        .unwrap();
        assert_eq!(c.health.interval, Duration::from_millis(100));
        assert_eq!(c.health.down_after, 6);
        let e = load(&base().replace(
            "lan = [\"eth1\"]",
            "lan = [\"eth1\"]\n[health]\ndown_after = 0",
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("down_after") && e.contains("fix:"), "{e}");
        let e = load(&base().replace(
            "lan = [\"eth1\"]",
            "lan = [\"eth1\"]\n[health]\nintervall_ms = 100",
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("intervall_ms"), "{e}");
    }

    #[test]
    fn state_dir_defaults_to_run_braid_and_must_be_absolute() {
        assert_eq!(
            load(&base()).unwrap().state_dir,
            PathBuf::from("/run/braid")
        );
        let c = load(&format!("state_dir = \"/tmp/b\"\n{}", base())).unwrap();
        assert_eq!(c.state_dir, PathBuf::from("/tmp/b"));
        let e = load(&format!("state_dir = \"run/braid\"\n{}", base()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("`state_dir`") && e.contains("absolute"), "{e}");
    }

    #[test]
    fn socks_on_every_interface_needs_a_source_list() {
        let e = load(&base().replace(
            "lan = [\"eth1\"]",
            "lan = [\"eth1\"]\nsocks = \"0.0.0.0:1080\"",
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("`socks` = \"0.0.0.0:1080\"")
                && e.contains("socks_allow_from")
                && e.contains("fix:"),
            "{e}"
        );
        let c = load(&base().replace(
            "lan = [\"eth1\"]",
            "lan = [\"eth1\"]\nsocks = \"0.0.0.0:1080\"\nsocks_allow_from = [\"192.168.1.0/24\"]",
        ))
        .unwrap();
        assert_eq!(c.socks_allow_from.len(), 1);
        let e = load(&base().replace(
            "lan = [\"eth1\"]",
            "lan = [\"eth1\"]\ncontrol = \"[::]:9090\"",
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("control_allow_from"), "{e}");
    }

    #[test]
    fn bypass_and_capture_take_cidrs_and_name_a_bad_entry() {
        let c = load(&base().replace(
            "lan = [\"eth1\"]",
            "lan = [\"eth1\"]\nbypass = [\"203.0.113.0/24\", \"2001:db8::1\"]\ncapture = [\"10.30.0.0/16\"]",
        ))
        .unwrap();
        assert_eq!(c.bypass.len(), 2);
        assert_eq!(c.capture, vec!["10.30.0.0/16".parse::<IpNet>().unwrap()]);
        let e = load(&base().replace(
            "lan = [\"eth1\"]",
            "lan = [\"eth1\"]\ncapture = [\"10.30.0.0/16\", \"lan\"]",
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("capture[1]") && e.contains("\"lan\""), "{e}");
    }

    #[test]
    fn udp_is_on_by_default_and_udp_uplink_must_name_an_uplink() {
        let c = load(&base()).unwrap();
        let udp = c.udp.expect("UDP on by default");
        assert_eq!(udp.limits.timeouts.unreplied, Duration::from_secs(30));
        assert_eq!(udp.limits.timeouts.stream, Duration::from_secs(120));
        assert_eq!(udp.uplink, None);
        let c = load(&base().replace("lan = [\"eth1\"]", "lan = [\"eth1\"]\nudp_uplink = \"5g\""))
            .unwrap();
        assert_eq!(c.udp.unwrap().uplink.as_deref(), Some("5g"));
        let e = load(&base().replace("lan = [\"eth1\"]", "lan = [\"eth1\"]\nudp_uplink = \"dsl\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("udp_uplink") && e.contains("dsl"), "{e}");
        let c = load(&base().replace("lan = [\"eth1\"]", "lan = [\"eth1\"]\nudp = false")).unwrap();
        assert!(c.udp.is_none());
        let e = load(&base().replace("backup = true", "backup = true\ntable = 100"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("uplink[1].table") && e.contains("TPROXY"), "{e}");
    }

    #[test]
    fn tunnel_defaults_to_auto_takes_always_and_never_and_refuses_others() {
        use braid_proto::tunnel::Mode;
        let c = load(&base()).unwrap();
        assert_eq!(c.uplinks[0].tunnel, Mode::Auto);
        assert_eq!(c.uplinks[0].tunnel_table, 1101);
        assert_eq!(c.tunnel_retry, Duration::from_secs(60));
        let c =
            load(&base().replace("backup = true", "backup = true\ntunnel = \"always\"")).unwrap();
        assert_eq!(c.uplinks[1].tunnel, Mode::Always);
        let e = load(&base().replace("backup = true", "backup = true\ntunnel = \"sometimes\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("tunnel") && e.contains("sometimes"), "{e}");
        let e = load(&format!("tunnel_retry_secs = 0\n{}", base()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("`tunnel_retry_secs`"), "{e}");
    }

    #[test]
    fn a_table_that_is_another_uplinks_tunnel_table_is_refused() {
        let e = load(&base().replace("backup = true", "backup = true\ntable = 1101"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("uplink[1].table"), "{e}");
    }

    #[test]
    fn reserved_table_is_refused() {
        let e = load(&base().replace("backup = true", "backup = true\ntable = 254"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("uplink[1].table") && e.contains("254"), "{e}");
    }
}
