//! The warm pool's rules: how many idle relay connections the gateway holds, which one a new LAN
//! connection gets, and when one is retired. The gateway's I/O layer (`gateway/pool.rs`) opens
//! the sockets and asks the kernel about them; everything it decides goes through [`Pool`].
//!
//! ```text
//!  LAN connection ──take()──► the oldest warm entry (then the oldest joining one), or a miss
//!  refill task ──to_open()──► how many connects to start ──opened()/open_failed()──► entries
//!  tick ──expire()──► entries at their lifetime;  review()──► warm / closed / on a Down uplink
//! ```
//!
//! Why each rule:
//! - **Nothing of a LAN connection is sent in advance.** For a stock server an entry is a
//!   connected socket with no byte written: the Shadowsocks-2022 request header (salt,
//!   timestamp) is made when a LAN connection takes it. For `braid server` an entry has sent a
//!   parked request (`crate::park`, [`RelayLimits::parks`]), so that its other subflows can join,
//!   and the LAN connection's target follows when it is taken. Either way the relay holds each
//!   entry as a *pending handshake* and closes it after its handshake timeout; an entry is retired at [`Pool::lifetime`], a third of that timeout (at least 1 s)
//!   before, and the pool stops when that leaves less than [`MIN_LIFETIME`].
//! - **The relay's timeout.** `braid server` says its own (and its per-source cap) over the
//!   control channel ([`RelayLimits`]); for a stock server the gateway assumes one
//!   (`relay_handshake_timeout_secs`, [`DEFAULT_ASSUMED_TIMEOUT`]), and when such a relay closes
//!   an idle entry sooner, the pool takes that age as the timeout from then on.
//! - **A few, not hundreds.** Pending handshakes count against the relay's cap per source
//!   address, so the pool holds at most a quarter of it ([`PER_SOURCE_SHARE`]), never more than
//!   [`MAX_IDLE`], and [`STOCK_MAX_IDLE`] when the cap is not known. In `auto` mode the size
//!   follows the recent rate of LAN connections: enough to cover the [`COVER`] a used entry
//!   takes to be replaced by a warm one, plus one.
//! - **One LAN connection per entry.** [`Pool::take`] moves the entry out; it is never handed
//!   out twice, and one the caller finds unusable (closed by the relay) is discarded, never used.
//! - **Failures back off** (1 s doubling to 30 s), so an unreachable relay costs no storm of
//!   connects.
//!
//! Time is a [`Duration`] since an origin the caller picks once.

use std::collections::VecDeque;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The most idle connections the pool ever holds.
pub const MAX_IDLE: u32 = 8;
/// The most when the relay's per-source cap is not known (a stock server).
pub const STOCK_MAX_IDLE: u32 = 4;
/// The pool holds at most this fraction (1/N) of the relay's pending handshakes per source.
pub const PER_SOURCE_SHARE: u32 = 4;
/// The handshake timeout assumed of a relay that does not say its own: Xray's default handshake
/// policy (4 s) is the shortest among common Shadowsocks-2022 servers (shadowsocks-rust has none
/// unless `timeout` is set; braid's is 15 s).
pub const DEFAULT_ASSUMED_TIMEOUT: Duration = Duration::from_secs(4);
/// An entry must live at least this long to be worth opening: its other uplinks' subflows join
/// one slow round trip after its parked request reaches braid server, and about a second later
/// (a keepalive probe) on a stock server, if at all.
pub const MIN_LIFETIME: Duration = Duration::from_millis(1500);
/// The time a used entry takes to be replaced by a warm one; `auto` holds enough entries to
/// cover the LAN connections that arrive meanwhile.
pub const COVER: Duration = Duration::from_secs(2);
/// Time constant of the connection-rate average.
pub const RATE_TAU: Duration = Duration::from_secs(15);
/// The wait before replacing a connection dropped for a Down uplink (the uplink manager
/// points new connections at a healthy uplink meanwhile).
pub const DOWN_REOPEN_GAP: Duration = Duration::from_millis(250);
/// The longest wait between connect attempts after failures.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// `warm_pool` in gateway.toml.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// No pool: every LAN connection opens its own relay connection.
    Off,
    /// Sized from the recent rate of LAN connections.
    #[default]
    Auto,
    /// This many idle connections (within the caps).
    Fixed(u32),
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mode::Off => f.write_str("off"),
            Mode::Auto => f.write_str("auto"),
            Mode::Fixed(n) => write!(f, "{n}"),
        }
    }
}

/// What `braid server` says of its limits on pending handshakes (the control channel's
/// `ServerReport::handshake`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayLimits {
    /// How long the relay waits for a request header.
    pub handshake_timeout: Duration,
    /// Pending handshakes it allows per source address.
    pub max_per_source: u32,
    /// It takes parked requests (`crate::park`).
    pub parks: bool,
}

/// Where the pool's idea of the relay's handshake timeout comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TimeoutSource {
    /// The relay said it (braid server).
    Relay,
    /// Assumed (`relay_handshake_timeout_secs`): the relay did not say.
    Assumed,
    /// The relay closed an idle connection sooner than assumed, at this age.
    Learned,
}

/// Why an entry left the pool without being used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discard {
    /// It reached its lifetime.
    Aged,
    /// The relay closed it (or it failed) before it was used.
    Closed,
    /// One of its subflows rode an uplink that is no longer carrying traffic.
    UplinkDown,
    /// A path strips MPTCP: it fell back to plain TCP though the relay speaks MPTCP, or a
    /// subflow rides an uplink's direct path found hostile (its subflows use the tunnel now).
    Stripped,
    /// It lost the subflow of an uplink that is still up, which the kernel never joins to it
    /// again (`crate::lost_join`): it can no longer be warm.
    LostJoin,
    /// The pool no longer wants it (turned off, suspended or full).
    Unwanted,
}

/// What the caller found out about an idle entry (see [`Pool::review`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Review {
    /// Alive, with a subflow on every healthy uplink.
    Warm,
    /// Alive, still waiting for subflows to join (also one warm before that lacks the subflow
    /// of an uplink that came up since: the kernel joins a new endpoint to it).
    Joining,
    /// Alive, without the subflow of an uplink that is up though it had one: the kernel never
    /// joins that endpoint to it again.
    LostJoin,
    /// The relay closed it, or it failed.
    Closed,
    /// A subflow rides an uplink that went Down (or an address the uplink no longer has).
    UplinkDown,
    /// It fell back to plain TCP though the relay speaks MPTCP, or a subflow rides a direct
    /// path found to strip MPTCP: a LAN connection on it would not bond, or would lose that
    /// subflow (or, fallen back after its handshake, be reset by the relay) at its first data.
    Stripped,
}

/// Counters and sizes, for status and metrics.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PoolStats {
    /// `off`, `auto` or the fixed size.
    pub mode: String,
    /// Idle connections wanted now.
    pub target: u32,
    /// Idle connections held.
    pub idle: u32,
    /// Of those, the ones with a subflow on every healthy uplink.
    pub warm: u32,
    /// Connects in progress.
    pub opening: u32,
    /// LAN connections that got a pooled connection.
    pub hits: u64,
    /// LAN connections that had to open their own (the pool was empty or off).
    pub misses: u64,
    /// Connections opened for the pool.
    pub opened: u64,
    /// Connects that failed.
    pub open_failures: u64,
    /// Retired at their lifetime, unused.
    pub retired: u64,
    /// Closed by the relay (or failed) before use, and discarded.
    pub closed_by_relay: u64,
    /// Dropped because an uplink they used went Down.
    pub dropped_uplink_down: u64,
    /// Dropped because a path stripped MPTCP (fell back though the relay speaks MPTCP, or a
    /// subflow rode a direct path found hostile).
    #[serde(default)]
    pub dropped_stripped: u64,
    /// Dropped because they lost the subflow of an uplink that is still up.
    #[serde(default)]
    pub dropped_lost_join: u64,
    /// How long an idle connection is kept (ms); `None` while the pool is suspended or off.
    pub lifetime_ms: Option<u64>,
    /// The relay's handshake timeout the lifetime comes from (ms).
    pub relay_timeout_ms: u64,
    /// Where that timeout comes from.
    pub relay_timeout_source: Option<TimeoutSource>,
    /// The cap on idle connections (from the relay's per-source limit).
    pub cap: u32,
    /// One sentence: why the pool has this size, or why it is not running.
    pub reason: String,
    /// Idle connections are parked on the relay (`crate::park`), so their other subflows join
    /// before use; false for a stock server, whose idle connections send nothing.
    #[serde(default)]
    pub parked: bool,
}

struct Entry<T> {
    item: T,
    opened: Duration,
    warm: bool,
}

/// An exponential average of arrivals per second.
#[derive(Debug, Clone, Copy, Default)]
struct Rate {
    per_sec: f64,
    at: Duration,
}

impl Rate {
    fn at(&self, now: Duration) -> f64 {
        let dt = now.saturating_sub(self.at).as_secs_f64();
        self.per_sec * (-dt / RATE_TAU.as_secs_f64()).exp()
    }

    fn arrive(&mut self, now: Duration) {
        self.per_sec = self.at(now) + 1.0 / RATE_TAU.as_secs_f64();
        self.at = now.max(self.at);
    }
}

#[derive(Debug, Default)]
struct Counters {
    hits: u64,
    misses: u64,
    opened: u64,
    open_failures: u64,
    retired: u64,
    closed: u64,
    uplink_down: u64,
    stripped: u64,
    lost_join: u64,
}

/// What [`Pool::take`] found.
#[derive(Debug)]
pub struct Take<T> {
    /// The entry for this LAN connection, if any was usable.
    pub item: Option<T>,
    /// Entries found unusable on the way, to be closed by the caller.
    pub discarded: Vec<T>,
}

/// The warm pool's state; see the module documentation.
pub struct Pool<T> {
    mode: Mode,
    timeout: Duration,
    source: TimeoutSource,
    max_per_source: Option<u32>,
    parks: bool,
    idle: VecDeque<Entry<T>>,
    opening: u32,
    rate: Rate,
    failures: u32,
    /// Reviews that dropped entries as [`Review::Stripped`] in a row, with no warm one: a path
    /// that keeps stripping (tunnels off, or a relay that stopped speaking MPTCP) must not make
    /// the pool reopen four times a second for ever.
    stripped_streak: u32,
    retry_at: Duration,
    counts: Counters,
}

impl<T> Pool<T> {
    /// A pool in `mode` for a relay assumed to close pending handshakes after `assumed_timeout`
    /// until it says otherwise.
    pub fn new(mode: Mode, assumed_timeout: Duration) -> Pool<T> {
        Pool {
            mode,
            timeout: assumed_timeout,
            source: TimeoutSource::Assumed,
            max_per_source: None,
            parks: false,
            idle: VecDeque::new(),
            opening: 0,
            rate: Rate::default(),
            failures: 0,
            stripped_streak: 0,
            retry_at: Duration::ZERO,
            counts: Counters::default(),
        }
    }

    /// `warm_pool` as configured.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The relay's own limits (`braid server`'s report): they replace what was assumed or
    /// learned.
    pub fn set_relay(&mut self, limits: RelayLimits) {
        self.timeout = limits.handshake_timeout;
        self.source = TimeoutSource::Relay;
        self.max_per_source = Some(limits.max_per_source);
        self.parks = limits.parks;
    }

    /// Whether new entries are parked on the relay (it said it takes parked requests).
    pub fn parks(&self) -> bool {
        self.parks
    }

    /// How long an idle entry is kept: the relay's timeout less a third of it (at least 1 s);
    /// `None` when that is under [`MIN_LIFETIME`] (the pool is suspended).
    pub fn lifetime(&self) -> Option<Duration> {
        let margin = (self.timeout / 3).max(Duration::from_secs(1));
        Some(self.timeout.saturating_sub(margin)).filter(|l| *l >= MIN_LIFETIME)
    }

    /// The most idle entries allowed: a quarter of the relay's per-source cap, at most
    /// [`MAX_IDLE`] ([`STOCK_MAX_IDLE`] when the cap is not known).
    pub fn cap(&self) -> u32 {
        match self.max_per_source {
            Some(n) => (n / PER_SOURCE_SHARE).clamp(1, MAX_IDLE),
            None => STOCK_MAX_IDLE,
        }
    }

    /// Idle entries wanted at `now`.
    pub fn target(&self, now: Duration) -> u32 {
        if self.lifetime().is_none() {
            return 0;
        }
        match self.mode {
            Mode::Off => 0,
            Mode::Fixed(n) => n.min(self.cap()),
            Mode::Auto => {
                let cover = self.rate.at(now) * COVER.as_secs_f64();
                (1 + (cover + 0.5).floor() as u32).min(self.cap())
            }
        }
    }

    /// Hands out an entry for a new LAN connection: the oldest warm one (never one still
    /// joining), only if `usable` says so (the caller checks that the relay has not closed
    /// it). Unusable entries are discarded. Counts a hit or a miss, and the arrival for sizing.
    pub fn take(&mut self, now: Duration, mut usable: impl FnMut(&mut T) -> bool) -> Take<T> {
        self.rate.arrive(now);
        let mut discarded = Vec::new();
        let item = loop {
            // Only warm entries: one still joining carries a single subflow, and on Linux 6.18
            // the path manager never adds the others once it is taken (a download on it is not
            // bonded); a fresh connection is.
            let at = self.idle.iter().position(|e| e.warm);
            let Some(mut e) = at.and_then(|i| self.idle.remove(i)) else {
                break None;
            };
            if usable(&mut e.item) {
                break Some(e.item);
            }
            self.counts.closed += 1;
            discarded.push(e.item);
        };
        if self.mode != Mode::Off {
            match item {
                Some(_) => self.counts.hits += 1,
                None => self.counts.misses += 1,
            }
        }
        Take { item, discarded }
    }

    /// How many connects to start now (they count as in progress until [`Pool::opened`] or
    /// [`Pool::open_failed`]): what the target lacks, none while backing off after failures.
    pub fn to_open(&mut self, now: Duration) -> u32 {
        if now < self.retry_at {
            return 0;
        }
        let have = self.idle.len() as u32 + self.opening;
        let n = self.target(now).saturating_sub(have);
        self.opening += n;
        n
    }

    /// A connect for the pool finished at `now`. Returns the item when the pool no longer wants
    /// it (the caller closes it).
    pub fn opened(&mut self, now: Duration, item: T) -> Option<T> {
        self.opening = self.opening.saturating_sub(1);
        self.failures = 0;
        self.retry_at = Duration::ZERO;
        self.counts.opened += 1;
        if self.target(now) == 0 || self.idle.len() as u32 >= self.cap() {
            return Some(item);
        }
        self.idle.push_back(Entry {
            item,
            opened: now,
            warm: false,
        });
        None
    }

    /// A connect for the pool failed at `now`: the next waits 1 s, doubling to [`MAX_BACKOFF`].
    pub fn open_failed(&mut self, now: Duration) {
        self.opening = self.opening.saturating_sub(1);
        self.counts.open_failures += 1;
        self.failures = self.failures.saturating_add(1);
        let wait = Duration::from_secs(1)
            .saturating_mul(1u32 << (self.failures - 1).min(5))
            .min(MAX_BACKOFF);
        self.retry_at = now + wait;
    }

    /// Removes the entries that reached their lifetime (all of them when the pool is suspended
    /// or off).
    pub fn expire(&mut self, now: Duration) -> Vec<(T, Discard)> {
        let lifetime = self.lifetime();
        let off = self.mode == Mode::Off;
        let mut out = Vec::new();
        let mut keep = VecDeque::with_capacity(self.idle.len());
        for e in self.idle.drain(..) {
            match lifetime {
                _ if off => out.push((e.item, Discard::Unwanted)),
                None => out.push((e.item, Discard::Unwanted)),
                Some(l) if now.saturating_sub(e.opened) >= l => {
                    self.counts.retired += 1;
                    out.push((e.item, Discard::Aged))
                }
                Some(_) => keep.push_back(e),
            }
        }
        self.idle = keep;
        out
    }

    /// Asks `check` about every idle entry (given its age) and acts on the answer: only entries
    /// found warm at the last look are handed out by [`Pool::take`]; closed ones, those on a
    /// Down uplink and those that lost a subflow for good are removed and returned. When a
    /// relay that did not say its timeout closes an entry sooner than assumed, that age becomes
    /// the timeout (returned as `Some` when it changed).
    pub fn review(
        &mut self,
        now: Duration,
        mut check: impl FnMut(&mut T, Duration) -> Review,
    ) -> (Vec<(T, Discard)>, Option<Duration>) {
        let mut out = Vec::new();
        let mut learned = None;
        let (mut warm, mut stripped) = (false, false);
        let mut keep = VecDeque::with_capacity(self.idle.len());
        for mut e in self.idle.drain(..) {
            let age = now.saturating_sub(e.opened);
            match check(&mut e.item, age) {
                Review::Warm => {
                    e.warm = true;
                    warm = true;
                    keep.push_back(e);
                }
                Review::Joining => {
                    // Warm no more until every uplink up has its subflow in it again.
                    e.warm = false;
                    keep.push_back(e);
                }
                Review::LostJoin => {
                    self.counts.lost_join += 1;
                    out.push((e.item, Discard::LostJoin));
                }
                Review::Closed => {
                    self.counts.closed += 1;
                    if self.source != TimeoutSource::Relay && age < self.timeout {
                        learned = Some(learned.map_or(age, |l: Duration| l.min(age)));
                    }
                    out.push((e.item, Discard::Closed));
                }
                Review::UplinkDown => {
                    self.counts.uplink_down += 1;
                    // Replacements wait a moment, so a source that stays wrong cannot spin.
                    self.retry_at = self.retry_at.max(now + DOWN_REOPEN_GAP);
                    out.push((e.item, Discard::UplinkDown));
                }
                Review::Stripped => {
                    self.counts.stripped += 1;
                    stripped = true;
                    out.push((e.item, Discard::Stripped));
                }
            }
        }
        self.idle = keep;
        // The source may not have moved to the tunnel yet, or never will: the pause for a Down
        // uplink, doubling with each review that strips again without a warm entry.
        self.stripped_streak = match (stripped, warm) {
            (true, true) => 1,
            (true, false) => self.stripped_streak.saturating_add(1),
            (false, true) => 0,
            (false, false) => self.stripped_streak,
        };
        if stripped {
            let gap = DOWN_REOPEN_GAP
                .saturating_mul(1u32 << (self.stripped_streak - 1).min(7))
                .min(MAX_BACKOFF);
            self.retry_at = self.retry_at.max(now + gap);
        }
        if let Some(age) = learned {
            self.timeout = age;
            self.source = TimeoutSource::Learned;
        }
        (out, learned)
    }

    /// The next time something is due without an outside event: an entry's lifetime, or the
    /// end of a backoff while the pool lacks entries.
    pub fn next_deadline(&self, now: Duration) -> Option<Duration> {
        let aged = self
            .lifetime()
            .and_then(|l| self.idle.iter().map(|e| e.opened + l).min());
        let retry = (now < self.retry_at
            && (self.idle.len() as u32 + self.opening) < self.target(now))
        .then_some(self.retry_at);
        aged.into_iter().chain(retry).min()
    }

    /// Removes every idle entry (shutdown).
    pub fn drain(&mut self) -> Vec<T> {
        self.idle.drain(..).map(|e| e.item).collect()
    }

    /// Sizes, counters and why.
    pub fn stats(&self, now: Duration) -> PoolStats {
        let c = &self.counts;
        let lifetime = self.lifetime();
        let target = self.target(now);
        let timeout = self.timeout.as_millis() as u64;
        let reason = match (self.mode, lifetime) {
            (Mode::Off, _) => "warm_pool = \"off\"".to_string(),
            (_, None) => format!(
                "suspended: the relay closes a connection that sends no request within {:.1} s, too soon to keep one warm (at least {:.1} s needed); fix: raise its handshake timeout",
                self.timeout.as_secs_f64(),
                (MIN_LIFETIME + Duration::from_secs(1)).as_secs_f64()
            ),
            (mode, Some(l)) => {
                let size = match mode {
                    Mode::Fixed(n) if n > self.cap() => {
                        format!("warm_pool = {n}, capped at {}", self.cap())
                    }
                    Mode::Fixed(n) => format!("warm_pool = {n}"),
                    _ => format!(
                        "{:.2} LAN connections/s recently",
                        self.rate.at(now)
                    ),
                };
                let why_timeout = match self.source {
                    TimeoutSource::Relay => "as the relay says",
                    TimeoutSource::Assumed => "assumed (relay_handshake_timeout_secs)",
                    TimeoutSource::Learned => "learned: the relay closed an idle connection then",
                };
                format!(
                    "{size}; each kept {:.1} s, within the relay's handshake timeout of {:.1} s ({why_timeout})",
                    l.as_secs_f64(),
                    self.timeout.as_secs_f64()
                )
            }
        };
        PoolStats {
            mode: self.mode.to_string(),
            target,
            idle: self.idle.len() as u32,
            warm: self.idle.iter().filter(|e| e.warm).count() as u32,
            opening: self.opening,
            hits: c.hits,
            misses: c.misses,
            opened: c.opened,
            open_failures: c.open_failures,
            retired: c.retired,
            closed_by_relay: c.closed,
            dropped_uplink_down: c.uplink_down,
            dropped_stripped: c.stripped,
            dropped_lost_join: c.lost_join,
            lifetime_ms: lifetime
                .filter(|_| self.mode != Mode::Off)
                .map(|l| l.as_millis() as u64),
            relay_timeout_ms: timeout,
            relay_timeout_source: Some(self.source),
            cap: self.cap(),
            reason,
            parked: self.parks,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(secs: f64) -> Duration {
        Duration::from_secs_f64(secs)
    }

    fn braid_relay() -> RelayLimits {
        RelayLimits {
            handshake_timeout: s(15.0),
            max_per_source: 16,
            parks: true,
        }
    }

    /// Fills the pool to its target at `now` with items numbered from `next`.
    fn fill(p: &mut Pool<u32>, now: Duration, next: &mut u32) {
        for _ in 0..p.to_open(now) {
            assert!(p.opened(now, *next).is_none());
            *next += 1;
        }
    }

    #[test]
    fn idle_auto_pool_holds_one_and_grows_with_the_connection_rate() {
        let mut p: Pool<u32> = Pool::new(Mode::Auto, DEFAULT_ASSUMED_TIMEOUT);
        p.set_relay(braid_relay());
        assert_eq!(p.target(s(0.0)), 1);
        // Two LAN connections a second for a minute.
        let mut t = 0.0;
        while t < 60.0 {
            let _ = p.take(s(t), |_| true);
            t += 0.5;
        }
        assert_eq!(
            p.target(s(60.0)),
            4,
            "2/s × 2 s cover + 1, at the cap of 16/4"
        );
        // Quiet again: back to one within a couple of minutes.
        assert_eq!(p.target(s(180.0)), 1);
    }

    #[test]
    fn cap_is_a_quarter_of_the_relays_per_source_limit_and_four_for_stock_servers() {
        let mut p: Pool<u32> = Pool::new(Mode::Fixed(100), DEFAULT_ASSUMED_TIMEOUT);
        assert_eq!(p.target(s(0.0)), STOCK_MAX_IDLE);
        p.set_relay(RelayLimits {
            handshake_timeout: s(15.0),
            max_per_source: 256,
            parks: false,
        });
        assert_eq!(p.target(s(0.0)), MAX_IDLE);
        p.set_relay(RelayLimits {
            handshake_timeout: s(15.0),
            max_per_source: 2,
            parks: false,
        });
        assert_eq!(p.target(s(0.0)), 1);
        assert!(p.stats(s(0.0)).reason.contains("capped at 1"));
    }

    #[test]
    fn entry_at_its_lifetime_is_retired_before_the_relays_timeout() {
        let mut p: Pool<u32> = Pool::new(Mode::Fixed(1), DEFAULT_ASSUMED_TIMEOUT);
        p.set_relay(braid_relay());
        assert_eq!(p.lifetime(), Some(s(10.0)));
        let mut next = 0;
        fill(&mut p, s(0.0), &mut next);
        assert_eq!(p.next_deadline(s(0.0)), Some(s(10.0)));
        assert!(p.expire(s(9.9)).is_empty());
        assert_eq!(p.expire(s(10.0)), vec![(0, Discard::Aged)]);
        // Replaced at once.
        assert_eq!(p.to_open(s(10.0)), 1);
        assert_eq!(p.stats(s(10.0)).retired, 1);
    }

    #[test]
    fn stock_relay_assumed_timeout_gives_a_shorter_lifetime() {
        let p: Pool<u32> = Pool::new(Mode::Auto, DEFAULT_ASSUMED_TIMEOUT);
        // 4 s less a third: 2.67 s.
        let l = p.lifetime().unwrap();
        assert!(l > s(2.6) && l < s(2.7), "{l:?}");
        assert_eq!(
            p.stats(s(0.0)).relay_timeout_source,
            Some(TimeoutSource::Assumed)
        );
    }

    #[test]
    fn take_hands_out_only_warm_entries_each_once() {
        let mut p: Pool<u32> = Pool::new(Mode::Fixed(3), DEFAULT_ASSUMED_TIMEOUT);
        let mut next = 0;
        fill(&mut p, s(0.0), &mut next);
        // Only the youngest (2) has its subflows joined.
        let _ = p.review(s(1.0), |i, _| {
            if *i == 2 {
                Review::Warm
            } else {
                Review::Joining
            }
        });
        let mut got = Vec::new();
        for _ in 0..4 {
            got.push(p.take(s(1.0), |_| true).item);
        }
        assert_eq!(got, vec![Some(2), None, None, None]);
        let st = p.stats(s(1.0));
        assert_eq!((st.hits, st.misses), (1, 3));
    }

    #[test]
    fn an_entry_warm_before_and_joining_now_is_not_handed_out_and_one_that_lost_a_join_is_dropped()
    {
        let mut p: Pool<u32> = Pool::new(Mode::Fixed(2), DEFAULT_ASSUMED_TIMEOUT);
        let mut next = 0;
        fill(&mut p, s(0.0), &mut next);
        let _ = p.review(s(0.5), |_, _| Review::Warm);
        assert_eq!(p.stats(s(0.5)).warm, 2);
        // An uplink came up: 0 waits for its join; 1 lost the subflow of one that stayed up.
        let (gone, _) = p.review(s(1.0), |i, _| {
            if *i == 0 {
                Review::Joining
            } else {
                Review::LostJoin
            }
        });
        assert_eq!(gone, vec![(1, Discard::LostJoin)]);
        let st = p.stats(s(1.0));
        assert_eq!((st.idle, st.warm, st.dropped_lost_join), (1, 0, 1));
        assert_eq!(p.take(s(1.0), |_| true).item, None);
        // Joined again: handed out.
        let _ = p.review(s(1.5), |_, _| Review::Warm);
        assert_eq!(p.take(s(1.5), |_| true).item, Some(0));
    }

    #[test]
    fn entry_closed_by_the_relay_is_never_handed_out() {
        let mut p: Pool<u32> = Pool::new(Mode::Fixed(2), DEFAULT_ASSUMED_TIMEOUT);
        let mut next = 0;
        fill(&mut p, s(0.0), &mut next);
        let _ = p.review(s(0.1), |_, _| Review::Warm);
        let t = p.take(s(0.5), |i| *i != 0);
        assert_eq!(t.item, Some(1));
        assert_eq!(t.discarded, vec![0]);
        let t = p.take(s(0.5), |_| false);
        assert_eq!(t.item, None);
        let st = p.stats(s(0.5));
        assert_eq!((st.hits, st.misses, st.closed_by_relay), (1, 1, 1));
    }

    #[test]
    fn stock_relay_that_closes_sooner_teaches_the_pool_its_timeout() {
        let mut p: Pool<u32> = Pool::new(Mode::Fixed(1), s(10.0));
        let mut next = 0;
        fill(&mut p, s(0.0), &mut next);
        let (gone, learned) = p.review(s(3.0), |_, _| Review::Closed);
        assert_eq!(gone, vec![(0, Discard::Closed)]);
        assert_eq!(learned, Some(s(3.0)));
        assert_eq!(p.lifetime(), Some(s(2.0)));
        assert_eq!(
            p.stats(s(3.0)).relay_timeout_source,
            Some(TimeoutSource::Learned)
        );
    }

    #[test]
    fn braid_relay_closing_early_does_not_change_its_stated_timeout() {
        let mut p: Pool<u32> = Pool::new(Mode::Fixed(1), DEFAULT_ASSUMED_TIMEOUT);
        p.set_relay(braid_relay());
        let mut next = 0;
        fill(&mut p, s(0.0), &mut next);
        let (_, learned) = p.review(s(1.0), |_, _| Review::Closed);
        assert_eq!(learned, None);
        assert_eq!(p.lifetime(), Some(s(10.0)));
    }

    #[test]
    fn relay_timeout_too_short_suspends_the_pool_and_says_why() {
        let mut p: Pool<u32> = Pool::new(Mode::Auto, DEFAULT_ASSUMED_TIMEOUT);
        let mut next = 0;
        fill(&mut p, s(0.0), &mut next);
        let _ = p.review(s(1.5), |_, _| Review::Closed);
        assert_eq!(p.lifetime(), None);
        assert_eq!(p.to_open(s(2.0)), 0);
        assert!(p.stats(s(2.0)).reason.starts_with("suspended"));
    }

    #[test]
    fn entry_on_a_down_uplink_is_dropped_and_replaced() {
        let mut p: Pool<u32> = Pool::new(Mode::Fixed(2), DEFAULT_ASSUMED_TIMEOUT);
        let mut next = 0;
        fill(&mut p, s(0.0), &mut next);
        let (gone, _) = p.review(s(0.5), |i, _| {
            if *i == 1 {
                Review::UplinkDown
            } else {
                Review::Warm
            }
        });
        assert_eq!(gone, vec![(1, Discard::UplinkDown)]);
        assert_eq!(
            p.to_open(s(0.5)),
            0,
            "not at once: a wrong source would spin"
        );
        assert_eq!(p.next_deadline(s(0.5)), Some(s(0.75)));
        assert_eq!(p.to_open(s(0.75)), 1);
        assert_eq!(p.stats(s(0.5)).dropped_uplink_down, 1);
    }

    #[test]
    fn entry_on_a_stripped_path_is_never_taken_and_its_replacement_waits() {
        let mut p: Pool<u32> = Pool::new(Mode::Fixed(2), DEFAULT_ASSUMED_TIMEOUT);
        let mut next = 0;
        fill(&mut p, s(0.0), &mut next);
        let (gone, _) = p.review(s(0.5), |_, _| Review::Stripped);
        assert_eq!(gone, vec![(0, Discard::Stripped), (1, Discard::Stripped)]);
        assert_eq!(
            p.take(s(0.5), |_| true).item,
            None,
            "nothing left to hand out"
        );
        assert_eq!(p.to_open(s(0.5)), 0, "a wrong source would spin");
        assert_eq!(p.to_open(s(0.75)), 2);
        let st = p.stats(s(0.75));
        assert_eq!((st.dropped_stripped, st.dropped_uplink_down), (2, 0));
    }

    #[test]
    fn entries_stripped_again_and_again_reopen_ever_later_until_one_is_warm() {
        let mut p: Pool<u32> = Pool::new(Mode::Fixed(1), DEFAULT_ASSUMED_TIMEOUT);
        let mut next = 0;
        let mut now = 0.0;
        let mut gaps = Vec::new();
        for _ in 0..10 {
            fill(&mut p, s(now), &mut next);
            let _ = p.review(s(now), |_, _| Review::Stripped);
            let at = p.next_deadline(s(now)).expect("a reopen is due");
            gaps.push((at - s(now)).as_millis());
            now = at.as_secs_f64();
        }
        assert_eq!(
            gaps,
            vec![250, 500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
        );
        // A warm entry ends the streak: the next stripped one waits the short gap again.
        fill(&mut p, s(now), &mut next);
        let _ = p.review(s(now), |_, _| Review::Warm);
        let _ = p.review(s(now), |_, _| Review::Stripped);
        assert_eq!(p.next_deadline(s(now)), Some(s(now + 0.25)));
    }

    #[test]
    fn failed_connects_back_off_doubling_to_thirty_seconds() {
        let mut p: Pool<u32> = Pool::new(Mode::Fixed(1), DEFAULT_ASSUMED_TIMEOUT);
        let mut now = 0.0;
        let mut waits = Vec::new();
        for _ in 0..7 {
            assert_eq!(p.to_open(s(now)), 1);
            p.open_failed(s(now));
            let next = p.next_deadline(s(now)).unwrap();
            assert_eq!(p.to_open(next - s(0.001)), 0, "opened during the backoff");
            waits.push((next - s(now)).as_secs());
            now = next.as_secs_f64();
        }
        assert_eq!(waits, vec![1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(p.to_open(s(now)), 1);
        assert!(p.opened(s(now), 9).is_none());
        let _ = p.review(s(now), |_, _| Review::Warm);
        p.take(s(now), |_| true);
        assert_eq!(p.to_open(s(now)), 1, "a success ends the backoff");
    }

    #[test]
    fn off_pool_opens_nothing_counts_nothing_and_returns_late_connects() {
        let mut p: Pool<u32> = Pool::new(Mode::Off, DEFAULT_ASSUMED_TIMEOUT);
        assert_eq!(p.to_open(s(0.0)), 0);
        assert!(p.take(s(0.0), |_| true).item.is_none());
        assert_eq!(p.opened(s(0.0), 7), Some(7));
        let st = p.stats(s(0.0));
        assert_eq!((st.hits, st.misses, st.lifetime_ms), (0, 0, None));
    }

    #[test]
    fn full_pool_returns_an_extra_connect_instead_of_holding_it() {
        let mut p: Pool<u32> = Pool::new(Mode::Fixed(1), DEFAULT_ASSUMED_TIMEOUT);
        assert_eq!(p.to_open(s(0.0)), 1);
        assert!(p.opened(s(0.0), 1).is_none());
        p.set_relay(RelayLimits {
            handshake_timeout: s(15.0),
            max_per_source: 1,
            parks: false,
        });
        assert_eq!(p.opened(s(0.1), 2), Some(2));
    }
}
