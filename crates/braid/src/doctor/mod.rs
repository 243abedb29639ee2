//! `braid doctor`: every known failure named, with its cause and its fix, from evidence.
//!
//! Run it on the gateway with `gateway.toml` or on the VPS with `server.toml`; the file's keys
//! tell which. It works whether the daemon runs or not: checks of applied state (endpoints,
//! rules, routes, the capture table) report `skip` with the reason when the gateway is not
//! running. Exit code: 0 nothing failed, 1 a check failed, 2 doctor itself could not run.

mod applied;
pub mod check;
mod congestion;
pub mod firewall;
mod gateway;
pub mod kernel;
mod server;
mod tunnel;
mod udp;

use std::path::PathBuf;
use std::process::ExitCode;

use check::Report;
pub use kernel::KernelRoots;

/// What `braid doctor` was asked.
#[derive(Debug, Clone)]
pub struct Options {
    /// gateway.toml or server.toml.
    pub config: PathBuf,
    /// Machine output.
    pub json: bool,
    /// Where procfs, /boot and /run are (tests point these at fakes).
    pub roots: KernelRoots,
    /// sshd's configuration file (server side).
    pub sshd_config: PathBuf,
}

/// Runs every check for the config's side.
pub async fn run(opts: &Options) -> Result<Report, String> {
    match crate::config::side_of(&opts.config)? {
        crate::config::Side::Gateway => {
            let cfg = crate::config::gateway::GatewayConfig::load(&opts.config)
                .map_err(|e| e.to_string())?;
            Ok(gateway::checks(&cfg, &opts.roots).await)
        }
        crate::config::Side::Server => {
            let cfg = crate::config::server::ServerConfig::load(&opts.config)
                .map_err(|e| e.to_string())?;
            Ok(server::checks(&cfg, &opts.roots, &opts.sshd_config).await)
        }
    }
}

/// Entry point of the subcommand (on the CLI's runtime).
pub async fn main(opts: Options) -> ExitCode {
    match run(&opts).await {
        Ok(report) => {
            if opts.json {
                println!("{}", report.to_json());
            } else {
                print!("{}", report.to_text());
            }
            ExitCode::from(report.exit_code())
        }
        Err(e) => {
            eprintln!("braid doctor: {e}");
            ExitCode::from(2)
        }
    }
}
