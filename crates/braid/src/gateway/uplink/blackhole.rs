//! Watches the kernel's MPTCP blackhole state (Linux 6.12+).
//!
//! When SYNs carrying MPTCP options are dropped on some path but a retry without them gets
//! through, the kernel turns MPTCP off for every new connection in the namespace for
//! `net.mptcp.blackhole_timeout` seconds (3600 by default, doubling on repeat). Bonding then
//! silently stops for an hour. braid cannot see that from its sockets alone, so it reads the
//! counters, says so once per episode with the cause and the fix, and can shorten the timeout.

use braid_sys::mptcp::blackhole::{self, BlackholeCounters, TIMEOUT_SYSCTL};
use braid_sys::sysctl::Procfs;
use tracing::{info, warn};

use crate::state::Journal;

/// Follows the counters between calls.
pub struct Watch {
    procfs: Procfs,
    last: BlackholeCounters,
    /// The sysctl value to restore on exit, when braid changed it.
    restore: Option<String>,
    active: bool,
}

impl Watch {
    /// Starts watching; with `timeout`, sets `net.mptcp.blackhole_timeout` for braid's lifetime,
    /// noting the value to restore in `journal` first (an original recorded by an earlier run
    /// that could not restore it wins over the value found now).
    pub fn start(timeout: Option<u32>, journal: &Journal) -> Watch {
        let procfs = Procfs::default();
        let mut restore = None;
        if let Some(t) = timeout {
            match procfs.sysctl(TIMEOUT_SYSCTL) {
                Ok(old) => {
                    let original = journal.note_sysctl(TIMEOUT_SYSCTL, &old);
                    match procfs.set_sysctl(TIMEOUT_SYSCTL, &t.to_string()) {
                        Ok(()) => {
                            info!("{TIMEOUT_SYSCTL}: {old} → {t} s (mptcp_blackhole_timeout_secs)");
                        }
                        Err(e) => warn!("cannot set {TIMEOUT_SYSCTL} to {t}: {e}"),
                    }
                    restore = Some(original);
                }
                Err(e) => warn!("mptcp_blackhole_timeout_secs is set, but {e}"),
            }
        }
        let last = blackhole::read(&procfs).counters;
        Watch {
            procfs,
            last,
            restore,
            active: false,
        }
    }

    /// Reads the counters; logs once when the kernel starts disabling MPTCP, and once when the
    /// episode seems over. Returns whether MPTCP is being disabled now.
    pub fn poll(&mut self) -> bool {
        let st = blackhole::read(&self.procfs);
        let rising = blackhole::active_since(&self.last, &st.counters);
        if rising && !self.active {
            let timeout = st
                .timeout_secs
                .map(|t| format!("{t} s"))
                .unwrap_or_else(|| "the kernel's timeout".into());
            warn!(
                "the kernel has turned MPTCP OFF for new connections (blackhole detection: a SYN with MPTCP options was dropped on some path, then got through without them; MPTcpExtBlackhole={}, MPCapableSYNTXDisabled={}). New connections use plain TCP, with no bonding, for {timeout}. Fix: find the uplink whose path drops MPTCP options (braid doctor), or set mptcp_blackhole_timeout_secs in gateway.toml to shorten the penalty",
                st.counters.blackhole, st.counters.syn_tx_disabled
            );
        } else if !rising && self.active {
            info!("no new MPTCP blackhole activity; new connections should be MPTCP again once the kernel's timeout has passed");
        }
        self.active = rising;
        self.last = st.counters;
        rising
    }

    /// `MPTcpExtBlackhole` at the last poll.
    pub fn count(&self) -> u64 {
        self.last.blackhole
    }

    /// `net.mptcp.blackhole_timeout`, if the kernel has it.
    pub fn timeout_secs(&self) -> Option<u64> {
        blackhole::read(&self.procfs).timeout_secs
    }

    /// Puts the sysctl back as it was.
    pub fn stop(self) {
        if let Some(old) = self.restore {
            if let Err(e) = self.procfs.set_sysctl(TIMEOUT_SYSCTL, &old) {
                warn!("restoring {TIMEOUT_SYSCTL} to {old}: {e}");
            }
        }
    }
}
