//! `server.toml`: the relay on the VPS.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use super::common::{parse_socket_addr, ControlKeys};
use super::{parse_toml, read, ConfigError, FastOpen, Invalid, Method, SsKey};

/// The relay's typed configuration.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// MPTCP listener address.
    pub listen: SocketAddr,
    /// SS2022 method.
    pub method: Method,
    /// Pre-shared key.
    pub key: SsKey,
    /// TCP Fast Open policy for the listener.
    pub fast_open: FastOpen,
    /// Congestion control of the relay sockets (`congestion`).
    pub congestion: super::Congestion,
    /// Ask for an MPTCP listener (plain TCP when false).
    pub mptcp: bool,
    /// Destinations allowed even though they are loopback, link-local, private or the server's own.
    pub allow_destinations: Vec<IpNet>,
    /// The server's public addresses that are on no interface (1:1 NAT clouds): refused as its
    /// own, like the interface addresses.
    pub public_addresses: Vec<IpAddr>,
    /// Time a client has to send its request header.
    pub handshake_timeout: Duration,
    /// Time to connect to a destination.
    pub connect_timeout: Duration,
    /// A relayed connection with no traffic either way for this long is closed.
    pub idle_timeout: Duration,
    /// The HTTP status API (status, metrics); `None` when `control = "off"`.
    pub control: Option<SocketAddr>,
    /// Caps on connections and pending handshakes (unset: sized from the open-file limit).
    pub limits: super::LimitsConfig,
    /// Who may read the status API, and how.
    pub control_access: super::ControlAccess,
    /// The Shadowsocks-2022 UDP relay on `listen`'s port; `None` when `udp = false`.
    pub udp: Option<super::udp::UdpLimits>,
    /// Where the salts of the last minute's requests are kept across a restart
    /// (`server-<port>.salts`), so a request replayed after a restart is still refused.
    pub state_dir: std::path::PathBuf,
    /// The UDP port of the tunnel for hostile paths (`tunnel_port`; `None`: off).
    pub tunnel_port: Option<u16>,
    /// The network tunnel addresses are leased from (`tunnel_net`).
    pub tunnel_net: ipnet::Ipv4Net,
    /// Bytes a relayed connection moves in one direction before its joined subflows carry
    /// data (`bond_after_kib`); `None` (0) leaves subflows to the in-kernel path manager.
    pub bond_after: Option<u64>,
    /// Joined subflows a relayed connection may have (`max_joins`): one per gateway uplink
    /// beyond the first, plus one for each uplink that comes back before the relay has seen its
    /// old subflow close. Applied by the relay's path manager; the in-kernel one applies the
    /// namespace's `ip mptcp limits` instead.
    pub max_joins: usize,
    /// The congestion window, in segments, that every accepted subflow starts with
    /// (`initial_window`); `None` (0) leaves the kernel's (10, or the route's `initcwnd`).
    pub initial_window: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Dto {
    listen: String,
    method: String,
    key: String,
    #[serde(default)]
    fast_open: FastOpen,
    congestion: Option<String>,
    #[serde(default = "yes")]
    mptcp: bool,
    #[serde(default)]
    allow_destinations: Vec<String>,
    #[serde(default)]
    public_addresses: Vec<String>,
    #[serde(default = "default_handshake")]
    handshake_timeout_secs: u64,
    #[serde(default = "default_connect")]
    connect_timeout_secs: u64,
    #[serde(default = "default_idle")]
    idle_timeout_secs: u64,
    #[serde(default = "default_control")]
    control: String,
    max_connections: Option<u64>,
    max_handshakes: Option<u64>,
    max_handshakes_per_source: Option<u64>,
    #[serde(default)]
    control_allow_from: Vec<String>,
    control_token: Option<String>,
    #[serde(default)]
    control_hosts: Vec<String>,
    #[serde(default = "yes")]
    udp: bool,
    #[serde(default = "default_udp_unreplied")]
    udp_unreplied_timeout_secs: u64,
    #[serde(default = "default_udp_stream")]
    udp_timeout_secs: u64,
    #[serde(default = "default_udp_sessions")]
    udp_max_sessions: usize,
    #[serde(default = "super::gateway::default_state_dir")]
    state_dir: String,
    tunnel_port: Option<u16>,
    #[serde(default = "default_tunnel_net")]
    tunnel_net: String,
    #[serde(default = "default_bond_after_kib")]
    bond_after_kib: u64,
    #[serde(default = "default_initial_window")]
    initial_window: u64,
    #[serde(default = "default_max_joins")]
    max_joins: u64,
}

/// The kernel's most subflows per connection: a fresh namespace's limit (2) is too few for a
/// gateway with four uplinks, or with three and one that flaps.
fn default_max_joins() -> u64 {
    MAX_JOINS as u64
}

/// The kernel's maximum of joined subflows per connection (`MPTCP_PM_ADDR_MAX`).
pub const MAX_JOINS: usize = 8;

/// `max_joins`: 0 to 8.
fn max_joins(n: u64) -> Result<usize, Invalid> {
    match usize::try_from(n) {
        Ok(n) if n <= MAX_JOINS => Ok(n),
        _ => Err(Invalid::new(
            "max_joins",
            n,
            format!("is over {MAX_JOINS}, the kernel's most subflows per connection"),
            "use the default 8, or fewer to cap the subflows each connection may add",
        )),
    }
}

/// 32 segments (46 kB at a 1,448-byte MSS): a 100 kB answer in two round trips instead of
/// three. braid's default congestion control, BBR, paces that first flight over a round trip.
fn default_initial_window() -> u64 {
    32
}

/// `initial_window`: 0 is the kernel's; else 1 to `sock_ops::MAX_SEGMENTS`.
fn initial_window(segments: u64) -> Result<Option<u32>, Invalid> {
    let max = u64::from(braid_sys::sock_ops::MAX_SEGMENTS);
    match segments {
        0 => Ok(None),
        n if n <= max => Ok(Some(n as u32)),
        _ => Err(Invalid::new(
            "initial_window",
            segments,
            format!("is over {max} segments"),
            "use the default 32, or 0 to keep the kernel's initial window (10)",
        )),
    }
}

fn default_bond_after_kib() -> u64 {
    128
}

/// `bond_after_kib`: 0 is off; else at most 1 GiB.
fn bond_after(kib: u64) -> Result<Option<u64>, Invalid> {
    match kib {
        0 => Ok(None),
        1..=1_048_576 => Ok(Some(kib * 1024)),
        _ => Err(Invalid::new(
            "bond_after_kib",
            kib,
            "is over 1048576 (1 GiB)",
            "use the default 128, or 0 to let every subflow carry data from the start",
        )),
    }
}

/// SIP022: a relay session is remembered at least 60 s.
fn default_udp_unreplied() -> u64 {
    60
}
fn default_udp_stream() -> u64 {
    180
}
fn default_udp_sessions() -> usize {
    1024
}

fn default_tunnel_net() -> String {
    "10.255.0.0/16".into()
}

/// `tunnel_port`: unset is the relay's port + 1, 0 is off, and it must not be the relay's own
/// port (the SS2022 UDP relay listens there).
fn tunnel_port(set: Option<u16>, listen: SocketAddr) -> Result<Option<u16>, Invalid> {
    match set {
        Some(0) => Ok(None),
        Some(p) if p == listen.port() => Err(Invalid::new(
            "tunnel_port",
            p,
            "is the relay's TCP port, where the Shadowsocks-2022 UDP relay listens",
            "pick another port (the default is the relay's port + 1), or 0 for no tunnel",
        )),
        Some(p) => Ok(Some(p)),
        None => Ok(listen
            .port()
            .checked_add(1)
            .filter(|p| listen.port() != 0 && *p != 0)),
    }
}

/// `tunnel_net`: an IPv4 network with room for the relay and at least one gateway.
fn tunnel_net(s: &str) -> Result<ipnet::Ipv4Net, Invalid> {
    match s.parse::<ipnet::Ipv4Net>() {
        Ok(n) if n.prefix_len() <= 30 => Ok(n.trunc()),
        _ => Err(Invalid::new(
            "tunnel_net",
            format!("{s:?}"),
            "is not an IPv4 network of /30 or wider",
            "use the default \"10.255.0.0/16\", or another private range the VPS does not use",
        )),
    }
}

fn default_control() -> String {
    super::common::DEFAULT_CONTROL.into()
}
fn yes() -> bool {
    true
}
fn default_handshake() -> u64 {
    15
}
fn default_connect() -> u64 {
    10
}
fn default_idle() -> u64 {
    300
}

/// Checks a `*_secs` value: 1 s to 1 day.
pub(super) fn timeout(key: &str, secs: u64) -> Result<Duration, Invalid> {
    if (1..=86_400).contains(&secs) {
        Ok(Duration::from_secs(secs))
    } else {
        Err(Invalid::new(
            key,
            secs,
            "is outside 1–86400 seconds",
            "pick a value between 1 and 86400",
        ))
    }
}

/// The relay has no LAN: its status API stays on loopback unless `control_allow_from` says who
/// else may read it.
fn stays_local(control: Option<SocketAddr>, access: &super::ControlAccess) -> Result<(), Invalid> {
    match control {
        Some(addr) if !addr.ip().is_loopback() && access.allow_from.is_empty() => {
            Err(Invalid::new(
                "control",
                format!("\"{addr}\""),
                "is not loopback, and the relay has no LAN to keep it to, so anyone who reaches that address could read every connection",
                "keep it on \"127.0.0.1:9090\" (read it over ssh), or list who may connect in `control_allow_from`",
            ))
        }
        _ => Ok(()),
    }
}

/// Parses a list of plain addresses (`public_addresses`).
fn addresses(key: &str, list: &[String]) -> Result<Vec<IpAddr>, Invalid> {
    list.iter()
        .enumerate()
        .map(|(i, s)| {
            s.parse::<IpAddr>().map_err(|_| {
                Invalid::new(
                    format!("{key}[{i}]"),
                    format!("{s:?}"),
                    "is not an IP address",
                    "write the address alone, e.g. \"203.0.113.7\" or \"2001:db8::7\"",
                )
            })
        })
        .collect()
}

/// Parses a list of CIDR ranges or single addresses (`allow_destinations`, `bypass`, `capture`).
pub(crate) fn cidrs(key: &str, list: &[String]) -> Result<Vec<IpNet>, Invalid> {
    list.iter()
        .enumerate()
        .map(|(i, s)| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    Invalid::new(
                        format!("{key}[{i}]"),
                        format!("{s:?}"),
                        "is not an address or CIDR range",
                        "write e.g. \"10.30.0.0/24\" or \"192.168.1.5\"",
                    )
                })
        })
        .collect()
}

impl ServerConfig {
    /// Reads and checks a server config file.
    pub fn load(path: &Path) -> Result<ServerConfig, ConfigError> {
        Self::from_toml(path, &read(path)?)
    }

    /// Parses config text; `path` only labels errors.
    pub fn from_toml(path: &Path, text: &str) -> Result<ServerConfig, ConfigError> {
        let dto: Dto = parse_toml(path, text, "server.toml")?;
        Self::from_dto(dto).map_err(|e| e.in_file(path))
    }

    fn from_dto(d: Dto) -> Result<ServerConfig, Invalid> {
        let method = Method::parse("method", &d.method)?;
        let (control, control_access) = super::common::parse_control_keys(ControlKeys {
            control: &d.control,
            allow_from: &d.control_allow_from,
            token: d.control_token.as_deref(),
            hosts: &d.control_hosts,
        })?;
        stays_local(control, &control_access)?;
        let listen = parse_socket_addr("listen", &d.listen)?;
        Ok(ServerConfig {
            listen,
            tunnel_port: tunnel_port(d.tunnel_port, listen)?,
            tunnel_net: tunnel_net(&d.tunnel_net)?,
            bond_after: bond_after(d.bond_after_kib)?,
            max_joins: max_joins(d.max_joins)?,
            initial_window: initial_window(d.initial_window)?,
            key: SsKey::parse("key", &d.key, method)?,
            method,
            fast_open: d.fast_open,
            congestion: super::common::parse_congestion(d.congestion.as_deref())?,
            mptcp: d.mptcp,
            allow_destinations: cidrs("allow_destinations", &d.allow_destinations)?,
            public_addresses: addresses("public_addresses", &d.public_addresses)?,
            handshake_timeout: timeout("handshake_timeout_secs", d.handshake_timeout_secs)?,
            connect_timeout: timeout("connect_timeout_secs", d.connect_timeout_secs)?,
            idle_timeout: timeout("idle_timeout_secs", d.idle_timeout_secs)?,
            control,
            control_access,
            state_dir: super::gateway::parse_state_dir(&d.state_dir)?,
            limits: super::common::parse_limits(
                d.max_connections,
                d.max_handshakes,
                d.max_handshakes_per_source,
            )?,
            udp: d
                .udp
                .then(|| {
                    super::udp::limits(
                        d.udp_unreplied_timeout_secs,
                        d.udp_timeout_secs,
                        d.udp_max_sessions,
                        60,
                    )
                })
                .transpose()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    fn load(text: &str) -> Result<ServerConfig, ConfigError> {
        ServerConfig::from_toml(Path::new("server.toml"), text)
    }

    #[test]
    fn tunnel_port_defaults_to_the_next_port_zero_is_off_and_the_relay_port_is_refused() {
        let base = format!(
            "listen = \"0.0.0.0:8388\"\nmethod = \"2022-blake3-aes-256-gcm\"\nkey = \"{KEY}\"\n"
        );
        let c = load(&base).unwrap();
        assert_eq!(c.tunnel_port, Some(8389));
        assert_eq!(c.tunnel_net, "10.255.0.0/16".parse().unwrap());
        assert_eq!(
            load(&format!("{base}tunnel_port = 0\n"))
                .unwrap()
                .tunnel_port,
            None
        );
        let e = load(&format!("{base}tunnel_port = 8388\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("`tunnel_port`") && e.contains("fix:"), "{e}");
        let e = load(&format!("{base}tunnel_net = \"10.255.0.1/32\"\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("`tunnel_net`"), "{e}");
    }

    #[test]
    fn bond_after_kib_defaults_to_128_zero_is_off_and_a_huge_one_is_refused() {
        let base = format!(
            "listen = \"0.0.0.0:8388\"\nmethod = \"2022-blake3-aes-256-gcm\"\nkey = \"{KEY}\"\n"
        );
        assert_eq!(load(&base).unwrap().bond_after, Some(128 * 1024));
        assert_eq!(
            load(&format!("{base}bond_after_kib = 0\n"))
                .unwrap()
                .bond_after,
            None
        );
        let e = load(&format!("{base}bond_after_kib = 2000000\n"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`bond_after_kib`") && e.contains("2000000") && e.contains("fix:"),
            "{e}"
        );
    }

    #[test]
    fn max_joins_defaults_to_the_kernels_most_and_more_is_refused() {
        let base = format!(
            "listen = \"0.0.0.0:8388\"\nmethod = \"2022-blake3-aes-256-gcm\"\nkey = \"{KEY}\"\n"
        );
        assert_eq!(load(&base).unwrap().max_joins, 8);
        assert_eq!(
            load(&format!("{base}max_joins = 0\n")).unwrap().max_joins,
            0
        );
        let e = load(&format!("{base}max_joins = 9\n"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`max_joins`") && e.contains('9') && e.contains("fix:"),
            "{e}"
        );
    }

    #[test]
    fn initial_window_defaults_to_32_zero_is_the_kernels_and_a_huge_one_is_refused() {
        let base = format!(
            "listen = \"0.0.0.0:8388\"\nmethod = \"2022-blake3-aes-256-gcm\"\nkey = \"{KEY}\"\n"
        );
        assert_eq!(load(&base).unwrap().initial_window, Some(32));
        assert_eq!(
            load(&format!("{base}initial_window = 0\n"))
                .unwrap()
                .initial_window,
            None
        );
        let e = load(&format!("{base}initial_window = 1000\n"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`initial_window`") && e.contains("1000") && e.contains("fix:"),
            "{e}"
        );
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = load(&format!(
            "listen = \"0.0.0.0:8388\"\nmethod = \"2022-blake3-aes-256-gcm\"\nkey = \"{KEY}\"\n"
        ))
        .unwrap();
        assert_eq!(c.fast_open, FastOpen::Auto);
        assert!(c.mptcp);
        assert_eq!(c.idle_timeout, Duration::from_secs(300));
        assert!(c.allow_destinations.is_empty());
        let udp = c.udp.expect("UDP relayed by default");
        assert_eq!(udp.timeouts.unreplied, Duration::from_secs(60));
        assert_eq!(udp.timeouts.stream, Duration::from_secs(180));
        assert_eq!(udp.max_sessions, 1024);
    }

    #[test]
    fn udp_off_and_a_too_short_session_memory_are_understood() {
        let base = format!(
            "listen = \"0.0.0.0:1\"\nmethod = \"2022-blake3-aes-256-gcm\"\nkey = \"{KEY}\"\n"
        );
        assert!(load(&format!("{base}udp = false\n")).unwrap().udp.is_none());
        let e = load(&format!("{base}udp_unreplied_timeout_secs = 30\n"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("udp_unreplied_timeout_secs") && e.contains("60"),
            "{e}"
        );
    }

    #[test]
    fn unknown_key_is_named() {
        let e = load(&format!("listen = \"0.0.0.0:8388\"\nmethod = \"2022-blake3-aes-256-gcm\"\nkey = \"{KEY}\"\nlisten_port = 5\n")).unwrap_err();
        assert!(e.to_string().contains("listen_port"), "{e}");
    }

    #[test]
    fn bad_listen_names_key_value_and_fix() {
        let e = load(&format!(
            "listen = \"8388\"\nmethod = \"2022-blake3-aes-256-gcm\"\nkey = \"{KEY}\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("`listen`") && e.contains("\"8388\"") && e.contains("fix:"),
            "{e}"
        );
    }

    #[test]
    fn bad_fast_open_value_is_named() {
        let e = load(&format!("listen = \"0.0.0.0:1\"\nmethod = \"2022-blake3-aes-256-gcm\"\nkey = \"{KEY}\"\nfast_open = \"maybe\"\n")).unwrap_err().to_string();
        assert!(e.contains("maybe") && e.contains("fast_open"), "{e}");
    }

    #[test]
    fn allowlist_accepts_cidrs_and_addresses_and_names_bad_entries() {
        let base = format!(
            "listen = \"0.0.0.0:1\"\nmethod = \"2022-blake3-aes-256-gcm\"\nkey = \"{KEY}\"\n"
        );
        let c = load(&format!(
            "{base}allow_destinations = [\"10.30.0.0/24\", \"::1\"]\n"
        ))
        .unwrap();
        assert_eq!(c.allow_destinations.len(), 2);
        let e = load(&format!(
            "{base}allow_destinations = [\"10.0.0.0/8\", \"nope\"]\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("allow_destinations[1]") && e.contains("nope"),
            "{e}"
        );
    }

    #[test]
    fn limits_are_optional_and_out_of_range_values_are_named() {
        let base = format!(
            "listen = \"0.0.0.0:1\"\nmethod = \"2022-blake3-aes-256-gcm\"\nkey = \"{KEY}\"\n"
        );
        assert_eq!(
            load(&base).unwrap().limits,
            super::super::LimitsConfig::default()
        );
        let c = load(&format!(
            "{base}max_connections = 5000\nmax_handshakes = 100\n"
        ))
        .unwrap();
        assert_eq!(c.limits.max_connections, Some(5000));
        let e = load(&format!("{base}max_handshakes = 0\n"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`max_handshakes` = 0") && e.contains("fix:"),
            "{e}"
        );
        let e = load(&format!(
            "{base}max_handshakes = 10\nmax_handshakes_per_source = 11\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("max_handshakes_per_source") && e.contains("(10)"),
            "{e}"
        );
    }

    #[test]
    fn public_addresses_take_addresses_and_name_a_bad_entry() {
        let base = format!(
            "listen = \"0.0.0.0:1\"\nmethod = \"2022-blake3-aes-256-gcm\"\nkey = \"{KEY}\"\n"
        );
        let c = load(&format!(
            "{base}public_addresses = [\"203.0.113.7\", \"2001:db8::7\"]\n"
        ))
        .unwrap();
        assert_eq!(c.public_addresses.len(), 2);
        let e = load(&format!("{base}public_addresses = [\"203.0.113.0/24\"]\n"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("public_addresses[0]") && e.contains("fix:"),
            "{e}"
        );
    }

    #[test]
    fn status_api_off_loopback_needs_a_source_list() {
        let base = format!(
            "listen = \"0.0.0.0:1\"\nmethod = \"2022-blake3-aes-256-gcm\"\nkey = \"{KEY}\"\n"
        );
        for bind in ["0.0.0.0:9090", "10.0.0.5:9090"] {
            let e = load(&format!("{base}control = \"{bind}\"\n"))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("`control`") && e.contains("control_allow_from"),
                "{e}"
            );
        }
        let c = load(&format!(
            "{base}control = \"0.0.0.0:9090\"\ncontrol_allow_from = [\"198.51.100.0/24\"]\ncontrol_token = \"0123456789abcdef\"\ncontrol_hosts = [\"Relay.Example.net\"]\n"
        ))
        .unwrap();
        assert_eq!(
            c.control_access.hosts,
            vec!["relay.example.net".to_string()]
        );
        assert!(!format!("{c:?}").contains("0123456789abcdef"));
        let e = load(&format!("{base}control_token = \"short\"\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("control_token") && !e.contains("short"), "{e}");
    }

    #[test]
    fn zero_timeout_is_refused() {
        let e = load(&format!("listen = \"0.0.0.0:1\"\nmethod = \"2022-blake3-aes-256-gcm\"\nkey = \"{KEY}\"\nidle_timeout_secs = 0\n")).unwrap_err().to_string();
        assert!(e.contains("idle_timeout_secs"), "{e}");
    }
}
