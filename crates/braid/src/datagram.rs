//! Shadowsocks-2022 UDP packets (SIP022 §3.2), sealed and opened with the `shadowsocks` crate's
//! own codec (`relay::udprelay::crypto_io`), so that braid's packets are byte for byte what
//! shadowsocks-rust, Xray and sing-box send and accept.
//!
//! ```text
//!  client ─ seal_request(session, packet id, target, payload) ─► server ─ open_request
//!  client ◄ open_reply ─ seal_reply(client session, server session, packet id, source, payload) ─ server
//! ```
//!
//! The crate checks the AEAD tag, the header type and the ±30 s timestamp; the session routing
//! and the replay window are the callers' (`braid_proto::udp::replay`). Sockets stay with the
//! callers too: the server's relay socket, the gateway's per-uplink sockets.
//!
//! Opening is fenced with `catch_unwind`: the crate's SOCKS address parser panics on a domain
//! address cut short right after the name (`Address::read_cursor` reads the port unchecked).
//! Only a holder of the key can make such a packet, since it is parsed after authentication,
//! but a datagram must never take down a task.

use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use bytes::BytesMut;
use shadowsocks::config::ServerType;
use shadowsocks::context::{Context, SharedContext};
use shadowsocks::crypto::CipherKind;
use shadowsocks::relay::socks5::Address;
use shadowsocks::relay::udprelay::crypto_io::{
    decrypt_client_payload, decrypt_server_payload, encrypt_client_payload, encrypt_server_payload,
    ProtocolError,
};
use shadowsocks::relay::udprelay::options::UdpSocketControlData;

use crate::config::{Method, SsKey};

/// Largest datagram braid reads: the largest UDP payload there is.
pub const MAX_DATAGRAM: usize = 65_535;

/// Why a datagram could not be opened. None of these is answered on the wire (a probe learns
/// nothing); callers count them and log them sparingly.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DatagramError {
    /// Shorter than the smallest packet of the method.
    #[error("too short for a Shadowsocks-2022 packet ({0} bytes)")]
    TooShort(usize),
    /// The AEAD tag did not verify: another key or method, or not Shadowsocks at all.
    #[error("authentication failed: a different key or method, or not a Shadowsocks-2022 packet")]
    Auth,
    /// The timestamp is more than 30 s off this machine's clock (or it is a replay).
    #[error("its timestamp is {skew_secs} s off this machine's clock (more than 30 s is refused as a replay); fix: run NTP on both machines")]
    Timestamp {
        /// Packet time minus local time.
        skew_secs: i64,
    },
    /// The header is authentic but malformed (wrong direction type, bad address).
    #[error("malformed header ({0})")]
    Malformed(String),
}

impl From<ProtocolError> for DatagramError {
    fn from(e: ProtocolError) -> Self {
        use shadowsocks::relay::udprelay::crypto_io::ProtocolError as P;
        match e {
            P::Aead2022Error(inner) => {
                let text = inner.to_string();
                if text.starts_with("packet too short") {
                    DatagramError::TooShort(0)
                } else if text.starts_with("decrypt payload error") {
                    DatagramError::Auth
                } else if let Some(skew) = timestamp_skew(&text) {
                    DatagramError::Timestamp { skew_secs: skew }
                } else {
                    DatagramError::Malformed(text)
                }
            }
            other => DatagramError::Malformed(other.to_string()),
        }
    }
}

/// The skew out of the crate's "invalid timestamp T - now N = D".
fn timestamp_skew(text: &str) -> Option<i64> {
    text.strip_prefix("invalid timestamp ")?
        .rsplit_once("= ")?
        .1
        .trim()
        .parse()
        .ok()
}

/// An opened packet: its payload is the first `len` bytes of the buffer it was opened in.
#[derive(Debug, Clone, PartialEq)]
pub struct Opened {
    /// Payload length.
    pub len: usize,
    /// The target (client → server) or the source (server → client).
    pub addr: Address,
    /// The client's session id.
    pub client_session: u64,
    /// The server's session id (0 in client → server packets).
    pub server_session: u64,
    /// The sender's packet id, for the replay window.
    pub packet_id: u64,
}

/// Seals and opens one method and key's packets.
#[derive(Clone)]
pub struct Codec {
    method: CipherKind,
    /// Kept at one address for the codec's life: the crate caches session ciphers by the key's
    /// address.
    key: Arc<[u8]>,
    ctx: SharedContext,
}

impl std::fmt::Debug for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Codec")
            .field("method", &self.method)
            .finish_non_exhaustive()
    }
}

impl Codec {
    /// A codec for `method` and `key`.
    pub fn new(method: Method, key: &SsKey) -> Codec {
        Codec {
            method: method.cipher(),
            key: Arc::from(key.as_bytes()),
            ctx: Arc::new(Context::new(ServerType::Server)),
        }
    }

    /// Client → server: `payload` for `target`, in session `session` as packet `packet_id`.
    pub fn seal_request(
        &self,
        session: u64,
        packet_id: u64,
        target: &Address,
        payload: &[u8],
        out: &mut BytesMut,
    ) {
        let mut control = UdpSocketControlData::default();
        control.client_session_id = session;
        control.packet_id = packet_id;
        out.clear();
        encrypt_client_payload(
            &self.ctx,
            self.method,
            &self.key,
            target,
            &control,
            &[],
            payload,
            out,
        );
    }

    /// Server → client: `payload` from `source`, for client session `client_session`, in server
    /// session `server_session` as packet `packet_id`.
    pub fn seal_reply(
        &self,
        client_session: u64,
        server_session: u64,
        packet_id: u64,
        source: &Address,
        payload: &[u8],
        out: &mut BytesMut,
    ) {
        let mut control = UdpSocketControlData::default();
        control.client_session_id = client_session;
        control.server_session_id = server_session;
        control.packet_id = packet_id;
        out.clear();
        encrypt_server_payload(
            &self.ctx,
            self.method,
            &self.key,
            source,
            &control,
            payload,
            out,
        );
    }

    /// Opens a client → server packet in place (server side).
    pub fn open_request(&self, buf: &mut [u8]) -> Result<Opened, DatagramError> {
        self.open(buf, |ctx, method, key, buf| {
            decrypt_client_payload(ctx, method, key, buf, None)
        })
    }

    /// Opens a server → client packet in place (client side).
    pub fn open_reply(&self, buf: &mut [u8]) -> Result<Opened, DatagramError> {
        self.open(buf, decrypt_server_payload)
    }

    fn open(
        &self,
        buf: &mut [u8],
        decrypt: impl FnOnce(
            &Context,
            CipherKind,
            &[u8],
            &mut [u8],
        )
            -> Result<(usize, Address, Option<UdpSocketControlData>), ProtocolError>,
    ) -> Result<Opened, DatagramError> {
        let n = buf.len();
        let result = catch_unwind(AssertUnwindSafe(|| {
            decrypt(&self.ctx, self.method, &self.key, buf)
        }))
        .map_err(|_| DatagramError::Malformed("address cut short".into()))?;
        let (len, addr, control) = result.map_err(|e| match DatagramError::from(e) {
            DatagramError::TooShort(_) => DatagramError::TooShort(n),
            other => other,
        })?;
        let control = control.ok_or_else(|| {
            DatagramError::Malformed("no session header (not a 2022 method)".into())
        })?;
        Ok(Opened {
            len,
            addr,
            client_session: control.client_session_id,
            server_session: control.server_session_id,
            packet_id: control.packet_id,
        })
    }
}

/// The socket address of an `Address` that carries one (not a domain name), IPv4-mapped IPv6
/// turned back into IPv4.
pub fn socket_addr(a: &Address) -> Option<SocketAddr> {
    match a {
        Address::SocketAddress(s) => Some(braid_sys::socket::normalize(*s)),
        Address::DomainNameAddress(..) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    fn codec(method: Method) -> Codec {
        let key = if method == Method::Aes128Gcm {
            "AAECAwQFBgcICQoLDA0ODw=="
        } else {
            KEY
        };
        Codec::new(method, &SsKey::parse("key", key, method).unwrap())
    }

    fn target() -> Address {
        Address::SocketAddress("10.30.0.2:53".parse().unwrap())
    }

    #[test]
    fn request_and_reply_round_trip_for_every_method() {
        for m in Method::ALL {
            let c = codec(m);
            let mut out = BytesMut::new();
            c.seal_request(7, 3, &target(), b"query", &mut out);
            let mut buf = out.to_vec();
            let o = c.open_request(&mut buf).unwrap();
            assert_eq!((o.client_session, o.packet_id), (7, 3), "{m}");
            assert_eq!(&buf[..o.len], b"query");
            assert_eq!(o.addr, target());

            c.seal_reply(7, 99, 0, &target(), b"answer", &mut out);
            let mut buf = out.to_vec();
            let o = c.open_reply(&mut buf).unwrap();
            assert_eq!((o.client_session, o.server_session), (7, 99), "{m}");
            assert_eq!(&buf[..o.len], b"answer");
        }
    }

    #[test]
    fn wrong_key_is_an_auth_error_and_a_reply_is_not_a_request() {
        let c = codec(Method::Aes256Gcm);
        let other = Codec::new(
            Method::Aes256Gcm,
            &SsKey::parse(
                "key",
                "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=",
                Method::Aes256Gcm,
            )
            .unwrap(),
        );
        let mut out = BytesMut::new();
        c.seal_request(1, 0, &target(), b"x", &mut out);
        assert_eq!(
            other.open_request(&mut out.to_vec()),
            Err(DatagramError::Auth)
        );
        c.seal_reply(1, 2, 0, &target(), b"x", &mut out);
        assert!(matches!(
            c.open_request(&mut out.to_vec()),
            Err(DatagramError::Malformed(_))
        ));
    }

    #[test]
    fn any_bytes_are_refused_without_a_panic() {
        let c = codec(Method::Aes256Gcm);
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for len in [0usize, 1, 15, 16, 17, 40, 43, 44, 100, 1500] {
            for _ in 0..50 {
                let mut buf: Vec<u8> = (0..len)
                    .map(|_| {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        seed as u8
                    })
                    .collect();
                assert!(c.open_request(&mut buf).is_err());
                assert!(c.open_reply(&mut buf).is_err());
            }
        }
    }

    #[test]
    fn address_cut_after_the_name_is_malformed_not_a_panic() {
        // The crate's "none" method parses the address from plain bytes, so it reaches the
        // parser that panics on a domain without its port; `open` must turn that into an error.
        let c = codec(Method::Aes256Gcm);
        let mut buf = vec![3u8, 5, b'a', b'b', b'c', b'd', b'e'];
        let r = c.open(&mut buf, |ctx, _, key, buf| {
            decrypt_client_payload(ctx, CipherKind::NONE, key, buf, None)
        });
        assert_eq!(r, Err(DatagramError::Malformed("address cut short".into())));
    }

    #[test]
    fn timestamp_skew_is_read_from_the_crate_message() {
        assert_eq!(
            timestamp_skew("invalid timestamp 100 - now 160 = -60"),
            Some(-60)
        );
        assert_eq!(timestamp_skew("decrypt payload error"), None);
    }
}
