//! Server-side firewall checks of `braid doctor`: does the host firewall admit new TCP
//! connections to the relay port, and to the port(s) sshd listens on (so that turning the
//! firewall on cannot lock the user out, as OpenMPTCPRouter's installer did by moving SSH to
//! 65222)?
//!
//! ```text
//!  nft -j list ruleset ─┐                         ┌─► relay_port() ─► firewall.relay_port
//!  iptables-save ───────┴─► FirewallRules ─► admits(port, family)
//!  sshd_config + /proc ─────► sshd_ports() ────────┴─► ssh() ────────► firewall.ssh
//! ```
//! Only what decides "is a new TCP SYN to port P from the internet (not loopback) accepted?" is
//! parsed: the base chains hooked at `input`, their policies, and per rule its TCP destination
//! ports, `ct state`, `iifname "lo"`, protocol and family matches, and its verdict (with jumps
//! followed). Anything else becomes an "uninterpreted" condition: the answer then turns into a
//! warning that quotes the rule, never into a failure.
//!
//! Not interpreted: named verdict maps, `tcp flags`, rate limits, source/destination address
//! matches (each of these makes the verdict "depends on rule X"), and the provider's cloud
//! firewall, which no host tool can see.
//!
//! Layout: `nft.rs` parses `nft -j list ruleset`, `iptables.rs` parses `iptables-save`,
//! `eval.rs` holds the rule model and judges a port against it, `sshd.rs` finds sshd's ports;
//! this file gathers the ruleset and turns the verdicts into the two checks.

mod eval;
mod iptables;
mod nft;
mod sshd;

use std::process::Command;

use super::check::Check;

pub use eval::{admits, Action, Admission, Chain, Cond, Family, Rule};
pub use iptables::parse_iptables_save;
pub use nft::parse_nft_json;
pub use sshd::sshd_ports;

/// The host's firewall as far as the checks need it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FirewallRules {
    /// Where the rules came from (`nft -j list ruleset`, `iptables-save`).
    pub source: String,
    /// All chains of all tables.
    pub chains: Vec<Chain>,
    /// Set when the ruleset could not be read at all (the checks then skip).
    pub error: Option<String>,
    /// Remarks on how the rules were gathered.
    pub notes: Vec<String>,
}

impl FirewallRules {
    fn input_chains(&self, fam: Family) -> impl Iterator<Item = &Chain> {
        self.chains
            .iter()
            .filter(move |c| c.is_input_filter() && c.applies_to(fam))
    }

    fn chain(&self, family: &str, table: &str, name: &str) -> Option<&Chain> {
        self.chains
            .iter()
            .find(|c| c.family == family && c.table == table && c.name == name)
    }

    fn has_xt(&self, family: &str) -> bool {
        self.chains
            .iter()
            .filter(|c| c.family == family)
            .flat_map(|c| &c.rules)
            .any(|r| {
                r.conds
                    .iter()
                    .any(|c| matches!(c, Cond::Unknown(s) if s.starts_with("iptables match")))
                    || matches!(&r.action, Action::Unknown(s) if s.starts_with("iptables target"))
            })
    }

    /// Replaces table `family table` with the chains of `other` (e.g. an iptables-nft table,
    /// whose `xt` expressions nft cannot show, by its iptables-save form).
    pub fn replace_table(&mut self, family: &str, table: &str, other: FirewallRules) {
        self.chains
            .retain(|c| !(c.family == family && c.table == table));
        self.chains.extend(other.chains);
    }
}

// ---------------------------------------------------------------------------------------------
// Gathering

/// Reads the ruleset: `nft -j list ruleset` (iptables-nft rules show up there too, and are
/// re-read from `iptables-save` when they use `xt` matches nft cannot show), plus legacy
/// iptables tables if any exist; without nft, `iptables-save` and `ip6tables-save`.
pub fn gather() -> FirewallRules {
    let mut rules = match run("nft", &["-j", "list", "ruleset"]) {
        Ok(text) => match parse_nft_json(&text) {
            Ok(r) => r,
            Err(e) => {
                return unreadable(
                    "nft -j list ruleset",
                    format!("cannot parse the output of `nft -j list ruleset`: {e}"),
                )
            }
        },
        Err(RunError::Missing) => {
            let mut r = FirewallRules {
                source: "iptables-save".into(),
                ..FirewallRules::default()
            };
            r.notes
                .push("nft is not installed; read iptables-save and ip6tables-save".into());
            let mut any = false;
            for (cmd, fam) in [
                ("iptables-save", Family::V4),
                ("ip6tables-save", Family::V6),
            ] {
                match run(cmd, &[]) {
                    Ok(text) => {
                        any = true;
                        r.chains.extend(parse_iptables_save(&text, fam).chains);
                    }
                    Err(RunError::Missing) => {}
                    Err(RunError::Failed(e)) => return unreadable(cmd, e),
                }
            }
            if !any {
                r.notes.push(
                    "neither nft nor iptables-save is installed: no host firewall tool".into(),
                );
            }
            return r;
        }
        Err(RunError::Failed(e)) => return unreadable("nft -j list ruleset", e),
    };
    for (fam, family, cmd) in [
        (Family::V4, "ip", "iptables-save"),
        (Family::V6, "ip6", "ip6tables-save"),
    ] {
        if rules.has_xt(family) {
            if let Ok(text) = run(cmd, &[]) {
                rules.replace_table(family, "filter", parse_iptables_save(&text, fam));
                rules.notes.push(format!(
                    "the {family} filter table uses iptables-nft matches; read it from {cmd}"
                ));
            }
        }
    }
    // Legacy iptables rules are invisible to nft but still filter. Only look if the legacy
    // tables exist, so that nothing loads the ip_tables module as a side effect.
    for (fam, names, cmd) in [
        (
            Family::V4,
            "/proc/net/ip_tables_names",
            "iptables-legacy-save",
        ),
        (
            Family::V6,
            "/proc/net/ip6_tables_names",
            "ip6tables-legacy-save",
        ),
    ] {
        let present =
            std::fs::read_to_string(names).is_ok_and(|t| t.lines().any(|l| l.trim() == "filter"));
        if present {
            if let Ok(text) = run(cmd, &[]) {
                let legacy = parse_iptables_save(&text, fam);
                rules.chains.extend(legacy.chains.into_iter().map(|mut c| {
                    c.table = "filter(legacy)".into();
                    c
                }));
                rules
                    .notes
                    .push(format!("legacy iptables rules read from {cmd}"));
            }
        }
    }
    rules
}

fn unreadable(source: &str, e: String) -> FirewallRules {
    FirewallRules {
        source: source.into(),
        error: Some(e),
        ..FirewallRules::default()
    }
}

enum RunError {
    Missing,
    Failed(String),
}

fn run(cmd: &str, args: &[&str]) -> Result<String, RunError> {
    let out = Command::new(cmd).args(args).output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            RunError::Missing
        } else {
            RunError::Failed(format!("{cmd}: {e}"))
        }
    })?;
    if !out.status.success() {
        return Err(RunError::Failed(format!(
            "`{cmd} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

// ---------------------------------------------------------------------------------------------
// The checks

/// `firewall.relay_port`: the host firewall admits new TCP connections to the relay's port.
pub fn relay_port(port: u16, rules: &FirewallRules) -> Check {
    const ID: &str = "firewall.relay_port";
    if let Some(c) = preflight(ID, rules) {
        return c;
    }
    let (v4, v6) = (
        admits(rules, port, Family::V4),
        admits(rules, port, Family::V6),
    );
    let cloud = format!("Also open TCP {port} in the provider's cloud firewall or security group, which this check cannot see.");
    let c = match &v4 {
        Admission::Admitted => Check::ok(ID, format!("the host firewall admits new TCP connections to the relay port {port}{}", v6_note(&v6))),
        Admission::Blocked { by, chain } => Check::fail(
            ID,
            format!("the host firewall drops new TCP connections to the relay port {port}"),
            format!("New TCP connections to port {port} are dropped by {by}, so no gateway can reach the relay: every connection attempt times out or is refused."),
            format!("{} {cloud}", admit_fix(rules, chain, &[port], by)),
        ),
        Admission::Unsure { otherwise, doubts } => Check::warn(
            ID,
            format!("cannot tell whether the host firewall admits the relay port {port}"),
            format!("New TCP connections to port {port} are {otherwise}, but the outcome depends on rules braid cannot interpret: {}.", doubts.join("; ")),
            format!("Read those rules and make sure TCP port {port} is accepted from the gateways' addresses (e.g. `nft insert rule inet filter input tcp dport {port} accept`). {cloud}"),
        ),
    };
    evidence(c, rules, &v4, &v6)
}

/// `firewall.ssh`: the host firewall admits the port(s) sshd listens on, so that enabling it
/// cannot lock the user out.
pub fn ssh(ports: &[u16], rules: &FirewallRules) -> Check {
    const ID: &str = "firewall.ssh";
    if ports.is_empty() {
        return Check::skip(
            ID,
            "skipped: no sshd port was found (no sshd_config and no listening sshd)",
        );
    }
    if let Some(c) = preflight(ID, rules) {
        return c.with("sshd_ports", ports.to_vec());
    }
    let list = |ps: &[u16]| ps.iter().map(u16::to_string).collect::<Vec<_>>().join(", ");
    let judged: Vec<(u16, Admission)> = ports
        .iter()
        .map(|&p| (p, admits(rules, p, Family::V4)))
        .collect();
    let admitted: Vec<u16> = judged
        .iter()
        .filter(|(_, a)| *a == Admission::Admitted)
        .map(|(p, _)| *p)
        .collect();
    let blocked: Vec<(u16, &str, &str)> = judged
        .iter()
        .filter_map(|(p, a)| match a {
            Admission::Blocked { by, chain } => Some((*p, by.as_str(), chain.as_str())),
            _ => None,
        })
        .collect();
    let unsure: Vec<String> = judged
        .iter()
        .filter(|(_, a)| matches!(a, Admission::Unsure { .. }))
        .map(|(p, a)| format!("port {p}: {}", describe(a)))
        .collect();
    let blocked_ports: Vec<u16> = blocked.iter().map(|b| b.0).collect();
    let keep = "Keep your current session open and test a new login from a second terminal before you log out.";
    let mut c = if admitted.len() == ports.len() {
        Check::ok(
            ID,
            format!("the host firewall admits sshd's port(s) {}", list(ports)),
        )
    } else if let (true, Some(&(_, by, chain))) =
        (admitted.is_empty() && unsure.is_empty(), blocked.first())
    {
        Check::fail(
            ID,
            format!("sshd listens on port(s) {} and the host firewall drops new connections to all of them", list(ports)),
            format!("New TCP connections to sshd's port(s) {} are dropped by {by}, so nobody can open a new SSH session: this is how OpenMPTCPRouter's installer locked users out after moving SSH to port 65222.", list(ports)),
            format!("{} {keep}", admit_fix(rules, chain, &blocked_ports, by)),
        )
    } else if let Some(&(_, by, chain)) = blocked.first() {
        Check::warn(
            ID,
            format!("the host firewall drops sshd's port(s) {} (admitted: {})", list(&blocked_ports), if admitted.is_empty() { "none".into() } else { list(&admitted) }),
            format!("sshd also listens on port(s) {}, but new connections to them are dropped by {by}; logins work only on the other port(s).", list(&blocked_ports)),
            format!("{} Or remove the unused Port lines from /etc/ssh/sshd_config. {keep}", admit_fix(rules, chain, &blocked_ports, by)),
        )
    } else {
        Check::warn(
            ID,
            "cannot tell whether the host firewall admits sshd's port(s)",
            format!("The outcome depends on rules braid cannot interpret: {}.", unsure.join("; ")),
            format!("Read those rules and make sure TCP port(s) {} are accepted from the addresses you log in from. {keep}", list(ports)),
        )
    };
    c = c.with("sshd_ports", ports.to_vec());
    for (p, a) in &judged {
        c = c.with(&format!("port_{p}"), describe(a));
    }
    c.with("source", rules.source.as_str())
        .with("input_chains", input_chain_list(rules))
        .with("notes", rules.notes.clone())
}

/// The skip (unreadable) or ok (no firewall) common to both checks.
fn preflight(id: &str, rules: &FirewallRules) -> Option<Check> {
    if let Some(e) = &rules.error {
        return Some(
            Check::skip(
                id,
                format!("cannot read the host firewall ({e}); run braid doctor as root"),
            )
            .with("source", rules.source.as_str()),
        );
    }
    if rules.input_chains(Family::V4).next().is_none()
        && rules.input_chains(Family::V6).next().is_none()
    {
        return Some(
            Check::ok(id, "no host firewall: no filter chain is hooked at input")
                .with("source", rules.source.as_str())
                .with("notes", rules.notes.clone()),
        );
    }
    None
}

fn v6_note(v6: &Admission) -> String {
    match v6 {
        Admission::Admitted => String::new(),
        other => format!(" over IPv4 (over IPv6 it is {})", describe(other)),
    }
}

fn evidence(c: Check, rules: &FirewallRules, v4: &Admission, v6: &Admission) -> Check {
    c.with("ipv4", describe(v4))
        .with("ipv6", describe(v6))
        .with("source", rules.source.as_str())
        .with("input_chains", input_chain_list(rules))
        .with("notes", rules.notes.clone())
}

fn input_chain_list(rules: &FirewallRules) -> Vec<String> {
    rules
        .chains
        .iter()
        .filter(|c| c.is_input_filter())
        .map(|c| {
            format!(
                "{} (policy {}, {} rules)",
                c.label(),
                if c.policy_drop { "drop" } else { "accept" },
                c.rules.len()
            )
        })
        .collect()
}

/// How to admit `ports` in the tool that manages `chain`.
fn admit_fix(rules: &FirewallRules, chain: &str, ports: &[u16], by: &str) -> String {
    let csv = ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let first = if by.starts_with("rule") {
        format!("Remove or move the {by} (list rules with handles: `nft -a list ruleset`), or admit the port before it: ")
    } else {
        "Admit the port before anything drops it: ".to_string()
    };
    let cmd = if rules.chains.iter().any(|c| c.name.starts_with("ufw")) {
        ports
            .iter()
            .map(|p| format!("`ufw allow {p}/tcp`"))
            .collect::<Vec<_>>()
            .join(" and ")
    } else if rules.chains.iter().any(|c| c.table == "firewalld") {
        format!("`firewall-cmd --permanent --add-port={{{csv}}}/tcp && firewall-cmd --reload`")
    } else if chain.contains(" filter INPUT") || chain.contains("filter(legacy) INPUT") {
        let tool = if chain.starts_with("ip6") {
            "ip6tables"
        } else {
            "iptables"
        };
        format!("`{tool} -I INPUT -p tcp -m multiport --dports {csv} -j ACCEPT`, then persist it (`netfilter-persistent save`)")
    } else {
        let set = if ports.len() == 1 {
            csv
        } else {
            format!("{{ {} }}", csv.replace(',', ", "))
        };
        format!("`nft insert rule {chain} tcp dport {set} accept`, then add the same rule to /etc/nftables.conf so that it survives a reboot")
    };
    format!("{first}{cmd}.")
}

fn describe(a: &Admission) -> String {
    match a {
        Admission::Admitted => "admitted".into(),
        Admission::Blocked { by, .. } => format!("dropped by {by}"),
        Admission::Unsure { otherwise, doubts } => {
            format!("{otherwise}, unless: {}", doubts.join("; "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::iptables::tests::IPTABLES_SAVE_UFW;
    use super::nft::tests::{nft, NFT_IPTABLES_NFT};
    use super::*;
    use crate::doctor::check::Status;

    /// A hand-written ruleset in the shape of `nft -j list ruleset`: one inet input chain with
    /// `policy` and one rule per `(dport, verdict)`.
    fn simple(policy: &str, rules: &[(u16, &str)]) -> FirewallRules {
        let mut items = vec![
            serde_json::json!({"metainfo": {"version": "1.0.6", "json_schema_version": 1}}),
            serde_json::json!({"table": {"family": "inet", "name": "filter", "handle": 1}}),
            serde_json::json!({"chain": {"family": "inet", "table": "filter", "name": "input", "handle": 1, "type": "filter", "hook": "input", "prio": 0, "policy": policy}}),
        ];
        for (i, (port, verdict)) in rules.iter().enumerate() {
            items.push(serde_json::json!({"rule": {"family": "inet", "table": "filter", "chain": "input", "handle": i + 2, "expr": [
                {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": port}},
                {(*verdict): null}
            ]}}));
        }
        nft(&serde_json::json!({ "nftables": items }).to_string())
    }

    #[test]
    fn empty_ruleset_is_ok_no_host_firewall() {
        let r = nft(
            r#"{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}]}"#,
        );
        let c = relay_port(8388, &r);
        assert_eq!(c.status, Status::Ok, "{c:?}");
        assert!(c.summary.contains("no host firewall"), "{}", c.summary);
        assert_eq!(ssh(&[22], &r).status, Status::Ok);
    }

    #[test]
    fn policy_accept_without_rules_is_ok() {
        let c = relay_port(8388, &simple("accept", &[]));
        assert_eq!(c.status, Status::Ok, "{c:?}");
        assert_eq!(c.evidence["ipv4"], "admitted");
    }

    #[test]
    fn policy_drop_with_port_accepted_is_ok() {
        let r = simple("drop", &[(22, "accept"), (8388, "accept")]);
        let c = relay_port(8388, &r);
        assert_eq!(c.status, Status::Ok, "{c:?}");
        assert_eq!(ssh(&[22], &r).status, Status::Ok);
    }

    #[test]
    fn policy_drop_without_port_fails_with_policy_evidence() {
        let c = relay_port(8388, &simple("drop", &[(22, "accept")]));
        assert_eq!(c.status, Status::Fail, "{c:?}");
        assert!(
            c.cause.contains("policy drop of chain `inet filter input`"),
            "{}",
            c.cause
        );
        assert!(
            c.fix
                .contains("nft insert rule inet filter input tcp dport 8388 accept"),
            "{}",
            c.fix
        );
        assert!(
            c.evidence["ipv4"].as_str().unwrap().contains("policy drop"),
            "{:?}",
            c.evidence
        );
    }

    #[test]
    fn reject_before_accept_fails_naming_the_rule() {
        let c = relay_port(
            8388,
            &simple("accept", &[(8388, "reject"), (8388, "accept")]),
        );
        assert_eq!(c.status, Status::Fail, "{c:?}");
        assert!(c.cause.contains("tcp dport 8388 reject"), "{}", c.cause);
        assert!(c.fix.starts_with("Remove or move the rule"), "{}", c.fix);
    }

    #[test]
    fn iptables_nft_table_replaced_by_iptables_save_is_decided() {
        let mut r = nft(NFT_IPTABLES_NFT);
        r.replace_table(
            "ip",
            "filter",
            parse_iptables_save(IPTABLES_SAVE_UFW, Family::V4),
        );
        assert_eq!(relay_port(443, &r).status, Status::Ok);
        let c = relay_port(8388, &r);
        assert_eq!(c.status, Status::Fail, "{c:?}");
        assert!(c.fix.contains("ufw allow 8388/tcp"), "{}", c.fix);
    }

    #[test]
    fn sshd_on_65222_with_only_22_admitted_fails() {
        let r = simple("drop", &[(22, "accept"), (8388, "accept")]);
        let c = ssh(&[65222], &r);
        assert_eq!(c.status, Status::Fail, "{c:?}");
        assert!(
            c.cause.contains("65222") && c.cause.contains("policy drop"),
            "{}",
            c.cause
        );
        assert!(
            c.fix.contains("tcp dport 65222 accept") && c.fix.contains("second terminal"),
            "{}",
            c.fix
        );
        assert_eq!(c.evidence["sshd_ports"], serde_json::json!([65222]));
    }

    #[test]
    fn sshd_on_two_ports_one_blocked_warns() {
        let r = simple("drop", &[(22, "accept")]);
        let c = ssh(&[22, 65222], &r);
        assert_eq!(c.status, Status::Warn, "{c:?}");
        assert!(c.summary.contains("65222"), "{}", c.summary);
    }

    #[test]
    fn unreadable_ruleset_skips() {
        let r = unreadable("nft -j list ruleset", "Operation not permitted".into());
        assert_eq!(relay_port(8388, &r).status, Status::Skip);
        assert_eq!(ssh(&[22], &r).status, Status::Skip);
    }
}
