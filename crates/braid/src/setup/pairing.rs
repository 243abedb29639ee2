//! The pairing URI that `setup server` prints and `setup gateway --pair` takes: SIP002
//! (`ss://METHOD:KEY@HOST:PORT`, the key percent-encoded, as SIP002 writes SS2022 keys) with
//! braid's extras as query parameters, so any Shadowsocks client can still read it:
//!
//! `ss://2022-blake3-aes-256-gcm:KEY%3D@203.0.113.7:8388/?braid=1&mptcp=1&tfo=1#braid`
//!
//! - `braid=1`: the format version of the extras;
//! - `mptcp=0|1`: whether the relay listens with MPTCP (the gateway's `mptcp`);
//! - `tfo=0|1`: whether the relay may take TCP Fast Open (`fast_open = "off"` on the gateway
//!   when 0, else `"auto"`).

use crate::config::gateway::RelayAddr;
use crate::config::Method;
use crate::config::SsKey;

/// A parsed (or to-be-printed) pairing URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pairing {
    /// The relay as the gateway reaches it.
    pub relay: RelayAddr,
    /// SS2022 method.
    pub method: Method,
    /// Pre-shared key.
    pub key: SsKey,
    /// The relay listens with MPTCP.
    pub mptcp: bool,
    /// The relay may take TCP Fast Open.
    pub tfo: bool,
}

/// Why a URI is not a pairing URI.
#[derive(Debug, thiserror::Error)]
#[error("the pairing URI is not valid: {0}; fix: copy the whole ss://… line that `braid setup server` printed, in single quotes")]
pub struct PairingError(String);

impl Pairing {
    /// The URI.
    pub fn to_uri(&self) -> String {
        let key = percent_encoding::utf8_percent_encode(self.key.as_base64(), USERINFO);
        let userinfo = format!("{}:{key}", self.method.name());
        let host = match &self.relay {
            RelayAddr::Socket(a) => a.to_string(),
            RelayAddr::Host(h, p) => format!("{h}:{p}"),
        };
        format!(
            "ss://{userinfo}@{host}/?braid=1&mptcp={}&tfo={}#braid",
            u8::from(self.mptcp),
            u8::from(self.tfo)
        )
    }

    /// Parses a URI; the standard part through the same parser as `server = "ss://…"` in
    /// gateway.toml, the extras here (absent extras: a plain SIP002 URI, MPTCP and TFO on).
    pub fn parse(uri: &str) -> Result<Pairing, PairingError> {
        let text = format!(
            "server = {}\n[[uplink]]\nname = \"x\"\ninterface = \"x\"\n",
            toml_string(uri)
        );
        let cfg = crate::config::gateway::GatewayConfig::from_toml(
            std::path::Path::new("the pairing URI"),
            &text,
        )
        .map_err(|e| PairingError(e.to_string()))?;
        let url = url::Url::parse(uri).map_err(|e| PairingError(e.to_string()))?;
        let mut p = Pairing {
            relay: cfg.server,
            method: cfg.method,
            key: cfg.key,
            mptcp: true,
            tfo: true,
        };
        for (k, v) in url.query_pairs() {
            let flag = || match v.as_ref() {
                "1" => Ok(true),
                "0" => Ok(false),
                other => Err(PairingError(format!("{k}={other} (expected 0 or 1)"))),
            };
            match k.as_ref() {
                "mptcp" => p.mptcp = flag()?,
                "tfo" => p.tfo = flag()?,
                _ => {}
            }
        }
        Ok(p)
    }
}

/// What SIP002 escapes in the userinfo: everything but unreserved characters.
const USERINFO: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// The URI as a QR code of Unicode half blocks, two modules per character cell (fits an
/// 80-column terminal for URIs of this length). Light on dark terminals and dark on light ones
/// both scan, since the quiet zone is drawn.
pub fn qr(uri: &str) -> Option<String> {
    let code = qrcode::QrCode::with_error_correction_level(uri, qrcode::EcLevel::L).ok()?;
    Some(
        code.render::<qrcode::render::unicode::Dense1x2>()
            .dark_color(qrcode::render::unicode::Dense1x2::Light)
            .light_color(qrcode::render::unicode::Dense1x2::Dark)
            .build(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Pairing {
        let key = crate::keygen::generate(Method::Aes256Gcm).unwrap();
        Pairing {
            relay: RelayAddr::Socket("203.0.113.7:8388".parse().unwrap()),
            method: Method::Aes256Gcm,
            key: SsKey::parse("key", &key, Method::Aes256Gcm).unwrap(),
            mptcp: true,
            tfo: false,
        }
    }

    #[test]
    fn pairing_round_trips_through_its_uri() {
        let p = sample();
        let uri = p.to_uri();
        assert!(uri.starts_with("ss://2022-blake3-aes-256-gcm:"), "{uri}");
        assert!(
            uri.ends_with("@203.0.113.7:8388/?braid=1&mptcp=1&tfo=0#braid"),
            "{uri}"
        );
        assert_eq!(Pairing::parse(&uri).unwrap(), p);
    }

    #[test]
    fn pairing_uri_is_read_by_shadowsocks_clients() {
        let uri = sample().to_uri();
        let s = shadowsocks::config::ServerConfig::from_url(&uri).unwrap();
        assert_eq!(s.addr().to_string(), "203.0.113.7:8388");
    }

    #[test]
    fn pairing_rejects_garbage_with_the_fix() {
        for bad in [
            "ss://nothing",
            "http://x",
            "ss://2022-blake3-aes-256-gcm:short@1.2.3.4:1/?mptcp=2",
        ] {
            let e = Pairing::parse(bad).unwrap_err().to_string();
            assert!(e.contains("fix:"), "{bad}: {e}");
        }
    }

    #[test]
    fn qr_renders_as_half_blocks() {
        let q = qr(&sample().to_uri()).unwrap();
        assert!(q.lines().count() > 20 && q.contains('▀'));
    }
}
