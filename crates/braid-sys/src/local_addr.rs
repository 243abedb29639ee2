//! Is an address one of this host's own? Asked of the kernel at the moment it matters.
//!
//! A list of interface addresses read now and then goes stale (DHCP, cloud re-plumbing) and is
//! empty when reading it fails (EMFILE), which would let a relay connect to itself. The kernel's
//! routing answers instead: connecting a UDP socket sends nothing, but picks the route, and a
//! route to one of the host's own addresses is a `local` route whose source is that same address
//! (`ip route get ADDR` → `local ADDR dev lo src ADDR`). That holds for every address on any
//! interface, up or down, IPv4 and IPv6. Any failure other than "no route" is an error, so the
//! caller can refuse (fail closed).

use std::io;
use std::net::{IpAddr, SocketAddr};

use socket2::{Domain, SockAddr, Socket, Type};

/// True when `ip` is assigned to an interface of this host (in this network namespace).
/// `::ffff:a.b.c.d` is asked as `a.b.c.d`. Costs one short-lived descriptor.
pub fn is_local(ip: IpAddr) -> io::Result<bool> {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    let domain = if ip.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let sock = Socket::new(domain, Type::DGRAM, None)?;
    match sock.connect(&SockAddr::from(SocketAddr::new(ip, 9))) {
        Ok(()) => {}
        // No route at all: certainly not a local address (those always have one).
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ENETUNREACH) | Some(libc::EHOSTUNREACH)
            ) =>
        {
            return Ok(false)
        }
        Err(e) => return Err(e),
    }
    let src = sock
        .local_addr()?
        .as_socket()
        .map(|a| crate::socket::normalize(a).ip());
    Ok(src == Some(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_local_and_a_documentation_address_is_not() {
        assert!(is_local("127.0.0.1".parse().unwrap()).unwrap());
        assert!(is_local("::ffff:127.0.0.1".parse().unwrap()).unwrap());
        assert!(!is_local("192.0.2.77".parse().unwrap()).unwrap());
    }
}
