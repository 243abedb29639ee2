//! What the kernel knows about one MPTCP connection: `MPTCP_INFO` and `TCP_IS_MPTCP`.
//!
//! `struct mptcp_info` grew with each kernel (uapi `linux/mptcp.h`); the kernel copies only as
//! many bytes as both sides know and reports that length, so the parser reads fields by offset
//! and leaves the ones an older kernel did not fill as `None`.

use std::io;
use std::os::fd::AsFd;

use crate::sockopt;

/// `SOL_MPTCP` (not in the libc crate).
pub const SOL_MPTCP: i32 = 284;
/// `MPTCP_INFO` under `SOL_MPTCP`.
pub const MPTCP_INFO: i32 = 1;
/// `TCP_IS_MPTCP` under `SOL_TCP` (Linux 6.10+).
pub const TCP_IS_MPTCP: i32 = 43;
/// `MPTCP_INFO_FLAG_FALLBACK`.
pub const FLAG_FALLBACK: u32 = 1;
/// `MPTCP_INFO_FLAG_REMOTE_KEY_RECEIVED`.
pub const FLAG_REMOTE_KEY_RECEIVED: u32 = 2;

/// The subset of `struct mptcp_info` braid uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MptcpInfo {
    /// Extra subflows (the kernel does not count the initial one here).
    pub subflows: u8,
    /// Maximum extra subflows (the `subflows` limit).
    pub subflows_max: u8,
    /// `MPTCP_INFO_FLAG_*`.
    pub flags: u32,
    /// The connection token, needed by the userspace path manager.
    pub token: u32,
    /// Bytes sent, received and acked at the MPTCP level (Linux 6.5+).
    pub bytes_sent: Option<u64>,
    /// See `bytes_sent`.
    pub bytes_received: Option<u64>,
    /// See `bytes_sent`: what the peer acknowledged at the MPTCP level.
    pub bytes_acked: Option<u64>,
    /// All subflows including the initial one (Linux 6.8+).
    pub subflows_total: Option<u8>,
}

impl MptcpInfo {
    /// Parses the bytes the kernel returned; `None` if even the 5.9 layout is not complete.
    pub fn parse(b: &[u8]) -> Option<MptcpInfo> {
        let u32_at = |o: usize| {
            b.get(o..o + 4)
                .map(|s| u32::from_ne_bytes(s.try_into().unwrap_or_default()))
        };
        let u64_at = |o: usize| {
            b.get(o..o + 8)
                .map(|s| u64::from_ne_bytes(s.try_into().unwrap_or_default()))
        };
        if b.len() < 40 {
            return None;
        }
        Some(MptcpInfo {
            subflows: b[0],
            subflows_max: b[3],
            flags: u32_at(8)?,
            token: u32_at(12)?,
            bytes_sent: u64_at(56),
            bytes_received: u64_at(64),
            bytes_acked: u64_at(72),
            subflows_total: b.get(80).copied(),
        })
    }

    /// Subflows in use, counting the initial one, on any kernel.
    pub fn total_subflows(&self) -> u32 {
        match self.subflows_total {
            Some(t) if t > 0 => u32::from(t),
            _ => u32::from(self.subflows) + 1,
        }
    }

    /// Whether the peer has answered at the MPTCP level (acknowledged data or sent some), on
    /// kernels that count bytes (6.5+). Until it has, neither end is fully established, and
    /// the kernel joins no subflow to the connection.
    pub fn peer_answered(&self) -> Option<bool> {
        Some(self.bytes_acked? > 0 || self.bytes_received? > 0)
    }

    /// Whether the connection fell back to plain TCP.
    pub fn fallback(&self) -> bool {
        self.flags & FLAG_FALLBACK != 0
    }
}

/// Reads `MPTCP_INFO`. Fails with EOPNOTSUPP (IPv4) or ENOPROTOOPT (IPv6) once the connection fell
/// back to TCP, and on plain TCP sockets.
pub fn mptcp_info<S: AsFd>(sock: &S) -> io::Result<MptcpInfo> {
    let mut buf = [0u8; 96];
    let n = sockopt::get_raw(sock, SOL_MPTCP, MPTCP_INFO, &mut buf)?;
    MptcpInfo::parse(&buf[..n])
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "short mptcp_info"))
}

/// `MPTCP_SUBFLOW_ADDRS` under `SOL_MPTCP` (Linux 5.16+).
pub const MPTCP_SUBFLOW_ADDRS: i32 = 3;
/// `struct mptcp_subflow_addrs`: two `sockaddr_storage`-sized unions.
const SUBFLOW_ADDRS_LEN: usize = 256;
/// `struct mptcp_subflow_data`.
const SUBFLOW_DATA_LEN: usize = 16;

/// The local and remote address of every subflow of an MPTCP connection.
pub fn subflow_addrs<S: AsFd>(
    sock: &S,
) -> io::Result<Vec<(std::net::SocketAddr, std::net::SocketAddr)>> {
    let buf = get_subflow_records(sock, MPTCP_SUBFLOW_ADDRS, SUBFLOW_ADDRS_LEN)?;
    Ok(parse_subflow_addrs(&buf))
}

/// Asks `option` (a `SOL_MPTCP` option answered with `struct mptcp_subflow_data` and a record
/// per subflow) for up to 8 records of `record` bytes; the bytes the kernel wrote.
fn get_subflow_records<S: AsFd>(sock: &S, option: i32, record: usize) -> io::Result<Vec<u8>> {
    const MAX: usize = 8;
    let mut buf = vec![0u8; SUBFLOW_DATA_LEN + MAX * record];
    buf[0..4].copy_from_slice(&(SUBFLOW_DATA_LEN as u32).to_ne_bytes());
    buf[12..16].copy_from_slice(&(record as u32).to_ne_bytes());
    let n = sockopt::get_raw(sock, SOL_MPTCP, option, &mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

/// The records after a `struct mptcp_subflow_data` header, each cut to at most `max` bytes.
///
/// The header's count and sizes are the kernel's word, but only the records whose bytes are
/// really present are read: a count larger than the buffer holds (a kernel with more subflows
/// than the buffer has room for, or a corrupt header) yields what fits, never a read past the
/// end or a loop over a huge count.
fn subflow_records(b: &[u8], max: usize) -> impl Iterator<Item = &[u8]> {
    let u32_at = |o: usize| {
        b.get(o..o + 4)
            .map(|s| u32::from_ne_bytes([s[0], s[1], s[2], s[3]]) as usize)
    };
    let records = match (u32_at(0), u32_at(4), u32_at(12)) {
        (Some(hdr), Some(count), Some(size_user)) => b
            .get(hdr..)
            .map(|r| r.chunks_exact(size_user.clamp(1, max)).take(count)),
        _ => None,
    };
    records.into_iter().flatten()
}

/// `MPTCP_TCPINFO` under `SOL_MPTCP` (Linux 5.16+): a `struct tcp_info` per subflow.
pub const MPTCP_TCPINFO: i32 = 2;
/// `TCP_ESTABLISHED` in `tcpi_state`, the first byte of `struct tcp_info`.
const TCP_ESTABLISHED: u8 = 1;
/// `TCP_SYN_SENT` and `TCP_SYN_RECV` (`include/net/tcp_states.h`).
const TCP_SYN_SENT: u8 = 2;
const TCP_SYN_RECV: u8 = 3;
/// How much of each `struct tcp_info` is asked for: `tcpi_state` is its first byte.
const TCPINFO_PREFIX: usize = 8;

/// The subflows of [`subflow_addrs`] whose TCP handshake is complete. `MPTCP_SUBFLOW_ADDRS`
/// also lists joins still in SYN_SENT, which a relay may never answer (it accepts a join only
/// on a connection fully established on its side). Both lists come from the same walk of the
/// connection's subflows, in the same order; if a subflow comes or goes between the two reads,
/// the addresses alone are returned.
pub fn established_subflow_addrs<S: AsFd>(
    sock: &S,
) -> io::Result<Vec<(std::net::SocketAddr, std::net::SocketAddr)>> {
    Ok(subflows_by_state(sock)?
        .into_iter()
        .filter(|(_, st)| *st == SubflowState::Established)
        .map(|(a, _)| a)
        .collect())
}

/// Where a subflow's TCP connection is, as far as carrying the MPTCP connection goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubflowState {
    /// The handshake is still under way (`SYN_SENT`, `SYN_RECV`): a join that may complete.
    Connecting,
    /// `ESTABLISHED`: it carries data, or will once its path works again.
    Established,
    /// Closing or closed: it will carry nothing more.
    Closing,
}

impl SubflowState {
    /// From `tcpi_state`.
    pub fn of_tcp_state(state: u8) -> SubflowState {
        match state {
            TCP_ESTABLISHED => SubflowState::Established,
            TCP_SYN_SENT | TCP_SYN_RECV => SubflowState::Connecting,
            _ => SubflowState::Closing,
        }
    }
}

/// Every subflow of [`subflow_addrs`], in any state, each with its state (see
/// [`established_subflow_addrs`]; all count as established if the list changed between the
/// two reads).
#[allow(clippy::type_complexity)]
pub fn subflows_by_state<S: AsFd>(
    sock: &S,
) -> io::Result<Vec<((std::net::SocketAddr, std::net::SocketAddr), SubflowState)>> {
    let addrs = subflow_addrs(sock)?;
    let states = parse_subflow_states(&get_subflow_records(sock, MPTCP_TCPINFO, TCPINFO_PREFIX)?);
    if states.len() != addrs.len() {
        return Ok(addrs
            .into_iter()
            .map(|a| (a, SubflowState::Established))
            .collect());
    }
    Ok(addrs
        .into_iter()
        .zip(states)
        .map(|(a, st)| (a, SubflowState::of_tcp_state(st)))
        .collect())
}

/// Parses `mptcp_subflow_data` followed by `struct tcp_info` prefixes: each subflow's
/// `tcpi_state`, bounded by the bytes present (see [`subflow_records`]).
pub fn parse_subflow_states(b: &[u8]) -> Vec<u8> {
    subflow_records(b, usize::MAX).map(|rec| rec[0]).collect()
}

/// Parses `mptcp_subflow_data` followed by `mptcp_subflow_addrs` records, bounded by the bytes
/// present (see [`subflow_records`]).
pub fn parse_subflow_addrs(b: &[u8]) -> Vec<(std::net::SocketAddr, std::net::SocketAddr)> {
    subflow_records(b, SUBFLOW_ADDRS_LEN)
        .filter_map(|rec| Some((sockaddr(rec.get(..128)?)?, sockaddr(rec.get(128..)?)?)))
        .collect()
}

/// Reads a `sockaddr_in`/`sockaddr_in6` (family in host order, port and address in network order).
fn sockaddr(b: &[u8]) -> Option<std::net::SocketAddr> {
    let family = u16::from_ne_bytes([*b.first()?, *b.get(1)?]);
    let port = u16::from_be_bytes([*b.get(2)?, *b.get(3)?]);
    match i32::from(family) {
        libc::AF_INET => {
            let a: [u8; 4] = b.get(4..8)?.try_into().ok()?;
            Some(std::net::SocketAddr::new(
                std::net::Ipv4Addr::from(a).into(),
                port,
            ))
        }
        libc::AF_INET6 => {
            let a: [u8; 16] = b.get(8..24)?.try_into().ok()?;
            Some(std::net::SocketAddr::new(
                std::net::Ipv6Addr::from(a).into(),
                port,
            ))
        }
        _ => None,
    }
}

/// What a stream really carries, as far as the kernel can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MptcpState {
    /// Live MPTCP with this many subflows (initial one included).
    Mptcp {
        /// Subflows including the initial one.
        subflows: u32,
    },
    /// An MPTCP socket whose connection fell back to plain TCP (peer or middlebox).
    Fallback,
    /// A plain TCP socket.
    Tcp,
}

impl MptcpState {
    /// True for live MPTCP.
    pub fn is_mptcp(&self) -> bool {
        matches!(self, MptcpState::Mptcp { .. })
    }
    /// Subflows in use (1 for TCP and fallback).
    pub fn subflows(&self) -> u32 {
        match self {
            MptcpState::Mptcp { subflows } => *subflows,
            _ => 1,
        }
    }
}

/// Classifies a connected stream: `TCP_IS_MPTCP` where the kernel has it (6.10+), else whether
/// `MPTCP_INFO` still answers.
pub fn mptcp_state<S: AsFd>(sock: &S) -> MptcpState {
    let proto = crate::socket::socket_protocol(sock).unwrap_or(0);
    if proto != libc::IPPROTO_MPTCP {
        return MptcpState::Tcp;
    }
    let is_mptcp = sockopt::get_int(sock, libc::SOL_TCP, TCP_IS_MPTCP).ok();
    match (is_mptcp, mptcp_info(sock)) {
        (Some(0), _) => MptcpState::Fallback,
        (_, Ok(info)) if info.fallback() => MptcpState::Fallback,
        (_, Ok(info)) => MptcpState::Mptcp {
            subflows: info.total_subflows(),
        },
        (_, Err(_)) => MptcpState::Fallback,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subflow_states_tell_a_join_under_way_from_a_closing_subflow() {
        assert_eq!(SubflowState::of_tcp_state(1), SubflowState::Established);
        // SYN_SENT, SYN_RECV: a join that may still complete.
        assert_eq!(SubflowState::of_tcp_state(2), SubflowState::Connecting);
        assert_eq!(SubflowState::of_tcp_state(3), SubflowState::Connecting);
        // FIN_WAIT1 (what a withdrawn endpoint's subflow sits in while its link is down) …
        // CLOSING, and anything unknown: nothing more will ride it.
        for closing in 4..=11 {
            assert_eq!(SubflowState::of_tcp_state(closing), SubflowState::Closing);
        }
        assert_eq!(SubflowState::of_tcp_state(0), SubflowState::Closing);
    }

    #[test]
    fn parse_subflow_states_reads_each_tcpi_state_within_the_bytes_present() {
        let mut b = vec![0u8; 16];
        b[0..4].copy_from_slice(&16u32.to_ne_bytes());
        b[4..8].copy_from_slice(&3u32.to_ne_bytes());
        b[12..16].copy_from_slice(&8u32.to_ne_bytes());
        // Two records present (established, SYN_SENT) although the header says three.
        b.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(parse_subflow_states(&b), vec![1, 2]);
        assert!(parse_subflow_states(&b[..10]).is_empty());
    }

    #[test]
    fn parse_subflow_addrs_reads_ipv4_pairs() {
        let mut b = vec![0u8; 16 + 2 * 256];
        b[0..4].copy_from_slice(&16u32.to_ne_bytes());
        b[4..8].copy_from_slice(&2u32.to_ne_bytes());
        b[12..16].copy_from_slice(&256u32.to_ne_bytes());
        for (i, (l, r)) in [
            ([10, 1, 0, 1], [10, 200, 0, 1]),
            ([10, 2, 0, 1], [10, 200, 0, 1]),
        ]
        .iter()
        .enumerate()
        {
            let o = 16 + i * 256;
            b[o..o + 2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
            b[o + 2..o + 4].copy_from_slice(&4000u16.to_be_bytes());
            b[o + 4..o + 8].copy_from_slice(l);
            b[o + 128..o + 130].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
            b[o + 130..o + 132].copy_from_slice(&8388u16.to_be_bytes());
            b[o + 132..o + 136].copy_from_slice(r);
        }
        let v = parse_subflow_addrs(&b);
        assert_eq!(v.len(), 2);
        assert_eq!(v[1].0, "10.2.0.1:4000".parse().unwrap());
        assert_eq!(v[1].1, "10.200.0.1:8388".parse().unwrap());
        assert!(parse_subflow_addrs(&b[..10]).is_empty());
    }

    #[test]
    fn parse_subflow_addrs_reads_only_the_records_present() {
        let mut b = vec![0u8; 16 + 256];
        b[0..4].copy_from_slice(&16u32.to_ne_bytes());
        // The header claims four billion records; one is there.
        b[4..8].copy_from_slice(&u32::MAX.to_ne_bytes());
        b[12..16].copy_from_slice(&256u32.to_ne_bytes());
        b[16..18].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        b[16 + 128..16 + 130].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        assert_eq!(parse_subflow_addrs(&b).len(), 1);
        // A header offset past the end, and a record cut short, give nothing.
        b[0..4].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert!(parse_subflow_addrs(&b).is_empty());
        b[0..4].copy_from_slice(&16u32.to_ne_bytes());
        assert!(parse_subflow_addrs(&b[..16 + 200]).is_empty());
    }

    #[test]
    fn parse_rejects_short_struct() {
        assert_eq!(MptcpInfo::parse(&[0u8; 39]), None);
    }

    #[test]
    fn parse_old_kernel_layout_has_no_totals() {
        let mut b = [0u8; 40];
        b[0] = 1;
        b[8..12].copy_from_slice(&FLAG_FALLBACK.to_ne_bytes());
        let i = MptcpInfo::parse(&b).unwrap();
        assert_eq!(i.subflows_total, None);
        assert_eq!(i.total_subflows(), 2);
        assert!(i.fallback());
        assert_eq!(i.peer_answered(), None, "no byte counts before 6.5");
    }

    #[test]
    fn parse_6_18_layout_reads_subflows_total() {
        let mut b = [0u8; 96];
        b[0] = 1;
        b[80] = 3;
        b[56..64].copy_from_slice(&1234u64.to_ne_bytes());
        let i = MptcpInfo::parse(&b).unwrap();
        assert_eq!(i.total_subflows(), 3);
        assert_eq!(i.bytes_sent, Some(1234));
        assert!(!i.fallback());
        // Sent, but nothing acknowledged or received: the peer has not answered.
        assert_eq!(i.peer_answered(), Some(false));
        b[72..80].copy_from_slice(&1u64.to_ne_bytes());
        assert_eq!(MptcpInfo::parse(&b).unwrap().peer_answered(), Some(true));
        b[72..80].copy_from_slice(&0u64.to_ne_bytes());
        b[64..72].copy_from_slice(&9u64.to_ne_bytes());
        assert_eq!(MptcpInfo::parse(&b).unwrap().peer_answered(), Some(true));
    }
}
