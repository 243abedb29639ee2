//! UDP on a wildcard address that answers from the address it was asked at (`IP_PKTINFO`,
//! `IPV6_RECVPKTINFO`).
//!
//! A relay bound to `0.0.0.0` or `[::]` receives on every address of the host, but a reply sent
//! with plain `sendto` leaves from whatever address the route to the client prefers. On a VPS
//! with a second address (a failover IP on `lo`, IPv4 and IPv6 on one NIC) the client then sees
//! an answer from an address it never wrote to, and a NAT or the client itself drops it. So the
//! relay reads the destination address of each datagram and sends its replies from it.
//!
//! ```text
//!  enable(sock) once ─► recv_to(sock) = (bytes, client, the address it wrote to)
//!                       send_from(sock, bytes, client, that address)
//! ```

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd};

use nix::sys::socket::{
    recvmsg, sendmsg, setsockopt, sockopt, ControlMessage, ControlMessageOwned, MsgFlags,
    SockaddrStorage,
};

/// Asks the kernel to report each datagram's destination address: both options on an IPv6
/// socket, since a dual-stack socket receives IPv4 too.
pub fn enable<S: AsFd>(sock: &S) -> io::Result<()> {
    let v6 = socket2::SockRef::from(sock).local_addr()?.is_ipv6();
    if v6 {
        setsockopt(sock, sockopt::Ipv6RecvPacketInfo, &true).map_err(io::Error::from)?;
    }
    // IPv4 on an IPv6 socket is reported with IP_PKTINFO; harmless where no IPv4 comes.
    match setsockopt(sock, sockopt::Ipv4PacketInfo, &true) {
        Ok(()) => Ok(()),
        Err(_) if v6 => Ok(()),
        Err(e) => Err(io::Error::from(e)),
    }
}

/// One datagram: its length in `buf`, the sender, and the local address it was sent to (when
/// the kernel said; `None` on a socket without [`enable`]). Non-blocking: `WouldBlock` when
/// nothing is queued.
pub fn recv_to<S: AsRawFd>(
    sock: &S,
    buf: &mut [u8],
) -> io::Result<(usize, SocketAddr, Option<IpAddr>)> {
    let mut iov = [IoSliceMut::new(buf)];
    let mut cmsgs = nix::cmsg_space!(libc::in6_pktinfo, libc::in_pktinfo);
    let msg = recvmsg::<SockaddrStorage>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut cmsgs),
        MsgFlags::MSG_DONTWAIT,
    )
    .map_err(io::Error::from)?;
    let from =
        msg.address.as_ref().and_then(sockaddr).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, "datagram without a sender")
        })?;
    let mut to = None;
    for c in msg.cmsgs().map_err(io::Error::from)? {
        match c {
            ControlMessageOwned::Ipv4PacketInfo(i) => {
                to = Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(i.ipi_addr.s_addr))));
            }
            ControlMessageOwned::Ipv6PacketInfo(i) => {
                let a = Ipv6Addr::from(i.ipi6_addr.s6_addr);
                to = Some(a.to_ipv4_mapped().map_or(IpAddr::V6(a), IpAddr::V4));
            }
            _ => {}
        }
    }
    Ok((msg.bytes, from, to))
}

/// Sends `buf` to `to` from local address `from` (or the kernel's choice for `None`).
/// Non-blocking: `WouldBlock` when the send buffer is full.
pub fn send_from<S: AsRawFd>(
    sock: &S,
    buf: &[u8],
    to: SocketAddr,
    from: Option<IpAddr>,
) -> io::Result<usize> {
    let dest = SockaddrStorage::from(to);
    let iov = [IoSlice::new(buf)];
    let v4;
    let v6;
    let cmsg: Vec<ControlMessage> = match from {
        // IPv4 source, also for an IPv4-mapped destination on a dual-stack socket.
        Some(IpAddr::V4(a)) => {
            v4 = libc::in_pktinfo {
                ipi_ifindex: 0,
                ipi_spec_dst: libc::in_addr {
                    s_addr: u32::from(a).to_be(),
                },
                ipi_addr: libc::in_addr { s_addr: 0 },
            };
            vec![ControlMessage::Ipv4PacketInfo(&v4)]
        }
        Some(IpAddr::V6(a)) => {
            v6 = libc::in6_pktinfo {
                ipi6_addr: libc::in6_addr {
                    s6_addr: a.octets(),
                },
                ipi6_ifindex: 0,
            };
            vec![ControlMessage::Ipv6PacketInfo(&v6)]
        }
        None => Vec::new(),
    };
    sendmsg(
        sock.as_raw_fd(),
        &iov,
        &cmsg,
        MsgFlags::MSG_DONTWAIT,
        Some(&dest),
    )
    .map_err(io::Error::from)
}

fn sockaddr(s: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(a) = s.as_sockaddr_in() {
        Some(SocketAddr::from((a.ip(), a.port())))
    } else {
        s.as_sockaddr_in6()
            .map(|a| SocketAddr::from((a.ip(), a.port())))
    }
}

/// [`recv_to`] on a tokio socket: waits for a datagram.
pub async fn recv_to_async(
    sock: &tokio::net::UdpSocket,
    buf: &mut [u8],
) -> io::Result<(usize, SocketAddr, Option<IpAddr>)> {
    sock.async_io(tokio::io::Interest::READABLE, || recv_to(sock, buf))
        .await
}

/// [`send_from`] on a tokio socket: waits for room in the send buffer.
pub async fn send_from_async(
    sock: &tokio::net::UdpSocket,
    buf: &[u8],
    to: SocketAddr,
    from: Option<IpAddr>,
) -> io::Result<usize> {
    sock.async_io(tokio::io::Interest::WRITABLE, || {
        send_from(sock, buf, to, from)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_leave_from_the_address_the_client_wrote_to() {
        // 127.0.0.1 and 127.0.0.2 are both this host's; the client writes to .2.
        let server = crate::socket::udp_bind("0.0.0.0:0".parse().unwrap()).unwrap();
        enable(&server).unwrap();
        let port = server.local_addr().unwrap().port();
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        client.send_to(b"ping", ("127.0.0.2", port)).unwrap();
        let mut buf = [0u8; 16];
        let (n, from, to) = loop {
            match recv_to(&server, &mut buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                r => break r.unwrap(),
            }
        };
        assert_eq!(&buf[..n], b"ping");
        assert_eq!(from, client.local_addr().unwrap());
        assert_eq!(to, Some("127.0.0.2".parse().unwrap()));
        send_from(&server, b"pong", from, to).unwrap();
        let (n, src) = client.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"pong");
        assert_eq!(src, SocketAddr::from(([127, 0, 0, 2], port)));
    }

    #[test]
    fn dual_stack_socket_reports_and_answers_ipv4_clients() {
        let Ok(server) = crate::socket::udp_bind("[::]:0".parse().unwrap()) else {
            return; // no IPv6 on this host
        };
        enable(&server).unwrap();
        let port = server.local_addr().unwrap().port();
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        client.send_to(b"ping", ("127.0.0.3", port)).unwrap();
        let mut buf = [0u8; 16];
        let (_, from, to) = loop {
            match recv_to(&server, &mut buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                r => break r.unwrap(),
            }
        };
        assert_eq!(to, Some("127.0.0.3".parse().unwrap()));
        send_from(&server, b"pong", from, to).unwrap();
        let (_, src) = client.recv_from(&mut buf).unwrap();
        assert_eq!(src.ip(), "127.0.0.3".parse::<IpAddr>().unwrap());
    }
}
