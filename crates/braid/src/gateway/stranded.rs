//! Gives up relay connections the kernel left without a subflow (the rule and why:
//! `braid_proto::stranded`): one look at every live connection per sweep, and a stop, which
//! resets the LAN side, for those stranded past the grace.

use std::sync::atomic::Ordering;
use std::time::Duration;

use braid_proto::stranded::{Seen, Stranded, GRACE};
use braid_sys::mptcp::info::{established_subflow_addrs, mptcp_state, MptcpState};

use crate::status::registry::Registry;

/// The error a stranded connection's relay ends with: the gateway's log line for it.
fn reason() -> String {
    format!(
        "the relay connection has had no subflow for {} s while another uplink was up: the \
         uplink it ran on went down, and the kernel's path manager adds no subflow to a \
         connection the relay never acknowledged; the LAN client gets a reset and can retry",
        GRACE.as_secs()
    )
}

/// Looks at every live MPTCP relay connection at `now` (`any_up`: some uplink carries traffic)
/// and stops those stranded for the grace; how many were stopped.
pub fn sweep(registry: &Registry, watch: &mut Stranded, now: Duration, any_up: bool) -> usize {
    let mut seen = Vec::new();
    registry.for_each(|live| {
        // A fallen-back or plain TCP connection has TCP's own timeouts; only MPTCP can be
        // left with no subflow and no error.
        let MptcpState::Mptcp { subflows } = mptcp_state(&live.socket) else {
            return;
        };
        // The path manager's count drops as subflows close: a bonded connection needs no
        // closer look (two more syscalls each, every second, on a busy router).
        if subflows >= 2 {
            seen.push(Seen {
                id: live.id,
                established: subflows as usize,
            });
            return;
        }
        if let Ok(subflows) = established_subflow_addrs(&live.socket) {
            seen.push(Seen {
                id: live.id,
                established: subflows.len(),
            });
        }
    });
    let reason = reason();
    let mut stopped = 0;
    for id in watch.review(now, &seen, any_up) {
        if registry.stop(id, &reason) {
            registry.stranded_total.fetch_add(1, Ordering::Relaxed);
            stopped += 1;
        }
    }
    stopped
}
