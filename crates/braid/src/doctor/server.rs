//! Server-side checks: kernel, the firewall in front of the relay port and of sshd, TFO,
//! congestion control.

use super::check::{Check, Report};
use super::{firewall, kernel};
use crate::config::server::ServerConfig;
use crate::config::FastOpen;
use crate::doctor::kernel::KernelRoots;

/// Runs every server check.
pub fn checks(cfg: &ServerConfig, roots: &KernelRoots, sshd_config: &std::path::Path) -> Report {
    let mut r = Report::default();
    r.checks.push(kernel::kernel_mptcp(roots));
    r.checks.push(kernel::reboot_pending(roots));
    r.checks.push(kernel::mptcp_enabled(roots));
    r.checks.push(kernel::tcp_mem(roots));
    let rules = firewall::gather();
    r.checks
        .push(firewall::relay_port(cfg.listen.port(), &rules));
    let ssh = firewall::sshd_ports(
        sshd_config,
        &[roots.proc.join("net/tcp"), roots.proc.join("net/tcp6")],
    );
    r.checks.push(firewall::ssh(&ssh, &rules));
    r.checks.push(tfo(cfg, roots));
    r.checks
        .push(super::congestion::check(&cfg.congestion, roots));
    r
}

/// `tfo`: the relay's own listener decision, from the same facts.
fn tfo(cfg: &ServerConfig, roots: &KernelRoots) -> Check {
    if cfg.fast_open == FastOpen::Off {
        return Check::skip("tfo", "fast_open = \"off\" in server.toml");
    }
    let facts =
        crate::fast_open::listener_facts(cfg.listen, cfg.mptcp, &roots.procfs(), &roots.running());
    let d = braid_proto::tfo::decide_listener(cfg.fast_open, &facts);
    let c = if d.enabled {
        Check::ok("tfo", d.reason)
    } else if d.fatal {
        Check::fail(
            "tfo",
            "fast_open = \"on\", but the relay's listener cannot take TCP Fast Open",
            d.reason,
            "fix the cause above, or set fast_open = \"auto\"",
        )
    } else {
        Check::warn(
            "tfo",
            "TCP Fast Open is off on the relay",
            d.reason,
            "braid works without it; to gain one round trip per connection, fix the cause above",
        )
    };
    c.with("tcp_fastopen", facts.sysctl_value)
        .with("setsockopt", format!("{:?}", facts.setsockopt))
}
