//! The systemd unit: installed (unless the package already ships it), enabled and started, and
//! the relay waited for. Units come from `packaging/`, the same files the package installs.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::change::Change;

/// `braid-server.service`, as shipped.
pub const SERVER_UNIT: &str = include_str!("../../../../packaging/braid-server.service");
/// `braid-gateway.service`, as shipped.
pub const GATEWAY_UNIT: &str = include_str!("../../../../packaging/braid-gateway.service");
/// `braid-firewall.service` (re-applies setup's firewall rules at boot), as shipped.
pub const FIREWALL_UNIT: &str = include_str!("../../../../packaging/braid-firewall.service");

/// Which daemon a unit runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Daemon {
    /// `braid server`.
    Server,
    /// `braid gateway`.
    Gateway,
    /// `braid setup reapply`, once at boot.
    Firewall,
}

impl Daemon {
    /// `braid-server.service`.
    pub fn unit(self) -> &'static str {
        match self {
            Daemon::Server => "braid-server.service",
            Daemon::Gateway => "braid-gateway.service",
            Daemon::Firewall => "braid-firewall.service",
        }
    }

    fn text(self) -> &'static str {
        match self {
            Daemon::Server => SERVER_UNIT,
            Daemon::Gateway => GATEWAY_UNIT,
            Daemon::Firewall => FIREWALL_UNIT,
        }
    }

    /// The command that runs the daemon by hand (where systemd does not run).
    pub fn manual_command(self, root: &Path) -> String {
        let (sub, file) = match self {
            Daemon::Server => ("server", "server.toml"),
            Daemon::Gateway => ("gateway", "gateway.toml"),
            Daemon::Firewall => {
                return format!("{} setup reapply{}", exe().display(), root_arg(root))
            }
        };
        format!(
            "{} {sub} --config {}",
            exe().display(),
            root.join("etc/braid").join(file).display()
        )
    }
}

/// The binary that runs: `/usr/bin/braid` from the package, or wherever this one is.
fn exe() -> PathBuf {
    std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/usr/bin/braid"))
}

/// ` --root R` when setup works under another root than `/`.
fn root_arg(root: &Path) -> String {
    if root == Path::new("/") {
        String::new()
    } else {
        format!(" --root {}", root.display())
    }
}

/// Whether systemd manages this machine (`sd_booted()`: /run/systemd/system exists). Setup
/// asks systemctl only then, and only when its root is `/`.
pub fn systemd_running(root: &Path) -> bool {
    root == Path::new("/") && Path::new("/run/systemd/system").is_dir()
}

/// The unit file (when the package did not install one) and, where systemd runs, `systemctl
/// enable --now`. Notes say what was skipped and how to start the daemon instead.
pub fn plan(root: &Path, daemon: Daemon) -> (Vec<Change>, Vec<String>) {
    let mut changes = Vec::new();
    let mut notes = Vec::new();
    let packaged = ["lib/systemd/system", "usr/lib/systemd/system"]
        .iter()
        .any(|d| root.join(d).join(daemon.unit()).exists());
    if packaged {
        notes.push(format!("{} comes with the package", daemon.unit()));
    } else {
        let text = daemon
            .text()
            .replace("/usr/bin/braid", &exe().display().to_string())
            .replace(
                "/etc/braid/",
                &format!("{}/", root.join("etc/braid").display()),
            )
            .replace("setup reapply", &format!("setup reapply{}", root_arg(root)));
        let path = root.join("etc/systemd/system").join(daemon.unit());
        changes.push(Change::file(path, text, 0o644));
    }
    if systemd_running(root) {
        let argv = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        changes.push(Change::Command {
            argv: argv(&["systemctl", "daemon-reload"]),
            undo: Vec::new(),
        });
        changes.push(Change::Command {
            argv: argv(&["systemctl", "enable", "--now", daemon.unit()]),
            undo: argv(&["systemctl", "disable", "--now", daemon.unit()]),
        });
    } else {
        notes.push(format!(
            "systemd does not run here (or setup works under another root): the unit is not enabled; start the daemon with `{}`",
            daemon.manual_command(root)
        ));
    }
    (changes, notes)
}

/// Waits until something accepts TCP connections on `addr` (the relay's port, on loopback
/// when it listens on every address); false after `limit`.
pub fn wait_listening(addr: SocketAddr, limit: Duration) -> bool {
    let target = if addr.ip().is_unspecified() {
        match addr {
            SocketAddr::V4(_) => SocketAddr::from(([127, 0, 0, 1], addr.port())),
            SocketAddr::V6(_) => SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, addr.port())),
        }
    } else {
        addr
    };
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&target, Duration::from_millis(500)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_under_another_root_writes_the_unit_there_and_never_asks_systemctl() {
        let root = Path::new("/tmp/braid-unit-root");
        let (changes, notes) = plan(root, Daemon::Server);
        assert_eq!(changes.len(), 1);
        let Change::File { path, contents, .. } = &changes[0] else {
            panic!("a file")
        };
        assert_eq!(path, &root.join("etc/systemd/system/braid-server.service"));
        assert!(contents.contains("--config /tmp/braid-unit-root/etc/braid/server.toml"));
        assert!(contents.contains("Type=notify"));
        assert!(notes.iter().any(|n| n.contains("start the daemon with")));
    }
}
