//! The rule model every parser produces (chains of rules, each a list of conditions and an
//! action) and its evaluation: does a new TCP SYN to a port, from the internet, get through
//! the input chains?

use super::FirewallRules;

/// An IP family of the packet being judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

/// One condition of a rule, reduced to what matters for a new TCP SYN from the internet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cond {
    /// TCP destination port in one of the inclusive ranges (not in them, when negated).
    Dport {
        /// Inclusive port ranges.
        ranges: Vec<(u16, u16)>,
        /// `!=` / `! --dport`.
        negate: bool,
    },
    /// Matches only packets of this family (`ip saddr …`, `meta nfproto ipv6`).
    Family(Family),
    /// Decided when parsed: `ct state established` is false, `iifname "lo"` is false,
    /// `meta l4proto tcp` is true, `udp dport 53` is false.
    Const(bool),
    /// A condition this parser does not decide, as written in the rule.
    Unknown(String),
}

/// What a rule does when it matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `accept`.
    Accept,
    /// `drop`.
    Drop,
    /// `reject`.
    Reject,
    /// `jump CHAIN`: come back if it has no verdict.
    Jump(String),
    /// `goto CHAIN`: do not come back.
    Goto(String),
    /// `return`.
    Return,
    /// No verdict (`counter`, `log`): go on with the next rule.
    Continue,
    /// A verdict this parser does not know (`queue`, an unknown target).
    Unknown(String),
}

/// One rule: its conditions (all must hold) and its action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The rule as the user would recognise it, for evidence.
    pub text: String,
    /// Conditions, all of which must hold.
    pub conds: Vec<Cond>,
    /// Its action.
    pub action: Action,
}

/// One chain of a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    /// `ip`, `ip6` or `inet` (also for chains read from iptables-save).
    pub family: String,
    /// Table name.
    pub table: String,
    /// Chain name.
    pub name: String,
    /// The hook of a base chain (`input`), `None` for a regular chain.
    pub hook: Option<String>,
    /// Base chain type (`filter`, `nat`, `route`).
    pub kind: String,
    /// True when the base chain's policy is drop.
    pub policy_drop: bool,
    /// Rules in order.
    pub rules: Vec<Rule>,
}

impl Chain {
    pub(super) fn label(&self) -> String {
        format!("{} {} {}", self.family, self.table, self.name)
    }

    pub(super) fn is_input_filter(&self) -> bool {
        self.hook.as_deref() == Some("input")
            && self.kind == "filter"
            && matches!(self.family.as_str(), "ip" | "ip6" | "inet")
    }

    pub(super) fn applies_to(&self, fam: Family) -> bool {
        match self.family.as_str() {
            "inet" => true,
            "ip" => fam == Family::V4,
            "ip6" => fam == Family::V6,
            _ => false,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Evaluation

/// Whether a new TCP connection to a port from the internet gets through the input chains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Every input chain of the family accepts it (or there is none).
    Admitted,
    /// A chain drops or rejects it, whatever the uninterpreted rules do.
    Blocked {
        /// What drops it: "the policy drop of chain X" or "rule `…`".
        by: String,
        /// The base chain it happens in (`inet filter input`).
        chain: String,
    },
    /// The answer depends on rules this parser could not interpret.
    Unsure {
        /// The verdict if none of the doubtful rules match.
        otherwise: String,
        /// The doubtful rules, quoted.
        doubts: Vec<String>,
    },
}

enum Flow {
    Accept(String),
    Drop(String),
    Fallthrough,
}

struct Eval<'a> {
    rules: &'a FirewallRules,
    port: u16,
    fam: Family,
    /// Rules that might accept, might drop, or do something unknown, had their conditions held.
    may_accept: Vec<String>,
    may_drop: Vec<String>,
}

enum Tri {
    Yes,
    No,
    Maybe(String),
}

impl Eval<'_> {
    fn test(&self, rule: &Rule) -> Tri {
        let mut doubt = None;
        for c in &rule.conds {
            let holds = match c {
                Cond::Dport { ranges, negate } => {
                    ranges
                        .iter()
                        .any(|&(lo, hi)| (lo..=hi).contains(&self.port))
                        != *negate
                }
                Cond::Family(f) => *f == self.fam,
                Cond::Const(b) => *b,
                Cond::Unknown(s) => {
                    doubt.get_or_insert_with(|| s.clone());
                    true
                }
            };
            if !holds {
                return Tri::No;
            }
        }
        doubt.map_or(Tri::Yes, Tri::Maybe)
    }

    fn chain(&mut self, chain: &Chain, depth: u32) -> Flow {
        for rule in &chain.rules {
            let doubt = match self.test(rule) {
                Tri::No => continue,
                Tri::Yes => None,
                Tri::Maybe(why) => Some(why),
            };
            let quoted = |why: &str| format!("could not interpret `{why}` in rule `{}`", rule.text);
            let flow = match &rule.action {
                Action::Continue => Flow::Fallthrough,
                Action::Accept => Flow::Accept(format!("rule `{}`", rule.text)),
                Action::Drop | Action::Reject => Flow::Drop(format!("rule `{}`", rule.text)),
                Action::Return => match doubt {
                    Some(why) => {
                        self.may_accept.push(quoted(&why));
                        self.may_drop.push(quoted(&why));
                        continue;
                    }
                    None => return Flow::Fallthrough,
                },
                Action::Unknown(what) => {
                    let why = doubt.unwrap_or_else(|| what.clone());
                    self.may_accept.push(quoted(&why));
                    self.may_drop.push(quoted(&why));
                    continue;
                }
                Action::Jump(target) | Action::Goto(target) => {
                    let Some(sub) = self
                        .rules
                        .chain(&chain.family, &chain.table, target)
                        .filter(|_| depth < 16)
                    else {
                        let why = format!("jump to {target}, which could not be followed");
                        self.may_accept.push(quoted(&why));
                        self.may_drop.push(quoted(&why));
                        continue;
                    };
                    let f = self.chain(sub, depth + 1);
                    if doubt.is_none()
                        && matches!(rule.action, Action::Goto(_))
                        && matches!(f, Flow::Fallthrough)
                    {
                        return Flow::Fallthrough;
                    }
                    f
                }
            };
            let own = format!("rule `{}`", rule.text);
            let via = |by: &str, verb: &str| {
                if by == own {
                    format!("(it {verb} the connection if that holds)")
                } else {
                    format!("(if that holds, {by} {verb} the connection)")
                }
            };
            match (flow, doubt) {
                (Flow::Fallthrough, _) => {}
                (f, None) => return f,
                (Flow::Accept(by), Some(why)) => {
                    self.may_accept
                        .push(format!("{} {}", quoted(&why), via(&by, "accepts")))
                }
                (Flow::Drop(by), Some(why)) => {
                    self.may_drop
                        .push(format!("{} {}", quoted(&why), via(&by, "drops")))
                }
            }
        }
        Flow::Fallthrough
    }
}

/// Judges a new TCP SYN to `port` from a non-loopback address of family `fam`.
pub fn admits(rules: &FirewallRules, port: u16, fam: Family) -> Admission {
    let mut unsure = None;
    for chain in rules.input_chains(fam) {
        let mut ev = Eval {
            rules,
            port,
            fam,
            may_accept: Vec::new(),
            may_drop: Vec::new(),
        };
        let flow = match ev.chain(chain, 0) {
            Flow::Fallthrough if chain.policy_drop => {
                Flow::Drop(format!("the policy drop of chain `{}`", chain.label()))
            }
            Flow::Fallthrough => {
                Flow::Accept(format!("the policy accept of chain `{}`", chain.label()))
            }
            f => f,
        };
        let result = match flow {
            Flow::Accept(_) if ev.may_drop.is_empty() => continue,
            Flow::Accept(by) => Admission::Unsure {
                otherwise: format!("accepted by {by}"),
                doubts: ev.may_drop,
            },
            Flow::Drop(by) if ev.may_accept.is_empty() => Admission::Blocked {
                by,
                chain: chain.label(),
            },
            Flow::Drop(by) => Admission::Unsure {
                otherwise: format!("dropped by {by}"),
                doubts: ev.may_accept,
            },
            Flow::Fallthrough => continue,
        };
        match result {
            b @ Admission::Blocked { .. } => return b,
            u => {
                unsure.get_or_insert(u);
            }
        }
    }
    unsure.unwrap_or(Admission::Admitted)
}
