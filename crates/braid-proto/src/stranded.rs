//! Relay connections stranded without a subflow.
//!
//! When the only uplink an MPTCP connection has a subflow on goes down, braid withdraws that
//! uplink's endpoint, and the kernel closes the subflow (on a fully established connection) or
//! leaves it retransmitting into the dead link for minutes (on one the relay has not answered
//! yet). Either way the connection has no working subflow, its socket reports no error, a
//! read waits, and the LAN client behind it hangs. Measured in the lab: across a wifi flap,
//! about one fresh LAN connection in 300 hung until the client gave up.
//!
//! Nothing in the kernel rescues most of them. The in-kernel path manager adds a subflow to an
//! existing connection only when an endpoint is added, only if the connection is fully
//! established, and never to one left with no subflow at all: measured on 6.18
//! (`lab_stranded`), an answered connection whose only subflow closed with its uplink got none
//! back when that uplink returned half a second later, nor from the other uplink's endpoint,
//! with the relay accepting joins. What can come back is a subflow still established on an
//! uplink that is down (its retransmissions get through once the link does), or a join still
//! under way.
//!
//! The rule, for a connection with no established subflow on an uplink that carries traffic:
//! - with no subflow left that could carry it (only closing ones, or none), nothing can
//!   rescue it: it is given up after [`LOST_GRACE`], uplinks or not;
//! - otherwise (a subflow established on a Down uplink, or a join under way) its clock runs
//!   only while some uplink carries traffic: while none does, nothing could carry it or a
//!   retry, braid keeps every endpoint, and the subflow may resume with its path;
//! - one the relay never answered (nothing acknowledged, nothing received at the MPTCP level:
//!   not fully established on either end, so no join can rescue it, and its own subflow rides
//!   a Down uplink) is given up after [`LOST_GRACE`]: a retry over the working uplink beats
//!   waiting for that one;
//! - any other is given up after [`GRACE`].
//!
//! The gateway resets a connection it gives up, so the LAN client retries at once.

use std::collections::HashMap;
use std::time::Duration;

/// How long a connection that still has a subflow, but none established on an uplink that
/// carries traffic, may stay so while some uplink is up before it is given up. Long enough for
/// a subflow on a returning uplink to resume (its retransmission timer backs off; a flap of a
/// second or two is caught), short enough that a browser retries before its user gives up.
pub const GRACE: Duration = Duration::from_secs(5);

/// How long a connection nothing can rescue (no subflow left), or one a retry would serve
/// better (never answered by the relay), is kept: two looks a second apart rule out a subflow
/// caught between close and replacement.
pub const LOST_GRACE: Duration = Duration::from_secs(1);

/// What one look at a live connection found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    /// The connection's id in the gateway's registry.
    pub id: u64,
    /// Its subflows whose TCP handshake is complete, that are not closing, and whose uplink
    /// carries traffic.
    pub established: usize,
    /// No subflow left that could carry it again: none established or connecting on any
    /// uplink (a Down one included), only closing ones or none at all.
    pub none_left: bool,
    /// The relay never acknowledged nor sent a byte at the MPTCP level (false when the kernel
    /// does not say).
    pub unanswered: bool,
}

/// The connections without a subflow and since when, across looks.
#[derive(Debug, Default)]
pub struct Stranded {
    /// Connection id → when it was first seen without a subflow while an uplink was up.
    since: HashMap<u64, Duration>,
}

impl Stranded {
    /// Takes one look at every live MPTCP connection at `now` (`any_up`: some uplink carries
    /// traffic) and returns the looks of those stranded past their grace. Connections not in
    /// `seen` are forgotten (they ended).
    pub fn review(&mut self, now: Duration, seen: &[Seen], any_up: bool) -> Vec<Seen> {
        let mut next = HashMap::with_capacity(self.since.len());
        let mut out = Vec::new();
        for s in seen.iter().filter(|s| s.established == 0) {
            let grace = if s.none_left {
                LOST_GRACE
            } else if !any_up {
                // Nothing could carry it or a retry: its clock starts when an uplink is back.
                continue;
            } else if s.unanswered {
                LOST_GRACE
            } else {
                GRACE
            };
            let since = self.since.get(&s.id).copied().unwrap_or(now);
            if now.saturating_sub(since) >= grace {
                out.push(*s);
            } else {
                next.insert(s.id, since);
            }
        }
        self.since = next;
        out
    }

    /// Connections currently without a subflow and not yet given up.
    pub fn waiting(&self) -> usize {
        self.since.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// The ids a review gave up.
    fn ids(given_up: Vec<Seen>) -> Vec<u64> {
        given_up.into_iter().map(|s| s.id).collect()
    }

    /// A look at a connection with `established` subflows, and when that is 0, with one still
    /// established on a Down uplink.
    fn look(id: u64, established: usize) -> Seen {
        Seen {
            id,
            established,
            none_left: false,
            unanswered: false,
        }
    }

    #[test]
    fn a_connection_the_relay_never_answered_is_given_up_sooner_while_an_uplink_is_up() {
        let lost = |id| Seen {
            unanswered: true,
            ..look(id, 0)
        };
        let mut s = Stranded::default();
        assert!(s.review(ms(0), &[lost(1), lost(2)], true).is_empty());
        assert!(s
            .review(LOST_GRACE - ms(1), &[lost(1), lost(2)], true)
            .is_empty());
        // No join can rescue it: a retry over the working uplink is better.
        assert_eq!(ids(s.review(LOST_GRACE, &[lost(1)], true)), vec![1]);
        // With every uplink down nothing could carry a retry, and its own subflow (its
        // endpoint kept) may still get through when the path is back: its clock stops.
        assert!(s.review(ms(0), &[lost(4)], false).is_empty());
        assert!(s.review(GRACE * 10, &[lost(4)], false).is_empty());
        assert!(s.review(GRACE * 10, &[lost(4)], true).is_empty());
        assert_eq!(
            ids(s.review(GRACE * 10 + LOST_GRACE, &[lost(4)], true)),
            vec![4]
        );
        // One with a live subflow is never given up, answered or not.
        let alive = Seen {
            unanswered: true,
            ..look(3, 1)
        };
        assert!(s.review(ms(0), &[alive], true).is_empty());
        assert!(s.review(GRACE * 10, &[alive], true).is_empty());
    }

    #[test]
    fn a_connection_with_no_subflow_left_is_given_up_soon_uplinks_or_not() {
        let empty = |id| Seen {
            none_left: true,
            ..look(id, 0)
        };
        let mut s = Stranded::default();
        // A subflow still established on the Down uplink at the first look: the long grace's
        // clock starts, and once that subflow is closing, the short one counts from the same
        // start.
        assert!(s.review(ms(0), &[look(1, 0), empty(2)], true).is_empty());
        assert!(s
            .review(LOST_GRACE - ms(1), &[empty(1), empty(2)], false)
            .is_empty());
        assert_eq!(
            ids(s.review(LOST_GRACE, &[empty(1), empty(2)], false)),
            vec![1, 2]
        );
        // A subflow established on a Down uplink may resume: the long grace, while up.
        assert!(s.review(ms(0), &[look(3, 0)], true).is_empty());
        assert!(s.review(GRACE - ms(1), &[look(3, 0)], true).is_empty());
    }

    #[test]
    fn a_connection_without_subflows_is_given_up_after_the_grace_and_not_before() {
        let mut s = Stranded::default();
        assert!(s.review(ms(0), &[look(1, 0), look(2, 1)], true).is_empty());
        assert_eq!(s.waiting(), 1);
        assert!(s
            .review(GRACE - ms(1), &[look(1, 0), look(2, 1)], true)
            .is_empty());
        assert_eq!(
            ids(s.review(GRACE, &[look(1, 0), look(2, 1)], true)),
            vec![1]
        );
        // Given up once: the gateway resets it and it leaves the registry.
        assert_eq!(s.waiting(), 0);
    }

    #[test]
    fn a_subflow_that_joins_in_time_clears_the_clock() {
        let mut s = Stranded::default();
        s.review(ms(0), &[look(1, 0)], true);
        s.review(ms(3000), &[look(1, 1)], true);
        // Lost again later: a fresh grace from then.
        assert!(s.review(ms(4000), &[look(1, 0)], true).is_empty());
        assert!(s
            .review(ms(4000) + GRACE - ms(1), &[look(1, 0)], true)
            .is_empty());
        assert_eq!(
            ids(s.review(ms(4000) + GRACE, &[look(1, 0)], true)),
            vec![1]
        );
    }

    #[test]
    fn the_clock_runs_only_while_an_uplink_is_up() {
        let mut s = Stranded::default();
        assert!(s.review(ms(0), &[look(7, 0)], false).is_empty());
        // A whole minute with every uplink down: nothing could have carried it.
        assert!(s.review(ms(60_000), &[look(7, 0)], false).is_empty());
        // An uplink is back: a subflow on it gets the whole grace to resume.
        assert!(s.review(ms(60_200), &[look(7, 0)], true).is_empty());
        assert!(s
            .review(ms(60_200) + GRACE - ms(1), &[look(7, 0)], true)
            .is_empty());
        assert_eq!(
            ids(s.review(ms(60_200) + GRACE, &[look(7, 0)], true)),
            vec![7]
        );
    }

    #[test]
    fn connections_that_ended_are_forgotten() {
        let mut s = Stranded::default();
        s.review(ms(0), &[look(1, 0), look(2, 0)], true);
        s.review(ms(100), &[look(2, 0)], true);
        assert_eq!(s.waiting(), 1);
        // Id 1 reappearing (it cannot, ids are not reused; but if it did) starts afresh.
        assert_eq!(
            ids(s.review(GRACE, &[look(1, 0), look(2, 0)], true)),
            vec![2]
        );
        assert_eq!(s.waiting(), 1);
    }
}
