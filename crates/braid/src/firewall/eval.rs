//! Judging a ruleset: does a new TCP or UDP connection to port P, from the internet (not
//! loopback), over IPv4 or IPv6, get through every filter chain at the input hook?
//!
//! Each base chain is walked rule by rule, following jumps and gotos. A rule whose matches are
//! all decided acts; a rule that depends on an [`Match::Uninterpreted`] match is remembered as a
//! doubt and the walk goes on as if it did not match. An accept ends only its own base chain:
//! the next base chain at the hook still runs, so any chain that drops decides.

use super::model::Verdict;
use super::model::{Chain, ChainId, CtState, Family, Match, Protocol, Rule, Ruleset, Table, L4};

/// The packet being judged: the first packet of a new connection from the internet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// TCP or UDP.
    pub l4: L4,
    /// Destination port.
    pub port: u16,
    /// IPv4 or IPv6.
    pub family: Family,
}

impl Probe {
    /// A TCP SYN to `port`.
    pub fn tcp(port: u16, family: Family) -> Probe {
        Probe {
            l4: L4::Tcp,
            port,
            family,
        }
    }

    /// A first UDP datagram to `port`.
    pub fn udp(port: u16, family: Family) -> Probe {
        Probe {
            l4: L4::Udp,
            port,
            family,
        }
    }
}

/// Whether the probe gets through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Every input chain of the family accepts it (or there is none).
    Admitted,
    /// A chain drops or rejects it, whatever the uninterpreted rules do.
    Blocked {
        /// What drops it: "the policy drop of chain `X`" or "rule `…`".
        by: String,
        /// The base chain it happens in (`inet filter input`).
        chain: ChainId,
    },
    /// The answer depends on rules braid could not interpret.
    Unsure {
        /// The verdict if none of the doubtful rules match.
        otherwise: String,
        /// The doubtful rules, quoted.
        doubts: Vec<String>,
    },
}

impl Admission {
    /// One line for evidence: `admitted`, `dropped by …`, `accepted by …, unless: …`.
    pub fn describe(&self) -> String {
        match self {
            Admission::Admitted => "admitted".into(),
            Admission::Blocked { by, .. } => format!("dropped by {by}"),
            Admission::Unsure { otherwise, doubts } => {
                format!("{otherwise}, unless: {}", doubts.join("; "))
            }
        }
    }
}

/// Judges `probe` against every input filter chain of its family.
pub fn admits(rules: &Ruleset, probe: Probe) -> Admission {
    let mut unsure = None;
    for (table, chain) in rules.input_chains(probe.family) {
        let mut walk = Walk {
            table,
            probe,
            may_accept: Vec::new(),
            may_drop: Vec::new(),
            visits: 0,
        };
        let label = table.id(chain);
        let flow = match walk.chain(chain, 0) {
            Flow::Fallthrough if chain.policy_drops() => {
                Flow::Drop(format!("the policy drop of chain `{label}`"))
            }
            Flow::Fallthrough => Flow::Accept(format!("the policy accept of chain `{label}`")),
            f => f,
        };
        let result = match flow {
            Flow::Accept(_) if walk.may_drop.is_empty() => continue,
            Flow::Accept(by) => Admission::Unsure {
                otherwise: format!("accepted by {by}"),
                doubts: walk.may_drop,
            },
            Flow::Drop(by) if walk.may_accept.is_empty() => Admission::Blocked { by, chain: label },
            Flow::Drop(by) => Admission::Unsure {
                otherwise: format!("dropped by {by}"),
                doubts: walk.may_accept,
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
    match unsure {
        Some(u) => u,
        None if rules.unreadable.is_empty() => Admission::Admitted,
        // A chain nothing could read might drop it.
        None => Admission::Unsure {
            otherwise: "accepted by every chain braid could read".into(),
            doubts: (rules.unreadable.iter())
                .map(|u| format!("could not read `{u}`"))
                .collect(),
        },
    }
}

/// How a walk through a chain ended.
enum Flow {
    Accept(String),
    Drop(String),
    Fallthrough,
}

/// Whether a rule's matches hold for the probe.
enum Holds {
    Yes,
    No,
    /// Only if this uninterpreted match holds.
    Maybe(String),
}

/// One base chain's walk.
struct Walk<'a> {
    table: &'a Table,
    probe: Probe,
    /// Rules that might accept, or might drop, had their uninterpreted matches held.
    may_accept: Vec<String>,
    may_drop: Vec<String>,
    /// Rules looked at so far, jumps followed included.
    visits: u32,
}

/// How deep jumps are followed before giving up (nft itself allows 16 levels).
const MAX_DEPTH: u32 = 16;

/// Rules one base chain's walk looks at, jumps followed included, before it gives up. Chains
/// that jump to the same chains many times over take exponential time to walk (16 chains of 4
/// jumps to the next: 4^16 visits; a 1 KB input of the `iptables_save` fuzz target), and doctor must
/// answer; real rulesets need a few thousand visits.
const MAX_VISITS: u32 = 200_000;

impl Walk<'_> {
    fn chain(&mut self, chain: &Chain, depth: u32) -> Flow {
        for rule in &chain.rules {
            self.visits += 1;
            if self.visits > MAX_VISITS {
                if self.visits == MAX_VISITS + 1 {
                    self.either_way(format!(
                        "the chains jump to each other too often to follow (gave up after {MAX_VISITS} rules)"
                    ));
                }
                return Flow::Fallthrough;
            }
            let doubt = match holds(rule, self.probe) {
                Holds::No => continue,
                Holds::Yes => None,
                Holds::Maybe(why) => Some(why),
            };
            let quoted = |why: &str| format!("could not interpret `{why}` in rule `{}`", rule.text);
            let flow = match &rule.verdict {
                Verdict::Continue => Flow::Fallthrough,
                Verdict::Accept => Flow::Accept(format!("rule `{}`", rule.text)),
                Verdict::Drop | Verdict::Reject => Flow::Drop(format!("rule `{}`", rule.text)),
                Verdict::Return => match doubt {
                    Some(why) => {
                        self.either_way(quoted(&why));
                        continue;
                    }
                    None => return Flow::Fallthrough,
                },
                Verdict::Uninterpreted(what) => {
                    self.either_way(quoted(&doubt.unwrap_or_else(|| what.clone())));
                    continue;
                }
                Verdict::Jump(target) | Verdict::Goto(target) => {
                    let Some(sub) = self.table.chain(target).filter(|_| depth < MAX_DEPTH) else {
                        let why = format!("jump to {target}, which could not be followed");
                        self.either_way(quoted(&why));
                        continue;
                    };
                    let f = self.chain(sub, depth + 1);
                    if doubt.is_none()
                        && matches!(rule.verdict, Verdict::Goto(_))
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
                    (self.may_accept).push(format!("{} {}", quoted(&why), via(&by, "accepts")))
                }
                (Flow::Drop(by), Some(why)) => {
                    (self.may_drop).push(format!("{} {}", quoted(&why), via(&by, "drops")))
                }
            }
        }
        Flow::Fallthrough
    }

    /// A doubtful rule whose effect cannot be told: it might accept or drop.
    fn either_way(&mut self, doubt: String) {
        self.may_accept.push(doubt.clone());
        self.may_drop.push(doubt);
    }
}

/// Whether all of a rule's matches hold for the probe; the first uninterpreted one is the doubt.
fn holds(rule: &Rule, probe: Probe) -> Holds {
    let mut doubt = None;
    for m in &rule.matches {
        let holds = match m {
            Match::Protocol { any_of, negate } => {
                any_of.contains(&Protocol::L4(probe.l4)) != *negate
            }
            Match::Dport {
                proto,
                ports,
                negate,
            } => {
                proto.is_none_or(|p| p == probe.l4)
                    && ports.iter().any(|r| r.contains(probe.port)) != *negate
            }
            Match::CtState { any_of, negate } => any_of.contains(&CtState::New) != *negate,
            // Packets from the internet never arrive on loopback; other names are unknown.
            Match::Iifname { any_of, negate } if any_of.iter().all(|n| n == "lo") => *negate,
            Match::Iifname { .. } => {
                doubt.get_or_insert_with(|| m.to_string());
                true
            }
            Match::Family(f) => *f == probe.family,
            Match::TcpSyn { negate } => probe.l4 == L4::Tcp && !negate,
            Match::Fixed { holds, .. } => *holds,
            Match::Uninterpreted(s) => {
                doubt.get_or_insert_with(|| s.clone());
                true
            }
        };
        if !holds {
            return Holds::No;
        }
    }
    doubt.map_or(Holds::Yes, Holds::Maybe)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::model::{BaseChain, ChainKind, Hook, Origin, Policy, PortRange};
    use crate::firewall::model::{Chain, TableFamily};

    fn dport(proto: Option<L4>, port: u16, negate: bool) -> Match {
        Match::Dport {
            proto,
            ports: vec![PortRange::one(port)],
            negate,
        }
    }

    fn input(policy: Policy, rules: Vec<Rule>) -> Ruleset {
        Ruleset {
            tables: vec![Table {
                family: TableFamily::Inet,
                name: "filter".into(),
                origin: Origin::Nft,
                has_xt: false,
                chains: vec![Chain {
                    name: "input".into(),
                    base: Some(BaseChain {
                        kind: ChainKind::Filter,
                        hook: Hook::Input,
                        priority: 0,
                        policy,
                    }),
                    rules,
                }],
            }],
            ..Ruleset::default()
        }
    }

    #[test]
    fn udp_probe_is_not_admitted_by_a_tcp_port_rule() {
        let r = input(
            Policy::Drop,
            vec![Rule::new(
                vec![dport(Some(L4::Tcp), 8388, false)],
                Verdict::Accept,
            )],
        );
        assert_eq!(
            admits(&r, Probe::tcp(8388, Family::V4)),
            Admission::Admitted
        );
        assert!(matches!(
            admits(&r, Probe::udp(8388, Family::V4)),
            Admission::Blocked { .. }
        ));
    }

    #[test]
    fn negated_tcp_port_rule_never_holds_for_udp() {
        let r = input(
            Policy::Accept,
            vec![Rule::new(
                vec![dport(Some(L4::Tcp), 22, true)],
                Verdict::Drop,
            )],
        );
        assert_eq!(
            admits(&r, Probe::udp(8388, Family::V6)),
            Admission::Admitted
        );
        assert!(matches!(
            admits(&r, Probe::tcp(8388, Family::V6)),
            Admission::Blocked { .. }
        ));
    }

    #[test]
    fn th_dport_and_protocol_sets_cover_both_transports() {
        let r = input(
            Policy::Drop,
            vec![Rule::new(
                vec![
                    Match::Protocol {
                        any_of: vec![Protocol::L4(L4::Tcp), Protocol::L4(L4::Udp)],
                        negate: false,
                    },
                    dport(None, 8388, false),
                ],
                Verdict::Accept,
            )],
        );
        for probe in [Probe::tcp(8388, Family::V4), Probe::udp(8388, Family::V6)] {
            assert_eq!(admits(&r, probe), Admission::Admitted, "{probe:?}");
        }
    }

    #[test]
    fn unreadable_chain_turns_admitted_into_unsure_but_not_blocked() {
        let mut r = input(Policy::Accept, vec![]);
        r.unreadable.push("{\"chain\": …}".into());
        assert!(matches!(
            admits(&r, Probe::tcp(22, Family::V4)),
            Admission::Unsure { .. }
        ));
        let mut r = input(Policy::Drop, vec![]);
        r.unreadable.push("{\"chain\": …}".into());
        assert!(matches!(
            admits(&r, Probe::tcp(22, Family::V4)),
            Admission::Blocked { .. }
        ));
    }

    #[test]
    fn iifname_other_than_lo_is_a_doubt_quoted_in_nft_syntax() {
        let r = input(
            Policy::Drop,
            vec![Rule::new(
                vec![Match::Iifname {
                    any_of: vec!["eth0".into()],
                    negate: false,
                }],
                Verdict::Accept,
            )],
        );
        let a = admits(&r, Probe::tcp(22, Family::V4));
        assert!(
            matches!(&a, Admission::Unsure { doubts, .. } if doubts[0].contains("`iifname \"eth0\"`")),
            "{a:?}"
        );
    }

    #[test]
    fn chains_that_jump_to_each_other_many_times_over_are_unsure_not_a_hang() {
        // Through the iptables_save fuzz target: 16 chains, each jumping 4 times to the next,
        // took 4^16 walks (over a minute; doctor never answered) before the walk had a budget.
        let mut text = String::from("*filter\n:INPUT DROP [0:0]\n");
        for i in 1..=16 {
            text += &format!(":c{i} - [0:0]\n");
        }
        for i in 0..16 {
            let from = if i == 0 {
                "INPUT".to_string()
            } else {
                format!("c{i}")
            };
            for _ in 0..4 {
                text += &format!("-A {from} -j c{}\n", i + 1);
            }
        }
        let rules = Ruleset {
            tables: vec![crate::firewall::iptables::parse_iptables_save(
                &text,
                Family::V4,
            )],
            ..Ruleset::default()
        };
        let started = std::time::Instant::now();
        let a = admits(&rules, Probe::tcp(8388, Family::V4));
        assert!(matches!(a, Admission::Unsure { .. }), "{a:?}");
        assert!(
            a.describe().contains("too often to follow"),
            "{}",
            a.describe()
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
    }
}
