//! The `braid` binary: parse the command line, run the subcommand, map errors to exit codes.
#![forbid(unsafe_code)]

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = braid::cli::Cli::parse();
    braid::cli::run(cli)
}
