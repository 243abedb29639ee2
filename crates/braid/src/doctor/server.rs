//! Server-side checks: kernel, joins per connection, the firewall in front of the relay port
//! and of sshd, TFO, congestion control, the initial congestion window.

use super::check::{Check, Report};
use super::{firewall, kernel};
use crate::config::server::ServerConfig;
use crate::config::FastOpen;
use crate::doctor::kernel::KernelRoots;
use crate::server::path_manager::KernelJoins;

/// Runs every server check.
pub async fn checks(
    cfg: &ServerConfig,
    roots: &KernelRoots,
    sshd_config: &std::path::Path,
) -> Report {
    let mut r = Report::default();
    r.checks.push(kernel::kernel_mptcp(roots));
    r.checks.push(kernel::reboot_pending(roots));
    r.checks.push(kernel::mptcp_enabled(roots));
    r.checks.push(joins(cfg).await);
    r.checks.push(kernel::tcp_mem(roots));
    let rules = firewall::gather();
    r.checks
        .push(firewall::relay_port(cfg.listen.port(), &rules));
    let udp_ports: Vec<(u16, &str)> = cfg
        .udp
        .map(|_| (cfg.listen.port(), "the UDP relay"))
        .into_iter()
        .chain(cfg.tunnel_port.map(|p| (p, "the tunnel")))
        .collect();
    r.checks.push(firewall::relay_udp(&udp_ports, &rules));
    let ssh = firewall::sshd_ports(
        sshd_config,
        &[roots.proc.join("net/tcp"), roots.proc.join("net/tcp6")],
    );
    r.checks.push(firewall::ssh(&ssh, &rules));
    r.checks.push(tfo(cfg, roots));
    r.checks
        .push(super::congestion::check(&cfg.congestion, roots));
    r.checks
        .push(initial_window(cfg.initial_window, cfg.listen.port()));
    r.checks.push(own_addresses(cfg, interface_addresses()));
    r
}

/// `mptcp.joins`: how many joined subflows a relayed connection may have. The relay's path
/// manager applies `max_joins` itself; the in-kernel one (`bond_after_kib = 0`) applies the
/// namespace's `ip mptcp limits`, and a fresh namespace allows 2.
async fn joins(cfg: &ServerConfig) -> Check {
    const ID: &str = "mptcp.joins";
    if !cfg.mptcp {
        return Check::skip(ID, "mptcp = false");
    }
    if cfg.bond_after.is_some() {
        return Check::ok(
            ID,
            format!(
                "the relay's path manager takes up to max_joins = {} joined subflows per connection (the namespace's ip mptcp limits do not apply to it)",
                cfg.max_joins
            ),
        )
        .with("max_joins", cfg.max_joins as u64);
    }
    match KernelJoins::read(cfg.max_joins).await {
        Ok(k) if k.short() => Check::warn(
            ID,
            format!(
                "the in-kernel path manager (bond_after_kib = 0) takes {} joined subflows per connection, fewer than max_joins = {}",
                k.limit, k.max_joins
            ),
            k.consequence(),
            k.fix(),
        )
        .with("subflows", k.limit),
        Ok(k) => Check::ok(
            ID,
            format!(
                "the in-kernel path manager (bond_after_kib = 0) takes {} joined subflows per connection (max_joins = {})",
                k.limit, k.max_joins
            ),
        )
        .with("subflows", k.limit),
        Err(e) => Check::warn(ID, "cannot read the MPTCP limits", e, "run braid doctor as root"),
    }
}

/// `initial_window`: whether the relay's program can be loaded and attached here, checked end
/// to end by applying it as the relay does (to this process's cgroup, for the relay's port in
/// this namespace) and detaching it again at once.
fn initial_window(segments: Option<u32>, port: u16) -> Check {
    let applied = crate::initial_window::apply(segments, port);
    match (applied.error, segments) {
        (Some(e), _) => Check::warn(
            "initial_window",
            format!("{}: the relay will use the kernel's window", applied.why),
            e,
            crate::initial_window::FIX,
        ),
        (None, Some(n)) => Check::ok(
            "initial_window",
            format!(
                "accepted connections start with {n} segments: the program loads and attaches here ({})",
                applied.why
            ),
        ),
        (None, None) => Check::ok("initial_window", applied.why),
    }
}

/// The interface addresses of this machine (empty if they cannot be read).
fn interface_addresses() -> Vec<std::net::IpAddr> {
    let Ok(ifs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    ifs.filter_map(|i| i.address)
        .filter_map(|a| {
            a.as_sockaddr_in()
                .map(|v4| std::net::IpAddr::V4(v4.ip()))
                .or_else(|| a.as_sockaddr_in6().map(|v6| std::net::IpAddr::V6(v6.ip())))
        })
        .collect()
}

/// `own_addresses`: the relay refuses to connect to itself, but it can only know the public
/// addresses that are on an interface or in `public_addresses`. With no public address on any
/// interface (1:1 NAT, as on GCP and AWS) and none listed, its public address is unguarded.
fn own_addresses(cfg: &ServerConfig, interfaces: Vec<std::net::IpAddr>) -> Check {
    let global: Vec<String> = interfaces
        .iter()
        .filter(|ip| braid_proto::destination::DestinationPolicy::is_global(**ip))
        .map(|ip| ip.to_string())
        .collect();
    let listed: Vec<String> = cfg.public_addresses.iter().map(|a| a.to_string()).collect();
    let c = if !listed.is_empty() {
        Check::ok(
            "own_addresses",
            format!(
                "the relay refuses its own addresses: those on its interfaces and public_addresses ({})",
                listed.join(", ")
            ),
        )
    } else if global.is_empty() {
        Check::warn(
            "own_addresses",
            "no public address on this machine's interfaces, and public_addresses is empty",
            "on clouds with 1:1 NAT (GCP, AWS) the public address lives in the provider's NAT, so the relay cannot know it is its own and would connect a client to it (and to the services listening on it)",
            "add public_addresses = [\"<this VPS's public IP>\"] to server.toml",
        )
    } else {
        Check::ok(
            "own_addresses",
            format!(
                "the relay refuses its own addresses, public ones included ({})",
                global.join(", ")
            ),
        )
    };
    c.with("interfaces_public", global.join(" "))
        .with("public_addresses", listed.join(" "))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(public: &str) -> ServerConfig {
        let text = format!(
            "listen = \"0.0.0.0:8388\"\nmethod = \"2022-blake3-aes-256-gcm\"\nkey = \"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\"\npublic_addresses = [{public}]\n"
        );
        ServerConfig::from_toml(std::path::Path::new("server.toml"), &text).unwrap()
    }

    #[test]
    fn initial_window_is_tried_end_to_end() {
        use super::super::check::Status;
        let off = initial_window(None, 8388);
        assert_eq!(off.status, Status::Ok);
        assert!(off.summary.contains("kernel's"), "{}", off.summary);
        // A port nothing listens on, in this namespace: attached and detached at once.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let c = initial_window(Some(32), port);
        if nix::unistd::Uid::effective().is_root() || std::env::var("CI").as_deref() == Ok("true") {
            assert_eq!(c.status, Status::Ok, "{c:?}");
            assert!(c.summary.contains("32 segments"), "{}", c.summary);
        } else {
            assert_eq!(c.status, Status::Warn, "{c:?}");
            assert!(c.fix.contains("initial_window = 0"), "{}", c.fix);
        }
    }

    #[test]
    fn nat_cloud_without_public_addresses_warns_with_the_fix() {
        let private = vec!["10.128.0.5".parse().unwrap(), "127.0.0.1".parse().unwrap()];
        let c = own_addresses(&cfg(""), private.clone());
        assert_eq!(c.status, super::super::check::Status::Warn);
        assert!(c.fix.contains("public_addresses"), "{}", c.fix);
        let c = own_addresses(&cfg("\"203.0.113.7\""), private);
        assert_eq!(c.status, super::super::check::Status::Ok);
        let c = own_addresses(&cfg(""), vec!["93.184.216.34".parse().unwrap()]);
        assert_eq!(c.status, super::super::check::Status::Ok);
    }
}
