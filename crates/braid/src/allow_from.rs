//! Who may use a LAN-facing service (the gateway's SOCKS5 listener, the HTTP status API).
//!
//! Bound to `0.0.0.0`, SOCKS5 is an open proxy for the whole internet and the status API shows
//! every connection of the LAN to it. So a service binds to loopback or to a LAN address, and
//! takes connections only from loopback and that LAN's subnets; binding wider needs the config
//! to say who may connect (`socks_allow_from`, `control_allow_from`):
//!
//! | bind | `*_allow_from` empty | `*_allow_from` given |
//! |---|---|---|
//! | loopback | loopback | loopback + the list |
//! | an address of a `lan` interface | loopback + that interface's subnets | loopback + the list |
//! | any other address, or `0.0.0.0` / `[::]` | refused (config error) | loopback + the list |
//!
//! Loopback is always allowed: the kernel drops packets from 127.0.0.0/8 and ::1 that arrive
//! from outside, so only this host can use it.

use std::net::{IpAddr, SocketAddr};

use braid_sys::link::IfName;
use ipnet::IpNet;

use crate::config::Invalid;

/// Sources allowed to connect: loopback and these networks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowFrom {
    nets: Vec<IpNet>,
}

impl AllowFrom {
    /// Loopback and `nets`.
    pub fn new(nets: Vec<IpNet>) -> AllowFrom {
        AllowFrom { nets }
    }

    /// Whether `ip` may connect.
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = braid_sys::socket::normalize(SocketAddr::new(ip, 0)).ip();
        ip.is_loopback() || self.nets.iter().any(|n| n.contains(&ip))
    }

    /// The networks besides loopback, for logs.
    pub fn nets(&self) -> &[IpNet] {
        &self.nets
    }
}

/// Config-time rule: a bind on every interface needs an explicit list.
pub fn check_bind(key: &str, addr: SocketAddr, allow_from: &[IpNet]) -> Result<(), Invalid> {
    if addr.ip().is_unspecified() && allow_from.is_empty() {
        return Err(Invalid::new(
            key,
            format!("\"{addr}\""),
            "listens on every interface, the uplinks too, so anyone on the internet could use it",
            format!(
                "bind it to a LAN address (e.g. \"192.168.1.1:{}\") or to loopback, or list who may connect in `{key}_allow_from` (e.g. [\"192.168.1.0/24\"])",
                addr.port()
            ),
        ));
    }
    Ok(())
}

/// Why a service's bind address cannot be used as it stands.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// A specific address that is on no `lan` interface, without a list of sources.
    #[error("`{key}` = \"{addr}\" is not an address of a `lan` interface ({lan}), so braid cannot tell who should reach it; fix: bind it to a LAN address or loopback, or list who may connect in `{key}_allow_from`")]
    NotLan {
        /// The config key.
        key: &'static str,
        /// The bind address.
        addr: SocketAddr,
        /// The `lan` interfaces, for the message.
        lan: String,
    },
    /// The interface addresses could not be read.
    #[error("`{key}`: cannot read the interface addresses to check it is a LAN address: {source}")]
    Interfaces {
        /// The config key.
        key: &'static str,
        /// The kernel's error.
        #[source]
        source: nix::Error,
    },
}

/// The sources a service bound to `addr` accepts: the configured list if there is one,
/// otherwise loopback only for a loopback bind, or the subnets of the `lan` interface that holds
/// `addr`; an address on no `lan` interface is an error.
pub fn for_bind(
    key: &'static str,
    addr: SocketAddr,
    configured: &[IpNet],
    lan: &[IfName],
) -> Result<AllowFrom, BindError> {
    if !configured.is_empty() {
        return Ok(AllowFrom::new(configured.to_vec()));
    }
    let ip = braid_sys::socket::normalize(addr).ip();
    if ip.is_loopback() {
        return Ok(AllowFrom::default());
    }
    let nets = lan_subnets(lan).map_err(|source| BindError::Interfaces { key, source })?;
    let ifaces: Vec<&str> = nets
        .iter()
        .filter(|(_, n)| n.addr() == ip)
        .map(|(iface, _)| iface.as_str())
        .collect();
    let holding: Vec<IpNet> = nets
        .iter()
        .filter(|(iface, _)| ifaces.contains(&iface.as_str()))
        .map(|(_, n)| n.trunc())
        .collect();
    if holding.is_empty() {
        return Err(BindError::NotLan {
            key,
            addr,
            lan: if lan.is_empty() {
                "none configured".into()
            } else {
                lan.iter()
                    .map(|l| l.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        });
    }
    Ok(AllowFrom::new(holding))
}

/// Every address of the `lan` interfaces with its prefix, e.g. (`eth1`, 192.168.1.1/24).
fn lan_subnets(lan: &[IfName]) -> Result<Vec<(String, IpNet)>, nix::Error> {
    let mut out = Vec::new();
    for ifa in nix::ifaddrs::getifaddrs()? {
        if !lan.iter().any(|l| l.as_str() == ifa.interface_name) {
            continue;
        }
        let (Some(addr), Some(mask)) = (ifa.address, ifa.netmask) else {
            continue;
        };
        let net = if let (Some(a), Some(m)) = (addr.as_sockaddr_in(), mask.as_sockaddr_in()) {
            ipnet::Ipv4Net::with_netmask(a.ip(), m.ip())
                .ok()
                .map(IpNet::V4)
        } else if let (Some(a), Some(m)) = (addr.as_sockaddr_in6(), mask.as_sockaddr_in6()) {
            ipnet::Ipv6Net::with_netmask(a.ip(), m.ip())
                .ok()
                .map(IpNet::V6)
        } else {
            None
        };
        if let Some(net) = net {
            out.push((ifa.interface_name.clone(), net));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn loopback_is_always_allowed_and_the_list_is_exact() {
        let a = AllowFrom::new(nets(&["192.168.1.0/24"]));
        assert!(a.allows("127.0.0.1".parse().unwrap()));
        assert!(a.allows("::1".parse().unwrap()));
        assert!(a.allows("::ffff:192.168.1.7".parse().unwrap()));
        assert!(!a.allows("192.168.2.7".parse().unwrap()));
        assert!(!AllowFrom::default().allows("10.0.0.1".parse().unwrap()));
    }

    #[test]
    fn wildcard_bind_without_a_list_is_a_config_error_naming_the_fix() {
        let e = check_bind("socks", "0.0.0.0:1080".parse().unwrap(), &[]).unwrap_err();
        let msg = format!("{e:?}");
        assert!(
            msg.contains("socks_allow_from") && msg.contains("every interface"),
            "{msg}"
        );
        assert!(check_bind("socks", "[::]:1080".parse().unwrap(), &[]).is_err());
        assert!(check_bind(
            "socks",
            "0.0.0.0:1080".parse().unwrap(),
            &nets(&["10.0.0.0/8"])
        )
        .is_ok());
        assert!(check_bind("socks", "192.168.1.1:1080".parse().unwrap(), &[]).is_ok());
    }

    #[test]
    fn bind_on_loopback_or_with_a_list_needs_no_lan() {
        let lo = for_bind("socks", "127.0.0.1:1080".parse().unwrap(), &[], &[]).unwrap();
        assert_eq!(lo, AllowFrom::default());
        let listed = nets(&["10.9.0.0/24"]);
        let l = for_bind("socks", "0.0.0.0:1080".parse().unwrap(), &listed, &[]).unwrap();
        assert_eq!(l.nets(), &listed[..]);
    }

    #[test]
    fn bind_on_an_address_of_no_lan_interface_is_refused() {
        let lan: Vec<IfName> = vec!["lo".parse().unwrap()];
        let e = for_bind("socks", "192.0.2.1:1080".parse().unwrap(), &[], &lan).unwrap_err();
        assert!(
            e.to_string()
                .contains("not an address of a `lan` interface (lo)"),
            "{e}"
        );
    }
}
