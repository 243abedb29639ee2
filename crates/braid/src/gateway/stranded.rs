//! Gives up relay connections the kernel left without a subflow (the rule and why:
//! `braid_proto::stranded`): one look at every live connection per sweep, and a stop, which
//! resets the LAN side, for those stranded past the grace.

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use braid_proto::stranded::{Seen, Stranded, GRACE, UNANSWERED_GRACE};
use braid_sys::mptcp::info::{established_subflow_addrs, mptcp_info};
use braid_sys::socket::normalize;

use crate::status::registry::Registry;
use tracing::info;

/// The error a stranded connection's relay ends with: the gateway's log line for it.
fn reason(unanswered: bool) -> String {
    if unanswered {
        format!(
            "the relay connection's only subflow rode an uplink that went down before the relay \
             answered, and the kernel joins no subflow to such a connection; given up after \
             {} s, the LAN client gets a reset and can retry",
            UNANSWERED_GRACE.as_secs()
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

/// Looks at every live MPTCP relay connection at `now` and stops those stranded past their
/// grace. `any_up`: some uplink carries traffic; `down`: the addresses
/// (direct and tunnel) of the uplinks that do not. A subflow from one of those is no subflow:
/// braid withdraws a Down uplink's endpoint, but the kernel closes the subflows of a withdrawn
/// endpoint only on fully established connections; on the others the subflow stays
/// ESTABLISHED, retransmitting into a dead link for minutes.
pub fn sweep(
    registry: &Registry,
    watch: &mut Stranded,
    now: Duration,
    any_up: bool,
    down: &[IpAddr],
) {
    let mut seen = Vec::new();
    registry.for_each(|live| {
        // A plain TCP socket has no MPTCP_INFO, and a fallen-back connection has TCP's own
        // timeouts: only MPTCP can be left with no subflow and no error.
        let Ok(info) = mptcp_info(&live.socket) else {
            return;
        };
        if info.fallback() {
            return;
        }
        let unanswered = info.peer_answered() == Some(false);
        // The path manager's count drops as subflows close: a bonded connection needs no
        // closer look (two more syscalls each, every second, on a busy router).
        let counted = info.total_subflows();
        let established = if counted >= 2 {
            counted as usize
        } else {
            match established_subflow_addrs(&live.socket) {
                Ok(subflows) => subflows
                    .iter()
                    .filter(|(local, _)| !down.contains(&normalize(*local).ip()))
                    .count(),
                Err(_) => return,
            }
        };
        seen.push(Seen {
            id: live.id,
            established,
            unanswered,
        });
    });
    // Stopped connections: those the relay never answered, and the others.
    let (mut unanswered, mut answered) = (0, 0);
    for s in watch.review(now, &seen, any_up) {
        if registry.stop(s.id, &reason(s.unanswered)) {
            registry.stranded_total.fetch_add(1, Ordering::Relaxed);
            if s.unanswered {
                unanswered += 1;
            } else {
                answered += 1;
            }
        }
    }
    for (n, never) in [(unanswered, true), (answered, false)] {
        if n > 0 {
            info!(
                "reset {n} LAN connection(s) with no subflow left: {}",
                reason(never)
            );
        }
    }
}
