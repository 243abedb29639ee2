//! `braid generate --out DIR` (hidden): the man page and shell completions, generated from the
//! CLI definition itself, so they never drift from `--help`. The package build calls it.

use std::path::Path;

use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::Cli;

/// Writes `DIR/braid.1` (and `DIR/braid-SUBCOMMAND.1` pages) and `DIR/completions/{braid.bash,_braid,braid.fish}`.
pub fn write(out: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(out.join("completions"))?;
    // braid.1, and one page per subcommand: braid-setup-server.1 and so on.
    clap_mangen::generate_to(Cli::command(), out)?;
    for (shell, file) in [
        (Shell::Bash, "braid.bash"),
        (Shell::Zsh, "_braid"),
        (Shell::Fish, "braid.fish"),
    ] {
        let mut f = std::fs::File::create(out.join("completions").join(file))?;
        clap_complete::generate(shell, &mut Cli::command(), "braid", &mut f);
    }
    Ok(())
}
