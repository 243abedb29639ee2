//! Per-uplink link health: may this uplink carry traffic right now?
//!
//! The kernel does not answer that well. A silently blackholed uplink (carrier up, packets
//! dropped) leaves its MPTCP subflow in retransmission backoff, and the kernel never uses it again
//! once it returns (measured in braid's lab on Linux 6.18). OpenMPTCPRouter's tracker takes
//! 10–20 s to notice. So the gateway keeps one authenticated ping/pong stream per uplink to the
//! relay, and this module turns those probes into one of four states. On `Down` braid removes the
//! uplink's MPTCP endpoint; on `Up` it adds the endpoint back, which restores the subflows at once.
//!
//! ```text
//!  every `interval`         ──► on_ping_sent(seq, now)
//!  pong from the relay      ──► on_pong(seq, now)        ─┐
//!  at next_deadline()       ──► on_tick(now)             ─┼─► Option<Transition> ─► endpoint del/add, log
//!  rtnetlink oper down / up ──► on_link_down / on_link_up ─┘
//! ```
//!
//! Sans-IO: nothing here reads a clock. Time is a [`Duration`] since an origin the caller picks
//! once (typically `start.elapsed()` of one `Instant`); only differences matter. Time that goes
//! backwards is clamped to the latest time seen, so any input sequence is safe.
//!
//! Newest evidence wins: a probe's outcome changes the state only if that probe was sent after
//! every probe whose outcome already counted. A ping lost before a later ping was answered says
//! nothing about the path now, so it is counted in the loss ratio but moves no state. This also
//! keeps pings lost during an outage from knocking a recovering link back down when they expire.

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

/// Pings kept in flight at most; beyond this the oldest is forgotten as lost (stats only). Only a
/// caller that never calls [`Health::on_tick`] gets here: 60 s / 50 ms is 1,200.
const MAX_IN_FLIGHT: usize = 2048;

/// Tunables for one uplink. The defaults meet braid's targets with a 200 ms interval: Down at most
/// 900 ms after a failure, Up at most 600 ms plus one RTT after the path returns, and no Down from
/// 1–2 % random loss or from jitter below the 300 ms timeout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthConfig {
    /// How often the caller sends a ping on this uplink. Default 200 ms: five probes a second is
    /// what fitting three losses and a timeout into one second needs.
    pub interval: Duration,
    /// A ping without a pong after this long is lost. It is a floor: on a slower link the timeout
    /// rises to `srtt + max(4·rttvar, srtt/2)` (RFC 6298's RTO without its 1 s minimum, and with
    /// half an RTT of margin so that a very steady slow link does not lose every pong that comes a
    /// millisecond late), so slowness is not mistaken for death. Default 300 ms: 7× the 40 ms 5G RTT and 30× the 10 ms WiFi RTT of the
    /// lab, well above 10–60 ms jitter, and `3 × 200 + 300 = 900 ms` leaves 100 ms of timer slack.
    pub timeout: Duration,
    /// Ceiling for the adaptive timeout. Default 1 s: a link whose RTT varies that much is still
    /// declared dead within `down_after × interval + 1 s` (1.6 s) rather than never.
    pub timeout_max: Duration,
    /// Consecutive lost probes that make an Up link Suspect. Default 1: Suspect still carries
    /// traffic, so showing the first loss in the status costs nothing.
    pub suspect_after: u32,
    /// Consecutive lost probes that make a link Down; must exceed `suspect_after`. Default 3: two
    /// could not tell a dead link from 2 % random loss (a false Down every few minutes). With three,
    /// and newest evidence winning, 2 % random loss gives a false Down about every two weeks when
    /// the RTT is under 100 ms (a fourth ping must be lost too, see the module doc), and about
    /// every 7 hours on slower links. Fewer false Downs within 1 s need a shorter `interval`.
    pub down_after: u32,
    /// Consecutive good pongs, the first included, that bring a Down link back Up. Default 3:
    /// 400 ms of clean answers, so a link that answers once between drops stays out, and Up comes
    /// at most `3 × 200 ms + RTT` after the path returns.
    pub recover_after: u32,
    /// Resolved probes the loss ratio covers. Default 100, 20 s at 200 ms: enough that 1 % loss
    /// shows as one probe.
    pub loss_window: usize,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            interval: Duration::from_millis(200),
            timeout: Duration::from_millis(300),
            timeout_max: Duration::from_secs(1),
            suspect_after: 1,
            down_after: 3,
            recover_after: 3,
            loss_window: 100,
        }
    }
}

/// A [`HealthConfig`] field out of range. Each message names the field, the value and a fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `interval` outside 50 ms..=10 s.
    #[error("health.interval = {0:?} is outside 50ms..=10s; fix: use 200ms (the default), which declares a dead uplink Down within 1 s")]
    Interval(Duration),
    /// `timeout` outside 50 ms..=60 s.
    #[error("health.timeout = {0:?} is outside 50ms..=60s; fix: use 300ms (the default), or about 3× the uplink's usual RTT")]
    Timeout(Duration),
    /// `timeout_max` below `timeout` or above 60 s.
    #[error("health.timeout_max = {value:?} must be between health.timeout = {timeout:?} and 60s; fix: use 1s (the default)")]
    TimeoutMax {
        /// The configured ceiling.
        value: Duration,
        /// The configured floor.
        timeout: Duration,
    },
    /// `suspect_after` is 0.
    #[error("health.suspect_after = {0} is below 1; fix: use 1 (the default)")]
    SuspectAfter(u32),
    /// `down_after` does not exceed `suspect_after`.
    #[error("health.down_after = {down_after} must exceed health.suspect_after = {suspect_after}, so that a link is Suspect before it is Down; fix: use down_after = 3 and suspect_after = 1 (the defaults)")]
    DownAfter {
        /// The configured `down_after`.
        down_after: u32,
        /// The configured `suspect_after`.
        suspect_after: u32,
    },
    /// `recover_after` is 0.
    #[error("health.recover_after = {0} is below 1; fix: use 3 (the default)")]
    RecoverAfter(u32),
    /// `loss_window` outside 1..=10000.
    #[error("health.loss_window = {0} is outside 1..=10000 probes; fix: use 100 (the default, 20 s at a 200 ms interval)")]
    LossWindow(usize),
}

impl HealthConfig {
    /// Checks every field; the first bad one is reported.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let ms = Duration::from_millis;
        if !(ms(50)..=ms(10_000)).contains(&self.interval) {
            return Err(ConfigError::Interval(self.interval));
        }
        if !(ms(50)..=ms(60_000)).contains(&self.timeout) {
            return Err(ConfigError::Timeout(self.timeout));
        }
        if !(self.timeout..=ms(60_000)).contains(&self.timeout_max) {
            return Err(ConfigError::TimeoutMax {
                value: self.timeout_max,
                timeout: self.timeout,
            });
        }
        if self.suspect_after < 1 {
            return Err(ConfigError::SuspectAfter(self.suspect_after));
        }
        if self.down_after <= self.suspect_after {
            return Err(ConfigError::DownAfter {
                down_after: self.down_after,
                suspect_after: self.suspect_after,
            });
        }
        if self.recover_after < 1 {
            return Err(ConfigError::RecoverAfter(self.recover_after));
        }
        if !(1..=10_000).contains(&self.loss_window) {
            return Err(ConfigError::LossWindow(self.loss_window));
        }
        Ok(())
    }

    /// Worst case from a silent failure (or the last good pong) to Down while the adaptive timeout
    /// sits at its floor: the first lost ping may leave up to one interval after the failure, the
    /// last of `down_after` leaves `down_after − 1` intervals later, and it expires a timeout later.
    pub fn detection_bound(&self) -> Duration {
        self.interval
            .saturating_mul(self.down_after)
            .saturating_add(self.timeout)
    }

    /// Worst case from the path returning to Up, not counting the last pong's RTT: the first good
    /// ping leaves within one interval, and `recover_after − 1` more follow.
    pub fn recovery_bound(&self) -> Duration {
        self.interval.saturating_mul(self.recover_after)
    }
}

/// What the uplink is fit for. A new uplink starts in `Recovering`: it has proven nothing yet.
///
/// Transitions, for a probe outcome that counts (see the module doc); `n` is the current streak of
/// consecutive lost or good probes, `—` means no change:
///
/// | from \ input  | lost probe                     | good pong                               | kernel: link down |
/// |---------------|--------------------------------|-----------------------------------------|-------------------|
/// | `Up`          | `Suspect` if n ≥ suspect_after | —                                       | `Down`            |
/// | `Suspect`     | `Down` if n ≥ down_after       | `Up`                                    | `Down`            |
/// | `Down`        | —                              | `Recovering`; `Up` if n ≥ recover_after | — (latched)       |
/// | `Recovering`  | `Down`                         | `Up` if n ≥ recover_after               | `Down`            |
///
/// `Down → Up` directly happens only with `recover_after = 1`. Kernel link up moves nothing: the
/// kernel flushed the uplink's routes when it went down and a blackhole keeps its carrier, so
/// braid waits for a pong to a ping sent after the link came up, then goes `Down → Recovering`.
/// While the kernel reports the link down, probe outcomes are recorded but move no state.
/// When one [`Health::on_tick`] expires several pings, the steps combine into one reported
/// transition (for example `Up → Down` when the caller ticked late).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum LinkState {
    /// Probes are answered; the uplink carries traffic.
    Up,
    /// Recent probes were lost; the uplink still carries traffic while braid watches it.
    Suspect,
    /// The uplink is dead or blackholed; its MPTCP endpoint is removed. Also the default: an
    /// uplink nothing is known about carries no traffic.
    #[default]
    Down,
    /// Probes are answered again, but not yet for long enough to trust the uplink with traffic.
    Recovering,
}

/// One counted probe outcome, the input of [`LinkState::next`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Evidence {
    /// A lost probe; the streak of consecutive losses it makes.
    Lost(u32),
    /// A good pong; the streak of consecutive good pongs it makes.
    Good(u32),
    /// The kernel reports the link down.
    KernelDown,
}

impl LinkState {
    /// Whether braid keeps this uplink's MPTCP endpoint: `Up` and `Suspect` do.
    pub fn carries_traffic(self) -> bool {
        matches!(self, LinkState::Up | LinkState::Suspect)
    }

    /// The transition table above, as code: consumes the state and one input.
    fn next(self, input: Evidence, cfg: &HealthConfig) -> LinkState {
        use Evidence::*;
        use LinkState::*;
        match (self, input) {
            (_, KernelDown) => Down,
            (Up, Lost(n)) if n >= cfg.suspect_after => Suspect,
            (Suspect, Lost(n)) if n >= cfg.down_after => Down,
            (Suspect, Good(_)) => Up,
            (Down | Recovering, Good(n)) if n >= cfg.recover_after => Up,
            (Down, Good(_)) => Recovering,
            (Recovering, Lost(_)) => Down,
            (state, _) => state,
        }
    }
}

impl fmt::Display for LinkState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LinkState::Up => "Up",
            LinkState::Suspect => "Suspect",
            LinkState::Down => "Down",
            LinkState::Recovering => "Recovering",
        })
    }
}

/// Why a transition happened. Its `Display` is the end of a log sentence.
#[derive(Debug, Clone, PartialEq)]
pub enum Reason {
    /// `count` probes in a row got no pong within `timeout`.
    Lost {
        /// Consecutive lost probes.
        count: u32,
        /// The timeout in force.
        timeout: Duration,
        /// Smoothed RTT before the losses, if any pong was ever measured.
        srtt_ms: Option<f64>,
    },
    /// `count` probes in a row were answered in time.
    Answered {
        /// Consecutive good pongs.
        count: u32,
        /// RTT of the pong that caused the transition.
        rtt_ms: f64,
    },
    /// The kernel reports the link's carrier or operational state down.
    KernelDown,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Lost {
                count,
                timeout,
                srtt_ms,
            } => {
                match count {
                    1 => f.write_str("1 lost probe")?,
                    n => write!(f, "{n} lost probes in a row")?,
                }
                write!(f, " (no pong within {} ms; ", timeout.as_millis())?;
                match srtt_ms {
                    Some(s) => write!(f, "srtt was {s:.0} ms)"),
                    None => f.write_str("no RTT measured yet)"),
                }
            }
            Reason::Answered { count: 1, rtt_ms } => {
                write!(f, "a probe was answered in {rtt_ms:.0} ms")
            }
            Reason::Answered { count, rtt_ms } => {
                write!(f, "{count} good probes in a row (last rtt {rtt_ms:.0} ms)")
            }
            Reason::KernelDown => f.write_str("the kernel reports the link down"),
        }
    }
}

/// A state change to act on and log, e.g. `Up → Down: 3 lost probes in a row (…)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// The state before.
    pub from: LinkState,
    /// The state now.
    pub to: LinkState,
    /// Why.
    pub reason: Reason,
}

impl fmt::Display for Transition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} → {}: {}", self.from, self.to, self.reason)
    }
}

/// Figures for `braid status` and the metrics page. Times in ms are `None` until measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// Current state.
    pub state: LinkState,
    /// Since the last transition (or since [`Health::new`]).
    pub time_in_state: Duration,
    /// The kernel reports the link down and has not reported it up since.
    pub kernel_down: bool,
    /// Smoothed RTT (RFC 6298, gain 1/8).
    pub srtt_ms: Option<f64>,
    /// RTT variation (RFC 6298, gain 1/4).
    pub rttvar_ms: Option<f64>,
    /// The latest RTT sample, late pongs included.
    pub last_rtt_ms: Option<f64>,
    /// Mean change between consecutive RTT samples (RFC 3550 style, gain 1/16).
    pub jitter_ms: Option<f64>,
    /// The timeout in force.
    pub timeout: Duration,
    /// Lost (late included) over resolved probes in the window; 0 when the window is empty.
    pub loss_ratio: f64,
    /// Resolved probes in the window.
    pub window_probes: usize,
    /// Pings sent and neither answered nor expired.
    pub in_flight: usize,
    /// Current streak of counted losses.
    pub consecutive_losses: u32,
    /// Current streak of counted good pongs.
    pub consecutive_good: u32,
    /// Transitions reported so far.
    pub state_changes: u64,
    /// Pongs that came after their ping had expired (counted lost; RTT still sampled).
    pub late_pongs: u64,
    /// Second and later pongs for the same ping (ignored).
    pub duplicate_pongs: u64,
    /// Pongs for pings never sent, or older than the window (ignored).
    pub unknown_pongs: u64,
}

/// A ping waiting for its pong.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    seq: u64,
    /// Send order, which [`Health`] assigns; evidence compares this, not `seq`.
    order: u64,
    sent_at: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Good,
    Lost,
    /// Lost, then answered after all.
    Late,
}

/// A ping whose fate is known, kept for the loss ratio and to recognise late and duplicate pongs.
#[derive(Debug, Clone, Copy)]
struct Resolved {
    seq: u64,
    sent_at: Duration,
    outcome: Outcome,
}

/// RFC 6298 smoothed RTT and variation, plus RFC 3550-style jitter, all in ms.
#[derive(Debug, Clone, Default)]
struct RttEstimator {
    srtt: Option<f64>,
    rttvar: f64,
    last: Option<f64>,
    jitter: Option<f64>,
}

impl RttEstimator {
    fn sample(&mut self, rtt: Duration) -> f64 {
        let r = rtt.as_secs_f64() * 1000.0;
        match self.srtt {
            None => {
                self.srtt = Some(r);
                self.rttvar = r / 2.0;
            }
            Some(s) => {
                self.rttvar = 0.75 * self.rttvar + 0.25 * (s - r).abs();
                self.srtt = Some(0.875 * s + 0.125 * r);
            }
        }
        if let Some(prev) = self.last {
            let j = self.jitter.unwrap_or(0.0);
            self.jitter = Some(j + ((r - prev).abs() - j) / 16.0);
        }
        self.last = Some(r);
        r
    }
}

/// The health of one uplink. Feed it pings, pongs, ticks and kernel link events.
#[derive(Debug, Clone)]
pub struct Health {
    cfg: HealthConfig,
    state: LinkState,
    entered_at: Duration,
    /// Latest time seen; earlier times are clamped to it.
    now: Duration,
    kernel_down: bool,
    in_flight: VecDeque<InFlight>,
    recent: VecDeque<Resolved>,
    next_order: u64,
    /// Outcomes of pings with a smaller `order` are stale and move no state.
    floor: u64,
    lost_streak: u32,
    good_streak: u32,
    rtt: RttEstimator,
    changes: u64,
    late: u64,
    duplicates: u64,
    unknown: u64,
}

impl Health {
    /// A new uplink, in `Recovering` at `now` until `recover_after` pongs prove it.
    pub fn new(cfg: HealthConfig, now: Duration) -> Result<Health, ConfigError> {
        cfg.validate()?;
        Ok(Health {
            cfg,
            state: LinkState::Recovering,
            entered_at: now,
            now,
            kernel_down: false,
            in_flight: VecDeque::new(),
            recent: VecDeque::new(),
            next_order: 0,
            floor: 0,
            lost_streak: 0,
            good_streak: 0,
            rtt: RttEstimator::default(),
            changes: 0,
            late: 0,
            duplicates: 0,
            unknown: 0,
        })
    }

    /// The current state.
    pub fn state(&self) -> LinkState {
        self.state
    }

    /// How many times the state changed since the start.
    pub fn state_changes(&self) -> u64 {
        self.changes
    }

    /// The configuration in force.
    pub fn config(&self) -> &HealthConfig {
        &self.cfg
    }

    /// Takes new settings (a reload) without forgetting what was seen: the state, streaks, RTT
    /// estimate and counters stay, so a healthy uplink does not start over in `Recovering`; the
    /// loss window keeps its newest entries up to the new length, and the new thresholds decide
    /// from the next event on. Bad settings change nothing.
    pub fn reconfigure(&mut self, cfg: HealthConfig) -> Result<(), ConfigError> {
        cfg.validate()?;
        while self.recent.len() > cfg.loss_window {
            self.recent.pop_front();
        }
        self.cfg = cfg;
        Ok(())
    }

    /// How long a ping may wait for its pong now: `srtt + max(4·rttvar, srtt/2)` clamped to
    /// `timeout..=timeout_max`, or `timeout` before the first RTT sample.
    pub fn timeout(&self) -> Duration {
        let Some(srtt) = self.rtt.srtt else {
            return self.cfg.timeout;
        };
        let want = srtt + (4.0 * self.rtt.rttvar).max(srtt / 2.0);
        if want.is_nan() || want <= ms_f64(self.cfg.timeout) {
            self.cfg.timeout
        } else if want >= ms_f64(self.cfg.timeout_max) {
            self.cfg.timeout_max
        } else {
            Duration::from_secs_f64(want / 1000.0)
        }
    }

    /// When the caller must call [`Health::on_tick`] next: the oldest ping's expiry, or `None`
    /// with nothing in flight. Ticking later only delays detection.
    pub fn next_deadline(&self) -> Option<Duration> {
        let oldest = self.in_flight.front()?;
        Some(oldest.sent_at.saturating_add(self.timeout()))
    }

    /// A ping with `seq` left at `now`. Sequence numbers should be unique among recent pings; if
    /// one is reused, a pong matches the oldest ping in flight with it.
    pub fn on_ping_sent(&mut self, seq: u64, now: Duration) {
        let now = self.clamp(now);
        self.in_flight.push_back(InFlight {
            seq,
            order: self.next_order,
            sent_at: now,
        });
        self.next_order += 1;
        if self.in_flight.len() > MAX_IN_FLIGHT {
            if let Some(old) = self.in_flight.pop_front() {
                self.record(old.seq, old.sent_at, Outcome::Lost);
            }
        }
    }

    /// A pong for `seq` arrived at `now`. A pong for a ping still in flight is good, even if its
    /// deadline passed a moment ago and the caller has not ticked yet. A pong for a ping already
    /// expired is late: it stays lost, but its RTT is sampled so the timeout adapts to a slow link.
    /// Duplicates and pongs for unknown or long-forgotten pings are counted and ignored.
    pub fn on_pong(&mut self, seq: u64, now: Duration) -> Option<Transition> {
        let now = self.clamp(now);
        if let Some(i) = self.in_flight.iter().position(|p| p.seq == seq) {
            let ping = self.in_flight.remove(i)?;
            let rtt_ms = self.rtt.sample(now.saturating_sub(ping.sent_at));
            self.record(seq, ping.sent_at, Outcome::Good);
            let from = self.state;
            let reason = self.count(ping.order, true, rtt_ms);
            return self.commit(from, reason, now);
        }
        match self.recent.iter_mut().rev().find(|r| r.seq == seq) {
            Some(r) if r.outcome == Outcome::Lost => {
                r.outcome = Outcome::Late;
                let sent_at = r.sent_at;
                self.late += 1;
                self.rtt.sample(now.saturating_sub(sent_at));
            }
            Some(_) => self.duplicates += 1,
            None => self.unknown += 1,
        }
        None
    }

    /// Expires every ping older than the timeout as lost. Call it at [`Health::next_deadline`].
    pub fn on_tick(&mut self, now: Duration) -> Option<Transition> {
        let now = self.clamp(now);
        let timeout = self.timeout();
        let from = self.state;
        let mut reason = None;
        while let Some(ping) = self.in_flight.front().copied() {
            if ping.sent_at.saturating_add(timeout) > now {
                break;
            }
            self.in_flight.pop_front();
            self.record(ping.seq, ping.sent_at, Outcome::Lost);
            if let Some(r) = self.count(ping.order, false, 0.0) {
                reason = Some(r);
            }
        }
        self.commit(from, reason, now)
    }

    /// The kernel reports the link's carrier or operational state down: Down at once. Pings in
    /// flight stop counting. Returns `None` if the link was already Down (the report still latches).
    pub fn on_link_down(&mut self, now: Duration) -> Option<Transition> {
        let now = self.clamp(now);
        self.kernel_down = true;
        self.forget_evidence();
        let from = self.state;
        self.state = self.state.next(Evidence::KernelDown, &self.cfg);
        self.commit(from, Some(Reason::KernelDown), now)
    }

    /// The kernel reports the link up again. The state stays Down: only a good pong to a ping
    /// sent from now on moves it to Recovering (see [`LinkState`]). Without a preceding
    /// [`Health::on_link_down`] this does nothing.
    pub fn on_link_up(&mut self, now: Duration) {
        self.clamp(now);
        if self.kernel_down {
            self.kernel_down = false;
            self.forget_evidence();
        }
    }

    /// Figures for status and metrics, with `time_in_state` measured to `now`.
    pub fn snapshot(&self, now: Duration) -> Snapshot {
        let now = now.max(self.now);
        let lost = self
            .recent
            .iter()
            .filter(|r| r.outcome != Outcome::Good)
            .count();
        let loss_ratio = if self.recent.is_empty() {
            0.0
        } else {
            lost as f64 / self.recent.len() as f64
        };
        Snapshot {
            state: self.state,
            time_in_state: now.saturating_sub(self.entered_at),
            kernel_down: self.kernel_down,
            srtt_ms: self.rtt.srtt,
            rttvar_ms: self.rtt.srtt.map(|_| self.rtt.rttvar),
            last_rtt_ms: self.rtt.last,
            jitter_ms: self.rtt.jitter,
            timeout: self.timeout(),
            loss_ratio,
            window_probes: self.recent.len(),
            in_flight: self.in_flight.len(),
            consecutive_losses: self.lost_streak,
            consecutive_good: self.good_streak,
            state_changes: self.changes,
            late_pongs: self.late,
            duplicate_pongs: self.duplicates,
            unknown_pongs: self.unknown,
        }
    }

    fn clamp(&mut self, now: Duration) -> Duration {
        self.now = self.now.max(now);
        self.now
    }

    fn record(&mut self, seq: u64, sent_at: Duration, outcome: Outcome) {
        self.recent.push_back(Resolved {
            seq,
            sent_at,
            outcome,
        });
        while self.recent.len() > self.cfg.loss_window {
            self.recent.pop_front();
        }
    }

    /// Makes every ping sent so far stale and resets the streaks.
    fn forget_evidence(&mut self) {
        self.floor = self.next_order;
        self.lost_streak = 0;
        self.good_streak = 0;
    }

    /// Counts one probe outcome if it is the newest evidence, and steps the state machine.
    /// Returns the reason if the state changed.
    fn count(&mut self, order: u64, good: bool, rtt_ms: f64) -> Option<Reason> {
        if self.kernel_down || order < self.floor {
            return None;
        }
        self.floor = order + 1;
        let input = if good {
            self.good_streak = self.good_streak.saturating_add(1);
            self.lost_streak = 0;
            Evidence::Good(self.good_streak)
        } else {
            self.lost_streak = self.lost_streak.saturating_add(1);
            self.good_streak = 0;
            Evidence::Lost(self.lost_streak)
        };
        let to = self.state.next(input, &self.cfg);
        if to == self.state {
            return None;
        }
        self.state = to;
        Some(match input {
            Evidence::Good(count) => Reason::Answered { count, rtt_ms },
            Evidence::Lost(count) => Reason::Lost {
                count,
                timeout: self.timeout(),
                srtt_ms: self.rtt.srtt,
            },
            Evidence::KernelDown => Reason::KernelDown,
        })
    }

    /// Reports the net change since `from`, if any, with the last step's reason.
    fn commit(
        &mut self,
        from: LinkState,
        reason: Option<Reason>,
        now: Duration,
    ) -> Option<Transition> {
        let reason = reason?;
        if self.state == from {
            return None;
        }
        self.entered_at = now;
        self.changes += 1;
        Some(Transition {
            from,
            to: self.state,
            reason,
        })
    }
}

fn ms_f64(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use LinkState::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Drives one `Health` probe by probe; each probe resolves before the next is sent.
    struct Drive {
        h: Health,
        seq: u64,
        t: Duration,
    }

    impl Drive {
        fn new() -> Drive {
            Drive::with(HealthConfig::default())
        }

        fn with(cfg: HealthConfig) -> Drive {
            Drive {
                h: Health::new(cfg, ms(0)).unwrap(),
                seq: 0,
                t: ms(0),
            }
        }

        fn in_state(state: LinkState) -> Drive {
            let mut d = Drive::new();
            match state {
                Recovering => {}
                Up => d.goods(3),
                Suspect => {
                    d.goods(3);
                    d.lose();
                }
                Down => {
                    d.lose();
                }
            }
            assert_eq!(d.h.state(), state);
            d
        }

        /// A ping answered after 10 ms.
        fn good(&mut self) -> Option<Transition> {
            let seq = self.send();
            let tr = self.h.on_pong(seq, self.t + ms(10));
            self.t += ms(200);
            tr
        }

        fn goods(&mut self, n: usize) {
            for _ in 0..n {
                self.good();
            }
        }

        /// A ping that is never answered, expired by a tick at its deadline.
        fn lose(&mut self) -> Option<Transition> {
            self.send();
            let deadline = self.h.next_deadline().unwrap();
            self.t = deadline;
            self.h.on_tick(deadline)
        }

        fn send(&mut self) -> u64 {
            self.seq += 1;
            self.h.on_ping_sent(self.seq, self.t);
            self.seq
        }
    }

    fn assert_transition(tr: Option<Transition>, from: LinkState, to: LinkState) -> Transition {
        let tr = tr.unwrap_or_else(|| panic!("expected {from} → {to}, got no transition"));
        assert_eq!((tr.from, tr.to), (from, to), "{tr}");
        tr
    }

    #[test]
    fn new_link_starts_recovering_without_traffic() {
        let d = Drive::new();
        assert_eq!(d.h.state(), Recovering);
        assert!(!d.h.state().carries_traffic());
        assert_eq!(d.h.next_deadline(), None);
    }

    #[test]
    fn recovering_good_pongs_become_up_after_recover_after() {
        let mut d = Drive::new();
        assert_eq!(d.good(), None);
        assert_eq!(d.good(), None);
        let tr = assert_transition(d.good(), Recovering, Up);
        assert_eq!(
            tr.reason,
            Reason::Answered {
                count: 3,
                rtt_ms: 10.0
            }
        );
        assert!(d.h.state().carries_traffic());
    }

    #[test]
    fn recovering_lost_probe_becomes_down() {
        let mut d = Drive::new();
        d.good();
        assert_transition(d.lose(), Recovering, Down);
    }

    #[test]
    fn up_good_pong_stays_up() {
        let mut d = Drive::in_state(Up);
        assert_eq!(d.good(), None);
        assert_eq!(d.h.state(), Up);
    }

    #[test]
    fn up_lost_probe_becomes_suspect() {
        let mut d = Drive::in_state(Up);
        let tr = assert_transition(d.lose(), Up, Suspect);
        assert!(matches!(tr.reason, Reason::Lost { count: 1, .. }));
        assert!(d.h.state().carries_traffic());
    }

    #[test]
    fn suspect_good_pong_returns_up() {
        let mut d = Drive::in_state(Suspect);
        assert_transition(d.good(), Suspect, Up);
    }

    #[test]
    fn suspect_lost_probes_become_down_at_down_after() {
        let mut d = Drive::in_state(Suspect);
        assert_eq!(d.lose(), None, "2 losses must stay Suspect");
        let tr = assert_transition(d.lose(), Suspect, Down);
        assert!(matches!(tr.reason, Reason::Lost { count: 3, .. }));
        assert!(!d.h.state().carries_traffic());
    }

    #[test]
    fn reconfigure_keeps_the_state_and_applies_new_thresholds_from_the_next_event() {
        let mut d = Drive::in_state(Up);
        let changes = d.h.snapshot(d.t).state_changes;
        let cfg = HealthConfig {
            down_after: 5,
            loss_window: 2,
            ..HealthConfig::default()
        };
        d.h.reconfigure(cfg).unwrap();
        assert_eq!(
            d.h.state(),
            Up,
            "a reload does not send an Up uplink back to Recovering"
        );
        assert_eq!(d.h.snapshot(d.t).state_changes, changes);
        assert_transition(d.lose(), Up, Suspect);
        for n in 2..5 {
            assert_eq!(
                d.lose(),
                None,
                "{n} losses must stay Suspect with down_after = 5"
            );
        }
        assert_transition(d.lose(), Suspect, Down);
        let bad = HealthConfig {
            down_after: 0,
            ..HealthConfig::default()
        };
        assert!(d.h.reconfigure(bad).is_err());
        assert_eq!(d.h.config().down_after, 5, "bad settings change nothing");
    }

    #[test]
    fn down_lost_probe_stays_down() {
        let mut d = Drive::in_state(Down);
        assert_eq!(d.lose(), None);
        assert_eq!(d.h.state(), Down);
    }

    #[test]
    fn down_good_pong_becomes_recovering() {
        let mut d = Drive::in_state(Down);
        let tr = assert_transition(d.good(), Down, Recovering);
        assert_eq!(tr.reason.to_string(), "a probe was answered in 10 ms");
    }

    #[test]
    fn down_good_pong_with_recover_after_one_becomes_up() {
        let mut d = Drive::with(HealthConfig {
            recover_after: 1,
            ..HealthConfig::default()
        });
        d.lose();
        assert_transition(d.good(), Down, Up);
    }

    #[test]
    fn any_state_link_down_becomes_down_at_once() {
        for state in [Up, Suspect, Recovering] {
            let mut d = Drive::in_state(state);
            d.send();
            let tr = assert_transition(d.h.on_link_down(d.t), state, Down);
            assert_eq!(tr.reason, Reason::KernelDown);
            assert!(d.h.snapshot(d.t).kernel_down);
        }
        let mut d = Drive::in_state(Down);
        assert_eq!(d.h.on_link_down(d.t), None);
        assert!(d.h.snapshot(d.t).kernel_down);
    }

    #[test]
    fn down_kernel_link_down_ignores_probe_outcomes() {
        let mut d = Drive::in_state(Up);
        d.h.on_link_down(d.t);
        let changes = d.h.snapshot(d.t).state_changes;
        for _ in 0..5 {
            assert_eq!(d.good(), None);
            assert_eq!(d.lose(), None);
        }
        assert_eq!(d.h.state(), Down);
        assert_eq!(d.h.snapshot(d.t).state_changes, changes);
    }

    #[test]
    fn down_link_up_waits_for_a_pong_to_a_fresh_ping() {
        let mut d = Drive::in_state(Up);
        d.h.on_link_down(d.t);
        let before = d.send();
        d.h.on_link_up(d.t + ms(50));
        assert_eq!(d.h.state(), Down, "carrier up alone proves nothing");
        assert_eq!(
            d.h.on_pong(before, d.t + ms(60)),
            None,
            "ping predates link up"
        );
        d.t += ms(200);
        assert_transition(d.good(), Down, Recovering);
        d.good();
        assert_transition(d.good(), Recovering, Up);
    }

    #[test]
    fn up_link_up_without_link_down_changes_nothing() {
        let mut d = Drive::in_state(Up);
        d.send();
        d.h.on_link_up(d.t);
        d.t = d.h.next_deadline().unwrap();
        assert_transition(d.h.on_tick(d.t), Up, Suspect);
    }

    #[test]
    fn up_overdue_tick_reports_one_net_transition_to_down() {
        let mut d = Drive::in_state(Up);
        let changes = d.h.snapshot(d.t).state_changes;
        for i in 0..3 {
            d.h.on_ping_sent(100 + i, d.t + ms(200 * i));
        }
        let tr = assert_transition(d.h.on_tick(d.t + ms(5_000)), Up, Down);
        assert!(matches!(tr.reason, Reason::Lost { count: 3, .. }));
        assert_eq!(d.h.snapshot(d.t).state_changes, changes + 1);
    }

    #[test]
    fn up_loss_older_than_an_answered_probe_is_ignored() {
        let mut d = Drive::in_state(Up);
        d.h.on_ping_sent(100, d.t);
        d.h.on_ping_sent(101, d.t + ms(200));
        assert_eq!(d.h.on_pong(101, d.t + ms(250)), None);
        assert_eq!(
            d.h.on_tick(d.t + ms(300)),
            None,
            "newer evidence already won"
        );
        let s = d.h.snapshot(d.t + ms(300));
        assert_eq!((s.state, s.consecutive_losses), (Up, 0));
        assert!(s.loss_ratio > 0.0, "the loss still counts in the ratio");
    }

    #[test]
    fn recovering_loss_from_during_the_outage_is_ignored() {
        let mut d = Drive::in_state(Down);
        let t = d.t;
        d.h.on_ping_sent(100, t); // dropped while the path was dead
        d.h.on_ping_sent(101, t + ms(200));
        assert_transition(d.h.on_pong(101, t + ms(210)), Down, Recovering);
        assert_eq!(d.h.on_tick(t + ms(300)), None);
        assert_eq!(d.h.state(), Recovering);
    }

    #[test]
    fn up_duplicate_pong_is_counted_and_ignored() {
        let mut d = Drive::in_state(Up);
        let seq = d.seq;
        assert_eq!(d.h.on_pong(seq, d.t), None);
        assert_eq!(d.h.on_pong(seq, d.t), None);
        let s = d.h.snapshot(d.t);
        assert_eq!((s.duplicate_pongs, s.consecutive_good), (2, 3));
    }

    #[test]
    fn suspect_unknown_pong_is_counted_and_ignored() {
        let mut d = Drive::in_state(Suspect);
        assert_eq!(d.h.on_pong(999_999, d.t), None);
        let s = d.h.snapshot(d.t);
        assert_eq!((s.state, s.unknown_pongs), (Suspect, 1));
    }

    #[test]
    fn suspect_late_pong_stays_lost_but_samples_rtt() {
        let mut d = Drive::in_state(Suspect);
        let late = d.seq;
        assert_eq!(d.h.on_pong(late, d.t + ms(100)), None);
        let s = d.h.snapshot(d.t);
        assert_eq!((s.state, s.late_pongs), (Suspect, 1));
        assert_eq!(s.last_rtt_ms, Some(400.0));
        assert_eq!(d.h.on_pong(late, d.t + ms(100)), None);
        assert_eq!(d.h.snapshot(d.t).duplicate_pongs, 1);
    }

    #[test]
    fn up_time_going_backwards_is_clamped() {
        let mut d = Drive::in_state(Up);
        let t = d.t;
        assert_eq!(d.h.on_tick(t), None);
        d.h.on_ping_sent(100, t - ms(150));
        assert_eq!(d.h.next_deadline(), Some(t + ms(300)));
        assert_eq!(d.h.on_pong(100, ms(0)), None);
        let s = d.h.snapshot(ms(0));
        assert_eq!(s.last_rtt_ms, Some(0.0));
        assert_eq!(s.state, Up);
    }

    #[test]
    fn rtt_estimator_follows_rfc6298() {
        let mut e = RttEstimator::default();
        e.sample(ms(100));
        assert_eq!((e.srtt, e.rttvar, e.jitter), (Some(100.0), 50.0, None));
        e.sample(ms(20));
        assert_eq!(e.rttvar, 0.75 * 50.0 + 0.25 * 80.0);
        assert_eq!(e.srtt, Some(0.875 * 100.0 + 0.125 * 20.0));
        assert_eq!(e.jitter, Some(80.0 / 16.0));
    }

    #[test]
    fn timeout_is_clamped_between_floor_and_max() {
        let mut h = Health::new(HealthConfig::default(), ms(0)).unwrap();
        assert_eq!(h.timeout(), ms(300));
        h.rtt.sample(ms(10));
        assert_eq!(h.timeout(), ms(300));
        h.rtt = RttEstimator::default();
        h.rtt.sample(ms(200)); // 200 + 4 × 100
        assert_eq!(h.timeout(), ms(600));
        for _ in 0..100 {
            h.rtt.sample(ms(500)); // rttvar decays to 0; srtt/2 is the margin left
        }
        assert!(
            h.timeout() >= ms(749) && h.timeout() <= ms(751),
            "{:?}",
            h.timeout()
        );
        h.rtt.sample(ms(5_000));
        assert_eq!(h.timeout(), ms(1_000));
    }

    #[test]
    fn down_slow_link_late_pongs_raise_timeout_and_recover() {
        // A 600 ms satellite RTT: the first pings expire at the 300 ms floor, their late pongs
        // teach the timeout, and the link comes Up instead of staying Down forever.
        let mut h = Health::new(HealthConfig::default(), ms(0)).unwrap();
        let mut log = Vec::new();
        for step in 0..10_000u64 {
            let t = ms(step);
            if step % 200 == 0 {
                h.on_ping_sent(step / 200, t);
            }
            if step >= 600 && (step - 600) % 200 == 0 {
                log.extend(h.on_pong((step - 600) / 200, t));
            }
            if h.next_deadline().is_some_and(|d| d <= t) {
                log.extend(h.on_tick(t));
            }
        }
        assert_eq!(log.first().map(|t| t.to), Some(Down), "{log:?}");
        assert_eq!(h.state(), Up, "{log:?}");
        assert!(
            h.timeout() >= ms(899) && h.timeout() <= ms(1_000),
            "{:?}",
            h.timeout()
        );
    }

    #[test]
    fn up_pings_without_ticks_are_capped() {
        let mut d = Drive::in_state(Up);
        for seq in 0..3_000 {
            d.h.on_ping_sent(1_000 + seq, d.t);
        }
        let s = d.h.snapshot(d.t);
        assert_eq!((s.in_flight, s.state), (MAX_IN_FLIGHT, Up));
    }

    #[test]
    fn next_deadline_is_the_oldest_ping_plus_timeout() {
        let mut h = Health::new(HealthConfig::default(), ms(0)).unwrap();
        h.on_ping_sent(1, ms(100));
        h.on_ping_sent(2, ms(150));
        assert_eq!(h.next_deadline(), Some(ms(400)));
        h.on_pong(1, ms(160)); // rtt 60 ms: the timeout stays at its 300 ms floor
        assert_eq!(h.next_deadline(), Some(ms(450)));
        h.on_pong(2, ms(210));
        assert_eq!(h.next_deadline(), None);
    }

    #[test]
    fn snapshot_reports_loss_ratio_over_the_window() {
        let mut d = Drive::with(HealthConfig {
            loss_window: 10,
            ..HealthConfig::default()
        });
        for i in 0..40 {
            if i % 5 == 0 {
                d.lose();
            } else {
                d.good();
            }
        }
        let s = d.h.snapshot(d.t);
        assert_eq!((s.window_probes, s.loss_ratio), (10, 0.2));
        assert_eq!(s.srtt_ms, Some(10.0));
        assert!(s.time_in_state > Duration::ZERO);
    }

    #[test]
    fn transition_display_reads_as_a_log_sentence() {
        let mut d = Drive::in_state(Suspect);
        d.lose();
        let s = d.lose().unwrap().to_string();
        assert_eq!(
            s,
            "Suspect → Down: 3 lost probes in a row (no pong within 300 ms; srtt was 10 ms)"
        );
        let mut d = Drive::new();
        d.goods(2);
        assert_eq!(
            d.good().unwrap().to_string(),
            "Recovering → Up: 3 good probes in a row (last rtt 10 ms)"
        );
        let mut d = Drive::new();
        let s = d.lose().unwrap().to_string();
        assert!(s.ends_with("1 lost probe (no pong within 300 ms; no RTT measured yet)"));
        let mut d = Drive::in_state(Up);
        assert_eq!(
            d.h.on_link_down(d.t).unwrap().to_string(),
            "Up → Down: the kernel reports the link down"
        );
    }

    #[test]
    fn config_default_is_valid_and_meets_the_targets() {
        let c = HealthConfig::default();
        assert_eq!(c.validate(), Ok(()));
        assert!(c.detection_bound() <= ms(900), "{:?}", c.detection_bound());
        assert!(c.recovery_bound() <= ms(600), "{:?}", c.recovery_bound());
    }

    #[test]
    fn config_invalid_fields_name_the_field_value_and_fix() {
        let d = HealthConfig::default;
        let cases = [
            (
                HealthConfig {
                    interval: ms(20),
                    ..d()
                },
                "health.interval = 20ms",
            ),
            (
                HealthConfig {
                    interval: ms(20_000),
                    ..d()
                },
                "health.interval = 20s",
            ),
            (
                HealthConfig {
                    timeout: ms(0),
                    ..d()
                },
                "health.timeout = 0ns",
            ),
            (
                HealthConfig {
                    timeout_max: ms(200),
                    ..d()
                },
                "health.timeout_max = 200ms",
            ),
            (
                HealthConfig {
                    suspect_after: 0,
                    ..d()
                },
                "health.suspect_after = 0",
            ),
            (
                HealthConfig {
                    down_after: 1,
                    ..d()
                },
                "health.down_after = 1",
            ),
            (
                HealthConfig {
                    recover_after: 0,
                    ..d()
                },
                "health.recover_after = 0",
            ),
            (
                HealthConfig {
                    loss_window: 0,
                    ..d()
                },
                "health.loss_window = 0",
            ),
        ];
        for (cfg, needle) in cases {
            let msg = cfg.validate().unwrap_err().to_string();
            assert!(msg.contains(needle) && msg.contains("fix: "), "{msg}");
        }
    }

    #[test]
    fn health_new_rejects_an_invalid_config() {
        let cfg = HealthConfig {
            down_after: 0,
            ..HealthConfig::default()
        };
        assert!(matches!(
            Health::new(cfg, ms(0)),
            Err(ConfigError::DownAfter { down_after: 0, .. })
        ));
    }

    // ---- scenarios on a simulated link ----

    /// splitmix64: tiny, deterministic, good enough for loss and RTT draws.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// A gateway probing one uplink in 1 ms steps of virtual time, with the defaults.
    struct Sim {
        h: Health,
        rng: Rng,
        t: Duration,
        seq: u64,
        next_ping: Duration,
        flight: Vec<(Duration, u64)>,
        log: Vec<(Duration, Transition)>,
        pongs: Vec<Duration>,
        /// Also report the link's up/down edges as kernel events.
        kernel_events: bool,
    }

    impl Sim {
        fn new(seed: u64) -> Sim {
            Sim {
                h: Health::new(HealthConfig::default(), ms(0)).unwrap(),
                rng: Rng(seed),
                t: ms(0),
                seq: 0,
                next_ping: ms(0),
                flight: Vec::new(),
                log: Vec::new(),
                pongs: Vec::new(),
                kernel_events: false,
            }
        }

        /// Runs until `end`. `up(t)` says whether the path passes packets at `t`; each probe's RTT
        /// is uniform in `rtt_ms`, and it is lost with probability `loss_pm`/1000.
        fn run(
            &mut self,
            end: Duration,
            up: &dyn Fn(Duration) -> bool,
            rtt_ms: (u64, u64),
            loss_pm: u64,
        ) {
            while self.t < end {
                let t = self.t;
                if self.kernel_events && t > ms(0) && up(t) != up(t - ms(1)) {
                    if up(t) {
                        self.h.on_link_up(t);
                    } else {
                        let tr = self.h.on_link_down(t);
                        self.note(tr);
                    }
                }
                while let Some(i) = self.flight.iter().position(|f| f.0 <= t) {
                    let (_, seq) = self.flight.swap_remove(i);
                    self.pongs.push(t);
                    let tr = self.h.on_pong(seq, t);
                    self.note(tr);
                }
                if self.h.next_deadline().is_some_and(|d| d <= t) {
                    let tr = self.h.on_tick(t);
                    self.note(tr);
                }
                if t >= self.next_ping {
                    self.seq += 1;
                    self.h.on_ping_sent(self.seq, t);
                    let rtt = ms(rtt_ms.0 + self.rng.below(rtt_ms.1 - rtt_ms.0 + 1));
                    let lost = self.rng.below(1000) < loss_pm;
                    if up(t) && up(t + rtt) && !lost {
                        self.flight.push((t + rtt, self.seq));
                    }
                    self.next_ping += self.h.config().interval;
                }
                self.t += ms(1);
            }
        }

        fn note(&mut self, tr: Option<Transition>) {
            if let Some(tr) = tr {
                self.log.push((self.t, tr));
            }
        }

        fn since(&self, after: Duration) -> Vec<(LinkState, LinkState)> {
            self.log
                .iter()
                .filter(|(t, _)| *t >= after)
                .map(|(_, tr)| (tr.from, tr.to))
                .collect()
        }

        fn first_to(&self, to: LinkState, after: Duration) -> Option<Duration> {
            self.log
                .iter()
                .find(|(t, tr)| *t >= after && tr.to == to)
                .map(|(t, _)| *t)
        }

        fn count_to(&self, to: LinkState, after: Duration) -> usize {
            self.log
                .iter()
                .filter(|(t, tr)| *t >= after && tr.to == to)
                .count()
        }
    }

    const RTTS: [(u64, u64); 3] = [(10, 10), (10, 40), (40, 40)];

    #[test]
    fn up_silent_blackhole_becomes_down_within_one_second() {
        let mut worst = Duration::ZERO;
        for phase in (0..200).step_by(3) {
            for (i, rtt) in RTTS.into_iter().enumerate() {
                let fail = ms(10_000 + phase);
                let mut s = Sim::new(phase * 3 + i as u64);
                s.run(ms(12_000), &|t| t < fail, rtt, 0);
                assert_eq!(s.since(ms(1_000)), [(Up, Suspect), (Suspect, Down)]);
                let down = s.first_to(Down, fail).unwrap();
                let last_pong = *s.pongs.iter().rfind(|p| **p <= fail).unwrap();
                assert!(down - fail <= ms(1_000), "phase {phase} rtt {rtt:?}");
                assert!(down - last_pong <= ms(1_000), "phase {phase} rtt {rtt:?}");
                worst = worst.max(down - last_pong);
            }
        }
        eprintln!("worst failure → Down: {worst:?} after the last good pong");
    }

    #[test]
    fn up_kernel_link_down_becomes_down_at_once() {
        let fail = ms(10_037);
        let mut s = Sim::new(7);
        s.kernel_events = true;
        s.run(ms(11_000), &|t| t < fail, (10, 40), 0);
        assert_eq!(s.since(ms(1_000)), [(Up, Down)]);
        assert_eq!(s.first_to(Down, fail), Some(fail));
    }

    #[test]
    fn down_returned_link_becomes_up_within_one_second() {
        for kernel_events in [false, true] {
            let mut worst = Duration::ZERO;
            for phase in (0..200).step_by(3) {
                for (i, rtt) in RTTS.into_iter().enumerate() {
                    let back = ms(20_000 + phase);
                    let mut s = Sim::new(phase * 3 + i as u64);
                    s.kernel_events = kernel_events;
                    s.run(ms(23_000), &|t| t < ms(10_000) || t >= back, rtt, 0);
                    assert_eq!(s.since(back), [(Down, Recovering), (Recovering, Up)]);
                    let up = s.first_to(Up, back).unwrap();
                    assert!(up - back <= ms(1_000), "phase {phase} rtt {rtt:?}");
                    worst = worst.max(up - back);
                }
            }
            eprintln!("kernel events {kernel_events}: worst return → Up {worst:?}");
        }
    }

    #[test]
    fn up_two_percent_loss_for_five_minutes_never_goes_down() {
        // Twelve independent 5-minute runs (1 h in all), so that a threshold one loss too eager
        // (a false Down every few minutes) fails here. RTTs up to 150 ms, so that a pong often
        // comes after the previous ping's expiry and single losses do show as Suspect.
        let mut suspects = 0;
        for seed in 0..12 {
            let mut s = Sim::new(seed);
            s.run(ms(301_000), &|_| true, (10, 150), 20);
            let first_up = s.first_to(Up, ms(0)).unwrap();
            assert!(first_up < ms(2_000), "seed {seed}: {:?}", s.log);
            for step in s.since(first_up + ms(1)) {
                let ok = step == (Up, Suspect) || step == (Suspect, Up);
                assert!(ok, "seed {seed}: {step:?} in {:?}", s.log);
            }
            let blips = s.count_to(Suspect, first_up);
            let returns = s.count_to(Up, first_up + ms(1));
            assert!(returns + 1 >= blips, "seed {seed}: Suspect must return Up");
            suspects += blips;
            let snap = s.h.snapshot(s.t);
            assert!(snap.loss_ratio < 0.1, "{snap:?}");
        }
        eprintln!("2 % loss: {suspects} Suspect blips in 60 min, no Down");
        assert!(suspects > 0, "losses never reached the state machine");
    }

    #[test]
    fn up_jitter_10_to_60_ms_never_goes_down() {
        let mut s = Sim::new(0x3);
        s.run(ms(301_000), &|_| true, (10, 60), 0);
        assert_eq!(
            s.since(ms(1_000)),
            [],
            "jitter alone must not move the state"
        );
        let snap = s.h.snapshot(s.t);
        assert_eq!(snap.state, Up);
        assert!(snap.jitter_ms.unwrap() > 5.0, "{snap:?}");
        assert!((25.0..45.0).contains(&snap.srtt_ms.unwrap()), "{snap:?}");
    }

    #[test]
    fn up_rtt_spikes_to_250_ms_never_go_down() {
        // Bufferbloat-style: mostly 10–60 ms, one probe in ten delayed to 200–250 ms.
        let mut s = Sim::new(0x4);
        let mut rng = Rng(0x44);
        for _ in 0..1_500 {
            let end = s.t + ms(200);
            let rtt = if rng.below(10) == 0 {
                (200, 250)
            } else {
                (10, 60)
            };
            s.run(end, &|_| true, rtt, 0);
        }
        assert_eq!(s.count_to(Down, ms(0)), 0, "{:?}", s.log);
        assert_eq!(s.h.state(), Up);
    }

    #[test]
    fn up_twenty_flaps_give_exactly_twenty_downs_and_ups() {
        for phase in [0, 37, 111, 199] {
            let start = ms(10_000 + phase);
            let down = move |t: Duration| {
                t >= start && t < start + ms(40_000) && (t - start).as_millis() % 2_000 < 1_000
            };
            let mut s = Sim::new(phase);
            s.run(ms(55_000), &|t| !down(t), (10, 40), 0);
            assert_eq!(s.count_to(Down, start), 20, "phase {phase}: {:?}", s.log);
            assert_eq!(s.count_to(Up, start), 20, "phase {phase}: {:?}", s.log);
            for (t, tr) in s.log.iter().filter(|(t, _)| *t >= start) {
                match tr.to {
                    Down => assert!(down(*t), "phase {phase}: {tr} at {t:?}"),
                    Up => assert!(!down(*t), "phase {phase}: {tr} at {t:?}"),
                    _ => {}
                }
            }
        }
    }

    #[test]
    fn any_random_event_sequence_never_panics() {
        let configs = [
            HealthConfig::default(),
            HealthConfig {
                recover_after: 1,
                loss_window: 1,
                ..HealthConfig::default()
            },
            HealthConfig {
                interval: ms(50),
                timeout: ms(50),
                timeout_max: ms(60_000),
                suspect_after: 2,
                down_after: 3,
                ..HealthConfig::default()
            },
        ];
        for seed in 0..30u64 {
            let mut rng = Rng(seed);
            let cfg = configs[(seed % 3) as usize].clone();
            let mut h = Health::new(cfg.clone(), ms(rng.below(1_000))).unwrap();
            let extreme = seed % 5 == 0;
            let mut clock = ms(0);
            let mut reported = 0;
            for _ in 0..20_000 {
                clock = match rng.below(20) {
                    0 if extreme => Duration::MAX,
                    1 => Duration::ZERO,
                    2 => clock.saturating_sub(ms(rng.below(5_000))),
                    _ => clock.saturating_add(ms(rng.below(400))),
                };
                let seq = rng.below(48);
                let before = h.state();
                let tr = match rng.below(12) {
                    0..=3 => {
                        h.on_ping_sent(seq, clock);
                        None
                    }
                    4..=7 => h.on_pong(seq, clock),
                    8..=9 => h.on_tick(clock),
                    10 => h.on_link_down(clock),
                    _ => {
                        h.on_link_up(clock);
                        None
                    }
                };
                if let Some(tr) = tr {
                    assert_eq!((tr.from, tr.to), (before, h.state()));
                    assert_ne!(tr.from, tr.to);
                    assert!(!tr.to_string().is_empty());
                    reported += 1;
                } else {
                    assert_eq!(before, h.state());
                }
                let s = h.snapshot(clock);
                assert!((0.0..=1.0).contains(&s.loss_ratio));
                assert_eq!(s.state_changes, reported);
                assert!(!s.kernel_down || s.state == Down);
                assert!(h.timeout() >= cfg.timeout && h.timeout() <= cfg.timeout_max);
                assert!(s.window_probes <= cfg.loss_window);
            }
        }
    }
}
