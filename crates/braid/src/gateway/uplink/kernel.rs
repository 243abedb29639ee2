//! Per-uplink kernel state: a routing table with a default route via the uplink and a route to
//! the relay, an `ip rule` from the uplink's address to that table, and an MPTCP `subflow`
//! endpoint on the address; plus MPTCP limits big enough for every uplink.
//!
//! With this in place the kernel's path manager opens one subflow per uplink, and each subflow's
//! packets leave through its own uplink because its source address selects its table. Every
//! route and rule carries braid's routing protocol number, so leftovers of a crashed run are
//! found and removed at the next start, and nothing of anyone else's is ever touched.
//!
//! [`reconcile`] is idempotent: it compares what one uplink should have now (from the kernel's
//! own view of the interface, and the uplink's health) with what braid installed for it, and
//! adds or removes only the difference. The uplink manager calls it after every relevant kernel
//! event and every few seconds.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use braid_sys::mptcp::endpoint::EndpointFlags;
use braid_sys::mptcp::limits::Limits;
use braid_sys::mptcp::pm::{MptcpPm, PmError};
use braid_sys::netlink::{NetlinkError, Rtnl};
use braid_sys::route::RouteSpec;
use braid_sys::rule::RuleSpec;
use tracing::{info, warn};

use crate::config::gateway::Uplink;

/// The routing protocol number on braid's routes and rules (`ip route show proto 212`).
pub const RTPROT_BRAID: u8 = 212;

/// Why per-uplink state could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum UplinkError {
    /// A route, rule or address request failed.
    #[error("uplink {uplink}: {source}")]
    Netlink {
        /// The uplink's name.
        uplink: String,
        /// The netlink error, with errno and fix.
        #[source]
        source: NetlinkError,
    },
    /// The MPTCP path manager refused a request.
    #[error("MPTCP path manager: {0}")]
    Pm(#[from] PmError),
    /// The health settings are not usable.
    #[error("{0}")]
    Health(#[from] braid_proto::health::ConfigError),
    /// The uplink manager stopped before it was asked to.
    #[error(
        "the uplink manager stopped unexpectedly; this is a bug, please report it with the log"
    )]
    Stopped,
    /// The uplink manager crashed.
    #[error("the uplink manager crashed ({0}); this is a bug, please report it with the log")]
    Panicked(String),
}

/// What the kernel says about an uplink's interface right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovered {
    /// Interface index.
    pub ifindex: u32,
    /// Administratively up with carrier.
    pub link_up: bool,
    /// The source address subflows use (same family as the relay), if any.
    pub addr: Option<IpAddr>,
    /// Next hop, if the link has one.
    pub gateway: Option<IpAddr>,
}

/// What braid installed for one uplink, so it can be changed or removed exactly.
#[derive(Debug, Default, Clone)]
pub struct Installed {
    routes: Vec<RouteSpec>,
    rule: Option<RuleSpec>,
    endpoint: Option<(IpAddr, u8, EndpointFlags)>,
}

impl Installed {
    /// The address of the installed endpoint, if any.
    pub fn endpoint_addr(&self) -> Option<IpAddr> {
        self.endpoint.map(|(a, _, _)| a)
    }
}

fn host_len(ip: IpAddr) -> u8 {
    if ip.is_ipv4() {
        32
    } else {
        128
    }
}

fn unspecified_like(ip: IpAddr) -> IpAddr {
    if ip.is_ipv4() {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    } else {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    }
}

/// Reads the uplink's interface, address (of the relay's family) and next hop from the kernel.
/// `None` when the interface does not exist.
pub async fn discover(
    rtnl: &Rtnl,
    u: &Uplink,
    relay: IpAddr,
) -> Result<Option<Discovered>, NetlinkError> {
    let Some(link) = rtnl.link_by_name(&u.interface).await? else {
        return Ok(None);
    };
    let addrs = rtnl.addresses(link.index).await?;
    let addr = addrs
        .iter()
        .map(|a| a.addr)
        .find(|a| a.is_ipv4() == relay.is_ipv4());
    let gateway = rtnl
        .uplink_gateway(link.index)
        .await?
        .filter(|g| g.is_ipv4() == relay.is_ipv4());
    Ok(Some(Discovered {
        ifindex: link.index,
        link_up: link.is_up(),
        addr,
        gateway,
    }))
}

/// Brings one uplink's kernel state to what it should be: routes and rule whenever the link is
/// up with an address, and the endpoint only while `want_endpoint` (the uplink is healthy).
/// Returns whether anything changed.
pub async fn reconcile(
    rtnl: &Rtnl,
    pm: &MptcpPm,
    u: &Uplink,
    relay: IpAddr,
    now: Option<&Discovered>,
    want_endpoint: bool,
    inst: &mut Installed,
) -> Result<bool, UplinkError> {
    let nl = |source| UplinkError::Netlink {
        uplink: u.name.clone(),
        source,
    };
    let usable = now
        .filter(|d| d.link_up)
        .and_then(|d| d.addr.map(|a| (d, a)));
    let mut changed = false;

    // Routes: the kernel flushes them when the link goes down, so they are re-ensured every time.
    let want_routes: Vec<RouteSpec> = match usable {
        Some((d, addr)) => [(unspecified_like(relay), 0), (relay, host_len(relay))]
            .into_iter()
            .map(|(dst, dst_len)| RouteSpec {
                table: u.table,
                dst,
                dst_len,
                gateway: d.gateway,
                oif: d.ifindex,
                src: Some(addr),
                protocol: RTPROT_BRAID,
            })
            .collect(),
        None => Vec::new(),
    };
    for old in inst.routes.iter().filter(|r| !want_routes.contains(r)) {
        rtnl.delete_route(old).await.map_err(nl)?;
        changed = true;
    }
    for r in &want_routes {
        rtnl.ensure_route(r).await.map_err(nl)?;
    }
    if inst.routes != want_routes {
        changed = true;
    }
    inst.routes = want_routes;

    // The rule follows the address (kept while the link is down: it references no device).
    let want_rule = now.and_then(|d| d.addr).map(|a| RuleSpec {
        from: a,
        from_len: host_len(a),
        table: u.table,
        priority: u.rule_priority,
        protocol: RTPROT_BRAID,
    });
    if inst.rule != want_rule {
        if let Some(old) = &inst.rule {
            rtnl.delete_rule(old).await.map_err(nl)?;
        }
        changed = true;
    }
    if let Some(r) = &want_rule {
        rtnl.ensure_rule(r).await.map_err(nl)?;
    }
    inst.rule = want_rule;

    // The endpoint: present only while the uplink is usable and healthy.
    let flags = EndpointFlags::SUBFLOW.with(EndpointFlags::BACKUP, u.backup);
    // Someone may have deleted or changed our endpoint behind our back (`ip mptcp endpoint
    // delete`): then it is missing, and re-added below.
    if let Some((a, id, _)) = inst.endpoint {
        if pm.endpoint_by_addr(a).await?.is_none_or(|e| e.id != id) {
            warn!(
                "uplink {}: its MPTCP endpoint {a} was removed by someone else; adding it again",
                u.name
            );
            inst.endpoint = None;
        }
    }
    let want_ep = usable
        .filter(|_| want_endpoint)
        .map(|(d, a)| (a, d.ifindex));
    match (inst.endpoint, want_ep) {
        (Some((a, _, f)), Some((wa, _))) if a == wa && f == flags => {}
        (cur, want) => {
            if let Some((_, id, _)) = cur {
                pm.delete_endpoint(id).await?;
                changed = true;
            }
            inst.endpoint = None;
            if let Some((addr, ifindex)) = want {
                let (ep, _) = pm.ensure_endpoint(addr, Some(ifindex), flags).await?;
                inst.endpoint = Some((addr, ep.id, flags));
                changed = true;
            }
        }
    }
    Ok(changed)
}

/// Removes everything braid installed for one uplink, logging (not failing on) what the kernel
/// refuses, because shutdown must go on removing the rest.
pub async fn remove(rtnl: &Rtnl, pm: &MptcpPm, name: &str, inst: Installed) {
    if let Some((addr, id, _)) = inst.endpoint {
        if let Err(e) = pm.delete_endpoint(id).await {
            warn!("uplink {name}: removing MPTCP endpoint {addr} (id {id}): {e}");
        }
    }
    if let Some(r) = &inst.rule {
        if let Err(e) = rtnl.delete_rule(r).await {
            warn!("uplink {name}: removing rule {r}: {e}");
        }
    }
    for r in &inst.routes {
        if let Err(e) = rtnl.delete_route(r).await {
            warn!("uplink {name}: removing route {r}: {e}");
        }
    }
}

/// Removes routes and rules left by an earlier braid run that did not exit cleanly.
pub async fn remove_leftovers(rtnl: &Rtnl) {
    let rules = rtnl
        .delete_rules_by_protocol(RTPROT_BRAID)
        .await
        .unwrap_or(0);
    let routes = rtnl
        .delete_routes_by_protocol(None, RTPROT_BRAID)
        .await
        .unwrap_or(0);
    if rules + routes > 0 {
        info!("removed {rules} rule(s) and {routes} route(s) left by an earlier braid run");
    }
}

/// Raises the MPTCP limits to fit `n` uplinks; returns the limits to restore on exit, if changed.
pub async fn ensure_limits(pm: &MptcpPm, n: u32) -> Result<Option<Limits>, UplinkError> {
    let before = pm.limits().await?;
    let want = Limits {
        subflows: before.subflows.max(n),
        add_addr_accepted: before.add_addr_accepted.max(n),
    };
    if want == before {
        return Ok(None);
    }
    pm.set_limits(want).await?;
    info!("MPTCP limits: {before} → {want}");
    Ok(Some(before))
}
