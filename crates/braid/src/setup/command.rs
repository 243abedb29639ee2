//! `braid setup …` on the command line: its arguments, and the dispatch to [`super::server`],
//! [`super::gateway`], [`super::reapply`] and [`super::undo`]. `cli.rs` only names it.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use crate::config::Method;

/// Where `braid setup` looks; every file it writes is under `root`.
#[derive(Debug, Clone, clap::Args)]
pub struct SetupRoots {
    /// Write every file under this folder instead of `/` (tests; a chroot being prepared).
    /// systemctl is only asked when this is `/`.
    #[arg(long, default_value = "/")]
    pub root: PathBuf,
    /// Print every change, with the full text of every file, and make none.
    #[arg(long)]
    pub dry_run: bool,
    /// Go on although the kernel cannot do MPTCP or a newer kernel waits for a reboot.
    #[arg(long)]
    pub ignore_kernel: bool,
    /// Read procfs from here instead of /proc (tests).
    #[arg(long, default_value = "/proc", hide = true)]
    pub proc_root: PathBuf,
    /// Read installed kernels from here instead of /boot (tests).
    #[arg(long, default_value = "/boot", hide = true)]
    pub boot_root: PathBuf,
    /// Read reboot-required markers from here instead of /run (tests).
    #[arg(long, default_value = "/run", hide = true)]
    pub run_root: PathBuf,
    /// Pretend the running kernel is this release (tests).
    #[arg(long, hide = true)]
    pub kernel_release: Option<String>,
}

impl SetupRoots {
    fn kernel(&self) -> crate::doctor::KernelRoots {
        crate::doctor::KernelRoots {
            proc: self.proc_root.clone(),
            boot: self.boot_root.clone(),
            run: self.run_root.clone(),
            release: self.kernel_release.clone(),
            kmsg: "/dev/kmsg".into(),
        }
    }
}

/// `braid setup …`.
#[derive(Debug, Subcommand)]
pub enum SetupCommand {
    /// On the VPS, as root: kernel check, server.toml with a fresh key, sysctls, the relay port
    /// opened in the host firewall (never closing SSH), the systemd unit, and the pairing URI.
    Server {
        /// Where the relay listens (for a new server.toml).
        #[arg(long, default_value = "0.0.0.0:8388")]
        listen: std::net::SocketAddr,
        /// The method (for a new server.toml).
        #[arg(long, default_value = "2022-blake3-aes-256-gcm")]
        method: String,
        /// The address or name gateways reach this VPS at (default: the source address of the
        /// default route; required behind NAT).
        #[arg(long)]
        public_host: Option<String>,
        /// sshd's configuration, to learn the port(s) it listens on.
        #[arg(long, default_value = "/etc/ssh/sshd_config")]
        sshd_config: PathBuf,
        #[command(flatten)]
        roots: SetupRoots,
    },
    /// On the router, as root: gateway.toml from the pairing URI, forwarding, the systemd unit,
    /// then `braid doctor`.
    Gateway {
        /// The `ss://…` URI that `braid setup server` printed (quote it).
        #[arg(long)]
        pair: String,
        /// An uplink interface (repeat for each); found from default routes when absent.
        #[arg(long = "uplink")]
        uplinks: Vec<String>,
        /// A LAN interface (repeat for each); found when absent.
        #[arg(long)]
        lan: Vec<String>,
        #[command(flatten)]
        roots: SetupRoots,
    },
    /// Put back the firewall rules setup added to the host's own chains, if they are gone (after
    /// a reboot or a firewall reload); braid-firewall.service runs it at boot.
    Reapply {
        /// The root setup worked under.
        #[arg(long, default_value = "/")]
        root: PathBuf,
    },
    /// Take back everything setup did, newest first, leaving the firewall as it was found.
    Undo {
        /// Undo under this folder instead of `/`.
        #[arg(long, default_value = "/")]
        root: PathBuf,
        /// Print what would be undone.
        #[arg(long)]
        dry_run: bool,
    },
}

/// `braid setup …`: 0 done, 1 stopped with a reason and its fix, 2 a usage error.
pub fn run(cmd: SetupCommand) -> ExitCode {
    let result = match cmd {
        SetupCommand::Server {
            listen,
            method,
            public_host,
            sshd_config,
            roots,
        } => {
            let Ok(method) = Method::parse("--method", &method) else {
                return usage(&format!(
                    "--method {method:?} is not supported; fix: use one of {}",
                    Method::ALL.map(|m| m.name()).join(", ")
                ));
            };
            crate::setup::server::run(&crate::setup::server::Options {
                root: roots.root.clone(),
                kernel: roots.kernel(),
                sshd_config,
                listen,
                method,
                public_host,
                dry_run: roots.dry_run,
                ignore_kernel: roots.ignore_kernel,
            })
            .map(|_| 0)
        }
        SetupCommand::Gateway {
            pair,
            uplinks,
            lan,
            roots,
        } => {
            let opts = crate::setup::gateway::Options {
                root: roots.root.clone(),
                kernel: roots.kernel(),
                pair,
                uplinks,
                lan,
                dry_run: roots.dry_run,
                ignore_kernel: roots.ignore_kernel,
            };
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(crate::setup::gateway::run(&opts)),
                Err(e) => return usage(&format!("cannot start the async runtime: {e}")),
            }
        }
        SetupCommand::Reapply { root } => crate::setup::reapply::run(&root).map(|_| 0),
        SetupCommand::Undo { root, dry_run } => crate::setup::undo::run(&root, dry_run).map(|_| 0),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("braid setup: {e}");
            ExitCode::from(1)
        }
    }
}

fn usage(e: &str) -> ExitCode {
    eprintln!("braid setup: {e}");
    ExitCode::from(2)
}
