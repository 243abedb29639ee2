//! Watching the kernel's TCP memory accounting for status, metrics and the log.
//!
//! When the global TCP memory counter passes `net.ipv4.tcp_mem`'s maximum, every new TCP
//! connection on the host fails, braid's and everyone else's, and nothing in braid's own sockets
//! says why. So both daemons read the counter every few seconds, follow the kernel log for the
//! MPTCP accounting fault that made it run away in the lab, put both in the status document, and
//! log once when the state changes, with the cause and the fix.
//!
//! ```text
//!  /proc/net/sockstat, tcp_mem ─┐
//!  /dev/kmsg (new records) ─────┼─► KernelWatch::poll ─► section() ─► Status.tcp_mem, /metrics
//!                               └─────────────────────────► news() ─► one log line per change
//! ```

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use braid_sys::kmsg::{FaultScanner, FaultSummary, KernelLog};
use braid_sys::sysctl::Procfs;
use braid_sys::tcp_mem::{self, TcpMemLevel, TcpMemReading};
use tracing::{info, warn};

use super::model::{TcpMem, TcpMemState};

/// How often the daemons read the counter and the new kernel log records.
const POLL: Duration = Duration::from_secs(2);

/// The fix, said wherever the runaway is named.
pub const RUNAWAY_FIX: &str = "boot a kernel with the fix (a newer stable release) or reboot to reset the counter; raising net.ipv4.tcp_mem only postpones the failure; until then keep segmentation offloads (GRO/TSO) off on the interfaces that carry MPTCP";

/// The kernel's TCP memory, as last read.
#[derive(Debug)]
pub struct KernelWatch {
    procfs: Procfs,
    log: Mutex<Follower>,
    latest: Mutex<TcpMem>,
}

/// The kernel log, followed from where the last poll stopped.
#[derive(Debug)]
struct Follower {
    log: Option<KernelLog>,
    scanner: FaultScanner,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl KernelWatch {
    /// Watches `/proc` and `/dev/kmsg`.
    pub fn system() -> Arc<KernelWatch> {
        KernelWatch::new(Procfs::default(), Path::new("/dev/kmsg"))
    }

    /// Watches `procfs` and the kernel log at `kmsg` (unreadable: warnings unknown), and takes
    /// a first reading, so status has one before the first poll.
    pub fn new(procfs: Procfs, kmsg: &Path) -> Arc<KernelWatch> {
        let w = KernelWatch {
            procfs,
            log: Mutex::new(Follower {
                log: KernelLog::open(kmsg).ok(),
                scanner: FaultScanner::default(),
            }),
            latest: Mutex::new(TcpMem::default()),
        };
        w.poll();
        Arc::new(w)
    }

    /// The last reading.
    pub fn latest(&self) -> TcpMem {
        lock(&self.latest).clone()
    }

    /// Reads the counter and the new log records, logs what changed, and keeps the reading.
    pub fn poll(&self) -> TcpMem {
        let reading = tcp_mem::read(&self.procfs);
        let summary = {
            let mut f = lock(&self.log);
            let new = f.log.as_mut().map(|l| l.read_available());
            match new {
                Some(Ok(text)) => {
                    f.scanner.feed(&text);
                    Some(f.scanner.summary().clone())
                }
                Some(Err(_)) | None => None,
            }
        };
        let now = section(&reading, summary.as_ref());
        let mut latest = lock(&self.latest);
        for (bad, line) in news(&latest, &now) {
            if bad {
                warn!("{line}");
            } else {
                info!("{line}");
            }
        }
        *latest = now.clone();
        now
    }

    /// Polls every [`POLL`], forever.
    pub async fn watch_forever(self: Arc<Self>) {
        let mut tick = tokio::time::interval(POLL);
        loop {
            tick.tick().await;
            self.poll();
        }
    }
}

/// The status section for a reading and, when the log is readable, what it showed.
pub fn section(r: &TcpMemReading, log: Option<&FaultSummary>) -> TcpMem {
    let state = match r.level() {
        TcpMemLevel::Ok => TcpMemState::Ok,
        TcpMemLevel::Pressure => TcpMemState::Pressure,
        TcpMemLevel::Exhausted => TcpMemState::Exhausted,
        TcpMemLevel::Unknown => TcpMemState::Unknown,
    };
    let mut t = TcpMem {
        state,
        pages: r.pages,
        pressure_pages: r.limits.map(|l| l.pressure),
        max_pages: r.limits.map(|l| l.max),
        sockets: r.sockets,
        socket_bound_pages: r.socket_bound_pages(),
        runaway: r.runaway(),
        mptcp_warnings: log.map(|l| l.mptcp_warnings),
        last_warning: log
            .and_then(|l| l.last_warning.as_ref())
            .map(|w| w.message.clone()),
        reason: String::new(),
    };
    t.reason = reason(&t);
    t
}

fn of_max(t: &TcpMem) -> String {
    match t.max_pages {
        Some(m) => format!("of tcp_mem's maximum {m}"),
        None => "(tcp_mem is not visible in this network namespace)".into(),
    }
}

fn reason(t: &TcpMem) -> String {
    let pages = t.pages.unwrap_or(0);
    let mut s = if t.state == TcpMemState::Unknown {
        "cannot read /proc/net/sockstat, so the kernel's TCP memory is unknown".to_string()
    } else if t.runaway {
        format!(
            "the kernel's TCP memory counter ({pages} pages {}) is far above what the {} open TCP sockets could hold ({} pages): the kernel's accounting ran away (a known fault of MPTCP with segmentation offloads on Linux 6.18); {}; fix: {RUNAWAY_FIX}",
            of_max(t),
            t.sockets.unwrap_or(0),
            t.socket_bound_pages.unwrap_or(0),
            if t.state == TcpMemState::Exhausted {
                "every new TCP connection on this host fails now"
            } else {
                "once it passes tcp_mem's maximum, every new TCP connection on this host fails"
            }
        )
    } else {
        match t.state {
            TcpMemState::Exhausted => format!("TCP memory is exhausted ({pages} pages {}): the kernel refuses memory to every TCP socket, so new connections fail; fix: find what holds the memory (ss -tm), or raise net.ipv4.tcp_mem", of_max(t)),
            TcpMemState::Pressure => format!("TCP memory is under pressure ({pages} pages {}): the kernel shrinks socket buffers, so throughput drops", of_max(t)),
            _ => format!("{pages} pages {}", of_max(t)),
        }
    };
    if let Some(n) = t.mptcp_warnings.filter(|n| *n > 0) {
        s += &format!("; the kernel logged its MPTCP accounting warning (inet_sock_destruct from __mptcp_close_ssk) {n} time(s) since boot");
    }
    s
}

/// What to log between two readings: `(is_bad, line)`, at most one line per kind of change.
pub fn news(before: &TcpMem, now: &TcpMem) -> Vec<(bool, String)> {
    let mut out = Vec::new();
    let worse = |s: TcpMemState| match s {
        TcpMemState::Unknown | TcpMemState::Ok => 0,
        TcpMemState::Pressure => 1,
        TcpMemState::Exhausted => 2,
    };
    if (now.runaway && !before.runaway) || worse(now.state) > worse(before.state) {
        out.push((true, now.reason.clone()));
    } else if (before.runaway && !now.runaway) || worse(now.state) < worse(before.state) {
        out.push((
            false,
            format!("TCP memory: {} again ({})", now.state, now.reason),
        ));
    }
    if now.mptcp_warnings.unwrap_or(0) > before.mptcp_warnings.unwrap_or(0) {
        out.push((
            true,
            format!(
                "the kernel logged its MPTCP accounting warning (inet_sock_destruct from __mptcp_close_ssk: a subflow freed with negative forward-allocated memory) {} time(s) since boot, last: {}; this fault can make the TCP memory counter run away until no TCP connection opens on this host; fix: {RUNAWAY_FIX}",
                now.mptcp_warnings.unwrap_or(0),
                now.last_warning.as_deref().unwrap_or("?")
            ),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use braid_sys::kmsg::LoggedWarning;
    use braid_sys::tcp_mem::TcpMemLimits;

    fn reading(pages: u64) -> TcpMemReading {
        TcpMemReading {
            pages: Some(pages),
            sockets: Some(12),
            limits: Some(TcpMemLimits {
                min: 287_898,
                pressure: 383_866,
                max: 575_796,
            }),
            socket_max_bytes: Some(10 << 20),
            kernel_pressure: Some(false),
            page_size: 4096,
        }
    }

    fn warned(n: u64) -> FaultSummary {
        FaultSummary {
            mptcp_warnings: n,
            out_of_memory: 0,
            last_warning: Some(LoggedWarning {
                message: "WARNING: CPU: 1 PID: 0 at net/ipv4/af_inet.c:156 inet_sock_destruct+0x1a5/0x1d0".into(),
                secs_after_boot: Some(812.3),
            }),
        }
    }

    #[test]
    fn section_of_a_quiet_kernel_is_ok_with_its_numbers() {
        let t = section(&reading(482), Some(&FaultSummary::default()));
        assert_eq!(t.state, TcpMemState::Ok);
        assert_eq!((t.pages, t.max_pages), (Some(482), Some(575_796)));
        assert_eq!(t.mptcp_warnings, Some(0));
        assert!(!t.runaway);
        assert_eq!(t.reason, "482 pages of tcp_mem's maximum 575796");
    }

    #[test]
    fn runaway_past_the_maximum_names_the_fault_and_the_fix() {
        let t = section(&reading(5_800_000), Some(&warned(1)));
        assert_eq!(t.state, TcpMemState::Exhausted);
        assert!(t.runaway);
        assert!(
            t.reason.contains("ran away")
                && t.reason
                    .contains("every new TCP connection on this host fails now")
                && t.reason.contains("reboot")
                && t.reason.contains("only postpones")
                && t.reason.contains("1 time(s)"),
            "{}",
            t.reason
        );
    }

    #[test]
    fn unreadable_log_leaves_warnings_unknown() {
        let t = section(&reading(482), None);
        assert_eq!(t.mptcp_warnings, None);
    }

    #[test]
    fn news_warns_once_on_the_way_down_and_says_when_it_is_over() {
        let ok = section(&reading(482), Some(&FaultSummary::default()));
        let bad = section(&reading(5_800_000), Some(&FaultSummary::default()));
        assert!(news(&ok, &ok).is_empty());
        let n = news(&ok, &bad);
        assert_eq!(n.len(), 1);
        assert!(n[0].0 && n[0].1.contains("ran away"), "{n:?}");
        assert!(news(&bad, &bad).is_empty(), "said twice");
        let back = news(&bad, &ok);
        assert!(!back[0].0 && back[0].1.contains("ok again"), "{back:?}");
    }

    #[test]
    fn news_reports_a_new_mptcp_warning_even_while_the_counter_is_fine() {
        let before = section(&reading(482), Some(&FaultSummary::default()));
        let now = section(&reading(482), Some(&warned(1)));
        let n = news(&before, &now);
        assert_eq!(n.len(), 1);
        assert!(
            n[0].0 && n[0].1.contains("inet_sock_destruct+0x1a5"),
            "{n:?}"
        );
        assert!(news(&now, &now).is_empty());
    }

    #[test]
    fn a_watch_over_a_faked_procfs_reads_the_counter_and_the_log() {
        let dir = std::env::temp_dir().join(format!("braid-kwatch-{}", std::process::id()));
        let file = |rel: &str, text: &str| {
            let p = dir.join(rel);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("dir");
            std::fs::write(p, text).expect("write");
        };
        file(
            "proc/net/sockstat",
            "TCP: inuse 1 orphan 0 tw 0 alloc 12 mem 5800000\n",
        );
        file("proc/sys/net/ipv4/tcp_mem", "287898 383866 575796\n");
        file("proc/sys/net/ipv4/tcp_rmem", "4096 131072 6291456\n");
        file("proc/sys/net/ipv4/tcp_wmem", "4096 16384 4194304\n");
        file("kmsg", "4,1,812000000,-;WARNING: CPU: 1 PID: 0 at net/ipv4/af_inet.c:156 inet_sock_destruct+0x1a5/0x1d0\n4,2,812000001,c; __mptcp_close_ssk+0x2d6/0x4a0\n");
        let w = KernelWatch::new(Procfs::at(dir.join("proc")), &dir.join("kmsg"));
        let t = w.latest();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(t.state, TcpMemState::Exhausted);
        assert!(t.runaway);
        assert_eq!(t.mptcp_warnings, Some(1));
    }
}
