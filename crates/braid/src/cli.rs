//! The command line. `main` parses [`Cli`] and calls [`run`]; every subcommand maps to a library
//! function that takes typed values, so tests can drive the same code without a process.

use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing::{error, info, warn};

use crate::config::gateway::GatewayConfig;
use crate::config::server::ServerConfig;
use crate::config::Method;

/// `braid --version`: the package version and the commit it was built from.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("BRAID_COMMIT"), ")");

/// braid bonds a gateway's uplinks into one connection with kernel MPTCP and a
/// Shadowsocks-2022 relay.
#[derive(Debug, Parser)]
#[command(name = "braid", version = VERSION, about)]
pub struct Cli {
    /// Log filter (tracing syntax: "info", "debug", "braid=debug,info").
    #[arg(long, global = true, env = "BRAID_LOG", default_value = "info")]
    pub log: String,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the relay (on the VPS).
    Server {
        /// server.toml
        #[arg(long)]
        config: PathBuf,
    },
    /// Run the gateway (on the router).
    Gateway {
        /// gateway.toml
        #[arg(long)]
        config: PathBuf,
    },
    /// Print a fresh pre-shared key (base64) on the first line of stdout.
    Keygen {
        /// The method the key is for (its length depends on it).
        #[arg(long, default_value = "2022-blake3-aes-256-gcm")]
        method: String,
    },
    /// Check everything braid depends on and name the cause and fix of every problem.
    Doctor {
        /// gateway.toml or server.toml.
        #[arg(long)]
        config: PathBuf,
        /// Print JSON: {"checks":[{"id","status","summary","cause","fix","evidence"}]}.
        #[arg(long)]
        json: bool,
        /// Read procfs from here instead of /proc (for tests and offline diagnosis).
        #[arg(long, default_value = "/proc", hide = true)]
        proc_root: PathBuf,
        /// Read installed kernels from here instead of /boot.
        #[arg(long, default_value = "/boot", hide = true)]
        boot_root: PathBuf,
        /// Read reboot-required markers from here instead of /run.
        #[arg(long, default_value = "/run", hide = true)]
        run_root: PathBuf,
        /// Pretend the running kernel is this release (with --proc-root, for tests).
        #[arg(long, hide = true)]
        kernel_release: Option<String>,
        /// Read the kernel log from here instead of /dev/kmsg.
        #[arg(long, default_value = "/dev/kmsg", hide = true)]
        kmsg: PathBuf,
        /// sshd's configuration, to learn its port (server side).
        #[arg(long, default_value = "/etc/ssh/sshd_config", hide = true)]
        sshd_config: PathBuf,
    },
    /// Show a running daemon's uplinks, connections, TFO and blackhole state.
    Status {
        /// gateway.toml or server.toml (its `control` address, the HTTP status API, is used).
        #[arg(long, conflicts_with = "control")]
        config: Option<PathBuf>,
        /// The HTTP status API address (`control` in the config), e.g. 127.0.0.1:9090.
        #[arg(long)]
        control: Option<std::net::SocketAddr>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Refresh every second, in place.
        #[arg(long)]
        watch: bool,
    },
    /// Measure each uplink alone and bonded, down and up, through the relay (needs braid server).
    Speedtest {
        /// gateway.toml.
        #[arg(long)]
        config: PathBuf,
        /// Print JSON: {"results":[{"path","direction","mbit_per_s","subflows","bytes_per_uplink"}]}.
        #[arg(long)]
        json: bool,
        /// Seconds per test (the relay allows at most 60).
        #[arg(long, default_value_t = 5)]
        secs: u32,
    },
    /// Set this machine up: `setup server` on the VPS, `setup gateway --pair URI` on the router,
    /// `setup undo` to take everything back.
    #[command(subcommand)]
    Setup(crate::setup::command::SetupCommand),
    /// Write the man page and shell completions (used by the package build).
    #[command(hide = true)]
    Generate {
        /// Folder to write `braid.1` and `completions/` into.
        #[arg(long)]
        out: PathBuf,
    },
    /// The built-in network-namespace lab.
    #[cfg(feature = "lab")]
    #[command(subcommand)]
    Lab(braid_lab::cli::LabCommand),
}

fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

/// Runs a parsed command line; the exit code is 0 on success, 1 on a failure braid explains,
/// 2 on a usage or configuration error.
///
/// The one tokio runtime is built here, for the subcommands that need it; `keygen` needs none,
/// and the lab builds its own.
pub fn run(cli: Cli) -> ExitCode {
    init_logging(&cli.log);
    match cli.command {
        Command::Keygen { method } => keygen(&method),
        Command::Setup(cmd) => crate::setup::command::run(cmd),
        Command::Generate { out } => match crate::generate::write(&out) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!(
                    "braid: cannot write into {}: {e}; fix: give a writable --out folder",
                    out.display()
                );
                ExitCode::from(1)
            }
        },
        #[cfg(feature = "lab")]
        Command::Lab(cmd) => braid_lab::cli::run(cmd),
        Command::Server { config } => match ServerConfig::load(&config) {
            Ok(cfg) => block_on(daemon(server(cfg, config)), ExitCode::from(1)),
            Err(e) => usage(e),
        },
        Command::Gateway { config } => match GatewayConfig::load(&config) {
            Ok(cfg) => block_on(daemon(gateway(cfg, config)), ExitCode::from(1)),
            Err(e) => usage(e),
        },
        Command::Speedtest { config, json, secs } => block_on(
            crate::speedtest::main(&config, json, secs),
            ExitCode::from(1),
        ),
        Command::Status {
            config,
            control,
            json,
            watch,
        } => {
            let (addr, token) = match (control, config) {
                (Some(a), _) => (a, None),
                (None, Some(c)) => match crate::status::client::control_of(&c) {
                    Ok(a) => a,
                    Err(e) => return usage(e),
                },
                (None, None) => match crate::config::common_default_control() {
                    Some(a) => (a, None),
                    None => return usage("give --config FILE or --control ADDR"),
                },
            };
            block_on(
                crate::status::client::main(addr, token, json, watch),
                ExitCode::from(1),
            )
        }
        Command::Doctor {
            config,
            json,
            proc_root,
            boot_root,
            run_root,
            kernel_release,
            kmsg,
            sshd_config,
        } => block_on(
            crate::doctor::main(crate::doctor::Options {
                config,
                json,
                sshd_config,
                roots: crate::doctor::KernelRoots {
                    proc: proc_root,
                    boot: boot_root,
                    run: run_root,
                    release: kernel_release,
                    kmsg,
                },
            }),
            // Doctor's contract: 2 when it could not run at all.
            ExitCode::from(2),
        ),
    }
}

fn keygen(method: &str) -> ExitCode {
    match Method::parse("--method", method) {
        Ok(m) => match crate::keygen::generate(m) {
            Ok(k) => {
                println!("{k}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("braid: cannot read the system's random source: {e}");
                ExitCode::from(1)
            }
        },
        Err(_) => {
            eprintln!(
                "braid: --method {method:?} is not supported; fix: use one of {}",
                Method::ALL.map(|m| m.name()).join(", ")
            );
            ExitCode::from(2)
        }
    }
}

/// Builds the runtime and runs `fut` on it; `failed` is the exit code when it cannot be built.
fn block_on(fut: impl Future<Output = ExitCode>, failed: ExitCode) -> ExitCode {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(fut),
        Err(e) => {
            eprintln!("braid: cannot start the async runtime: {e}");
            failed
        }
    }
}

fn usage(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("braid: {e}");
    ExitCode::from(2)
}

/// SIGHUP, caught from the start: its default action would kill the daemon.
fn hangup() -> std::io::Result<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
}

/// `braid server`: bind, tell systemd it is ready, then relay until SIGINT/SIGTERM; SIGHUP
/// re-reads the config (the allowlist changes live; the rest is named as needing a restart).
async fn server(cfg: ServerConfig, path: PathBuf) -> anyhow::Result<()> {
    raise_open_files();
    let shutdown = crate::shutdown::on_signals()?;
    let hup = hangup()?;
    let listeners = crate::server::Listeners::bind(&cfg).await?;
    crate::systemd::spawn_watchdog();
    crate::systemd::ready("relay listening");
    let server = crate::server::Server::new(cfg.clone(), listeners);
    let reload = tokio::spawn(crate::server::reload::follow(
        path,
        hup,
        cfg,
        server.reloader(),
    ));
    server.run(shutdown).await;
    reload.abort();
    Ok(())
}

/// `braid gateway`: undo what a killed run left in the kernel, bind, then bond and carry until
/// SIGINT/SIGTERM; SIGHUP reloads.
async fn gateway(cfg: GatewayConfig, path: PathBuf) -> anyhow::Result<()> {
    raise_open_files();
    let shutdown = crate::shutdown::on_signals()?;
    let signal = hangup()?;
    crate::gateway::recover(&cfg).await?;
    let listeners = crate::gateway::Listeners::bind(&cfg).await?;
    crate::systemd::spawn_watchdog();
    let reload = crate::gateway::reload::Reload { path, signal };
    crate::gateway::run_reloadable(cfg, listeners, shutdown, Some(reload)).await?;
    Ok(())
}

/// Lifts the open-file limit to the hard limit before anything is opened, and says the figure:
/// every connection costs descriptors, and service managers start daemons at a soft 1024.
fn raise_open_files() {
    match braid_sys::rlimit::raise_file_limit() {
        Ok(r) if r.after.soft > r.before.soft => info!(
            "open-file limit raised from {} to {} (the hard limit)",
            r.before.soft, r.after.soft
        ),
        Ok(r) => info!(
            "open-file limit {} (the hard limit is {}); to serve more connections raise LimitNOFILE= in the service",
            r.after.soft, r.after.hard
        ),
        Err(e) => warn!("cannot raise the open-file limit ({e}); braid sizes its caps for the current one"),
    }
}

async fn daemon(fut: impl Future<Output = anyhow::Result<()>>) -> ExitCode {
    match fut.await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            eprintln!("braid: {e:#}");
            ExitCode::from(1)
        }
    }
}
