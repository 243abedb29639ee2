//! The kernel's MPTCP blackhole detection (Linux 6.12+).
//!
//! When SYNs carrying MPTCP options are dropped on a path but a retransmission
//! without them gets through, the kernel assumes a middlebox eats MPTCP and
//! disables it for *all* new connections in the network namespace for
//! `net.mptcp.blackhole_timeout` seconds (default 3600, doubling on each
//! repeat; 0 turns detection off). New connections then fall back to plain
//! TCP: no bonding. The counters live on the `MPTcpExt` lines of
//! `/proc/net/netstat` (`nstat -az MPTcpExtBlackhole`).

use crate::sysctl::{Procfs, SysctlError};

/// The sysctl holding the initial disable period, in seconds.
pub const TIMEOUT_SYSCTL: &str = "net.mptcp.blackhole_timeout";

/// The blackhole counters of the namespace (`nstat -az 'MPTcpExt*'`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct BlackholeCounters {
    /// `MPTcpExtBlackhole`: how many times a blackhole was detected and MPTCP
    /// disabled for new connections.
    pub blackhole: u64,
    /// `MPTcpExtMPCapableSYNTXDrop`: MP_CAPABLE SYNs that were retransmitted
    /// without MPTCP options (suspected drops).
    pub syn_tx_drop: u64,
    /// `MPTcpExtMPCapableSYNTXDisabled`: MPTCP connections that sent a plain
    /// TCP SYN because MPTCP was disabled after a blackhole.
    pub syn_tx_disabled: u64,
}

/// The blackhole state as read from procfs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlackholeStatus {
    /// The counters; zero where the kernel lacks them.
    pub counters: BlackholeCounters,
    /// False if any of the three counters is missing: the kernel is older
    /// than 6.12 (or built without MPTCP) and has no blackhole detection.
    pub supported: bool,
    /// `net.mptcp.blackhole_timeout` in seconds, `None` if it could not be
    /// read (missing on kernels without the feature).
    pub timeout_secs: Option<u64>,
}

impl BlackholeStatus {
    /// True if the kernel detects blackholes and may disable MPTCP on its own
    /// (supported, and the timeout is not 0).
    pub fn detection_enabled(&self) -> bool {
        self.supported && self.timeout_secs != Some(0)
    }
}

/// Reads the blackhole counters and timeout. Like
/// `nstat -az MPTcpExtBlackhole MPTcpExtMPCapableSYNTXDrop MPTcpExtMPCapableSYNTXDisabled`
/// and `sysctl -n net.mptcp.blackhole_timeout`.
pub fn read(procfs: &Procfs) -> BlackholeStatus {
    let blackhole = procfs.net_counter("MPTcpExtBlackhole");
    let syn_tx_drop = procfs.net_counter("MPTcpExtMPCapableSYNTXDrop");
    let syn_tx_disabled = procfs.net_counter("MPTcpExtMPCapableSYNTXDisabled");
    let supported = blackhole.is_some() && syn_tx_drop.is_some() && syn_tx_disabled.is_some();
    let timeout_secs = match procfs.sysctl_u64(TIMEOUT_SYSCTL) {
        Ok(v) => Some(v),
        Err(SysctlError::Missing { .. }) => None,
        Err(e) => {
            tracing::debug!("{e}");
            None
        }
    };
    BlackholeStatus {
        counters: BlackholeCounters {
            blackhole: blackhole.unwrap_or(0),
            syn_tx_drop: syn_tx_drop.unwrap_or(0),
            syn_tx_disabled: syn_tx_disabled.unwrap_or(0),
        },
        supported,
        timeout_secs,
    }
}

/// True if, between the samples `prev` and `now`, the kernel detected a new
/// blackhole or kept sending plain-TCP SYNs for MPTCP sockets: MPTCP is being
/// disabled for new connections. A counter that went down (a different
/// namespace, a reset) counts as no activity.
pub fn active_since(prev: &BlackholeCounters, now: &BlackholeCounters) -> bool {
    now.blackhole > prev.blackhole || now.syn_tx_disabled > prev.syn_tx_disabled
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A fake procfs under the temp dir, removed on drop.
    struct FakeProc(PathBuf);

    impl FakeProc {
        fn new(netstat: Option<&str>, timeout: Option<&str>) -> FakeProc {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let root = std::env::temp_dir().join(format!(
                "braid-blackhole-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(root.join("net")).unwrap();
            if let Some(text) = netstat {
                std::fs::write(root.join("net/netstat"), text).unwrap();
            }
            if let Some(v) = timeout {
                std::fs::create_dir_all(root.join("sys/net/mptcp")).unwrap();
                std::fs::write(root.join("sys/net/mptcp/blackhole_timeout"), v).unwrap();
            }
            FakeProc(root)
        }

        fn procfs(&self) -> Procfs {
            Procfs::at(&self.0)
        }
    }

    impl Drop for FakeProc {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const NETSTAT_612: &str = "TcpExt: SyncookiesSent TCPFastOpenActive\n\
        TcpExt: 0 3\n\
        MPTcpExt: MPCapableSYNRX MPCapableSYNTX MPCapableSYNTXDrop MPCapableSYNTXDisabled Blackhole\n\
        MPTcpExt: 5 40 6 17 2\n";

    const NETSTAT_66: &str = "TcpExt: SyncookiesSent\nTcpExt: 0\n\
        MPTcpExt: MPCapableSYNRX MPCapableSYNTX\nMPTcpExt: 5 40\n";

    #[test]
    fn new_kernel_reads_counters_and_timeout() {
        let fake = FakeProc::new(Some(NETSTAT_612), Some("3600\n"));
        let status = read(&fake.procfs());
        assert_eq!(
            status,
            BlackholeStatus {
                counters: BlackholeCounters {
                    blackhole: 2,
                    syn_tx_drop: 6,
                    syn_tx_disabled: 17
                },
                supported: true,
                timeout_secs: Some(3600),
            }
        );
        assert!(status.detection_enabled());
    }

    #[test]
    fn old_kernel_reads_zero_and_unsupported() {
        let fake = FakeProc::new(Some(NETSTAT_66), None);
        let status = read(&fake.procfs());
        assert_eq!(status.counters, BlackholeCounters::default());
        assert!(!status.supported);
        assert_eq!(status.timeout_secs, None);
        assert!(!status.detection_enabled());
    }

    #[test]
    fn no_netstat_file_is_unsupported() {
        let fake = FakeProc::new(None, None);
        let status = read(&fake.procfs());
        assert!(!status.supported);
        assert_eq!(status.counters, BlackholeCounters::default());
    }

    #[test]
    fn zero_timeout_disables_detection() {
        let fake = FakeProc::new(Some(NETSTAT_612), Some("0\n"));
        let status = read(&fake.procfs());
        assert!(status.supported);
        assert_eq!(status.timeout_secs, Some(0));
        assert!(!status.detection_enabled());
    }

    #[test]
    fn garbage_timeout_reads_none() {
        let fake = FakeProc::new(Some(NETSTAT_612), Some("soon\n"));
        assert_eq!(read(&fake.procfs()).timeout_secs, None);
    }

    #[test]
    fn active_since_rising_blackhole_or_disabled_is_active() {
        let prev = BlackholeCounters {
            blackhole: 1,
            syn_tx_drop: 4,
            syn_tx_disabled: 10,
        };
        let detected = BlackholeCounters {
            blackhole: 2,
            ..prev
        };
        let still_disabled = BlackholeCounters {
            syn_tx_disabled: 11,
            ..prev
        };
        assert!(active_since(&prev, &detected));
        assert!(active_since(&prev, &still_disabled));
    }

    #[test]
    fn active_since_only_drops_or_unchanged_is_inactive() {
        let prev = BlackholeCounters {
            blackhole: 1,
            syn_tx_drop: 4,
            syn_tx_disabled: 10,
        };
        let drops = BlackholeCounters {
            syn_tx_drop: 9,
            ..prev
        };
        assert!(!active_since(&prev, &prev));
        assert!(!active_since(&prev, &drops));
        assert!(!active_since(&prev, &BlackholeCounters::default()));
    }

    #[test]
    fn active_since_samples_from_fake_procfs() {
        let before = FakeProc::new(Some(NETSTAT_612), Some("3600"));
        let after = FakeProc::new(Some(&NETSTAT_612.replace("6 17 2", "7 17 3")), Some("7200"));
        let a = read(&before.procfs()).counters;
        let b = read(&after.procfs()).counters;
        assert!(active_since(&a, &b));
        assert!(!active_since(&b, &b));
    }
}
