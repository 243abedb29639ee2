//! The checks `firewall.relay_port` and `firewall.ssh`: the judgement of
//! [`crate::firewall::admits`] for new TCP connections, with the cause and the fix in the
//! words of the tool that manages the firewall (ufw, firewalld, iptables or nft).

use crate::doctor::check::Check;
use crate::firewall::model::{ChainId, TableFamily};
use crate::firewall::{admits, Admission, Family, GatherError, Manager, Probe, Ruleset};

/// `firewall.relay_port`: the host firewall admits new TCP connections to the relay's port.
pub fn relay_port(port: u16, gathered: &Result<Ruleset, GatherError>) -> Check {
    const ID: &str = "firewall.relay_port";
    let rules = match gathered {
        Ok(rules) => rules,
        Err(e) => return unreadable(ID, e),
    };
    if let Some(c) = no_firewall(ID, rules) {
        return c;
    }
    let (v4, v6) = (
        admits(rules, Probe::tcp(port, Family::V4)),
        admits(rules, Probe::tcp(port, Family::V6)),
    );
    let cloud = format!("Also open TCP {port} in the provider's cloud firewall or security group, which this check cannot see.");
    let c = match &v4 {
        Admission::Admitted => Check::ok(ID, format!("the host firewall admits new TCP connections to the relay port {port}{}", v6_note(&v6))),
        Admission::Blocked { by, chain } => Check::fail(
            ID,
            format!("the host firewall drops new TCP connections to the relay port {port}"),
            format!("New TCP connections to port {port} are dropped by {by}, so no gateway can reach the relay: every connection attempt times out or is refused."),
            format!("{} {cloud}", admit_fix(rules, chain, &[port], by, "tcp")),
        ),
        Admission::Unsure { otherwise, doubts } => Check::warn(
            ID,
            format!("cannot tell whether the host firewall admits the relay port {port}"),
            format!("New TCP connections to port {port} are {otherwise}, but the outcome depends on rules braid cannot interpret: {}.", doubts.join("; ")),
            format!("Read those rules and make sure TCP port {port} is accepted from the gateways' addresses (e.g. `nft insert rule inet filter input tcp dport {port} accept`). {cloud}"),
        ),
    };
    c.with("ipv4", v4.describe())
        .with("ipv6", v6.describe())
        .with("source", rules.source.as_str())
        .with("input_chains", input_chain_list(rules))
        .with("notes", rules.notes.clone())
}

/// `firewall.relay_udp`: the host firewall admits UDP to the relay's port (the Shadowsocks-2022
/// UDP relay) and to the tunnel's port. Dropped UDP is a warning, not a failure: TCP still
/// bonds, LAN UDP falls back to riding inside TCP, but uplinks that strip MPTCP get no tunnel.
pub fn relay_udp(ports: &[(u16, &str)], gathered: &Result<Ruleset, GatherError>) -> Check {
    const ID: &str = "firewall.relay_udp";
    if ports.is_empty() {
        return Check::skip(ID, "skipped: neither the UDP relay nor the tunnel is on");
    }
    let rules = match gathered {
        Ok(rules) => rules,
        Err(e) => return unreadable(ID, e),
    };
    if let Some(c) = no_firewall(ID, rules) {
        return c;
    }
    let judged: Vec<(u16, &str, Admission)> = ports
        .iter()
        .map(|&(p, what)| (p, what, admits(rules, Probe::udp(p, Family::V4))))
        .collect();
    let list = |f: &dyn Fn(&Admission) -> bool| -> Vec<u16> {
        judged.iter().filter(|j| f(&j.2)).map(|j| j.0).collect()
    };
    let blocked = list(&|a| matches!(a, Admission::Blocked { .. }));
    let cloud = "Also open them in the provider's cloud firewall or security group, which this check cannot see.";
    let c = if let Some((_, _, Admission::Blocked { by, chain })) = judged
        .iter()
        .find(|j| matches!(j.2, Admission::Blocked { .. }))
    {
        let what: Vec<String> = judged
            .iter()
            .filter(|j| blocked.contains(&j.0))
            .map(|j| format!("{} ({})", j.0, j.1))
            .collect();
        Check::warn(
            ID,
            format!("the host firewall drops UDP to {}", what.join(" and ")),
            format!("UDP to {} is dropped by {by}: LAN UDP (QUIC, DNS, calls) rides inside TCP instead, slower under loss, and an uplink whose middlebox strips MPTCP cannot use the tunnel.", what.join(" and ")),
            format!("{} {cloud}", admit_fix(rules, chain, &blocked, by, "udp")),
        )
    } else if let Some((p, _, Admission::Unsure { otherwise, doubts })) = judged
        .iter()
        .find(|j| matches!(j.2, Admission::Unsure { .. }))
    {
        Check::warn(
            ID,
            format!("cannot tell whether the host firewall admits UDP port {p}"),
            format!("UDP to port {p} is {otherwise}, but the outcome depends on rules braid cannot interpret: {}.", doubts.join("; ")),
            format!("Read those rules and make sure UDP port {p} is accepted (e.g. `nft insert rule inet filter input udp dport {p} accept`). {cloud}"),
        )
    } else {
        let what: Vec<String> = judged
            .iter()
            .map(|j| format!("{} ({})", j.0, j.1))
            .collect();
        Check::ok(
            ID,
            format!("the host firewall admits UDP to {}", what.join(" and ")),
        )
    };
    c.with(
        "ports",
        judged
            .iter()
            .map(|j| format!("{}/udp {}: {}", j.0, j.1, j.2.describe()))
            .collect::<Vec<_>>(),
    )
    .with("source", rules.source.as_str())
}

/// `firewall.ssh`: the host firewall admits the port(s) sshd listens on, so that enabling it
/// cannot lock the user out.
pub fn ssh(ports: &[u16], gathered: &Result<Ruleset, GatherError>) -> Check {
    const ID: &str = "firewall.ssh";
    if ports.is_empty() {
        return Check::skip(
            ID,
            "skipped: no sshd port was found (no sshd_config and no listening sshd)",
        );
    }
    let rules = match gathered {
        Ok(rules) => rules,
        Err(e) => return unreadable(ID, e).with("sshd_ports", ports.to_vec()),
    };
    if let Some(c) = no_firewall(ID, rules) {
        return c.with("sshd_ports", ports.to_vec());
    }
    let judged: Vec<(u16, Admission)> = (ports.iter())
        .map(|&p| (p, admits(rules, Probe::tcp(p, Family::V4))))
        .collect();
    let mut c = ssh_verdict(rules, ports, &judged).with("sshd_ports", ports.to_vec());
    for (p, a) in &judged {
        c = c.with(&format!("port_{p}"), a.describe());
    }
    c.with("source", rules.source.as_str())
        .with("input_chains", input_chain_list(rules))
        .with("notes", rules.notes.clone())
}

/// The verdict of `firewall.ssh` from each port's admission.
fn ssh_verdict(rules: &Ruleset, ports: &[u16], judged: &[(u16, Admission)]) -> Check {
    const ID: &str = "firewall.ssh";
    let admitted: Vec<u16> = (judged.iter())
        .filter(|(_, a)| *a == Admission::Admitted)
        .map(|(p, _)| *p)
        .collect();
    let blocked: Vec<(u16, &str, &ChainId)> = (judged.iter())
        .filter_map(|(p, a)| match a {
            Admission::Blocked { by, chain } => Some((*p, by.as_str(), chain)),
            _ => None,
        })
        .collect();
    let unsure: Vec<String> = (judged.iter())
        .filter(|(_, a)| matches!(a, Admission::Unsure { .. }))
        .map(|(p, a)| format!("port {p}: {}", a.describe()))
        .collect();
    let blocked_ports: Vec<u16> = blocked.iter().map(|b| b.0).collect();
    let keep = "Keep your current session open and test a new login from a second terminal before you log out.";
    if admitted.len() == ports.len() {
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
            format!("{} {keep}", admit_fix(rules, chain, &blocked_ports, by, "tcp")),
        )
    } else if let Some(&(_, by, chain)) = blocked.first() {
        Check::warn(
            ID,
            format!("the host firewall drops sshd's port(s) {} (admitted: {})", list(&blocked_ports), if admitted.is_empty() { "none".into() } else { list(&admitted) }),
            format!("sshd also listens on port(s) {}, but new connections to them are dropped by {by}; logins work only on the other port(s).", list(&blocked_ports)),
            format!("{} Or remove the unused Port lines from /etc/ssh/sshd_config. {keep}", admit_fix(rules, chain, &blocked_ports, by, "tcp")),
        )
    } else {
        Check::warn(
            ID,
            "cannot tell whether the host firewall admits sshd's port(s)",
            format!("The outcome depends on rules braid cannot interpret: {}.", unsure.join("; ")),
            format!("Read those rules and make sure TCP port(s) {} are accepted from the addresses you log in from. {keep}", list(ports)),
        )
    }
}

fn list(ports: &[u16]) -> String {
    ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The skip common to both checks when the firewall could not be read.
fn unreadable(id: &str, e: &GatherError) -> Check {
    Check::skip(id, format!("cannot read the host firewall: {e}")).with("source", e.command())
}

/// The ok common to both checks when no filter chain is hooked at input.
fn no_firewall(id: &str, rules: &Ruleset) -> Option<Check> {
    let none = rules.input_chains(Family::V4).next().is_none()
        && rules.input_chains(Family::V6).next().is_none();
    none.then(|| {
        Check::ok(id, "no host firewall: no filter chain is hooked at input")
            .with("source", rules.source.as_str())
            .with("notes", rules.notes.clone())
    })
}

fn v6_note(v6: &Admission) -> String {
    match v6 {
        Admission::Admitted => String::new(),
        other => format!(" over IPv4 (over IPv6 it is {})", other.describe()),
    }
}

fn input_chain_list(rules: &Ruleset) -> Vec<String> {
    (rules.tables.iter())
        .flat_map(|t| t.chains.iter().map(move |c| (t, c)))
        .filter(|(_, c)| c.is_input_filter())
        .map(|(t, c)| {
            format!(
                "{} (policy {}, {} rules)",
                t.id(c),
                if c.policy_drops() { "drop" } else { "accept" },
                c.rules.len()
            )
        })
        .collect()
}

/// How to admit `ports` in the tool that manages `chain`.
fn admit_fix(rules: &Ruleset, chain: &ChainId, ports: &[u16], by: &str, l4: &str) -> String {
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
    let cmd = match rules.manager(chain) {
        Manager::Ufw => ports
            .iter()
            .map(|p| format!("`ufw allow {p}/{l4}`"))
            .collect::<Vec<_>>()
            .join(" and "),
        // A brace list only expands with a comma in it.
        Manager::Firewalld if ports.len() == 1 => {
            format!("`firewall-cmd --permanent --add-port={csv}/{l4} && firewall-cmd --reload`")
        }
        Manager::Firewalld => {
            format!("`firewall-cmd --permanent --add-port={{{csv}}}/{l4} && firewall-cmd --reload`")
        }
        Manager::Iptables => {
            let tool = if chain.family == TableFamily::Ip6 {
                "ip6tables"
            } else {
                "iptables"
            };
            format!("`{tool} -I INPUT -p {l4} -m multiport --dports {csv} -j ACCEPT`, then persist it (`netfilter-persistent save`)")
        }
        Manager::Nft => {
            let set = if ports.len() == 1 {
                csv
            } else {
                format!("{{ {} }}", csv.replace(',', ", "))
            };
            format!("`nft insert rule {chain} {l4} dport {set} accept`, then add the same rule to /etc/nftables.conf so that it survives a reboot")
        }
    };
    format!("{first}{cmd}.")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::check::Status;
    use crate::firewall::iptables::parse_iptables_save;
    use crate::firewall::iptables::tests::IPTABLES_SAVE_UFW;
    use crate::firewall::nft::tests::{nft, NFT_UFW_LIKE};

    /// A hand-written ruleset in the shape of `nft -j list ruleset`: one inet input chain with
    /// `policy` and one rule per `(dport, verdict)`.
    fn simple(policy: &str, rules: &[(u16, &str)]) -> Result<Ruleset, GatherError> {
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
        Ok(nft(&serde_json::json!({ "nftables": items }).to_string()))
    }

    #[test]
    fn empty_ruleset_is_ok_no_host_firewall() {
        let r = Ok(nft(
            r#"{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}]}"#,
        ));
        let c = relay_port(8388, &r);
        assert_eq!(c.status, Status::Ok, "{c:?}");
        assert!(c.summary.contains("no host firewall"), "{}", c.summary);
        assert_eq!(ssh(&[22], &r).status, Status::Ok);
    }

    #[test]
    fn dropped_udp_warns_naming_both_ports_and_the_udp_fix() {
        let ports = [(8388, "the UDP relay"), (8389, "the tunnel")];
        // The hand-written rules match TCP only: a policy drop drops both UDP ports.
        let c = relay_udp(
            &ports,
            &simple("drop", &[(8388, "accept"), (8389, "accept")]),
        );
        assert_eq!(c.status, Status::Warn, "{c:?}");
        assert!(
            c.summary
                .contains("8388 (the UDP relay) and 8389 (the tunnel)"),
            "{}",
            c.summary
        );
        assert!(
            c.fix
                .contains("nft insert rule inet filter input udp dport { 8388, 8389 } accept"),
            "{}",
            c.fix
        );
        let c = relay_udp(&ports, &simple("accept", &[]));
        assert_eq!(c.status, Status::Ok, "{c:?}");
        assert_eq!(relay_udp(&[], &simple("drop", &[])).status, Status::Skip);
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
        let mut r = nft(NFT_UFW_LIKE);
        r.replace_table(
            &TableFamily::Ip,
            "filter",
            vec![parse_iptables_save(IPTABLES_SAVE_UFW, Family::V4)],
        );
        let r = Ok(r);
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
        let r = Err(GatherError::Failed {
            command: "nft -j list ruleset".into(),
            status: "exit status: 1".into(),
            stderr: "Operation not permitted".into(),
        });
        let c = relay_port(8388, &r);
        assert_eq!(c.status, Status::Skip);
        assert!(
            c.summary.contains("Operation not permitted") && c.summary.contains("fix: run as root"),
            "{}",
            c.summary
        );
        assert_eq!(c.evidence["source"], "nft -j list ruleset");
        assert_eq!(ssh(&[22], &r).status, Status::Skip);
    }

    #[test]
    fn real_firewalld_blocks_the_relay_port_and_names_firewall_cmd() {
        let r = Ok(nft(crate::firewall::nft::tests::FIREWALLD));
        let c = relay_port(8388, &r);
        assert_eq!(c.status, Status::Fail, "{c:?}");
        assert!(
            c.cause.contains("reject with icmpx admin-prohibited"),
            "{}",
            c.cause
        );
        assert!(
            c.fix.contains(
                "`firewall-cmd --permanent --add-port=8388/tcp && firewall-cmd --reload`"
            ),
            "{}",
            c.fix
        );
        assert_eq!(ssh(&[22], &r).status, Status::Ok);
        let c = ssh(&[22, 2222], &r);
        assert_eq!(c.status, Status::Warn, "{c:?}");
    }

    #[test]
    fn real_ufw_fix_names_ufw_for_each_port() {
        let r = Ok(crate::firewall::iptables::tests::real_ufw());
        let c = ssh(&[8388, 8389], &r);
        assert_eq!(c.status, Status::Fail, "{c:?}");
        assert!(
            c.fix
                .contains("`ufw allow 8388/tcp` and `ufw allow 8389/tcp`"),
            "{}",
            c.fix
        );
        assert_eq!(relay_port(22, &r).status, Status::Ok);
    }
}
