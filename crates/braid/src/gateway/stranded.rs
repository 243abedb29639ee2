//! Gives up relay connections the kernel left without a subflow (the rule and why:
//! `braid_proto::stranded`): a look at each live connection in the uplink manager's sweep, and
//! a stop, which resets the LAN side, for those stranded past the grace.

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use braid_proto::stranded::{Seen, Stranded, GRACE, LOST_GRACE};
use braid_sys::mptcp::info::{subflows_by_state, MptcpInfo, SubflowState};
use braid_sys::socket::normalize;

use crate::status::registry::{Live, Registry};
use tracing::info;

/// The error a stranded connection's relay ends with: the gateway's log line for it.
fn reason(s: &Seen) -> String {
    if s.unanswered {
        format!(
            "the relay connection's only subflow rode an uplink that went down before the relay \
             answered, and the kernel joins no subflow to such a connection; given up after \
             {} s, the LAN client gets a reset and can retry",
            LOST_GRACE.as_secs()
        )
    } else if s.none_left {
        format!(
            "the relay connection's last subflow closed with the uplink it rode, and the \
             kernel's path manager adds none to a connection left without one, not even when an \
             uplink returns; given up after {} s, the LAN client gets a reset and can retry",
            LOST_GRACE.as_secs()
        )
    } else {
        format!(
            "the relay connection has had no subflow on a working uplink for {} s while another \
             uplink was up: the uplink it ran on went down, and the kernel's path manager added \
             no other; the LAN client gets a reset and can retry",
            GRACE.as_secs()
        )
    }
}

/// What connection `live` (an MPTCP connection that has not fallen back, `info` its
/// MPTCP_INFO) shows of the rule. `down`: the addresses (direct and tunnel) of the uplinks that
/// do not carry traffic. A subflow from one of those is no subflow: braid withdraws a Down
/// uplink's endpoint, but the kernel closes the subflows of a withdrawn endpoint only on fully
/// established connections; on the others the subflow stays ESTABLISHED, retransmitting into a
/// dead link for minutes.
pub fn look(live: &Live, info: &MptcpInfo, down: &[IpAddr]) -> Option<Seen> {
    let unanswered = info.peer_answered() == Some(false);
    // The path manager's count drops as subflows close: a bonded connection needs no closer
    // look (two more syscalls each, every second, on a busy router).
    let counted = info.total_subflows();
    let (established, none_left) = if counted >= 2 {
        (counted as usize, false)
    } else {
        let subflows = subflows_by_state(&live.socket).ok()?;
        (
            subflows
                .iter()
                .filter(|((local, _), state)| {
                    *state == SubflowState::Established && !down.contains(&normalize(*local).ip())
                })
                .count(),
            // Only closing ones, or none: nothing that could carry it again.
            subflows
                .iter()
                .all(|(_, state)| *state == SubflowState::Closing),
        )
    };
    Some(Seen {
        id: live.id,
        established,
        none_left,
        unanswered,
    })
}

/// Stops, at `now`, the connections in `seen` stranded past their grace; `any_up`: some uplink
/// carries traffic.
pub fn act(registry: &Registry, watch: &mut Stranded, now: Duration, any_up: bool, seen: &[Seen]) {
    // One log line per kind of stop: its reason and how many.
    let mut stopped: Vec<(String, usize)> = Vec::new();
    for s in watch.review(now, seen, any_up) {
        let why = reason(&s);
        if registry.stop(s.id, &why) {
            registry.stranded_total.fetch_add(1, Ordering::Relaxed);
            match stopped.iter_mut().find(|(r, _)| *r == why) {
                Some((_, n)) => *n += 1,
                None => stopped.push((why, 1)),
            }
        }
    }
    for (why, n) in stopped {
        info!("reset {n} LAN connection(s) with no subflow left: {why}");
    }
}
