//! The tunnel's MTU: chosen so that a full-size inner TCP segment fits inside one outer UDP
//! datagram on a 1500-byte path, so the inner TCP never relies on fragmentation.
//!
//! ```text
//!  outer IP (20 / 40) + UDP (8) + WireGuard data header (16) + inner packet + tag (16) ≤ 1500
//! ```
//! The kernel derives each subflow's MSS from the tunnel device's MTU (and the peer's MSS option,
//! which the relay derives from its own tunnel device), so no clamping rule is needed.

/// The path MTU the tunnel is sized for: Ethernet, and what nearly every uplink carries.
pub const PATH_MTU: u16 = 1500;
/// WireGuard's per-packet overhead: 16 bytes of header (type, receiver, counter) and a 16-byte
/// Poly1305 tag.
pub const WIREGUARD_OVERHEAD: u16 = 32;
/// The UDP header.
pub const UDP_HEADER: u16 = 8;

/// The inner MTU for an outer path over IPv6 (`true`) or IPv4: 1420 or 1440 on a 1500-byte path.
pub fn tunnel_mtu(outer_ipv6: bool) -> u16 {
    let ip = if outer_ipv6 { 40 } else { 20 };
    PATH_MTU - ip - UDP_HEADER - WIREGUARD_OVERHEAD
}

/// The largest TCP payload of an inner IPv4 segment without options: what the kernel advertises
/// as MSS on the tunnel device.
pub fn inner_mss(mtu: u16) -> u16 {
    mtu - 20 - 20
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_size_inner_packet_fits_one_outer_datagram_on_a_1500_byte_path() {
        for v6 in [false, true] {
            let mtu = tunnel_mtu(v6);
            let outer = mtu + WIREGUARD_OVERHEAD + UDP_HEADER + if v6 { 40 } else { 20 };
            assert_eq!(outer, PATH_MTU, "outer IPv6 = {v6}");
        }
        assert_eq!(tunnel_mtu(false), 1440);
        assert_eq!(tunnel_mtu(true), 1420);
        assert_eq!(inner_mss(1420), 1380);
    }
}
