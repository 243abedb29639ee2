//! TCP Fast Open socket options, which socket2 does not wrap.
//!
//! A successful setsockopt proves only that the kernel accepted the option: on Linux 6.18 a
//! reply written on a passive MPTCP TFO socket before the handshake's third ACK arrives is not
//! sent until the peer sends again (docs/TFO-MPTCP.md). So the gateway decides with an
//! end-to-end check, and the relay pushes such replies itself ([`syn_recv`], [`push_pending`]).

use std::io;
use std::os::fd::AsFd;

use crate::sockopt;

/// `TCPI_OPT_SYN_DATA`: the SYN carried data that the peer acknowledged.
const TCPI_OPT_SYN_DATA: u8 = 32;
/// `TCP_SYN_RECV` in `tcpi_state`.
const TCP_SYN_RECV: u8 = 3;

/// `TCP_FASTOPEN` on a listener: accept data in the SYN, with this pending-queue length.
/// ENOPROTOOPT on an MPTCP socket means the kernel predates Linux 6.2.
pub fn set_listener_fastopen<S: AsFd>(sock: &S, qlen: u32) -> io::Result<()> {
    sockopt::set_int(
        sock,
        libc::IPPROTO_TCP,
        libc::TCP_FASTOPEN,
        qlen.min(i32::MAX as u32) as i32,
    )
}

/// `TCP_FASTOPEN_CONNECT` on a client before `connect()`: connect returns at once and the first
/// write goes out in the SYN (with a cookie, or a cookie request on the first connection).
pub fn set_connect_fastopen<S: AsFd>(sock: &S) -> io::Result<()> {
    sockopt::set_int(sock, libc::IPPROTO_TCP, libc::TCP_FASTOPEN_CONNECT, 1)
}

/// Whether the SYN of this connection carried data that the peer accepted (`tcpi_options`).
/// Works on TCP sockets and on MPTCP sockets (the kernel answers for the first subflow).
pub fn syn_data_acked<S: AsFd>(sock: &S) -> io::Result<bool> {
    Ok(tcp_info_head(sock)?[5] & TCPI_OPT_SYN_DATA != 0)
}

/// Whether this accepted connection (on an MPTCP socket: its first subflow) still waits for the
/// third ACK of its handshake. Only a TFO listener hands out such sockets: it accepts a
/// connection as soon as a SYN with a valid cookie and data arrives.
pub fn syn_recv<S: AsFd>(sock: &S) -> io::Result<bool> {
    Ok(tcp_info_head(sock)?[0] == TCP_SYN_RECV)
}

/// Makes the kernel send what an MPTCP socket holds back at the MPTCP level.
///
/// Data written on a passive MPTCP TFO socket before its first subflow is established stays
/// queued: `__mptcp_subflow_active()` refuses a subflow in SYN_RECV, and the third ACK does not
/// push the queue (docs/TFO-MPTCP.md). Setting `TCP_NODELAY` on the MPTCP socket calls
/// `mptcp_check_and_set_pending()`, which pushes it. The option stays on; braid sets it on every
/// relay socket anyway.
pub fn push_pending<S: AsFd>(sock: &S) -> io::Result<()> {
    sockopt::set_int(sock, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)
}

/// The first bytes of `struct tcp_info`: u8 state, ca_state, retransmits, probes, backoff,
/// options, wscale, delivery-rate flags.
fn tcp_info_head<S: AsFd>(sock: &S) -> io::Result<[u8; 8]> {
    let mut buf = [0u8; 8];
    let n = sockopt::get_raw(sock, libc::IPPROTO_TCP, libc::TCP_INFO, &mut buf)?;
    if n < 6 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "short tcp_info"));
    }
    Ok(buf)
}

/// The `net.ipv4.tcp_fastopen` bits: 1 = client, 2 = server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FastopenSysctl(pub u32);

impl FastopenSysctl {
    /// Client side allowed (bit 0x1).
    pub fn client(self) -> bool {
        self.0 & 1 != 0
    }
    /// Server side allowed (bit 0x2).
    pub fn server(self) -> bool {
        self.0 & 2 != 0
    }
}
