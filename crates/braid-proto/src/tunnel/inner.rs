//! A checked view of the IP packets inside the tunnel, and the rules for which of them may pass.
//!
//! The tunnel exists to carry MPTCP subflows between a gateway and the relay's TCP listener, and
//! nothing else: a gateway must not reach the relay's other services, other hosts behind the
//! relay, or another gateway's tunnel address through it. [`to_relay`] and [`from_relay`] say
//! which decrypted packets may enter the kernel. Bytes come from a peer, so [`parse`] never
//! panics: a packet it cannot read is `None` and is dropped.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// IP protocol number of TCP.
pub const TCP: u8 = 6;

/// What the tunnel's rules look at in one IP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inner {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// IP protocol (IPv4) or first next-header (IPv6).
    pub protocol: u8,
    /// Source port, for a TCP or UDP packet whose transport header is present (first fragment).
    pub src_port: Option<u16>,
    /// Destination port, likewise.
    pub dst_port: Option<u16>,
}

fn ports(l4: Option<&[u8]>) -> (Option<u16>, Option<u16>) {
    match l4.and_then(|l| l.get(..4)) {
        Some(p) => (
            Some(u16::from_be_bytes([p[0], p[1]])),
            Some(u16::from_be_bytes([p[2], p[3]])),
        ),
        None => (None, None),
    }
}

/// Reads an IPv4 or IPv6 packet's addresses, protocol and ports; `None` when it is too short,
/// of another version, or its header lengths disagree with its size.
pub fn parse(packet: &[u8]) -> Option<Inner> {
    match packet.first()? >> 4 {
        4 => parse_v4(packet),
        6 => parse_v6(packet),
        _ => None,
    }
}

fn parse_v4(p: &[u8]) -> Option<Inner> {
    let ihl = usize::from(p.first()? & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([*p.get(2)?, *p.get(3)?]));
    if ihl < 20 || total < ihl || total > p.len() {
        return None;
    }
    let frag_offset = u16::from_be_bytes([p[6], p[7]]) & 0x1fff;
    let protocol = p[9];
    let src = Ipv4Addr::new(p[12], p[13], p[14], p[15]);
    let dst = Ipv4Addr::new(p[16], p[17], p[18], p[19]);
    let l4 = (frag_offset == 0).then(|| &p[ihl..total]);
    let (src_port, dst_port) = ports(l4);
    Some(Inner {
        src: src.into(),
        dst: dst.into(),
        protocol,
        src_port,
        dst_port,
    })
}

fn parse_v6(p: &[u8]) -> Option<Inner> {
    let header = p.get(..40)?;
    let payload = usize::from(u16::from_be_bytes([header[4], header[5]]));
    if 40 + payload > p.len() {
        return None;
    }
    let protocol = header[6];
    let addr = |at: usize| {
        let mut o = [0u8; 16];
        o.copy_from_slice(&header[at..at + 16]);
        Ipv6Addr::from(o)
    };
    // Extension headers are not walked: such a packet has no ports, and the rules refuse it.
    let (src_port, dst_port) = ports(Some(&p[40..40 + payload]));
    Some(Inner {
        src: addr(8).into(),
        dst: addr(24).into(),
        protocol,
        src_port,
        dst_port,
    })
}

/// A packet a gateway sent into the tunnel may reach the kernel when it comes from the address
/// the relay granted that gateway (`peer`) and is TCP to the relay's listener (`relay`).
pub fn to_relay(p: &Inner, peer: IpAddr, relay: SocketAddr) -> bool {
    p.src == peer && p.protocol == TCP && p.dst == relay.ip() && p.dst_port == Some(relay.port())
}

/// A packet the relay sent into the tunnel may reach the gateway's kernel when it is TCP from
/// the relay's listener to the gateway's tunnel address (`me`).
pub fn from_relay(p: &Inner, relay: SocketAddr, me: IpAddr) -> bool {
    p.dst == me && p.protocol == TCP && p.src == relay.ip() && p.src_port == Some(relay.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An IPv4 TCP packet src:sp → dst:dp with `payload` bytes after a 20-byte TCP header.
    fn tcp4(src: [u8; 4], sp: u16, dst: [u8; 4], dp: u16, payload: usize) -> Vec<u8> {
        let total = 40 + payload;
        let mut p = vec![0u8; total];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[8] = 64;
        p[9] = TCP;
        p[12..16].copy_from_slice(&src);
        p[16..20].copy_from_slice(&dst);
        p[20..22].copy_from_slice(&sp.to_be_bytes());
        p[22..24].copy_from_slice(&dp.to_be_bytes());
        p
    }

    const RELAY: &str = "10.200.0.1:8388";
    const PEER: [u8; 4] = [10, 255, 0, 2];

    #[test]
    fn subflow_to_the_relay_port_passes_and_everything_else_is_refused() {
        let relay: SocketAddr = RELAY.parse().unwrap();
        let peer = IpAddr::from(PEER);
        let ok = parse(&tcp4(PEER, 40000, [10, 200, 0, 1], 8388, 100)).unwrap();
        assert!(to_relay(&ok, peer, relay));
        for bad in [
            tcp4(PEER, 40000, [10, 200, 0, 1], 22, 0), // another port of the relay
            tcp4(PEER, 40000, [10, 30, 0, 2], 8388, 0), // a host behind the relay
            tcp4([10, 255, 0, 3], 1, [10, 200, 0, 1], 8388, 0), // a spoofed source
            tcp4(PEER, 40000, [10, 255, 0, 3], 8388, 0), // another gateway's tunnel
        ] {
            assert!(!to_relay(&parse(&bad).unwrap(), peer, relay));
        }
        let mut udp = tcp4(PEER, 1, [10, 200, 0, 1], 8388, 0);
        udp[9] = 17;
        assert!(!to_relay(&parse(&udp).unwrap(), peer, relay));
        let back = parse(&tcp4([10, 200, 0, 1], 8388, PEER, 40000, 0)).unwrap();
        assert!(from_relay(&back, relay, peer));
        assert!(!from_relay(&ok, relay, peer));
    }

    #[test]
    fn later_fragments_have_no_ports_and_are_refused() {
        let relay: SocketAddr = RELAY.parse().unwrap();
        let mut p = tcp4(PEER, 40000, [10, 200, 0, 1], 8388, 8);
        p[6] = 0x00;
        p[7] = 0x10; // fragment offset 16 × 8 bytes
        let v = parse(&p).unwrap();
        assert_eq!(v.dst_port, None);
        assert!(!to_relay(&v, IpAddr::from(PEER), relay));
    }

    #[test]
    fn truncated_or_lying_headers_are_none_not_panics() {
        let good = tcp4(PEER, 1, [10, 200, 0, 1], 8388, 10);
        for n in 0..good.len() {
            // Shorter than its total length: refused; never a panic.
            assert!(parse(&good[..n]).is_none(), "{n} bytes");
        }
        let mut bad_ihl = good.clone();
        bad_ihl[0] = 0x44;
        assert!(parse(&bad_ihl).is_none());
        let mut big_ihl = good.clone();
        big_ihl[0] = 0x4f;
        big_ihl[2..4].copy_from_slice(&60u16.to_be_bytes());
        assert!(
            parse(&big_ihl).is_none(),
            "a 60-byte header in a 40-byte packet"
        );
        assert!(parse(&[0x60; 39]).is_none());
        assert!(parse(&[0x70; 60]).is_none());
        // Every byte pattern of a short packet parses or is refused without a panic.
        for b in 0..=255u8 {
            let _ = parse(&[b; 48]);
            let mut p = good.clone();
            p[0] = b;
            let _ = parse(&p);
        }
    }

    #[test]
    fn ipv6_tcp_ports_are_read() {
        let mut p = vec![0u8; 60];
        p[0] = 0x60;
        p[4..6].copy_from_slice(&20u16.to_be_bytes());
        p[6] = TCP;
        p[23] = 1;
        p[39] = 2;
        p[40..42].copy_from_slice(&5u16.to_be_bytes());
        p[42..44].copy_from_slice(&8388u16.to_be_bytes());
        let v = parse(&p).unwrap();
        assert_eq!(
            (v.protocol, v.src_port, v.dst_port),
            (TCP, Some(5), Some(8388))
        );
        assert_eq!(v.dst, "::2".parse::<IpAddr>().unwrap());
    }
}
