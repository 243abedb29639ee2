//! Opening the relay port in the host firewall without ever closing SSH.
//!
//! ```text
//!  gathered Ruleset ─► judge relay TCP/UDP and sshd's ports ─► all admitted? nothing to do
//!        │                 (firewall::admits, as doctor)
//!        └─► the chain that drops them ─► Plan (IptablesInput | NftChain) or ufw/firewalld command
//!              ─► gathered.with_plan(…) judged again: relay admitted AND no SSH port worse
//!              ─► changes to apply, or refusal with the exact commands printed
//! ```
//! braid's accepts go *into the chain that drops* (tagged, so `undo` finds exactly them): an
//! accept in a table of braid's own would end only its own base chain, and the host's chain
//! would still drop the packet. Tables and rules that are not braid's are never modified.
//! An sshd port the firewall would drop is admitted first (a lockout waiting to happen at the
//! next login, as OpenMPTCPRouter's users meet it); one the host's own rules admit, perhaps
//! only from some addresses, is left to those rules.

use crate::firewall::model::{ChainId, Match, Origin, Rule, TableFamily};
use crate::firewall::{admits, Admission, Family, Manager, Placement, Plan, Probe, Rendered};
use crate::firewall::{Ruleset, L4};

use super::change::{shell_line, Change, NftUndo};

/// The comment on every rule setup inserts into a host nft chain.
pub const TAG: &str = "braid setup";

/// What the firewall step decided.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Changes to make, in order.
    pub changes: Vec<Change>,
    /// What was found and decided, for the user.
    pub notes: Vec<String>,
    /// Set when setup will not touch the firewall: the reason, and the commands (exact) the
    /// user may run after checking them.
    pub refused: Option<Refusal>,
}

/// Setup's firewall change could not be shown to be safe and effective.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Why.
    pub why: String,
    /// Commands that would open the relay port (none when no command can).
    pub commands: Vec<String>,
}

/// What must be admitted.
#[derive(Debug, Clone)]
pub struct Want {
    /// The relay's port (TCP and UDP).
    pub relay: u16,
    /// The UDP port of the tunnel for hostile paths (`tunnel_port`), when it is on.
    pub tunnel: Option<u16>,
    /// Families the relay listens on.
    pub families: Vec<Family>,
    /// The ports sshd listens on.
    pub ssh: Vec<u16>,
    /// Which host tools are there to manage the firewall (ufw, firewall-cmd).
    pub tools: Tools,
}

impl Want {
    /// The relay's UDP port (the Shadowsocks-2022 UDP relay), then the tunnel's.
    fn udp_ports(&self) -> Vec<u16> {
        std::iter::once(self.relay).chain(self.tunnel).collect()
    }
}

/// Firewall managers found running on the host.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tools {
    /// `ufw status` says active.
    pub ufw: bool,
    /// `firewall-cmd --state` says running.
    pub firewalld: bool,
}

impl Tools {
    /// Asks the tools themselves: `ufw status` (active?) and `firewall-cmd --state`.
    pub fn detect() -> Tools {
        Tools {
            ufw: ufw_active(),
            firewalld: firewalld_running(),
        }
    }
}

fn ufw_active() -> bool {
    std::process::Command::new("ufw")
        .arg("status")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("Status: active"))
}

fn firewalld_running() -> bool {
    std::process::Command::new("firewall-cmd")
        .arg("--state")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Decides the firewall changes for `want` on the gathered `rules`.
pub fn plan(rules: &Ruleset, want: &Want) -> Outcome {
    let mut out = Outcome::default();
    let blocked_ssh: Vec<u16> = (want.ssh.iter().copied())
        .filter(|&p| blocked(rules, Probe::tcp(p, Family::V4)))
        .collect();
    if !blocked_ssh.is_empty() {
        out.notes.push(format!(
            "sshd listens on {} but the firewall drops it: admitting it first, so that nobody is locked out",
            ports(&blocked_ssh)
        ));
    }
    let mut rules_to_add = Vec::new();
    if !blocked_ssh.is_empty() {
        rules_to_add.push(Rule::accept_dports(L4::Tcp, &blocked_ssh));
    }
    rules_to_add.extend([
        Rule::accept_loopback(),
        Rule::accept_established(),
        Rule::accept_dports(L4::Tcp, &[want.relay]),
        Rule::accept_dports(L4::Udp, &want.udp_ports()),
    ]);

    let mut after = rules.clone();
    for _ in 0..8 {
        let Some(chain) = first_block(&after, want) else {
            break;
        };
        match rules.manager(&chain) {
            Manager::Ufw if want.tools.ufw => {
                return tool_commands(out, "ufw", want, &blocked_ssh, ufw_pair);
            }
            Manager::Firewalld if want.tools.firewalld => {
                return tool_commands(out, "firewalld", want, &blocked_ssh, firewalld_pair);
            }
            _ => {}
        }
        let Some(plan) = placement_for(&chain, &rules_to_add) else {
            return refuse(
                out,
                format!("the chain that drops the relay port, `{chain}`, is one setup cannot write safely"),
                &[],
            );
        };
        let next = after.with_plan(&plan);
        if next == after {
            return refuse(out, format!("cannot place rules into `{chain}`"), &[]);
        }
        after = next;
        match change_for(&plan) {
            Ok(c) => out.changes.extend(c),
            Err(e) => return refuse(out, e, &[]),
        }
        out.notes.push(format!(
            "opening the relay port in `{chain}`, the chain that drops it"
        ));
    }
    if out.changes.is_empty() {
        out.notes.push(format!(
            "the host firewall already admits TCP port {} and UDP {}: nothing to change",
            want.relay,
            ports(&want.udp_ports())
        ));
        return out;
    }
    let commands: Vec<String> = out.changes.iter().map(Change::describe).collect();
    if let Some(chain) = first_block(&after, want) {
        let why = format!("after setup's rules the relay port would still be dropped by `{chain}`");
        out.changes.clear();
        return refuse(out, why, &commands);
    }
    for &p in &want.ssh {
        for fam in [Family::V4, Family::V6] {
            let before = admits(rules, Probe::tcp(p, fam));
            let now = admits(&after, Probe::tcp(p, fam));
            if worse(&before, &now) {
                out.changes.clear();
                let why = format!(
                    "after setup's rules sshd's port {p} would be {}",
                    now.describe()
                );
                return refuse(out, why, &commands);
            }
        }
    }
    out
}

/// Whether a new connection of this kind is dropped for sure.
fn blocked(rules: &Ruleset, p: Probe) -> bool {
    matches!(admits(rules, p), Admission::Blocked { .. })
}

/// The first chain that drops the relay's TCP or UDP port, for a family the relay listens on.
fn first_block(rules: &Ruleset, want: &Want) -> Option<ChainId> {
    want.families.iter().find_map(|&f| {
        std::iter::once(Probe::tcp(want.relay, f))
            .chain(want.udp_ports().into_iter().map(|p| Probe::udp(p, f)))
            .find_map(|p| match admits(rules, p) {
                Admission::Blocked { chain, .. } => Some(chain),
                _ => None,
            })
    })
}

/// An admission got worse: admitted (or unsure) before, dropped after.
fn worse(before: &Admission, after: &Admission) -> bool {
    matches!(after, Admission::Blocked { .. }) && !matches!(before, Admission::Blocked { .. })
}

/// Where to put `rules` to get past `chain`: into it, at the top.
fn placement_for(chain: &ChainId, rules: &[Rule]) -> Option<Plan> {
    match (chain.origin, &chain.family) {
        (Origin::Nft, TableFamily::Inet | TableFamily::Ip | TableFamily::Ip6) => Some(Plan {
            placement: Placement::NftChain {
                family: chain.family.clone(),
                table: chain.table.clone(),
                chain: chain.chain.clone(),
                comment: TAG.into(),
            },
            rules: rules.to_vec(),
        }),
        (Origin::Iptables, TableFamily::Ip | TableFamily::Ip6)
            if chain.table == "filter" && chain.chain == "INPUT" =>
        {
            // Only the family that drops: inserting into the other would create its table.
            let family = if chain.family == TableFamily::Ip {
                Family::V4
            } else {
                Family::V6
            };
            let rules = rules
                .iter()
                .map(|r| {
                    let mut m = vec![Match::Family(family)];
                    m.extend(r.matches.iter().cloned());
                    Rule::new(m, r.verdict.clone())
                })
                .collect();
            Some(Plan {
                placement: Placement::IptablesInput,
                rules,
            })
        }
        _ => None,
    }
}

/// The changes that apply `plan`, each with its exact reverse.
fn change_for(plan: &Plan) -> Result<Vec<Change>, String> {
    match plan.render().map_err(|e| e.to_string())? {
        Rendered::Nft(batch) => {
            let Placement::NftChain {
                family,
                table,
                chain,
                comment,
            } = &plan.placement
            else {
                return Err("an nft batch is only planned for a host chain".into());
            };
            Ok(vec![Change::Nft {
                batch: serde_json::to_value(&batch).map_err(|e| e.to_string())?,
                text: braid_sys::nftables::batch_text(&batch),
                undo: NftUndo::DeleteTagged {
                    family: family.to_string(),
                    table: table.clone(),
                    chain: chain.clone(),
                    comment: comment.clone(),
                },
            }])
        }
        Rendered::Iptables(cmds) => Ok(cmds
            .into_iter()
            .map(|c| {
                let mut argv = vec![c.program.to_string()];
                argv.extend(c.args());
                let mut undo: Vec<String> =
                    [c.program, "-w", "-D", "INPUT"].map(String::from).into();
                undo.extend(c.rule.iter().cloned());
                Change::Command { argv, undo }
            })
            .collect()),
    }
}

/// A command and the one that takes it back.
type CommandPair = (Vec<String>, Vec<String>);

/// `ufw allow P/tcp` and its reverse.
fn ufw_pair(port: u16, l4: &str) -> CommandPair {
    let rule = format!("{port}/{l4}");
    (
        ["ufw", "allow", &rule].map(String::from).into(),
        ["ufw", "delete", "allow", &rule].map(String::from).into(),
    )
}

/// `firewall-cmd --add-port=P/tcp` (runtime and permanent) and its reverse.
fn firewalld_pair(port: u16, l4: &str) -> CommandPair {
    let add = format!("--add-port={port}/{l4}");
    let remove = format!("--remove-port={port}/{l4}");
    (
        [
            "sh",
            "-c",
            &format!("firewall-cmd {add} && firewall-cmd --permanent {add}"),
        ]
        .map(String::from)
        .into(),
        [
            "sh",
            "-c",
            &format!("firewall-cmd {remove} && firewall-cmd --permanent {remove}"),
        ]
        .map(String::from)
        .into(),
    )
}

/// The host's own manager opens the ports, in its own terms (its rules survive its reloads).
fn tool_commands(
    mut out: Outcome,
    tool: &str,
    want: &Want,
    ssh: &[u16],
    pair: fn(u16, &str) -> CommandPair,
) -> Outcome {
    let ports = ssh.iter().map(|&p| (p, "tcp"));
    let relay = std::iter::once((want.relay, "tcp"))
        .chain(want.udp_ports().into_iter().map(|p| (p, "udp")));
    for (p, l4) in ports.chain(relay) {
        let (argv, undo) = pair(p, l4);
        out.changes.push(Change::Command { argv, undo });
    }
    out.notes.push(format!(
        "the host firewall is managed by {tool}: opening the ports with it"
    ));
    out
}

fn refuse(mut out: Outcome, why: String, commands: &[String]) -> Outcome {
    out.changes.clear();
    out.refused = Some(Refusal {
        why,
        commands: commands.to_vec(),
    });
    out
}

fn ports(p: &[u16]) -> String {
    p.iter().map(u16::to_string).collect::<Vec<_>>().join(", ")
}

/// For messages: a change's command line, or its description.
pub fn command_line(c: &Change) -> String {
    match c {
        Change::Command { argv, .. } => shell_line(argv),
        other => other.describe(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::iptables::parse_iptables_save;
    use crate::firewall::nft::parse_nft_json;

    const UFW_LIKE: &str = include_str!("../firewall/fixtures/ufw-like.iptables-save");
    const PLAIN: &str = include_str!("../firewall/fixtures/plain.nft.json");

    fn want(ssh: &[u16], tools: Tools) -> Want {
        Want {
            relay: 8443,
            tunnel: Some(8444),
            families: vec![Family::V4],
            ssh: ssh.to_vec(),
            tools,
        }
    }

    fn ufw_like() -> Ruleset {
        Ruleset {
            source: "iptables-save".into(),
            tables: vec![parse_iptables_save(UFW_LIKE, Family::V4)],
            ..Ruleset::default()
        }
    }

    #[test]
    fn plan_without_a_firewall_changes_nothing() {
        let out = plan(&Ruleset::default(), &want(&[22], Tools::default()));
        assert!(out.changes.is_empty() && out.refused.is_none(), "{out:?}");
        assert!(out.notes[0].contains("nothing to change"), "{out:?}");
    }

    #[test]
    fn plan_nft_drop_inserts_tagged_rules_into_that_chain_and_admits_a_dropped_sshd_port() {
        let rules = parse_nft_json(PLAIN).unwrap();
        // sshd on 22 (admitted there) and 2222 (dropped by the chain's final reject).
        let out = plan(&rules, &want(&[22, 2222], Tools::default()));
        assert!(out.refused.is_none(), "{out:?}");
        let [Change::Nft { text, undo, .. }] = out.changes.as_slice() else {
            panic!("one nft change: {out:?}")
        };
        assert!(text.starts_with("insert rule inet filter input"), "{text}");
        assert!(
            text.contains("tcp dport 2222 accept") && !text.contains("tcp dport 22 "),
            "{text}"
        );
        assert!(text.contains("tcp dport 8443 accept"), "{text}");
        assert!(text.contains("udp dport { 8443, 8444 } accept"), "{text}");
        assert_eq!(
            undo,
            &NftUndo::DeleteTagged {
                family: "inet".into(),
                table: "filter".into(),
                chain: "input".into(),
                comment: TAG.into()
            }
        );
    }

    #[test]
    fn plan_iptables_inserts_for_its_family_only_with_exact_reverses() {
        let out = plan(&ufw_like(), &want(&[22], Tools::default()));
        assert!(out.refused.is_none(), "{out:?}");
        let lines: Vec<String> = out.changes.iter().map(command_line).collect();
        assert!(
            lines.iter().all(|l| l.starts_with("iptables -w -I INPUT")),
            "{lines:?}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.ends_with("-p udp -m multiport --dports 8443,8444 -j ACCEPT")),
            "{lines:?}"
        );
        for c in &out.changes {
            let Change::Command { argv, undo } = c else {
                panic!()
            };
            assert_eq!(undo[..4], ["iptables", "-w", "-D", "INPUT"]);
            assert_eq!(
                undo[4..],
                argv[5..],
                "undo deletes exactly the inserted rule"
            );
        }
    }

    #[test]
    fn plan_ufw_with_ufw_running_asks_ufw() {
        let tools = Tools {
            ufw: true,
            firewalld: false,
        };
        let out = plan(&ufw_like(), &want(&[22], tools));
        let lines: Vec<String> = out.changes.iter().map(command_line).collect();
        assert_eq!(
            lines,
            [
                "ufw allow 8443/tcp",
                "ufw allow 8443/udp",
                "ufw allow 8444/udp"
            ]
        );
    }

    #[test]
    fn plan_legacy_table_is_refused_not_guessed() {
        let mut rules = ufw_like();
        rules.tables[0].origin = Origin::IptablesLegacy;
        let out = plan(&rules, &want(&[22], Tools::default()));
        assert!(out.changes.is_empty());
        let r = out.refused.expect("refused");
        assert!(r.why.contains("cannot write safely"), "{r:?}");
    }
}
