//! `braid setup server`: the VPS side, step by step (see the module doc of [`super`]).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::config::gateway::RelayAddr;
use crate::config::Method;
use crate::doctor::kernel::KernelRoots;
use crate::firewall::Family;

use super::exec::Executor;
use super::firewall::{self as fw, Tools, Want};
use super::pairing::Pairing;
use super::unit::{self, Daemon};
use super::{kernel_gate, server_config, sysctl, SetupError};

/// What `braid setup server` was asked.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where files go (`/`).
    pub root: PathBuf,
    /// procfs, /boot and /run for the kernel gate and the sysctls.
    pub kernel: KernelRoots,
    /// sshd's configuration, to learn its ports.
    pub sshd_config: PathBuf,
    /// The relay's listen address for a new server.toml.
    pub listen: SocketAddr,
    /// The method for a new server.toml.
    pub method: Method,
    /// The address or name gateways reach the relay at (found when absent).
    pub public_host: Option<String>,
    /// Print every change, make none.
    pub dry_run: bool,
    /// Go on despite the kernel gate.
    pub ignore_kernel: bool,
}

/// What setup produced: the pairing URI.
#[derive(Debug, Clone)]
pub struct Done {
    /// The pairing URI for `braid setup gateway --pair`.
    pub uri: String,
}

/// Runs every step; see the module doc.
pub fn run(opts: &Options) -> Result<Done, SetupError> {
    step("kernel");
    for w in kernel_gate::gate(&opts.kernel, opts.ignore_kernel)? {
        println!("warning: {w}");
    }
    let mut ex = if opts.dry_run {
        println!("dry run: nothing below is changed");
        Executor::dry_run()
    } else {
        Executor::apply(opts.root.clone())?
    };

    step("config");
    let planned = server_config::plan(&opts.root, opts.listen, opts.method)?;
    let cfg = planned.config;
    if let Some(c) = planned.change {
        ex.run(c)?;
    }

    step("sysctl");
    let (changes, notes) = sysctl::plan(&opts.root, &opts.kernel.procfs(), sysctl::SERVER);
    say(&notes);
    for c in changes {
        ex.run(c)?;
    }

    step("firewall");
    firewall(&mut ex, opts, cfg.listen, cfg.tunnel_port)?;

    step("service");
    let (changes, notes) = unit::plan(&opts.root, Daemon::Server);
    say(&notes);
    let started = changes
        .iter()
        .any(|c| matches!(c, super::change::Change::Command { argv, .. } if argv.iter().any(|a| a == "--now")));
    for c in changes {
        ex.run(c)?;
    }
    if started && !ex.is_dry_run() {
        if !unit::wait_listening(cfg.listen, Duration::from_secs(20)) {
            return Err(SetupError::NotReady(format!(
                "braid-server.service did not start listening on {} within 20 s; fix: read `journalctl -u braid-server -n 50`, correct the cause, then `systemctl restart braid-server`",
                cfg.listen
            )));
        }
        println!("the relay answers on {}", cfg.listen);
    }

    step("pairing");
    let host = match &opts.public_host {
        Some(h) => h.clone(),
        None => public_address()?.to_string(),
    };
    let relay = match host.parse::<IpAddr>() {
        Ok(ip) => RelayAddr::Socket(SocketAddr::new(ip, cfg.listen.port())),
        Err(_) => RelayAddr::Host(host, cfg.listen.port()),
    };
    let pairing = Pairing {
        relay,
        method: cfg.method,
        key: cfg.key.clone(),
        mptcp: cfg.mptcp,
        tfo: cfg.fast_open != crate::config::FastOpen::Off,
    };
    let uri = pairing.to_uri();
    println!(
        "\nCloud firewall: braid cannot see your provider's firewall (security group). It must admit\nTCP and UDP port {} from anywhere (or from your uplinks' addresses).",
        cfg.listen.port()
    );
    println!("\nOn the router, run:\n\n  braid setup gateway --pair '{uri}'\n");
    if let Some(q) = super::pairing::qr(&uri) {
        println!("{q}");
    }
    println!("pairing URI: {uri}");
    Ok(Done { uri })
}

fn step(name: &str) {
    println!("== {name}");
}

fn say(notes: &[String]) {
    for n in notes {
        println!("note: {n}");
    }
}

/// The firewall step: gather, plan on the model, and apply or refuse.
fn firewall(
    ex: &mut Executor,
    opts: &Options,
    listen: SocketAddr,
    tunnel: Option<u16>,
) -> Result<(), SetupError> {
    let rules = crate::firewall::gather().map_err(|e| SetupError::Firewall(e.to_string()))?;
    let ssh = crate::firewall::sshd_ports(
        &opts.sshd_config,
        &[
            opts.kernel.proc.join("net/tcp"),
            opts.kernel.proc.join("net/tcp6"),
        ],
    );
    println!("sshd listens on {}", join(&ssh));
    let families = match listen {
        SocketAddr::V4(_) => vec![Family::V4],
        SocketAddr::V6(_) => vec![Family::V4, Family::V6],
    };
    let want = Want {
        relay: listen.port(),
        tunnel,
        families,
        ssh,
        tools: Tools::detect(),
    };
    let outcome = fw::plan(&rules, &want);
    say(&outcome.notes);
    if let Some(r) = outcome.refused {
        let commands = if r.commands.is_empty() {
            String::new()
        } else {
            format!(
                " (setup would have run, after checking them:\n{}\n  )",
                r.commands
                    .iter()
                    .map(|c| format!("    {c}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        };
        return Err(SetupError::FirewallRefused {
            why: r.why,
            port: want.relay,
            commands,
        });
    }
    let volatile = outcome.changes.iter().any(|c| c.is_volatile_firewall());
    for c in outcome.changes {
        ex.run(c)?;
    }
    if volatile {
        // The host's saved ruleset does not hold braid's rules: put them back at each boot.
        println!("note: the host's saved firewall does not hold these rules; braid-firewall.service puts them back at boot (`braid setup reapply`)");
        let (changes, notes) = unit::plan(&opts.root, Daemon::Firewall);
        say(&notes);
        for c in changes {
            ex.run(c)?;
        }
    }
    Ok(())
}

fn join(p: &[u16]) -> String {
    p.iter().map(u16::to_string).collect::<Vec<_>>().join(", ")
}

/// The source address of this host's default route (a route lookup, no packet is sent).
/// Behind NAT (most clouds give a private address) it is not what gateways reach: that case is
/// refused with the fix.
fn public_address() -> Result<IpAddr, SetupError> {
    let out = std::process::Command::new("ip")
        .args(["-j", "route", "get", "192.0.2.1"])
        .output()
        .map_err(|e| {
            SetupError::Usage(format!(
                "cannot run `ip route get`: {e}; fix: give --public-host ADDRESS"
            ))
        })?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let ip = v[0]["prefsrc"]
        .as_str()
        .and_then(|s| s.parse::<IpAddr>().ok())
        .ok_or_else(|| SetupError::Usage("cannot tell this VPS's public address (no default route); fix: give --public-host ADDRESS".into()))?;
    let private = match ip {
        IpAddr::V4(a) => {
            a.is_private()
                || a.is_loopback()
                || a.is_link_local()
                || a.octets()[0] == 100 && (a.octets()[1] & 0xc0) == 64
        }
        IpAddr::V6(a) => (a.segments()[0] & 0xfe00) == 0xfc00 || a.is_loopback(),
    };
    if private {
        return Err(SetupError::Usage(format!(
            "this VPS's own address {ip} is private, so it is behind NAT and gateways cannot reach it there; fix: give --public-host with the public address or name your provider shows"
        )));
    }
    Ok(ip)
}
