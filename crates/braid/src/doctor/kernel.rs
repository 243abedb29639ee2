//! Kernel checks of `braid doctor`: is upstream MPTCP (v1) there and switched on, is a newer
//! kernel waiting for a reboot, does strict reverse-path filtering drop joins, has the kernel's
//! blackhole detection turned MPTCP off, and is the kernel's TCP memory accounting exhausted or
//! running away.
//!
//! Everything reads from [`KernelRoots`], so tests run against fake `/proc`, `/boot`, `/run`
//! trees and a fake kernel log.

use std::path::{Path, PathBuf};

use braid_sys::kernel::KernelRelease;
use braid_sys::kmsg::{self, FaultSummary};
use braid_sys::link::IfName;
use braid_sys::mptcp::blackhole;
use braid_sys::sysctl::{Procfs, SysctlError};
use braid_sys::tcp_mem::{self, TcpMemLevel, TcpMemReading};

use super::check::Check;

/// Where the kernel checks look: `/proc`, `/boot` and `/run` in production.
#[derive(Debug, Clone)]
pub struct KernelRoots {
    /// procfs root (`/proc`).
    pub proc: PathBuf,
    /// Kernel images (`/boot`).
    pub boot: PathBuf,
    /// Reboot-required markers (`/run`).
    pub run: PathBuf,
    /// Overrides `uname -r` (tests).
    pub release: Option<String>,
    /// The kernel log (`/dev/kmsg`), read only.
    pub kmsg: PathBuf,
}

impl Default for KernelRoots {
    fn default() -> Self {
        KernelRoots {
            proc: PathBuf::from("/proc"),
            boot: PathBuf::from("/boot"),
            run: PathBuf::from("/run"),
            release: None,
            kmsg: PathBuf::from("/dev/kmsg"),
        }
    }
}

impl KernelRoots {
    /// procfs at its root.
    pub fn procfs(&self) -> Procfs {
        Procfs::at(&self.proc)
    }

    /// The running kernel's release (or the one tests pretend).
    pub fn running(&self) -> String {
        self.release
            .clone()
            .unwrap_or_else(|| KernelRelease::running().release)
    }

    fn mptcp_dir(&self) -> PathBuf {
        self.proc.join("sys/net/mptcp")
    }

    /// True when the upstream (v1) MPTCP sysctls exist.
    fn has_mptcp_v1(&self) -> bool {
        self.mptcp_dir().join("enabled").exists()
    }
}

/// `kernel.mptcp`: upstream MPTCP v1, an out-of-tree v0 kernel, or none at all.
pub fn kernel_mptcp(r: &KernelRoots) -> Check {
    const ID: &str = "kernel.mptcp";
    let release = r.running();
    let dir = r.mptcp_dir();
    if r.has_mptcp_v1() {
        let mut c = Check::ok(
            ID,
            format!("upstream MPTCP (v1) is available in Linux {release}"),
        );
        if let Ok(pms) = std::fs::read_to_string(dir.join("available_path_managers")) {
            c = c.with("available_path_managers", pms.trim());
        }
        return c.with("release", release.as_str());
    }
    if dir.join("mptcp_enabled").exists() {
        return Check::fail(
            ID,
            format!("Linux {release} has the out-of-tree MPTCP v0 (net.mptcp.mptcp_enabled), not upstream MPTCP v1"),
            "This is an out-of-tree MPTCP v0 kernel, such as OpenMPTCPRouter's 5.4 kernels. MPTCP v0 and the upstream v1 that braid uses do not interoperate: every connection silently falls back to plain TCP, so nothing is bonded.",
            "Boot an upstream kernel of version 5.15 or newer (ideally 6.12 or newer), for example Debian's stock linux-image-amd64, and make it GRUB's default entry.",
        )
        .with("release", release.as_str())
        .with("sysctl", "net.mptcp.mptcp_enabled");
    }
    if !r.proc.join("sys/net").is_dir() {
        return Check::skip(
            ID,
            format!(
                "cannot tell: {} is not readable, so the kernel's MPTCP support cannot be checked",
                r.proc.join("sys/net").display()
            ),
        )
        .with("release", release.as_str());
    }
    Check::fail(
        ID,
        format!("Linux {release} has no MPTCP at all ({} is missing)", dir.join("enabled").display()),
        "The running kernel was built without CONFIG_MPTCP, so no MPTCP socket can be opened and braid cannot bond anything. Containers (LXC, Docker, OpenVZ) share the host's kernel, so they cannot fix this from inside.",
        "Boot a kernel built with CONFIG_MPTCP=y, version 5.15 or newer (ideally 6.12 or newer), for example Debian's stock kernel; in a container, ask the host or provider for such a kernel or move to a KVM VPS.",
    )
    .with("release", release.as_str())
}

/// `kernel.reboot_pending`: a newer kernel is installed in `/boot` than the one running, or the
/// Debian/Ubuntu reboot-required marker is set.
pub fn reboot_pending(r: &KernelRoots) -> Check {
    const ID: &str = "kernel.reboot_pending";
    let running = r.running();
    let installed = installed_kernels(&r.boot);
    let newest = installed
        .as_ref()
        .ok()
        .and_then(|list| newest_same_flavour(&running, list));
    let marker = r.run.join("reboot-required");
    let fix = "Reboot the machine; first check that GRUB's default entry boots the new kernel (`grep GRUB_DEFAULT /etc/default/grub`, and `uname -r` after the reboot).";
    let kernel_cause = "A newer kernel is installed but not booted, so the MPTCP features and fixes of the new kernel are not active.";

    if let Some(newer) = newest
        .as_ref()
        .filter(|n| KernelRelease::parse(n) > KernelRelease::parse(&running))
    {
        let mut c = Check::warn(
            ID,
            format!("Linux {newer} is installed but {running} is running"),
            kernel_cause,
            fix,
        )
        .with("running", running.as_str())
        .with("newest_installed", newer.as_str());
        if marker.exists() {
            c = c.with("reboot_required_pkgs", read_pkgs(&r.run));
        }
        return c;
    }
    if marker.exists() {
        let pkgs = read_pkgs(&r.run);
        let kernel_pkg = pkgs.lines().any(|l| l.starts_with("linux-"));
        let cause = if kernel_pkg {
            kernel_cause.to_string()
        } else {
            "Packages were upgraded that only take effect after a reboot (the system set the reboot-required marker).".to_string()
        };
        return Check::warn(
            ID,
            format!("a reboot is required ({} exists)", marker.display()),
            cause,
            fix,
        )
        .with("running", running.as_str())
        .with("reboot_required_pkgs", pkgs);
    }
    match installed {
        Err(e) => Check::skip(ID, format!("cannot list {}: {e}; only the reboot-required marker was checked, and it is absent", r.boot.display())).with("running", running.as_str()),
        Ok(list) => {
            let summary = match &newest {
                Some(n) => format!("the running kernel {running} is the newest installed one ({n})"),
                None => format!("no other kernel of the running one's flavour is installed in {}", r.boot.display()),
            };
            let mut c = Check::ok(ID, summary).with("running", running.as_str()).with("installed", list);
            if let Some(n) = newest {
                c = c.with("newest_installed", n);
            }
            c
        }
    }
}

fn read_pkgs(run: &Path) -> String {
    std::fs::read_to_string(run.join("reboot-required.pkgs"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The releases of the `vmlinuz-<release>` files in `boot`, sorted.
fn installed_kernels(boot: &Path) -> std::io::Result<Vec<String>> {
    let mut out: Vec<String> = std::fs::read_dir(boot)?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_prefix("vmlinuz-"))
                .map(str::to_string)
        })
        .filter(|rel| rel.starts_with(|c: char| c.is_ascii_digit()) && !rel.contains("rescue"))
        .collect();
    out.sort();
    Ok(out)
}

/// The newest installed release of the same flavour as `running` (the running one included).
fn newest_same_flavour(running: &str, installed: &[String]) -> Option<String> {
    let flavour = KernelRelease::parse(running).flavour;
    installed
        .iter()
        .filter(|rel| KernelRelease::parse(rel).flavour == flavour)
        .max_by_key(|rel| KernelRelease::parse(rel))
        .cloned()
}

/// `sysctl.mptcp_enabled`: `net.mptcp.enabled` is 1 in this network namespace.
pub fn mptcp_enabled(r: &KernelRoots) -> Check {
    const ID: &str = "sysctl.mptcp_enabled";
    match r.procfs().sysctl_u64("net.mptcp.enabled") {
        Ok(1) => Check::ok(ID, "net.mptcp.enabled = 1").with("net.mptcp.enabled", 1),
        Ok(0) => Check::fail(
            ID,
            "net.mptcp.enabled = 0: MPTCP is switched off in this network namespace",
            "With net.mptcp.enabled = 0 the kernel opens every MPTCP socket as plain TCP, so there is one path and no bonding.",
            "Run `sysctl -w net.mptcp.enabled=1` and persist it with a line `net.mptcp.enabled = 1` in a file under /etc/sysctl.d/ (e.g. /etc/sysctl.d/90-braid.conf).",
        )
        .with("net.mptcp.enabled", 0),
        Ok(v) => Check::warn(
            ID,
            format!("net.mptcp.enabled = {v}, an unexpected value"),
            "The kernel documents only 0 and 1 for net.mptcp.enabled.",
            "Run `sysctl -w net.mptcp.enabled=1` and persist it in a file under /etc/sysctl.d/.",
        )
        .with("net.mptcp.enabled", v),
        Err(SysctlError::Missing { .. }) => Check::skip(ID, "skipped: the kernel has no upstream MPTCP, so net.mptcp.enabled does not exist (kernel.mptcp already failed)"),
        Err(e) => Check::skip(ID, format!("cannot read net.mptcp.enabled: {e}")),
    }
}

/// `<id>`: reverse-path filtering on `iface` is not strict. The kernel uses the larger of
/// `net.ipv4.conf.all.rp_filter` and `net.ipv4.conf.<iface>.rp_filter`.
pub fn rp_filter(r: &KernelRoots, id: &str, iface: &IfName) -> Check {
    let procfs = r.procfs();
    let all = match procfs.sysctl_u64("net.ipv4.conf.all.rp_filter") {
        Ok(v) => v,
        Err(e) => return Check::skip(id, format!("cannot read net.ipv4.conf.all.rp_filter: {e}")),
    };
    // sysctl(8) takes a key with '/' separators as a path, which keeps a dotted interface name whole.
    let own_key = if iface.as_str().contains('.') {
        format!("net/ipv4/conf/{iface}/rp_filter")
    } else {
        format!("net.ipv4.conf.{iface}.rp_filter")
    };
    let own = match procfs.sysctl_u64(&own_key) {
        Ok(v) => v,
        Err(e) => {
            return Check::skip(
                id,
                format!("cannot read the rp_filter of {iface} (does the interface exist?): {e}"),
            )
            .with("net.ipv4.conf.all.rp_filter", all)
        }
    };
    let effective = all.max(own);
    let c = match effective {
        0 | 2 => Check::ok(id, format!("rp_filter on {iface} is {} ({effective})", if effective == 0 { "off" } else { "loose" })),
        1 => {
            let strict = match (all, own) {
                (1, 1) => format!("both net.ipv4.conf.all.rp_filter and {own_key} are 1"),
                (1, _) => "net.ipv4.conf.all.rp_filter is 1".to_string(),
                _ => format!("{own_key} is 1"),
            };
            Check::fail(
                id,
                format!("strict reverse-path filtering on {iface} ({strict})"),
                format!("Strict reverse-path filtering drops packets that arrive on an interface other than the one the route back would use, so MPTCP joins and replies arriving on {iface} as a second uplink are dropped ({strict})."),
                format!("Run `sysctl -w net.ipv4.conf.all.rp_filter=2 {own_key}=2` (loose mode) and persist both lines in a file under /etc/sysctl.d/ (e.g. /etc/sysctl.d/90-braid.conf)."),
            )
        }
        v => Check::warn(
            id,
            format!("rp_filter on {iface} has the unexpected value {v}"),
            "The kernel documents only 0 (off), 1 (strict) and 2 (loose) for rp_filter.",
            format!("Run `sysctl -w net.ipv4.conf.all.rp_filter=2 {own_key}=2` and persist it under /etc/sysctl.d/."),
        ),
    };
    c.with("net.ipv4.conf.all.rp_filter", all)
        .with(&own_key, own)
        .with("effective", effective)
}

/// `mptcp.blackhole`: whether the kernel's blackhole detection (6.12+) has disabled MPTCP since
/// boot. The disabled state itself is not exported; the counters are.
pub fn blackhole(r: &KernelRoots) -> Check {
    const ID: &str = "mptcp.blackhole";
    let release = r.running();
    if !r.has_mptcp_v1() {
        return Check::skip(
            ID,
            "skipped: the kernel has no upstream MPTCP (kernel.mptcp already failed)",
        );
    }
    let s = blackhole::read(&r.procfs());
    if !s.supported {
        return Check::ok(ID, format!("Linux {release} has no MPTCP blackhole detection (added in 6.12), so it never disables MPTCP on its own")).with("release", release.as_str());
    }
    let n = s.counters;
    let timeout = match s.timeout_secs {
        Some(0) => "0 (detection now off)".to_string(),
        Some(t) => format!("{t} s"),
        None => "unknown".to_string(),
    };
    let c = if n.blackhole > 0 {
        Check::warn(
            ID,
            format!("the kernel disabled MPTCP {} time(s) since boot after MPTCP SYNs were dropped", n.blackhole),
            format!(
                "SYNs carrying MPTCP options were dropped on some path while plain TCP got through, so the kernel disabled MPTCP for all new connections in this network namespace {} time(s); each episode lasts net.mptcp.blackhole_timeout ({timeout}), doubling on repeat, and during it new connections use plain TCP without bonding ({} plain-TCP SYNs sent so far).",
                n.blackhole, n.syn_tx_disabled
            ),
            "Find the path that drops MPTCP options (look at the uplink.*.join and server.mptcp checks, or run tracebox on each uplink) and fix or exclude it; meanwhile consider a shorter mptcp_blackhole_timeout_secs in gateway.toml so one bad path does not disable bonding for an hour.",
        )
    } else {
        Check::ok(
            ID,
            "the kernel has not disabled MPTCP since boot (MPTcpExtBlackhole = 0)",
        )
    };
    let c = c
        .with("MPTcpExtBlackhole", n.blackhole)
        .with("MPTcpExtMPCapableSYNTXDrop", n.syn_tx_drop)
        .with("MPTcpExtMPCapableSYNTXDisabled", n.syn_tx_disabled);
    match s.timeout_secs {
        Some(t) => c.with("net.mptcp.blackhole_timeout", t),
        None => c,
    }
}

/// `kernel.tcp_mem`: the kernel's TCP memory counter against `net.ipv4.tcp_mem` and against what
/// the open sockets could hold, with the MPTCP accounting fault's warnings from the kernel log.
/// Past the maximum every new TCP connection on the host fails, and nothing else says why.
pub fn tcp_mem(r: &KernelRoots) -> Check {
    const ID: &str = "kernel.tcp_mem";
    let reading = tcp_mem::read(&r.procfs());
    let log = kmsg::scan(&r.kmsg);
    let Some(pages) = reading.pages else {
        return Check::skip(
            ID,
            format!(
                "cannot read {}, so the kernel's TCP memory is unknown",
                r.proc.join("net/sockstat").display()
            ),
        );
    };
    let release = r.running();
    let max = match reading.limits {
        Some(l) => format!("tcp_mem's maximum of {} pages", l.max),
        None => "tcp_mem's maximum (not visible in this network namespace)".to_string(),
    };
    let warnings = log.as_ref().map_or(0, |l| l.mptcp_warnings);
    let c = match (reading.runaway(), reading.level()) {
        (true, level) => runaway(&reading, &release, &max, level == TcpMemLevel::Exhausted, warnings),
        (false, TcpMemLevel::Exhausted) => Check::fail(
            ID,
            format!("TCP memory is exhausted: {pages} pages, past {max}; every new TCP connection on this host fails"),
            format!("The open TCP sockets ({} of them, able to hold up to {} pages) really hold that much buffer memory, so the kernel refuses memory to every TCP socket (\"TCP: out of memory -- consider tuning tcp_mem\").", reading.sockets.unwrap_or(0), reading.socket_bound_pages().unwrap_or(0)),
            "Find the sockets holding the memory (`ss -tm`), lower the maxima of net.ipv4.tcp_rmem and net.ipv4.tcp_wmem, or raise net.ipv4.tcp_mem if the machine has the RAM.",
        ),
        (false, TcpMemLevel::Pressure) => Check::warn(
            ID,
            format!("TCP memory is under pressure: {pages} pages, near {max}"),
            "Past tcp_mem's pressure threshold the kernel shrinks every socket's buffers, so throughput drops; past the maximum new TCP connections fail.",
            "Find the sockets holding the memory (`ss -tm`); raise net.ipv4.tcp_mem if the machine has the RAM.",
        ),
        (false, _) if warnings > 0 => Check::warn(
            ID,
            format!("the kernel logged its MPTCP accounting warning {warnings} time(s) since boot; TCP memory is still fine ({pages} pages, {max})"),
            format!("Linux {release} logged `WARNING … inet_sock_destruct` from `__mptcp_close_ssk`: an MPTCP subflow was freed with negative forward-allocated memory. In braid's lab this preceded a runaway of the TCP memory counter that ended with every new TCP connection on the host failing."),
            format!("Watch this check (or braid_kernel_tcp_mem_runaway in /metrics); {}.", crate::status::kernel::RUNAWAY_FIX),
        ),
        (false, _) => Check::ok(ID, format!("TCP memory is fine: {pages} pages, {max}")),
    };
    tcp_mem_evidence(c, &reading, log.as_ref(), &release)
}

/// The runaway: the counter is above what every open socket could hold.
fn runaway(r: &TcpMemReading, release: &str, max: &str, exhausted: bool, warnings: u64) -> Check {
    const ID: &str = "kernel.tcp_mem";
    let pages = r.pages.unwrap_or(0);
    let summary = format!(
        "the kernel's TCP memory counter ran away: {pages} pages, but the {} open TCP sockets can hold at most {} pages{}",
        r.sockets.unwrap_or(0),
        r.socket_bound_pages().unwrap_or(0),
        if exhausted {
            format!("; it is past {max}, so every new TCP connection on this host fails")
        } else {
            format!("; once it passes {max}, every new TCP connection on this host fails")
        }
    );
    let seen = if warnings > 0 {
        format!(" The kernel log has that warning {warnings} time(s) since boot.")
    } else {
        " (The kernel log could not be read or no longer holds the warning.)".to_string()
    };
    let cause = format!(
        "A fault of the MPTCP receive path in Linux {release}: under heavy MPTCP traffic with segmentation offloads (GRO/TSO), closing a subflow (`__mptcp_close_ssk`, e.g. a connection closed or reset with unread data) can free it with negative forward-allocated memory (`WARNING … inet_sock_destruct`), after which the global TCP memory counter grows without bound; in braid's lab it rose by 5 million pages in 8 s with one socket open. This is accounting, not memory really in use. Past tcp_mem's maximum the kernel refuses memory to every TCP socket (\"TCP: out of memory -- consider tuning tcp_mem\"), through braid and any other program alike.{seen}"
    );
    let fix = "Boot a kernel with the fix (a newer stable release of your distribution's kernel), or reboot to reset the counter. Raising net.ipv4.tcp_mem only postpones the failure, because the counter keeps growing. Until the kernel is fixed, turn segmentation offloads off on the interfaces that carry MPTCP (`ethtool -K IFACE gro off gso off tso off`); bench/tcp-mem-runaway.sh reproduces it on a throwaway machine.";
    if exhausted {
        Check::fail(ID, summary, cause, fix)
    } else {
        Check::warn(ID, summary, cause, fix)
    }
}

fn tcp_mem_evidence(
    mut c: Check,
    r: &TcpMemReading,
    log: Result<&FaultSummary, &std::io::Error>,
    release: &str,
) -> Check {
    let opt = |v: Option<u64>| v.map_or(serde_json::Value::Null, serde_json::Value::from);
    c = c
        .with("release", release)
        .with("sockstat_mem_pages", opt(r.pages))
        .with("sockstat_alloc_sockets", opt(r.sockets))
        .with("tcp_mem_pressure_pages", opt(r.limits.map(|l| l.pressure)))
        .with("tcp_mem_max_pages", opt(r.limits.map(|l| l.max)))
        .with("socket_bound_pages", opt(r.socket_bound_pages()))
        .with("runaway", r.runaway());
    match log {
        Ok(l) => c
            .with("kernel_log_mptcp_warnings", l.mptcp_warnings)
            .with("kernel_log_tcp_out_of_memory", l.out_of_memory)
            .with(
                "kernel_log_last_warning",
                l.last_warning
                    .as_ref()
                    .map_or(String::new(), |w| w.message.clone()),
            ),
        Err(e) => c.with("kernel_log", format!("not readable: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::super::check::Status;
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// Fake `/proc`, `/boot` and `/run` under the temp dir, removed on drop.
    struct Fake {
        dir: PathBuf,
        roots: KernelRoots,
    }

    impl Fake {
        fn new(release: &str) -> Fake {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let dir = std::env::temp_dir().join(format!(
                "braid-doctor-kernel-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            let roots = KernelRoots {
                proc: dir.join("proc"),
                boot: dir.join("boot"),
                run: dir.join("run"),
                release: Some(release.into()),
                kmsg: dir.join("kmsg"),
            };
            for d in [&roots.proc, &roots.boot, &roots.run] {
                std::fs::create_dir_all(d).unwrap();
            }
            std::fs::create_dir_all(roots.proc.join("sys/net/ipv4/conf/all")).unwrap();
            Fake { dir, roots }
        }

        fn file(&self, rel: &str, text: &str) -> &Fake {
            let p = self.dir.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
            self
        }

        fn v1(release: &str) -> Fake {
            let f = Fake::new(release);
            f.file("proc/sys/net/mptcp/enabled", "1\n").file(
                "proc/sys/net/mptcp/available_path_managers",
                "kernel userspace\n",
            );
            f
        }
    }

    impl Drop for Fake {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    #[test]
    fn v1_tree_is_ok_with_path_managers() {
        let f = Fake::v1("6.12.48-amd64");
        let c = kernel_mptcp(&f.roots);
        assert_eq!(c.status, Status::Ok, "{c:?}");
        assert_eq!(c.evidence["available_path_managers"], "kernel userspace");
        assert_eq!(c.evidence["release"], "6.12.48-amd64");
    }

    #[test]
    fn v0_tree_fails_naming_out_of_tree_kernel() {
        let f = Fake::new("5.4.274");
        f.file("proc/sys/net/mptcp/mptcp_enabled", "1\n");
        let c = kernel_mptcp(&f.roots);
        assert_eq!(c.status, Status::Fail);
        assert!(c.summary.contains("v0"), "{}", c.summary);
        assert!(
            c.cause.contains("out-of-tree") && c.cause.contains("do not interoperate"),
            "{}",
            c.cause
        );
        assert!(c.fix.contains("5.15"), "{}", c.fix);
        let e = mptcp_enabled(&f.roots);
        assert_eq!(e.status, Status::Skip, "{e:?}");
        assert_eq!(blackhole(&f.roots).status, Status::Skip);
    }

    #[test]
    fn no_mptcp_tree_fails_with_config_mptcp_fix() {
        let f = Fake::new("5.4.0-1-cloud");
        let c = kernel_mptcp(&f.roots);
        assert_eq!(c.status, Status::Fail);
        assert!(c.summary.contains("no MPTCP at all"), "{}", c.summary);
        assert!(
            c.fix.contains("CONFIG_MPTCP=y") && c.cause.contains("Containers"),
            "{c:?}"
        );
    }

    #[test]
    fn unreadable_proc_skips_instead_of_failing() {
        let mut f = Fake::new("6.1.0");
        f.roots.proc = f.dir.join("nothing");
        assert_eq!(kernel_mptcp(&f.roots).status, Status::Skip);
    }

    #[test]
    fn mptcp_enabled_zero_fails_and_one_is_ok() {
        let f = Fake::v1("6.12.0");
        assert_eq!(mptcp_enabled(&f.roots).status, Status::Ok);
        f.file("proc/sys/net/mptcp/enabled", "0\n");
        let c = mptcp_enabled(&f.roots);
        assert_eq!(c.status, Status::Fail);
        assert!(
            c.fix.contains("sysctl -w net.mptcp.enabled=1") && c.fix.contains("/etc/sysctl.d/"),
            "{}",
            c.fix
        );
    }

    #[test]
    fn newer_vmlinuz_same_flavour_warns_reboot_pending() {
        let f = Fake::new("6.1.0-31-amd64");
        f.file("boot/vmlinuz-6.1.0-31-amd64", "")
            .file("boot/vmlinuz-6.1.0-32-amd64", "")
            .file("boot/vmlinuz-6.1.0-9-amd64", "");
        let c = reboot_pending(&f.roots);
        assert_eq!(c.status, Status::Warn, "{c:?}");
        assert_eq!(c.evidence["newest_installed"], "6.1.0-32-amd64");
        assert!(
            c.cause.contains("not booted") && c.fix.contains("GRUB_DEFAULT"),
            "{c:?}"
        );
    }

    #[test]
    fn backports_kernel_installed_warns_reboot_pending() {
        let f = Fake::new("6.1.0-31-amd64");
        f.file("boot/vmlinuz-6.1.0-31-amd64", "")
            .file("boot/vmlinuz-6.12.12+bpo-amd64", "");
        let c = reboot_pending(&f.roots);
        assert_eq!(c.status, Status::Warn, "{c:?}");
        assert_eq!(c.evidence["newest_installed"], "6.12.12+bpo-amd64");
    }

    #[test]
    fn running_newest_is_ok_and_other_flavour_is_ignored() {
        let f = Fake::new("6.1.0-32-amd64");
        f.file("boot/vmlinuz-6.1.0-31-amd64", "")
            .file("boot/vmlinuz-6.1.0-32-amd64", "")
            .file("boot/vmlinuz-6.9.0-1-rt-amd64", "");
        let c = reboot_pending(&f.roots);
        assert_eq!(c.status, Status::Ok, "{c:?}");
        assert_eq!(c.evidence["newest_installed"], "6.1.0-32-amd64");
        assert_eq!(c.evidence["running"], "6.1.0-32-amd64");
    }

    #[test]
    fn reboot_required_marker_warns_with_pkgs() {
        let f = Fake::new("6.8.0-45-generic");
        f.file("boot/vmlinuz-6.8.0-45-generic", "")
            .file("run/reboot-required", "*** System restart required ***\n")
            .file("run/reboot-required.pkgs", "linux-image-6.8.0-47-generic\n");
        let c = reboot_pending(&f.roots);
        assert_eq!(c.status, Status::Warn, "{c:?}");
        assert_eq!(
            c.evidence["reboot_required_pkgs"],
            "linux-image-6.8.0-47-generic"
        );
        assert!(c.cause.contains("newer kernel"), "{}", c.cause);
    }

    #[test]
    fn unreadable_boot_without_marker_skips() {
        let mut f = Fake::new("6.1.0-31-amd64");
        f.roots.boot = f.dir.join("no-boot");
        assert_eq!(reboot_pending(&f.roots).status, Status::Skip);
    }

    fn rp(f: &Fake, all: &str, iface: &str, own: &str) -> Check {
        f.file("proc/sys/net/ipv4/conf/all/rp_filter", all)
            .file(&format!("proc/sys/net/ipv4/conf/{iface}/rp_filter"), own);
        rp_filter(
            &f.roots,
            "uplink.x.rp_filter",
            &iface.parse().expect("name"),
        )
    }

    #[test]
    fn rp_filter_strict_all_fails_even_when_iface_is_off() {
        let f = Fake::new("6.12.0");
        let c = rp(&f, "1\n", "wlan0", "0\n");
        assert_eq!(c.status, Status::Fail, "{c:?}");
        assert_eq!(c.evidence["effective"], 1);
        assert!(
            c.fix
                .contains("net.ipv4.conf.all.rp_filter=2 net.ipv4.conf.wlan0.rp_filter=2"),
            "{}",
            c.fix
        );
    }

    #[test]
    fn rp_filter_loose_is_ok() {
        let f = Fake::new("6.12.0");
        let c = rp(&f, "0\n", "eth1", "2\n");
        assert_eq!(c.status, Status::Ok, "{c:?}");
        assert_eq!(c.evidence["net.ipv4.conf.eth1.rp_filter"], 2);
        assert_eq!(c.evidence["effective"], 2);
    }

    #[test]
    fn rp_filter_dotted_iface_reads_one_path_component() {
        let f = Fake::new("6.12.0");
        // A decoy where the dotted key would land if dots were turned into slashes.
        f.file("proc/sys/net/ipv4/conf/eth0/100/rp_filter", "0\n");
        let c = rp(&f, "0\n", "eth0.100", "1\n");
        assert_eq!(c.status, Status::Fail, "{c:?}");
        assert!(
            c.fix.contains("net/ipv4/conf/eth0.100/rp_filter=2"),
            "{}",
            c.fix
        );
    }

    #[test]
    fn rp_filter_missing_iface_skips() {
        let f = Fake::new("6.12.0");
        f.file("proc/sys/net/ipv4/conf/all/rp_filter", "0\n");
        let iface = "wwan0".parse().expect("name");
        assert_eq!(rp_filter(&f.roots, "u", &iface).status, Status::Skip);
    }

    const NETSTAT: &str = "MPTcpExt: MPCapableSYNTX MPCapableSYNTXDrop MPCapableSYNTXDisabled Blackhole\nMPTcpExt: 40 6 17 2\n";

    #[test]
    fn blackhole_counter_nonzero_warns_with_counters() {
        let f = Fake::v1("6.12.0");
        f.file("proc/net/netstat", NETSTAT)
            .file("proc/sys/net/mptcp/blackhole_timeout", "3600\n");
        let c = blackhole(&f.roots);
        assert_eq!(c.status, Status::Warn, "{c:?}");
        assert_eq!(c.evidence["MPTcpExtBlackhole"], 2);
        assert_eq!(c.evidence["net.mptcp.blackhole_timeout"], 3600);
        assert!(
            c.summary.contains("2 time(s)") && c.fix.contains("mptcp_blackhole_timeout_secs"),
            "{c:?}"
        );
    }

    #[test]
    fn blackhole_counter_zero_is_ok() {
        let f = Fake::v1("6.12.0");
        f.file("proc/net/netstat", &NETSTAT.replace("6 17 2", "0 0 0"))
            .file("proc/sys/net/mptcp/blackhole_timeout", "3600\n");
        let c = blackhole(&f.roots);
        assert_eq!(c.status, Status::Ok, "{c:?}");
        assert_eq!(c.evidence["MPTcpExtBlackhole"], 0);
    }

    #[test]
    fn blackhole_old_kernel_is_ok_with_note() {
        let f = Fake::v1("6.6.0");
        f.file(
            "proc/net/netstat",
            "MPTcpExt: MPCapableSYNTX\nMPTcpExt: 40\n",
        );
        let c = blackhole(&f.roots);
        assert_eq!(c.status, Status::Ok, "{c:?}");
        assert!(c.summary.contains("6.12"), "{}", c.summary);
    }

    /// A fake procfs with the TCP memory files: `mem` pages for `alloc` sockets, the lab's
    /// tcp_mem, and 10 MiB of buffers per socket (2,560 pages).
    fn tcp(f: &Fake, mem: u64, alloc: u64) {
        f.file(
            "proc/net/sockstat",
            &format!("sockets: used 18\nTCP: inuse 1 orphan 0 tw 0 alloc {alloc} mem {mem}\n"),
        )
        .file("proc/sys/net/ipv4/tcp_mem", "287898\t383866\t575796\n")
        .file("proc/sys/net/ipv4/tcp_rmem", "4096\t131072\t6291456\n")
        .file("proc/sys/net/ipv4/tcp_wmem", "4096\t16384\t4194304\n");
    }

    const KMSG_FAULT: &str = "4,9002,812345700,-;WARNING: CPU: 1 PID: 0 at net/ipv4/af_inet.c:156 inet_sock_destruct+0x1a5/0x1d0\n4,9008,812345760,c; __mptcp_close_ssk+0x2d6/0x4a0\n6,9011,820000000,-;TCP: out of memory -- consider tuning tcp_mem\n";

    #[test]
    fn tcp_mem_runaway_past_the_maximum_fails_naming_fault_kernel_and_fix() {
        let f = Fake::v1("6.18.44-amd64");
        tcp(&f, 5_800_000, 12);
        f.file("kmsg", KMSG_FAULT);
        let c = tcp_mem(&f.roots);
        assert_eq!(c.status, Status::Fail, "{c:?}");
        assert!(
            c.summary.contains("ran away") && c.summary.contains("every new TCP connection"),
            "{}",
            c.summary
        );
        assert!(
            c.cause.contains("Linux 6.18.44-amd64")
                && c.cause.contains("__mptcp_close_ssk")
                && c.cause.contains("1 time(s)"),
            "{}",
            c.cause
        );
        assert!(
            c.fix.contains("kernel with the fix")
                && c.fix.contains("reboot")
                && c.fix.contains("only postpones"),
            "{}",
            c.fix
        );
        assert_eq!(c.evidence["runaway"], true);
        assert_eq!(c.evidence["sockstat_mem_pages"], 5_800_000);
        assert_eq!(c.evidence["kernel_log_mptcp_warnings"], 1);
        assert_eq!(c.evidence["kernel_log_tcp_out_of_memory"], 1);
    }

    #[test]
    fn tcp_mem_runaway_below_the_maximum_warns_before_it_breaks() {
        let f = Fake::v1("6.18.44");
        tcp(&f, 200_000, 3);
        let c = tcp_mem(&f.roots);
        assert_eq!(c.status, Status::Warn, "{c:?}");
        assert!(c.summary.contains("once it passes"), "{}", c.summary);
        assert!(c.evidence["kernel_log"]
            .as_str()
            .is_some_and(|s| s.contains("not readable")));
    }

    #[test]
    fn tcp_mem_runaway_is_seen_without_tcp_mem_in_a_network_namespace() {
        let f = Fake::v1("6.18.44");
        tcp(&f, 5_800_000, 12);
        let _ = std::fs::remove_file(f.dir.join("proc/sys/net/ipv4/tcp_mem"));
        let c = tcp_mem(&f.roots);
        assert_eq!(c.status, Status::Warn, "{c:?}");
        assert!(c.summary.contains("not visible"), "{}", c.summary);
        assert_eq!(c.evidence["tcp_mem_max_pages"], serde_json::Value::Null);
    }

    #[test]
    fn tcp_mem_exhausted_by_real_load_fails_without_blaming_the_kernel() {
        let f = Fake::v1("6.18.44");
        tcp(&f, 600_000, 400);
        let c = tcp_mem(&f.roots);
        assert_eq!(c.status, Status::Fail, "{c:?}");
        assert!(c.summary.contains("exhausted"), "{}", c.summary);
        assert!(!c.cause.contains("__mptcp_close_ssk"), "{}", c.cause);
        assert!(c.fix.contains("ss -tm"), "{}", c.fix);
    }

    #[test]
    fn tcp_mem_pressure_warns_and_a_quiet_kernel_is_ok() {
        let f = Fake::v1("6.18.44");
        tcp(&f, 400_000, 400);
        assert_eq!(tcp_mem(&f.roots).status, Status::Warn);
        tcp(&f, 482, 31);
        f.file("kmsg", "6,1,1000,-;eth0: link up\n");
        let c = tcp_mem(&f.roots);
        assert_eq!(c.status, Status::Ok, "{c:?}");
        assert_eq!(c.evidence["kernel_log_mptcp_warnings"], 0);
    }

    #[test]
    fn tcp_mem_fine_but_the_warning_logged_warns() {
        let f = Fake::v1("6.18.44");
        tcp(&f, 482, 31);
        f.file("kmsg", KMSG_FAULT);
        let c = tcp_mem(&f.roots);
        assert_eq!(c.status, Status::Warn, "{c:?}");
        assert!(
            c.summary.contains("1 time(s)") && c.cause.contains("inet_sock_destruct"),
            "{c:?}"
        );
    }

    #[test]
    fn tcp_mem_without_sockstat_skips() {
        let f = Fake::v1("6.18.44");
        assert_eq!(tcp_mem(&f.roots).status, Status::Skip);
    }
}
