//! Whether UDP reaches the relay at all, from braid's UDP probes (a datagram to the relay's own
//! control target, answered by braid's relay over the uplink it came from): if no uplink had an
//! answer for [`BLOCKED_AFTER`] although the relay is braid (its TCP probes are answered), UDP is
//! blocked (hotel and corporate WiFi) and rides inside TCP; the first answer brings it back.
//!
//! A relay that is not braid never answers the probe, so without proof that it is braid, UDP is
//! never judged blocked.

use std::time::Duration;

/// How long without any answer before UDP counts as blocked.
pub const BLOCKED_AFTER: Duration = Duration::from_secs(3);

/// How UDP should travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// As Shadowsocks-2022 UDP datagrams.
    Datagrams,
    /// Inside the bonded TCP connection.
    OverTcp,
}

/// What the probes have shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reachability {
    started: Duration,
    last_answer: Option<Duration>,
    route: Route,
}

impl Reachability {
    /// Probing began at `now`; UDP is assumed to work.
    pub fn new(now: Duration) -> Reachability {
        Reachability {
            started: now,
            last_answer: None,
            route: Route::Datagrams,
        }
    }

    /// A probe was answered at `now`. Returns the new route if it changed.
    pub fn on_answer(&mut self, now: Duration) -> Option<Route> {
        self.last_answer = Some(now);
        self.set(Route::Datagrams)
    }

    /// Time passes (`now`); `relay_is_braid`: braid's TCP probes are answered. Returns the new
    /// route if it changed.
    pub fn on_tick(&mut self, now: Duration, relay_is_braid: bool) -> Option<Route> {
        let quiet_since = self.last_answer.unwrap_or(self.started);
        if relay_is_braid && now.saturating_sub(quiet_since) >= BLOCKED_AFTER {
            self.set(Route::OverTcp)
        } else {
            None
        }
    }

    /// How UDP travels now.
    pub fn route(&self) -> Route {
        self.route
    }

    fn set(&mut self, r: Route) -> Option<Route> {
        (std::mem::replace(&mut self.route, r) != r).then_some(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: u64) -> Duration {
        Duration::from_secs(x)
    }

    #[test]
    fn silence_from_a_braid_relay_means_blocked_and_an_answer_brings_udp_back() {
        let mut r = Reachability::new(s(0));
        assert_eq!(r.on_tick(s(2), true), None);
        assert_eq!(r.on_tick(s(3), true), Some(Route::OverTcp));
        assert_eq!(r.on_tick(s(4), true), None, "said once");
        assert_eq!(r.on_answer(s(5)), Some(Route::Datagrams));
        assert_eq!(r.on_tick(s(7), true), None);
        assert_eq!(r.on_tick(s(8), true), Some(Route::OverTcp));
    }

    #[test]
    fn a_relay_not_known_to_be_braid_is_never_judged_blocked() {
        let mut r = Reachability::new(s(0));
        assert_eq!(r.on_tick(s(60), false), None);
        assert_eq!(r.route(), Route::Datagrams);
    }
}
