//! Per-uplink kernel state, read and written: what braid holds in the kernel for an uplink
//! ([`read_installed`]), and applying the differences from its plan ([`apply`]); plus the MPTCP
//! limits and the leftovers of a crashed run.
//!
//! What the state should be is decided in `plan.rs`, not here. Every route and rule carries
//! [`RTPROT_BRAID`], so leftovers of a crashed run are found and removed at the next start, and
//! nothing of anyone else's is ever touched.

use std::net::IpAddr;

use braid_sys::mptcp::endpoint::EndpointFlags;
use braid_sys::mptcp::limits::Limits;
use braid_sys::mptcp::pm::{MptcpPm, PmError};
use braid_sys::netlink::{NetlinkError, Rtnl};
use tracing::{info, warn};

use super::plan::{diff, Difference, Installed, UplinkPlan, Withheld, RTPROT_BRAID};
use crate::config::gateway::Uplink;
use crate::state::Journal;

/// Why per-uplink state could not be read or installed.
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
    /// An uplink's tunnel key pair could not be made.
    #[error(
        "cannot make a tunnel key pair: {0}; fix: check the system's random source (/dev/urandom)"
    )]
    Keys(#[source] std::io::Error),
    /// The uplink manager stopped before it was asked to.
    #[error(
        "the uplink manager stopped unexpectedly; this is a bug, please report it with the log"
    )]
    Stopped,
    /// The uplink manager crashed.
    #[error("the uplink manager crashed ({0}); this is a bug, please report it with the log")]
    Panicked(String),
}

/// What the kernel holds for uplink `u`: braid's routes in its table, braid's rules that select
/// its table, and the user-created endpoints on `addrs` (its current address and any braid gave
/// it before).
pub async fn read_installed(
    rtnl: &Rtnl,
    pm: &MptcpPm,
    u: &Uplink,
    addrs: &[IpAddr],
) -> Result<Installed, UplinkError> {
    let nl = |source| UplinkError::Netlink {
        uplink: u.name.clone(),
        source,
    };
    let routes = rtnl
        .routes(u.table)
        .await
        .map_err(nl)?
        .into_iter()
        .filter(|r| r.protocol == RTPROT_BRAID)
        .collect();
    let all_rules: Vec<_> = rtnl
        .rules()
        .await
        .map_err(nl)?
        .into_iter()
        .filter(|r| r.protocol == RTPROT_BRAID)
        .collect();
    let rules = all_rules
        .iter()
        .filter(|r| r.table == u.table)
        .cloned()
        .collect();
    let tunnel_rules = all_rules
        .into_iter()
        .filter(|r| r.table == u.tunnel_table)
        .collect();
    let tunnel_routes = rtnl
        .routes(u.tunnel_table)
        .await
        .map_err(nl)?
        .into_iter()
        .filter(|r| r.protocol == RTPROT_BRAID)
        .collect();
    let endpoints = pm
        .endpoints()
        .await?
        .into_iter()
        .filter(|e| {
            addrs.contains(&e.addr)
                && e.port.is_none()
                && !e.flags.contains(EndpointFlags::IMPLICIT)
        })
        .collect();
    Ok(Installed {
        routes,
        rules,
        endpoints,
        tunnel_routes,
        tunnel_rules,
    })
}

/// Applies `diffs` (removals first, as [`diff`] orders them). Every difference is tried even
/// when one fails, because one refused request must not leave the rest undone; the first error
/// is returned. An endpoint is noted in `journal` before it is added, and forgotten once it is
/// removed, so a crash in between leaves a record the next start can undo.
pub async fn apply(
    rtnl: &Rtnl,
    pm: &MptcpPm,
    journal: &Journal,
    u: &Uplink,
    diffs: &[Difference],
) -> Result<(), UplinkError> {
    let nl = |source| UplinkError::Netlink {
        uplink: u.name.clone(),
        source,
    };
    let mut first_error = None;
    for d in diffs {
        let r = match d {
            Difference::RouteMissing(r) => rtnl.ensure_route(r).await.map_err(nl),
            Difference::RouteStale(r) => rtnl.delete_route(r).await.map(drop).map_err(nl),
            Difference::RuleMissing(r) => rtnl.ensure_rule(r).await.map(drop).map_err(nl),
            Difference::RuleStale(r) => rtnl.delete_rule(r).await.map(drop).map_err(nl),
            Difference::EndpointMissing(e) | Difference::EndpointDiffers { want: e, .. } => {
                journal.note_endpoint(e.addr);
                pm.ensure_endpoint(e.addr, Some(e.ifindex), e.flags)
                    .await
                    .map(drop)
                    .map_err(UplinkError::from)
            }
            Difference::EndpointStale(e) => {
                let r = pm.delete_endpoint(e.id).await;
                if r.is_ok() {
                    journal.forget_endpoint(e.addr);
                }
                r.map(drop).map_err(UplinkError::from)
            }
        };
        if let Err(e) = r {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Brings uplink `u` to `plan`: reads what is installed (endpoints on `addrs`), applies the
/// differences, and returns them.
pub async fn reconcile(
    rtnl: &Rtnl,
    pm: &MptcpPm,
    journal: &Journal,
    u: &Uplink,
    plan: &UplinkPlan,
    addrs: &[IpAddr],
) -> Result<Vec<Difference>, UplinkError> {
    let have = read_installed(rtnl, pm, u, addrs).await?;
    let diffs = diff(plan, &have);
    apply(rtnl, pm, journal, u, &diffs).await?;
    Ok(diffs)
}

/// The plan of an uplink that braid no longer manages: nothing at all.
pub fn nothing(u: &Uplink) -> UplinkPlan {
    UplinkPlan {
        table: u.table,
        routes: Vec::new(),
        rule: None,
        endpoint: Err(Withheld::NoInterface),
        tunnel: None,
    }
}

/// Removes everything braid installed for uplink `u` (endpoints on `addrs`), logging (not
/// failing on) what the kernel refuses, because shutdown must go on removing the rest.
pub async fn remove(rtnl: &Rtnl, pm: &MptcpPm, journal: &Journal, u: &Uplink, addrs: &[IpAddr]) {
    if let Err(e) = reconcile(rtnl, pm, journal, u, &nothing(u), addrs).await {
        warn!("uplink {}: removing its kernel state: {e}", u.name);
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

/// The MPTCP limits `n` uplinks need: a subflow and an accepted address per uplink.
pub fn limits_for(before: Limits, n: u32) -> Limits {
    Limits {
        subflows: before.subflows.max(n),
        add_addr_accepted: before.add_addr_accepted.max(n),
    }
}

/// Raises the MPTCP limits to fit `n` uplinks; returns the limits to restore on exit, if braid
/// changed them (in this run, or in an earlier one whose original `journal` still holds).
pub async fn ensure_limits(
    pm: &MptcpPm,
    journal: &Journal,
    n: u32,
) -> Result<Option<Limits>, UplinkError> {
    let before = pm.limits().await?;
    let want = limits_for(before, n);
    if want == before {
        return Ok(journal.recorded_limits());
    }
    let original = journal.note_limits(before);
    pm.set_limits(want).await?;
    info!("MPTCP limits: {before} → {want}");
    Ok(Some(original))
}
