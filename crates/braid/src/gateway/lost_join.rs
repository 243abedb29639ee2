//! Finds relay connections that lost the subflow of an uplink that is up (the rule and why:
//! `braid_proto::lost_join`): a look at each live connection in the uplink manager's sweep, a
//! count for status and metrics, and a log line per uplink when one is newly lost.

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use braid_proto::lost_join::{LostJoins, Seen, GRACE, LOG_EVERY};
use braid_sys::mptcp::info::MptcpInfo;
use tracing::info;

use crate::gateway::pool::subflow_locals;
use crate::status::registry::{Live, Registry};

/// An uplink that is up, and the address its subflows come from on its current path.
pub struct UpUplink {
    /// Its config name.
    pub name: String,
    /// Its own address, or its tunnel's while its path is tunnelled.
    pub source: IpAddr,
}

/// What connection `live` (an MPTCP connection that has not fallen back, `info` its
/// MPTCP_INFO) shows of the rule: the uplinks in `up` it has no established subflow from, when
/// two or more are up.
pub fn look(live: &Live, info: &MptcpInfo, up: &[UpUplink]) -> Option<Seen> {
    // One the relay has not answered yet gets no join before it is fully established (the
    // stranded rule's case); as many subflows as uplinks up needs no closer look (one more
    // syscall each, every second, on a busy router).
    if up.len() < 2 || info.peer_answered() == Some(false) {
        return None;
    }
    if info.total_subflows() as usize >= up.len() {
        return None;
    }
    let (_, locals) = subflow_locals(&live.socket);
    let missing = (up.iter())
        .filter(|u| !locals.contains(&u.source))
        .map(|u| u.name.clone())
        .collect();
    Some(Seen {
        id: live.id,
        missing,
    })
}

/// Counts the connections in `seen` in the registry and logs, at `now`, those newly lost.
pub fn act(registry: &Registry, watch: &mut LostJoins, now: Duration, seen: &[Seen]) {
    let lost = watch.review(now, seen);
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
