//! MPTCP and TCP stream sockets, created explicitly with `IPPROTO_MPTCP`.
//!
//! braid never relies on `mptcpize` or a language runtime's defaults: it asks the kernel for an
//! MPTCP socket itself, and when the kernel refuses (no `CONFIG_MPTCP`, or `net.mptcp.enabled=0`)
//! it falls back to plain TCP and tells the caller *why*, so the daemon can say so once, loudly.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;

use socket2::{Domain, Protocol, SockAddr, SockRef, Socket, Type};

/// Which transport a socket really uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// `IPPROTO_MPTCP`: the kernel may add subflows on other paths.
    Mptcp,
    /// Plain TCP, either by choice or because MPTCP is unavailable.
    Tcp,
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Transport::Mptcp => "mptcp",
            Transport::Tcp => "tcp",
        })
    }
}

/// Why an MPTCP socket could not be created.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MptcpUnavailable {
    /// `socket(…, IPPROTO_MPTCP)` gave ENOPROTOOPT: MPTCP is built in but switched off in this
    /// network namespace.
    #[error("MPTCP is disabled (net.mptcp.enabled=0, errno ENOPROTOOPT); fix: sysctl -w net.mptcp.enabled=1")]
    Disabled,
    /// EPROTONOSUPPORT or EINVAL: the running kernel was built without upstream MPTCP v1.
    #[error("the running kernel has no upstream MPTCP (errno {errno}); fix: boot a Linux ≥ 5.15 kernel with CONFIG_MPTCP=y (Debian's stock kernels have it)")]
    NotInKernel {
        /// The kernel's errno.
        errno: i32,
    },
    /// Any other refusal, kept with its errno.
    #[error("creating an MPTCP socket failed: {source}; fix: check the kernel log and `sysctl net.mptcp`")]
    Other {
        /// The kernel's error.
        #[source]
        source: std::sync::Arc<io::Error>,
    },
}

impl MptcpUnavailable {
    fn from_io(e: io::Error) -> Self {
        match e.raw_os_error() {
            Some(libc::ENOPROTOOPT) => MptcpUnavailable::Disabled,
            Some(errno @ (libc::EPROTONOSUPPORT | libc::EINVAL | libc::EAFNOSUPPORT)) => {
                MptcpUnavailable::NotInKernel { errno }
            }
            _ => MptcpUnavailable::Other {
                source: std::sync::Arc::new(e),
            },
        }
    }
}

fn domain_of(addr: &SocketAddr) -> Domain {
    match addr {
        SocketAddr::V4(_) => Domain::IPV4,
        SocketAddr::V6(_) => Domain::IPV6,
    }
}

/// Creates a non-blocking stream socket for `addr`'s family: MPTCP when `want_mptcp` and the
/// kernel allows it, else plain TCP. The second value says why MPTCP was not used, if it was wanted.
pub fn stream_socket(
    addr: &SocketAddr,
    want_mptcp: bool,
) -> io::Result<(Socket, Transport, Option<MptcpUnavailable>)> {
    let domain = domain_of(addr);
    let mut why = None;
    if want_mptcp {
        match Socket::new(domain, Type::STREAM, Some(Protocol::MPTCP)) {
            Ok(s) => {
                s.set_nonblocking(true)?;
                return Ok((s, Transport::Mptcp, None));
            }
            Err(e) => why = Some(MptcpUnavailable::from_io(e)),
        }
    }
    let s = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    s.set_nonblocking(true)?;
    Ok((s, Transport::Tcp, why))
}

/// Checks whether this network namespace can create MPTCP sockets right now.
pub fn probe_mptcp() -> Result<(), MptcpUnavailable> {
    Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::MPTCP))
        .map(drop)
        .map_err(MptcpUnavailable::from_io)
}

/// Options for a listening socket.
#[derive(Debug, Clone, Copy)]
pub struct ListenOptions {
    /// Ask for an MPTCP listener (falls back to TCP when the kernel refuses).
    pub mptcp: bool,
    /// `TCP_FASTOPEN` queue length; `None` leaves TFO off.
    pub fastopen_qlen: Option<u32>,
    /// listen(2) backlog.
    pub backlog: i32,
}

/// A bound, listening, non-blocking socket and what it really is.
#[derive(Debug)]
pub struct Listener {
    /// Ready for `tokio::net::TcpListener::from_std`.
    pub listener: std::net::TcpListener,
    /// MPTCP or TCP.
    pub transport: Transport,
    /// Why MPTCP was not used, when it was asked for.
    pub mptcp_unavailable: Option<MptcpUnavailable>,
}

/// Binds and listens on `addr` (`ss -ltnM` shows the result).
///
/// Fails with the kernel's errno from `TCP_FASTOPEN` when a queue length was asked for and the
/// kernel refuses it (ENOPROTOOPT on MPTCP sockets before Linux 6.2): the caller decides whether
/// that is fatal (`fast_open = "on"`) or a reason to go on without TFO.
pub fn listen(addr: SocketAddr, opts: ListenOptions) -> io::Result<Listener> {
    let (sock, transport, why) = stream_socket(&addr, opts.mptcp)?;
    sock.set_reuse_address(true)?;
    if let SocketAddr::V6(_) = addr {
        // Serve IPv4 too on [::], as users expect from "[::]:8388".
        let _ = sock.set_only_v6(false);
    }
    if let Some(qlen) = opts.fastopen_qlen {
        crate::tfo::set_listener_fastopen(&sock, qlen)?;
    }
    sock.bind(&SockAddr::from(addr))?;
    sock.listen(opts.backlog)?;
    Ok(Listener {
        listener: sock.into(),
        transport,
        mptcp_unavailable: why,
    })
}

/// The destination a connection had before nftables `redirect` rewrote it (`SO_ORIGINAL_DST`,
/// or `IP6T_SO_ORIGINAL_DST` for IPv6).
pub fn original_dst<S: AsFd>(stream: &S) -> io::Result<SocketAddr> {
    let sock = SockRef::from(stream);
    let local = sock.local_addr()?;
    let dst = if local.is_ipv6() && local.as_socket_ipv4().is_none() {
        match sock.original_dst_v6() {
            Ok(a) => a,
            // An IPv4 client accepted on a dual-stack socket keeps the IPv4 conntrack entry.
            Err(_) => sock.original_dst_v4()?,
        }
    } else {
        sock.original_dst_v4()?
    };
    let dst = dst.as_socket().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "SO_ORIGINAL_DST gave a non-IP address",
        )
    })?;
    Ok(normalize(dst))
}

/// Maps `::ffff:a.b.c.d` back to IPv4 so policy checks and logs see the real family.
pub fn normalize(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => addr,
        },
        v4 => v4,
    }
}

/// The protocol the kernel reports for a socket (`SO_PROTOCOL`): 6 for TCP, 262 for MPTCP.
/// On an accepted socket, 6 means the client did not ask for MPTCP at all.
pub fn socket_protocol<S: AsFd>(stream: &S) -> io::Result<i32> {
    let sock = SockRef::from(stream);
    Ok(match sock.protocol()? {
        Some(p) => i32::from(p),
        None => 0,
    })
}

/// Socket buffers for braid's UDP sockets, each way. Datagrams have no flow control: a relay
/// that falls behind for a moment (a busy core, a burst of QUIC) loses what its buffer cannot
/// hold, and the default (`net.core.rmem_default`, about 208 KiB) holds some 20 ms at 80 Mbit/s.
/// The kernel charges only what is queued.
pub const UDP_BUFFER: usize = 4 * 1024 * 1024;

/// Gives a UDP socket [`UDP_BUFFER`] each way: beyond `net.core.rmem_max`/`wmem_max` where the
/// process may (`SO_RCVBUFFORCE`, CAP_NET_ADMIN), else as much as those allow. Best effort: a
/// socket with smaller buffers still works.
pub fn enlarge_udp_buffers<S: AsFd>(sock: &S) {
    let bytes = UDP_BUFFER.min(i32::MAX as usize) as i32;
    let r = SockRef::from(sock);
    if crate::sockopt::set_int(sock, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, bytes).is_err() {
        let _ = r.set_recv_buffer_size(UDP_BUFFER);
    }
    if crate::sockopt::set_int(sock, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, bytes).is_err() {
        let _ = r.set_send_buffer_size(UDP_BUFFER);
    }
}

/// A non-blocking UDP socket bound to `addr` (`SO_REUSEADDR` set, [`UDP_BUFFER`]s); an IPv6
/// wildcard address takes IPv4 too (dual-stack), like [`listen`].
pub fn udp_bind(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let sock = Socket::new(domain_of(&addr), Type::DGRAM, Some(Protocol::UDP))?;
    sock.set_reuse_address(true)?;
    enlarge_udp_buffers(&sock);
    if let SocketAddr::V6(_) = addr {
        let _ = sock.set_only_v6(false);
    }
    sock.set_nonblocking(true)?;
    sock.bind(&SockAddr::from(addr))?;
    Ok(sock.into())
}

/// A non-blocking UDP socket on an ephemeral port that can send to IPv4 and IPv6 destinations
/// (`[::]:0`, dual-stack), or to IPv4 only on a kernel without IPv6. Send to
/// [`udp_destination`] of a target, which maps IPv4 for a dual-stack socket.
pub fn udp_any() -> io::Result<std::net::UdpSocket> {
    match udp_bind(SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0))) {
        Err(e) if e.raw_os_error() == Some(libc::EAFNOSUPPORT) => {
            udp_bind(SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, 0)))
        }
        other => other,
    }
}

/// `target` as a socket bound to `local` must be given it: IPv4 as `::ffff:a.b.c.d` on an IPv6
/// (dual-stack) socket; `None` for an IPv6 target on an IPv4 socket.
pub fn udp_destination(local: SocketAddr, target: SocketAddr) -> Option<SocketAddr> {
    match (local, target) {
        (SocketAddr::V6(_), SocketAddr::V4(t)) => Some(SocketAddr::new(
            std::net::IpAddr::V6(t.ip().to_ipv6_mapped()),
            t.port(),
        )),
        (SocketAddr::V4(_), SocketAddr::V6(t)) => t
            .ip()
            .to_ipv4_mapped()
            .map(|v4| SocketAddr::new(v4.into(), t.port())),
        _ => Some(target),
    }
}

#[cfg(test)]
mod udp_tests {
    use super::*;

    #[test]
    fn udp_destination_maps_ipv4_for_a_dual_stack_socket() {
        let v6: SocketAddr = "[::]:5000".parse().unwrap();
        let v4: SocketAddr = "0.0.0.0:5000".parse().unwrap();
        let t4: SocketAddr = "10.30.0.2:53".parse().unwrap();
        let t6: SocketAddr = "[2001:db8::2]:53".parse().unwrap();
        assert_eq!(
            udp_destination(v6, t4),
            Some("[::ffff:10.30.0.2]:53".parse().unwrap())
        );
        assert_eq!(udp_destination(v6, t6), Some(t6));
        assert_eq!(udp_destination(v4, t4), Some(t4));
        assert_eq!(udp_destination(v4, t6), None);
        assert_eq!(
            udp_destination(v4, "[::ffff:10.30.0.2]:53".parse().unwrap()),
            Some(t4)
        );
    }

    #[test]
    fn udp_any_sends_to_ipv4_loopback() {
        let any = udp_any().unwrap();
        let rx = udp_bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let to = udp_destination(any.local_addr().unwrap(), rx.local_addr().unwrap()).unwrap();
        any.send_to(b"hi", to).unwrap();
        rx.set_nonblocking(false).unwrap();
        let mut buf = [0u8; 4];
        let (n, _) = rx.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"hi");
    }
}
