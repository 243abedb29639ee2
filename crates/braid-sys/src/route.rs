//! Routes: the per-uplink tables braid installs (`ip route replace … table T
//! proto P`), the uplink's gateway as the DHCP client left it, and cleanup of a
//! crashed run's leftovers by protocol number.

use std::fmt;
use std::net::IpAddr;

use netlink_packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REPLACE, NLM_F_REQUEST};
use netlink_packet_route::{
    route::{
        RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
        RouteType, RouteVia,
    },
    AddressFamily, RouteNetlinkMessage,
};

use crate::netlink::{is_errno, NetlinkError, Rtnl};

/// The main routing table (`RT_TABLE_MAIN`).
pub const TABLE_MAIN: u32 = 254;

/// One unicast route, as braid installs it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RouteSpec {
    /// Routing table, 1..=2^32-1 (254 is `main`).
    pub table: u32,
    /// Destination network address (host bits must be zero).
    pub dst: IpAddr,
    /// Destination prefix length; 0 is the default route.
    pub dst_len: u8,
    /// Next hop, or `None` for an on-link route.
    pub gateway: Option<IpAddr>,
    /// Output interface index; 0 leaves it to the kernel (needs a gateway).
    pub oif: u32,
    /// Preferred source address (`src`).
    pub src: Option<IpAddr>,
    /// `proto` number that marks the route's owner (braid uses its own).
    pub protocol: u8,
}

impl fmt::Display for RouteSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.dst_len == 0 {
            write!(f, "default")?;
            if self.dst.is_ipv6() {
                write!(f, " (IPv6)")?;
            }
        } else {
            write!(f, "{}/{}", self.dst, self.dst_len)?;
        }
        if let Some(gw) = self.gateway {
            write!(f, " via {gw}")?;
        }
        if self.oif != 0 {
            write!(f, " dev #{}", self.oif)?;
        }
        if let Some(src) = self.src {
            write!(f, " src {src}")?;
        }
        write!(f, " table {} proto {}", self.table, self.protocol)
    }
}

fn family_of(addr: &IpAddr) -> AddressFamily {
    match addr {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

/// True if `addr` has no bits set beyond its first `len` bits.
pub(crate) fn host_bits_clear(addr: &IpAddr, len: u8) -> bool {
    match addr {
        IpAddr::V4(a) => {
            let bits = u32::from(*a);
            len >= 32 || bits & (u32::MAX >> len) == 0
        }
        IpAddr::V6(a) => {
            let bits = u128::from(*a);
            len >= 128 || bits & (u128::MAX >> len) == 0
        }
    }
}

/// Checks that `addr/len` is a well-formed prefix for a `what`.
pub(crate) fn check_prefix(what: &'static str, addr: &IpAddr, len: u8) -> Result<(), NetlinkError> {
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if len > max {
        return Err(NetlinkError::InvalidSpec {
            what,
            reason: format!("prefix length {len} is longer than {max} for {addr}"),
        });
    }
    if !host_bits_clear(addr, len) {
        return Err(NetlinkError::InvalidSpec {
            what,
            reason: format!("{addr}/{len} has host bits set: use the network address"),
        });
    }
    Ok(())
}

impl RouteSpec {
    fn validate(&self) -> Result<(), NetlinkError> {
        let invalid = |reason: String| NetlinkError::InvalidSpec {
            what: "route",
            reason,
        };
        check_prefix("route", &self.dst, self.dst_len)?;
        if self.table == 0 {
            return Err(invalid(
                "table 0 is RT_TABLE_UNSPEC: pick a table id".into(),
            ));
        }
        for (name, addr) in [("gateway", self.gateway), ("src", self.src)] {
            if let Some(a) = addr {
                if a.is_ipv4() != self.dst.is_ipv4() {
                    return Err(invalid(format!(
                        "{name} {a} and destination {} are of different IP versions",
                        self.dst
                    )));
                }
            }
        }
        if self.gateway.is_none() && self.oif == 0 {
            return Err(invalid(format!(
                "{self}: needs a gateway or an output interface"
            )));
        }
        Ok(())
    }

    fn to_message(&self) -> RouteMessage {
        let mut msg = RouteMessage::default();
        let h = &mut msg.header;
        h.address_family = family_of(&self.dst);
        h.destination_prefix_length = self.dst_len;
        h.table = u8::try_from(self.table).unwrap_or(RouteHeader::RT_TABLE_UNSPEC);
        h.protocol = RouteProtocol::from(self.protocol);
        h.scope = if self.gateway.is_none() && self.dst.is_ipv4() {
            RouteScope::Link
        } else {
            RouteScope::Universe
        };
        h.kind = RouteType::Unicast;
        let a = &mut msg.attributes;
        a.push(RouteAttribute::Table(self.table));
        if self.dst_len > 0 {
            a.push(RouteAttribute::Destination(self.dst.into()));
        }
        if let Some(gw) = self.gateway {
            a.push(RouteAttribute::Gateway(gw.into()));
        }
        if self.oif != 0 {
            a.push(RouteAttribute::Oif(self.oif));
        }
        if let Some(src) = self.src {
            a.push(RouteAttribute::PrefSource(src.into()));
        }
        msg
    }

    /// The spec of a dumped unicast route (`None` for other route types).
    fn from_message(msg: &RouteMessage) -> Option<RouteSpec> {
        if msg.header.kind != RouteType::Unicast {
            return None;
        }
        let unspecified = match msg.header.address_family {
            AddressFamily::Inet => IpAddr::from([0u8; 4]),
            AddressFamily::Inet6 => IpAddr::from([0u8; 16]),
            _ => return None,
        };
        let mut spec = RouteSpec {
            table: table_of(msg),
            dst: unspecified,
            dst_len: msg.header.destination_prefix_length,
            gateway: None,
            oif: 0,
            src: None,
            protocol: msg.header.protocol.into(),
        };
        for attr in &msg.attributes {
            match attr {
                RouteAttribute::Destination(a) => spec.dst = ip_of(a)?,
                RouteAttribute::Gateway(a) => spec.gateway = ip_of(a),
                RouteAttribute::Oif(i) => spec.oif = *i,
                RouteAttribute::PrefSource(a) => spec.src = ip_of(a),
                _ => {}
            }
        }
        Some(spec)
    }
}

fn ip_of(addr: &RouteAddress) -> Option<IpAddr> {
    match addr {
        RouteAddress::Inet(a) => Some((*a).into()),
        RouteAddress::Inet6(a) => Some((*a).into()),
        _ => None,
    }
}

fn table_of(msg: &RouteMessage) -> u32 {
    msg.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(msg.header.table.into())
}

fn metric_of(msg: &RouteMessage) -> u32 {
    msg.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Priority(p) => Some(*p),
            _ => None,
        })
        .unwrap_or(0)
}

/// Gateways of `msg` that leave through `ifindex` (single or multipath).
fn gateways_via(msg: &RouteMessage, ifindex: u32) -> Vec<IpAddr> {
    let gateway = |attrs: &[RouteAttribute]| {
        attrs.iter().find_map(|a| match a {
            RouteAttribute::Gateway(g) => ip_of(g),
            RouteAttribute::Via(RouteVia::Inet(a)) => Some((*a).into()),
            RouteAttribute::Via(RouteVia::Inet6(a)) => Some((*a).into()),
            _ => None,
        })
    };
    let mut out = Vec::new();
    let oif = msg.attributes.iter().find_map(|a| match a {
        RouteAttribute::Oif(i) => Some(*i),
        _ => None,
    });
    if oif == Some(ifindex) {
        out.extend(gateway(&msg.attributes));
    }
    for attr in &msg.attributes {
        if let RouteAttribute::MultiPath(hops) = attr {
            for hop in hops.iter().filter(|h| h.interface_index == ifindex) {
                out.extend(gateway(&hop.attributes));
            }
        }
    }
    out
}

/// The attributes that identify a dumped route for `RTM_DELROUTE`.
fn delete_message_for(msg: &RouteMessage) -> RouteMessage {
    let mut del = RouteMessage::default();
    del.header = msg.header.clone();
    del.attributes = msg
        .attributes
        .iter()
        .filter(|a| {
            matches!(
                a,
                RouteAttribute::Table(_)
                    | RouteAttribute::Destination(_)
                    | RouteAttribute::Source(_)
                    | RouteAttribute::Gateway(_)
                    | RouteAttribute::Via(_)
                    | RouteAttribute::Oif(_)
                    | RouteAttribute::Priority(_)
                    | RouteAttribute::PrefSource(_)
                    | RouteAttribute::MultiPath(_)
            )
        })
        .cloned()
        .collect();
    del
}

impl Rtnl {
    /// Installs `spec`, replacing a route to the same destination (and
    /// metric) in the same table. Idempotent.
    /// Like `ip route replace DST/LEN [via GW] [dev DEV] [src SRC] table T proto P`.
    pub async fn ensure_route(&self, spec: &RouteSpec) -> Result<(), NetlinkError> {
        spec.validate()?;
        self.request(
            RouteNetlinkMessage::NewRoute(spec.to_message()),
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
            || format!("ip route replace {spec}"),
        )
        .await?;
        Ok(())
    }

    /// Deletes the route matching `spec` (protocol included); returns whether
    /// one was there. A missing route is not an error.
    /// Like `ip route del DST/LEN [via GW] [dev DEV] table T proto P`.
    pub async fn delete_route(&self, spec: &RouteSpec) -> Result<bool, NetlinkError> {
        spec.validate()?;
        let mut msg = spec.to_message();
        // The kernel matches the scope too; leave it open.
        msg.header.scope = RouteScope::NoWhere;
        match self
            .request(
                RouteNetlinkMessage::DelRoute(msg),
                NLM_F_REQUEST | NLM_F_ACK,
                || format!("ip route del {spec}"),
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_errno(&e, &[libc::ESRCH, libc::ENOENT]) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Deletes every IPv4 and IPv6 route with protocol `protocol`, in `table`
    /// or in all tables when `None`; returns how many it deleted. Used at
    /// startup to clear a crashed run's leftovers. Protocol 0 is refused.
    /// Like `ip route flush proto P table T` (`table all` for `None`), for both families.
    pub async fn delete_routes_by_protocol(
        &self,
        table: Option<u32>,
        protocol: u8,
    ) -> Result<usize, NetlinkError> {
        if protocol == 0 {
            return Err(NetlinkError::InvalidSpec {
                what: "route",
                reason: "protocol 0 (unspec) would match routes braid does not own".into(),
            });
        }
        let mut deleted = 0;
        for msg in self.dump_routes().await? {
            if u8::from(msg.header.protocol) != protocol
                || table.is_some_and(|t| t != table_of(&msg))
            {
                continue;
            }
            let result = self
                .request(
                    RouteNetlinkMessage::DelRoute(delete_message_for(&msg)),
                    NLM_F_REQUEST | NLM_F_ACK,
                    || {
                        let what = RouteSpec::from_message(&msg)
                            .map_or_else(|| format!("{:?}", msg.header), |s| s.to_string());
                        format!("ip route del {what}")
                    },
                )
                .await;
            match result {
                Ok(_) => deleted += 1,
                // Gone meanwhile (e.g. its interface went down): fine.
                Err(e) if is_errno(&e, &[libc::ESRCH, libc::ENOENT]) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(deleted)
    }

    /// The IPv4 and IPv6 unicast routes of `table`.
    /// Like `ip route show table T` plus `ip -6 route show table T`.
    pub async fn routes(&self, table: u32) -> Result<Vec<RouteSpec>, NetlinkError> {
        Ok(self
            .dump_routes()
            .await?
            .iter()
            .filter(|m| table_of(m) == table)
            .filter_map(RouteSpec::from_message)
            .collect())
    }

    /// The gateway of a main-table route that leaves through `ifindex`,
    /// preferring a default route (where DHCP clients put it), then IPv4, then
    /// the lowest metric. `None` if there is no such route.
    /// Like `ip route show table main dev DEV` and reading `via`.
    pub async fn uplink_gateway(&self, ifindex: u32) -> Result<Option<IpAddr>, NetlinkError> {
        self.uplink_gateway_where(ifindex, |_| true).await
    }

    /// Like [`Rtnl::uplink_gateway`], of one address family only (an IPv6 relay needs the
    /// uplink's IPv6 next hop even where it also has an IPv4 one).
    /// Like `ip -4|-6 route show table main dev DEV` and reading `via`.
    pub async fn uplink_gateway_of_family(
        &self,
        ifindex: u32,
        ipv4: bool,
    ) -> Result<Option<IpAddr>, NetlinkError> {
        let family = if ipv4 {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        };
        self.uplink_gateway_where(ifindex, |m| m.header.address_family == family)
            .await
    }

    async fn uplink_gateway_where(
        &self,
        ifindex: u32,
        keep: impl Fn(&RouteMessage) -> bool,
    ) -> Result<Option<IpAddr>, NetlinkError> {
        let mut best: Option<((bool, bool, u32), IpAddr)> = None;
        for msg in self.dump_routes().await? {
            if table_of(&msg) != TABLE_MAIN || msg.header.kind != RouteType::Unicast || !keep(&msg)
            {
                continue;
            }
            let key = (
                msg.header.destination_prefix_length != 0,
                msg.header.address_family == AddressFamily::Inet6,
                metric_of(&msg),
            );
            for gw in gateways_via(&msg, ifindex) {
                if best.as_ref().is_none_or(|(k, _)| key < *k) {
                    best = Some((key, gw));
                }
            }
        }
        Ok(best.map(|(_, gw)| gw))
    }

    /// All IPv4 and IPv6 routes of all tables. Like `ip route show table all`.
    async fn dump_routes(&self) -> Result<Vec<RouteMessage>, NetlinkError> {
        let mut out = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut msg = RouteMessage::default();
            msg.header.address_family = family;
            let replies = match self
                .request(
                    RouteNetlinkMessage::GetRoute(msg),
                    NLM_F_REQUEST | NLM_F_DUMP,
                    || format!("ip -f {family:?} route show table all"),
                )
                .await
            {
                Ok(r) => r,
                // IPv6 compiled out or disabled.
                Err(e) if family == AddressFamily::Inet6 && is_errno(&e, &[libc::EAFNOSUPPORT]) => {
                    continue
                }
                Err(e) => return Err(e),
            };
            out.extend(replies.into_iter().filter_map(|m| match m {
                RouteNetlinkMessage::NewRoute(r) => Some(r),
                _ => None,
            }));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> RouteSpec {
        RouteSpec {
            table: 101,
            dst: "0.0.0.0".parse().unwrap(),
            dst_len: 0,
            gateway: Some("192.0.2.1".parse().unwrap()),
            oif: 3,
            src: Some("192.0.2.10".parse().unwrap()),
            protocol: 250,
        }
    }

    #[test]
    fn spec_round_trips_through_message() {
        let s = spec();
        assert_eq!(RouteSpec::from_message(&s.to_message()), Some(s));
        let big = RouteSpec {
            table: 100_000,
            dst: "10.1.0.0".parse().unwrap(),
            dst_len: 16,
            gateway: None,
            ..spec()
        };
        let msg = big.to_message();
        assert_eq!(msg.header.table, RouteHeader::RT_TABLE_UNSPEC);
        assert_eq!(msg.header.scope, RouteScope::Link);
        assert_eq!(RouteSpec::from_message(&msg), Some(big));
    }

    #[test]
    fn spec_with_host_bits_or_mixed_families_is_rejected() {
        let bad = RouteSpec {
            dst: "10.0.0.1".parse().unwrap(),
            dst_len: 24,
            ..spec()
        };
        assert!(bad.validate().is_err());
        let mixed = RouteSpec {
            gateway: Some("2001:db8::1".parse().unwrap()),
            ..spec()
        };
        assert!(mixed.validate().is_err());
        let long = RouteSpec {
            dst_len: 33,
            ..spec()
        };
        assert!(long.validate().is_err());
        assert!(spec().validate().is_ok());
    }

    #[test]
    fn host_bits_are_checked_at_every_length() {
        assert!(host_bits_clear(&"0.0.0.0".parse().unwrap(), 0));
        assert!(!host_bits_clear(&"0.0.0.1".parse().unwrap(), 0));
        assert!(host_bits_clear(&"10.0.0.1".parse().unwrap(), 32));
        assert!(host_bits_clear(&"2001:db8::".parse().unwrap(), 32));
        assert!(!host_bits_clear(&"2001:db8::1".parse().unwrap(), 64));
    }
}
