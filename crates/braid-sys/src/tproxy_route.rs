//! The policy routing TPROXY needs: packets the capture table marked are delivered locally, to
//! the transparent socket, instead of being forwarded. For each address family:
//!
//! ```text
//! ip rule add fwmark MARK lookup TABLE pref PRIORITY proto P
//! ip route add local default dev lo table TABLE proto P        (type local, scope host)
//! ```
//!
//! Both carry braid's protocol number, so a crashed run's leftovers are removed at the next
//! start with the uplinks' ones (`delete_rules_by_protocol`, `delete_routes_by_protocol`), and
//! [`TproxyRouting`] is plain data (serde) for a record of what braid installed.

use std::fmt;

use netlink_packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_REPLACE, NLM_F_REQUEST};
use netlink_packet_route::route::{
    RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use serde::{Deserialize, Serialize};

use crate::netlink::{is_errno, NetlinkError, Rtnl};

/// The loopback interface's index, in every network namespace.
const LOOPBACK_IFINDEX: u32 = 1;

/// The rule and local route of one TPROXY mark, in both address families.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TproxyRouting {
    /// The packet mark the capture table sets (`meta mark set MARK`).
    pub mark: u32,
    /// The routing table holding the local default route.
    pub table: u32,
    /// The rule's priority (`pref`).
    pub priority: u32,
    /// `proto` number that marks the rule and route as braid's.
    pub protocol: u8,
}

impl fmt::Display for TproxyRouting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "fwmark {:#x} lookup {} pref {} + local default dev lo table {} (proto {})",
            self.mark, self.table, self.priority, self.table, self.protocol
        )
    }
}

const FAMILIES: [AddressFamily; 2] = [AddressFamily::Inet, AddressFamily::Inet6];

impl TproxyRouting {
    fn rule(&self, family: AddressFamily) -> RuleMessage {
        let mut msg = RuleMessage::default();
        msg.header.family = family;
        msg.header.table = u8::try_from(self.table).unwrap_or(RouteHeader::RT_TABLE_UNSPEC);
        msg.header.action = RuleAction::ToTable;
        msg.attributes = vec![
            RuleAttribute::FwMark(self.mark),
            RuleAttribute::FwMask(u32::MAX),
            RuleAttribute::Table(self.table),
            RuleAttribute::Priority(self.priority),
            RuleAttribute::Protocol(RouteProtocol::from(self.protocol)),
        ];
        msg
    }

    fn route(&self, family: AddressFamily) -> RouteMessage {
        let mut msg = RouteMessage::default();
        let h = &mut msg.header;
        h.address_family = family;
        h.destination_prefix_length = 0;
        h.table = u8::try_from(self.table).unwrap_or(RouteHeader::RT_TABLE_UNSPEC);
        h.protocol = RouteProtocol::from(self.protocol);
        h.scope = RouteScope::Host;
        h.kind = RouteType::Local;
        msg.attributes = vec![
            RouteAttribute::Table(self.table),
            RouteAttribute::Oif(LOOPBACK_IFINDEX),
        ];
        msg
    }

    fn check(&self) -> Result<(), NetlinkError> {
        if self.table == 0 || self.mark == 0 {
            return Err(NetlinkError::InvalidSpec {
                what: "TPROXY routing",
                reason: "mark and table must be non-zero".into(),
            });
        }
        Ok(())
    }

    /// Installs the rule and the local route for IPv4 and IPv6; running it twice changes
    /// nothing. A kernel without IPv6, or with IPv6 disabled on `lo`, gets the IPv4 half only.
    pub async fn ensure(&self, rtnl: &Rtnl) -> Result<(), NetlinkError> {
        self.check()?;
        for family in FAMILIES {
            let route = rtnl
                .request(
                    RouteNetlinkMessage::NewRoute(self.route(family)),
                    NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
                    || {
                        format!(
                            "ip -f {family:?} route replace local default dev lo table {} proto {}",
                            self.table, self.protocol
                        )
                    },
                )
                .await;
            match route {
                // No IPv6 in this kernel, or IPv6 disabled on `lo` (disable_ipv6=1): there is
                // no IPv6 to capture either.
                Err(e)
                    if family == AddressFamily::Inet6
                        && is_errno(&e, &[libc::EAFNOSUPPORT, libc::EACCES]) =>
                {
                    continue
                }
                other => other?,
            };
            if !self.rule_present(rtnl, family).await? {
                rtnl.request(
                    RouteNetlinkMessage::NewRule(self.rule(family)),
                    NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE,
                    || format!("ip -f {family:?} rule add {self}"),
                )
                .await?;
            }
        }
        Ok(())
    }

    /// Removes the rules and routes (missing ones are fine).
    pub async fn remove(&self, rtnl: &Rtnl) -> Result<(), NetlinkError> {
        self.check()?;
        let mut first_error = None;
        for family in FAMILIES {
            let rule = rtnl
                .request(
                    RouteNetlinkMessage::DelRule(self.rule(family)),
                    NLM_F_REQUEST | NLM_F_ACK,
                    || format!("ip -f {family:?} rule del {self}"),
                )
                .await;
            let mut route = self.route(family);
            route.header.scope = RouteScope::NoWhere;
            let route = rtnl
                .request(
                    RouteNetlinkMessage::DelRoute(route),
                    NLM_F_REQUEST | NLM_F_ACK,
                    || {
                        format!(
                            "ip -f {family:?} route del local default table {}",
                            self.table
                        )
                    },
                )
                .await;
            for r in [rule.map(drop), route.map(drop)] {
                match r {
                    Err(e) if is_errno(&e, &[libc::ENOENT, libc::ESRCH, libc::EAFNOSUPPORT]) => {}
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                    Ok(()) => {}
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Whether the kernel has this rule for `family` (same mark, table, priority, protocol).
    async fn rule_present(&self, rtnl: &Rtnl, family: AddressFamily) -> Result<bool, NetlinkError> {
        let want = self.rule(family).attributes;
        Ok(rtnl.dump_rules().await?.iter().any(|r| {
            r.header.family == family
                && want
                    .iter()
                    .filter(|a| !matches!(a, RuleAttribute::FwMask(_)))
                    .all(|a| r.attributes.contains(a))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_carry_mark_table_protocol_and_a_local_route_via_loopback() {
        let t = TproxyRouting {
            mark: 0xb1d,
            table: 100,
            priority: 990,
            protocol: 212,
        };
        let rule = t.rule(AddressFamily::Inet6);
        assert!(rule.attributes.contains(&RuleAttribute::FwMark(0xb1d)));
        assert!(rule.attributes.contains(&RuleAttribute::Table(100)));
        let route = t.route(AddressFamily::Inet);
        assert_eq!(route.header.kind, RouteType::Local);
        assert_eq!(route.header.scope, RouteScope::Host);
        assert!(route.attributes.contains(&RouteAttribute::Oif(1)));
        assert!(t.to_string().contains("fwmark 0xb1d lookup 100"));
    }
}
