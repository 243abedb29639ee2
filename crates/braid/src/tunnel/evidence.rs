//! Evidence from live relay connections that an uplink's direct path strips or resets MPTCP:
//! an MPTCP connection that has had time to join but has no subflow from the uplink, or a
//! connection whose first subflow started on the uplink and fell back to plain TCP. Evidence
//! only asks for a direct-path check (see `check.rs`); the check decides.

use std::net::IpAddr;
use std::time::Duration;

use braid_sys::mptcp::info::{mptcp_state, subflow_addrs, MptcpState};

use crate::status::registry::Registry;

/// How long a connection may take to get its joins before a missing one counts.
pub const JOIN_GRACE: Duration = Duration::from_millis(1500);

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
