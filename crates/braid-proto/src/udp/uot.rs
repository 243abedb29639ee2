//! UDP over TCP, sing-box's UoT v2 in its "connect" form: when UDP to the relay is blocked, a
//! LAN flow's datagrams ride a Shadowsocks-2022 TCP stream to the magic target
//! [`MAGIC_HOST`], whose server side relays them to one destination.
//!
//! ```text
//!  request  := isConnect:u8 (1) ‖ ATYP ADDR PORT (SOCKS5 address of the destination)
//!  packet   := length:u16be ‖ payload            (both directions, after the request)
//! ```
//!
//! The non-connect form (an address before every packet) is not spoken: braid opens one stream
//! per LAN flow and destination instead.

use std::net::SocketAddr;

use crate::socks5::{parse_address, Socks5Error, TargetAddr};

/// The target host that asks a relay for UDP over TCP (version 2).
pub const MAGIC_HOST: &str = "sp.v2.udp-over-tcp.arpa";

/// Largest payload of one packet (its length is a u16).
pub const MAX_PAYLOAD: usize = u16::MAX as usize;

/// Why a UoT stream cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UotError {
    /// The non-connect form, which braid does not speak.
    #[error("the UDP-over-TCP request is not in the connect form (isConnect = {0}); braid relays one destination per stream")]
    NotConnect(u8),
    /// The destination address is malformed.
    #[error("bad destination in the UDP-over-TCP request: {0}")]
    Address(#[from] Socks5Error),
}

/// The request header for datagrams to `dst`.
pub fn request(dst: SocketAddr) -> Vec<u8> {
    let mut r = vec![1];
    match dst {
        SocketAddr::V4(a) => {
            r.push(1);
            r.extend_from_slice(&a.ip().octets());
        }
        SocketAddr::V6(a) => {
            r.push(4);
            r.extend_from_slice(&a.ip().octets());
        }
    }
    r.extend_from_slice(&dst.port().to_be_bytes());
    r
}

/// Parses a request at the start of `buf`: the destination and the bytes it took; `Ok(None)`
/// when more bytes are needed.
pub fn parse_request(buf: &[u8]) -> Result<Option<(TargetAddr, usize)>, UotError> {
    let Some(&connect) = buf.first() else {
        return Ok(None);
    };
    if connect != 1 {
        return Err(UotError::NotConnect(connect));
    }
    Ok(parse_address(&buf[1..])?.map(|(a, n)| (a, n + 1)))
}

/// `payload` framed as one packet; `None` when it is longer than [`MAX_PAYLOAD`].
pub fn frame(payload: &[u8]) -> Option<Vec<u8>> {
    let len = u16::try_from(payload.len()).ok()?;
    let mut f = Vec::with_capacity(2 + payload.len());
    f.extend_from_slice(&len.to_be_bytes());
    f.extend_from_slice(payload);
    Some(f)
}

/// The first whole packet in `buf`: its payload's range and the bytes it took; `None` when
/// more bytes are needed.
pub fn next_packet(buf: &[u8]) -> Option<(std::ops::Range<usize>, usize)> {
    let len = u16::from_be_bytes([*buf.first()?, *buf.get(1)?]) as usize;
    (buf.len() >= 2 + len).then_some((2..2 + len, 2 + len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trips_and_the_non_connect_form_is_refused() {
        let dst: SocketAddr = "10.30.0.2:53".parse().unwrap();
        let r = request(dst);
        assert_eq!(r, [1, 1, 10, 30, 0, 2, 0, 53]);
        assert_eq!(parse_request(&r), Ok(Some((TargetAddr::Ip(dst), 8))));
        assert_eq!(parse_request(&r[..5]), Ok(None));
        let v6: SocketAddr = "[2001:db8::2]:443".parse().unwrap();
        assert_eq!(
            parse_request(&request(v6)).unwrap().unwrap().0,
            TargetAddr::Ip(v6)
        );
        assert_eq!(
            parse_request(&[0, 1, 1, 2, 3, 4, 0, 1]),
            Err(UotError::NotConnect(0))
        );
        assert!(parse_request(&[1, 9]).is_err());
    }

    #[test]
    fn packets_split_at_any_boundary() {
        let mut stream = frame(b"hello").unwrap();
        stream.extend(frame(b"").unwrap());
        stream.extend(frame(&[7u8; 1000]).unwrap());
        let mut payloads = Vec::new();
        let mut at = 0;
        // Fed a byte at a time, the parser only ever returns whole packets.
        for end in 0..=stream.len() {
            while let Some((range, used)) = next_packet(&stream[at..end]) {
                payloads.push(stream[at + range.start..at + range.end].to_vec());
                at += used;
            }
        }
        assert_eq!(payloads, [b"hello".to_vec(), vec![], vec![7u8; 1000]]);
        assert!(frame(&vec![0u8; MAX_PAYLOAD + 1]).is_none());
    }
}
