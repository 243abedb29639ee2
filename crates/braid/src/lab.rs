//! `braid lab`: the built-in network-namespace lab (see the braid-lab crate).

use std::process::ExitCode;

use clap::Subcommand;

/// Lab subcommands.
#[derive(Debug, Subcommand)]
pub enum LabCommand {
    /// Build the lab, run server and gateway, measure wifi alone, 5g alone and bonded.
    Demo {
        /// Print the results as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a lab subcommand.
pub fn run(cmd: LabCommand) -> ExitCode {
    match cmd {
        LabCommand::Demo { json: _ } => {
            eprintln!("braid lab demo: not built yet");
            ExitCode::from(1)
        }
    }
}
