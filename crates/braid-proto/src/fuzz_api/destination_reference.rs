//! An independent reference for the relay's destination policy, written from the IANA
//! special-purpose address registries as tables of ranges, to check
//! [`DestinationPolicy::check`](crate::destination::DestinationPolicy::check) against (the
//! `destination_policy` fuzz target and the unit suite's property test).
//!
//! The policy decides with bit tests on octets and segments; this reference decides with
//! `IpNet::contains` over the ranges its documentation names. Where the two disagree, one of them
//! is wrong.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use crate::destination::Refusal;

/// IPv4 ranges the relay refuses by default, and why.
const V4: &[(&str, Refusal)] = &[
    ("127.0.0.0/8", Refusal::Loopback),
    ("169.254.0.0/16", Refusal::LinkLocal),
    ("10.0.0.0/8", Refusal::Private),
    ("172.16.0.0/12", Refusal::Private),
    ("192.168.0.0/16", Refusal::Private),
    ("100.64.0.0/10", Refusal::Private),
    ("0.0.0.0/8", Refusal::NotUnicast),
    ("224.0.0.0/4", Refusal::NotUnicast),
    ("240.0.0.0/4", Refusal::NotUnicast),
];

/// IPv6 ranges the relay refuses by default, and why.
const V6: &[(&str, Refusal)] = &[
    ("::1/128", Refusal::Loopback),
    ("::/128", Refusal::NotUnicast),
    ("fe80::/10", Refusal::LinkLocal),
    ("fec0::/10", Refusal::SiteLocal),
    ("fc00::/7", Refusal::UniqueLocal),
    ("64:ff9b:1::/48", Refusal::Private),
    ("ff00::/8", Refusal::NotUnicast),
];

/// IPv6 prefixes whose packets end at an IPv4 address they carry: the prefix, the bit at which
/// the IPv4 address starts, and whether it is stored inverted (Teredo).
const CARRIERS: &[(&str, u32, bool)] = &[
    ("::/96", 96, false),        // IPv4-compatible (RFC 4291 §2.5.5.1)
    ("64:ff9b::/96", 96, false), // NAT64 well-known prefix (RFC 6052)
    ("2002::/16", 16, false),    // 6to4 (RFC 3056)
    ("2001::/32", 96, true),     // Teredo (RFC 4380), the client's address inverted
];

/// `::` and `::1` are not IPv4-compatible addresses (RFC 4291).
const NOT_CARRIERS: &str = "::/127";

/// IPv4-mapped addresses are the IPv4 address itself.
const MAPPED: &str = "::ffff:0:0/96";

fn net(s: &str) -> IpNet {
    s.parse().expect("a range of the reference tables")
}

fn refusal(ip: IpAddr) -> Option<Refusal> {
    let table = if ip.is_ipv4() { V4 } else { V6 };
    table
        .iter()
        .find(|(range, _)| net(range).contains(&ip))
        .map(|(_, why)| *why)
}

fn bits(a: Ipv6Addr) -> u128 {
    u128::from_be_bytes(a.octets())
}

fn carried(a: Ipv6Addr) -> Option<Ipv4Addr> {
    let ip = IpAddr::V6(a);
    if net(NOT_CARRIERS).contains(&ip) {
        return None;
    }
    let (_, at, inverted) = CARRIERS.iter().find(|(p, _, _)| net(p).contains(&ip))?;
    let v4 = (bits(a) >> (96 - at)) as u32;
    Some(Ipv4Addr::from(if *inverted { !v4 } else { v4 }))
}

/// What the policy should answer for `ip` with `allow` and the host's `is_own`: `Err` with the
/// reason and the IPv4 address inside that decided, if any.
pub fn check(
    ip: IpAddr,
    allow: &[IpNet],
    mut is_own: impl FnMut(IpAddr) -> Option<bool>,
) -> Result<(), (Refusal, Option<Ipv4Addr>)> {
    let ip = match ip {
        IpAddr::V6(a) if net(MAPPED).contains(&ip) => IpAddr::V4(Ipv4Addr::from(bits(a) as u32)),
        other => other,
    };
    let inside = match ip {
        IpAddr::V6(a) => carried(a),
        IpAddr::V4(_) => None,
    };
    let allowed = |a: IpAddr| allow.iter().any(|n| n.contains(&a));
    if allowed(ip) || inside.is_some_and(|v4| allowed(v4.into())) {
        return Ok(());
    }
    if let Some(why) = refusal(ip) {
        return Err((why, None));
    }
    if let Some(v4) = inside {
        if let Some(why) = refusal(v4.into()) {
            return Err((why, Some(v4)));
        }
    }
    let mut ask = vec![(ip, None)];
    ask.extend(inside.map(|v4| (IpAddr::V4(v4), Some(v4))));
    for (a, by) in ask {
        match is_own(a) {
            Some(false) => {}
            Some(true) => return Err((Refusal::Own, by)),
            None => return Err((Refusal::OwnUnknown, by)),
        }
    }
    Ok(())
}
