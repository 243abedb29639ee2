//! Transparent UDP sockets for TPROXY: receiving LAN datagrams with their original destination,
//! and answering the LAN host from that destination's address, as if the far end had.
//!
//! ```text
//!  LAN host ─► nft: meta mark set M tproxy to :PORT ─► ip rule fwmark M → local table
//!     ▲                                  ─► TransparentUdp::recv: (data, LAN host, original dst)
//!     └── reply_socket(original dst).send_to(LAN host)  (IP_TRANSPARENT: bound to a foreign
//!                                                         address, so the source is right)
//! ```
//!
//! `IP_TRANSPARENT` needs `CAP_NET_ADMIN`. The receiving socket asks for `IP_RECVORIGDSTADDR`
//! (or `IPV6_…`) and reads it from `recvmsg`'s control data (nix's safe wrappers: no `unsafe`
//! here). Reply sockets stay unconnected: the kernel's TPROXY lookup for "established" UDP
//! sockets matches connected ones only, so an unconnected reply socket never steals the LAN
//! host's next datagrams from the receiving socket.

use std::io::{self, IoSliceMut};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

use nix::sys::socket::{self as nix_socket, sockopt, ControlMessageOwned, MsgFlags};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// A datagram received through TPROXY.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// Payload length.
    pub len: usize,
    /// The LAN host that sent it.
    pub source: SocketAddr,
    /// Where it was going before TPROXY diverted it.
    pub original_dst: SocketAddr,
}

/// The socket TPROXY delivers captured LAN UDP to (one per address family).
#[derive(Debug)]
pub struct TransparentUdp {
    socket: UdpSocket,
}

/// A non-blocking UDP socket of `addr`'s family with `IP_TRANSPARENT`/`IPV6_TRANSPARENT` and
/// `SO_REUSEADDR`, bound to `addr` (which need not be local); IPv6 sockets are IPv6-only, since
/// TPROXY hands each family to its own socket.
fn transparent_socket(addr: SocketAddr) -> io::Result<Socket> {
    let domain = match addr {
        SocketAddr::V4(_) => Domain::IPV4,
        SocketAddr::V6(_) => Domain::IPV6,
    };
    let sock = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    sock.set_reuse_address(true)?;
    crate::socket::enlarge_udp_buffers(&sock);
    match addr {
        SocketAddr::V4(_) => sock.set_ip_transparent_v4(true)?,
        SocketAddr::V6(_) => {
            sock.set_only_v6(true)?;
            sock.set_ip_transparent_v6(true)?;
        }
    }
    sock.set_nonblocking(true)?;
    sock.bind(&SockAddr::from(addr))?;
    Ok(sock)
}

impl TransparentUdp {
    /// Binds the receiving socket on `addr` (`0.0.0.0:PORT` or `[::]:PORT`, PORT being the
    /// nft rule's `tproxy to :PORT`). EPERM means braid lacks `CAP_NET_ADMIN`.
    pub fn bind(addr: SocketAddr) -> io::Result<TransparentUdp> {
        let sock = transparent_socket(addr)?;
        match addr {
            SocketAddr::V4(_) => nix_socket::setsockopt(&sock, sockopt::Ipv4OrigDstAddr, &true)?,
            SocketAddr::V6(_) => nix_socket::setsockopt(&sock, sockopt::Ipv6OrigDstAddr, &true)?,
        }
        Ok(TransparentUdp {
            socket: UdpSocket::from_std(sock.into())?,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Receives one datagram into `buf` with its sender and original destination. A datagram
    /// that arrived without an original destination (sent to the port directly, not through
    /// TPROXY) is skipped.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<Received> {
        loop {
            let got = self
                .socket
                .async_io(Interest::READABLE, || recv_with_dst(&self.socket, buf))
                .await?;
            if let Some(r) = got {
                return Ok(r);
            }
        }
    }
}

/// One `recvmsg` with the original destination from the control data; `None` when it had none.
fn recv_with_dst(socket: &UdpSocket, buf: &mut [u8]) -> io::Result<Option<Received>> {
    let mut cmsg = nix::cmsg_space!(libc::sockaddr_in6);
    let capacity = buf.len();
    let mut iov = [IoSliceMut::new(buf)];
    let msg = nix_socket::recvmsg::<nix_socket::SockaddrStorage>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_TRUNC,
    )?;
    let source = msg
        .address
        .as_ref()
        .and_then(|a| {
            a.as_sockaddr_in()
                .map(|v4| SocketAddr::V4(SocketAddrV4::from(*v4)))
                .or_else(|| {
                    a.as_sockaddr_in6()
                        .map(|v6| SocketAddr::V6(SocketAddrV6::from(*v6)))
                })
        })
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "recvmsg gave no IP source"))?;
    let mut original_dst = None;
    for c in msg.cmsgs()? {
        match c {
            ControlMessageOwned::Ipv4OrigDstAddr(a) => {
                original_dst = Some(SocketAddr::V4(nix_socket::SockaddrIn::from(a).into()))
            }
            ControlMessageOwned::Ipv6OrigDstAddr(a) => {
                original_dst = Some(SocketAddr::V6(nix_socket::SockaddrIn6::from(a).into()))
            }
            _ => {}
        }
    }
    // With MSG_TRUNC the kernel reports the datagram's real length; a longer one than `buf`
    // was cut, and is dropped rather than relayed cut.
    if msg.bytes > capacity {
        return Ok(None);
    }
    Ok(original_dst.map(|d| Received {
        len: msg.bytes,
        source,
        original_dst: crate::socket::normalize(d),
    }))
}

/// A socket bound to `from`, a foreign address (the original destination of a LAN datagram),
/// for sending the far end's answers to the LAN host with the right source address and port.
pub fn reply_socket(from: SocketAddr) -> io::Result<UdpSocket> {
    UdpSocket::from_std(transparent_socket(from)?.into())
}
