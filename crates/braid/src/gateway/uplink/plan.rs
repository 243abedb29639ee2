//! The uplink plan: the kernel state one uplink should have, as a pure function of its config,
//! the relay's address, what the kernel says about its interface, and its health.
//!
//! ```text
//!  Uplink config ─┐
//!  relay address ─┼─► plan() ─► UplinkPlan ─┐
//!  Observed ──────┤                         ├─► diff() ─► [Difference] ─┬─► daemon: apply each
//!  HealthVerdict ─┘   Installed (kernel) ───┘                           └─► doctor: report each
//! ```
//!
//! The daemon applies the differences; `braid doctor` reports the very same differences, so the
//! two cannot disagree about what "correct" is. Per uplink the plan holds:
//! - table `u.table` with a default route via the uplink and a host route to the relay, both with
//!   the uplink's address as source (while the link is up with an address: the kernel flushes
//!   routes of a link that goes down);
//! - `ip rule from ADDR lookup TABLE` (while the interface has an address, also when the link is
//!   down: a rule references no device);
//! - an MPTCP `subflow` endpoint on the address (`backup` for backup uplinks), only while the
//!   uplink is usable and healthy: a Down uplink's endpoint is withheld on purpose, so that the
//!   kernel moves its traffic to the others.
//!
//! A tunnelled uplink ([`PathPlan::Tunnel`], see `crate::tunnel`) keeps all of that for its outer
//! UDP packets, but its endpoint moves to the tunnel's address on the tunnel device, and a
//! second table (`u.tunnel_table`) with a default route into the device, selected by a rule from
//! the tunnel's address, carries the subflows. While the tunnel is wanted but not up, or neither
//! path works, the endpoint is withheld with the reason ([`PathPlan::Withheld`]).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use braid_proto::health::LinkState;
use braid_sys::mptcp::endpoint::{Endpoint, EndpointFlags};
use braid_sys::route::RouteSpec;
use braid_sys::rule::RuleSpec;

use super::discover::Observed;
use crate::config::gateway::Uplink;

/// The routing protocol number on braid's routes and rules (`ip route show proto 212`): what
/// carries it is braid's, and nothing else is ever touched.
pub const RTPROT_BRAID: u8 = 212;

/// Whether the health machine lets the uplink carry traffic.
#[derive(Debug, Clone, PartialEq)]
pub enum HealthVerdict {
    /// Up or Suspect: the endpoint belongs in the kernel.
    Carries,
    /// Down or Recovering while no uplink carries traffic: braid keeps the endpoint (see
    /// [`HealthVerdict::among`]).
    Kept {
        /// The uplink's state.
        state: LinkState,
        /// The last transition's reason, as the daemon logged it.
        reason: String,
    },
    /// Down or Recovering: braid withdraws the endpoint on purpose.
    Withdrawn {
        /// The uplink's state.
        state: LinkState,
        /// The last transition's reason, as the daemon logged it.
        reason: String,
    },
    /// Not known (doctor without the daemon's status API): planned as if healthy.
    Unknown,
}

impl HealthVerdict {
    /// The verdict for a state, with the reason of the transition that led there, on its own;
    /// callers ask [`HealthVerdict::among`], so the daemon and doctor cannot disagree.
    fn of(state: LinkState, reason: impl Into<String>) -> HealthVerdict {
        if state.carries_traffic() {
            HealthVerdict::Carries
        } else {
            HealthVerdict::Withdrawn {
                state,
                reason: reason.into(),
            }
        }
    }

    /// The verdict for one uplink among all: its `state`, the `reason` it got there, whether
    /// it has `left_start` (changed state since the Recovering every uplink starts in), and
    /// whether `none_carries` (no uplink carries traffic).
    ///
    /// A withdrawn endpoint moves traffic to the other uplinks; while none carries any there
    /// is nowhere to move it, and withdrawing would only close every subflow on the uplink for
    /// good: the kernel adds no subflow to a connection left with none, even once its uplink
    /// is back (`braid_proto::stranded`). So while no uplink carries traffic, an uplink that
    /// has left its start keeps its endpoint, and a few seconds with every uplink Down (the
    /// relay's network blinking, probes lost on every link) end no connection: the subflows
    /// retransmit and resume with the path. At the start nothing is installed before the first
    /// Up, as ever.
    pub fn among(
        state: LinkState,
        reason: impl Into<String>,
        left_start: bool,
        none_carries: bool,
    ) -> HealthVerdict {
        match HealthVerdict::of(state, reason) {
            HealthVerdict::Withdrawn { state, reason } if left_start && none_carries => {
                HealthVerdict::Kept { state, reason }
            }
            v => v,
        }
    }
}

/// The endpoint one uplink should have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndpointPlan {
    /// The uplink's address.
    pub addr: IpAddr,
    /// The uplink's interface (`dev`).
    pub ifindex: u32,
    /// `subflow`, plus `backup` for a backup uplink.
    pub flags: EndpointFlags,
}

impl fmt::Display for EndpointPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} dev #{} {}", self.addr, self.ifindex, self.flags)
    }
}

/// Why an uplink has no endpoint in its plan.
#[derive(Debug, Clone, PartialEq)]
pub enum Withheld {
    /// The interface does not exist.
    NoInterface,
    /// The interface has no address of the relay's family.
    NoAddress,
    /// The link is down.
    LinkDown,
    /// The health machine withdrew it.
    Unhealthy {
        /// The uplink's state.
        state: LinkState,
        /// Why it is in that state.
        reason: String,
    },
    /// Its path strips MPTCP and the tunnel is not up (starting, or failed too).
    Path(String),
}

impl fmt::Display for Withheld {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Withheld::NoInterface => f.write_str("the interface does not exist"),
            Withheld::NoAddress => {
                f.write_str("the interface has no address of the relay's family")
            }
            Withheld::LinkDown => f.write_str("the link is down"),
            Withheld::Unhealthy { state, reason } => {
                write!(f, "the uplink is {state}: {reason}")
            }
            Withheld::Path(reason) => write!(f, "the uplink's path: {reason}"),
        }
    }
}

/// How the uplink carries subflows (decided in `crate::tunnel`, driven by the manager).
#[derive(Debug, Clone, PartialEq)]
pub enum PathPlan {
    /// Straight over the uplink.
    Direct,
    /// Through the tunnel, which is up.
    Tunnel(TunnelAt),
    /// Neither (yet): the tunnel is wanted but not up, or it failed too; the reason.
    Withheld(String),
}

/// Where an uplink's tunnel is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunnelAt {
    /// The tunnel device.
    pub ifindex: u32,
    /// The address the relay leased to it.
    pub addr: IpAddr,
}

/// The tunnel's part of a plan: its table's route into the device, and the rule from its
/// address.
#[derive(Debug, Clone, PartialEq)]
pub struct TunnelPart {
    /// `u.tunnel_table`.
    pub table: u32,
    /// The default route into the device, with the tunnel address as source.
    pub routes: Vec<RouteSpec>,
    /// `from TUNNEL_ADDR lookup tunnel_table`.
    pub rule: RuleSpec,
}

/// The kernel state one uplink should have.
#[derive(Debug, Clone, PartialEq)]
pub struct UplinkPlan {
    /// The uplink's routing table.
    pub table: u32,
    /// Default route and route to the relay, in `table`.
    pub routes: Vec<RouteSpec>,
    /// The source rule that selects `table`.
    pub rule: Option<RuleSpec>,
    /// The MPTCP endpoint, or why there is none.
    pub endpoint: Result<EndpointPlan, Withheld>,
    /// The tunnel's table and rule, when the uplink is tunnelled.
    pub tunnel: Option<TunnelPart>,
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

/// The flags of an uplink's endpoint.
pub fn endpoint_flags(u: &Uplink) -> EndpointFlags {
    EndpointFlags::SUBFLOW.with(EndpointFlags::BACKUP, u.backup)
}

/// What uplink `u` should have in the kernel, given the relay, what the kernel says about its
/// interface (`None`: it does not exist) and its health, on the direct path.
pub fn plan(
    u: &Uplink,
    relay: IpAddr,
    seen: Option<&Observed>,
    health: &HealthVerdict,
) -> UplinkPlan {
    plan_with(u, relay, seen, health, &PathPlan::Direct)
}

/// Like [`plan`], on `path`.
pub fn plan_with(
    u: &Uplink,
    relay: IpAddr,
    seen: Option<&Observed>,
    health: &HealthVerdict,
    path: &PathPlan,
) -> UplinkPlan {
    let routes = match seen.and_then(|s| s.usable_addr().map(|a| (s, a))) {
        Some((s, addr)) => [(unspecified_like(relay), 0), (relay, host_len(relay))]
            .into_iter()
            .map(|(dst, dst_len)| RouteSpec {
                table: u.table,
                dst,
                dst_len,
                gateway: s.gateway,
                oif: s.ifindex,
                src: Some(addr),
                protocol: RTPROT_BRAID,
            })
            .collect(),
        None => Vec::new(),
    };
    let rule = seen.and_then(|s| s.addr).map(|a| RuleSpec {
        from: a,
        from_len: host_len(a),
        table: u.table,
        priority: u.rule_priority,
        protocol: RTPROT_BRAID,
    });
    let endpoint = match seen {
        None => Err(Withheld::NoInterface),
        Some(s) => match (s.addr, s.link_up, health) {
            (None, _, _) => Err(Withheld::NoAddress),
            (Some(_), false, _) => Err(Withheld::LinkDown),
            (Some(_), true, HealthVerdict::Withdrawn { state, reason }) => {
                Err(Withheld::Unhealthy {
                    state: *state,
                    reason: reason.clone(),
                })
            }
            (
                Some(addr),
                true,
                HealthVerdict::Carries | HealthVerdict::Kept { .. } | HealthVerdict::Unknown,
            ) => Ok(EndpointPlan {
                addr,
                ifindex: s.ifindex,
                flags: endpoint_flags(u),
            }),
        },
    };
    let tunnel = match path {
        PathPlan::Tunnel(at) => Some(tunnel_part(u, at)),
        _ => None,
    };
    let endpoint = match (endpoint, path) {
        (Ok(e), PathPlan::Tunnel(at)) => Ok(EndpointPlan {
            addr: at.addr,
            ifindex: at.ifindex,
            flags: e.flags,
        }),
        (Ok(_), PathPlan::Withheld(why)) => Err(Withheld::Path(why.clone())),
        (e, _) => e,
    };
    UplinkPlan {
        table: u.table,
        routes,
        rule,
        endpoint,
        tunnel,
    }
}

/// The tunnel's table and rule: `default dev TUN src ADDR table T`, `from ADDR lookup T`.
fn tunnel_part(u: &Uplink, at: &TunnelAt) -> TunnelPart {
    TunnelPart {
        table: u.tunnel_table,
        routes: vec![RouteSpec {
            table: u.tunnel_table,
            dst: unspecified_like(at.addr),
            dst_len: 0,
            gateway: None,
            oif: at.ifindex,
            src: Some(at.addr),
            protocol: RTPROT_BRAID,
        }],
        rule: RuleSpec {
            from: at.addr,
            from_len: host_len(at.addr),
            table: u.tunnel_table,
            priority: u.rule_priority,
            protocol: RTPROT_BRAID,
        },
    }
}

/// What the kernel holds that belongs to one uplink: braid's routes in its table, braid's rules
/// that select its table, and the endpoints on its addresses.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Installed {
    /// Routes with [`RTPROT_BRAID`] in the uplink's table.
    pub routes: Vec<RouteSpec>,
    /// Rules with [`RTPROT_BRAID`] that look up the uplink's table.
    pub rules: Vec<RuleSpec>,
    /// User-created endpoints on the uplink's current address or on one braid gave it before
    /// (its tunnel's addresses included).
    pub endpoints: Vec<Endpoint>,
    /// Routes with [`RTPROT_BRAID`] in the uplink's tunnel table.
    pub tunnel_routes: Vec<RouteSpec>,
    /// Rules with [`RTPROT_BRAID`] that look up the uplink's tunnel table.
    pub tunnel_rules: Vec<RuleSpec>,
}

/// One way in which the kernel differs from the plan.
#[derive(Debug, Clone, PartialEq)]
pub enum Difference {
    /// A planned route is not in the table.
    RouteMissing(RouteSpec),
    /// A braid route in the table is not planned (any more).
    RouteStale(RouteSpec),
    /// The planned rule is not there.
    RuleMissing(RuleSpec),
    /// A braid rule for the table is not planned (an old address).
    RuleStale(RuleSpec),
    /// The planned endpoint is not there.
    EndpointMissing(EndpointPlan),
    /// An endpoint on the planned address has other flags or another interface.
    EndpointDiffers {
        /// What the kernel has.
        have: Endpoint,
        /// What the plan says.
        want: EndpointPlan,
    },
    /// An endpoint that should not be there (withheld, or on an old address).
    EndpointStale(Endpoint),
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Difference::RouteMissing(r) => write!(f, "missing route {r}"),
            Difference::RouteStale(r) => write!(f, "stale route {r}"),
            Difference::RuleMissing(r) => write!(f, "missing rule {r}"),
            Difference::RuleStale(r) => write!(f, "stale rule {r}"),
            Difference::EndpointMissing(e) => write!(f, "missing MPTCP endpoint {e}"),
            Difference::EndpointDiffers { have, want } => write!(
                f,
                "MPTCP endpoint id {} is {} dev #{} {}, should be {want}",
                have.id,
                have.addr,
                have.ifindex.unwrap_or(0),
                have.flags
            ),
            Difference::EndpointStale(e) => {
                write!(f, "stale MPTCP endpoint id {} {} {}", e.id, e.addr, e.flags)
            }
        }
    }
}

/// A planned route is present when the kernel has it exactly, or when the plan does not know the
/// next hop (the DHCP client has not put it back yet) and the kernel's route differs only there.
fn route_present(want: &RouteSpec, have: &RouteSpec) -> bool {
    want == have
        || (want.gateway.is_none()
            && &RouteSpec {
                gateway: None,
                ..have.clone()
            } == want)
}

fn endpoint_matches(want: &EndpointPlan, have: &Endpoint) -> bool {
    have.flags.with(EndpointFlags::IMPLICIT, false) == want.flags
        && have.ifindex == Some(want.ifindex)
}

/// Every difference between the plan and what is installed, removals first (so that a route or
/// endpoint replaced by a new one is gone before the new one is added).
pub fn diff(plan: &UplinkPlan, have: &Installed) -> Vec<Difference> {
    let mut out = Vec::new();
    for r in &have.routes {
        if !plan.routes.iter().any(|w| route_present(w, r)) {
            out.push(Difference::RouteStale(r.clone()));
        }
    }
    for r in &have.rules {
        if plan.rule.as_ref() != Some(r) {
            out.push(Difference::RuleStale(r.clone()));
        }
    }
    let tunnel_routes = plan.tunnel.as_ref().map_or(&[][..], |t| &t.routes[..]);
    let tunnel_rule = plan.tunnel.as_ref().map(|t| &t.rule);
    for r in &have.tunnel_routes {
        if !tunnel_routes.contains(r) {
            out.push(Difference::RouteStale(r.clone()));
        }
    }
    for r in &have.tunnel_rules {
        if tunnel_rule != Some(r) {
            out.push(Difference::RuleStale(r.clone()));
        }
    }
    let want_ep = plan.endpoint.as_ref().ok();
    for e in &have.endpoints {
        match want_ep {
            Some(w) if w.addr == e.addr => {
                if !endpoint_matches(w, e) {
                    out.push(Difference::EndpointDiffers {
                        have: e.clone(),
                        want: *w,
                    });
                }
            }
            _ => out.push(Difference::EndpointStale(e.clone())),
        }
    }
    for w in &plan.routes {
        if !have.routes.iter().any(|r| route_present(w, r)) {
            out.push(Difference::RouteMissing(w.clone()));
        }
    }
    if let Some(w) = &plan.rule {
        if !have.rules.contains(w) {
            out.push(Difference::RuleMissing(w.clone()));
        }
    }
    for w in tunnel_routes {
        if !have.tunnel_routes.contains(w) {
            out.push(Difference::RouteMissing(w.clone()));
        }
    }
    if let Some(w) = tunnel_rule {
        if !have.tunnel_rules.contains(w) {
            out.push(Difference::RuleMissing(w.clone()));
        }
    }
    if let Some(w) = want_ep {
        if !have.endpoints.iter().any(|e| e.addr == w.addr) {
            out.push(Difference::EndpointMissing(*w));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uplink(backup: bool) -> Uplink {
        Uplink {
            name: "wifi".into(),
            interface: "wan-wifi".parse().expect("name"),
            backup,
            table: 101,
            rule_priority: 1000,
            tunnel: braid_proto::tunnel::Mode::Auto,
            tunnel_table: 1101,
        }
    }

    const RELAY: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 200, 0, 1));
    const ADDR: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 1, 0, 1));
    const GW: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 1, 0, 2));

    fn seen(link_up: bool, addr: Option<IpAddr>) -> Observed {
        Observed {
            ifindex: 7,
            link_up,
            addr,
            gateway: Some(GW),
        }
    }

    /// What the daemon installs for a healthy uplink: exactly the plan.
    fn installed_as(plan: &UplinkPlan) -> Installed {
        Installed {
            routes: plan.routes.clone(),
            rules: plan.rule.clone().into_iter().collect(),
            endpoints: plan
                .endpoint
                .iter()
                .map(|e| Endpoint {
                    id: 1,
                    addr: e.addr,
                    port: None,
                    ifindex: Some(e.ifindex),
                    flags: e.flags,
                })
                .collect(),
            tunnel_routes: plan.tunnel.iter().flat_map(|t| t.routes.clone()).collect(),
            tunnel_rules: plan.tunnel.iter().map(|t| t.rule.clone()).collect(),
        }
    }

    const TUN_ADDR: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 255, 0, 2));

    fn tunnelled() -> PathPlan {
        PathPlan::Tunnel(TunnelAt {
            ifindex: 42,
            addr: TUN_ADDR,
        })
    }

    #[test]
    fn tunnelled_uplink_moves_its_endpoint_to_the_tunnel_and_keeps_its_own_routes() {
        let s = seen(true, Some(ADDR));
        let p = plan_with(
            &uplink(false),
            RELAY,
            Some(&s),
            &HealthVerdict::Carries,
            &tunnelled(),
        );
        assert_eq!(
            p.routes.len(),
            2,
            "the outer UDP packets still leave on the uplink"
        );
        assert!(p.rule.is_some());
        assert_eq!(
            p.endpoint,
            Ok(EndpointPlan {
                addr: TUN_ADDR,
                ifindex: 42,
                flags: EndpointFlags::SUBFLOW
            })
        );
        let t = p.tunnel.as_ref().expect("tunnel part");
        assert_eq!(t.table, 1101);
        assert_eq!((t.rule.from, t.rule.table), (TUN_ADDR, 1101));
        assert_eq!(
            (t.routes[0].dst_len, t.routes[0].oif, t.routes[0].src),
            (0, 42, Some(TUN_ADDR))
        );
        assert!(diff(&p, &installed_as(&p)).is_empty());
        // From the direct plan's kernel state: the old endpoint goes first, then the tunnel's
        // route, rule and endpoint come.
        let direct = plan(&uplink(false), RELAY, Some(&s), &HealthVerdict::Carries);
        let d = diff(&p, &installed_as(&direct));
        assert!(
            matches!(d[0], Difference::EndpointStale(ref e) if e.addr == ADDR),
            "{d:?}"
        );
        assert_eq!(d.len(), 4, "{d:?}");
        // And back: the tunnel's table and rule are stale.
        let back = diff(&direct, &installed_as(&p));
        assert_eq!(
            back.iter()
                .filter(|x| matches!(x, Difference::RouteStale(_) | Difference::RuleStale(_)))
                .count(),
            2,
            "{back:?}"
        );
    }

    #[test]
    fn withheld_path_withholds_only_the_endpoint_with_the_reason() {
        let s = seen(true, Some(ADDR));
        let why = PathPlan::Withheld("waiting for the tunnel".into());
        let p = plan_with(
            &uplink(false),
            RELAY,
            Some(&s),
            &HealthVerdict::Carries,
            &why,
        );
        assert_eq!(p.routes.len(), 2);
        assert!(p.tunnel.is_none());
        assert_eq!(
            p.endpoint.unwrap_err().to_string(),
            "the uplink's path: waiting for the tunnel"
        );
        // A down link says so first.
        let p = plan_with(
            &uplink(false),
            RELAY,
            Some(&seen(false, Some(ADDR))),
            &HealthVerdict::Carries,
            &why,
        );
        assert_eq!(p.endpoint, Err(Withheld::LinkDown));
    }

    #[test]
    fn healthy_uplink_plans_default_route_relay_route_rule_and_subflow_endpoint() {
        let p = plan(
            &uplink(false),
            RELAY,
            Some(&seen(true, Some(ADDR))),
            &HealthVerdict::Carries,
        );
        assert_eq!(p.routes.len(), 2);
        assert_eq!((p.routes[0].dst_len, p.routes[1].dst), (0, RELAY));
        assert_eq!(p.routes[1].dst_len, 32);
        assert!(p
            .routes
            .iter()
            .all(|r| r.table == 101 && r.src == Some(ADDR) && r.oif == 7 && r.gateway == Some(GW)));
        assert_eq!(
            p.rule.as_ref().map(|r| (r.from, r.table)),
            Some((ADDR, 101))
        );
        assert_eq!(
            p.endpoint,
            Ok(EndpointPlan {
                addr: ADDR,
                ifindex: 7,
                flags: EndpointFlags::SUBFLOW
            })
        );
        assert!(diff(&p, &installed_as(&p)).is_empty());
    }

    #[test]
    fn backup_uplink_endpoint_has_the_backup_flag() {
        let p = plan(
            &uplink(true),
            RELAY,
            Some(&seen(true, Some(ADDR))),
            &HealthVerdict::Unknown,
        );
        assert_eq!(
            p.endpoint.map(|e| e.flags),
            Ok(EndpointFlags::SUBFLOW | EndpointFlags::BACKUP)
        );
    }

    #[test]
    fn down_link_keeps_the_rule_but_no_routes_and_no_endpoint() {
        let p = plan(
            &uplink(false),
            RELAY,
            Some(&seen(false, Some(ADDR))),
            &HealthVerdict::Carries,
        );
        assert!(p.routes.is_empty());
        assert!(p.rule.is_some());
        assert_eq!(p.endpoint, Err(Withheld::LinkDown));
    }

    #[test]
    fn unhealthy_uplink_withholds_the_endpoint_with_the_reason() {
        let health = HealthVerdict::of(LinkState::Down, "3 lost probes in a row");
        let p = plan(
            &uplink(false),
            RELAY,
            Some(&seen(true, Some(ADDR))),
            &health,
        );
        assert_eq!(p.routes.len(), 2, "routes stay: probes need them");
        match &p.endpoint {
            Err(w @ Withheld::Unhealthy { .. }) => {
                assert_eq!(w.to_string(), "the uplink is Down: 3 lost probes in a row")
            }
            other => panic!("{other:?}"),
        }
        // The endpoint of the healthy plan is now stale.
        let healthy = plan(
            &uplink(false),
            RELAY,
            Some(&seen(true, Some(ADDR))),
            &HealthVerdict::Carries,
        );
        let d = diff(&p, &installed_as(&healthy));
        assert!(
            matches!(d.as_slice(), [Difference::EndpointStale(e)] if e.addr == ADDR),
            "{d:?}"
        );
    }

    #[test]
    fn while_no_uplink_carries_traffic_a_down_uplink_keeps_its_endpoint() {
        let on = |h: &HealthVerdict| {
            plan(&uplink(false), RELAY, Some(&seen(true, Some(ADDR))), h)
                .endpoint
                .is_ok()
        };
        let down = |left_start, none_carries| {
            HealthVerdict::among(LinkState::Down, "3 lost probes", left_start, none_carries)
        };
        // Another uplink carries traffic: withdrawn, so the kernel moves it there.
        assert!(!on(&down(true, false)));
        // None does: kept, its subflows wait for the path.
        assert!(matches!(down(true, true), HealthVerdict::Kept { .. }));
        assert!(on(&down(true, true)));
        let recovering =
            HealthVerdict::among(LinkState::Recovering, "a probe answered", true, true);
        assert!(on(&recovering));
        // At the start (every uplink Recovering, none carrying): nothing before the first Up.
        let start = HealthVerdict::among(LinkState::Recovering, "starting", false, true);
        assert!(!on(&start));
        // A carrying uplink is unaffected.
        assert_eq!(
            HealthVerdict::among(LinkState::Up, "3 good probes", true, false),
            HealthVerdict::Carries
        );
        // The link itself down: no endpoint, kept or not.
        let p = plan(
            &uplink(false),
            RELAY,
            Some(&seen(false, Some(ADDR))),
            &down(true, true),
        );
        assert_eq!(p.endpoint, Err(Withheld::LinkDown));
    }

    #[test]
    fn missing_interface_or_address_plans_nothing_but_says_why() {
        let p = plan(&uplink(false), RELAY, None, &HealthVerdict::Carries);
        assert_eq!(
            (p.routes.len(), p.rule.is_none()),
            (0, true),
            "nothing without an interface"
        );
        assert_eq!(p.endpoint, Err(Withheld::NoInterface));
        let p = plan(
            &uplink(false),
            RELAY,
            Some(&seen(true, None)),
            &HealthVerdict::Carries,
        );
        assert_eq!(p.endpoint, Err(Withheld::NoAddress));
    }

    #[test]
    fn deleted_relay_route_is_a_missing_route() {
        let p = plan(
            &uplink(false),
            RELAY,
            Some(&seen(true, Some(ADDR))),
            &HealthVerdict::Carries,
        );
        let mut have = installed_as(&p);
        let relay_route = have.routes.remove(1);
        assert_eq!(diff(&p, &have), vec![Difference::RouteMissing(relay_route)]);
    }

    #[test]
    fn address_change_makes_old_rule_routes_and_endpoint_stale_and_new_ones_missing() {
        let old = plan(
            &uplink(false),
            RELAY,
            Some(&seen(true, Some(ADDR))),
            &HealthVerdict::Carries,
        );
        let new_addr: IpAddr = "10.1.0.7".parse().expect("ip");
        let new = plan(
            &uplink(false),
            RELAY,
            Some(&seen(true, Some(new_addr))),
            &HealthVerdict::Carries,
        );
        let d = diff(&new, &installed_as(&old));
        let stale = d
            .iter()
            .take_while(|x| {
                matches!(
                    x,
                    Difference::RouteStale(_)
                        | Difference::RuleStale(_)
                        | Difference::EndpointStale(_)
                )
            })
            .count();
        assert_eq!(stale, 4, "removals come first: {d:?}");
        assert_eq!(d.len(), 8, "{d:?}");
    }

    #[test]
    fn endpoint_with_other_flags_differs() {
        let p = plan(
            &uplink(true),
            RELAY,
            Some(&seen(true, Some(ADDR))),
            &HealthVerdict::Carries,
        );
        let mut have = installed_as(&p);
        have.endpoints[0].flags = EndpointFlags::SUBFLOW;
        assert!(matches!(
            diff(&p, &have).as_slice(),
            [Difference::EndpointDiffers { .. }]
        ));
    }

    #[test]
    fn unknown_next_hop_accepts_the_installed_one() {
        let mut s = seen(true, Some(ADDR));
        let p = plan(&uplink(false), RELAY, Some(&s), &HealthVerdict::Carries);
        let have = installed_as(&p);
        s.gateway = None;
        let p = plan(&uplink(false), RELAY, Some(&s), &HealthVerdict::Carries);
        assert!(diff(&p, &have).is_empty());
    }
}
