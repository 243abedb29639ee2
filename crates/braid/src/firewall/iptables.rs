//! Parsing of the `*filter` table of `iptables-save` / `ip6tables-save` into a [`Table`].
//!
//! Options braid decides become typed matches (`-p`, `--dport(s)`, `--ctstate`, `-i`, `--syn`,
//! `--dst-type`); any other option, with its values, is kept as written and uninterpreted.

use std::collections::HashSet;

use super::model::{BaseChain, Chain, ChainKind, CtState, Family, Hook, Match, Origin, Policy};
use super::model::{PortRange, Protocol, Rule, Table, TableFamily, Verdict, L4};

/// Parses the `*filter` table of `iptables-save` (or `ip6tables-save` with [`Family::V6`]).
/// Lines it does not understand are skipped; it never fails.
pub fn parse_iptables_save(text: &str, family: Family) -> Table {
    let mut table = Table {
        family: match family {
            Family::V4 => TableFamily::Ip,
            Family::V6 => TableFamily::Ip6,
        },
        name: "filter".into(),
        origin: Origin::Iptables,
        has_xt: false,
        chains: Vec::new(),
    };
    let mut in_filter = false;
    for line in text.lines().map(str::trim) {
        if let Some(t) = line.strip_prefix('*') {
            in_filter = t == "filter";
        } else if !in_filter || line.starts_with('#') || line == "COMMIT" {
            continue;
        } else if let Some(decl) = line.strip_prefix(':') {
            let mut it = decl.split_whitespace();
            if let (Some(name), Some(policy)) = (it.next(), it.next()) {
                table.chains.push(declared_chain(name, policy));
            }
        } else if let Some(rest) = line.strip_prefix("-A ") {
            let toks = tokenize(rest);
            let Some((chain, args)) = toks.split_first() else {
                continue;
            };
            let known: HashSet<&str> = table.chains.iter().map(|c| c.name.as_str()).collect();
            let rule = parse_rule(line, args, &known);
            if let Some(c) = table.chains.iter_mut().find(|c| &c.name == chain) {
                c.rules.push(rule);
            }
        }
    }
    table
}

/// `:INPUT DROP [0:0]` (a built-in chain with its policy) or `:ufw-user-input - [0:0]`.
fn declared_chain(name: &str, policy: &str) -> Chain {
    let hook = match name {
        "INPUT" => Some(Hook::Input),
        "FORWARD" => Some(Hook::Forward),
        "OUTPUT" => Some(Hook::Output),
        _ => None,
    };
    Chain {
        name: name.into(),
        base: hook.map(|hook| BaseChain {
            kind: ChainKind::Filter,
            hook,
            priority: 0,
            policy: if policy == "DROP" {
                Policy::Drop
            } else {
                Policy::Accept
            },
        }),
        rules: Vec::new(),
    }
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

/// One `-A CHAIN …` line's options after the chain name.
fn parse_rule(line: &str, args: &[String], chains: &HashSet<&str>) -> Rule {
    let mut rule = RuleParser {
        matches: Vec::new(),
        l4: None,
    };
    let mut verdict = Verdict::Continue;
    let mut negate = false;
    let mut i = 0;
    while i < args.len() {
        let opt = args[i].as_str();
        let val = args.get(i + 1).map(String::as_str).unwrap_or("");
        match opt {
            "!" => {
                negate = true;
                i += 1;
                continue;
            }
            "-j" | "--jump" | "-g" | "--goto" => {
                verdict = target(val, opt.contains('g'), chains);
                // Everything after the target is the target's own options.
                break;
            }
            _ => i += rule.option(opt, val, negate, &args[i + 1..]),
        }
        negate = false;
    }
    Rule {
        matches: rule.matches,
        verdict,
        text: line.to_string(),
    }
}

/// The matches of one rule, option by option.
struct RuleParser {
    matches: Vec<Match>,
    /// The transport named by `-p`, which `--dport` belongs to.
    l4: Option<L4>,
}

impl RuleParser {
    /// Adds the match of option `opt` (with its value `val`, negated by a preceding `!`) and
    /// returns how many words it took, itself included; `rest` is what follows it.
    fn option(&mut self, opt: &str, val: &str, negate: bool, rest: &[String]) -> usize {
        let written = || format!("{}{opt} {val}", if negate { "! " } else { "" });
        let m = match opt {
            "-p" | "--protocol" if matches!(val, "all" | "0") => negate.then(|| Match::Fixed {
                holds: false,
                text: written(),
            }),
            "-p" | "--protocol" => {
                let p = Protocol::parse(val);
                if let (Protocol::L4(t), false) = (&p, negate) {
                    self.l4 = Some(*t);
                }
                Some(Match::Protocol {
                    any_of: vec![p],
                    negate,
                })
            }
            "-i" | "--in-interface" => Some(Match::Iifname {
                any_of: vec![val.to_string()],
                negate,
            }),
            "-s" | "--source" | "-d" | "--destination" if matches!(val, "0.0.0.0/0" | "::/0") => {
                negate.then(|| Match::Fixed {
                    holds: false,
                    text: written(),
                })
            }
            "-m" | "--match" | "--comment" => None,
            "--dport" | "--destination-port" | "--dports" | "--destination-ports" => {
                Some(match ports(val) {
                    Some(ports) => Match::Dport {
                        proto: self.l4,
                        ports,
                        negate,
                    },
                    None => Match::Uninterpreted(written()),
                })
            }
            "--ctstate" | "--state" => {
                let states: Option<Vec<CtState>> = val.split(',').map(CtState::parse).collect();
                Some(match states {
                    Some(any_of) => Match::CtState { any_of, negate },
                    None => Match::Uninterpreted(written()),
                })
            }
            "--syn" => {
                self.matches.push(Match::TcpSyn { negate });
                return 1;
            }
            // `-m addrtype`: a packet from the internet to this host is addressed to a LOCAL
            // (unicast) address, never a BROADCAST or MULTICAST one.
            "--dst-type" => Some(Match::Fixed {
                holds: val.split(',').any(|t| t == "LOCAL") != negate,
                text: written(),
            }),
            // `-m rt --rt-type 0`: a new connection carries no type 0 routing header (deprecated
            // by RFC 5095 and dropped by Linux anyway).
            "--rt-type" if val == "0" => Some(Match::Fixed {
                holds: negate,
                text: written(),
            }),
            "-4" | "-6" => return 1,
            _ => {
                // An option braid does not interpret, with its values: keep it as written.
                let values = (rest.iter())
                    .take_while(|w| !w.starts_with('-') && *w != "!")
                    .cloned();
                let words: Vec<String> = std::iter::once(opt.to_string()).chain(values).collect();
                let neg = if negate { "! " } else { "" };
                let taken = words.len();
                self.matches
                    .push(Match::Uninterpreted(format!("{neg}{}", words.join(" "))));
                return taken;
            }
        };
        self.matches.extend(m);
        2
    }
}

/// The verdict of `-j TARGET` (or `-g CHAIN` when `goto`).
fn target(name: &str, goto: bool, chains: &HashSet<&str>) -> Verdict {
    match name {
        "ACCEPT" => Verdict::Accept,
        "DROP" => Verdict::Drop,
        "REJECT" => Verdict::Reject,
        "RETURN" => Verdict::Return,
        c if chains.contains(c) && goto => Verdict::Goto(c.into()),
        c if chains.contains(c) => Verdict::Jump(c.into()),
        t if NON_TERMINAL_TARGETS.contains(&t) => Verdict::Continue,
        t => Verdict::Uninterpreted(format!("target {t}")),
    }
}

/// `22`, `1000:2000`, `1000:`, `80,443`.
fn ports(s: &str) -> Option<Vec<PortRange>> {
    s.split(',')
        .map(|p| match p.split_once(':') {
            Some((lo, hi)) => Some(PortRange {
                first: if lo.is_empty() { 0 } else { lo.parse().ok()? },
                last: if hi.is_empty() {
                    u16::MAX
                } else {
                    hi.parse().ok()?
                },
            }),
            None => p.parse().ok().map(PortRange::one),
        })
        .collect()
}

/// iptables targets that do not end the rule walk (also seen as nft `xt` targets).
pub(super) const NON_TERMINAL_TARGETS: &[&str] = &[
    "LOG", "NFLOG", "ULOG", "MARK", "CONNMARK", "CT", "TCPMSS", "NOTRACK", "AUDIT", "TRACE",
    "CLASSIFY", "DSCP", "TOS", "SET", "TEE", "CHECKSUM", "NFACCT",
];

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::firewall::eval::{admits, Admission, Probe};
    use crate::firewall::model::Ruleset;

    /// A hand-written ufw-like `iptables-save` (the shape of `fixtures/ufw-like.nft.json`).
    pub(crate) const IPTABLES_SAVE_UFW: &str = include_str!("fixtures/ufw-like.iptables-save");

    pub(crate) fn ruleset(tables: Vec<Table>) -> Ruleset {
        Ruleset {
            source: "iptables-save".into(),
            tables,
            ..Ruleset::default()
        }
    }

    #[test]
    fn ufw_iptables_save_follows_jumps() {
        let r = ruleset(vec![parse_iptables_save(IPTABLES_SAVE_UFW, Family::V4)]);
        for port in [22, 80, 443, 2000, 2010] {
            assert_eq!(
                admits(&r, Probe::tcp(port, Family::V4)),
                Admission::Admitted,
                "port {port}"
            );
        }
        let a = admits(&r, Probe::tcp(23, Family::V4));
        assert!(
            matches!(&a, Admission::Blocked { by, .. } if by.contains("--dport 23 -j REJECT")),
            "{a:?}"
        );
        let a = admits(&r, Probe::tcp(8388, Family::V4));
        assert!(
            matches!(&a, Admission::Blocked { by, chain } if by.contains("policy drop") && chain.to_string() == "ip filter INPUT"),
            "{a:?}"
        );
        assert!(matches!(
            admits(&r, Probe::tcp(3306, Family::V4)),
            Admission::Unsure { .. }
        ));
        // The table only holds IPv4: IPv6 is unfiltered.
        assert_eq!(
            admits(&r, Probe::tcp(8388, Family::V6)),
            Admission::Admitted
        );
        // Only TCP ports are open: UDP meets the policy drop.
        assert!(matches!(
            admits(&r, Probe::udp(443, Family::V4)),
            Admission::Blocked { .. }
        ));
    }

    #[test]
    fn iptables_negations_and_syn_are_honoured() {
        let text = "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT ! -i lo -p tcp ! --dport 22 --syn -j DROP\n-A INPUT -p udp --dport 8388 -j DROP\nCOMMIT\n";
        let r = ruleset(vec![parse_iptables_save(text, Family::V4)]);
        assert_eq!(admits(&r, Probe::tcp(22, Family::V4)), Admission::Admitted);
        assert!(
            matches!(admits(&r, Probe::tcp(8388, Family::V4)), Admission::Blocked { by, .. } if by.contains("--syn -j DROP"))
        );
        assert!(
            matches!(admits(&r, Probe::udp(8388, Family::V4)), Admission::Blocked { by, .. } if by.contains("-p udp --dport 8388 -j DROP"))
        );
        assert_eq!(admits(&r, Probe::udp(53, Family::V4)), Admission::Admitted);
        assert_eq!(
            tokenize(r#"-m comment --comment "a \"b\" c" -j X"#),
            ["-m", "comment", "--comment", "a \"b\" c", "-j", "X"]
        );
    }

    /// Every word of the ufw-like rules replaced, one at a time, by words of the wrong shape:
    /// parsing and judging never panic.
    #[test]
    fn mutated_iptables_save_never_panics() {
        let text = IPTABLES_SAVE_UFW;
        let words: Vec<&str> = text.split(' ').collect();
        for i in 0..words.len() {
            for w in ["!", "-j", "", "65536", ":", "1:", ",", "\"", "-A"] {
                let mut mutated = words.clone();
                mutated[i] = w;
                let r = ruleset(vec![parse_iptables_save(&mutated.join(" "), Family::V4)]);
                let _ = admits(&r, Probe::tcp(22, Family::V4));
            }
        }
    }

    /// ufw 0.36.2 (Debian 12), enabled in a throwaway namespace with iptables-nft 1.8.9 and
    /// `ufw allow 22/tcp`, `allow 443`, `deny 23/tcp`,
    /// `allow from 10.0.0.0/8 to any port 3306 proto tcp`, `limit 2222/tcp`,
    /// `allow 60000:60010/udp`, `allow 80,8080/tcp`; then `iptables-save`, `ip6tables-save`.
    pub(crate) fn real_ufw() -> Ruleset {
        ruleset(vec![
            parse_iptables_save(include_str!("fixtures/ufw.iptables-save"), Family::V4),
            parse_iptables_save(include_str!("fixtures/ufw.ip6tables-save"), Family::V6),
        ])
    }

    #[test]
    fn real_ufw_rules_are_decided_for_tcp_and_udp_over_both_families() {
        let r = real_ufw();
        for family in [Family::V4, Family::V6] {
            for probe in [
                Probe::tcp(22, family),
                Probe::tcp(443, family),
                Probe::udp(443, family),
                Probe::tcp(8080, family),
                Probe::udp(60005, family),
            ] {
                assert_eq!(admits(&r, probe), Admission::Admitted, "{probe:?}");
            }
            for probe in [
                Probe::tcp(23, family),
                Probe::tcp(8388, family),
                Probe::udp(8388, family),
                Probe::tcp(60005, family),
            ] {
                let a = admits(&r, probe);
                assert!(matches!(a, Admission::Blocked { .. }), "{probe:?}: {a:?}");
            }
        }
        // `ufw limit` depends on the `recent` module: braid cannot tell.
        let a = admits(&r, Probe::tcp(2222, Family::V4));
        assert!(
            matches!(&a, Admission::Unsure { doubts, .. } if doubts[0].contains("recent")),
            "{a:?}"
        );
        // In this capture the IPv6 limit chains lack the REJECT and ACCEPT rules ufw meant to
        // add (ip6tables did not take them on this kernel): 2222 falls through to the policy.
        assert!(matches!(
            admits(&r, Probe::tcp(2222, Family::V6)),
            Admission::Blocked { .. }
        ));
        let a = admits(&r, Probe::tcp(8388, Family::V4));
        assert!(
            matches!(&a, Admission::Blocked { by, .. } if by == "the policy drop of chain `ip filter INPUT`"),
            "{a:?}"
        );
        // Only IPv4 allows 3306 from 10.0.0.0/8.
        assert!(matches!(
            admits(&r, Probe::tcp(3306, Family::V4)),
            Admission::Unsure { .. }
        ));
        assert!(matches!(
            admits(&r, Probe::tcp(3306, Family::V6)),
            Admission::Blocked { .. }
        ));
    }
}
