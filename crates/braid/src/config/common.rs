//! Keys shared by server and gateway: method, key, fast_open, congestion.

use base64::Engine;
use shadowsocks::crypto::CipherKind;

use super::Invalid;

/// The Shadowsocks-2022 methods braid speaks (SIP022).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `2022-blake3-aes-128-gcm`, 16-byte key.
    Aes128Gcm,
    /// `2022-blake3-aes-256-gcm`, 32-byte key.
    Aes256Gcm,
    /// `2022-blake3-chacha20-poly1305`, 32-byte key.
    Chacha20Poly1305,
}

impl Method {
    /// Every method, in the order shown in errors.
    pub const ALL: [Method; 3] = [
        Method::Aes256Gcm,
        Method::Aes128Gcm,
        Method::Chacha20Poly1305,
    ];

    /// The SIP022 name.
    pub fn name(self) -> &'static str {
        match self {
            Method::Aes128Gcm => "2022-blake3-aes-128-gcm",
            Method::Aes256Gcm => "2022-blake3-aes-256-gcm",
            Method::Chacha20Poly1305 => "2022-blake3-chacha20-poly1305",
        }
    }

    /// Key length in bytes.
    pub fn key_len(self) -> usize {
        match self {
            Method::Aes128Gcm => 16,
            _ => 32,
        }
    }

    /// The shadowsocks crate's cipher.
    pub fn cipher(self) -> CipherKind {
        match self {
            Method::Aes128Gcm => CipherKind::AEAD2022_BLAKE3_AES_128_GCM,
            Method::Aes256Gcm => CipherKind::AEAD2022_BLAKE3_AES_256_GCM,
            Method::Chacha20Poly1305 => CipherKind::AEAD2022_BLAKE3_CHACHA20_POLY1305,
        }
    }

    /// Parses a `method` value.
    pub fn parse(key: &str, s: &str) -> Result<Method, Invalid> {
        Method::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Method::ALL.iter().map(|m| m.name()).collect();
                Invalid::new(
                    key,
                    format!("{s:?}"),
                    "is not a Shadowsocks-2022 method braid supports",
                    format!("use one of {}", names.join(", ")),
                )
            })
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A pre-shared key, checked against its method's length and decoded once, when the config is
/// read: the relay hands the bytes to every connection. Debug output never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct SsKey {
    base64: String,
    bytes: Box<[u8]>,
}

impl std::fmt::Debug for SsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SsKey(…)")
    }
}

impl SsKey {
    /// Parses a base64 key for `method`.
    pub fn parse(key: &str, s: &str, method: Method) -> Result<SsKey, Invalid> {
        let shown = "\"<hidden>\"";
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(s.trim())
            .map_err(|e| {
                Invalid::new(
                    key,
                    shown,
                    format!("is not valid base64 ({e})"),
                    "paste the exact line printed by `braid keygen`",
                )
            })?;
        if bytes.len() != method.key_len() {
            return Err(Invalid::new(
                key,
                shown,
                format!(
                    "decodes to {} bytes, but {} needs {}",
                    bytes.len(),
                    method.name(),
                    method.key_len()
                ),
                format!(
                    "generate one with `braid keygen --method {}`",
                    method.name()
                ),
            ));
        }
        Ok(SsKey {
            base64: s.trim().to_string(),
            bytes: bytes.into_boxed_slice(),
        })
    }

    /// The decoded key.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The key as base64, the form the shadowsocks crate takes as "password" for 2022 methods.
    pub fn as_base64(&self) -> &str {
        &self.base64
    }
}

/// `fast_open`: the TCP Fast Open policy, as `braid_proto::tfo` decides with it.
pub use braid_proto::tfo::Policy as FastOpen;

/// `congestion`: the relay sockets' congestion control, as `braid_proto::congestion` decides
/// with it.
pub use braid_proto::congestion::Choice as Congestion;

/// Parses `congestion`; absent means braid's default, BBR.
pub fn parse_congestion(s: Option<&str>) -> Result<Congestion, Invalid> {
    let Some(s) = s else {
        return Ok(Congestion::default());
    };
    Congestion::parse(s).map_err(|problem| {
        Invalid::new(
            "congestion",
            format!("{s:?}"),
            problem,
            "use \"bbr\" (the default), another name from net.ipv4.tcp_available_congestion_control, or \"default\" for the host's default",
        )
    })
}

/// Parses `host:port` / `ip:port` for key `key`.
pub fn parse_socket_addr(key: &str, s: &str) -> Result<std::net::SocketAddr, Invalid> {
    s.parse().map_err(|_| {
        Invalid::new(
            key,
            format!("{s:?}"),
            "is not an IP address with a port",
            "write it as \"0.0.0.0:8388\" or \"[::]:8388\"",
        )
    })
}

/// The caps on connections and handshakes (`max_connections`, `max_handshakes`,
/// `max_handshakes_per_source`); `None` takes the default sized from the open-file limit at
/// start (`crate::admission::Limits::sized_from`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitsConfig {
    /// `max_connections`.
    pub max_connections: Option<usize>,
    /// `max_handshakes`.
    pub max_handshakes: Option<usize>,
    /// `max_handshakes_per_source`.
    pub max_handshakes_per_source: Option<usize>,
}

/// Most any cap may be: beyond what any kernel lets one process open.
const MAX_CAP: u64 = 10_000_000;

/// Parses the three caps; each, when given, must be 1 to 10,000,000.
pub fn parse_limits(
    max_connections: Option<u64>,
    max_handshakes: Option<u64>,
    max_handshakes_per_source: Option<u64>,
) -> Result<LimitsConfig, Invalid> {
    let cap = |key: &str, v: Option<u64>| -> Result<Option<usize>, Invalid> {
        match v {
            None => Ok(None),
            Some(n) if (1..=MAX_CAP).contains(&n) => Ok(usize::try_from(n).ok()),
            Some(n) => Err(Invalid::new(
                key,
                n,
                "is outside 1–10000000",
                format!(
                    "remove `{key}` to size it from the open-file limit, or pick a value in range"
                ),
            )),
        }
    };
    let c = LimitsConfig {
        max_connections: cap("max_connections", max_connections)?,
        max_handshakes: cap("max_handshakes", max_handshakes)?,
        max_handshakes_per_source: cap("max_handshakes_per_source", max_handshakes_per_source)?,
    };
    if let (Some(per), Some(all)) = (c.max_handshakes_per_source, c.max_handshakes) {
        if per > all {
            return Err(Invalid::new(
                "max_handshakes_per_source",
                per,
                format!("is more than max_handshakes ({all})"),
                "make it at most max_handshakes",
            ));
        }
    }
    Ok(c)
}

/// `control_token`: a shared secret for the status API. Debug output never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct ControlToken(String);

impl std::fmt::Debug for ControlToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ControlToken(…)")
    }
}

impl ControlToken {
    /// The token.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Who may read the status API besides loopback (`control_allow_from`), with which token
/// (`control_token`) and under which host names (`control_hosts`); see `crate::status::access`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ControlAccess {
    /// `control_allow_from`.
    pub allow_from: Vec<ipnet::IpNet>,
    /// `control_token`.
    pub token: Option<ControlToken>,
    /// `control_hosts`, lowercase.
    pub hosts: Vec<String>,
}

/// The status API's keys as written: `control`, `control_allow_from`, `control_token`,
/// `control_hosts`.
pub struct ControlKeys<'a> {
    /// `control`.
    pub control: &'a str,
    /// `control_allow_from`.
    pub allow_from: &'a [String],
    /// `control_token`.
    pub token: Option<&'a str>,
    /// `control_hosts`.
    pub hosts: &'a [String],
}

/// Parses the status API's keys: its address (`None` for "off") and who may read it; a bind on
/// every interface needs `control_allow_from` (`crate::allow_from::check_bind`).
pub fn parse_control_keys(
    keys: ControlKeys<'_>,
) -> Result<(Option<std::net::SocketAddr>, ControlAccess), Invalid> {
    let control = parse_control(keys.control)?;
    let allow_from = super::server::cidrs("control_allow_from", keys.allow_from)?;
    if let Some(addr) = control {
        crate::allow_from::check_bind("control", addr, &allow_from)?;
    }
    let (token, hosts) = (keys.token, keys.hosts);
    let token = token
        .map(|t| {
            let ok = (16..=256).contains(&t.len())
                && t.bytes().all(|b| b.is_ascii_graphic() && b != b';');
            if ok {
                Ok(ControlToken(t.to_string()))
            } else {
                Err(Invalid::new(
                    "control_token",
                    "\"<hidden>\"",
                    "must be 16 to 256 visible ASCII characters, without ';'",
                    "use the line printed by `braid keygen`",
                ))
            }
        })
        .transpose()?;
    let hosts = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let ok = !h.is_empty()
                && h.len() <= 253
                && h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
            if ok {
                Ok(h.to_ascii_lowercase())
            } else {
                Err(Invalid::new(
                    format!("control_hosts[{i}]"),
                    format!("{h:?}"),
                    "is not a host name",
                    "write the name browsers use for the status API, without port, e.g. \"router.lan\"",
                ))
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((
        control,
        ControlAccess {
            allow_from,
            token,
            hosts,
        },
    ))
}

/// The HTTP status API's default address: loopback only, because it shows addresses and traffic.
pub const DEFAULT_CONTROL: &str = "127.0.0.1:9090";

/// Parses `control`: an address, or "off".
pub fn parse_control(s: &str) -> Result<Option<std::net::SocketAddr>, Invalid> {
    if s == "off" {
        return Ok(None);
    }
    parse_socket_addr("control", s).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_unknown_names_the_choices() {
        let e = Method::parse("method", "aes-256-gcm").unwrap_err();
        assert!(e.fix.contains("2022-blake3-aes-256-gcm"), "{e:?}");
    }

    #[test]
    fn key_of_wrong_length_says_which_length() {
        let k16 = base64::engine::general_purpose::STANDARD.encode([7u8; 16]);
        let e = SsKey::parse("key", &k16, Method::Aes256Gcm).unwrap_err();
        assert!(
            e.problem.contains("16 bytes") && e.problem.contains("32"),
            "{e:?}"
        );
        assert!(SsKey::parse("key", &k16, Method::Aes128Gcm).is_ok());
        assert!(SsKey::parse("key", "%%%", Method::Aes128Gcm)
            .unwrap_err()
            .problem
            .contains("base64"));
    }

    #[test]
    fn congestion_defaults_to_bbr_and_names_a_bad_value() {
        assert_eq!(
            parse_congestion(None).unwrap(),
            Congestion::Named("bbr".into())
        );
        assert_eq!(
            parse_congestion(Some("default")).unwrap(),
            Congestion::HostDefault
        );
        let e = parse_congestion(Some("BBR!")).unwrap_err();
        assert!(e.fix.contains("tcp_available_congestion_control"), "{e:?}");
    }

    #[test]
    fn key_debug_hides_the_secret() {
        let k = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        let key = SsKey::parse("key", &k, Method::Aes256Gcm).unwrap();
        assert!(!format!("{key:?}").contains(&k));
    }
}
