//! Whether an uplink carries its subflows directly, through the tunnel, or not at all: a state
//! machine per uplink, driven by direct-path checks and the tunnel's fate, on a virtual clock.
//!
//! ```text
//!            check: stripped / reset              tunnel failed (UDP blocked too)
//!   Direct ─────────────────────────► Tunnel ─────────────────────────────────► Out
//!     ▲   ◄──────────────────────────   │  ◄───── retry: check stripped again ───┘
//!     │        check: works again        │
//!     └──────────────────────────────────┴──── check: works (from Out too)
//! ```
//! - `auto` starts Direct and checks the direct path at once; evidence from live connections (a
//!   join that never came up, a first subflow that fell back to TCP) asks for another check, at
//!   most once per [`RECHECK_MIN`]. Only a check's verdict moves the uplink, so the log line
//!   that says so carries the check's evidence.
//! - While tunnelled or out, the direct path is checked again every `retry_direct`, and the
//!   uplink moves back as soon as a direct MPTCP connection works. A direct uplink is checked
//!   every `retry_direct` too, in case its path changes while no new connection gives evidence.
//! - `always` wants the tunnel from the start and never checks; `never` never leaves Direct.
//!
//! A change is reported once, as the line to log; repeated verdicts say nothing.

use std::fmt;
use std::time::Duration;

/// `tunnel` per `[[uplink]]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Tunnel the uplink only while its path strips or resets MPTCP.
    #[default]
    Auto,
    /// Always carry the uplink's subflows through the tunnel.
    Always,
    /// Never tunnel it.
    Never,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Auto => "auto",
            Mode::Always => "always",
            Mode::Never => "never",
        })
    }
}

/// How an uplink carries subflows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Path {
    /// MPTCP straight over the uplink.
    Direct,
    /// Through the encrypted UDP tunnel (starting, or up).
    Tunnel,
    /// Neither works: the uplink is left out.
    Out,
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Path::Direct => "direct",
            Path::Tunnel => "tunnel",
            Path::Out => "out",
        })
    }
}

/// What one direct-path check found: an MPTCP connection to the relay whose first subflow is on
/// the uplink, compared with what the relay saw of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checked {
    /// It stayed MPTCP end to end.
    Works,
    /// It fell back to plain TCP: the MPTCP option was removed on the way (the evidence).
    Stripped(String),
    /// Connections carrying MPTCP options were reset (the evidence).
    Reset(String),
    /// Nothing can be concluded (the relay could not be reached at all, …).
    Inconclusive(String),
}

/// The shortest gap between two checks asked for by evidence. Each check that finds the direct
/// path working despite the evidence doubles the gap (up to `retry_direct`), so evidence with
/// another cause does not keep a check running every few seconds.
pub const RECHECK_MIN: Duration = Duration::from_secs(2);

/// One uplink's path decision.
#[derive(Debug, Clone)]
pub struct Decider {
    mode: Mode,
    path: Path,
    reason: String,
    tunnel_up: bool,
    check_due: Option<Duration>,
    checking: bool,
    last_check: Option<Duration>,
    retry_direct: Duration,
    /// Out was logged for this episode.
    said_out: bool,
    /// Why the tunnel is wanted: the check's evidence, or the config.
    cause: String,
    /// The gap evidence must leave after the last check (see [`RECHECK_MIN`]).
    recheck_gap: Duration,
    /// The running check was asked for by evidence.
    suspected: bool,
}

impl Decider {
    /// The decision for an uplink configured with `mode`, at `now`.
    pub fn new(mode: Mode, retry_direct: Duration, now: Duration) -> Decider {
        let (path, reason, check_due) = match mode {
            Mode::Auto => (Path::Direct, "no MPTCP trouble seen".to_string(), Some(now)),
            Mode::Always => (Path::Tunnel, "tunnel = \"always\"".to_string(), None),
            Mode::Never => (Path::Direct, "tunnel = \"never\"".to_string(), None),
        };
        Decider {
            mode,
            path,
            tunnel_up: false,
            check_due,
            checking: false,
            last_check: None,
            retry_direct,
            said_out: false,
            cause: reason.clone(),
            reason,
            recheck_gap: RECHECK_MIN,
            suspected: false,
        }
    }

    /// The decided path.
    pub fn path(&self) -> Path {
        self.path
    }

    /// Why the uplink is on its path.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// The tunnel should exist (starting or up).
    pub fn wants_tunnel(&self) -> bool {
        self.path == Path::Tunnel
    }

    /// The tunnel is wanted and up: subflows go through it.
    pub fn tunnelled(&self) -> bool {
        self.path == Path::Tunnel && self.tunnel_up
    }

    /// When [`Decider::poll`] has something to do.
    pub fn next_deadline(&self) -> Option<Duration> {
        if self.checking {
            None
        } else {
            self.check_due
        }
    }

    /// Evidence from live connections that the direct path may be broken (`what`): asks for a
    /// check soon, at most once per [`RECHECK_MIN`]. Only in `auto`, on the direct path.
    pub fn on_suspicion(&mut self, now: Duration) {
        if self.mode != Mode::Auto || self.path != Path::Direct || self.checking {
            return;
        }
        let earliest = self
            .last_check
            .map_or(now, |l| (l + self.recheck_gap).max(now));
        if self.check_due.is_none_or(|d| earliest < d) {
            self.check_due = Some(earliest);
            self.suspected = true;
        }
    }

    /// Whether a direct-path check should start now; if so it counts as started.
    pub fn poll(&mut self, now: Duration) -> bool {
        match self.check_due {
            Some(due) if due <= now && !self.checking => {
                self.check_due = None;
                if self.mode == Mode::Always {
                    // `always` never checks: the deadline was a tunnel retry.
                    if self.path == Path::Out {
                        self.path = Path::Tunnel;
                    }
                    return false;
                }
                self.checking = true;
                true
            }
            _ => false,
        }
    }

    /// A check's verdict; returns the line to log when the decision changed.
    pub fn on_check(&mut self, now: Duration, verdict: Checked) -> Option<String> {
        self.checking = false;
        self.last_check = Some(now);
        let suspected = std::mem::take(&mut self.suspected);
        if verdict == Checked::Works && self.path == Path::Direct && suspected {
            self.recheck_gap = (self.recheck_gap * 2).min(self.retry_direct.max(RECHECK_MIN));
        } else if verdict != Checked::Works {
            self.recheck_gap = RECHECK_MIN;
        }
        match (self.path, verdict) {
            (Path::Direct, Checked::Stripped(e)) | (Path::Direct, Checked::Reset(e))
                if self.mode == Mode::Auto =>
            {
                self.reason = format!("MPTCP does not pass its path: {e}");
                self.cause = self.reason.clone();
                self.path = Path::Tunnel;
                self.tunnel_up = false;
                Some(format!(
                    "{}; moving its subflows into an encrypted UDP tunnel to the relay",
                    self.reason
                ))
            }
            (Path::Tunnel | Path::Out, Checked::Works) if self.mode == Mode::Auto => {
                self.path = Path::Direct;
                self.tunnel_up = false;
                self.said_out = false;
                self.reason = "a direct MPTCP connection works again".into();
                Some(format!("{}; moving back from the tunnel", self.reason))
            }
            (Path::Out, Checked::Stripped(_) | Checked::Reset(_)) => {
                // Still hostile: give the tunnel another try.
                self.path = Path::Tunnel;
                self.check_due = Some(now + self.retry_direct);
                None
            }
            (Path::Tunnel | Path::Out, _) => {
                self.check_due = Some(now + self.retry_direct);
                None
            }
            // Direct and fine (or unknown): look again later, in case the path changes while
            // no new connection gives evidence.
            (Path::Direct, _) => {
                if self.mode == Mode::Auto {
                    self.check_due = Some(now + self.retry_direct);
                }
                None
            }
        }
    }

    /// The tunnel completed its handshake; returns the line to log.
    pub fn on_tunnel_up(&mut self, now: Duration) -> Option<String> {
        if self.path != Path::Tunnel || self.tunnel_up {
            return None;
        }
        self.tunnel_up = true;
        self.said_out = false;
        if self.mode == Mode::Auto {
            self.check_due = Some(now + self.retry_direct);
        }
        let retry = if self.mode == Mode::Auto {
            format!(
                "; the direct path is checked again every {} s",
                self.retry_direct.as_secs()
            )
        } else {
            String::new()
        };
        Some(format!(
            "subflows now go through the tunnel ({}){retry}",
            self.reason
        ))
    }

    /// The tunnel failed (`why`: no handshake answer, lost); returns the line to log, once per
    /// episode.
    pub fn on_tunnel_failed(&mut self, now: Duration, why: &str) -> Option<String> {
        if self.path != Path::Tunnel {
            return None;
        }
        let was_up = self.tunnel_up;
        self.tunnel_up = false;
        self.path = Path::Out;
        self.check_due = Some(now + self.retry_direct);
        self.reason = format!("{}, and {why}", self.cause);
        if self.said_out && !was_up {
            return None;
        }
        self.said_out = true;
        Some(format!(
            "{}; the uplink is left out and tried again every {} s",
            self.reason,
            self.retry_direct.as_secs()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RETRY: Duration = Duration::from_secs(60);
    fn s(x: u64) -> Duration {
        Duration::from_secs(x)
    }

    #[test]
    fn auto_start_checks_at_once_and_stays_direct_when_it_works() {
        let mut d = Decider::new(Mode::Auto, RETRY, s(0));
        assert_eq!(d.next_deadline(), Some(s(0)));
        assert!(d.poll(s(0)));
        assert!(!d.poll(s(0)), "one check at a time");
        assert_eq!(d.on_check(s(1), Checked::Works), None);
        assert_eq!(d.path(), Path::Direct);
        assert_eq!(
            d.next_deadline(),
            Some(s(61)),
            "looked at again a retry later"
        );
    }

    #[test]
    fn direct_stripped_check_wants_the_tunnel_and_says_why_once() {
        let mut d = Decider::new(Mode::Auto, RETRY, s(0));
        assert!(d.poll(s(0)));
        let line = d
            .on_check(
                s(1),
                Checked::Stripped("the relay received it as plain TCP".into()),
            )
            .expect("a change");
        assert!(
            line.contains("plain TCP") && line.contains("tunnel"),
            "{line}"
        );
        assert!(d.wants_tunnel() && !d.tunnelled());
        let up = d.on_tunnel_up(s(2)).expect("up");
        assert!(up.contains("every 60 s"), "{up}");
        assert!(d.tunnelled());
        assert_eq!(d.on_tunnel_up(s(3)), None, "said once");
    }

    #[test]
    fn tunnelled_uplink_rechecks_after_the_interval_and_moves_back_when_direct_works() {
        let mut d = Decider::new(Mode::Auto, RETRY, s(0));
        d.poll(s(0));
        d.on_check(s(0), Checked::Reset("reset".into()));
        d.on_tunnel_up(s(1));
        assert!(!d.poll(s(30)), "not yet");
        assert!(d.poll(s(61)));
        assert_eq!(d.on_check(s(61), Checked::Stripped("still".into())), None);
        assert!(d.tunnelled(), "still stripped: stays");
        assert_eq!(d.next_deadline(), Some(s(121)));
        assert!(d.poll(s(121)));
        let back = d.on_check(s(121), Checked::Works).expect("back");
        assert!(back.contains("moving back"), "{back}");
        assert_eq!(d.path(), Path::Direct);
    }

    #[test]
    fn evidence_asks_for_a_check_at_most_once_per_recheck_min() {
        let mut d = Decider::new(Mode::Auto, RETRY, s(0));
        d.poll(s(0));
        d.on_check(s(1), Checked::Works);
        d.on_suspicion(s(2));
        assert_eq!(d.next_deadline(), Some(s(3)), "evidence brings it forward");
        assert!(!d.poll(s(2)));
        assert!(d.poll(s(3)));
        d.on_suspicion(s(3));
        assert_eq!(d.next_deadline(), None, "no second check while one runs");
        d.on_check(s(4), Checked::Works);
        d.on_suspicion(s(4));
        assert_eq!(
            d.next_deadline(),
            Some(s(8)),
            "working despite the evidence: the gap doubles"
        );
        assert!(d.poll(s(8)));
        d.on_check(s(8), Checked::Works);
        d.on_suspicion(s(9));
        assert_eq!(d.next_deadline(), Some(s(16)));
        assert!(d.poll(s(16)));
        d.on_check(s(17), Checked::Stripped("x".into()));
        d.on_suspicion(s(18));
        assert_eq!(
            d.next_deadline(),
            None,
            "evidence means nothing once tunnelled"
        );
    }

    #[test]
    fn failed_tunnel_leaves_the_uplink_out_says_so_once_and_retries() {
        let mut d = Decider::new(Mode::Auto, RETRY, s(0));
        d.poll(s(0));
        d.on_check(s(0), Checked::Stripped("fallback".into()));
        let out = d
            .on_tunnel_failed(s(6), "UDP to the relay's port 8389 is blocked")
            .expect("said");
        assert!(out.contains("blocked") && out.contains("left out"), "{out}");
        assert_eq!(d.path(), Path::Out);
        assert!(d.poll(s(66)));
        assert_eq!(d.on_check(s(66), Checked::Stripped("again".into())), None);
        assert!(d.wants_tunnel(), "tries the tunnel again");
        assert_eq!(d.on_tunnel_failed(s(72), "blocked"), None, "said once");
        assert!(
            d.poll(s(132)),
            "retried a retry interval after the second failure"
        );
        assert!(d.on_check(s(132), Checked::Works).is_some());
        assert_eq!(d.path(), Path::Direct);
    }

    #[test]
    fn always_wants_the_tunnel_without_checking_and_retries_it() {
        let mut d = Decider::new(Mode::Always, RETRY, s(0));
        assert!(d.wants_tunnel());
        assert!(!d.poll(s(0)));
        assert!(d.on_tunnel_failed(s(5), "blocked").is_some());
        assert!(!d.poll(s(65)), "always never runs a direct check");
        assert!(d.wants_tunnel(), "but retries the tunnel");
        d.on_tunnel_up(s(66));
        d.on_suspicion(s(70));
        assert_eq!(d.next_deadline(), None);
    }

    #[test]
    fn never_stays_direct_whatever_happens() {
        let mut d = Decider::new(Mode::Never, RETRY, s(0));
        assert_eq!(d.next_deadline(), None);
        d.on_suspicion(s(1));
        assert!(!d.poll(s(10)));
        assert_eq!(d.on_check(s(10), Checked::Stripped("x".into())), None);
        assert_eq!(d.path(), Path::Direct);
    }
}
