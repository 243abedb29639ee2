//! Interface addresses (`ip addr show/replace/del`).

use std::fmt;
use std::net::IpAddr;

use netlink_packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REPLACE, NLM_F_REQUEST};
use netlink_packet_route::{
    address::{AddressAttribute, AddressMessage},
    AddressFamily, RouteNetlinkMessage,
};

use crate::netlink::{is_errno, NetlinkError, Rtnl};

/// An address with its prefix length, like `192.0.2.10/24`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IfAddr {
    /// The local address.
    pub addr: IpAddr,
    /// The prefix length of the subnet.
    pub prefix_len: u8,
}

impl fmt::Display for IfAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

/// True for fe80::/10.
fn is_ipv6_link_local(addr: &IpAddr) -> bool {
    matches!(addr, IpAddr::V6(a) if (a.segments()[0] & 0xffc0) == 0xfe80)
}

fn family_of(addr: &IpAddr) -> AddressFamily {
    match addr {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

fn max_prefix(addr: &IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

fn address_message(ifindex: u32, addr: IfAddr) -> AddressMessage {
    let mut msg = AddressMessage::default();
    msg.header.family = family_of(&addr.addr);
    msg.header.prefix_len = addr.prefix_len;
    msg.header.index = ifindex;
    msg.attributes.push(AddressAttribute::Local(addr.addr));
    msg.attributes.push(AddressAttribute::Address(addr.addr));
    msg
}

impl Rtnl {
    /// The IPv4 and IPv6 addresses of interface `ifindex`, IPv6 link-local
    /// (fe80::/10) addresses left out. Like `ip addr show dev DEV`.
    pub async fn addresses(&self, ifindex: u32) -> Result<Vec<IfAddr>, NetlinkError> {
        let mut msg = AddressMessage::default();
        msg.header.index = ifindex;
        let replies = self
            .request(
                RouteNetlinkMessage::GetAddress(msg),
                NLM_F_REQUEST | NLM_F_DUMP,
                || format!("ip addr show (ifindex {ifindex})"),
            )
            .await?;
        let mut out = Vec::new();
        for reply in &replies {
            let RouteNetlinkMessage::NewAddress(m) = reply else {
                continue;
            };
            // Without strict checking the kernel ignores the index filter.
            if m.header.index != ifindex {
                continue;
            }
            // IFA_LOCAL is the local side of a point-to-point link (IFA_ADDRESS
            // is then the peer); IPv6 sends only IFA_ADDRESS.
            let local = m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(ip) => Some(*ip),
                _ => None,
            });
            let address = m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Address(ip) => Some(*ip),
                _ => None,
            });
            let Some(addr) = local.or(address) else {
                continue;
            };
            if is_ipv6_link_local(&addr) {
                continue;
            }
            out.push(IfAddr {
                addr,
                prefix_len: m.header.prefix_len,
            });
        }
        Ok(out)
    }

    /// Adds `addr` to interface `ifindex`, or leaves it if it is there
    /// (idempotent). Like `ip addr replace ADDR/LEN dev DEV`.
    pub async fn ensure_address(&self, ifindex: u32, addr: IfAddr) -> Result<(), NetlinkError> {
        if addr.prefix_len > max_prefix(&addr.addr) {
            return Err(NetlinkError::InvalidSpec {
                what: "address",
                reason: format!("prefix length of {addr} is too long"),
            });
        }
        self.request(
            RouteNetlinkMessage::NewAddress(address_message(ifindex, addr)),
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
            || format!("ip addr replace {addr} dev (ifindex {ifindex})"),
        )
        .await?;
        Ok(())
    }

    /// Removes `addr` from interface `ifindex`; returns whether it was there.
    /// Like `ip addr del ADDR/LEN dev DEV`.
    pub async fn delete_address(&self, ifindex: u32, addr: IfAddr) -> Result<bool, NetlinkError> {
        match self
            .request(
                RouteNetlinkMessage::DelAddress(address_message(ifindex, addr)),
                NLM_F_REQUEST | NLM_F_ACK,
                || format!("ip addr del {addr} dev (ifindex {ifindex})"),
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_errno(&e, &[libc::EADDRNOTAVAIL, libc::ESRCH, libc::ENOENT]) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_local_is_detected() {
        assert!(is_ipv6_link_local(&"fe80::1".parse().unwrap()));
        assert!(is_ipv6_link_local(&"febf::1".parse().unwrap()));
        assert!(!is_ipv6_link_local(&"fec0::1".parse().unwrap()));
        assert!(!is_ipv6_link_local(&"2001:db8::1".parse().unwrap()));
        assert!(!is_ipv6_link_local(&"169.254.0.1".parse().unwrap()));
    }
}
