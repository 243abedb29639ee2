//! Parsing of `nft -j list ruleset` into the [`Ruleset`] model, through the `nftables` crate's
//! types: tables, chains and sets first, then every rule's statements.
//!
//! The document is read one object at a time. The crate's `NfObject` is an untagged enum, so a
//! single object it does not know would otherwise fail the whole document; in nftables 0.6.3
//! that happens for named verdict maps (`map m { type inet_service : verdict; }`) and for any
//! rule with an expression it lacks (a `meta` key it does not list, a statement newer than it).
//! Such a rule becomes a rule whose match and verdict are uninterpreted, quoting its JSON; a
//! table or chain nothing could read is listed in [`Ruleset::unreadable`]; a set or map nothing
//! could read is named in the notes, and every lookup in it is uninterpreted. Nothing here fails or panics on a rule.

use std::collections::{BTreeMap, HashMap};

use braid_sys::nftables::{expression_text, rule_text, statement_text};
use nftables::expr::{Expression, FibFlag, FibResult, MetaKey, NamedExpression, Payload, SetItem};
use nftables::schema::{Chain as NftChain, NfListObject, NfObject, Rule as NftRule};
use nftables::stmt::{Match as NftMatch, Operator, Statement, VerdictMap};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};
use serde::Deserialize;

use super::iptables::NON_TERMINAL_TARGETS;
use super::model::{BaseChain, Chain, ChainKind, CtState, Family, Hook, Match, Origin, Policy};
use super::model::{PortRange, Protocol, Rule, Ruleset, Table, TableFamily, Verdict, L4};

/// Why the output of `nft -j list ruleset` could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum NftParseError {
    /// Not a JSON document with an `nftables` array.
    #[error("it is not nft's JSON ({0}); fix: check that `nft -j list ruleset` prints a document with an \"nftables\" array (nftables 0.9.3 or newer)")]
    NotJson(serde_json::Error),
}

/// The document, with each object kept raw so that each can be deserialized on its own.
#[derive(Deserialize)]
struct Document {
    nftables: Vec<serde_json::Value>,
}

/// Named sets by (family, table, name): their elements.
type Sets = HashMap<(NfFamily, String, String), Vec<Expression<'static>>>;

/// Parses `nft -j list ruleset` (nft 0.9.3 and newer; checked against 1.0.6).
pub fn parse_nft_json(text: &str) -> Result<Ruleset, NftParseError> {
    let doc: Document = serde_json::from_str(text).map_err(NftParseError::NotJson)?;
    let mut ruleset = Ruleset {
        source: "nft -j list ruleset".into(),
        ..Ruleset::default()
    };
    // Each object on its own, in document order; `Err` keeps one the crate could not read.
    let objects: Vec<Result<NfListObject, serde_json::Value>> = (doc.nftables.into_iter())
        .filter_map(|value| match NfObject::deserialize(&value) {
            Ok(NfObject::ListObject(o)) => Some(Ok(o)),
            // A listing holds no commands.
            Ok(NfObject::CmdObject(_)) => None,
            Err(_) => Some(Err(value)),
        })
        .collect();
    let mut sets = Sets::new();
    for object in &objects {
        match object {
            Ok(NfListObject::Table(t)) => {
                table_mut(&mut ruleset, &t.family, &t.name);
            }
            Ok(NfListObject::Chain(c)) => {
                let table = table_mut(&mut ruleset, &c.family, &c.table);
                table.chains.push(chain(c));
            }
            Ok(NfListObject::Set(s)) => {
                let key = (s.family, s.table.to_string(), s.name.to_string());
                sets.insert(key, s.elem.as_deref().unwrap_or_default().to_vec());
            }
            _ => {}
        };
    }
    // Rules last, in order, once every chain exists.
    for object in &objects {
        match object {
            Ok(NfListObject::Rule(r)) => {
                let parsed = rules(r, &sets);
                let table = table_mut(&mut ruleset, &r.family, &r.table);
                table.has_xt |= r.expr.iter().any(|s| matches!(s, Statement::XT(_)));
                if let Some(c) = table.chains.iter_mut().find(|c| c.name == r.chain) {
                    c.rules.extend(parsed);
                }
            }
            Ok(_) => {}
            Err(value) => unread(&mut ruleset, value),
        }
    }
    Ok(ruleset)
}

fn table_mut<'r>(ruleset: &'r mut Ruleset, family: &NfFamily, name: &str) -> &'r mut Table {
    let family = table_family(family);
    let i = match (ruleset.tables.iter()).position(|t| t.family == family && t.name == name) {
        Some(i) => i,
        None => {
            ruleset.tables.push(Table {
                family,
                name: name.to_string(),
                origin: Origin::Nft,
                has_xt: false,
                chains: Vec::new(),
            });
            ruleset.tables.len() - 1
        }
    };
    &mut ruleset.tables[i]
}

fn table_family(f: &NfFamily) -> TableFamily {
    match f {
        NfFamily::IP => TableFamily::Ip,
        NfFamily::IP6 => TableFamily::Ip6,
        NfFamily::INet => TableFamily::Inet,
        NfFamily::ARP => TableFamily::Other("arp".into()),
        NfFamily::Bridge => TableFamily::Other("bridge".into()),
        NfFamily::NetDev => TableFamily::Other("netdev".into()),
    }
}

fn chain(c: &NftChain) -> Chain {
    let base = match (&c._type, &c.hook) {
        (Some(kind), Some(hook)) => Some(BaseChain {
            kind: match kind {
                NfChainType::Filter => ChainKind::Filter,
                NfChainType::NAT => ChainKind::Nat,
                NfChainType::Route => ChainKind::Route,
            },
            hook: match hook {
                NfHook::Ingress => Hook::Ingress,
                NfHook::Prerouting => Hook::Prerouting,
                NfHook::Input => Hook::Input,
                NfHook::Forward => Hook::Forward,
                NfHook::Output => Hook::Output,
                NfHook::Postrouting => Hook::Postrouting,
                NfHook::Egress => Hook::Egress,
            },
            priority: c.prio.unwrap_or(0),
            policy: match c.policy {
                Some(NfChainPolicy::Drop) => Policy::Drop,
                _ => Policy::Accept,
            },
        }),
        _ => None,
    };
    Chain {
        name: c.name.to_string(),
        base,
        rules: Vec::new(),
    }
}

/// What every object has: enough to place one the crate could not read.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Head {
    family: String,
    table: String,
    name: String,
    chain: String,
    handle: Option<u64>,
    expr: Option<serde_json::Value>,
}

/// An object the crate could not read: a rule becomes an uninterpreted rule in its chain; a
/// table or chain is listed as unreadable; anything else (a verdict map, a counter) is left out,
/// and lookups in a set or map left out are uninterpreted.
fn unread(ruleset: &mut Ruleset, value: &serde_json::Value) {
    let Ok(map) = BTreeMap::<String, Head>::deserialize(value) else {
        ruleset.unreadable.push(value.to_string());
        return;
    };
    for (kind, head) in map {
        match kind.as_str() {
            "rule" => {
                let expr = head
                    .expr
                    .as_ref()
                    .map(|e| e.to_string())
                    .unwrap_or_default();
                let text = format!(
                    "{} {} {} handle {}: {expr}",
                    head.family,
                    head.table,
                    head.chain,
                    head.handle.unwrap_or(0)
                );
                let rule = Rule {
                    matches: vec![Match::Uninterpreted(
                        "a rule the nftables crate cannot read".into(),
                    )],
                    verdict: Verdict::Uninterpreted("its verdict".into()),
                    text,
                };
                let chain = (ruleset.tables.iter_mut())
                    .filter(|t| t.family.to_string() == head.family && t.name == head.table)
                    .flat_map(|t| t.chains.iter_mut())
                    .find(|c| c.name == head.chain);
                match chain {
                    Some(c) => c.rules.push(rule),
                    None => ruleset.unreadable.push(value.to_string()),
                }
            }
            "table" | "chain" => ruleset.unreadable.push(value.to_string()),
            "set" | "map" => ruleset.notes.push(format!(
                "the nftables crate cannot read {kind} {} {} {}; lookups in it are uninterpreted",
                head.family, head.table, head.name
            )),
            _ => {}
        }
    }
}

/// One nft rule; a verdict map becomes one rule per entry.
fn rules(r: &NftRule, sets: &Sets) -> Vec<Rule> {
    let text = format!(
        "{} {} {} handle {}: {}",
        table_family(&r.family),
        r.table,
        r.chain,
        r.handle.unwrap_or(0),
        rule_text(&r.expr)
    );
    let ctx = Ctx {
        sets,
        family: r.family,
        table: &r.table,
    };
    let mut matches = Vec::new();
    let mut verdict = Verdict::Continue;
    let mut vmap = None;
    for stmt in r.expr.iter() {
        match stmt {
            Statement::Match(m) => matches.extend(ctx.match_of(m)),
            Statement::VerdictMap(v) => vmap = Some(v),
            Statement::XT(xt) => match xt_of(xt.as_ref()) {
                Xt::Target(v) => verdict = v,
                Xt::Match(Some(m)) => matches.push(m),
                Xt::Match(None) => {}
            },
            // Statements that do not filter.
            Statement::Counter(_)
            | Statement::Log(_)
            | Statement::Mangle(_)
            | Statement::Set(_)
            | Statement::Notrack => {}
            s => match verdict_of(s) {
                Some(v) => verdict = v,
                None => matches.push(Match::Uninterpreted(statement_text(s))),
            },
        }
    }
    let rule = Rule {
        matches,
        verdict,
        text,
    };
    match vmap {
        Some(vmap) => ctx.expand(vmap, rule),
        None => vec![rule],
    }
}

impl Ctx<'_> {
    /// A rule ending in `KEY vmap { K1 : V1, … }`: one rule per entry, each with `KEY == Kn`
    /// added to `rule`'s matches and `Vn` as its verdict.
    fn expand(&self, vmap: &VerdictMap, rule: Rule) -> Vec<Rule> {
        let key_is = |right: &Expression| {
            self.match_of(&NftMatch {
                left: vmap.key.clone(),
                right: right.clone(),
                op: Operator::EQ,
            })
        };
        let entries = match &vmap.data {
            Expression::Named(NamedExpression::Set(items)) => items,
            // A named map (`vmap @name`): its key still says what it can match (`tcp dport`).
            data => {
                let mut matches = rule.matches;
                matches.extend(key_is(data));
                let what = format!("verdict map {}", expression_text(data));
                return vec![Rule {
                    matches,
                    verdict: Verdict::Uninterpreted(what),
                    text: rule.text,
                }];
            }
        };
        (entries.iter())
            .map(|item| {
                let mut matches = rule.matches.clone();
                let verdict = match vmap_entry(item) {
                    Some((key, verdict)) => {
                        matches.extend(key_is(key));
                        verdict
                    }
                    None => {
                        let entry = serde_json::to_string(item).unwrap_or_default();
                        let what = format!("verdict map entry {entry}");
                        matches.push(Match::Uninterpreted(what.clone()));
                        Verdict::Uninterpreted(what)
                    }
                };
                Rule {
                    matches,
                    verdict,
                    text: rule.text.clone(),
                }
            })
            .collect()
    }
}

/// A verdict map entry `KEY : VERDICT`. The crate reads `[22, {"accept": null}]` as a list
/// (its untagged `SetItem` tries a plain element first), so that shape is accepted too.
fn vmap_entry<'e, 'a>(item: &'e SetItem<'a>) -> Option<(&'e Expression<'a>, Verdict)> {
    match item {
        SetItem::Mapping(k, Expression::Verdict(v)) => Some((k, verdict_of_expr(v))),
        SetItem::MappingStatement(k, s) => Some((k, verdict_of(s)?)),
        SetItem::Element(Expression::List(pair)) => match pair.as_slice() {
            [k, Expression::Verdict(v)] => Some((k, verdict_of_expr(v))),
            _ => None,
        },
        _ => None,
    }
}

fn verdict_of(s: &Statement) -> Option<Verdict> {
    Some(match s {
        Statement::Accept(_) => Verdict::Accept,
        Statement::Drop(_) => Verdict::Drop,
        Statement::Reject(_) => Verdict::Reject,
        Statement::Return(_) => Verdict::Return,
        Statement::Continue(_) => Verdict::Continue,
        Statement::Jump(t) => Verdict::Jump(t.target.to_string()),
        Statement::Goto(t) => Verdict::Goto(t.target.to_string()),
        Statement::Queue(_) => Verdict::Uninterpreted(statement_text(s)),
        _ => return None,
    })
}

fn verdict_of_expr(v: &nftables::expr::Verdict) -> Verdict {
    use nftables::expr::Verdict as V;
    match v {
        V::Accept => Verdict::Accept,
        V::Drop => Verdict::Drop,
        V::Continue => Verdict::Continue,
        V::Return => Verdict::Return,
        V::Jump(t) => Verdict::Jump(t.target.to_string()),
        V::Goto(t) => Verdict::Goto(t.target.to_string()),
    }
}

/// What iptables-nft put in an `xt` statement: nft shows only its name.
enum Xt {
    Target(Verdict),
    Match(Option<Match>),
}

#[derive(Deserialize)]
struct XtStatement {
    #[serde(rename = "type")]
    kind: String,
    name: String,
}

fn xt_of(xt: Option<&serde_json::Value>) -> Xt {
    let Some(XtStatement { kind, name }) = xt.and_then(|v| XtStatement::deserialize(v).ok()) else {
        return Xt::Match(Some(Match::Uninterpreted("an iptables extension".into())));
    };
    if kind == "target" {
        return Xt::Target(match name.as_str() {
            "ACCEPT" => Verdict::Accept,
            "DROP" => Verdict::Drop,
            "REJECT" => Verdict::Reject,
            n if NON_TERMINAL_TARGETS.contains(&n) => Verdict::Continue,
            n => Verdict::Uninterpreted(format!("iptables target {n}")),
        });
    }
    Xt::Match((name != "comment").then(|| {
        Match::Uninterpreted(format!(
            "iptables match {name} (shown by iptables-save, not by nft)"
        ))
    }))
}

/// Where a rule is, for resolving `@set` lookups.
struct Ctx<'a> {
    sets: &'a Sets,
    family: NfFamily,
    table: &'a str,
}

impl Ctx<'_> {
    /// The matches one nft `match` statement makes.
    fn match_of(&self, m: &NftMatch) -> Vec<Match> {
        let text = statement_text(&Statement::Match(m.clone()));
        let uninterpreted = || Match::Uninterpreted(text.clone());
        let negate = match m.op {
            Operator::EQ | Operator::IN => false,
            Operator::NEQ => true,
            _ => return vec![uninterpreted()],
        };
        let right = &m.right;
        let Expression::Named(left) = &m.left else {
            return vec![uninterpreted()];
        };
        match left {
            NamedExpression::Payload(Payload::PayloadField(p)) => self
                .payload(&p.protocol, &p.field, right, negate)
                .unwrap_or_else(|| vec![None])
                .into_iter()
                .map(|m| m.unwrap_or_else(uninterpreted))
                .collect(),
            NamedExpression::Meta(meta) => {
                vec![meta_match(meta.key, right, negate).unwrap_or_else(uninterpreted)]
            }
            NamedExpression::CT(ct) if ct.key == "state" && ct.dir.is_none() => {
                let states =
                    names(right).and_then(|n| n.iter().map(|s| CtState::parse(s)).collect());
                vec![states.map_or_else(uninterpreted, |any_of| Match::CtState { any_of, negate })]
            }
            // A new connection straight to this host has no NAT, expectation or reply yet.
            NamedExpression::CT(ct) if ct.key == "status" => vec![Match::Fixed {
                holds: negate,
                text,
            }],
            // At the input hook, a unicast packet to this host has a local destination.
            NamedExpression::Fib(f)
                if f.result == FibResult::Type
                    && f.flags.len() == 1
                    && f.flags.contains(&FibFlag::Daddr) =>
            {
                let local = names(right).map(|n| n.iter().any(|t| t == "local"));
                vec![match local {
                    Some(local) => Match::Fixed {
                        holds: local != negate,
                        text,
                    },
                    None => uninterpreted(),
                }]
            }
            _ => vec![uninterpreted()],
        }
    }

    /// A header field match; `None` entries stand for "uninterpreted, as written".
    fn payload(
        &self,
        proto: &str,
        field: &str,
        right: &Expression,
        negate: bool,
    ) -> Option<Vec<Option<Match>>> {
        let l4 = match proto {
            "tcp" => Some(L4::Tcp),
            "udp" => Some(L4::Udp),
            _ => None,
        };
        let implied = |l4: L4| {
            Some(Match::Protocol {
                any_of: vec![Protocol::L4(l4)],
                negate: false,
            })
        };
        Some(match (proto, field) {
            ("tcp" | "udp" | "th", "dport") => match self.ports(right) {
                Some(ports) => vec![Some(Match::Dport {
                    proto: l4,
                    ports,
                    negate,
                })],
                None => vec![l4.and_then(implied), None],
            },
            ("tcp" | "udp", _) => vec![l4.and_then(implied), None],
            ("ip", "protocol") => vec![Some(Match::Family(Family::V4)), protocols(right, negate)],
            ("ip6", "nexthdr") => vec![Some(Match::Family(Family::V6)), protocols(right, negate)],
            ("ip", _) => vec![Some(Match::Family(Family::V4)), None],
            ("ip6", _) => vec![Some(Match::Family(Family::V6)), None],
            // A match on another transport's header implies that transport: never TCP or UDP.
            (
                "udplite" | "sctp" | "dccp" | "icmp" | "icmpv6" | "esp" | "ah" | "comp" | "igmp"
                | "gre",
                _,
            ) => vec![Some(Match::Protocol {
                any_of: vec![Protocol::Other(proto.to_string())],
                negate: false,
            })],
            _ => return None,
        })
    }

    /// Port ranges of a dport match; `None` when something cannot be resolved.
    fn ports(&self, right: &Expression) -> Option<Vec<PortRange>> {
        let port = |e: &Expression| match e {
            Expression::Number(n) => u16::try_from(*n).ok(),
            _ => None,
        };
        Some(match right {
            Expression::Number(_) => vec![PortRange::one(port(right)?)],
            Expression::String(s) => match s.strip_prefix('@') {
                Some(name) => {
                    let key = (self.family, self.table.to_string(), name.to_string());
                    let elems = self.sets.get(&key)?;
                    self.all_ports(elems)?
                }
                None => vec![PortRange::one(service_port(s)?)],
            },
            Expression::Range(r) => vec![PortRange {
                first: port(&r.range[0])?,
                last: port(&r.range[1])?,
            }],
            Expression::List(items) => self.all_ports(items)?,
            Expression::Named(NamedExpression::Set(items)) => {
                let mut out = Vec::new();
                for item in items {
                    let SetItem::Element(e) = item else {
                        return None;
                    };
                    out.extend(self.ports(e)?);
                }
                out
            }
            Expression::Named(NamedExpression::Elem(e)) => self.ports(&e.val)?,
            _ => return None,
        })
    }

    fn all_ports(&self, items: &[Expression]) -> Option<Vec<PortRange>> {
        let mut out = Vec::new();
        for e in items {
            out.extend(self.ports(e)?);
        }
        Some(out)
    }
}

/// `meta l4proto`, `meta nfproto`, `iifname`; `None` for other keys or unreadable values.
fn meta_match(key: MetaKey, right: &Expression, negate: bool) -> Option<Match> {
    match key {
        MetaKey::L4proto => protocols(right, negate),
        MetaKey::Nfproto | MetaKey::Protocol => {
            let family = match names(right)?.as_slice() {
                [one] if one == "ipv4" || one == "ip" => Family::V4,
                [one] if one == "ipv6" || one == "ip6" => Family::V6,
                _ => return None,
            };
            Some(Match::Family(match (family, negate) {
                (f, false) => f,
                (Family::V4, true) => Family::V6,
                (Family::V6, true) => Family::V4,
            }))
        }
        MetaKey::Iifname | MetaKey::Iif => Some(Match::Iifname {
            any_of: names(right)?,
            negate,
        }),
        _ => None,
    }
}

/// `meta l4proto { tcp, udp }`, `ip protocol 6`.
fn protocols(right: &Expression, negate: bool) -> Option<Match> {
    let any_of = values(right)?
        .into_iter()
        .map(|v| Protocol::parse(&v))
        .collect();
    Some(Match::Protocol { any_of, negate })
}

/// The string values of a match's right-hand side (`"lo"`, `{ "eth0", "eth1" }`,
/// `["established", "related"]`).
fn names(right: &Expression) -> Option<Vec<String>> {
    let v = values(right)?;
    (!v.is_empty()).then_some(v)
}

/// The values of a right-hand side as text: strings and numbers.
fn values(right: &Expression) -> Option<Vec<String>> {
    let one = |e: &Expression| match e {
        Expression::String(s) => Some(s.to_string()),
        Expression::Number(n) => Some(n.to_string()),
        Expression::Named(NamedExpression::Elem(e)) => match e.val.as_ref() {
            Expression::String(s) => Some(s.to_string()),
            _ => None,
        },
        _ => None,
    };
    match right {
        Expression::List(items) => items.iter().map(one).collect(),
        Expression::Named(NamedExpression::Set(items)) => (items.iter())
            .map(|i| match i {
                SetItem::Element(e) => one(e),
                _ => None,
            })
            .collect(),
        e => Some(vec![one(e)?]),
    }
}

/// The ports of the service names nft might print instead of a number.
fn service_port(name: &str) -> Option<u16> {
    Some(match name {
        "ssh" => 22,
        "http" => 80,
        "https" => 443,
        "domain" => 53,
        "smtp" => 25,
        "telnet" => 23,
        _ => return None,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::firewall::eval::{admits, Admission, Probe};

    /// `nft -f fixtures/plain.nft` in a throwaway namespace (nft 1.0.6), then
    /// `nft -j list ruleset`: an `inet filter` table with sets, ranges, a reject, an address
    /// match, a negation and a jump.
    pub(crate) const PLAIN: &str = include_str!("fixtures/plain.nft.json");
    /// The same for `fixtures/exotic.nft`: everything nft 1.0.6 on this kernel accepts that a
    /// host firewall might hold (named, dynamic and concatenated sets, verdict maps, meters,
    /// limits, quotas, `ct count`, `numgen`, `jhash`, marks, `fib`, `th dport`).
    pub(crate) const EXOTIC: &str = include_str!("fixtures/exotic.nft.json");
    /// Captured the same way: verdict maps, a named interval set, `meta nfproto`, a rate limit,
    /// and a nat chain at the input hook (which must be ignored).
    pub(crate) const VMAP: &str = include_str!("fixtures/vmap.nft.json");
    /// What nft shows of a ufw-like iptables-nft ruleset: conntrack and multiport are opaque `xt`.
    pub(crate) const NFT_UFW_LIKE: &str = include_str!("fixtures/ufw-like.nft.json");
    /// Real ufw 0.36.2 through iptables-nft (see `iptables::tests::real_ufw`), as nft shows it.
    pub(crate) const UFW: &str = include_str!("fixtures/ufw.nft.json");
    /// Real firewalld 1.3.3 (Debian 12, nftables backend) run in a throwaway namespace, public
    /// zone plus `--add-service=https`, `--add-port=60000-60010/udp`, a rich rule admitting TCP
    /// 3306 from 10.0.0.0/8 and one rejecting TCP 23; `fixtures/firewalld.nft` is its text form.
    pub(crate) const FIREWALLD: &str = include_str!("fixtures/firewalld.nft.json");

    pub(crate) fn nft(text: &str) -> Ruleset {
        parse_nft_json(text).unwrap()
    }

    fn tcp(port: u16) -> Probe {
        Probe::tcp(port, Family::V4)
    }

    #[test]
    fn real_nft_output_set_and_range_accept() {
        let r = nft(PLAIN);
        assert!(r.unreadable.is_empty() && r.notes.is_empty(), "{r:?}");
        for port in [22, 8388, 60000, 60005, 60010] {
            for family in [Family::V4, Family::V6] {
                let a = admits(&r, Probe::tcp(port, family));
                assert_eq!(a, Admission::Admitted, "port {port} {family:?}");
            }
        }
        assert_eq!(
            admits(&r, Probe::udp(8388, Family::V6)),
            Admission::Admitted
        );
        assert!(matches!(
            admits(&r, Probe::udp(22, Family::V4)),
            Admission::Blocked { by, .. } if by.contains("handle 15: reject")
        ));
    }

    #[test]
    fn real_nft_output_ct_state_and_lo_do_not_admit_new_syn() {
        let r = nft(PLAIN);
        // 8080 passes ct state, iifname lo and the sets, then hits `tcp dport != 80 drop`.
        let a = admits(&r, tcp(8080));
        assert!(
            matches!(&a, Admission::Blocked { by, .. } if by.contains("tcp dport != 80 drop")),
            "{a:?}"
        );
        assert!(
            matches!(admits(&r, tcp(23)), Admission::Blocked { by, .. } if by.contains("tcp dport 23 reject"))
        );
        // 80 escapes the != 80 drop, jumps to myc (only 443 there) and meets the final reject.
        assert!(
            matches!(admits(&r, tcp(80)), Admission::Blocked { by, .. } if by.contains("handle 15: reject"))
        );
        // 443 would be accepted in myc, but the `!= 80` drop comes first.
        assert!(matches!(admits(&r, tcp(443)), Admission::Blocked { .. }));
    }

    #[test]
    fn source_restricted_accept_is_unsure_quoting_the_rule() {
        let r = nft(PLAIN);
        let a = admits(&r, tcp(3306));
        assert!(
            matches!(&a, Admission::Unsure { doubts, .. } if doubts[0].contains("ip saddr 10.0.0.0/8 tcp dport 3306 accept")),
            "{a:?}"
        );
        // IPv6 packets do not match `ip saddr`, so there the answer is certain.
        assert!(matches!(
            admits(&r, Probe::tcp(3306, Family::V6)),
            Admission::Blocked { .. }
        ));
    }

    #[test]
    fn vmaps_named_sets_and_nfproto_are_interpreted() {
        let r = nft(VMAP);
        assert_eq!(admits(&r, tcp(22)), Admission::Admitted);
        assert!(matches!(admits(&r, tcp(23)), Admission::Blocked { .. }));
        assert_eq!(admits(&r, tcp(443)), Admission::Admitted);
        assert_eq!(admits(&r, tcp(1005)), Admission::Admitted);
        assert!(matches!(admits(&r, tcp(1011)), Admission::Blocked { .. }));
        assert_eq!(
            admits(&r, Probe::tcp(8388, Family::V6)),
            Admission::Admitted
        );
        assert!(matches!(admits(&r, tcp(8388)), Admission::Blocked { .. }));
        // A rate limit cannot be judged: unsure, quoting it.
        let a = admits(&r, tcp(2222));
        assert!(
            matches!(&a, Admission::Unsure { doubts, .. } if doubts[0].contains("limit rate 5")),
            "{a:?}"
        );
    }

    #[test]
    fn iptables_nft_xt_rules_are_unsure_instead_of_blocked() {
        let r = nft(NFT_UFW_LIKE);
        // 8388 meets the opaque conntrack and multiport rules before the policy drop.
        let a = admits(&r, tcp(8388));
        assert!(
            matches!(&a, Admission::Unsure { doubts, .. } if doubts[0].contains("could not interpret") && doubts[0].contains("conntrack")),
            "{a:?}"
        );
        assert!(r.has_xt(&TableFamily::Ip));
    }

    #[test]
    fn real_ufw_through_nft_is_flagged_for_rereading_with_iptables_save() {
        let r = nft(UFW);
        assert!(r.has_xt(&TableFamily::Ip) && r.has_xt(&TableFamily::Ip6));
        assert!(r.unreadable.is_empty() && r.notes.is_empty(), "{r:?}");
        // What nft alone shows is enough for ports ufw admits before any xt rule matters.
        assert!(matches!(admits(&r, tcp(8388)), Admission::Unsure { .. }));
    }

    #[test]
    fn real_firewalld_is_decided_without_doubts() {
        let r = nft(FIREWALLD);
        assert!(r.unreadable.is_empty() && r.notes.is_empty(), "{r:?}");
        for family in [Family::V4, Family::V6] {
            for probe in [
                Probe::tcp(22, family),
                Probe::tcp(443, family),
                Probe::udp(60000, family),
            ] {
                assert_eq!(admits(&r, probe), Admission::Admitted, "{probe:?}");
            }
            for probe in [
                Probe::tcp(8388, family),
                Probe::udp(8388, family),
                Probe::tcp(23, family),
            ] {
                let a = admits(&r, probe);
                assert!(matches!(a, Admission::Blocked { .. }), "{probe:?}: {a:?}");
            }
        }
        let a = admits(&r, tcp(8388));
        assert!(
            matches!(&a, Admission::Blocked { by, chain } if by.contains("filter_IN_public handle") && by.ends_with("reject with icmpx admin-prohibited`") && chain.to_string() == "inet firewalld filter_INPUT"),
            "{a:?}"
        );
        assert!(matches!(admits(&r, tcp(3306)), Admission::Unsure { .. }));
    }

    #[test]
    fn exotic_ruleset_parses_rule_by_rule_and_never_fails() {
        let r = nft(EXOTIC);
        let table = r.tables.iter().find(|t| t.name == "f").unwrap();
        let input = table.chain("input").unwrap();
        // 28 rules, the three vmaps expanded to 3 + 1 + 2 entries.
        assert_eq!(input.rules.len(), 28 - 3 + 6, "{:#?}", input.rules);
        // nftables 0.6.3 cannot read the named verdict map `portv`: the lookup in it stays
        // uninterpreted, and every TCP answer after `ip saddr @blocklist drop` is a doubt.
        assert_eq!(
            r.notes,
            ["the nftables crate cannot read map inet f portv; lookups in it are uninterpreted"]
        );
        let vmap = input
            .rules
            .iter()
            .find(|r| r.text.contains("vmap @portv"))
            .unwrap();
        assert_eq!(
            vmap.verdict,
            Verdict::Uninterpreted("verdict map @portv".into())
        );
        assert_eq!(admits(&r, tcp(22)), Admission::Admitted);
        assert!(matches!(admits(&r, tcp(23)), Admission::Blocked { .. }));
        let a = admits(&r, tcp(7005));
        assert!(
            matches!(&a, Admission::Unsure { doubts, .. } if doubts.iter().any(|d| d.contains("ip saddr @blocklist"))),
            "{a:?}"
        );
        // IPv6 skips the IPv4-only rules: `th dport 7005 accept` decides.
        assert_eq!(
            admits(&r, Probe::udp(7005, Family::V6)),
            Admission::Admitted
        );
        // `ct status dnat` is decided (false) and `fib daddr type local` too (true): the only
        // doubt left for TCP 7008 over IPv6 is the map nothing could read.
        let a = admits(&r, Probe::tcp(7008, Family::V6));
        assert!(
            matches!(&a, Admission::Unsure { otherwise, doubts }
                if otherwise.contains("handle 30") && doubts.len() == 1 && doubts[0].contains("@portv")),
            "{a:?}"
        );
    }

    #[test]
    fn unreadable_rule_is_kept_as_an_uninterpreted_rule() {
        // `meta time` is newer than the crate's MetaKey list.
        let text = r#"{"nftables": [
            {"table": {"family": "inet", "name": "t", "handle": 1}},
            {"chain": {"family": "inet", "table": "t", "name": "input", "handle": 1, "type": "filter", "hook": "input", "prio": 0, "policy": "drop"}},
            {"rule": {"family": "inet", "table": "t", "chain": "input", "handle": 2, "expr": [{"match": {"op": "<", "left": {"meta": {"key": "time"}}, "right": 5}}, {"accept": null}]}},
            {"chain": {"family": "inet", "table": "t", "name": "weird", "handle": 3, "type": "filter", "hook": "sideways", "prio": 0}}
        ]}"#;
        let r = nft(text);
        let input = r.tables[0].chain("input").unwrap();
        assert_eq!(input.rules.len(), 1);
        assert!(
            input.rules[0].text.contains("\"time\""),
            "{:?}",
            input.rules[0]
        );
        let a = admits(&r, tcp(22));
        assert!(
            matches!(&a, Admission::Unsure { doubts, .. } if doubts[0].contains("a rule the nftables crate cannot read")),
            "{a:?}"
        );
        assert_eq!(r.unreadable.len(), 1, "{:?}", r.unreadable);
    }

    /// Every node of the vmap fixture replaced, one at a time, by values of the wrong shape:
    /// parsing and judging never panic.
    #[test]
    fn mutated_real_output_never_panics() {
        fn nodes(v: &serde_json::Value, path: Vec<String>, out: &mut Vec<Vec<String>>) {
            out.push(path.clone());
            let children: Vec<(String, &serde_json::Value)> = match v {
                serde_json::Value::Object(o) => o.iter().map(|(k, v)| (k.clone(), v)).collect(),
                serde_json::Value::Array(a) => a
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (i.to_string(), v))
                    .collect(),
                _ => return,
            };
            for (k, child) in children {
                let mut p = path.clone();
                p.push(k);
                nodes(child, p, out);
            }
        }
        let doc: serde_json::Value = serde_json::from_str(VMAP).unwrap();
        let mut paths = Vec::new();
        nodes(&doc, Vec::new(), &mut paths);
        let wrong = [
            serde_json::json!(null),
            serde_json::json!(70000),
            serde_json::json!("@missing"),
            serde_json::json!([[]]),
            serde_json::json!({"set": [{"range": [9, "x"]}]}),
        ];
        for path in paths.iter().skip(1) {
            for w in &wrong {
                let mut d = doc.clone();
                let mut node = &mut d;
                for k in path {
                    node = match node {
                        serde_json::Value::Array(a) => &mut a[k.parse::<usize>().unwrap()],
                        other => &mut other[k.as_str()],
                    };
                }
                *node = w.clone();
                if let Ok(r) = parse_nft_json(&d.to_string()) {
                    let _ = admits(&r, tcp(22));
                    let _ = admits(&r, Probe::udp(7005, Family::V6));
                }
            }
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for text in [
            "",
            "null",
            "{}",
            "[1,2]",
            "{\"nftables\": 3}",
            "{\"nftables\": [1, \"x\", {\"rule\": 5}]}",
        ] {
            let _ = parse_nft_json(text);
        }
        let e = parse_nft_json("<html>").unwrap_err();
        assert!(e.to_string().contains("fix:"), "{e}");
    }
}
