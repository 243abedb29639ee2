//! Writing: rules braid plans to add to the host firewall, in the model; rendered for the tool
//! that applies them; and the gathered ruleset with them applied, so that a change can be judged
//! before it is made.
//!
//! ```text
//!  Plan { placement, rules } ─► render() ─┬─► Rendered::Nft(batch) ───► braid_sys::nftables::apply
//!                                         └─► Rendered::Iptables(cmds) ► iptables -w -I INPUT n …
//!  gathered.with_plan(&plan) ─► admits(…, Probe::tcp(22, …)): is SSH still admitted afterwards?
//! ```
//! `braid setup server` opens the relay port this way and refuses a plan after which sshd's
//! ports would not be admitted. Only the rule shapes it needs can be written (see [`Rule`]'s
//! constructors); a parsed rule with uninterpreted parts cannot.

use std::fmt;

use braid_sys::nftables::{matches, meta, payload, replace_table, set, text, valid_ifname};
use nftables::batch::Batch;
use nftables::expr::{Expression, MetaKey, NamedExpression, Range, CT};
use nftables::schema::{Chain as NftChain, NfCmd, NfListObject, Nftables, Rule as NftRule};
use nftables::stmt::{Operator, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};

use super::model::{BaseChain, Chain, ChainKind, CtState, Family, Hook, Match, Origin, Policy};
use super::model::{PortRange, Protocol, Rule, Ruleset, Table, TableFamily, Verdict, L4};

impl Rule {
    /// `tcp dport { 22, 8388 } accept` (or `udp dport …`).
    pub fn accept_dports(l4: L4, ports: &[u16]) -> Rule {
        let ports = ports.iter().map(|&p| PortRange::one(p)).collect();
        Rule::new(
            vec![Match::Dport {
                proto: Some(l4),
                ports,
                negate: false,
            }],
            Verdict::Accept,
        )
    }

    /// `ct state established,related accept`: replies to this host's own connections.
    pub fn accept_established() -> Rule {
        Rule::new(
            vec![Match::CtState {
                any_of: vec![CtState::Established, CtState::Related],
                negate: false,
            }],
            Verdict::Accept,
        )
    }

    /// `iifname "lo" accept`: this host talking to itself.
    pub fn accept_loopback() -> Rule {
        Rule::new(
            vec![Match::Iifname {
                any_of: vec!["lo".into()],
                negate: false,
            }],
            Verdict::Accept,
        )
    }
}

/// Where planned rules go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// `table inet TABLE`, owned by braid and replaced whole, with one base chain `input`
    /// (`type filter hook input priority PRIORITY; policy accept;`) holding the rules. An accept
    /// there ends only that chain: a drop in another table still drops, as
    /// [`Ruleset::with_plan`] shows.
    OwnTable {
        /// The table's name.
        table: String,
        /// The chain's priority (0 is nft's `filter`).
        priority: i32,
    },
    /// Inserted, in order, at the top of `INPUT` in the `filter` tables of iptables (rules for
    /// IPv4) and ip6tables (IPv6): for hosts whose firewall is iptables. The commands write the
    /// table `iptables` itself writes (iptables-nft on Debian), never a legacy one.
    IptablesInput,
    /// Inserted, in order, at the top of a base chain the host already has (`nft insert rule
    /// FAMILY TABLE CHAIN …`), each rule tagged with `comment`: for a plain nftables firewall
    /// whose own chain drops what braid must admit. An accept in braid's own table cannot
    /// override that drop; an accept ahead of it in the same chain does. The comment is how the
    /// rules are found again to be deleted (by handle) and nothing else in the chain is touched.
    NftChain {
        /// The table's family (`inet`, `ip`, `ip6`).
        family: TableFamily,
        /// The host's table (`filter`).
        table: String,
        /// The base chain (`input`).
        chain: String,
        /// The comment every inserted rule carries.
        comment: String,
    },
}

/// Rules braid wants in the host firewall, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Where they go.
    pub placement: Placement,
    /// In order.
    pub rules: Vec<Rule>,
}

/// A plan in the form its tool applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rendered {
    /// One nft transaction, for `braid_sys::nftables::apply` (`nft -j -f -`).
    Nft(Nftables<'static>),
    /// iptables / ip6tables commands, to run in order.
    Iptables(Vec<IptablesCommand>),
}

/// One `iptables -w -I INPUT N …` (or `ip6tables`) command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IptablesCommand {
    /// `iptables` or `ip6tables`.
    pub program: &'static str,
    /// 1-based position in `INPUT`.
    pub position: usize,
    /// The rule's options, as `iptables-save` prints them after `-A INPUT`.
    pub rule: Vec<String>,
}

impl IptablesCommand {
    /// The arguments after the program name (`-w` waits for the xtables lock).
    pub fn args(&self) -> Vec<String> {
        let head = ["-w", "-I", "INPUT"].map(String::from);
        (head.into_iter())
            .chain([self.position.to_string()])
            .chain(self.rule.iter().cloned())
            .collect()
    }
}

impl fmt::Display for IptablesCommand {
    /// The command line, as a user would type it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.program, self.args().join(" "))
    }
}

/// Why a plan cannot be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The rule holds something braid reads but does not write.
    #[error("planned rule `{rule}` cannot be written: {why}; fix: build planned rules with Rule::accept_dports, Rule::accept_established and Rule::accept_loopback")]
    NotWritable {
        /// The rule.
        rule: String,
        /// What cannot be written.
        why: String,
    },
    /// The table name is not one braid writes.
    #[error("table name {0:?} is not valid (a letter, then up to 31 letters, digits, '-' or '_'); fix: choose another name for braid's table")]
    BadTable(String),
    /// Rules can be inserted only into `inet`, `ip` and `ip6` tables.
    #[error("cannot insert rules into a table of family {0:?}; fix: open the port in that table by hand")]
    BadFamily(String),
}

fn not_writable(rule: &Rule, why: impl Into<String>) -> PlanError {
    PlanError::NotWritable {
        rule: rule.text.clone(),
        why: why.into(),
    }
}

impl Plan {
    /// The plan for its tool: an nft batch for [`Placement::OwnTable`], iptables commands for
    /// [`Placement::IptablesInput`].
    pub fn render(&self) -> Result<Rendered, PlanError> {
        match &self.placement {
            Placement::OwnTable { table, priority } => {
                self.nft_batch(table, *priority).map(Rendered::Nft)
            }
            Placement::IptablesInput => self.iptables_commands().map(Rendered::Iptables),
            Placement::NftChain {
                family,
                table,
                chain,
                comment,
            } => self
                .nft_insert_batch(family, table, chain, comment)
                .map(Rendered::Nft),
        }
    }

    fn nft_insert_batch(
        &self,
        family: &TableFamily,
        table: &str,
        chain: &str,
        comment: &str,
    ) -> Result<Nftables<'static>, PlanError> {
        let nf_family = match family {
            TableFamily::Inet => NfFamily::INet,
            TableFamily::Ip => NfFamily::IP,
            TableFamily::Ip6 => NfFamily::IP6,
            TableFamily::Other(f) => return Err(PlanError::BadFamily(f.clone())),
        };
        let mut batch = Batch::new();
        // `insert` puts a rule at the top: insert the last one first so they end up in order.
        for rule in self.rules.iter().rev() {
            batch.add_cmd(NfCmd::Insert(NfListObject::Rule(NftRule {
                family: nf_family,
                table: table.to_string().into(),
                chain: chain.to_string().into(),
                expr: nft_statements(rule)?.into(),
                comment: Some(comment.to_string().into()),
                ..NftRule::default()
            })));
        }
        Ok(batch.to_nftables())
    }

    fn nft_batch(&self, table: &str, priority: i32) -> Result<Nftables<'static>, PlanError> {
        if !valid_table_name(table) {
            return Err(PlanError::BadTable(table.to_string()));
        }
        let mut batch = Batch::new();
        replace_table(&mut batch, table);
        batch.add(NfListObject::Chain(NftChain {
            family: NfFamily::INet,
            table: table.to_string().into(),
            name: "input".into(),
            _type: Some(NfChainType::Filter),
            hook: Some(NfHook::Input),
            prio: Some(priority),
            policy: Some(NfChainPolicy::Accept),
            ..NftChain::default()
        }));
        for rule in &self.rules {
            batch.add(NfListObject::Rule(NftRule {
                family: NfFamily::INet,
                table: table.to_string().into(),
                chain: "input".into(),
                expr: nft_statements(rule)?.into(),
                ..NftRule::default()
            }));
        }
        Ok(batch.to_nftables())
    }

    fn iptables_commands(&self) -> Result<Vec<IptablesCommand>, PlanError> {
        let mut out = Vec::new();
        for (program, family) in [("iptables", Family::V4), ("ip6tables", Family::V6)] {
            let rules = self.rules.iter().filter(|r| for_family(r, family));
            for (i, rule) in rules.enumerate() {
                out.push(IptablesCommand {
                    program,
                    position: i + 1,
                    rule: iptables_rule(rule)?,
                });
            }
        }
        Ok(out)
    }
}

/// nft names tables freely, but braid writes only plain ones.
fn valid_table_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && name.len() <= 32
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
}

/// Whether the rule applies to packets of `family` (it has no match on the other family).
fn for_family(rule: &Rule, family: Family) -> bool {
    !(rule.matches.iter()).any(|m| matches!(m, Match::Family(f) if *f != family))
}

fn nft_statements(rule: &Rule) -> Result<Vec<Statement<'static>>, PlanError> {
    let eq = |negate: bool| if negate { Operator::NEQ } else { Operator::EQ };
    let mut out = Vec::new();
    for m in &rule.matches {
        out.push(match m {
            Match::Protocol { any_of, negate } => {
                let l4 = (any_of.iter())
                    .map(|p| match p {
                        Protocol::L4(l4) => Ok(text(l4.name())),
                        Protocol::Other(o) => Err(not_writable(rule, format!("protocol {o}"))),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                matches(meta(MetaKey::L4proto), eq(*negate), one_or_set(l4))
            }
            Match::Dport {
                proto,
                ports,
                negate,
            } => {
                let ports = ports.iter().map(|r| port_expression(*r)).collect();
                let proto = proto.map_or("th", L4::name);
                matches(payload(proto, "dport"), eq(*negate), one_or_set(ports))
            }
            Match::CtState { any_of, negate } => {
                let ct = Expression::Named(NamedExpression::CT(CT {
                    key: "state".into(),
                    family: None,
                    dir: None,
                }));
                let states = any_of.iter().map(|s| text(s.name())).collect();
                let op = if *negate { Operator::NEQ } else { Operator::IN };
                matches(ct, op, Expression::List(states))
            }
            Match::Iifname { any_of, negate } => {
                if let Some(bad) = any_of.iter().find(|n| !valid_ifname(n)) {
                    return Err(not_writable(rule, format!("interface name {bad:?}")));
                }
                let names = any_of.iter().map(|n| text(n)).collect();
                matches(meta(MetaKey::Iifname), eq(*negate), one_or_set(names))
            }
            Match::Family(f) => {
                let name = if *f == Family::V4 { "ipv4" } else { "ipv6" };
                matches(meta(MetaKey::Nfproto), Operator::EQ, text(name))
            }
            other => return Err(not_writable(rule, format!("`{other}`"))),
        });
    }
    out.push(match &rule.verdict {
        Verdict::Accept => Statement::Accept(None),
        Verdict::Drop => Statement::Drop(None),
        Verdict::Reject => Statement::Reject(None),
        other => return Err(not_writable(rule, format!("verdict `{other}`"))),
    });
    Ok(out)
}

/// One value as itself, several as an anonymous set (the form nft lists them in).
fn one_or_set(mut items: Vec<Expression<'static>>) -> Expression<'static> {
    if items.len() == 1 {
        items.remove(0)
    } else {
        set(items)
    }
}

fn port_expression(r: PortRange) -> Expression<'static> {
    if r.first == r.last {
        Expression::Number(r.first.into())
    } else {
        Expression::Range(Box::new(Range {
            range: [
                Expression::Number(r.first.into()),
                Expression::Number(r.last.into()),
            ],
        }))
    }
}

/// iptables takes at most 15 ports in one `--dports`.
const MULTIPORT_MAX: usize = 15;

/// A rule's options in `iptables-save` form (without the family match, implied by the program).
fn iptables_rule(rule: &Rule) -> Result<Vec<String>, PlanError> {
    let mut args: Vec<String> = Vec::new();
    let mut push = |words: &[&str]| args.extend(words.iter().map(|w| w.to_string()));
    let not = |negate: bool| if negate { "!" } else { "" };
    let mut has_protocol = false;
    for m in &rule.matches {
        match m {
            Match::Family(_) => {}
            Match::Protocol { any_of, negate } => match any_of.as_slice() {
                [Protocol::L4(l4)] => {
                    push(&[not(*negate), "-p", l4.name()]);
                    has_protocol = true;
                }
                _ => return Err(not_writable(rule, "iptables takes one protocol per rule")),
            },
            Match::Dport {
                proto: Some(l4),
                ports,
                negate,
            } if ports.len() <= MULTIPORT_MAX => {
                if !has_protocol {
                    push(&["-p", l4.name()]);
                    has_protocol = true;
                }
                let list: Vec<String> = (ports.iter())
                    .map(|r| r.to_string().replace('-', ":"))
                    .collect();
                match list.as_slice() {
                    [one] => push(&["-m", l4.name(), not(*negate), "--dport", one]),
                    _ => push(&["-m", "multiport", not(*negate), "--dports", &list.join(",")]),
                }
            }
            Match::CtState { any_of, negate } => {
                let states: Vec<String> = any_of.iter().map(|s| s.name().to_uppercase()).collect();
                push(&[
                    "-m",
                    "conntrack",
                    not(*negate),
                    "--ctstate",
                    &states.join(","),
                ]);
            }
            Match::Iifname { any_of, negate } => match any_of.as_slice() {
                [one] if valid_ifname(one) => push(&[not(*negate), "-i", one]),
                _ => {
                    return Err(not_writable(
                        rule,
                        "iptables takes one valid interface name",
                    ))
                }
            },
            other => return Err(not_writable(rule, format!("`{other}`"))),
        }
    }
    let target = match &rule.verdict {
        Verdict::Accept => "ACCEPT",
        Verdict::Drop => "DROP",
        Verdict::Reject => "REJECT",
        other => return Err(not_writable(rule, format!("verdict `{other}`"))),
    };
    push(&["-j", target]);
    args.retain(|a| !a.is_empty());
    Ok(args)
}

impl Ruleset {
    /// This ruleset as it would be after `plan` is applied: braid's own table replaced, or the
    /// rules inserted at the top of the iptables `INPUT` chains (created with policy accept, as
    /// `iptables -I` does, where missing).
    pub fn with_plan(&self, plan: &Plan) -> Ruleset {
        let mut r = self.clone();
        match &plan.placement {
            Placement::OwnTable { table, priority } => {
                let own = Table {
                    family: TableFamily::Inet,
                    name: table.clone(),
                    origin: Origin::Nft,
                    has_xt: false,
                    chains: vec![input_chain("input", *priority, plan.rules.clone())],
                };
                r.replace_table(&TableFamily::Inet, table, vec![own]);
            }
            Placement::NftChain {
                family,
                table,
                chain,
                ..
            } => {
                let found = (r.tables.iter_mut())
                    .filter(|t| &t.family == family && &t.name == table && t.origin == Origin::Nft)
                    .flat_map(|t| t.chains.iter_mut())
                    .find(|c| &c.name == chain);
                if let Some(c) = found {
                    c.rules.splice(0..0, plan.rules.clone());
                }
            }
            Placement::IptablesInput => {
                for (family, table_family) in [
                    (Family::V4, TableFamily::Ip),
                    (Family::V6, TableFamily::Ip6),
                ] {
                    let rules: Vec<Rule> = (plan.rules.iter())
                        .filter(|rule| for_family(rule, family))
                        .cloned()
                        .collect();
                    if !rules.is_empty() {
                        iptables_input(&mut r, table_family)
                            .rules
                            .splice(0..0, rules);
                    }
                }
            }
        }
        r
    }
}

fn input_chain(name: &str, priority: i32, rules: Vec<Rule>) -> Chain {
    Chain {
        name: name.into(),
        base: Some(BaseChain {
            kind: ChainKind::Filter,
            hook: Hook::Input,
            priority,
            policy: Policy::Accept,
        }),
        rules,
    }
}

/// The `INPUT` chain the `iptables` command writes, made as `iptables -I` makes it if missing.
fn iptables_input(r: &mut Ruleset, family: TableFamily) -> &mut Chain {
    let found = (r.tables.iter()).position(|t| {
        t.family == family && t.name == "filter" && t.origin != Origin::IptablesLegacy
    });
    let t = match found {
        Some(t) => t,
        None => {
            r.tables.push(Table {
                family,
                name: "filter".into(),
                origin: Origin::Iptables,
                has_xt: false,
                chains: Vec::new(),
            });
            r.tables.len() - 1
        }
    };
    let table = &mut r.tables[t];
    let c = match table.chains.iter().position(|c| c.name == "INPUT") {
        Some(c) => c,
        None => {
            table.chains.push(input_chain("INPUT", 0, Vec::new()));
            table.chains.len() - 1
        }
    };
    &mut table.chains[c]
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::firewall::eval::{admits, Admission, Probe};
    use crate::firewall::iptables::parse_iptables_save;
    use crate::firewall::nft::parse_nft_json;
    use crate::firewall::nft::tests::{nft, PLAIN};

    /// What `braid setup server` will plan: replies, loopback, SSH and the relay (TCP and UDP).
    pub(crate) fn setup_rules() -> Vec<Rule> {
        vec![
            Rule::accept_established(),
            Rule::accept_loopback(),
            Rule::accept_dports(L4::Tcp, &[22, 8388]),
            Rule::accept_dports(L4::Udp, &[8388]),
        ]
    }

    fn own_table() -> Plan {
        Plan {
            placement: Placement::OwnTable {
                table: "braid-fw".into(),
                priority: -10,
            },
            rules: setup_rules(),
        }
    }

    fn probes() -> Vec<Probe> {
        let mut out = Vec::new();
        for family in [Family::V4, Family::V6] {
            for port in [22, 23, 8388, 9000] {
                out.extend([Probe::tcp(port, family), Probe::udp(port, family)]);
            }
        }
        out
    }

    /// A policy-drop input chain with nothing admitted, read from iptables-save.
    fn iptables_drop_all() -> Ruleset {
        let save = |fam| parse_iptables_save("*filter\n:INPUT DROP [0:0]\nCOMMIT\n", fam);
        Ruleset {
            tables: vec![save(Family::V4), save(Family::V6)],
            ..Ruleset::default()
        }
    }

    /// A batch of `add` commands read back as the listing nft would print after applying it.
    fn as_listing(batch: &Nftables) -> String {
        let v = serde_json::to_value(batch).unwrap();
        let listed: Vec<serde_json::Value> = v["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|o| o.get("add").cloned())
            .collect();
        serde_json::json!({ "nftables": listed }).to_string()
    }

    #[test]
    fn setup_rules_read_as_nft_writes_them() {
        let text: Vec<String> = setup_rules().iter().map(|r| r.text.clone()).collect();
        assert_eq!(
            text,
            [
                "ct state established,related accept",
                "iifname \"lo\" accept",
                "tcp dport { 22, 8388 } accept",
                "udp dport 8388 accept"
            ]
        );
    }

    #[test]
    fn own_table_renders_to_a_batch_that_parses_back_to_the_same_rules() {
        let plan = own_table();
        let Rendered::Nft(batch) = plan.render().unwrap() else {
            panic!("an own table renders to nft");
        };
        let text = braid_sys::nftables::batch_text(&batch);
        assert!(
            text.contains("add chain inet braid-fw input { type filter hook input priority -10; policy accept; }"),
            "{text}"
        );
        assert!(
            text.contains("add rule inet braid-fw input tcp dport { 22, 8388 } accept"),
            "{text}"
        );
        let parsed = parse_nft_json(&as_listing(&batch)).unwrap();
        let chain = parsed.tables[0].chain("input").unwrap();
        let read: Vec<(&Vec<Match>, &Verdict)> = chain
            .rules
            .iter()
            .map(|r| (&r.matches, &r.verdict))
            .collect();
        let planned: Vec<(&Vec<Match>, &Verdict)> = plan
            .rules
            .iter()
            .map(|r| (&r.matches, &r.verdict))
            .collect();
        assert_eq!(read, planned);
        // Render → parse back → evaluate gives what with_plan predicts.
        let predicted = Ruleset::default().with_plan(&plan);
        for probe in probes() {
            assert_eq!(
                admits(&parsed, probe),
                admits(&predicted, probe),
                "{probe:?}"
            );
        }
        assert_eq!(
            admits(&predicted, Probe::udp(8388, Family::V6)),
            Admission::Admitted
        );
    }

    #[test]
    fn own_table_cannot_open_a_port_another_table_drops() {
        let host = nft(PLAIN);
        let after = host.with_plan(&Plan {
            rules: vec![Rule::accept_dports(L4::Tcp, &[9000])],
            ..own_table()
        });
        // `inet filter input` still drops 9000: an accept ends only braid's own chain.
        let a = admits(&after, Probe::tcp(9000, Family::V4));
        assert!(
            matches!(&a, Admission::Blocked { chain, .. } if chain.to_string() == "inet filter input"),
            "{a:?}"
        );
        // Re-planning replaces braid's table instead of adding a second one.
        let twice = after.with_plan(&own_table());
        assert_eq!(twice.tables.len(), host.tables.len() + 1);
    }

    #[test]
    fn iptables_commands_are_exact_and_parse_back() {
        let plan = Plan {
            placement: Placement::IptablesInput,
            rules: setup_rules(),
        };
        let Rendered::Iptables(cmds) = plan.render().unwrap() else {
            panic!("iptables placement renders to commands");
        };
        let lines: Vec<String> = cmds.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines[..4],
            [
                "iptables -w -I INPUT 1 -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
                "iptables -w -I INPUT 2 -i lo -j ACCEPT",
                "iptables -w -I INPUT 3 -p tcp -m multiport --dports 22,8388 -j ACCEPT",
                "iptables -w -I INPUT 4 -p udp -m udp --dport 8388 -j ACCEPT",
            ]
        );
        assert_eq!(lines.len(), 8);
        assert!(lines[4].starts_with("ip6tables -w -I INPUT 1 -m conntrack"));
        // The same rules as iptables-save would list them, parsed back and judged.
        let save = |program: &str, family| {
            let rules: String = (cmds.iter())
                .filter(|c| c.program == program)
                .map(|c| format!("-A INPUT {}\n", c.rule.join(" ")))
                .collect();
            parse_iptables_save(
                &format!("*filter\n:INPUT DROP [0:0]\n{rules}COMMIT\n"),
                family,
            )
        };
        let parsed = Ruleset {
            tables: vec![save("iptables", Family::V4), save("ip6tables", Family::V6)],
            ..Ruleset::default()
        };
        let predicted = iptables_drop_all().with_plan(&plan);
        for probe in probes() {
            assert_eq!(
                admits(&parsed, probe),
                admits(&predicted, probe),
                "{probe:?}"
            );
        }
        assert_eq!(
            admits(&predicted, Probe::tcp(22, Family::V6)),
            Admission::Admitted
        );
        assert!(matches!(
            admits(&predicted, Probe::tcp(9000, Family::V4)),
            Admission::Blocked { .. }
        ));
    }

    #[test]
    fn family_and_range_rules_render_for_their_family_only() {
        let mut rule = Rule::accept_dports(L4::Tcp, &[]);
        rule.matches = vec![
            Match::Family(Family::V6),
            Match::Dport {
                proto: Some(L4::Tcp),
                ports: vec![PortRange {
                    first: 60000,
                    last: 60010,
                }],
                negate: false,
            },
        ];
        let plan = Plan {
            placement: Placement::IptablesInput,
            rules: vec![rule],
        };
        let Rendered::Iptables(cmds) = plan.render().unwrap() else {
            panic!("iptables");
        };
        let lines: Vec<String> = cmds.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            ["ip6tables -w -I INPUT 1 -p tcp -m tcp --dport 60000:60010 -j ACCEPT"]
        );
        let after = iptables_drop_all().with_plan(&plan);
        assert_eq!(
            admits(&after, Probe::tcp(60005, Family::V6)),
            Admission::Admitted
        );
        assert!(matches!(
            admits(&after, Probe::tcp(60005, Family::V4)),
            Admission::Blocked { .. }
        ));
    }

    #[test]
    fn parsed_rules_with_uninterpreted_parts_are_refused_with_a_fix() {
        let host = nft(PLAIN);
        let source_restricted = (host.tables[0].chain("input").unwrap().rules.iter())
            .find(|r| r.text.contains("saddr"))
            .unwrap()
            .clone();
        for placement in [own_table().placement, Placement::IptablesInput] {
            let e = Plan {
                placement,
                rules: vec![source_restricted.clone()],
            }
            .render()
            .unwrap_err();
            assert!(matches!(e, PlanError::NotWritable { .. }), "{e}");
            assert!(
                e.to_string().contains("ip saddr 10.0.0.0/8") && e.to_string().contains("fix:"),
                "{e}"
            );
        }
        let bad = Plan {
            placement: Placement::OwnTable {
                table: "braid; drop".into(),
                priority: 0,
            },
            rules: vec![],
        };
        assert!(matches!(bad.render(), Err(PlanError::BadTable(_))));
    }
}
