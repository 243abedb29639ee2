//! Which destinations the relay may connect to.
//!
//! A relay that connects anywhere its clients ask is an open door into the VPS's own network:
//! cloud metadata (169.254.169.254), services bound to loopback, the provider's private network.
//! So by default braid refuses every address that is not globally routable, and the server's own
//! addresses, unless the operator allows a range explicitly. The gateway's capture sends the
//! same non-global ranges out directly ([`non_global_ranges`]): one table for both.
//!
//! IPv6 has several ways to carry an IPv4 address inside (IPv4-mapped `::ffff:a.b.c.d`,
//! IPv4-compatible `::a.b.c.d`, NAT64 `64:ff9b::a.b.c.d`, 6to4 `2002:AABB:CCDD::`, Teredo
//! `2001::/32`). Packets to them end at the IPv4 address inside (through the kernel, a NAT64
//! gateway or a tunnel relay), so such an address is judged by the IPv4 address it carries.
//!
//! Whether an address is one of the relay's own is a fact about the running host, so the caller
//! answers it (`is_own`), and only when the rules above let the address through. An answer of
//! "cannot tell" refuses: the guard fails closed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

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
    /// RFC 1918, 100.64.0.0/10 (carrier-grade NAT), NAT64 local-use 64:ff9b:1::/48 (where the
    /// IPv4 address sits depends on the operator's prefix, so it cannot be judged by it).
    Private,
    /// fc00::/7.
    UniqueLocal,
    /// fec0::/10 (deprecated, but still routed inside some networks).
    SiteLocal,
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
const NON_GLOBAL: [Range; 16] = {
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
    const fn nat64_local_use() -> Range {
        let mut bytes = [0; 16];
        (bytes[0], bytes[1], bytes[2], bytes[3], bytes[5]) = (0, 0x64, 0xff, 0x9b, 1);
        Range {
            bytes,
            len: 48,
            v4: false,
            class: NonGlobal::Private,
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
        v6(0xfe, 0xc0, 10, NonGlobal::SiteLocal),
        v6(0xfc, 0x00, 7, NonGlobal::UniqueLocal),
        v6(0xff, 0x00, 8, NonGlobal::NotUnicast),
        nat64_local_use(),
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
    /// RFC 1918, 100.64.0.0/10 (carrier-grade NAT), NAT64 local-use 64:ff9b:1::/48.
    #[error("private")]
    Private,
    /// fc00::/7.
    #[error("unique-local")]
    UniqueLocal,
    /// fec0::/10 (deprecated, but still routed inside some networks).
    #[error("site-local")]
    SiteLocal,
    /// 0.0.0.0/8, ::, multicast, broadcast, 240.0.0.0/4.
    #[error("not a unicast host address")]
    NotUnicast,
    /// One of the server's own addresses (on an interface, or listed in `public_addresses`).
    #[error("one of the relay's own addresses")]
    Own,
    /// The host could not say whether the address is its own (e.g. out of descriptors).
    #[error("the relay could not tell whether it is one of its own addresses, so it is refused to be safe")]
    OwnUnknown,
}

impl From<NonGlobal> for Refusal {
    fn from(n: NonGlobal) -> Refusal {
        match n {
            NonGlobal::Loopback => Refusal::Loopback,
            NonGlobal::LinkLocal => Refusal::LinkLocal,
            NonGlobal::Private => Refusal::Private,
            NonGlobal::UniqueLocal => Refusal::UniqueLocal,
            NonGlobal::SiteLocal => Refusal::SiteLocal,
            NonGlobal::NotUnicast => Refusal::NotUnicast,
        }
    }
}

/// A refusal, with the IPv4 address it was judged by when the destination carries one inside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    /// The rule that refused it.
    pub reason: Refusal,
    /// The IPv4 address inside an IPv6 destination (NAT64, 6to4, …), when that decided.
    pub inside: Option<Ipv4Addr>,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.inside {
            Some(v4) => write!(
                f,
                "{} (judged by the IPv4 address inside it, {v4})",
                self.reason
            ),
            None => write!(f, "{}", self.reason),
        }
    }
}

impl std::error::Error for Refused {}

/// The relay's destination policy.
#[derive(Debug, Clone, Default)]
pub struct DestinationPolicy {
    /// Ranges allowed despite the rules above.
    pub allow: Vec<IpNet>,
}

impl DestinationPolicy {
    /// Decides whether the relay may connect to `ip`. `is_own` says whether an address is one of
    /// the relay's own (`None`: cannot tell, which refuses); it is asked only about addresses
    /// that pass every other rule, and is not asked at all for allowed ranges.
    pub fn check(
        &self,
        ip: IpAddr,
        mut is_own: impl FnMut(IpAddr) -> Option<bool>,
    ) -> Result<(), Refused> {
        let ip = unmap(ip);
        let inside = match ip {
            IpAddr::V6(v6) => embedded_v4(v6),
            IpAddr::V4(_) => None,
        };
        let allowed = |a: IpAddr| self.allow.iter().any(|n| n.contains(&a));
        if allowed(ip) || inside.is_some_and(|v4| allowed(IpAddr::V4(v4))) {
            return Ok(());
        }
        let refuse = |reason, inside| Err(Refused { reason, inside });
        if let Some(class) = classify(ip) {
            return refuse(class.into(), None);
        }
        if let Some(v4) = inside {
            if let Some(class) = classify(IpAddr::V4(v4)) {
                return refuse(class.into(), Some(v4));
            }
        }
        for (addr, judged_by) in
            std::iter::once((ip, None)).chain(inside.map(|v4| (IpAddr::V4(v4), Some(v4))))
        {
            match is_own(addr) {
                Some(false) => {}
                Some(true) => return refuse(Refusal::Own, judged_by),
                None => return refuse(Refusal::OwnUnknown, judged_by),
            }
        }
        Ok(())
    }

    /// Whether `ip` is globally routable by the rules above (ignoring the allow list and the
    /// relay's own addresses): what `braid doctor` uses to tell a public address from others.
    pub fn is_global(ip: IpAddr) -> bool {
        DestinationPolicy::default()
            .check(ip, |_| Some(false))
            .is_ok()
    }
}

/// `::ffff:a.b.c.d` is the IPv4 address itself, as the kernel treats it.
fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// The IPv4 address an IPv6 address carries, for the forms whose packets end there.
fn embedded_v4(a: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = a.segments();
    let o = a.octets();
    let last32 = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    match s {
        // IPv4-compatible ::a.b.c.d (RFC 4291 §2.5.5.1, deprecated); :: and ::1 are not.
        [0, 0, 0, 0, 0, 0, ..] if !a.is_unspecified() && !a.is_loopback() => Some(last32),
        // NAT64 well-known prefix 64:ff9b::/96 (RFC 6052).
        [0x64, 0xff9b, 0, 0, 0, 0, ..] => Some(last32),
        // 6to4 2002:AABB:CCDD::/48 (RFC 3056).
        [0x2002, ..] => Some(Ipv4Addr::new(o[2], o[3], o[4], o[5])),
        // Teredo 2001:0::/32 (RFC 4380): the client's address, inverted, in the last 32 bits.
        [0x2001, 0, ..] => Some(Ipv4Addr::from(!u32::from(last32))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWN: &str = "198.51.100.9";

    fn own(ip: IpAddr) -> Option<bool> {
        Some(ip == OWN.parse::<IpAddr>().unwrap())
    }

    fn check(p: &DestinationPolicy, s: &str) -> Result<(), Refusal> {
        p.check(s.parse().unwrap(), own).map_err(|r| r.reason)
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
        assert_eq!(check(&p, "::"), Err(Refusal::NotUnicast));
        assert_eq!(check(&p, "::1"), Err(Refusal::Loopback));
        assert_eq!(check(&p, OWN), Err(Refusal::Own));
    }

    #[test]
    fn site_local_is_refused() {
        let p = DestinationPolicy::default();
        assert_eq!(check(&p, "fec0::1"), Err(Refusal::SiteLocal));
        assert_eq!(check(&p, "feff:ffff::1"), Err(Refusal::SiteLocal));
    }

    #[test]
    fn embedded_ipv4_forms_are_judged_by_the_address_inside() {
        let p = DestinationPolicy::default();
        let inside = |s: &str| p.check(s.parse().unwrap(), own).unwrap_err();
        for (form, reason, v4) in [
            ("::127.0.0.1", Refusal::Loopback, "127.0.0.1"),
            ("::10.0.0.1", Refusal::Private, "10.0.0.1"),
            (
                "64:ff9b::169.254.169.254",
                Refusal::LinkLocal,
                "169.254.169.254",
            ),
            ("64:ff9b::a00:1", Refusal::Private, "10.0.0.1"),
            ("2002:a9fe:a9fe::1", Refusal::LinkLocal, "169.254.169.254"),
            ("2002:7f00:1::", Refusal::Loopback, "127.0.0.1"),
            // Teredo: client 10.0.0.1 is stored inverted (f5ff:fffe).
            (
                "2001:0:4136:e378:8000:63bf:f5ff:fffe",
                Refusal::Private,
                "10.0.0.1",
            ),
            ("64:ff9b::198.51.100.9", Refusal::Own, OWN),
            ("2002:c633:6409::", Refusal::Own, OWN),
        ] {
            let r = inside(form);
            assert_eq!(r.reason, reason, "{form}");
            assert_eq!(r.inside, Some(v4.parse().unwrap()), "{form}");
            assert!(r.to_string().contains(v4), "{r}");
        }
        // NAT64 local-use: the IPv4 address's place is unknown, so the whole prefix is refused.
        assert_eq!(check(&p, "64:ff9b:1::a00:1"), Err(Refusal::Private));
        // The same forms around a public IPv4 address pass.
        for ok in [
            "64:ff9b::93.184.216.34",
            "2002:5db8:d822::1",
            "::93.184.216.34",
        ] {
            assert_eq!(check(&p, ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn own_address_unknown_is_refused_and_own_is_asked_last() {
        let p = DestinationPolicy::default();
        let r = p.check("93.184.216.34".parse().unwrap(), |_| None);
        assert_eq!(r.unwrap_err().reason, Refusal::OwnUnknown);
        // Not asked for an address another rule refuses already, nor for allowed ranges.
        let mut asked = 0;
        let _ = p.check("10.0.0.1".parse().unwrap(), |_| {
            asked += 1;
            None
        });
        let allow = DestinationPolicy {
            allow: vec!["198.51.100.0/24".parse().unwrap()],
        };
        assert_eq!(
            allow.check(OWN.parse().unwrap(), |_| {
                asked += 1;
                None
            }),
            Ok(())
        );
        assert_eq!(asked, 0);
    }

    #[test]
    fn default_policy_allows_public_addresses() {
        let p = DestinationPolicy::default();
        assert_eq!(check(&p, "93.184.216.34"), Ok(()));
        assert_eq!(check(&p, "2606:4700::1111"), Ok(()));
        assert!(DestinationPolicy::is_global(
            "2606:4700::1111".parse().unwrap()
        ));
        assert!(!DestinationPolicy::is_global("10.0.0.1".parse().unwrap()));
    }

    #[test]
    fn allowlist_opens_only_its_range_also_through_an_embedded_form() {
        let p = DestinationPolicy {
            allow: vec!["10.30.0.0/24".parse().unwrap()],
        };
        assert_eq!(check(&p, "10.30.0.2"), Ok(()));
        assert_eq!(check(&p, "64:ff9b::a1e:2"), Ok(()));
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
        assert!(all.contains(&"fec0::/10".parse().unwrap()));
        assert!(all.contains(&"64:ff9b:1::/48".parse().unwrap()));
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
