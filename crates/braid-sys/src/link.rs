//! Network interfaces: name ↔ index and whether an uplink is up
//! (`ip link show`).

use netlink_packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST};
use netlink_packet_route::{
    link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage, State},
    RouteNetlinkMessage,
};

use crate::netlink::{is_errno, NetlinkError, Rtnl};

/// The longest interface name the kernel accepts (IFNAMSIZ - 1).
const IFNAME_MAX: usize = 15;

/// A Linux interface name, checked once where it enters braid (the config): 1–15 bytes of ASCII
/// letters, digits, `-`, `_` and `.`, and neither `.` nor `..`. Such a name is also one safe path
/// component (`/proc/sys/net/ipv4/conf/NAME`) and needs no quoting in nftables rules, so no
/// later user has to check it again.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IfName(String);

/// A string that cannot be an interface name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a valid Linux interface name (1–15 characters of letters, digits, '-', '_', '.'); fix: use the name `ip link` shows")]
pub struct BadIfName(pub String);

impl std::str::FromStr for IfName {
    type Err = BadIfName;
    fn from_str(s: &str) -> Result<IfName, BadIfName> {
        let ok = !s.is_empty()
            && s.len() <= IFNAME_MAX
            && s != "."
            && s != ".."
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if ok {
            Ok(IfName(s.to_string()))
        } else {
            Err(BadIfName(s.to_string()))
        }
    }
}

impl IfName {
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for IfName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for IfName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Bytes received and sent on interface `iface` since it appeared, from
/// `/sys/class/net/NAME/statistics/{rx,tx}_bytes` (like `ip -s link show dev NAME`). `None` when
/// the interface does not exist.
pub fn byte_counters(iface: &IfName) -> Option<(u64, u64)> {
    let read = |which: &str| -> Option<u64> {
        std::fs::read_to_string(format!("/sys/class/net/{iface}/statistics/{which}_bytes"))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    Some((read("rx")?, read("tx")?))
}

impl PartialEq<str> for IfName {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

/// One interface as `ip link show` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    /// Interface index.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// `IFF_UP`: administratively up (`ip link set dev X up`).
    pub admin_up: bool,
    /// `IFF_LOWER_UP`: the driver reports carrier.
    pub carrier: bool,
    /// RFC 2863 operational state (`state UP` in `ip link show`).
    pub oper_state: OperState,
}

/// RFC 2863 operational state of an interface (`IFLA_OPERSTATE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OperState {
    /// The driver does not track it (dummy, tun, many PPP and LTE devices).
    Unknown,
    /// Up and able to pass packets.
    Up,
    /// Down, dormant, testing, not present, or lower layer down.
    Down,
}

impl Link {
    /// True if the interface can pass packets: administratively up, with
    /// carrier, and an operational state of `UP` (or `UNKNOWN`, which drivers
    /// that do not track it report, e.g. dummy and many PPP/LTE devices).
    pub fn is_up(&self) -> bool {
        self.admin_up && self.carrier && self.oper_state != OperState::Down
    }

    fn from_message(msg: &LinkMessage) -> Link {
        let mut name = String::new();
        let mut oper_state = OperState::Unknown;
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(n) => name.clone_from(n),
                LinkAttribute::OperState(s) => {
                    oper_state = match s {
                        State::Up => OperState::Up,
                        State::Unknown => OperState::Unknown,
                        _ => OperState::Down,
                    }
                }
                _ => {}
            }
        }
        Link {
            index: msg.header.index,
            name,
            admin_up: msg.header.flags.contains(LinkFlags::Up),
            carrier: msg.header.flags.contains(LinkFlags::LowerUp),
            oper_state,
        }
    }
}

impl Rtnl {
    /// The index of interface `name`, or `None` if there is none.
    /// Like `ip link show dev NAME`.
    pub async fn link_index(&self, name: &str) -> Result<Option<u32>, NetlinkError> {
        Ok(self.link_by_name(name).await?.map(|l| l.index))
    }

    /// The interface called `name`, or `None`. Like `ip link show dev NAME`.
    pub async fn link_by_name(&self, name: &str) -> Result<Option<Link>, NetlinkError> {
        if name.is_empty() || name.len() > IFNAME_MAX {
            return Err(NetlinkError::InvalidLinkName { name: name.into() });
        }
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.into()));
        self.get_link(msg, || format!("ip link show dev {name}"))
            .await
    }

    /// The interface with index `ifindex`, or `None`.
    /// Like `ip link show` filtered to one index.
    pub async fn link(&self, ifindex: u32) -> Result<Option<Link>, NetlinkError> {
        let mut msg = LinkMessage::default();
        msg.header.index = ifindex;
        self.get_link(msg, || format!("ip link show (ifindex {ifindex})"))
            .await
    }

    /// The name of interface `ifindex`, or `None` if there is none.
    /// Like `ip link show` filtered to one index.
    pub async fn link_name(&self, ifindex: u32) -> Result<Option<String>, NetlinkError> {
        Ok(self.link(ifindex).await?.map(|l| l.name))
    }

    /// Whether interface `ifindex` can pass packets (see [`Link::is_up`]).
    /// A missing interface is [`NetlinkError::NoSuchLink`].
    /// Like `ip link show` and reading `UP,LOWER_UP` and `state`.
    pub async fn link_is_up(&self, ifindex: u32) -> Result<bool, NetlinkError> {
        match self.link(ifindex).await? {
            Some(link) => Ok(link.is_up()),
            None => Err(NetlinkError::NoSuchLink { ifindex }),
        }
    }

    /// All interfaces. Like `ip link show`.
    pub async fn links(&self) -> Result<Vec<Link>, NetlinkError> {
        let replies = self
            .request(
                RouteNetlinkMessage::GetLink(LinkMessage::default()),
                NLM_F_REQUEST | NLM_F_DUMP,
                || "ip link show".into(),
            )
            .await?;
        Ok(replies
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(Link::from_message(l)),
                _ => None,
            })
            .collect())
    }

    /// Creates a kernel WireGuard device `name` (down, no address). Like `ip link add NAME type
    /// wireguard`. Untested here: this machine's kernel has no WireGuard module.
    pub async fn add_wireguard_link(&self, name: &str) -> Result<(), NetlinkError> {
        if name.is_empty() || name.len() > IFNAME_MAX {
            return Err(NetlinkError::InvalidLinkName { name: name.into() });
        }
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.into()));
        msg.attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
                InfoKind::Wireguard,
            )]));
        self.request(
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
            || format!("ip link add {name} type wireguard"),
        )
        .await?;
        Ok(())
    }

    /// Deletes interface `name` if it exists; returns whether it did. Like `ip link del NAME`.
    pub async fn delete_link_by_name(&self, name: &str) -> Result<bool, NetlinkError> {
        let Some(link) = self.link_by_name(name).await? else {
            return Ok(false);
        };
        let mut msg = LinkMessage::default();
        msg.header.index = link.index;
        match self
            .request(
                RouteNetlinkMessage::DelLink(msg),
                NLM_F_REQUEST | NLM_F_ACK,
                || format!("ip link del {name}"),
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_errno(&e, &[libc::ENODEV]) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn get_link(
        &self,
        msg: LinkMessage,
        request: impl FnOnce() -> String,
    ) -> Result<Option<Link>, NetlinkError> {
        let replies = match self
            .request(RouteNetlinkMessage::GetLink(msg), NLM_F_REQUEST, request)
            .await
        {
            Ok(r) => r,
            Err(e) if is_errno(&e, &[libc::ENODEV]) => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(replies.iter().find_map(|m| match m {
            RouteNetlinkMessage::NewLink(l) => Some(Link::from_message(l)),
            _ => None,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifname_accepts_kernel_names_and_refuses_paths_and_long_names() {
        for ok in ["eth0", "wan-wifi", "wwan0.1", "br_lan", "a23456789012345"] {
            assert_eq!(
                ok.parse::<IfName>().map(|n| n.to_string()).as_deref(),
                Ok(ok)
            );
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a b",
            "a234567890123456",
            "eth0\n",
            "ä",
        ] {
            let e = bad.parse::<IfName>().unwrap_err();
            assert!(
                e.to_string().contains("fix: use the name `ip link` shows"),
                "{e}"
            );
        }
    }
}
