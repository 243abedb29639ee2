//! Evidence that an uplink's direct path strips or resets MPTCP, from live relay connections (an
//! MPTCP connection that has had time to join but has no subflow from the uplink, or one whose
//! first subflow started on the uplink and fell back to plain TCP) and from the kernel's MPTCP
//! counters, which say that something went wrong but not on which path (a fallback, a reset
//! subflow, a mapping lost with stripped DSS options). Evidence only asks for direct-path checks
//! (see `check.rs`); a check decides, per uplink.

use std::net::IpAddr;
use std::time::Duration;

use braid_sys::mptcp::info::{mptcp_state, subflow_addrs, MptcpState};

use crate::status::registry::Registry;

/// How long a connection may take to get its joins before a missing one counts.
pub const JOIN_GRACE: Duration = Duration::from_millis(1500);

/// `MPTcpExt` counters that rise when a path strips or resets MPTCP options.
pub const TROUBLE: &[&str] = &[
    "MPCapableFallbackACK",
    "MPCapableFallbackSYNACK",
    "MPFallbackTokenInit",
    "MPJoinSynAckHMacFailure",
    "MPJoinAckHMacFailure",
    "DSSNotMatching",
    "DSSNoMatchTCP",
    "DSSCorruptionFallback",
    "DSSCorruptionReset",
    "InfiniteMapTx",
    "InfiniteMapRx",
    "MPFailTx",
    "MPFailRx",
    "MPRstTx",
    "MPRstRx",
];

/// The sum of the [`TROUBLE`] counters in `/proc/net/netstat` text (0 when there are none).
pub fn trouble(netstat: &str) -> u64 {
    let mut lines = netstat.lines();
    while let Some(names) = lines.next() {
        let Some(values) = lines.next() else { break };
        let (Some(n), Some(v)) = (
            names.strip_prefix("MPTcpExt:"),
            values.strip_prefix("MPTcpExt:"),
        ) else {
            continue;
        };
        return n
            .split_whitespace()
            .zip(v.split_whitespace())
            .filter(|(name, _)| TROUBLE.contains(name))
            .filter_map(|(_, value)| value.parse::<u64>().ok())
            .sum();
    }
    0
}

/// Which of `direct` (uplink index, the address its subflows use) look broken.
pub fn suspects(registry: &Registry, direct: &[(usize, IpAddr)]) -> Vec<usize> {
    let mut out: Vec<usize> = Vec::new();
    let mut note = |i: usize| {
        if !out.contains(&i) {
            out.push(i);
        }
    };
    registry.for_each(|live| {
        if live.started.elapsed() < JOIN_GRACE {
            return;
        }
        match mptcp_state(&live.socket) {
            MptcpState::Fallback => {
                let local = socket2::SockRef::from(&live.socket)
                    .local_addr()
                    .ok()
                    .and_then(|a| a.as_socket())
                    .map(|a| braid_sys::socket::normalize(a).ip());
                if let Some((i, _)) = direct.iter().find(|(_, a)| Some(*a) == local) {
                    note(*i);
                }
            }
            MptcpState::Mptcp { .. } => {
                let Ok(subflows) = subflow_addrs(&live.socket) else {
                    return;
                };
                let locals: Vec<IpAddr> = subflows
                    .iter()
                    .map(|(l, _)| braid_sys::socket::normalize(*l).ip())
                    .collect();
                for (i, a) in direct {
                    if !locals.contains(a) {
                        note(*i);
                    }
                }
            }
            MptcpState::Tcp => {}
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trouble_sums_the_named_mptcp_counters_only() {
        let text = "TcpExt: SyncookiesSent MPRstTx\nTcpExt: 5 9\nMPTcpExt: MPCapableSYNRX MPRstTx MPCapableFallbackSYNACK\nMPTcpExt: 100 2 3\n";
        assert_eq!(trouble(text), 5);
        assert_eq!(trouble("garbage"), 0);
        assert_eq!(trouble("MPTcpExt: MPRstTx\n"), 0);
    }
}
