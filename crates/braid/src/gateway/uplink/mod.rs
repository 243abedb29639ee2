//! The uplink manager: keeps every uplink's kernel state in step with the kernel and with the
//! uplink's health, live.
//!
//! ```text
//!  rtnetlink events ─┐                 ┌─► plan → diff → apply (routes, rule, endpoint per uplink)
//!  probe pings/pongs ┼─► UplinkManager ┼─► Dialer source address (new connections start healthy)
//!  health deadlines ─┘   (one task)    └─► log: one line per state change, with its reason
//! ```
//!
//! What each uplink's kernel state should be is [`plan::plan`], the one definition that
//! `braid doctor` checks against too.
//!
//! One task owns all state, so there are no locks and no races between an event and a resync.
//! An uplink whose interface is missing, has no address or is down is simply not installed;
//! its trouble never takes down the daemon or another uplink. A Down uplink loses its MPTCP
//! endpoint, so the kernel closes its subflows and traffic moves to the others; when it is Up
//! again the endpoint comes back, and the kernel's path manager opens subflows on the
//! connections that already exist (no LAN connection is reset).
//!
//! Each uplink also has a path (`path.rs`): direct, or through the encrypted UDP tunnel when its
//! middlebox strips or resets MPTCP (`crate::tunnel`). Every [`PATH_TICK`] the manager looks for
//! evidence in the live connections, drives each path, and reconciles when a path changed.

pub mod blackhole;
pub mod discover;
pub mod kernel;
pub mod path;
pub mod plan;
pub mod probe;
pub mod reload;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use braid_proto::health::{Health, HealthConfig, LinkState};
use braid_sys::monitor::{KernelEvent, Monitor};
use braid_sys::mptcp::info::mptcp_info;
use braid_sys::mptcp::pm::MptcpPm;
use braid_sys::netlink::Rtnl;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::config::gateway::{GatewayConfig, Uplink};
use crate::gateway::dialer::Dialer;
use crate::gateway::lost_join::UpUplink;
use crate::shutdown::Shutdown;
use crate::state::Journal;
use discover::Observed;
use plan::{Difference, HealthVerdict};
use probe::{ProbeEvent, ProbeSource};

/// One uplink as the manager sees it, for status and metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct UplinkView {
    /// Config name.
    pub name: String,
    /// Interface.
    pub interface: braid_sys::link::IfName,
    /// Configured as backup.
    pub backup: bool,
    /// Health state (Down when the link is down or has no address).
    pub state: LinkState,
    /// Why it is in that state: the last transition, or what is wrong with the interface.
    pub state_reason: String,
    /// Current address.
    pub addr: Option<IpAddr>,
    /// Smoothed probe RTT.
    pub rtt_ms: Option<f64>,
    /// Probe loss ratio.
    pub loss: f64,
    /// State changes so far.
    pub state_changes: u64,
    /// Direct, tunnelled or left out, why, and the tunnel's device and address.
    pub path: path::PathView,
}

impl UplinkView {
    /// The addresses this uplink's subflows come from: its own, and its tunnel's while its
    /// path is tunnelled.
    pub fn subflow_sources(&self) -> impl Iterator<Item = IpAddr> + '_ {
        [self.addr, self.path.tunnel.as_ref().map(|(_, a)| *a)]
            .into_iter()
            .flatten()
    }

    /// The address its new subflows come from on its current path: its own, its tunnel's
    /// while tunnelled, none while left out (it has no endpoint then).
    pub fn join_source(&self) -> Option<IpAddr> {
        match self.path.path {
            braid_proto::tunnel::Path::Direct => self.addr,
            braid_proto::tunnel::Path::Tunnel => self.path.tunnel.as_ref().map(|(_, a)| *a),
            braid_proto::tunnel::Path::Out => None,
        }
    }
}

/// What the manager publishes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ManagerView {
    /// Per uplink, in config order.
    pub uplinks: Vec<UplinkView>,
    /// The kernel is disabling MPTCP for new connections.
    pub blackhole_active: bool,
    /// `MPTcpExtBlackhole`.
    pub blackhole_count: u64,
    /// `net.mptcp.blackhole_timeout`.
    pub blackhole_timeout_secs: Option<u64>,
}

/// How long to wait after a kernel event for more of the same burst before reconciling.
const DEBOUNCE: Duration = Duration::from_millis(20);
/// A full resync even without events, in case one was missed.
const RESYNC: Duration = Duration::from_secs(2);
/// How often paths are driven (checks collected, tunnels followed).
const PATH_TICK: Duration = Duration::from_millis(200);
/// How often live connections are searched for evidence of a hostile path, and for connections
/// stranded without a subflow.
const EVIDENCE_EVERY: Duration = Duration::from_secs(1);

/// Marks Down in `shown` every uplink that `now` says is Down; true when one changed.
fn tell_downs(shown: &mut [UplinkView], now: &[UplinkView]) -> bool {
    let mut changed = false;
    for (old, new) in shown.iter_mut().zip(now) {
        if old.name == new.name && new.state == LinkState::Down && old.state != LinkState::Down {
            old.state = LinkState::Down;
            old.state_reason = new.state_reason.clone();
            changed = true;
        }
    }
    changed
}

/// How an uplink's health is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probing {
    /// Pings through the relay.
    Probes,
    /// The relay is not braid: only the kernel's link state counts.
    LinkOnly,
}

struct Slot {
    cfg: Uplink,
    found: Option<Observed>,
    /// Addresses braid may have left an endpoint on: the current one, and older ones until
    /// their endpoint is gone.
    endpoint_addrs: Vec<IpAddr>,
    /// braid installed the endpoint for the current address (so a missing one was removed by
    /// someone else).
    endpoint_installed: bool,
    health: Health,
    /// The last health transition, as logged.
    last_transition: String,
    probing: Probing,
    source: watch::Sender<Option<ProbeSource>>,
    warned: Option<String>,
    last_state: LinkState,
    /// The next hop last seen with the current address: when a link comes back up, its DHCP
    /// client may re-add the main-table default route a moment later than braid reconciles.
    last_gateway: Option<(IpAddr, IpAddr)>,
    /// Direct, tunnelled or left out.
    path: path::PathState,
}

impl Slot {
    /// A new slot for uplink `u` at position `i`, and its probe task.
    fn start(
        i: usize,
        u: &Uplink,
        health: &HealthConfig,
        dialer: &Arc<Dialer>,
        probe_tx: &mpsc::Sender<ProbeEvent>,
        tunnel_retry: Duration,
        now: Duration,
    ) -> Result<(Slot, tokio::task::JoinHandle<()>), kernel::UplinkError> {
        let path = path::PathState::new(u, tunnel_retry, now).map_err(kernel::UplinkError::Keys)?;
        let (source, source_rx) = watch::channel(None);
        let probe = spawn_probe(i, dialer, source_rx, probe_tx, health);
        let h = Health::new(health.clone(), now)?;
        let slot = Slot {
            path,
            cfg: u.clone(),
            found: None,
            endpoint_addrs: Vec::new(),
            endpoint_installed: false,
            last_transition: "braid started".into(),
            last_state: h.state(),
            health: h,
            probing: Probing::Probes,
            source,
            warned: None,
            last_gateway: None,
        };
        Ok((slot, probe))
    }

    /// The state that decides whether the uplink carries traffic.
    fn state(&self) -> LinkState {
        let link_ok = self
            .found
            .as_ref()
            .is_some_and(|d| d.link_up && d.addr.is_some());
        match self.probing {
            _ if !link_ok => LinkState::Down,
            Probing::LinkOnly => LinkState::Up,
            Probing::Probes => self.health.state(),
        }
    }

    /// Why the uplink is in [`Slot::state`].
    fn state_reason(&self) -> String {
        let problem = match &self.found {
            None => Some(format!("interface {} does not exist", self.cfg.interface)),
            Some(d) => d.unusable_because(&self.cfg.interface),
        };
        match (problem, self.probing) {
            (Some(p), _) => p,
            (None, Probing::LinkOnly) => {
                "the relay does not answer health probes; the link is up".into()
            }
            (None, Probing::Probes) => self.last_transition.clone(),
        }
    }

    /// Logs a health transition and keeps it as the state's reason.
    fn note(&mut self, t: Option<braid_proto::health::Transition>) {
        if let Some(t) = t {
            info!("uplink {}: {t}", self.cfg.name);
            self.last_transition = t.to_string();
        }
    }
}

/// The kernel handles and the record the manager changes the kernel through.
pub struct KernelAccess {
    /// rtnetlink: routes, rules, links.
    pub rtnl: Rtnl,
    /// The MPTCP path manager: endpoints, limits.
    pub pm: MptcpPm,
    /// Notes every change before it is made.
    pub journal: Arc<Journal>,
}

/// What the manager serves: the dialer it points at healthy uplinks, and the live connections
/// it reads evidence of hostile paths from.
pub struct Served {
    /// Opens relay streams; its source address follows the uplinks.
    pub dialer: Arc<Dialer>,
    /// Live relay connections.
    pub registry: Arc<crate::status::registry::Registry>,
}

/// Runs until shutdown, then removes everything it installed. The caller has removed a crashed
/// run's leftovers first ([`kernel::remove_leftovers`]). A new uplink list on `uplinks` (a
/// SIGHUP reload) is applied live, see [`reload`]; a dropped sender means no reloads.
pub async fn run(
    cfg: GatewayConfig,
    mut health: HealthConfig,
    kernel: KernelAccess,
    served: Served,
    view: watch::Sender<ManagerView>,
    mut shutdown: Shutdown,
    mut live: watch::Receiver<reload::Live>,
) -> Result<(), kernel::UplinkError> {
    let KernelAccess { rtnl, pm, journal } = kernel;
    let Served { dialer, registry } = served;
    let relay = dialer.relay().ip();
    let tables: Vec<u32> = cfg
        .uplinks
        .iter()
        .flat_map(|u| [u.table, u.tunnel_table])
        .collect();
    journal.note_route_tables(&tables);
    let mut limits_before = kernel::ensure_limits(&pm, &journal, cfg.uplinks.len() as u32).await?;
    let epoch = Instant::now();
    let (probe_tx, mut probe_rx) = mpsc::channel::<ProbeEvent>(256);
    let mut slots: Vec<Slot> = Vec::new();
    let mut probes = Vec::new();
    for (i, u) in cfg.uplinks.iter().enumerate() {
        let (slot, probe) = Slot::start(
            i,
            u,
            &health,
            &dialer,
            &probe_tx,
            cfg.tunnel_retry,
            Duration::ZERO,
        )?;
        slots.push(slot);
        probes.push(probe);
    }
    drop(probe_tx);
    let mut monitor = match Monitor::subscribe() {
        Ok(m) => Some(m),
        Err(e) => {
            warn!("cannot follow kernel events ({e}); falling back to a resync every {RESYNC:?}");
            None
        }
    };
    let mut holes = blackhole::Watch::start(cfg.mptcp_blackhole_timeout, &journal);
    let mut m = Manager {
        rtnl: &rtnl,
        pm: &pm,
        journal: &journal,
        relay,
        dialer: &dialer,
        slots,
        epoch,
        registry: &registry,
        psk: crate::tunnel::keys::preshared(&cfg.key),
        evidence_at: Duration::ZERO,
        trouble: None,
        tunnel_retry: cfg.tunnel_retry,
        stranded: Default::default(),
        lost_joins: Default::default(),
        keeping: false,
    };
    m.reconcile_all().await;
    let mut dirty_at: Option<Instant> = None;
    let mut resync = tokio::time::interval(RESYNC);
    let mut paths = tokio::time::interval(PATH_TICK);
    loop {
        let deadline = m.next_health_deadline();
        tokio::select! {
            _ = shutdown.wait() => break,
            ev = next_event(&mut monitor) => {
                match ev {
                    Some(ev) => m.on_kernel_event(ev),
                    None => monitor = None,
                }
                dirty_at.get_or_insert(Instant::now() + DEBOUNCE);
            }
            Some(ev) = probe_rx.recv() => m.on_probe(ev),
            _ = sleep_until(dirty_at) => {
                dirty_at = None;
                m.reconcile_all().await;
            }
            _ = sleep_until(deadline) => m.tick(),
            Some(next) = reload::next(&mut live) => {
                if next.health != health {
                    m.set_health(&next.health)?;
                    health = next.health;
                }
                // Probes restart either way: at the new interval, with fresh positions.
                probe_rx = m.set_uplinks(next.uplinks, &health, &dialer, &mut probes, &mut limits_before).await?;
            }
            _ = paths.tick() => {
                if m.drive_paths() {
                    m.reconcile_all().await;
                }
            }
            _ = resync.tick() => {
                let active = holes.poll();
                view.send_modify(|v| {
                    v.blackhole_active = active;
                    v.blackhole_count = holes.count();
                    v.blackhole_timeout_secs = holes.timeout_secs();
                });
                m.reconcile_all().await;
            }
        }
        if m.apply_health_changes() {
            // An uplink gone Down is told at once, before the kernel is reconciled (that can
            // take most of a second): the warm pool must not hand out a connection whose
            // subflow rides it meanwhile. Other changes wait for the kernel, as before.
            let now = m.views();
            view.send_if_modified(|v| tell_downs(&mut v.uplinks, &now));
            // The connections that rode an uplink gone Down are first looked at now, before
            // the reconcile closes their subflows, and the next look comes a second later:
            // one left without a subflow is reset then (`braid_proto::stranded`), not up to
            // two seconds later.
            let at = m.now();
            m.sweep_connections(at);
            m.evidence_at = at;
            m.reconcile_all().await;
        }
        let uplinks = m.views();
        view.send_if_modified(|v| {
            if v.uplinks != uplinks {
                v.uplinks = uplinks;
                true
            } else {
                false
            }
        });
    }
    for p in probes {
        p.abort();
    }
    for s in m.slots.drain(..) {
        kernel::remove(&rtnl, &pm, &journal, &s.cfg, &s.endpoint_addrs).await;
        // Dropping the path stops its tunnel; the kernel removes the device.
        drop(s.path);
    }
    holes.stop();
    if let Some(before) = limits_before {
        if let Err(e) = pm.set_limits(before).await {
            warn!("restoring MPTCP limits to {before}: {e}");
        }
    }
    Ok(())
}

/// The probe task of the uplink at position `i`.
fn spawn_probe(
    i: usize,
    dialer: &Arc<Dialer>,
    source: watch::Receiver<Option<ProbeSource>>,
    probe_tx: &mpsc::Sender<ProbeEvent>,
    health: &HealthConfig,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(probe::run(
        i,
        dialer.clone(),
        source,
        probe_tx.clone(),
        health.interval,
    ))
}

async fn next_event(m: &mut Option<Monitor>) -> Option<KernelEvent> {
    match m {
        Some(m) => m.next().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

struct Manager<'a> {
    rtnl: &'a Rtnl,
    pm: &'a MptcpPm,
    journal: &'a Journal,
    relay: IpAddr,
    dialer: &'a Arc<Dialer>,
    slots: Vec<Slot>,
    epoch: Instant,
    registry: &'a crate::status::registry::Registry,
    psk: [u8; 32],
    /// When live connections were last searched for evidence.
    evidence_at: Duration,
    /// The kernel's MPTCP trouble counters at the last search.
    trouble: Option<u64>,
    /// `tunnel_retry_secs`, for uplinks a reload adds.
    tunnel_retry: Duration,
    /// Live connections without a subflow, and since when.
    stranded: braid_proto::stranded::Stranded,
    /// Live connections without the subflow of an uplink that is up, and since when.
    lost_joins: braid_proto::lost_join::LostJoins,
    /// Endpoints were kept at the last reconcile because no uplink carried traffic.
    keeping: bool,
}

impl Manager<'_> {
    /// Looks at every live connection for one left without a subflow (`gateway::stranded`)
    /// and for one without the subflow of an uplink that is up (`gateway::lost_join`): one
    /// MPTCP_INFO per connection per sweep serves both.
    fn sweep_connections(&mut self, now: Duration) {
        let views = self.views();
        let any_up = views.iter().any(|u| u.state.carries_traffic());
        let down: Vec<IpAddr> = views
            .iter()
            .filter(|u| !u.state.carries_traffic())
            .flat_map(UplinkView::subflow_sources)
            .collect();
        let up: Vec<UpUplink> = (views.iter())
            .filter(|u| u.state == LinkState::Up)
            .filter_map(|u| {
                u.join_source().map(|source| UpUplink {
                    name: u.name.clone(),
                    source,
                })
            })
            .collect();
        let (mut stranded, mut lost) = (Vec::new(), Vec::new());
        self.registry.for_each(|live| {
            // A plain TCP socket has no MPTCP_INFO, and a fallen-back connection has TCP's own
            // timeouts and no joins to lose.
            let Ok(info) = mptcp_info(&live.socket) else {
                return;
            };
            if info.fallback() {
                return;
            }
            stranded.extend(crate::gateway::stranded::look(live, &info, &down));
            lost.extend(crate::gateway::lost_join::look(live, &info, &up));
        });
        crate::gateway::stranded::act(self.registry, &mut self.stranded, now, any_up, &stranded);
        crate::gateway::lost_join::act(self.registry, &mut self.lost_joins, now, &lost);
    }

    /// Looks for evidence of hostile paths (at most every [`EVIDENCE_EVERY`]) and drives every
    /// uplink's path; true when a plan changed.
    fn drive_paths(&mut self) -> bool {
        let now = self.now();
        if now.saturating_sub(self.evidence_at) >= EVIDENCE_EVERY {
            self.evidence_at = now;
            self.sweep_connections(now);
            let direct: Vec<(usize, IpAddr)> = self
                .slots
                .iter()
                .enumerate()
                .filter(|(_, s)| s.path.watches_evidence(&s.cfg) && s.state().carries_traffic())
                .filter_map(|(i, s)| {
                    s.found
                        .as_ref()
                        .and_then(|d| d.usable_addr())
                        .map(|a| (i, a))
                })
                .collect();
            let mut suspects = crate::tunnel::evidence::suspects(self.registry, &direct);
            // Idle warm-pool connections carry no LAN traffic and are not in the registry: the
            // pool names the sources of those that fell back to plain TCP.
            if let Some(pool) = self.dialer.pool() {
                for src in pool.take_fell_back_sources() {
                    suspects.extend(direct.iter().filter(|(_, a)| *a == src).map(|(i, _)| *i));
                }
            }
            // The kernel's counters say something went wrong, not where: check every direct one.
            let trouble = braid_sys::sysctl::Procfs::default()
                .file("net/netstat")
                .map(|t| crate::tunnel::evidence::trouble(&t))
                .unwrap_or(0);
            if self.trouble.is_some_and(|t| trouble > t) {
                suspects.extend(direct.iter().map(|(i, _)| *i));
            }
            self.trouble = Some(trouble);
            for i in suspects {
                if let Some(s) = self.slots.get_mut(i) {
                    s.path.suspect(now);
                }
            }
        }
        let mut changed = false;
        for s in &mut self.slots {
            let ctx = path::Ctx {
                cfg: &s.cfg,
                addr: s.found.as_ref().and_then(|d| d.usable_addr()),
                dialer: self.dialer,
                psk: self.psk,
            };
            changed |= s.path.drive(now, &ctx);
        }
        changed
    }

    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    /// What status shows of each uplink.
    fn views(&self) -> Vec<UplinkView> {
        let now = self.now();
        self.slots
            .iter()
            .map(|s| {
                let snap = s.health.snapshot(now);
                let probing = s.probing == Probing::Probes;
                UplinkView {
                    name: s.cfg.name.clone(),
                    interface: s.cfg.interface.clone(),
                    backup: s.cfg.backup,
                    state: s.state(),
                    state_reason: s.state_reason(),
                    addr: s.found.as_ref().and_then(|d| d.addr),
                    rtt_ms: if probing {
                        snap.srtt_ms.map(|r| (r * 10.0).round() / 10.0)
                    } else {
                        None
                    },
                    loss: if probing { snap.loss_ratio } else { 0.0 },
                    state_changes: snap.state_changes,
                    path: s.path.view(),
                }
            })
            .collect()
    }

    fn at(&self, t: Instant) -> Duration {
        t.saturating_duration_since(self.epoch)
    }

    fn next_health_deadline(&self) -> Option<Instant> {
        self.slots
            .iter()
            .filter(|s| s.probing == Probing::Probes)
            .filter_map(|s| s.health.next_deadline())
            .min()
            .map(|d| self.epoch + d)
    }

    fn on_kernel_event(&mut self, ev: KernelEvent) {
        let now = self.now();
        if let KernelEvent::Link {
            ifindex,
            up,
            removed,
            ..
        } = ev
        {
            for s in self
                .slots
                .iter_mut()
                .filter(|s| s.found.as_ref().is_some_and(|d| d.ifindex == ifindex))
            {
                if !up || removed {
                    let t = s.health.on_link_down(now);
                    s.note(t);
                } else if s.health.snapshot(now).kernel_down {
                    s.health.on_link_up(now);
                    // The probe's old stream died with the link: reconnect now, not after a
                    // second of silence.
                    s.source.send_modify(|_| {});
                }
            }
        }
    }

    fn on_probe(&mut self, ev: ProbeEvent) {
        match ev {
            ProbeEvent::Sent { uplink, seq, at } => {
                let t = self.at(at);
                if let Some(s) = self.slots.get_mut(uplink) {
                    s.health.on_ping_sent(seq, t);
                }
            }
            ProbeEvent::Pong { uplink, seq, at } => {
                let t = self.at(at);
                if let Some(s) = self.slots.get_mut(uplink) {
                    let tr = s.health.on_pong(seq, t);
                    s.note(tr);
                }
            }
            ProbeEvent::Unsupported { uplink } => {
                if let Some(s) = self.slots.get_mut(uplink) {
                    s.probing = Probing::LinkOnly;
                    warn!("uplink {}: the relay does not answer braid's health probes (a stock Shadowsocks-2022 server?); this uplink's health now follows its link state only", s.cfg.name);
                }
            }
        }
    }

    fn tick(&mut self) {
        let now = self.now();
        for s in self
            .slots
            .iter_mut()
            .filter(|s| s.probing == Probing::Probes)
        {
            let t = s.health.on_tick(now);
            s.note(t);
        }
    }

    /// True when some uplink changed between carrying and not carrying traffic.
    fn apply_health_changes(&mut self) -> bool {
        let mut changed = false;
        for s in &mut self.slots {
            let st = s.state();
            if st.carries_traffic() != s.last_state.carries_traffic() {
                changed = true;
            }
            s.last_state = st;
        }
        changed
    }

    async fn reconcile_all(&mut self) {
        // Every interface first: one uplink's plan depends on whether any other carries
        // traffic (`HealthVerdict::among`).
        let mut observed = Vec::with_capacity(self.slots.len());
        for s in &mut self.slots {
            let found = match discover::observe(self.rtnl, &s.cfg.interface, self.relay).await {
                Ok(f) => f,
                Err(e) => {
                    warn!("uplink {}: reading its interface failed: {e}", s.cfg.name);
                    observed.push(false);
                    continue;
                }
            };
            observed.push(true);
            let mut found = found;
            remember_gateway(s, &mut found);
            note_changes(s, &found);
            s.found = found;
            let src = s.path.probe_source().or_else(|| {
                s.found.as_ref().and_then(|d| {
                    d.addr.map(|addr| ProbeSource {
                        addr,
                        iface: s.cfg.interface.clone(),
                    })
                })
            });
            s.source.send_if_modified(|cur| {
                if *cur != src {
                    *cur = src.clone();
                    true
                } else {
                    false
                }
            });
        }
        let none_carries = !self.slots.iter().any(|s| s.state().carries_traffic());
        let mut kept = Vec::new();
        for (s, _) in self.slots.iter_mut().zip(observed).filter(|(_, ok)| *ok) {
            let health = HealthVerdict::among(
                s.state(),
                s.state_reason(),
                s.health.state_changes() > 0,
                none_carries,
            );
            reconcile_slot(self.rtnl, self.pm, self.journal, self.relay, s, &health).await;
            // Kept and there (not withheld for its link, say).
            if matches!(health, HealthVerdict::Kept { .. }) && s.endpoint_installed {
                kept.push(s.cfg.name.clone());
            }
        }
        if !kept.is_empty() && !self.keeping {
            warn!(
                "no uplink carries traffic: keeping the MPTCP endpoints of {} so that the connections' subflows resume with the path (withdrawn, they would be closed for good)",
                kept.join(", ")
            );
        }
        self.keeping = !kept.is_empty();
        self.dialer.set_source(preferred_source(&self.slots));
    }
}

/// Plans one uplink from what the kernel says and its `health`, and applies the difference.
async fn reconcile_slot(
    rtnl: &Rtnl,
    pm: &MptcpPm,
    journal: &Journal,
    relay: IpAddr,
    s: &mut Slot,
    health: &HealthVerdict,
) {
    let want = plan::plan_with(&s.cfg, relay, s.found.as_ref(), health, &s.path.plan());
    let current = s.found.as_ref().and_then(|d| d.addr);
    let tunnel = s.path.tunnel_addr();
    for a in [current, tunnel].into_iter().flatten() {
        if !s.endpoint_addrs.contains(&a) {
            s.endpoint_addrs.push(a);
        }
    }
    match kernel::reconcile(rtnl, pm, journal, &s.cfg, &want, &s.endpoint_addrs).await {
        Ok(diffs) => {
            if !diffs.is_empty() {
                debug!("uplink {}: kernel state changed: {diffs:?}", s.cfg.name);
            }
            if s.endpoint_installed
                && diffs
                    .iter()
                    .any(|d| matches!(d, Difference::EndpointMissing(_)))
            {
                warn!(
                    "uplink {}: its MPTCP endpoint was removed by someone else; added it again",
                    s.cfg.name
                );
            }
            s.endpoint_installed = want.endpoint.is_ok();
            // Endpoints on older addresses are gone now.
            s.endpoint_addrs
                .retain(|a| Some(*a) == current || Some(*a) == tunnel);
        }
        Err(e) => warn!("uplink {}: {e}", s.cfg.name),
    }
}

/// Fills in a missing next hop from the last one seen with the same address.
fn remember_gateway(s: &mut Slot, found: &mut Option<Observed>) {
    let Some(d) = found.as_mut() else { return };
    match (d.addr, d.gateway, s.last_gateway) {
        (Some(a), Some(g), _) => s.last_gateway = Some((a, g)),
        (Some(a), None, Some((la, lg))) if a == la => d.gateway = Some(lg),
        _ => {}
    }
}

/// Logs what changed about an uplink's interface, once per change.
fn note_changes(s: &mut Slot, found: &Option<Observed>) {
    let problem = match found {
        None => Some(format!(
            "interface {} does not exist (yet); it will be used when it appears",
            s.cfg.interface
        )),
        Some(d) => d.unusable_because(&s.cfg.interface),
    };
    if problem != s.warned {
        match &problem {
            Some(p) => warn!("uplink {}: {p}", s.cfg.name),
            None if s.warned.is_some() => info!(
                "uplink {}: interface {} is usable again",
                s.cfg.name, s.cfg.interface
            ),
            None => {}
        }
        s.warned = problem;
    }
    let old = s.found.as_ref().and_then(|d| d.addr);
    let new = found.as_ref().and_then(|d| d.addr);
    if let (Some(o), Some(n)) = (old, new) {
        if o != n {
            info!("uplink {}: address changed {o} → {n}", s.cfg.name);
        }
    }
}

/// The source address for new relay connections: the first healthy primary uplink in config
/// order, else the first healthy backup, else the kernel's choice.
fn preferred_source(slots: &[Slot]) -> Option<IpAddr> {
    let healthy = |backup: bool| {
        slots
            .iter()
            .filter(move |s| s.cfg.backup == backup && s.state().carries_traffic())
            .find_map(|s| s.path.source(s.found.as_ref().and_then(|d| d.addr)))
    };
    healthy(false).or_else(|| healthy(true))
}
