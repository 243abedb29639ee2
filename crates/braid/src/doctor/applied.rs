//! The state the gateway applies per uplink, checked against the daemon's own plan
//! (`gateway::uplink::plan`): `uplink.<name>.route` (table, routes, rule) and
//! `uplink.<name>.endpoint` (the MPTCP endpoint).
//!
//! doctor plans each uplink exactly as the daemon does, from the same discovery and with the
//! health the daemon reports on its status API, reads what the kernel holds the same way, and
//! reports every difference. An endpoint that braid withdrew on purpose (the uplink is Down) is
//! said to be so, with the daemon's reason, and is never called a fault.

use std::net::IpAddr;

use braid_sys::mptcp::pm::MptcpPm;
use braid_sys::netlink::Rtnl;

use super::check::Check;
use crate::config::gateway::{GatewayConfig, Uplink};
use crate::gateway::running::{self, Running};
use crate::gateway::uplink::discover::Observed;
use crate::gateway::uplink::kernel::read_installed;
use crate::gateway::uplink::plan::{
    self, Difference, HealthVerdict, PathPlan, TunnelAt, UplinkPlan, Withheld,
};

/// One uplink's applied state, about to be checked.
pub struct Applied<'a> {
    /// The uplink.
    pub u: &'a Uplink,
    /// The relay's address.
    pub relay: IpAddr,
    /// What the kernel says about the uplink's interface.
    pub seen: &'a Observed,
    /// The gateway's config (to ask its status API).
    pub cfg: &'a GatewayConfig,
    /// Whether (and how) the gateway runs.
    pub gateway: &'a Running,
    /// The uplink reaches the relay and the relay answers braid: its health probes can work.
    pub probes_can_work: bool,
}

impl Applied<'_> {
    fn id(&self, what: &str) -> String {
        format!("uplink.{}.{what}", self.u.name)
    }

    /// The uplink's health as the running daemon reports it now. Asked after the kernel was
    /// read: the daemon changes the kernel within milliseconds of a health change, so a
    /// withdrawn endpoint is never judged with an older, healthier state.
    async fn health(&self, rtnl: &Rtnl) -> HealthVerdict {
        let now = match self.gateway {
            Running::WithStatus(_) => running::detect(self.cfg, Some(rtnl)).await,
            _ => return HealthVerdict::Unknown,
        };
        let Some(status) = now.status() else {
            return HealthVerdict::Unknown;
        };
        let none_carries = !status.uplinks.iter().any(|x| x.state.carries_traffic());
        status
            .uplinks
            .iter()
            .find(|x| x.name == self.u.name)
            .map_or(HealthVerdict::Unknown, |x| {
                HealthVerdict::among(
                    x.state,
                    x.state_reason.clone(),
                    x.state_changes > 0,
                    none_carries,
                )
            })
    }

    /// The uplink's path as the running daemon reports it, with the tunnel device's index read
    /// from the kernel; without the status API, a tunnel device of the uplink that is up with an
    /// address says the uplink is tunnelled.
    async fn path(&self, rtnl: &Rtnl) -> PathPlan {
        let Some(u) = self
            .gateway
            .status()
            .and_then(|s| s.uplinks.iter().find(|x| x.name == self.u.name))
        else {
            return self.path_from_kernel(rtnl).await;
        };
        match (u.path.as_str(), &u.tunnel) {
            ("tunnel", Some(t)) => {
                let ifindex = rtnl.link_index(&t.interface).await.ok().flatten();
                match (ifindex, t.address.parse::<IpAddr>()) {
                    (Some(ifindex), Ok(addr)) => PathPlan::Tunnel(TunnelAt { ifindex, addr }),
                    _ => PathPlan::Withheld(format!("its tunnel device {} is gone", t.interface)),
                }
            }
            ("direct", _) | ("", _) => PathPlan::Direct,
            _ => PathPlan::Withheld(u.path_reason.clone()),
        }
    }

    async fn path_from_kernel(&self, rtnl: &Rtnl) -> PathPlan {
        let device = crate::gateway::uplink::path::device_name(self.u);
        let Ok(Some(link)) = rtnl.link_by_name(&device).await else {
            return PathPlan::Direct;
        };
        let addr = rtnl
            .addresses(link.index)
            .await
            .ok()
            .and_then(|a| a.first().map(|a| a.addr));
        match addr {
            Some(addr) if link.admin_up => PathPlan::Tunnel(TunnelAt {
                ifindex: link.index,
                addr,
            }),
            _ => PathPlan::Direct,
        }
    }

    /// `uplink.<name>.route` and `uplink.<name>.endpoint`.
    pub async fn checks(&self, rtnl: &Rtnl, pm: &MptcpPm) -> Vec<Check> {
        let (route, endpoint) = (self.id("route"), self.id("endpoint"));
        if !self.gateway.is_running() {
            return vec![
                Check::skip(route, Running::NOT_RUNNING),
                Check::skip(endpoint, Running::NOT_RUNNING),
            ];
        }
        let path = self.path(rtnl).await;
        let mut addrs: Vec<IpAddr> = self.seen.addr.into_iter().collect();
        if let PathPlan::Tunnel(at) = &path {
            addrs.push(at.addr);
        }
        let have = match read_installed(rtnl, pm, self.u, &addrs).await {
            Ok(h) => h,
            Err(e) => {
                let c = |id| {
                    Check::warn(
                        id,
                        "cannot read the kernel's routes, rules or MPTCP endpoints",
                        e.to_string(),
                        "run braid doctor as root",
                    )
                };
                return vec![c(route), c(endpoint)];
            }
        };
        let health = self.health(rtnl).await;
        let want = plan::plan_with(self.u, self.relay, Some(self.seen), &health, &path);
        let diffs = plan::diff(&want, &have);
        let (ep, routing): (Vec<_>, Vec<_>) = diffs.into_iter().partition(|d| {
            matches!(
                d,
                Difference::EndpointMissing(_)
                    | Difference::EndpointDiffers { .. }
                    | Difference::EndpointStale(_)
            )
        });
        vec![
            self.routing_check(route, &want, &routing),
            self.endpoint_check(endpoint, &want, &ep, &health),
        ]
    }

    fn routing_check(&self, id: String, want: &UplinkPlan, diffs: &[Difference]) -> Check {
        let u = self.u;
        let Some(addr) = self.seen.usable_addr() else {
            return Check::skip(id, "the uplink has no usable address");
        };
        let c = if diffs.is_empty() {
            Check::ok(
                id,
                format!(
                    "rule from {addr} → table {} with a default route and a route to the relay {} via {}",
                    u.table, self.relay, u.interface
                ),
            )
        } else {
            let list = diffs
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ");
            Check::fail(id, format!("table {} of {} is not as braid plans it: {list}", u.table, u.interface), routing_cause(diffs, self.relay), "restart braid gateway; if it happens again, look for another program that manages routes or ip rules (NetworkManager, mwan3) and check the gateway log for netlink errors")
        };
        c.with("table", u.table)
            .with(
                "planned",
                want.routes
                    .iter()
                    .map(ToString::to_string)
                    .chain(want.rule.iter().map(ToString::to_string))
                    .collect::<Vec<_>>(),
            )
            .with(
                "differences",
                diffs.iter().map(ToString::to_string).collect::<Vec<_>>(),
            )
    }

    fn endpoint_check(
        &self,
        id: String,
        want: &UplinkPlan,
        diffs: &[Difference],
        health: &HealthVerdict,
    ) -> Check {
        let u = self.u;
        let listed = || {
            diffs
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        };
        // While no uplink carries traffic the endpoints stay (`HealthVerdict::among`).
        let kept = match (&want.endpoint, diffs, health) {
            (Ok(_), [], HealthVerdict::Kept { state, reason }) => Some(
                Check::warn(
                    id.clone(),
                    format!("braid keeps the MPTCP endpoint of {} while no uplink carries traffic: the uplink is {state} ({reason})", u.name),
                    "with every uplink Down there is nowhere to move traffic to; withdrawing the endpoint would close every subflow on it, and the kernel gives a connection left without a subflow no new one, so every connection would end. Kept, the subflows resume when the path does; braid withdraws it once another uplink is Up",
                    "nothing to fix in braid; see the reach checks and server.relay for why no uplink reaches the relay",
                )
                .with("state", state.to_string())
                .with("reason", reason.as_str()),
            ),
            (Ok(e), [Difference::EndpointMissing(_)], HealthVerdict::Kept { .. }) => Some(Check::warn(
                id.clone(),
                format!("no MPTCP endpoint for {} although braid keeps endpoints while no uplink carries traffic", e.addr),
                "the last uplink carrying traffic went Down just now, and the gateway adds the endpoints back at its next reconcile (within 2 s)",
                "run braid doctor again; if the endpoint stays missing, check the gateway log",
            )),
            _ => None,
        };
        if let Some(c) = kept {
            return c.with("health", format!("{health:?}"));
        }
        match (&want.endpoint, diffs) {
            (Err(Withheld::Unhealthy { state, reason }), []) => Check::warn(
                id,
                format!("braid withdrew the MPTCP endpoint of {} on purpose: the uplink is {state} ({reason})", u.name),
                "braid removes the endpoint of an uplink whose health probes through the relay fail, so that the kernel moves its traffic to the other uplinks; it adds the endpoint back as soon as the uplink is Up again",
                format!("nothing to fix in braid; if {} should be working, see uplink.{}.reach and server.relay", u.interface, u.name),
            )
            .with("state", state.to_string())
            .with("reason", reason.as_str()),
            (Err(Withheld::Unhealthy { state, .. }), _) => Check::warn(
                id,
                format!("the uplink is {state}, but an endpoint is still there: {}", listed()),
                "braid removes the endpoint of a Down uplink at its next reconcile (within 2 s); it may have changed state just now",
                "run braid doctor again; if the endpoint stays, check the gateway log",
            ),
            (Err(Withheld::Path(reason)), []) => Check::warn(
                id,
                format!("braid withheld the MPTCP endpoint of {}: {reason}", u.name),
                "the uplink's path strips or resets MPTCP, and its tunnel is not up (starting, or UDP to the relay is blocked too)",
                format!("see uplink.{}.tunnel", u.name),
            ),
            (Err(why), _) => Check::skip(id, format!("no endpoint is planned: {why}")),
            (Ok(e), []) => Check::ok(id, format!("endpoint {} {}", e.addr, e.flags)),
            // The daemon withdraws it at any moment now, if it has not yet said so.
            (Ok(e), [Difference::EndpointMissing(_)]) if !self.probes_can_work => {
                Check::skip(id, format!("no endpoint for {}, as expected: the gateway removes the endpoint of an uplink whose health probes to the relay fail (see the reach and relay checks)", e.addr))
            }
            (Ok(e), [Difference::EndpointMissing(_)]) => Check::fail(
                id,
                format!("no MPTCP endpoint for {}", e.addr),
                "no subflow will use this uplink, so it carries no traffic; braid's health for it is good, so it should be there",
                format!("ip mptcp endpoint add {} dev {} {}, or restart braid gateway", e.addr, u.interface, e.flags),
            ),
            (Ok(_), _) => Check::fail(
                id,
                format!("the MPTCP endpoints of {} are not as braid plans them: {}", u.interface, listed()),
                "an endpoint without the subflow flag opens no subflow, one on another interface sends them the wrong way, and one on an old address keeps the kernel trying a dead path",
                "restart braid gateway; if it happens again, look for another program that manages MPTCP endpoints",
            ),
        }
        .with("health", format!("{health:?}"))
    }
}

/// Why the routing differences matter, for the most important one.
fn routing_cause(diffs: &[Difference], relay: IpAddr) -> String {
    let missing_relay = diffs
        .iter()
        .any(|d| matches!(d, Difference::RouteMissing(r) if r.dst == relay));
    let missing_default = diffs
        .iter()
        .any(|d| matches!(d, Difference::RouteMissing(r) if r.dst_len == 0));
    let missing_rule = diffs
        .iter()
        .any(|d| matches!(d, Difference::RuleMissing(_)));
    if missing_rule {
        "without the rule, subflows from this uplink's address follow the main table and leave through another uplink (or are dropped by rp_filter)".into()
    } else if missing_relay {
        format!("without the route to the relay {relay}, the uplink's subflows and health probes toward the relay follow the main table's route instead of this uplink")
    } else if missing_default {
        "the kernel flushed the uplink's routes (the link went down) and they were not restored, or another program deleted them".into()
    } else {
        "a route or rule braid installed for an earlier address or next hop is still there".into()
    }
}
