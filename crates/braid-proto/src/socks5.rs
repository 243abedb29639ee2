//! SOCKS5 (RFC 1928) server side: method negotiation and the CONNECT request.
//!
//! Only what a LAN proxy needs: the "no authentication" method and CONNECT to an IPv4, IPv6 or
//! domain address. Parsers take the bytes received so far and answer `Ok(None)` while incomplete,
//! so the caller can read more; they never panic on peer input.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Protocol version byte.
pub const VERSION: u8 = 5;
/// "No authentication required".
pub const METHOD_NO_AUTH: u8 = 0;
/// "No acceptable methods".
pub const METHOD_NONE_ACCEPTABLE: u8 = 0xff;
const CMD_CONNECT: u8 = 1;

/// A CONNECT target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetAddr {
    /// An IPv4 or IPv6 socket address.
    Ip(SocketAddr),
    /// A host name and port, resolved by the relay.
    Domain(String, u16),
}

impl std::fmt::Display for TargetAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TargetAddr::Ip(a) => write!(f, "{a}"),
            TargetAddr::Domain(h, p) => write!(f, "{h}:{p}"),
        }
    }
}

/// A SOCKS5 peer sent something this server cannot serve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Socks5Error {
    /// The first byte was not 5.
    #[error("not a SOCKS5 client (version byte {0}); fix: configure the application for SOCKS5, not SOCKS4 or HTTP")]
    BadVersion(u8),
    /// The client offered no method braid supports.
    #[error("the SOCKS5 client offered no 'no authentication' method; fix: disable username/password authentication in the client")]
    NoAcceptableMethod,
    /// A command other than CONNECT.
    #[error("SOCKS5 command {0} is not supported (only CONNECT); fix: UDP ASSOCIATE and BIND are not supported yet")]
    UnsupportedCommand(u8),
    /// An unknown address type.
    #[error("SOCKS5 address type {0} is unknown")]
    BadAddressType(u8),
    /// A domain name that is not UTF-8 or is empty.
    #[error("SOCKS5 domain name is empty or not valid text")]
    BadDomain,
}

impl Socks5Error {
    /// The REP code to send back for this error.
    pub fn reply_code(&self) -> Reply {
        match self {
            Socks5Error::UnsupportedCommand(_) => Reply::CommandNotSupported,
            Socks5Error::BadAddressType(_) => Reply::AddressTypeNotSupported,
            _ => Reply::GeneralFailure,
        }
    }
}

/// Parses the greeting `VER NMETHODS METHODS…`. Returns the bytes consumed.
pub fn parse_greeting(buf: &[u8]) -> Result<Option<usize>, Socks5Error> {
    let Some(&ver) = buf.first() else {
        return Ok(None);
    };
    if ver != VERSION {
        return Err(Socks5Error::BadVersion(ver));
    }
    let Some(&n) = buf.get(1) else {
        return Ok(None);
    };
    let end = 2 + usize::from(n);
    let Some(methods) = buf.get(2..end) else {
        return Ok(None);
    };
    if methods.contains(&METHOD_NO_AUTH) {
        Ok(Some(end))
    } else {
        Err(Socks5Error::NoAcceptableMethod)
    }
}

/// The method-selection reply.
pub fn greeting_reply(ok: bool) -> [u8; 2] {
    [
        VERSION,
        if ok {
            METHOD_NO_AUTH
        } else {
            METHOD_NONE_ACCEPTABLE
        },
    ]
}

/// Parses `VER CMD RSV ATYP DST.ADDR DST.PORT`. Returns the target and the bytes consumed.
pub fn parse_request(buf: &[u8]) -> Result<Option<(TargetAddr, usize)>, Socks5Error> {
    if buf.len() < 4 {
        if let Some(&v) = buf.first() {
            if v != VERSION {
                return Err(Socks5Error::BadVersion(v));
            }
        }
        return Ok(None);
    }
    if buf[0] != VERSION {
        return Err(Socks5Error::BadVersion(buf[0]));
    }
    if buf[1] != CMD_CONNECT {
        return Err(Socks5Error::UnsupportedCommand(buf[1]));
    }
    let (target, used) = match parse_address(&buf[3..])? {
        Some(x) => x,
        None => return Ok(None),
    };
    Ok(Some((target, 3 + used)))
}

/// Parses `ATYP ADDR PORT` (also the SS2022 address format).
pub fn parse_address(buf: &[u8]) -> Result<Option<(TargetAddr, usize)>, Socks5Error> {
    let Some(&atyp) = buf.first() else {
        return Ok(None);
    };
    let port_at = |i: usize| buf.get(i..i + 2).map(|p| u16::from_be_bytes([p[0], p[1]]));
    match atyp {
        1 => {
            let (Some(a), Some(port)) = (buf.get(1..5), port_at(5)) else {
                return Ok(None);
            };
            let ip = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
            Ok(Some((
                TargetAddr::Ip(SocketAddr::new(IpAddr::V4(ip), port)),
                7,
            )))
        }
        4 => {
            let (Some(a), Some(port)) = (buf.get(1..17), port_at(17)) else {
                return Ok(None);
            };
            let mut o = [0u8; 16];
            o.copy_from_slice(a);
            Ok(Some((
                TargetAddr::Ip(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(o)), port)),
                19,
            )))
        }
        3 => {
            let Some(&len) = buf.get(1) else {
                return Ok(None);
            };
            let end = 2 + usize::from(len);
            let (Some(name), Some(port)) = (buf.get(2..end), port_at(end)) else {
                return Ok(None);
            };
            let name = std::str::from_utf8(name).map_err(|_| Socks5Error::BadDomain)?;
            if name.is_empty() {
                return Err(Socks5Error::BadDomain);
            }
            Ok(Some((TargetAddr::Domain(name.to_string(), port), end + 2)))
        }
        other => Err(Socks5Error::BadAddressType(other)),
    }
}

/// Emits `ATYP ADDR PORT`, the inverse of [`parse_address`]: IPv4 as type 1, IPv6 as type 4
/// (an IPv4-mapped IPv6 address stays type 4, as it arrived), a name as type 3.
///
/// A name must be 1 to 255 bytes, the most its length byte can say.
pub fn emit_address(target: &TargetAddr, out: &mut Vec<u8>) -> Result<(), Socks5Error> {
    let port = match target {
        TargetAddr::Ip(SocketAddr::V4(a)) => {
            out.push(1);
            out.extend_from_slice(&a.ip().octets());
            a.port()
        }
        TargetAddr::Ip(SocketAddr::V6(a)) => {
            out.push(4);
            out.extend_from_slice(&a.ip().octets());
            a.port()
        }
        TargetAddr::Domain(name, port) => {
            let len = u8::try_from(name.len())
                .ok()
                .filter(|n| *n > 0)
                .ok_or(Socks5Error::BadDomain)?;
            out.push(3);
            out.push(len);
            out.extend_from_slice(name.as_bytes());
            *port
        }
    };
    out.extend_from_slice(&port.to_be_bytes());
    Ok(())
}

/// REP codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Reply {
    /// succeeded
    Succeeded = 0,
    /// general SOCKS server failure
    GeneralFailure = 1,
    /// connection not allowed by ruleset
    NotAllowed = 2,
    /// host unreachable
    HostUnreachable = 4,
    /// connection refused
    ConnectionRefused = 5,
    /// command not supported
    CommandNotSupported = 7,
    /// address type not supported
    AddressTypeNotSupported = 8,
}

/// The reply to a request, with the bound address 0.0.0.0:0 (the relay's real one is unknown).
pub fn reply(code: Reply) -> [u8; 10] {
    [VERSION, code as u8, 0, 1, 0, 0, 0, 0, 0, 0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greeting_incomplete_then_accepted() {
        assert_eq!(parse_greeting(&[5]), Ok(None));
        assert_eq!(parse_greeting(&[5, 2, 2]), Ok(None));
        assert_eq!(parse_greeting(&[5, 2, 2, 0]), Ok(Some(4)));
    }

    #[test]
    fn greeting_without_no_auth_is_refused() {
        assert_eq!(
            parse_greeting(&[5, 1, 2]),
            Err(Socks5Error::NoAcceptableMethod)
        );
        assert_eq!(parse_greeting(&[4, 1, 0]), Err(Socks5Error::BadVersion(4)));
    }

    #[test]
    fn request_ipv4_ipv6_and_domain() {
        let r = parse_request(&[5, 1, 0, 1, 10, 0, 0, 1, 0x1f, 0x90])
            .unwrap()
            .unwrap();
        assert_eq!(r, (TargetAddr::Ip("10.0.0.1:8080".parse().unwrap()), 10));
        let mut v6 = vec![5, 1, 0, 4];
        v6.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        v6.extend_from_slice(&[0, 80]);
        assert_eq!(
            parse_request(&v6).unwrap().unwrap(),
            (TargetAddr::Ip("[::1]:80".parse().unwrap()), 22)
        );
        let mut d = vec![5, 1, 0, 3, 11];
        d.extend_from_slice(b"example.com");
        d.extend_from_slice(&[1, 187]);
        assert_eq!(
            parse_request(&d).unwrap().unwrap(),
            (TargetAddr::Domain("example.com".into(), 443), d.len())
        );
    }

    #[test]
    fn request_truncated_at_every_length_asks_for_more() {
        let mut d = vec![5, 1, 0, 3, 3];
        d.extend_from_slice(b"a.b");
        d.extend_from_slice(&[0, 80]);
        for n in 0..d.len() {
            assert_eq!(parse_request(&d[..n]), Ok(None), "prefix {n}");
        }
    }

    #[test]
    fn request_bind_and_bad_atyp_are_errors_with_reply_codes() {
        let e = parse_request(&[5, 2, 0, 1, 0, 0, 0, 0, 0, 0]).unwrap_err();
        assert_eq!(e.reply_code(), Reply::CommandNotSupported);
        let e = parse_request(&[5, 1, 0, 9, 0, 0]).unwrap_err();
        assert_eq!(e.reply_code(), Reply::AddressTypeNotSupported);
        assert_eq!(
            parse_request(&[5, 1, 0, 3, 0, 0, 80]),
            Err(Socks5Error::BadDomain)
        );
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut x: u32 = 12345;
        for _ in 0..20000 {
            let len = (x % 40) as usize;
            let buf: Vec<u8> = (0..len)
                .map(|_| {
                    x = x.wrapping_mul(1103515245).wrapping_add(12345);
                    (x >> 16) as u8
                })
                .collect();
            let _ = parse_greeting(&buf);
            let _ = parse_request(&buf);
        }
    }
}
