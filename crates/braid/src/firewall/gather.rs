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

#[cfg(test)]
mod tests {
    //! Against the real nft and iptables, each test in its own network namespace (never the
    //! host's): what [`Ruleset::with_plan`] predicts is what the kernel does after the plan is
    //! applied, read back by [`gather`].

    use std::io::Write;
    use std::process::Stdio;

    use nix::sched::CloneFlags;

    use super::*;
    use crate::firewall::eval::{admits, Admission, Probe};
    use crate::firewall::plan::tests::setup_rules;
    use crate::firewall::plan::{Placement, Plan, Rendered};

    /// Runs `test` on a thread in a new, empty network namespace; the tools it starts act
    /// there. Skips without root, unless CI=true.
    fn in_netns(name: &str, test: impl FnOnce() + Send + 'static) {
        if !braid_lab::root_tests_enabled(name) {
            return;
        }
        let joined = std::thread::spawn(move || {
            nix::sched::unshare(CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
            test();
        })
        .join();
        if let Err(panic) = joined {
            std::panic::resume_unwind(panic);
        }
    }

    fn feed(program: &str, args: &[&str], input: &str) {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .spawn()
            .expect("tool runs");
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(input.as_bytes()).unwrap();
        drop(stdin);
        assert!(
            child.wait().unwrap().success(),
            "{program} rejected:\n{input}"
        );
    }

    fn outcome(a: &Admission) -> &'static str {
        match a {
            Admission::Admitted => "admitted",
            Admission::Blocked { .. } => "blocked",
            Admission::Unsure { .. } => "unsure",
        }
    }

    /// Each probe's outcome, to compare prediction and reality (their evidence texts differ:
    /// the kernel's rules carry handles).
    fn outcomes(rules: &Ruleset) -> Vec<(Probe, &'static str)> {
        let mut out = Vec::new();
        for family in [Family::V4, Family::V6] {
            for port in [22, 2222, 8388, 9000] {
                for probe in [Probe::tcp(port, family), Probe::udp(port, family)] {
                    out.push((probe, outcome(&admits(rules, probe))));
                }
            }
        }
        out
    }

    #[test]
    fn own_table_plan_applied_is_what_with_plan_predicted() {
        in_netns("firewall_plan_nft", || {
            let plan = Plan {
                placement: Placement::OwnTable {
                    table: "braid-fw".into(),
                    priority: 0,
                },
                rules: setup_rules(),
            };
            let Ok(Rendered::Nft(batch)) = plan.render() else {
                panic!("an own table renders to nft");
            };
            // First on a host without a firewall, then behind a table that drops the rest.
            for host in [None, Some("table inet filter {\n chain input {\n  type filter hook input priority 0; policy drop;\n  tcp dport 2222 accept\n }\n}\n")] {
                if let Some(script) = host {
                    feed("nft", &["-f", "-"], script);
                }
                let before = gather().expect("gather");
                let predicted = before.with_plan(&plan);
                braid_sys::nftables::apply(&batch).expect("apply");
                let after = gather().expect("gather again");
                assert_eq!(outcomes(&after), outcomes(&predicted), "host {host:?}");
                let own = after.tables.iter().find(|t| t.name == "braid-fw").unwrap();
                let read: Vec<_> = own.chains[0].rules.iter().map(|r| &r.matches).collect();
                let planned: Vec<_> = plan.rules.iter().map(|r| &r.matches).collect();
                assert_eq!(read, planned);
            }
            // Behind the host's policy drop, braid's accept cannot open 8388.
            let after = gather().unwrap();
            assert!(matches!(
                admits(&after, Probe::tcp(8388, Family::V4)),
                Admission::Blocked { .. }
            ));
            assert_eq!(
                admits(&after, Probe::tcp(2222, Family::V6)),
                Admission::Admitted
            );
        });
    }

    #[test]
    fn iptables_plan_run_is_what_with_plan_predicted() {
        in_netns("firewall_plan_iptables", || {
            let host = "*filter\n:INPUT DROP [0:0]\n-A INPUT -p tcp -m tcp --dport 2222 -j ACCEPT\nCOMMIT\n";
            feed("iptables-restore", &[], host);
            feed("ip6tables-restore", &[], host);
            let plan = Plan {
                placement: Placement::IptablesInput,
                rules: setup_rules(),
            };
            let before = gather().expect("gather");
            assert!(matches!(
                admits(&before, Probe::tcp(22, Family::V4)),
                Admission::Blocked { .. }
            ));
            let predicted = before.with_plan(&plan);
            let Ok(Rendered::Iptables(cmds)) = plan.render() else {
                panic!("iptables placement renders to commands");
            };
            for cmd in &cmds {
                let out = Command::new(cmd.program).args(cmd.args()).output().unwrap();
                assert!(
                    out.status.success(),
                    "{cmd}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            let after = gather().expect("gather again");
            assert_eq!(outcomes(&after), outcomes(&predicted));
            for family in [Family::V4, Family::V6] {
                for probe in [
                    Probe::tcp(22, family),
                    Probe::tcp(8388, family),
                    Probe::udp(8388, family),
                ] {
                    assert_eq!(admits(&after, probe), Admission::Admitted, "{probe:?}");
                }
            }
            // conntrack and multiport are `xt` to nft: the tables were re-read from *-save.
            assert!(
                after
                    .notes
                    .iter()
                    .any(|n| n.contains("read it from iptables-save")),
                "{:?}",
                after.notes
            );
        });
    }
}
