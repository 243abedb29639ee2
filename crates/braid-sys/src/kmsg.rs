//! The kernel log (`/dev/kmsg`), read only, for the warnings of a known MPTCP accounting fault.
//!
//! On Linux 6.18 heavy MPTCP traffic with segmentation offloads made the kernel log
//! `WARNING: … at net/ipv4/af_inet.c:… inet_sock_destruct` with `__mptcp_close_ssk` in the call
//! trace (a subflow destroyed with negative forward-allocated memory), after which the global TCP
//! memory counter ran away and the kernel printed `TCP: out of memory -- consider tuning
//! tcp_mem`. [`FaultScanner`] recognises both in the log's lines; it is sans-IO so the daemons can
//! feed it what is new at each poll and doctor can feed it the whole log once.
//!
//! Reading `/dev/kmsg` needs `CAP_SYSLOG` when `kernel.dmesg_restrict` is 1, and containers often
//! hide it: callers treat an error as "cannot tell", never as a fault.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Lines after the `WARNING:` line that may still belong to its register dump and call trace.
const TRACE_LINES: u32 = 120;
/// The most one [`KernelLog::read_available`] returns (the kernel's own buffer is smaller).
const READ_CAP: usize = 16 << 20;

/// One logged warning.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoggedWarning {
    /// The `WARNING:` line.
    pub message: String,
    /// When it was logged, in seconds after boot, when the log says.
    pub secs_after_boot: Option<f64>,
}

/// What the log showed of the fault.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FaultSummary {
    /// `inet_sock_destruct` warnings with an MPTCP function in their call trace.
    pub mptcp_warnings: u64,
    /// `TCP: out of memory -- consider tuning tcp_mem` lines.
    pub out_of_memory: u64,
    /// The newest MPTCP warning.
    pub last_warning: Option<LoggedWarning>,
}

/// Recognises the fault's warnings in kernel log lines, fed in order.
#[derive(Clone, Debug, Default)]
pub struct FaultScanner {
    /// An `inet_sock_destruct` warning whose trace is still being read.
    open: Option<(LoggedWarning, u32, bool)>,
    summary: FaultSummary,
}

impl FaultScanner {
    /// Feeds one or more lines (`/dev/kmsg` records, `dmesg` output or bare messages).
    pub fn feed(&mut self, text: &str) {
        for line in text.lines() {
            // Continuation lines of a kmsg record ("SUBSYSTEM=…") carry no message.
            if !line.starts_with(' ') {
                let (at, message) = split_record(line);
                self.message(at, message);
            }
        }
    }

    /// What was recognised so far.
    pub fn summary(&self) -> &FaultSummary {
        &self.summary
    }

    fn message(&mut self, at: Option<f64>, message: &str) {
        if message.contains("TCP: out of memory") {
            self.summary.out_of_memory += 1;
        }
        if message.contains("WARNING:") && message.contains("inet_sock_destruct") {
            let w = LoggedWarning {
                message: message.trim().to_string(),
                secs_after_boot: at,
            };
            self.open = Some((w, TRACE_LINES, false));
            return;
        }
        let Some((w, left, counted)) = self.open.as_mut() else {
            return;
        };
        if !*counted && message.contains("mptcp") {
            *counted = true;
            self.summary.mptcp_warnings += 1;
            self.summary.last_warning = Some(w.clone());
        }
        *left = left.saturating_sub(1);
        if *left == 0 || message.contains("end trace") {
            self.open = None;
        }
    }
}

/// `(seconds after boot, message)` of a `/dev/kmsg` record (`6,1234,5678901,-;text`) or a
/// `dmesg` line (`[  5.678901] text`); anything else is a bare message.
fn split_record(line: &str) -> (Option<f64>, &str) {
    if let Some((head, msg)) = line.split_once(';') {
        let mut fields = head.split(',');
        let prio = fields.next();
        let _seq = fields.next();
        let usecs = fields.next().and_then(|u| u.parse::<u64>().ok());
        if prio.is_some_and(|p| p.parse::<u32>().is_ok()) {
            if let Some(us) = usecs {
                return (Some(us as f64 / 1e6), msg);
            }
        }
    }
    if let Some(rest) = line.strip_prefix('[') {
        if let Some((ts, msg)) = rest.split_once(']') {
            if let Ok(secs) = ts.trim().parse::<f64>() {
                return (Some(secs), msg.strip_prefix(' ').unwrap_or(msg));
            }
        }
    }
    (None, line)
}

/// An open kernel log that yields what was logged since the last read.
#[derive(Debug)]
pub struct KernelLog {
    file: File,
}

impl KernelLog {
    /// Opens `/dev/kmsg` (or a file standing in for it) without blocking, positioned at the
    /// oldest record the kernel still holds. Like `dmesg`.
    pub fn open(path: &Path) -> io::Result<KernelLog> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)?;
        Ok(KernelLog { file })
    }

    /// Everything logged since the last call (at most 16 MiB). Records the kernel overwrote
    /// before they were read are skipped.
    pub fn read_available(&mut self) -> io::Result<String> {
        let mut out = Vec::new();
        // One kmsg record per read; a record never exceeds the kernel's 1 KiB line plus prefix.
        let mut buf = vec![0u8; 8192];
        while out.len() < READ_CAP {
            match self.file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // EPIPE: the next record was overwritten; the read position moved on.
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
                Err(e) if out.is_empty() => return Err(e),
                Err(_) => break,
            }
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}

/// Scans the whole log at `path` once. Like `dmesg | grep …`.
pub fn scan(path: &Path) -> io::Result<FaultSummary> {
    let mut log = KernelLog::open(path)?;
    let mut s = FaultScanner::default();
    s.feed(&log.read_available()?);
    Ok(s.summary().clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape of the warning seen in the lab (kmsg records, trimmed).
    const FAULT: &str = "4,9001,812345678,-;------------[ cut here ]------------
4,9002,812345700,-;WARNING: CPU: 1 PID: 0 at net/ipv4/af_inet.c:156 inet_sock_destruct+0x1a5/0x1d0
 SUBSYSTEM=net
4,9003,812345710,c;Modules linked in:
4,9004,812345720,c;RIP: 0010:inet_sock_destruct+0x1a5/0x1d0
4,9005,812345730,c;Call Trace:
4,9006,812345740,c; <TASK>
4,9007,812345750,c; __sk_destruct+0x2b/0x220
4,9008,812345760,c; __mptcp_close_ssk+0x2d6/0x4a0
4,9009,812345770,c; mptcp_close_ssk+0x6e/0xb0
4,9010,812345780,-;---[ end trace 0000000000000000 ]---
6,9011,820000000,-;TCP: out of memory -- consider tuning tcp_mem
6,9012,820000100,-;TCP: out of memory -- consider tuning tcp_mem
";

    #[test]
    fn mptcp_destruct_warning_and_out_of_memory_are_counted() {
        let mut s = FaultScanner::default();
        s.feed(FAULT);
        let sum = s.summary();
        assert_eq!(sum.mptcp_warnings, 1);
        assert_eq!(sum.out_of_memory, 2);
        let w = sum.last_warning.as_ref().expect("warning");
        assert!(w.message.starts_with("WARNING: CPU: 1"), "{w:?}");
        assert_eq!(w.secs_after_boot, Some(812.3457));
    }

    #[test]
    fn destruct_warning_without_mptcp_in_its_trace_is_not_counted() {
        let mut s = FaultScanner::default();
        s.feed(
            &FAULT
                .replace("__mptcp_close_ssk", "tcp_close")
                .replace("mptcp_close_ssk", "x"),
        );
        assert_eq!(s.summary().mptcp_warnings, 0);
    }

    #[test]
    fn a_warning_split_across_feeds_is_still_recognised() {
        let (a, b) = FAULT.split_at(FAULT.find(" __sk_destruct").expect("split"));
        let mut s = FaultScanner::default();
        s.feed(a);
        assert_eq!(s.summary().mptcp_warnings, 0);
        s.feed(b);
        assert_eq!(s.summary().mptcp_warnings, 1);
    }

    #[test]
    fn dmesg_lines_parse_like_kmsg_records() {
        let mut s = FaultScanner::default();
        s.feed("[  812.345700] WARNING: CPU: 1 PID: 0 at net/ipv4/af_inet.c:156 inet_sock_destruct+0x1a5/0x1d0\n[  812.345760]  __mptcp_close_ssk+0x2d6/0x4a0\n");
        assert_eq!(s.summary().mptcp_warnings, 1);
        assert_eq!(
            s.summary()
                .last_warning
                .as_ref()
                .and_then(|w| w.secs_after_boot),
            Some(812.3457)
        );
    }

    #[test]
    fn scan_of_a_plain_file_reads_it_whole_and_a_missing_one_is_an_error() {
        let p = std::env::temp_dir().join(format!("braid-kmsg-{}", std::process::id()));
        std::fs::write(&p, FAULT).expect("write");
        let sum = scan(&p).expect("scan");
        let _ = std::fs::remove_file(&p);
        assert_eq!((sum.mptcp_warnings, sum.out_of_memory), (1, 2));
        assert!(scan(Path::new("/nonexistent/kmsg")).is_err());
    }
}
