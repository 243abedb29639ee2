//! Parsing of the `*filter` table of `iptables-save` / `ip6tables-save` text into
//! [`FirewallRules`].

use std::collections::HashSet;

use super::{Action, Chain, Cond, Family, FirewallRules, Rule};

/// Parses the `*filter` table of `iptables-save` (or `ip6tables-save` with [`Family::V6`]).
pub fn parse_iptables_save(text: &str, fam: Family) -> FirewallRules {
    let family = if fam == Family::V4 { "ip" } else { "ip6" };
    let source = if fam == Family::V4 {
        "iptables-save"
    } else {
        "ip6tables-save"
    };
    let mut rules = FirewallRules {
        source: source.into(),
        ..FirewallRules::default()
    };
    let mut in_filter = false;
    for line in text.lines().map(str::trim) {
        if let Some(t) = line.strip_prefix('*') {
            in_filter = t == "filter";
        } else if !in_filter || line.starts_with('#') || line == "COMMIT" {
            continue;
        } else if let Some(decl) = line.strip_prefix(':') {
            let mut it = decl.split_whitespace();
            let (Some(name), Some(policy)) = (it.next(), it.next()) else {
                continue;
            };
            let hook = match name {
                "INPUT" | "FORWARD" | "OUTPUT" => Some(name.to_ascii_lowercase()),
                _ => None,
            };
            rules.chains.push(Chain {
                family: family.into(),
                table: "filter".into(),
                name: name.into(),
                kind: if hook.is_some() {
                    "filter".into()
                } else {
                    String::new()
                },
                hook,
                policy_drop: policy == "DROP",
                rules: Vec::new(),
            });
        } else if let Some(rest) = line.strip_prefix("-A ") {
            let toks = tokenize(rest);
            let Some((chain, args)) = toks.split_first() else {
                continue;
            };
            let known: HashSet<String> = rules.chains.iter().map(|c| c.name.clone()).collect();
            let rule = parse_iptables_rule(line, args, &known);
            if let Some(c) = rules.chains.iter_mut().find(|c| &c.name == chain) {
                c.rules.push(rule);
            }
        }
    }
    rules
}

/// Splits on whitespace, keeping double-quoted words (with `\"` escapes) whole.
fn tokenize(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let (mut quoted, mut in_word, mut chars) = (false, false, s.chars());
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            '\\' if quoted => cur.extend(chars.next()),
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                }
                in_word = false;
            }
            c => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    out
}

fn parse_iptables_rule(line: &str, args: &[String], chains: &HashSet<String>) -> Rule {
    let mut conds = Vec::new();
    let mut action = Action::Continue;
    let mut negate = false;
    let mut i = 0;
    while i < args.len() {
        let opt = args[i].as_str();
        let val = args.get(i + 1).map(String::as_str).unwrap_or("");
        i += 2;
        match opt {
            "!" => {
                negate = true;
                i -= 1;
                continue;
            }
            "-p" | "--protocol" => match val {
                "all" | "0" => conds.extend(negate.then_some(Cond::Const(false))),
                v => conds.push(Cond::Const((v == "tcp" || v == "6") != negate)),
            },
            "-i" | "--in-interface" if val == "lo" => conds.push(Cond::Const(negate)),
            "-s" | "--source" | "-d" | "--destination" if matches!(val, "0.0.0.0/0" | "::/0") => {
                conds.extend(negate.then_some(Cond::Const(false)))
            }
            "-m" | "--match" | "--comment" => {}
            "--dport" | "--destination-port" | "--dports" | "--destination-ports" => {
                match iptables_ports(val) {
                    Some(ranges) => conds.push(Cond::Dport { ranges, negate }),
                    None => conds.push(Cond::Unknown(format!(
                        "{}{opt} {val}",
                        if negate { "! " } else { "" }
                    ))),
                }
            }
            "--ctstate" | "--state" => {
                conds.push(Cond::Const(val.split(',').any(|s| s == "NEW") != negate))
            }
            "--syn" => {
                conds.push(Cond::Const(!negate));
                i -= 1;
            }
            "-j" | "--jump" | "-g" | "--goto" => {
                action = match val {
                    "ACCEPT" => Action::Accept,
                    "DROP" => Action::Drop,
                    "REJECT" => Action::Reject,
                    "RETURN" => Action::Return,
                    c if chains.contains(c) && opt.contains('g') => Action::Goto(c.into()),
                    c if chains.contains(c) => Action::Jump(c.into()),
                    t if NON_TERMINAL_TARGETS.contains(&t) => Action::Continue,
                    t => Action::Unknown(format!("target {t}")),
                };
                // Everything after the target is the target's own options.
                break;
            }
            "-4" | "-6" => i -= 1,
            _ => {
                // An option we do not interpret, with its values: keep it as written.
                i -= 1;
                let mut words = vec![opt.to_string()];
                while i < args.len() && !args[i].starts_with('-') && args[i] != "!" {
                    words.push(args[i].clone());
                    i += 1;
                }
                conds.push(Cond::Unknown(format!(
                    "{}{}",
                    if negate { "! " } else { "" },
                    words.join(" ")
                )));
            }
        }
        negate = false;
    }
    Rule {
        text: line.to_string(),
        conds,
        action,
    }
}

/// `22`, `1000:2000`, `1000:`, `80,443`.
fn iptables_ports(s: &str) -> Option<Vec<(u16, u16)>> {
    s.split(',')
        .map(|p| match p.split_once(':') {
            Some((lo, hi)) => Some((
                if lo.is_empty() { 0 } else { lo.parse().ok()? },
                if hi.is_empty() {
                    u16::MAX
                } else {
                    hi.parse().ok()?
                },
            )),
            None => p.parse().ok().map(|n| (n, n)),
        })
        .collect()
}

/// iptables targets that do not end the rule walk (also seen as nft `xt` targets).
pub(super) const NON_TERMINAL_TARGETS: &[&str] = &[
    "LOG", "NFLOG", "ULOG", "MARK", "CONNMARK", "CT", "TCPMSS", "NOTRACK", "AUDIT", "TRACE",
    "CLASSIFY", "DSCP", "TOS", "SET", "TEE", "CHECKSUM", "NFACCT",
];

#[cfg(test)]
pub(super) mod tests {
    use super::super::{admits, Admission};
    use super::*;

    /// `iptables-save` of the same ruleset.
    pub(crate) const IPTABLES_SAVE_UFW: &str = r#"# Generated by iptables-save v1.8.9 (nf_tables) on Mon Nov 23 08:54:40 2026
*filter
:INPUT DROP [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:ufw-before-input - [0:0]
:ufw-user-input - [0:0]
-A INPUT -j ufw-before-input
-A ufw-before-input -i lo -j ACCEPT
-A ufw-before-input -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A ufw-before-input -j ufw-user-input
-A ufw-user-input -p tcp -m tcp --dport 22 -j ACCEPT
-A ufw-user-input -p tcp -m multiport --dports 80,443 -j ACCEPT
-A ufw-user-input -p tcp -m tcp --dport 23 -j REJECT --reject-with tcp-reset
-A ufw-user-input -s 10.0.0.0/8 -p tcp -m tcp --dport 3306 -j ACCEPT
-A ufw-user-input -p tcp -m tcp --dport 2000:2010 -m comment --comment "my \"range\"" -j ACCEPT
COMMIT
# Completed on Mon Nov 23 08:54:40 2026
"#;

    #[test]
    fn ufw_iptables_save_follows_jumps() {
        let r = parse_iptables_save(IPTABLES_SAVE_UFW, Family::V4);
        for port in [22, 80, 443, 2000, 2010] {
            assert_eq!(
                admits(&r, port, Family::V4),
                Admission::Admitted,
                "port {port}"
            );
        }
        let a = admits(&r, 23, Family::V4);
        assert!(
            matches!(&a, Admission::Blocked { by, .. } if by.contains("--dport 23 -j REJECT")),
            "{a:?}"
        );
        let a = admits(&r, 8388, Family::V4);
        assert!(
            matches!(&a, Admission::Blocked { by, chain } if by.contains("policy drop") && chain == "ip filter INPUT"),
            "{a:?}"
        );
        assert!(matches!(
            admits(&r, 3306, Family::V4),
            Admission::Unsure { .. }
        ));
        // The table only holds IPv4: IPv6 is unfiltered.
        assert_eq!(admits(&r, 8388, Family::V6), Admission::Admitted);
    }

    #[test]
    fn iptables_negations_and_syn_are_honoured() {
        let text = "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT ! -i lo -p tcp ! --dport 22 --syn -j DROP\n-A INPUT -p udp --dport 8388 -j DROP\nCOMMIT\n";
        let r = parse_iptables_save(text, Family::V4);
        assert_eq!(admits(&r, 22, Family::V4), Admission::Admitted);
        assert!(
            matches!(admits(&r, 8388, Family::V4), Admission::Blocked { by, .. } if by.contains("--syn -j DROP"))
        );
        assert_eq!(
            tokenize(r#"-m comment --comment "a \"b\" c" -j X"#),
            ["-m", "comment", "--comment", "a \"b\" c", "-j", "X"]
        );
    }
}
