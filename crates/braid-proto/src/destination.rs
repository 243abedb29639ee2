//! Which destinations the relay may connect to.
//!
//! A relay that connects anywhere its clients ask is an open door into the VPS's own network:
//! cloud metadata (169.254.169.254), services bound to loopback, the provider's private network.
//! So by default braid refuses every address that is not globally routable, and the server's own
//! addresses, unless the operator allows a range explicitly.

use std::net::IpAddr;

use ipnet::IpNet;

/// Why an address is not a global unicast destination: the one classification shared by the
/// relay's safety policy ([`DestinationPolicy`]) and the gateway's capture, which sends such
/// destinations out directly instead of through the relay ([`non_global_ranges`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonGlobal {
    /// 127.0.0.0/8, ::1.
    Loopback,
    /// 169.254.0.0/16, fe80::/10.
    LinkLocal,
    /// RFC 1918 and 100.64.0.0/10 (carrier-grade NAT).
    Private,
    /// fc00::/7.
    UniqueLocal,
    /// 0.0.0.0/8, ::, multicast, broadcast, 240.0.0.0/4.
    NotUnicast,
}

/// One row of [`NON_GLOBAL`]: a network by its first bytes and prefix length.
struct Range {
    /// The first bytes of the network (the rest are zero), or the whole IPv6 address.
    bytes: [u8; 16],
    len: u8,
    v4: bool,
    class: NonGlobal,
}

/// Every non-global range, IPv4 then IPv6. A table rather than code, so that the relay's check
/// and the capture table's bypass set cannot disagree.
const NON_GLOBAL: [Range; 14] = {
    const fn v4(a: u8, b: u8, len: u8, class: NonGlobal) -> Range {
        let mut bytes = [0; 16];
        (bytes[0], bytes[1]) = (a, b);
        Range {
            bytes,
            len,
            v4: true,
            class,
        }
    }
    const fn v6(a: u8, b: u8, len: u8, class: NonGlobal) -> Range {
        let mut bytes = [0; 16];
        (bytes[0], bytes[1]) = (a, b);
        Range {
            bytes,
            len,
            v4: false,
            class,
        }
    }
    const fn v6_last(last: u8, class: NonGlobal) -> Range {
        let mut bytes = [0; 16];
        bytes[15] = last;
        Range {
            bytes,
            len: 128,
            v4: false,
            class,
        }
    }
    [
        v4(0, 0, 8, NonGlobal::NotUnicast),
        v4(10, 0, 8, NonGlobal::Private),
        v4(100, 64, 10, NonGlobal::Private),
        v4(127, 0, 8, NonGlobal::Loopback),
        v4(169, 254, 16, NonGlobal::LinkLocal),
        v4(172, 16, 12, NonGlobal::Private),
        v4(192, 168, 16, NonGlobal::Private),
        // Multicast, then the reserved block that holds the limited broadcast address.
        v4(224, 0, 4, NonGlobal::NotUnicast),
        v4(240, 0, 4, NonGlobal::NotUnicast),
        v6_last(0, NonGlobal::NotUnicast),
        v6_last(1, NonGlobal::Loopback),
        v6(0xfe, 0x80, 10, NonGlobal::LinkLocal),
        v6(0xfc, 0x00, 7, NonGlobal::UniqueLocal),
        v6(0xff, 0x00, 8, NonGlobal::NotUnicast),
    ]
};

impl Range {
    fn addr(&self) -> IpAddr {
        let b = self.bytes;
        if self.v4 {
            IpAddr::from([b[0], b[1], b[2], b[3]])
        } else {
            IpAddr::from(b)
        }
    }

    fn net(&self) -> IpNet {
        // The table holds valid prefixes only (checked by a test).
        IpNet::new(self.addr(), self.len).unwrap_or_else(|_| IpNet::from(self.addr()))
    }
}

/// The class of a non-global address, `None` for a global unicast one. IPv4-mapped IPv6
/// addresses (`::ffff:a.b.c.d`) are judged as the IPv4 address they carry.
pub fn classify(ip: IpAddr) -> Option<NonGlobal> {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    NON_GLOBAL
        .iter()
        .find(|r| r.net().contains(&ip))
        .map(|r| r.class)
}

/// Every non-global range (IPv4 and IPv6): what the gateway's capture table sends out directly
/// by default.
pub fn non_global_ranges() -> Vec<IpNet> {
    NON_GLOBAL.iter().map(Range::net).collect()
}

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

impl From<NonGlobal> for Refusal {
    fn from(n: NonGlobal) -> Refusal {
        match n {
            NonGlobal::Loopback => Refusal::Loopback,
            NonGlobal::LinkLocal => Refusal::LinkLocal,
            NonGlobal::Private => Refusal::Private,
            NonGlobal::UniqueLocal => Refusal::UniqueLocal,
            NonGlobal::NotUnicast => Refusal::NotUnicast,
        }
    }
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
        match classify(ip) {
            Some(class) => Err(class.into()),
            None => Ok(()),
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

    #[test]
    fn table_holds_valid_prefixes_of_both_families() {
        for r in NON_GLOBAL.iter() {
            let net = IpNet::new(r.addr(), r.len).expect("valid prefix length");
            assert_eq!(net.network(), r.addr(), "{net} has host bits set");
        }
        let all = non_global_ranges();
        assert_eq!(all.iter().filter(|n| matches!(n, IpNet::V4(_))).count(), 9);
        assert!(all.contains(&"fc00::/7".parse().unwrap()));
    }

    #[test]
    fn classify_tells_every_class_and_passes_global_addresses() {
        let c = |s: &str| classify(s.parse().unwrap());
        assert_eq!(c("192.168.8.1"), Some(NonGlobal::Private));
        assert_eq!(c("172.31.255.255"), Some(NonGlobal::Private));
        assert_eq!(c("172.32.0.1"), None);
        assert_eq!(c("100.127.0.1"), Some(NonGlobal::Private));
        assert_eq!(c("100.128.0.1"), None);
        assert_eq!(c("255.255.255.255"), Some(NonGlobal::NotUnicast));
        assert_eq!(c("239.1.2.3"), Some(NonGlobal::NotUnicast));
        assert_eq!(c("ff02::1"), Some(NonGlobal::NotUnicast));
        assert_eq!(c("::"), Some(NonGlobal::NotUnicast));
        assert_eq!(c("::ffff:10.0.0.1"), Some(NonGlobal::Private));
        assert_eq!(c("2001:db8::1"), None);
        assert_eq!(c("8.8.8.8"), None);
    }
}
