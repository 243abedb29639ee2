//! One uplink's path — direct, tunnelled or left out — as the uplink manager drives it: the
//! decision (`braid_proto::tunnel::Decider`), the direct-path checks it asks for, and the
//! tunnel it wants (`crate::tunnel::gateway`).
//!
//! ```text
//!  evidence ─► suspect() ─┐
//!  every tick ─► drive() ─┼─► check finished? ─► Decider::on_check ─► log the change, once
//!                         ├─► check due? ─► spawn check::direct
//!                         └─► tunnel wanted? ─► spawn / follow / stop it ─► on_tunnel_up / _failed
//!  plan() ─► PathPlan for plan::plan_with;  probe_source(), source() ─► probes, dialer
//! ```
//! A tunnel given up because the direct path works again lingers for [`LINGER`], so subflows
//! still on it are not cut before the direct ones are up.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use boringtun::x25519::{PublicKey, StaticSecret};
use braid_proto::tunnel::{Checked, Decider, Mode, Path};
use futures::FutureExt;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::plan::{PathPlan, TunnelAt};
use super::probe::ProbeSource;
use crate::config::gateway::Uplink;
use crate::gateway::dialer::Dialer;
use crate::tunnel::gateway::{self as tunnel_end, State};

/// How long a tunnel stays up after the uplink moved back to the direct path.
pub const LINGER: Duration = Duration::from_secs(10);

/// What status shows of an uplink's path.
#[derive(Debug, Clone, PartialEq)]
pub struct PathView {
    /// Direct, tunnel or out.
    pub path: Path,
    /// Why.
    pub reason: String,
    /// The tunnel's device and address, while it is up.
    pub tunnel: Option<(String, IpAddr)>,
}

/// What driving a path needs from the manager.
pub struct Ctx<'a> {
    /// The uplink.
    pub cfg: &'a Uplink,
    /// Its usable address (link up), if any.
    pub addr: Option<IpAddr>,
    /// Opens streams to the relay.
    pub dialer: &'a Arc<Dialer>,
    /// WireGuard's pre-shared key.
    pub psk: [u8; 32],
}

/// One uplink's path.
pub struct PathState {
    decider: Decider,
    secret: StaticSecret,
    public: PublicKey,
    tunnel: Option<(tunnel_end::Handle, IpAddr)>,
    up: Option<(String, TunnelAt)>,
    lingering: Option<(tunnel_end::Handle, Duration)>,
    check: Option<JoinHandle<Checked>>,
}

impl PathState {
    /// The path of `u` at `now` (since the manager's epoch), with its own tunnel key pair.
    pub fn new(u: &Uplink, retry: Duration, now: Duration) -> std::io::Result<PathState> {
        let (secret, public) = crate::tunnel::keys::generate()?;
        Ok(PathState {
            decider: Decider::new(u.tunnel, retry, now),
            secret,
            public,
            tunnel: None,
            up: None,
            lingering: None,
            check: None,
        })
    }

    /// The decided path.
    pub fn path(&self) -> Path {
        self.decider.path()
    }

    /// The path as the plan takes it.
    pub fn plan(&self) -> PathPlan {
        match (self.decider.path(), &self.up) {
            (Path::Direct, _) => PathPlan::Direct,
            (Path::Tunnel, Some((_, at))) => PathPlan::Tunnel(*at),
            (Path::Tunnel, None) => PathPlan::Withheld(format!(
                "waiting for the tunnel ({})",
                self.decider.reason()
            )),
            (Path::Out, _) => PathPlan::Withheld(self.decider.reason().to_string()),
        }
    }

    /// Where the uplink's health probes go from: the tunnel while it carries the uplink.
    pub fn probe_source(&self) -> Option<ProbeSource> {
        let (device, at) = self.up.as_ref().filter(|_| self.decider.tunnelled())?;
        Some(ProbeSource {
            addr: at.addr,
            iface: device.parse().ok()?,
        })
    }

    /// The source address of new connections over this uplink, whose address is `addr`:
    /// the tunnel's while tunnelled, none while neither path works.
    pub fn source(&self, addr: Option<IpAddr>) -> Option<IpAddr> {
        match self.plan() {
            PathPlan::Direct => addr,
            PathPlan::Tunnel(at) => Some(at.addr),
            PathPlan::Withheld(_) => None,
        }
    }

    /// The tunnel's address, while it is up (its endpoint may be in the kernel).
    pub fn tunnel_addr(&self) -> Option<IpAddr> {
        self.up.as_ref().map(|(_, at)| at.addr)
    }

    /// What status shows.
    pub fn view(&self) -> PathView {
        PathView {
            path: self.decider.path(),
            reason: self.decider.reason().to_string(),
            tunnel: self.up.as_ref().map(|(d, at)| (d.clone(), at.addr)),
        }
    }

    /// Whether the uplink is on the direct path under `tunnel = "auto"` (evidence counts).
    pub fn watches_evidence(&self, u: &Uplink) -> bool {
        u.tunnel == Mode::Auto && self.decider.path() == Path::Direct
    }

    /// Live connections suggest the direct path is broken.
    pub fn suspect(&mut self, now: Duration) {
        self.decider.on_suspicion(now);
    }

    /// When [`PathState::drive`] has a deadline.
    pub fn next_deadline(&self) -> Option<Duration> {
        self.decider.next_deadline()
    }

    /// Collects a finished check, starts a due one, and starts, follows or stops the tunnel.
    /// True when the plan changed.
    pub fn drive(&mut self, now: Duration, ctx: &Ctx<'_>) -> bool {
        let before = self.plan();
        let name = &ctx.cfg.name;
        if let Some(verdict) = self
            .check
            .as_mut()
            .and_then(|c| c.now_or_never())
            .map(|r| r.unwrap_or_else(|e| Checked::Inconclusive(e.to_string())))
        {
            self.check = None;
            tracing::debug!("uplink {name}: direct-path check: {verdict:?}");
            if let Some(line) = self.decider.on_check(now, verdict) {
                info!("uplink {name}: {line}");
            }
        }
        if let Some(addr) = ctx.addr {
            if self.check.is_none() && self.decider.poll(now) {
                let (d, iface) = (ctx.dialer.clone(), ctx.cfg.interface.clone());
                self.check = Some(tokio::spawn(async move {
                    crate::tunnel::check::direct(&d, addr, &iface).await
                }));
            }
        }
        self.follow_tunnel(now, ctx);
        if self
            .lingering
            .as_ref()
            .is_some_and(|(_, since)| now.saturating_sub(*since) > LINGER)
        {
            self.lingering = None;
        }
        self.plan() != before
    }

    fn follow_tunnel(&mut self, now: Duration, ctx: &Ctx<'_>) {
        let name = &ctx.cfg.name;
        if !self.decider.wants_tunnel() {
            if let Some((h, _)) = self.tunnel.take() {
                self.lingering = Some((h, now));
            }
            self.up = None;
            return;
        }
        // A tunnel whose outer source address is gone is of no use.
        if self
            .tunnel
            .as_ref()
            .is_some_and(|(_, src)| Some(*src) != ctx.addr)
        {
            self.tunnel = None;
            self.up = None;
        }
        if self.tunnel.is_none() {
            let Some(src) = ctx.addr else { return };
            self.lingering = None;
            let spec = tunnel_end::Spec {
                uplink: name.clone(),
                iface: ctx.cfg.interface.clone(),
                src,
                device: device_name(ctx.cfg),
                relay: ctx.dialer.relay(),
                dialer: ctx.dialer.clone(),
                psk: ctx.psk,
                secret: self.secret.clone(),
                public: self.public,
            };
            self.tunnel = Some((tunnel_end::spawn(spec), src));
        }
        let state = match &self.tunnel {
            Some((h, _)) => h.state.borrow().clone(),
            None => return,
        };
        match state {
            State::Up {
                device,
                ifindex,
                addr,
                handshake_ms,
            } if self.up.is_none() => {
                self.up = Some((
                    device.clone(),
                    TunnelAt {
                        ifindex,
                        addr: addr.into(),
                    },
                ));
                if let Some(line) = self.decider.on_tunnel_up(now) {
                    info!("uplink {name}: {line}; device {device} {addr}, handshake in {handshake_ms} ms");
                }
            }
            State::Up { .. } => {}
            State::Starting => self.up = None,
            State::Failed(why) => {
                self.tunnel = None;
                self.up = None;
                if let Some(line) = self.decider.on_tunnel_failed(now, &why) {
                    warn!("uplink {name}: {line}");
                }
            }
        }
    }
}

/// The tunnel device of uplink `u`: `braid-t<table>` (the table is unique per gateway).
pub fn device_name(u: &Uplink) -> String {
    format!("braid-t{}", u.table)
}
