//! Finds relay connections that lost the subflow of an uplink that is up (the rule and why:
//! `braid_proto::lost_join`): one look at every live connection per sweep, a count for status
//! and metrics, and a log line per uplink when one is newly lost.

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use braid_proto::lost_join::{LostJoins, Seen, GRACE, LOG_EVERY};
use braid_sys::mptcp::info::mptcp_info;
use tracing::info;

use crate::gateway::pool::subflow_locals;
use crate::status::registry::Registry;

/// An uplink that is up, and the address its subflows come from on its current path.
pub struct UpUplink {
    /// Its config name.
    pub name: String,
    /// Its own address, or its tunnel's while its path is tunnelled.
    pub source: IpAddr,
}

/// Looks at every live MPTCP relay connection at `now` for one with no established subflow
/// from an uplink in `up`, counts them in the registry and logs those newly lost.
pub fn sweep(registry: &Registry, watch: &mut LostJoins, now: Duration, up: &[UpUplink]) {
    let mut seen = Vec::new();
    if up.len() >= 2 {
        registry.for_each(|live| {
            // Plain TCP and fallen-back connections have no joins to lose; one the relay has not
            // answered yet gets none before it is fully established (the stranded rule's case).
            let Ok(info) = mptcp_info(&live.socket) else {
                return;
            };
            if info.fallback() || info.peer_answered() == Some(false) {
                return;
            }
            // The path manager's count: as many subflows as uplinks up needs no closer look
            // (one more syscall each, every second, on a busy router).
            if info.total_subflows() as usize >= up.len() {
                return;
            }
            let (_, locals) = subflow_locals(&live.socket);
            let missing = (up.iter())
                .filter(|u| !locals.contains(&u.source))
                .map(|u| u.name.clone())
                .collect();
            seen.push(Seen {
                id: live.id,
                missing,
            });
        });
    }
    let lost = watch.review(now, &seen);
    registry
        .lost_join_now
        .store(watch.connections_now(), Ordering::Relaxed);
    registry
        .lost_join_total
        .fetch_add(lost.len() as u64, Ordering::Relaxed);
    for (uplink, n) in watch.to_log(now) {
        info!(
            "{n} relay connection(s) have had no subflow on uplink {uplink}, which is up, for {} s \
             (at most one such line per uplink every {} s): the subflow was closed (reset by a \
             kernel, refused over the relay's subflow limit, or dropped on the path) and the \
             kernel's path manager does not join an endpoint to a connection twice; they carry \
             on over the other uplinks without {uplink}'s share (new connections bond as usual; \
             `braid status` lists subflows per connection)",
            GRACE.as_secs(),
            LOG_EVERY.as_secs()
        );
    }
}
