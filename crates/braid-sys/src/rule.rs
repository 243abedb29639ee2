//! Policy-routing rules: `from ADDR lookup TABLE` per uplink
//! (`ip rule add from A table T pref P proto P`).

use std::fmt;
use std::net::IpAddr;

use netlink_packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST};
use netlink_packet_route::{
    route::{RouteHeader, RouteProtocol},
    rule::{RuleAction, RuleAttribute, RuleMessage},
    AddressFamily, RouteNetlinkMessage,
};

use crate::netlink::{is_errno, NetlinkError, Rtnl};
use crate::route::check_prefix;

/// A source-address rule: packets from `from/from_len` look up `table`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RuleSpec {
    /// Source network address (host bits must be zero); `0.0.0.0`/`::` with
    /// `from_len` 0 means "from all".
    pub from: IpAddr,
    /// Source prefix length (32/128 for one address).
    pub from_len: u8,
    /// Routing table to look up, 1..=2^32-1.
    pub table: u32,
    /// Rule priority (`pref`); lower runs first.
    pub priority: u32,
    /// `proto` number that marks the rule's owner.
    pub protocol: u8,
}

impl fmt::Display for RuleSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.from_len == 0 {
            write!(f, "from all")?;
            if self.from.is_ipv6() {
                write!(f, " (IPv6)")?;
            }
        } else {
            write!(f, "from {}/{}", self.from, self.from_len)?;
        }
        write!(
            f,
            " table {} pref {} proto {}",
            self.table, self.priority, self.protocol
        )
    }
}

impl RuleSpec {
    fn validate(&self) -> Result<(), NetlinkError> {
        check_prefix("rule", &self.from, self.from_len)?;
        if self.table == 0 {
            return Err(NetlinkError::InvalidSpec {
                what: "rule",
                reason: "table 0 is RT_TABLE_UNSPEC: pick a table id".into(),
            });
        }
        Ok(())
    }

    fn to_message(&self) -> RuleMessage {
        let mut msg = RuleMessage::default();
        let h = &mut msg.header;
        h.family = match self.from {
            IpAddr::V4(_) => AddressFamily::Inet,
            IpAddr::V6(_) => AddressFamily::Inet6,
        };
        h.src_len = self.from_len;
        h.table = u8::try_from(self.table).unwrap_or(RouteHeader::RT_TABLE_UNSPEC);
        h.action = RuleAction::ToTable;
        let a = &mut msg.attributes;
        if self.from_len > 0 {
            a.push(RuleAttribute::Source(self.from));
        }
        a.push(RuleAttribute::Table(self.table));
        a.push(RuleAttribute::Priority(self.priority));
        a.push(RuleAttribute::Protocol(RouteProtocol::from(self.protocol)));
        msg
    }

    /// The spec of a dumped rule, or `None` if it uses anything a `RuleSpec`
    /// cannot express (fwmark, interfaces, destination, ports, goto, …).
    fn from_message(msg: &RuleMessage) -> Option<RuleSpec> {
        let h = &msg.header;
        if h.action != RuleAction::ToTable || h.dst_len != 0 || h.tos != 0 {
            return None;
        }
        let mut spec = RuleSpec {
            from: match h.family {
                AddressFamily::Inet => IpAddr::from([0u8; 4]),
                AddressFamily::Inet6 => IpAddr::from([0u8; 16]),
                _ => return None,
            },
            from_len: h.src_len,
            table: h.table.into(),
            priority: 0,
            protocol: 0,
        };
        for attr in &msg.attributes {
            match attr {
                RuleAttribute::Source(a) => spec.from = *a,
                RuleAttribute::Table(t) => spec.table = *t,
                RuleAttribute::Priority(p) => spec.priority = *p,
                RuleAttribute::Protocol(p) => spec.protocol = (*p).into(),
                // Kernel-filled defaults, no selectors.
                RuleAttribute::SuppressPrefixLen(u32::MAX)
                | RuleAttribute::SuppressIfGroup(u32::MAX) => {}
                RuleAttribute::FwMask(0) | RuleAttribute::FwMark(0) => {}
                _ => return None,
            }
        }
        Some(spec)
    }
}

/// The table a rule looks up (`FRA_TABLE` when set, else the header's 8-bit table).
fn table_of_rule(msg: &RuleMessage) -> u32 {
    msg.attributes
        .iter()
        .find_map(|a| match a {
            RuleAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(msg.header.table.into())
}

impl Rtnl {
    /// Adds `spec` unless an identical rule exists; returns whether it added
    /// one. Running it twice leaves one rule.
    /// Like `ip rule add from A/LEN table T pref P proto P` guarded by `ip rule show`.
    pub async fn ensure_rule(&self, spec: &RuleSpec) -> Result<bool, NetlinkError> {
        spec.validate()?;
        if self.rules().await?.contains(spec) {
            return Ok(false);
        }
        match self
            .request(
                RouteNetlinkMessage::NewRule(spec.to_message()),
                NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
                || format!("ip rule add {spec}"),
            )
            .await
        {
            Ok(_) => Ok(true),
            // Added by someone else between our dump and our add.
            Err(e) if is_errno(&e, &[libc::EEXIST]) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Deletes the rule matching `spec` (protocol included); returns whether
    /// one was there. Like `ip rule del from A/LEN table T pref P proto P`.
    pub async fn delete_rule(&self, spec: &RuleSpec) -> Result<bool, NetlinkError> {
        spec.validate()?;
        self.delete_rule_message(spec.to_message(), || format!("ip rule del {spec}"))
            .await
    }

    /// Deletes every IPv4 and IPv6 rule with protocol `protocol`; returns how
    /// many it deleted. Protocol 0 is refused.
    /// Like `ip rule flush proto P` plus `ip -6 rule flush proto P`.
    pub async fn delete_rules_by_protocol(&self, protocol: u8) -> Result<usize, NetlinkError> {
        self.delete_rules_by_protocol_in(protocol, None).await
    }

    /// Like [`Rtnl::delete_rules_by_protocol`], for rules that look up one of `tables` only
    /// (whatever else they select on: source, fwmark…). Like `ip rule flush proto P table T`.
    pub async fn delete_rules_by_protocol_in(
        &self,
        protocol: u8,
        tables: Option<&[u32]>,
    ) -> Result<usize, NetlinkError> {
        if protocol == 0 {
            return Err(NetlinkError::InvalidSpec {
                what: "rule",
                reason: "protocol 0 (unspec) would match rules braid does not own".into(),
            });
        }
        let mut deleted = 0;
        for msg in self.dump_rules().await? {
            let proto = msg.attributes.iter().find_map(|a| match a {
                RuleAttribute::Protocol(p) => Some(u8::from(*p)),
                _ => None,
            });
            if proto != Some(protocol) || tables.is_some_and(|t| !t.contains(&table_of_rule(&msg)))
            {
                continue;
            }
            let what = RuleSpec::from_message(&msg).map_or_else(
                || format!("proto {protocol} ({:?})", msg.header),
                |s| s.to_string(),
            );
            if self
                .delete_rule_message(msg, || format!("ip rule del {what}"))
                .await?
            {
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    /// The IPv4 and IPv6 rules that a [`RuleSpec`] can express (source,
    /// table, priority, protocol), including the kernel's default ones.
    /// Like `ip rule show` plus `ip -6 rule show`.
    pub async fn rules(&self) -> Result<Vec<RuleSpec>, NetlinkError> {
        Ok(self
            .dump_rules()
            .await?
            .iter()
            .filter_map(RuleSpec::from_message)
            .collect())
    }

    async fn delete_rule_message(
        &self,
        msg: RuleMessage,
        request: impl FnOnce() -> String,
    ) -> Result<bool, NetlinkError> {
        match self
            .request(
                RouteNetlinkMessage::DelRule(msg),
                NLM_F_REQUEST | NLM_F_ACK,
                request,
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_errno(&e, &[libc::ENOENT, libc::ESRCH]) => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub(crate) async fn dump_rules(&self) -> Result<Vec<RuleMessage>, NetlinkError> {
        let mut out = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut msg = RuleMessage::default();
            msg.header.family = family;
            let replies = match self
                .request(
                    RouteNetlinkMessage::GetRule(msg),
                    NLM_F_REQUEST | NLM_F_DUMP,
                    || format!("ip -f {family:?} rule show"),
                )
                .await
            {
                Ok(r) => r,
                Err(e) if family == AddressFamily::Inet6 && is_errno(&e, &[libc::EAFNOSUPPORT]) => {
                    continue
                }
                Err(e) => return Err(e),
            };
            out.extend(replies.into_iter().filter_map(|m| match m {
                RouteNetlinkMessage::NewRule(r) => Some(r),
                _ => None,
            }));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_round_trips_through_message() {
        for spec in [
            RuleSpec {
                from: "192.0.2.10".parse().unwrap(),
                from_len: 32,
                table: 101,
                priority: 1001,
                protocol: 250,
            },
            RuleSpec {
                from: "2001:db8::".parse().unwrap(),
                from_len: 64,
                table: 70_000,
                priority: 5,
                protocol: 251,
            },
        ] {
            assert_eq!(RuleSpec::from_message(&spec.to_message()), Some(spec));
        }
    }

    #[test]
    fn rule_with_fwmark_is_not_a_spec() {
        let mut msg = RuleSpec {
            from: "0.0.0.0".parse().unwrap(),
            from_len: 0,
            table: 100,
            priority: 1000,
            protocol: 4,
        }
        .to_message();
        msg.attributes.push(RuleAttribute::FwMark(0x10));
        assert_eq!(RuleSpec::from_message(&msg), None);
    }
}
