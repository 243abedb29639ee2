//! Checks of this crate's parsers of what the kernel answers (`MPTCP_INFO`, subflow addresses,
//! `mptcp_pm` netlink attributes), shared by the fuzz targets in `fuzz/` and the unit suite's
//! property tests. Each takes arbitrary bytes and panics when an invariant breaks. The kernel is
//! trusted, but a layout braid did not expect (a newer or patched kernel) must not crash the
//! daemon. Compiled for tests and with the `fuzz` feature only; not part of the API.

#[cfg(test)]
mod props;

use std::net::SocketAddr;

use crate::mptcp::info::{parse_subflow_addrs, MptcpInfo};
use crate::mptcp::pm::{parse_nlas, PmAddr};

/// `MPTCP_INFO` and `MPTCP_SUBFLOW_ADDRS`: what is read is there, and subflow addresses written
/// back in the kernel's layout read the same.
pub fn mptcp_info(data: &[u8]) {
    match MptcpInfo::parse(data) {
        Some(info) => {
            assert!(data.len() >= 40);
            assert!(info.total_subflows() >= 1);
            assert_eq!(info.subflows_total.is_some(), data.len() > 80);
        }
        None => assert!(data.len() < 40),
    }
    let pairs = parse_subflow_addrs(data);
    // A record holds a 128-byte socket address and at least a `sockaddr_in` (8 bytes).
    assert!(pairs.len() <= data.len() / 136);
    assert_eq!(parse_subflow_addrs(&subflow_addrs(&pairs)), pairs);
}

/// `mptcp_subflow_data` and one 256-byte `mptcp_subflow_addrs` record per pair, as the kernel
/// writes them.
pub fn subflow_addrs(pairs: &[(SocketAddr, SocketAddr)]) -> Vec<u8> {
    let mut b = vec![0u8; 16];
    b[0..4].copy_from_slice(&16u32.to_ne_bytes());
    b[4..8].copy_from_slice(&(pairs.len() as u32).to_ne_bytes());
    b[12..16].copy_from_slice(&256u32.to_ne_bytes());
    for (local, remote) in pairs {
        let mut rec = [0u8; 256];
        sockaddr(local, &mut rec[..128]);
        sockaddr(remote, &mut rec[128..]);
        b.extend_from_slice(&rec);
    }
    b
}

fn sockaddr(a: &SocketAddr, out: &mut [u8]) {
    out[2..4].copy_from_slice(&a.port().to_be_bytes());
    match a {
        SocketAddr::V4(v4) => {
            out[0..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
            out[4..8].copy_from_slice(&v4.ip().octets());
        }
        SocketAddr::V6(v6) => {
            out[0..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
            out[8..24].copy_from_slice(&v6.ip().octets());
        }
    }
}

/// Netlink attributes and the nested `MPTCP_PM_ATTR_ADDR`: every value lies inside the input,
/// and a decoded address encodes and decodes to itself.
pub fn pm_addr(data: &[u8]) {
    if let Ok(nlas) = parse_nlas(data) {
        let total: usize = nlas.iter().map(|(_, v)| 4 + v.len()).sum();
        assert!(total <= data.len());
    }
    if let Ok(addr) = PmAddr::decode(data) {
        assert_eq!(PmAddr::decode(&addr.encode().0), Ok(addr));
    }
}
