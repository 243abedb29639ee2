//! Server-side checks: kernel, the firewall in front of the relay port and of sshd, TFO.

use super::check::{Check, Report};
use super::{firewall, kernel};
use crate::config::server::ServerConfig;
use crate::doctor::kernel::KernelRoots;

/// Runs every server check.
pub fn checks(cfg: &ServerConfig, roots: &KernelRoots, sshd_config: &std::path::Path) -> Report {
    let mut r = Report::default();
    r.checks.push(kernel::kernel_mptcp(roots));
    r.checks.push(kernel::reboot_pending(roots));
    r.checks.push(kernel::mptcp_enabled(roots));
    let rules = firewall::gather();
    r.checks
        .push(firewall::relay_port(cfg.listen.port(), &rules));
    let ssh = firewall::sshd_ports(
        sshd_config,
        &[roots.proc.join("net/tcp"), roots.proc.join("net/tcp6")],
    );
    r.checks.push(firewall::ssh(&ssh, &rules));
    r.checks.push(tfo(cfg, roots));
    r
}

fn tfo(cfg: &ServerConfig, roots: &KernelRoots) -> Check {
    use crate::config::FastOpen;
    if cfg.fast_open == FastOpen::Off {
        return Check::skip("tfo", "fast_open = \"off\" in server.toml");
    }
    let procfs = braid_sys::sysctl::Procfs::at(&roots.proc);
    let v = procfs.sysctl_u64("net.ipv4.tcp_fastopen").unwrap_or(0) as u32;
    let server_bit = braid_sys::tfo::FastopenSysctl(v).server();
    let c = if server_bit {
        Check::ok(
            "tfo",
            format!(
                "net.ipv4.tcp_fastopen = {v} allows server-side TFO; gateways verify it end to end"
            ),
        )
    } else if cfg.fast_open == FastOpen::On {
        Check::fail(
            "tfo",
            "fast_open = \"on\", but the kernel does not accept TFO on listeners",
            format!("net.ipv4.tcp_fastopen = {v} lacks the server bit (2)"),
            "sysctl -w net.ipv4.tcp_fastopen=3 (persist in /etc/sysctl.d/)",
        )
    } else {
        Check::warn(
            "tfo",
            "TCP Fast Open is off on the relay",
            format!("net.ipv4.tcp_fastopen = {v} lacks the server bit (2)"),
            "sysctl -w net.ipv4.tcp_fastopen=3 (persist in /etc/sysctl.d/); braid works without it",
        )
    };
    c.with("tcp_fastopen", v)
}
