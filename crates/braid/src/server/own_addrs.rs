//! The server's own addresses, so that a client cannot make the relay connect to itself (and to
//! the services bound to its public address).
//!
//! Asked at the moment of each connect, from two sources:
//! - the kernel ([`braid_sys::local_addr::is_local`]): every address on an interface, up to date
//!   and with no list to go stale;
//! - `public_addresses`: on clouds with 1:1 NAT (GCP, AWS) the public address is on no interface
//!   at all, only the operator knows it (`braid doctor` says when it looks needed).
//!
//! No list is cached: a list read every 30 s was empty for 30 s after one failed read (EMFILE),
//! and a relay request to the server's own address then went through. When the kernel cannot
//! answer, [`OwnAddrs::is_own`] says so and the destination policy refuses (fail closed).

use std::net::{IpAddr, SocketAddr};

use tracing::debug;

/// What the relay counts as its own.
#[derive(Debug, Clone, Default)]
pub struct OwnAddrs {
    public: Vec<IpAddr>,
}

impl OwnAddrs {
    /// The interface addresses (asked of the kernel each time) and `public` (`public_addresses`).
    pub fn new(public: Vec<IpAddr>) -> Self {
        OwnAddrs { public }
    }

    /// `Some(true)` for an own address, `None` when the kernel could not tell (e.g. EMFILE).
    pub fn is_own(&self, ip: IpAddr) -> Option<bool> {
        let ip = braid_sys::socket::normalize(SocketAddr::new(ip, 0)).ip();
        if self.public.contains(&ip) {
            return Some(true);
        }
        match braid_sys::local_addr::is_local(ip) {
            Ok(own) => Some(own),
            Err(e) => {
                debug!("cannot tell whether {ip} is one of this server's addresses: {e}");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_and_listed_public_addresses_are_own() {
        let own = OwnAddrs::new(vec!["203.0.113.7".parse().unwrap()]);
        assert_eq!(own.is_own("127.0.0.1".parse().unwrap()), Some(true));
        assert_eq!(own.is_own("203.0.113.7".parse().unwrap()), Some(true));
        assert_eq!(
            own.is_own("::ffff:203.0.113.7".parse().unwrap()),
            Some(true)
        );
        assert_eq!(own.is_own("192.0.2.77".parse().unwrap()), Some(false));
    }
}
