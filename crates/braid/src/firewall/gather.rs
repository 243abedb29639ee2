//! Reading the host's firewall: the one place that runs `nft -j list ruleset`,
//! `iptables-save` and `ip6tables-save`, and reads the kernel's list of legacy iptables tables.
//!
//! 1. `nft -j list ruleset` shows every nftables table, iptables-nft ones included.
//! 2. An iptables-nft `filter` table with matches nft cannot show (`xt`) is re-read from
//!    `iptables-save` / `ip6tables-save`, which can.
//! 3. Legacy iptables tables are invisible to nft but still filter: when the kernel has a legacy
//!    `filter` table, it is added from `iptables-legacy-save`.
//!
//! Without nft, `iptables-save` and `ip6tables-save` are the whole story.

use std::process::Command;

use super::iptables::parse_iptables_save;
use super::model::{Family, Origin, Ruleset, TableFamily};
use super::nft::{parse_nft_json, NftParseError};

/// Why the firewall could not be read.
#[derive(Debug, thiserror::Error)]
pub enum GatherError {
    /// The tool ran and failed (typically: not root).
    #[error("`{command}` failed ({status}): {stderr}; fix: run as root (reading the firewall needs CAP_NET_ADMIN)")]
    Failed {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// The tool is installed but could not be started.
    #[error(
        "`{command}` could not be started: {source}; fix: check that it is executable by this user"
    )]
    Spawn {
        /// The command line.
        command: String,
        /// The error from exec.
        source: std::io::Error,
    },
    /// nft printed something that is not its JSON.
    #[error("cannot parse the output of `nft -j list ruleset`: {0}")]
    Unparsable(#[from] NftParseError),
}

impl GatherError {
    /// The command that failed, for evidence.
    pub fn command(&self) -> &str {
        match self {
            GatherError::Failed { command, .. } | GatherError::Spawn { command, .. } => command,
            GatherError::Unparsable(_) => "nft -j list ruleset",
        }
    }
}

/// Reads the ruleset (see the module doc for the order).
pub fn gather() -> Result<Ruleset, GatherError> {
    let mut rules = match run("nft", &["-j", "list", "ruleset"]) {
        Ok(text) => parse_nft_json(&text)?,
        Err(Run::Missing) => return iptables_only(),
        Err(Run::Failed(e)) => return Err(e),
    };
    for (family, table_family, cmd) in [
        (Family::V4, TableFamily::Ip, "iptables-save"),
        (Family::V6, TableFamily::Ip6, "ip6tables-save"),
    ] {
        if rules.has_xt(&table_family) {
            if let Ok(text) = run(cmd, &[]) {
                let table = parse_iptables_save(&text, family);
                rules.replace_table(&table_family, "filter", vec![table]);
                rules.notes.push(format!(
                    "the {table_family} filter table uses iptables-nft matches; read it from {cmd}"
                ));
            }
        }
    }
    add_legacy_tables(&mut rules);
    Ok(rules)
}

/// Without nft: `iptables-save` and `ip6tables-save`, whichever are installed.
fn iptables_only() -> Result<Ruleset, GatherError> {
    let mut rules = Ruleset {
        source: "iptables-save".into(),
        ..Ruleset::default()
    };
    rules
        .notes
        .push("nft is not installed; read iptables-save and ip6tables-save".into());
    let mut any = false;
    for (cmd, family) in [
        ("iptables-save", Family::V4),
        ("ip6tables-save", Family::V6),
    ] {
        match run(cmd, &[]) {
            Ok(text) => {
                any = true;
                rules.tables.push(parse_iptables_save(&text, family));
            }
            Err(Run::Missing) => {}
            Err(Run::Failed(e)) => return Err(e),
        }
    }
    if !any {
        rules
            .notes
            .push("neither nft nor iptables-save is installed: no host firewall tool".into());
    }
    Ok(rules)
}

/// Legacy iptables rules are invisible to nft but still filter. Only look if the kernel has a
/// legacy `filter` table, so that nothing loads the ip_tables module as a side effect. The list
/// is read through `thread-self`, which shows this thread's network namespace.
fn add_legacy_tables(rules: &mut Ruleset) {
    for (family, names, cmd) in [
        (
            Family::V4,
            "/proc/thread-self/net/ip_tables_names",
            "iptables-legacy-save",
        ),
        (
            Family::V6,
            "/proc/thread-self/net/ip6_tables_names",
            "ip6tables-legacy-save",
        ),
    ] {
        let present =
            std::fs::read_to_string(names).is_ok_and(|t| t.lines().any(|l| l.trim() == "filter"));
        if !present {
            continue;
        }
        if let Ok(text) = run(cmd, &[]) {
            let mut legacy = parse_iptables_save(&text, family);
            legacy.origin = Origin::IptablesLegacy;
            rules.tables.push(legacy);
            rules
                .notes
                .push(format!("legacy iptables rules read from {cmd}"));
        }
    }
}

enum Run {
    /// The program is not installed.
    Missing,
    Failed(GatherError),
}

fn run(cmd: &str, args: &[&str]) -> Result<String, Run> {
    let command = std::iter::once(cmd)
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ");
    let out = Command::new(cmd).args(args).output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Run::Missing
        } else {
            Run::Failed(GatherError::Spawn {
                command: command.clone(),
                source: e,
            })
        }
    })?;
    if !out.status.success() {
        return Err(Run::Failed(GatherError::Failed {
            command,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        }));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

