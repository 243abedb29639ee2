//! Which uplink a UDP session rides. Unlike a TCP connection, which MPTCP spreads over every
//! uplink, a UDP session's datagrams go over one uplink at a time, chosen here from the health
//! machine's view:
//!
//! - the pinned uplink (`udp_uplink`) while it is `Up`;
//! - else the `Up` primary uplink with the lowest RTT (a backup only when no primary is `Up`);
//! - the current uplink is kept until it is no longer `Up` (`Suspect` already moves the session:
//!   a datagram lost is lost for good, unlike a TCP segment) or another is clearly faster
//!   ([`switch_margin`]), so sessions do not flap between two similar links;
//! - when nothing is `Up`, a `Suspect` uplink beats none, and with nothing usable at all the
//!   current choice stays (the datagrams have nowhere better to go).

use std::time::Duration;

use crate::health::LinkState;

/// One uplink as the choice sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// Its health state.
    pub state: LinkState,
    /// Its smoothed probe RTT; `None` when not probed (then it ranks last among equals).
    pub rtt: Option<Duration>,
    /// A backup uplink (used only while no primary is `Up`).
    pub backup: bool,
}

/// How much faster another `Up` uplink must be before a session leaves its current one:
/// 20 % of the current RTT, and at least 5 ms.
pub fn switch_margin(current: Duration) -> Duration {
    (current / 5).max(Duration::from_millis(5))
}

/// The uplink (index into `uplinks`) the sessions should ride now, given the `current` one and
/// the `pinned` one, if any. `None` only when no uplink was ever usable.
pub fn choose(
    current: Option<usize>,
    uplinks: &[Candidate],
    pinned: Option<usize>,
) -> Option<usize> {
    let is = |i: usize, s: LinkState| uplinks.get(i).is_some_and(|c| c.state == s);
    if let Some(p) = pinned.filter(|&p| is(p, LinkState::Up)) {
        return Some(p);
    }
    let best =
        fastest(uplinks, LinkState::Up, false).or_else(|| fastest(uplinks, LinkState::Up, true));
    match (current, best) {
        (Some(c), Some(b)) if is(c, LinkState::Up) && pinned != Some(b) => {
            let rtt = |i: usize| uplinks[i].rtt.unwrap_or(Duration::MAX);
            let primary_returned = uplinks[c].backup && !uplinks[b].backup;
            let clearly_faster =
                rtt(b).saturating_add(switch_margin(rtt(c))) < rtt(c) && rtt(c) != Duration::MAX;
            Some(if primary_returned || clearly_faster {
                b
            } else {
                c
            })
        }
        (_, Some(b)) => Some(b),
        (c, None) => fastest(uplinks, LinkState::Suspect, false)
            .or_else(|| fastest(uplinks, LinkState::Suspect, true))
            .or(c),
    }
}

/// The lowest-RTT uplink in `state` among primaries (`backup` false) or backups.
fn fastest(uplinks: &[Candidate], state: LinkState, backup: bool) -> Option<usize> {
    (uplinks.iter().enumerate())
        .filter(|(_, c)| c.state == state && c.backup == backup)
        .min_by_key(|(i, c)| (c.rtt.unwrap_or(Duration::MAX), *i))
        .map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use LinkState::*;

    fn c(state: LinkState, rtt_ms: u64) -> Candidate {
        Candidate {
            state,
            rtt: Some(Duration::from_millis(rtt_ms)),
            backup: false,
        }
    }

    #[test]
    fn no_current_picks_the_fastest_up_uplink() {
        assert_eq!(
            choose(None, &[c(Up, 40), c(Up, 10), c(Down, 1)], None),
            Some(1)
        );
    }

    #[test]
    fn suspect_current_moves_to_the_other_up_uplink_and_back_when_it_is_faster_again() {
        let mut links = [c(Up, 10), c(Up, 40)];
        assert_eq!(choose(None, &links, None), Some(0));
        links[0].state = Suspect;
        assert_eq!(choose(Some(0), &links, None), Some(1));
        links[0].state = Down;
        assert_eq!(choose(Some(1), &links, None), Some(1));
        links[0].state = Up;
        assert_eq!(
            choose(Some(1), &links, None),
            Some(0),
            "clearly faster again"
        );
    }

    #[test]
    fn similar_rtts_do_not_flap() {
        let links = [c(Up, 20), c(Up, 18)];
        assert_eq!(choose(Some(0), &links, None), Some(0));
        let links = [c(Up, 100), c(Up, 85)];
        assert_eq!(choose(Some(0), &links, None), Some(0), "within 20 %");
        let links = [c(Up, 100), c(Up, 70)];
        assert_eq!(choose(Some(0), &links, None), Some(1));
    }

    #[test]
    fn pinned_uplink_wins_while_up_and_gets_the_sessions_back() {
        let mut links = [c(Up, 10), c(Up, 40)];
        assert_eq!(choose(Some(0), &links, Some(1)), Some(1));
        links[1].state = Suspect;
        assert_eq!(choose(Some(1), &links, Some(1)), Some(0));
        links[1].state = Up;
        assert_eq!(choose(Some(0), &links, Some(1)), Some(1));
    }

    #[test]
    fn backups_only_while_no_primary_is_up_and_primaries_win_back() {
        let mut links = [c(Down, 10), c(Up, 5)];
        links[1].backup = true;
        assert_eq!(choose(Some(0), &links, None), Some(1));
        links[0].state = Up;
        assert_eq!(choose(Some(1), &links, None), Some(0));
    }

    #[test]
    fn nothing_up_prefers_a_suspect_uplink_then_keeps_the_current() {
        let links = [c(Down, 10), c(Suspect, 40)];
        assert_eq!(choose(Some(0), &links, None), Some(1));
        let links = [c(Down, 10), c(Recovering, 40)];
        assert_eq!(choose(Some(0), &links, None), Some(0));
        assert_eq!(choose(None, &links, None), None);
    }

    #[test]
    fn unprobed_uplinks_rank_after_probed_ones() {
        let links = [
            Candidate {
                rtt: None,
                ..c(Up, 0)
            },
            c(Up, 300),
        ];
        assert_eq!(choose(None, &links, None), Some(1));
        assert_eq!(
            choose(Some(0), &links, None),
            Some(0),
            "no RTT to compare: stay"
        );
    }
}
