//! TCP Fast Open socket options, which socket2 does not wrap.
//!
//! A successful setsockopt proves only that the kernel accepted the option: on Linux 6.18 the
//! reply to a TFO request over MPTCP can stall for seconds (shared/notes/lab-measurements.md), so
//! the daemons decide with an end-to-end check and use these calls as the first step of it.

use std::io;
use std::os::fd::AsFd;

use crate::sockopt;

/// `TCPI_OPT_SYN_DATA`: the SYN carried data that the peer acknowledged.
const TCPI_OPT_SYN_DATA: u8 = 32;

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
    // struct tcp_info: u8 state, ca_state, retransmits, probes, backoff, options, …
    let mut buf = [0u8; 8];
    let n = sockopt::get_raw(sock, libc::IPPROTO_TCP, libc::TCP_INFO, &mut buf)?;
    if n < 6 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "short tcp_info"));
    }
    Ok(buf[5] & TCPI_OPT_SYN_DATA != 0)
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
