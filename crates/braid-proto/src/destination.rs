//! Which destinations the relay may connect to.
//!
//! A relay that connects anywhere its clients ask is an open door into the VPS's own network:
//! cloud metadata (169.254.169.254), services bound to loopback, the provider's private network.
//! So by default braid refuses every address that is not globally routable, and the server's own
//! addresses, unless the operator allows a range explicitly.

use std::net::IpAddr;

use ipnet::IpNet;

/// Why a destination is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// 127.0.0.0/8, ::1.
    #[error("loopback")]
    Loopback,
    /// 169.254.0.0/16 (cloud metadata lives here), fe80::/10.
    #[error("link-local (includes cloud metadata at 169.254.169.254)")]
    LinkLocal,
    /// RFC 1918, 100.64.0.0/10 (carrier-grade NAT).
    #[error("private")]
    Private,
    /// fc00::/7.
    #[error("unique-local")]
    UniqueLocal,
    /// 0.0.0.0, ::, multicast, broadcast, 240.0.0.0/4.
    #[error("not a unicast host address")]
    NotUnicast,
    /// One of the server's own addresses.
    #[error("one of the relay's own addresses")]
    Own,
}

/// The relay's destination policy.
#[derive(Debug, Clone, Default)]
pub struct DestinationPolicy {
    /// Ranges allowed despite the rules above.
    pub allow: Vec<IpNet>,
}

impl DestinationPolicy {
    /// Decides whether the relay may connect to `ip`; `own` lists the server's own addresses.
    pub fn check(&self, ip: IpAddr, own: &[IpAddr]) -> Result<(), Refusal> {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        if self.allow.iter().any(|n| n.contains(&ip)) {
            return Ok(());
        }
        if own.contains(&ip) {
            return Err(Refusal::Own);
        }
        match ip {
            IpAddr::V4(a) => {
                let o = a.octets();
                if a.is_loopback() {
                    Err(Refusal::Loopback)
                } else if a.is_link_local() {
                    Err(Refusal::LinkLocal)
                } else if a.is_private() || (o[0] == 100 && (o[1] & 0xc0) == 64) {
                    Err(Refusal::Private)
                } else if a.is_unspecified()
                    || a.is_multicast()
                    || a.is_broadcast()
                    || o[0] >= 240
                    || o[0] == 0
                {
                    Err(Refusal::NotUnicast)
                } else {
                    Ok(())
                }
            }
            IpAddr::V6(a) => {
                let s = a.segments();
                if a.is_loopback() {
                    Err(Refusal::Loopback)
                } else if (s[0] & 0xffc0) == 0xfe80 {
                    Err(Refusal::LinkLocal)
                } else if (s[0] & 0xfe00) == 0xfc00 {
                    Err(Refusal::UniqueLocal)
                } else if a.is_unspecified() || a.is_multicast() {
                    Err(Refusal::NotUnicast)
                } else {
                    Ok(())
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(p: &DestinationPolicy, s: &str) -> Result<(), Refusal> {
        p.check(s.parse().unwrap(), &["198.51.100.9".parse().unwrap()])
    }

    #[test]
    fn default_policy_refuses_internal_ranges() {
        let p = DestinationPolicy::default();
        assert_eq!(check(&p, "127.0.0.1"), Err(Refusal::Loopback));
        assert_eq!(check(&p, "169.254.169.254"), Err(Refusal::LinkLocal));
        assert_eq!(check(&p, "10.30.0.2"), Err(Refusal::Private));
        assert_eq!(check(&p, "100.64.1.1"), Err(Refusal::Private));
        assert_eq!(check(&p, "fd00::1"), Err(Refusal::UniqueLocal));
        assert_eq!(check(&p, "fe80::1"), Err(Refusal::LinkLocal));
        assert_eq!(check(&p, "::ffff:127.0.0.1"), Err(Refusal::Loopback));
        assert_eq!(check(&p, "0.0.0.0"), Err(Refusal::NotUnicast));
        assert_eq!(check(&p, "198.51.100.9"), Err(Refusal::Own));
    }

    #[test]
    fn default_policy_allows_public_addresses() {
        let p = DestinationPolicy::default();
        assert_eq!(check(&p, "93.184.216.34"), Ok(()));
        assert_eq!(check(&p, "2606:4700::1111"), Ok(()));
    }

    #[test]
    fn allowlist_opens_only_its_range() {
        let p = DestinationPolicy {
            allow: vec!["10.30.0.0/24".parse().unwrap()],
        };
        assert_eq!(check(&p, "10.30.0.2"), Ok(()));
        assert_eq!(check(&p, "10.31.0.2"), Err(Refusal::Private));
    }
}
