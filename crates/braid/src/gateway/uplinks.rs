//! Per-uplink kernel state: a routing table with a default route via the uplink, an `ip rule`
//! from the uplink's address to that table, an MPTCP `subflow` endpoint on the address, and MPTCP
//! limits big enough for every uplink.
//!
//! With this in place the kernel's path manager opens one subflow per uplink, and each subflow's
//! packets leave through its own uplink because its source address selects its table. Every
//! route and rule carries braid's routing protocol number, so leftovers of a crashed run are
//! found and removed at the next start, and nothing of anyone else's is ever touched.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use braid_sys::mptcp::endpoint::EndpointFlags;
use braid_sys::mptcp::limits::Limits;
use braid_sys::mptcp::pm::{MptcpPm, PmError};
use braid_sys::netlink::{NetlinkError, Rtnl};
use braid_sys::route::RouteSpec;
use braid_sys::rule::RuleSpec;
use tracing::{info, warn};

use crate::config::gateway::{GatewayConfig, Uplink};

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
}

/// What one uplink looked like when its state was installed.
#[derive(Debug, Clone)]
pub struct UplinkState {
    /// Config name.
    pub name: String,
    /// Interface index.
    pub ifindex: u32,
    /// The source address subflows use.
    pub addr: IpAddr,
    /// Next hop, if the link has one.
    pub gateway: Option<IpAddr>,
}

/// Everything braid added, so it can be removed exactly.
#[derive(Debug, Default)]
pub struct Applied {
    /// Uplinks that are in use.
    pub uplinks: Vec<UplinkState>,
    routes: Vec<RouteSpec>,
    rules: Vec<RuleSpec>,
    endpoints_created: Vec<u8>,
    limits_before: Option<Limits>,
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

/// Installs the state for every usable uplink. An uplink whose interface or address is missing
/// is skipped with a warning (the others still bond); a kernel refusal rolls back and fails.
pub async fn apply(
    rtnl: &Rtnl,
    pm: &MptcpPm,
    cfg: &GatewayConfig,
    relay: SocketAddr,
) -> Result<Applied, UplinkError> {
    let mut applied = Applied::default();
    match install(rtnl, pm, cfg, relay, &mut applied).await {
        Ok(()) => Ok(applied),
        Err(e) => {
            remove(rtnl, pm, applied).await;
            Err(e)
        }
    }
}

async fn install(
    rtnl: &Rtnl,
    pm: &MptcpPm,
    cfg: &GatewayConfig,
    relay: SocketAddr,
    applied: &mut Applied,
) -> Result<(), UplinkError> {
    let stale_rules = rtnl
        .delete_rules_by_protocol(RTPROT_BRAID)
        .await
        .unwrap_or(0);
    let stale_routes = rtnl
        .delete_routes_by_protocol(None, RTPROT_BRAID)
        .await
        .unwrap_or(0);
    if stale_rules + stale_routes > 0 {
        info!("removed {stale_rules} rule(s) and {stale_routes} route(s) left by an earlier braid run");
    }
    for u in &cfg.uplinks {
        match discover(rtnl, u, relay.ip()).await {
            Ok(Some(state)) => install_one(rtnl, pm, u, state, relay.ip(), applied).await?,
            Ok(None) => {}
            Err(source) => {
                return Err(UplinkError::Netlink {
                    uplink: u.name.clone(),
                    source,
                })
            }
        }
    }
    let before = pm.limits().await?;
    let n = cfg.uplinks.len() as u32;
    let want = Limits {
        subflows: before.subflows.max(n),
        add_addr_accepted: before.add_addr_accepted.max(n),
    };
    if want != before {
        pm.set_limits(want).await?;
        applied.limits_before = Some(before);
        info!("MPTCP limits: {before} → {want}");
    }
    Ok(())
}

/// Reads the uplink's interface, address (of the relay's family) and next hop from the kernel.
async fn discover(
    rtnl: &Rtnl,
    u: &Uplink,
    relay: IpAddr,
) -> Result<Option<UplinkState>, NetlinkError> {
    let Some(ifindex) = rtnl.link_index(&u.interface).await? else {
        warn!("uplink {}: interface {} does not exist; skipping it (fix: check `interface`, or bring the link up)", u.name, u.interface);
        return Ok(None);
    };
    let addrs = rtnl.addresses(ifindex).await?;
    let Some(addr) = addrs
        .iter()
        .map(|a| a.addr)
        .find(|a| a.is_ipv4() == relay.is_ipv4())
    else {
        warn!(
            "uplink {}: interface {} has no {} address, so it cannot reach the relay {relay}; skipping it (fix: check the uplink's DHCP or modem)",
            u.name,
            u.interface,
            if relay.is_ipv4() { "IPv4" } else { "IPv6" }
        );
        return Ok(None);
    };
    let gateway = rtnl
        .uplink_gateway(ifindex)
        .await?
        .filter(|g| g.is_ipv4() == relay.is_ipv4());
    Ok(Some(UplinkState {
        name: u.name.clone(),
        ifindex,
        addr,
        gateway,
    }))
}

async fn install_one(
    rtnl: &Rtnl,
    pm: &MptcpPm,
    u: &Uplink,
    st: UplinkState,
    relay: IpAddr,
    applied: &mut Applied,
) -> Result<(), UplinkError> {
    let nl = |source| UplinkError::Netlink {
        uplink: u.name.clone(),
        source,
    };
    let route = |dst: IpAddr, dst_len: u8| RouteSpec {
        table: u.table,
        dst,
        dst_len,
        gateway: st.gateway,
        oif: st.ifindex,
        src: Some(st.addr),
        protocol: RTPROT_BRAID,
    };
    for r in [
        route(unspecified_like(relay), 0),
        route(relay, host_len(relay)),
    ] {
        rtnl.ensure_route(&r).await.map_err(nl)?;
        applied.routes.push(r);
    }
    let rule = RuleSpec {
        from: st.addr,
        from_len: host_len(st.addr),
        table: u.table,
        priority: u.rule_priority,
        protocol: RTPROT_BRAID,
    };
    rtnl.ensure_rule(&rule).await.map_err(nl)?;
    applied.rules.push(rule);
    let flags = EndpointFlags::SUBFLOW.with(EndpointFlags::BACKUP, u.backup);
    let (ep, created) = pm.ensure_endpoint(st.addr, Some(st.ifindex), flags).await?;
    if created {
        applied.endpoints_created.push(ep.id);
    }
    info!(
        "uplink {}: {} via {} on {} (table {}, rule pref {}, endpoint id {} {})",
        u.name,
        st.addr,
        st.gateway
            .map(|g| g.to_string())
            .unwrap_or_else(|| "on-link".into()),
        u.interface,
        u.table,
        u.rule_priority,
        ep.id,
        ep.flags
    );
    applied.uplinks.push(st);
    Ok(())
}

/// Removes everything in `applied`, logging (not failing on) what the kernel refuses, because
/// shutdown must go on removing the rest.
pub async fn remove(rtnl: &Rtnl, pm: &MptcpPm, applied: Applied) {
    for id in &applied.endpoints_created {
        if let Err(e) = pm.delete_endpoint(*id).await {
            warn!("removing MPTCP endpoint id {id}: {e}");
        }
    }
    for r in &applied.rules {
        if let Err(e) = rtnl.delete_rule(r).await {
            warn!("removing rule {r}: {e}");
        }
    }
    for r in &applied.routes {
        if let Err(e) = rtnl.delete_route(r).await {
            warn!("removing route {r}: {e}");
        }
    }
    if let Some(before) = applied.limits_before {
        if let Err(e) = pm.set_limits(before).await {
            warn!("restoring MPTCP limits to {before}: {e}");
        }
    }
}
