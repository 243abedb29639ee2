//! The warm pool's I/O: relay connections opened ahead of need and watched until a LAN
//! connection takes one through the dialer. What to hold, hand out and retire is decided by
//! `braid_proto::pool`; this file opens the sockets and asks the kernel about them.
//!
//! ```text
//!  run(): learn the relay ─► connect_raw (+ a parked request to braid server) ─► core
//!         every 250 ms: closed by the relay? a subflow on every Up uplink? one on a Down one?
//!         at its lifetime: closed unused (the relay's handshake timeout is never reached)
//!  Dialer::open_for / open_lan ──► take(): the connection, checked open and bonded, or a miss
//! ```
//!
//! An idle connection is bonded only if the relay's kernel accepts its joins, and it accepts an
//! MP_JOIN only on a connection fully established on its side (`mptcp_can_accept_new_subflow()`
//! requires `mptcp_is_fully_established()`), which needs data from the client. So against
//! `braid server` each idle connection sends a parked request at once (`braid_proto::park`): the
//! relay waits for the real target, the joins are accepted meanwhile, and the connection is warm
//! (a subflow on every Up uplink) about one round trip of the slowest uplink later. Against a
//! stock server an idle connection sends nothing (its request header is made when a LAN
//! connection takes it, so nothing is ever sent twice or ahead of time): its joins are dropped,
//! it is rarely warm, and the pool serves few LAN connections, but only bonded ones. Only
//! established subflows count (`MPTCP_SUBFLOW_ADDRS` lists pending joins too). The pool waits
//! for the relay's control answer (or its silence: a stock server) before it opens anything, so
//! that every connection to a braid relay is parked.

use std::io;
use std::mem::MaybeUninit;
use std::net::IpAddr;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use braid_proto::health::LinkState;
use braid_proto::pool::{Discard, Mode, Pool, PoolStats, RelayLimits, Review};
use braid_proto::tunnel::Path;
use braid_sys::keepalive::Liveness;
use braid_sys::mptcp::info::{established_subflow_addrs, mptcp_state, subflow_addrs, MptcpState};
use tokio::net::TcpStream;
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use super::dialer::{source_of, Dialer, RelayStream};
use super::uplink::{ManagerView, UplinkView};

/// How often idle connections are looked at (closed by the relay, subflows joined).
const REVIEW_EVERY: Duration = Duration::from_millis(250);
/// At most this many fell-back sources wait for the uplink manager (one per uplink is enough).
const MAX_FELL_BACK_SOURCES: usize = 16;
/// What [`Pool::review`] returns: the entries let go, and a relay timeout learned.
type Reviewed = (Vec<(Idle, Discard)>, Option<Duration>);
/// Keepalive while a connection waits for its other subflows (see the module documentation).
const WARMING: Liveness = Liveness {
    idle: Duration::from_secs(1),
    interval: Duration::from_secs(1),
    probes: 3,
    user_timeout: crate::listener::LIVENESS.user_timeout,
};
/// How often a braid relay is asked its limits again (it may restart with another config).
const ASK_RELAY_EVERY: Duration = Duration::from_secs(600);
/// How soon an unreachable relay is asked again.
const ASK_RELAY_RETRY: Duration = Duration::from_secs(30);

/// A connection the pool hands out.
pub enum Pooled {
    /// Nothing sent yet (a stock server): the LAN connection's request header goes first.
    Raw(TcpStream),
    /// A parked request sent (`braid server`): the LAN connection's target goes first, as the
    /// second stage. Boxed: the cipher state is large, and idle entries are moved around.
    Parked(Box<RelayStream>),
}

impl Pooled {
    /// The socket, for the kernel's answers.
    fn socket(&self) -> &TcpStream {
        match self {
            Pooled::Raw(s) => s,
            Pooled::Parked(r) => r.get_ref(),
        }
    }
}

/// An idle relay connection.
struct Idle {
    conn: Pooled,
    /// The warming keepalive is still set.
    warming: bool,
    /// The local addresses of its established subflows at the last review: one of an uplink
    /// that is still up gone since is a subflow lost for good.
    joined: Vec<IpAddr>,
}

/// The gateway's warm pool; the dialer takes from it, [`WarmPool::run`] fills it.
pub struct WarmPool {
    core: Mutex<Pool<Idle>>,
    refill: Notify,
    epoch: Instant,
    /// The uplink manager's view, read again at each take: a connection flagged warm at the
    /// last review may lack the subflow of an uplink that came Up since.
    view: Mutex<Option<watch::Receiver<ManagerView>>>,
    /// The relay has answered the control request, or proven a stock server: whether to park
    /// is known, and connections may be opened.
    relay_known: AtomicBool,
    /// The local addresses of idle connections that fell back to plain TCP, until the uplink
    /// manager collects them as evidence of a path that strips MPTCP (`tunnel::evidence`):
    /// the pool's connections carry no LAN traffic, so nothing else would notice them.
    fell_back: Mutex<Vec<IpAddr>>,
    /// An idle connection was MPTCP: the relay speaks it, so one that falls back met a path
    /// that strips it, and is not handed out. (Against a relay without MPTCP every connection
    /// falls back, and is as good as a fresh one.)
    relay_mptcp: AtomicBool,
}

impl WarmPool {
    /// A pool in `mode` (`warm_pool`), assuming a relay that does not say otherwise closes
    /// idle connections after `assumed_timeout` (`relay_handshake_timeout_secs`).
    pub fn new(mode: Mode, assumed_timeout: Duration) -> Arc<WarmPool> {
        Arc::new(WarmPool {
            core: Mutex::new(Pool::new(mode, assumed_timeout)),
            refill: Notify::new(),
            epoch: Instant::now(),
            view: Mutex::new(None),
            relay_known: AtomicBool::new(false),
            fell_back: Mutex::new(Vec::new()),
            relay_mptcp: AtomicBool::new(false),
        })
    }

    fn core(&self) -> MutexGuard<'_, Pool<Idle>> {
        self.core.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    /// An idle connection for a new LAN connection, moved out of the pool (it is never handed
    /// out again), or `None` (a miss). One the relay has closed is discarded on the way, never
    /// returned.
    pub fn take(&self) -> Option<Pooled> {
        let now = self.now();
        let uplinks = self
            .view
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|rx| UplinkAddrs::of(&rx.borrow()));
        let (gone, taken) = {
            let mut core = self.core();
            // Warm as of now: only a connection with a subflow on every Up uplink is bonded.
            let gone = uplinks.map(|u| self.review_all(&mut core, now, &u).0);
            (gone, core.take(now, |i| still_open(i.conn.socket())))
        };
        self.refill.notify_one();
        for (idle, why) in gone.into_iter().flatten() {
            closed(idle, why);
        }
        for idle in taken.discarded {
            closed(idle, Discard::Closed);
        }
        let idle = taken.item?;
        if idle.warming {
            restore_keepalive(idle.conn.socket());
        }
        Some(idle.conn)
    }

    /// The local addresses of idle connections found fallen back to plain TCP since the last
    /// call (each once): evidence that the path of the uplink with that address strips MPTCP.
    pub fn take_fell_back_sources(&self) -> Vec<IpAddr> {
        std::mem::take(&mut *self.fell_back.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Runs [`review`] on every idle connection, keeping the sources of those that fell back.
    fn review_all(&self, core: &mut Pool<Idle>, now: Duration, uplinks: &UplinkAddrs) -> Reviewed {
        let mut seen = Seen {
            relay_mptcp: self.relay_mptcp.load(Ordering::Relaxed),
            fell_back: Vec::new(),
        };
        let r = core.review(now, |i, _age| review(i, uplinks, &mut seen));
        if seen.relay_mptcp {
            self.relay_mptcp.store(true, Ordering::Relaxed);
        }
        if !seen.fell_back.is_empty() {
            let mut sources = self.fell_back.lock().unwrap_or_else(|p| p.into_inner());
            for ip in seen.fell_back {
                // A handful of uplinks: the list stays tiny even if nobody collects it.
                if !sources.contains(&ip) && sources.len() < MAX_FELL_BACK_SOURCES {
                    sources.push(ip);
                }
            }
        }
        r
    }

    /// Sizes and counters, for status and metrics.
    pub fn stats(&self) -> PoolStats {
        let now = self.now();
        self.core().stats(now)
    }

    /// Keeps the pool filled, its connections watched and its knowledge of the relay current,
    /// until the task is aborted (the gateway's shutdown), which closes every idle connection.
    /// `uplinks` is the uplink manager's view: connections on a Down uplink are dropped, and a
    /// connection is warm once every Up uplink has a subflow in it.
    pub async fn run(
        self: Arc<Self>,
        dialer: Arc<Dialer>,
        mut uplinks: watch::Receiver<ManagerView>,
    ) {
        if self.core().mode() == Mode::Off {
            return;
        }
        *self.view.lock().unwrap_or_else(|p| p.into_inner()) = Some(uplinks.clone());
        let _drain = DrainOnDrop(self.clone());
        let mut background = JoinSet::new();
        background.spawn(learn_relay(self.clone(), dialer.clone()));
        let mut opens: JoinSet<io::Result<Pooled>> = JoinSet::new();
        let mut tick = tokio::time::interval(REVIEW_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut view_open = true;
        loop {
            let view = uplinks.borrow_and_update().clone();
            self.maintain(&view);
            let now = self.now();
            let (n, deadline, parks) = {
                let mut core = self.core();
                let known = self.relay_known.load(Ordering::Relaxed);
                let n = if UplinkAddrs::of(&view).waiting() || !known {
                    0
                } else {
                    core.to_open(now)
                };
                (n, core.next_deadline(now), core.parks())
            };
            for _ in 0..n {
                let d = dialer.clone();
                opens.spawn(async move { open_idle(&d, parks).await });
            }
            let sleep = deadline.map(|d| self.epoch + d);
            tokio::select! {
                _ = self.refill.notified() => {}
                r = uplinks.changed(), if view_open => view_open = r.is_ok(),
                _ = tick.tick() => {}
                Some(r) = opens.join_next() => self.on_opened(r),
                _ = sleep_until(sleep) => {}
            }
        }
    }

    /// Retires aged connections and reviews the rest against the kernel and `view`.
    fn maintain(&self, view: &ManagerView) {
        let now = self.now();
        let uplinks = UplinkAddrs::of(view);
        let (aged, (gone, learned), lifetime) = {
            let mut core = self.core();
            let aged = core.expire(now);
            let reviewed = self.review_all(&mut core, now, &uplinks);
            (aged, reviewed, core.lifetime())
        };
        for (idle, why) in aged.into_iter().chain(gone) {
            closed(idle, why);
        }
        if let Some(age) = learned {
            match lifetime {
                Some(l) => info!(
                    "warm pool: the relay closed an idle connection after {:.1} s, sooner than assumed; idle connections are now kept {:.1} s (set relay_handshake_timeout_secs to the relay's handshake timeout to say it)",
                    age.as_secs_f64(),
                    l.as_secs_f64()
                ),
                None => warn!(
                    "warm pool suspended: the relay closes a connection that sends no request after {:.1} s, too soon to keep one warm; fix: raise the relay's handshake timeout, or set warm_pool = \"off\"",
                    age.as_secs_f64()
                ),
            }
        }
    }

    fn on_opened(&self, r: Result<io::Result<Pooled>, tokio::task::JoinError>) {
        let now = self.now();
        match r {
            Ok(Ok(conn)) => {
                let idle = Idle {
                    conn,
                    warming: true,
                    joined: Vec::new(),
                };
                // Returned when the pool no longer wants it.
                let unwanted = self.core().opened(now, idle);
                if let Some(idle) = unwanted {
                    closed(idle, Discard::Unwanted);
                }
            }
            Ok(Err(e)) => {
                debug!("warm pool: cannot connect to the relay: {e}");
                self.core().open_failed(now);
            }
            Err(e) => {
                debug!("warm pool: a connect task failed: {e}");
                self.core().open_failed(now);
            }
        }
    }

    /// Uses `braid server`'s stated limits from now on.
    fn set_relay(&self, limits: RelayLimits) {
        let (lifetime, cap) = {
            let mut core = self.core();
            let before = (core.lifetime(), core.cap(), core.parks());
            core.set_relay(limits);
            if before == (core.lifetime(), core.cap(), core.parks()) {
                return;
            }
            (core.lifetime(), core.cap())
        };
        if limits.parks {
            info!("warm pool: the relay takes parked requests; idle connections are bonded before use");
        }
        match lifetime {
            Some(l) => info!(
                "warm pool: the relay closes a connection without a request after {:.0} s and takes {} per source; up to {cap} idle connection(s), each kept {:.1} s",
                limits.handshake_timeout.as_secs_f64(),
                limits.max_per_source,
                l.as_secs_f64()
            ),
            None => warn!(
                "warm pool suspended: the relay's handshake_timeout_secs ({:.0} s) is too short to keep a connection warm; fix: raise it on the relay, or set warm_pool = \"off\"",
                limits.handshake_timeout.as_secs_f64()
            ),
        }
        self.refill.notify_one();
    }

    /// Lets [`WarmPool::run`] open connections.
    fn relay_is_known(&self) {
        if !self.relay_known.swap(true, Ordering::Relaxed) {
            self.refill.notify_one();
        }
    }
}

/// Closes every idle connection when [`WarmPool::run`] ends.
struct DrainOnDrop(Arc<WarmPool>);

impl Drop for DrainOnDrop {
    fn drop(&mut self) {
        drop(self.0.core().drain());
    }
}

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

/// Opens one idle connection, parked on the relay when it takes that: no TFO (a parked
/// request gains nothing from it), the warming keepalive.
async fn open_idle(dialer: &Dialer, parks: bool) -> io::Result<Pooled> {
    let stream = dialer.connect_raw(false).await?;
    if let Err(e) = braid_sys::keepalive::apply(&stream, &WARMING) {
        debug!("warm pool: keepalive: {e}");
    }
    if parks {
        return Ok(Pooled::Parked(Box::new(dialer.park(stream).await?)));
    }
    Ok(Pooled::Raw(stream))
}

fn restore_keepalive(stream: &TcpStream) {
    if let Err(e) = braid_sys::keepalive::apply(stream, &crate::listener::LIVENESS) {
        debug!("warm pool: keepalive: {e}");
    }
}

/// Asks the relay for its limits (a braid relay answers the control request; a stock one
/// closes the stream), again every ten minutes, or every 30 s while it cannot be reached. The
/// pool opens connections once the first answer (or a stock server's silence) is in.
async fn learn_relay(pool: Arc<WarmPool>, dialer: Arc<Dialer>) {
    loop {
        let (_, report) = super::tfo_probe::exchange(&dialer, false).await;
        let wait = match report.and_then(|r| r.handshake) {
            Some(h) => {
                pool.set_relay(RelayLimits {
                    handshake_timeout: Duration::from_millis(h.timeout_ms),
                    max_per_source: u32::try_from(h.max_per_source).unwrap_or(u32::MAX),
                    parks: h.parks,
                });
                pool.relay_is_known();
                ASK_RELAY_EVERY
            }
            None if dialer.connect_raw(false).await.is_ok() => {
                debug!("warm pool: the relay does not state its handshake timeout (a stock server or an older braid); keeping the assumed one, idle connections send nothing");
                pool.relay_is_known();
                return;
            }
            None => ASK_RELAY_RETRY,
        };
        tokio::time::sleep(wait).await;
    }
}

/// Whether the relay has not closed (or reset) a connection that has sent nothing: a read would
/// block. EOF, an error, or data the relay should never send before a request all say no.
fn still_open(stream: &TcpStream) -> bool {
    let mut one = [MaybeUninit::<u8>::uninit(); 1];
    matches!(
        socket2::SockRef::from(stream).peek(&mut one),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock
    )
}

/// The uplinks' addresses by state, from the manager's view.
struct UplinkAddrs {
    /// Up: a warm connection has a subflow from each (the tunnel's address for an uplink whose
    /// path is tunnelled, none for one left out).
    up: Vec<IpAddr>,
    /// Down: a connection with a subflow from one is dropped. (Recovering, the state every
    /// uplink starts in, is not Down: the kernel's choice of source may well be such an uplink
    /// before the first probes.)
    down: Vec<IpAddr>,
    /// Uplinks are configured: every established subflow must ride one in `usable`.
    configured: bool,
    /// Up or Suspect: the uplinks that have an MPTCP endpoint in the plan.
    usable: Vec<IpAddr>,
    /// The own addresses of uplinks whose direct path strips MPTCP (tunnelled or left out): a
    /// subflow from one, joined before that was found, loses its MPTCP options on the way.
    hostile: Vec<IpAddr>,
}

impl UplinkAddrs {
    fn of(view: &ManagerView) -> UplinkAddrs {
        // Where an uplink's subflows come from on its current path.
        let source = UplinkView::join_source;
        let with = |state: LinkState| {
            view.uplinks
                .iter()
                .filter(|u| u.state == state)
                .filter_map(source)
                .collect::<Vec<_>>()
        };
        let up = with(LinkState::Up);
        UplinkAddrs {
            configured: !view.uplinks.is_empty(),
            usable: [up.clone(), with(LinkState::Suspect)].concat(),
            up,
            down: view
                .uplinks
                .iter()
                .filter(|u| u.state == LinkState::Down)
                .flat_map(UplinkView::subflow_sources)
                .collect(),
            hostile: view
                .uplinks
                .iter()
                .filter(|u| u.path.path != Path::Direct)
                .filter_map(|u| u.addr)
                .collect(),
        }
    }

    /// Uplinks are configured but none is Up yet: opening would only pick a source at random.
    fn waiting(&self) -> bool {
        self.configured && self.up.is_empty()
    }
}

/// What reviews learn across idle connections.
struct Seen {
    /// A connection was MPTCP (in), or is (out).
    relay_mptcp: bool,
    /// The sources of connections that fell back to plain TCP.
    fell_back: Vec<IpAddr>,
}

/// Looks at one idle connection: closed, on a Down uplink or a stripping path, warm or still
/// joining; notes in `seen` whether it is MPTCP, or fell back though it asked for MPTCP.
/// Restores the usual keepalive once it is warm.
fn review(idle: &mut Idle, uplinks: &UplinkAddrs, seen: &mut Seen) -> Review {
    let socket = idle.conn.socket();
    if !still_open(socket) {
        return Review::Closed;
    }
    // Any subflow on a Down uplink, whatever its TCP state (one that went down with its link
    // may already have left ESTABLISHED).
    let (_, all) = subflow_locals_in(socket, false);
    if all.iter().any(|a| uplinks.down.contains(a)) {
        return Review::UplinkDown;
    }
    if all.iter().any(|a| uplinks.hostile.contains(a)) {
        return Review::Stripped;
    }
    let (state, locals) = subflow_locals(socket);
    match state {
        MptcpState::Fallback => {
            seen.fell_back.extend(locals.first().copied());
            // Also what a connection becomes when a path starts stripping after its handshake
            // (its parked request lost its mapping): the relay resets those at their first data.
            if seen.relay_mptcp {
                return Review::Stripped;
            }
        }
        MptcpState::Mptcp { .. } => seen.relay_mptcp = true,
        MptcpState::Tcp => {}
    }
    // An established subflow from an address no usable uplink has: its uplink went Down and
    // lost its address with the link (so the Down list above cannot name it), or is recovering
    // from that. The subflow is likely dead, and a LAN connection on it waits for the kernel's
    // retransmissions; lab_pool's flaps left echoes hung for 30 s.
    if uplinks.configured && locals.iter().any(|a| !uplinks.usable.contains(a)) {
        return Review::UplinkDown;
    }
    // A subflow of an uplink that is still up, seen established before and gone now: the
    // in-kernel path manager never joins that endpoint to the connection again.
    let lost = (idle.joined.iter()).any(|a| uplinks.up.contains(a) && !locals.contains(a));
    idle.joined = locals.clone();
    if lost {
        return Review::LostJoin;
    }
    // A connection that is not MPTCP (plain TCP, or fallen back) has nothing to wait for.
    let joined =
        !matches!(state, MptcpState::Mptcp { .. }) || uplinks.up.iter().all(|a| locals.contains(a));
    // An uplink that comes Up again joins idle connections only once they hear from the relay:
    // the warming keepalive returns until it has.
    if idle.warming == joined {
        let l = if joined {
            &crate::listener::LIVENESS
        } else {
            &WARMING
        };
        if let Err(e) = braid_sys::keepalive::apply(socket, l) {
            debug!("warm pool: keepalive: {e}");
        }
        idle.warming = !joined;
    }
    if joined {
        Review::Warm
    } else {
        Review::Joining
    }
}

/// What a relay socket is, and the local address of each of its established subflows (the
/// socket's own when it is not MPTCP): a join still in SYN_SENT does not make a connection warm.
pub(crate) fn subflow_locals<S: AsFd>(socket: &S) -> (MptcpState, Vec<IpAddr>) {
    subflow_locals_in(socket, true)
}

/// Like [`subflow_locals`], with every subflow listed when `established_only` is false.
fn subflow_locals_in<S: AsFd>(socket: &S, established_only: bool) -> (MptcpState, Vec<IpAddr>) {
    let state = mptcp_state(socket);
    let addrs = |s: &S| {
        if established_only {
            established_subflow_addrs(s)
        } else {
            subflow_addrs(s)
        }
    };
    let locals = match state {
        MptcpState::Mptcp { .. } => addrs(socket)
            .map(|v| {
                v.into_iter()
                    .map(|(l, _)| braid_sys::socket::normalize(l).ip())
                    .collect()
            })
            .unwrap_or_default(),
        _ => socket2::SockRef::from(socket)
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .map(|a| vec![braid_sys::socket::normalize(a).ip()])
            .unwrap_or_default(),
    };
    (state, locals)
}

/// Closes an idle connection the pool let go, and says so with its address: that is the
/// relay's name for it, and a close sent while its only subflow's uplink is down never arrives,
/// so the relay logs this address at its handshake timeout. Every way out of the pool but a
/// take goes through here. (The address is read only when debug lines are written.)
fn closed(idle: Idle, why: Discard) {
    debug!(
        "warm pool: closed an idle relay connection from {} ({})",
        source_of(idle.conn.socket()),
        discard_reason(why)
    );
}

fn discard_reason(d: Discard) -> &'static str {
    match d {
        Discard::Aged => "unused at its lifetime, before the relay's handshake timeout",
        Discard::Closed => "the relay closed it first",
        Discard::UplinkDown => "one of its subflows rode an uplink that went Down",
        Discard::Stripped => "it fell back to plain TCP though the relay speaks MPTCP, or a subflow rode a direct path found to strip MPTCP",
        Discard::LostJoin => "it lost the subflow of an uplink that is up, which the kernel never joins to it again",
        Discard::Unwanted => "the pool no longer wants it",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (s, _) = l.accept().await.unwrap();
        (c, s)
    }

    /// A pool holding `streams` as idle connections, as `run` would after their connects.
    fn pool_of(streams: Vec<TcpStream>) -> Arc<WarmPool> {
        let pool = WarmPool::new(Mode::Fixed(streams.len() as u32), Duration::from_secs(15));
        let now = pool.now();
        let mut core = pool.core();
        assert_eq!(core.to_open(now) as usize, streams.len());
        for stream in streams {
            let idle = Idle {
                conn: Pooled::Raw(stream),
                warming: false,
                joined: Vec::new(),
            };
            assert!(core.opened(now, idle).is_none());
        }
        // Plain TCP: nothing to join, so warm at the first review.
        let _ = core.review(now, |_, _| Review::Warm);
        drop(core);
        pool
    }

    #[tokio::test]
    async fn connection_closed_by_the_relay_before_use_is_never_handed_out() {
        let (closed, relay_side) = pair().await;
        drop(relay_side);
        let (open, _relay_side) = pair().await;
        let open_port = open.local_addr().unwrap().port();
        // The closed one is the oldest, so it is offered first.
        let pool = pool_of(vec![closed, open]);
        // The FIN has arrived once a read would return EOF.
        let taken = pool.take().expect("the open connection");
        assert_eq!(taken.socket().local_addr().unwrap().port(), open_port);
        assert!(pool.take().is_none(), "nothing else is usable");
        let st = pool.stats();
        assert_eq!((st.hits, st.misses, st.closed_by_relay), (1, 1, 1));
    }

    #[tokio::test]
    async fn review_finds_a_connection_the_relay_reset() {
        let (c, s) = pair().await;
        socket2::SockRef::from(&s)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(s);
        let mut idle = Idle {
            conn: Pooled::Raw(c),
            warming: false,
            joined: Vec::new(),
        };
        let none = UplinkAddrs {
            up: vec![],
            down: vec![],
            configured: false,
            usable: vec![],
            hostile: vec![],
        };
        // The RST may take a moment to arrive on loopback.
        let deadline = Instant::now() + Duration::from_secs(2);
        while review(&mut idle, &none, &mut seen()) != Review::Closed {
            assert!(Instant::now() < deadline, "reset not seen");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn connection_from_a_down_uplinks_address_is_dropped_and_plain_tcp_is_warm() {
        let (c, _s) = pair().await;
        let mut idle = Idle {
            conn: Pooled::Raw(c),
            warming: true,
            joined: Vec::new(),
        };
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let down = UplinkAddrs {
            up: vec![],
            down: vec![lo],
            configured: true,
            usable: vec![],
            hostile: vec![],
        };
        assert_eq!(review(&mut idle, &down, &mut seen()), Review::UplinkDown);
        // Its uplink lost its address with the link: no Down uplink names it, no Up one has it.
        let gone = UplinkAddrs {
            up: vec!["10.2.0.1".parse().unwrap()],
            down: vec![],
            configured: true,
            usable: vec!["10.2.0.1".parse().unwrap()],
            hostile: vec![],
        };
        assert_eq!(review(&mut idle, &gone, &mut seen()), Review::UplinkDown);
        let up = UplinkAddrs {
            up: vec![lo, "10.2.0.1".parse().unwrap()],
            down: vec![],
            configured: true,
            usable: vec![lo, "10.2.0.1".parse().unwrap()],
            hostile: vec![],
        };
        // Plain TCP cannot join other uplinks: it is as warm as it gets.
        let mut s = seen();
        assert_eq!(review(&mut idle, &up, &mut s), Review::Warm);
        assert!(!idle.warming, "the usual keepalive is back");
        assert!(s.fell_back.is_empty(), "plain TCP by choice is no evidence");
    }

    fn seen() -> Seen {
        Seen {
            relay_mptcp: false,
            fell_back: vec![],
        }
    }

    /// An MPTCP connection to a plain TCP listener on loopback: it falls back, as one whose
    /// path strips the MP_CAPABLE option does.
    async fn fallen_back() -> (TcpStream, std::net::TcpStream) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let to = l.local_addr().unwrap();
        let (sock, _, why) = braid_sys::socket::stream_socket(&to, true).unwrap();
        assert!(why.is_none(), "this kernel has no MPTCP: {why:?}");
        let c = tokio::net::TcpSocket::from_std_stream(sock.into())
            .connect(to)
            .await
            .unwrap();
        let (relay_side, _) = l.accept().unwrap();
        (c, relay_side)
    }

    #[tokio::test]
    async fn fallen_back_connection_is_evidence_and_dropped_once_the_relay_proved_mptcp() {
        let (c, _relay_side) = fallen_back().await;
        assert_eq!(mptcp_state(&c), MptcpState::Fallback);
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let mut idle = Idle {
            conn: Pooled::Raw(c),
            warming: false,
            joined: Vec::new(),
        };
        let mut uplinks = UplinkAddrs {
            up: vec![lo],
            down: vec![],
            configured: true,
            usable: vec![lo],
            hostile: vec![],
        };
        // No connection was MPTCP yet (a relay without MPTCP, or a path stripping since the
        // start): as good as a fresh connect on that path, kept, and its source is the uplink
        // manager's evidence.
        let mut s = seen();
        assert_eq!(review(&mut idle, &uplinks, &mut s), Review::Warm);
        assert_eq!((s.fell_back, s.relay_mptcp), (vec![lo], false));
        // Once another was MPTCP, a fallback means a stripping path: never handed out.
        let mut s = Seen {
            relay_mptcp: true,
            fell_back: vec![],
        };
        assert_eq!(review(&mut idle, &uplinks, &mut s), Review::Stripped);
        assert_eq!(s.fell_back, vec![lo]);
        // And once the uplink's direct path is found to strip MPTCP, it goes in any case.
        uplinks.hostile = vec![lo];
        assert_eq!(review(&mut idle, &uplinks, &mut seen()), Review::Stripped);
    }

    #[tokio::test]
    async fn pool_hands_the_fallen_back_source_to_the_manager_once() {
        let (c, _relay_side) = fallen_back().await;
        let pool = WarmPool::new(Mode::Fixed(1), Duration::from_secs(15));
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        {
            let mut core = pool.core();
            let now = pool.now();
            assert_eq!(core.to_open(now), 1);
            let idle = Idle {
                conn: Pooled::Raw(c),
                warming: false,
                joined: Vec::new(),
            };
            assert!(core.opened(now, idle).is_none());
            let uplinks = UplinkAddrs {
                up: vec![lo],
                down: vec![],
                configured: true,
                usable: vec![lo],
                hostile: vec![],
            };
            for _ in 0..3 {
                let (gone, _) = pool.review_all(&mut core, now, &uplinks);
                assert!(gone.is_empty());
            }
        }
        assert_eq!(pool.take_fell_back_sources(), vec![lo]);
        assert!(pool.take_fell_back_sources().is_empty());
    }
}
