//! Discovering an uplink: what the kernel says about its interface right now (index, state,
//! address, next hop). The daemon, `braid doctor` and `braid speedtest` all read an uplink
//! through [`observe`], so they see it the same way.

use std::net::IpAddr;

use braid_sys::link::IfName;
use braid_sys::netlink::{NetlinkError, Rtnl};

/// What the kernel says about an uplink's interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// Interface index.
    pub ifindex: u32,
    /// Administratively up with carrier.
    pub link_up: bool,
    /// The source address subflows use (same family as the relay), if any.
    pub addr: Option<IpAddr>,
    /// Next hop (from the main table's routes via the interface), if the link has one.
    pub gateway: Option<IpAddr>,
}

impl Observed {
    /// The address, when the link is up and has one: the uplink can carry packets.
    pub fn usable_addr(&self) -> Option<IpAddr> {
        self.addr.filter(|_| self.link_up)
    }

    /// Why the uplink cannot carry packets, if it cannot.
    pub fn unusable_because(&self, iface: &IfName) -> Option<String> {
        match (self.addr, self.link_up) {
            (None, _) => Some(format!(
                "interface {iface} has no address of the relay's family; waiting for one (DHCP, modem)"
            )),
            (Some(_), false) => Some(format!("interface {iface} is down")),
            (Some(_), true) => None,
        }
    }
}

/// Reads interface `iface`: its index and state, its address of the relay's family, and its
/// next hop. `None` when the interface does not exist.
pub async fn observe(
    rtnl: &Rtnl,
    iface: &IfName,
    relay: IpAddr,
) -> Result<Option<Observed>, NetlinkError> {
    let Some(link) = rtnl.link_by_name(iface.as_str()).await? else {
        return Ok(None);
    };
    let addr = rtnl
        .addresses(link.index)
        .await?
        .iter()
        .map(|a| a.addr)
        .find(|a| a.is_ipv4() == relay.is_ipv4());
    let gateway = rtnl
        .uplink_gateway_of_family(link.index, relay.is_ipv4())
        .await?;
    Ok(Some(Observed {
        ifindex: link.index,
        link_up: link.is_up(),
        addr,
        gateway,
    }))
}
