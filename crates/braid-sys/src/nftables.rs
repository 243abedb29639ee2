//! braid's own nftables tables, built from the `nftables` crate's types and applied as one
//! JSON transaction (`nft -j -f -`); and those types printed in nft's own syntax.
//!
//! braid owns whole tables (`inet braid` for the capture) and never edits anyone else's, so
//! removal is one atomic `delete table` and a reload is "delete and re-create" in one transaction
//! ([`replace_table`]). Every value in a rule is a typed JSON string or number, so no name can
//! break out of its place the way it could in a text template; interface names are [`IfName`]s,
//! checked when the config was read.
//!
//! ```text
//!  CaptureRules ─► batch() ─► nftables::schema::Nftables ─┬─► apply(): nft -j -f -
//!                                                         └─► batch_text(): nft -f - syntax
//! ```
//!
//! The capture table steers LAN traffic: TCP to the redirect listener (a nat chain), UDP to the
//! transparent UDP socket with TPROXY (a filter chain at mangle priority), both decided by the
//! same rules: destinations in `capture` are always taken; the relay, the gateway itself,
//! destinations in `bypass` (the non-global ranges and the user's own) and destinations the
//! kernel routes through an interface that is not an uplink go out untouched.
//!
//! [`apply`] runs `nft -j -f -` itself rather than through the crate's
//! `helper::apply_ruleset`: in nftables 0.6.3 that helper leaves nft's stderr attached to ours
//! and returns an error with neither nft's message nor its exit code (nftables-rs issue #209),
//! and both are what a user needs to fix a rejected ruleset.

use std::io::Write;
use std::net::IpAddr;

use ipnet::IpNet;
use std::process::{Command, Stdio};

use nftables::batch::Batch;
use nftables::expr::{BinaryOperation, Expression, FibFlag, MetaKey, NamedExpression, SetItem};
use nftables::expr::{Fib, FibResult, Meta, Payload, PayloadField, Prefix, Verdict};
use nftables::schema::{Chain, NfCmd, NfListObject, NfObject, Nftables, Rule, Set, Table};
use nftables::schema::{SetFlag, SetType, SetTypeValue};
use nftables::stmt::{Counter, Match, Operator, QuotaOrQuotaRef, Reject, RejectType, Statement};
use nftables::stmt::{Mangle, TProxy, NAT};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};
use serde::Serialize;

use crate::link::IfName;

/// Why an nftables change failed.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// The `nft` program is not installed.
    #[error("the nft program was not found ({0}); fix: apt-get install nftables")]
    NotInstalled(std::io::Error),
    /// nft could not be started or fed (other than not being installed).
    #[error("running nft failed: {0}; fix: check that braid may run /usr/sbin/nft (as root)")]
    Io(std::io::Error),
    /// nft rejected the ruleset.
    #[error("nft rejected braid's ruleset (exit {status}): {stderr}; fix: check that braid runs as root and that the kernel has nf_tables with what the ruleset uses (the capture table needs nat and redirect: CONFIG_NFT_NAT, CONFIG_NFT_REDIR)")]
    Rejected {
        /// Exit status.
        status: i32,
        /// What nft printed.
        stderr: String,
    },
    /// The batch could not be encoded as JSON (a bug in braid or the nftables crate).
    #[error("cannot encode braid's ruleset as JSON: {0}; fix: report this as a bug in braid")]
    Encode(serde_json::Error),
}

/// What the capture table redirects.
#[derive(Debug, Clone, Default)]
pub struct CaptureRules {
    /// Table name inside family `inet`.
    pub table: String,
    /// LAN interfaces whose forwarded TCP is captured.
    pub lan: Vec<IfName>,
    /// Local port of the transparent listener.
    pub redirect_port: u16,
    /// Destinations never captured (the relay itself).
    pub exclude: Vec<IpAddr>,
    /// Destination ranges that go out directly (sets `bypass4`/`bypass6`): the non-global
    /// ranges and the user's `bypass`. Overlapping ranges are merged.
    pub bypass: Vec<IpNet>,
    /// Destination ranges captured even when `bypass` holds them (sets `capture4`/`capture6`).
    pub capture: Vec<IpNet>,
    /// The uplinks' interfaces: a destination the main routing table sends through any other
    /// interface (another LAN segment, a VPN) goes out directly. Empty: no such check.
    pub uplinks: Vec<IfName>,
    /// LAN UDP steered to a transparent socket with TPROXY, if wanted.
    pub udp: Option<UdpTproxy>,
}

/// Where TPROXY sends captured LAN UDP, and the mark that makes the policy routing deliver it
/// locally (`ip rule add fwmark MARK lookup TABLE`, `ip route add local default dev lo table
/// TABLE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpTproxy {
    /// Port of the transparent UDP sockets (IPv4 and IPv6).
    pub port: u16,
    /// Packet mark set on captured datagrams.
    pub mark: u32,
}

/// True for names the kernel accepts as interface names (see [`IfName`]), for names that come
/// from elsewhere than braid's config (another program's ruleset).
pub fn valid_ifname(name: &str) -> bool {
    name.parse::<IfName>().is_ok()
}

/// The `dstnat` priority of a nat prerouting chain.
const PRIO_DSTNAT: i32 = -100;
/// The `mangle` priority, where TPROXY runs (before routing decides the packet is forwarded).
const PRIO_MANGLE: i32 = -150;

/// A named set of one family's address ranges.
struct RangeSet {
    name: &'static str,
    v4: bool,
}

const BYPASS4: RangeSet = RangeSet {
    name: "bypass4",
    v4: true,
};
const BYPASS6: RangeSet = RangeSet {
    name: "bypass6",
    v4: false,
};
const CAPTURE4: RangeSet = RangeSet {
    name: "capture4",
    v4: true,
};
const CAPTURE6: RangeSet = RangeSet {
    name: "capture6",
    v4: false,
};

impl RangeSet {
    fn proto(&self) -> &'static str {
        if self.v4 {
            "ip"
        } else {
            "ip6"
        }
    }

    /// The set's elements from `ranges` (its family only, overlaps merged); `None` when empty.
    fn elements(&self, ranges: &[IpNet]) -> Option<Vec<Expression<'static>>> {
        let mine: Vec<IpNet> = (ranges.iter())
            .filter(|n| matches!(n, IpNet::V4(_)) == self.v4)
            .copied()
            .collect();
        let merged = IpNet::aggregate(&mine);
        (!merged.is_empty()).then(|| merged.iter().map(range_expr).collect())
    }

    /// `ip daddr @NAME`.
    fn daddr_in(&self) -> Statement<'static> {
        matches(
            payload(self.proto(), "daddr"),
            Operator::EQ,
            text(&format!("@{}", self.name)),
        )
    }
}

/// A range as a set element: the bare address for a single host, else `ADDR/LEN`.
fn range_expr(n: &IpNet) -> Expression<'static> {
    if n.prefix_len() == n.max_prefix_len() {
        return text(&n.addr().to_string());
    }
    Expression::Named(NamedExpression::Prefix(Prefix {
        addr: Box::new(text(&n.network().to_string())),
        len: n.prefix_len().into(),
    }))
}

/// Which of the table's base chains a rule list is for.
#[derive(Clone, Copy)]
enum Steer {
    /// `prerouting` (nat): LAN TCP to the redirect listener.
    Tcp,
    /// `capture_udp` (filter, mangle priority): LAN UDP to the transparent socket (not
    /// `tproxy`, a keyword in nft syntax).
    Udp(UdpTproxy),
}

impl Steer {
    /// The protocol the chain steers, as `meta l4proto` names it.
    fn proto(self) -> &'static str {
        match self {
            Steer::Tcp => "tcp",
            Steer::Udp(_) => "udp",
        }
    }
}

impl CaptureRules {
    /// The table as one transaction:
    /// ```text
    /// table inet NAME {
    ///   set bypass4 / bypass6 / capture4 / capture6 { type ipv4_addr|ipv6_addr; flags interval; … }
    ///   chain prerouting { type nat hook prerouting priority dstnat; policy accept; RULES(tcp) }
    ///   chain capture_udp { type filter hook prerouting priority mangle; policy accept; RULES(udp) } }
    /// ```
    /// with the rules of [`CaptureRules::chain_rules`]. Traffic to the gateway's own addresses
    /// is never captured (`fib daddr type`), nor is traffic to the relay. Empty sets, and the
    /// UDP chain when `udp` is `None`, are left out.
    pub fn batch(&self) -> Result<Nftables<'static>, NftError> {
        let mut batch = Batch::new();
        replace_table(&mut batch, &self.table);
        for (set, ranges) in [
            (BYPASS4, &self.bypass),
            (BYPASS6, &self.bypass),
            (CAPTURE4, &self.capture),
            (CAPTURE6, &self.capture),
        ] {
            if let Some(elem) = set.elements(ranges) {
                batch.add(NfListObject::Set(Box::new(Set {
                    family: NfFamily::INet,
                    table: self.table.clone().into(),
                    name: set.name.into(),
                    set_type: SetTypeValue::Single(if set.v4 {
                        SetType::Ipv4Addr
                    } else {
                        SetType::Ipv6Addr
                    }),
                    flags: Some([SetFlag::Interval].into_iter().collect()),
                    elem: Some(elem.into()),
                    ..Set::default()
                })));
            }
        }
        let mut chains = vec![("prerouting", NfChainType::NAT, PRIO_DSTNAT, Steer::Tcp)];
        if let Some(udp) = self.udp {
            chains.push((
                "capture_udp",
                NfChainType::Filter,
                PRIO_MANGLE,
                Steer::Udp(udp),
            ));
        }
        for (name, kind, prio, steer) in chains {
            batch.add(NfListObject::Chain(Chain {
                family: NfFamily::INet,
                table: self.table.clone().into(),
                name: name.into(),
                _type: Some(kind),
                hook: Some(NfHook::Prerouting),
                prio: Some(prio),
                policy: Some(NfChainPolicy::Accept),
                ..Chain::default()
            }));
            for expr in self.chain_rules(steer) {
                batch.add(NfListObject::Rule(Rule {
                    family: NfFamily::INet,
                    table: self.table.clone().into(),
                    chain: name.into(),
                    expr: expr.into(),
                    ..Rule::default()
                }));
            }
        }
        Ok(batch.to_nftables())
    }

    /// One base chain's rules, in order:
    /// ```text
    /// meta l4proto != udp return               iifname != { LAN } return        (UDP chain only)
    /// ip daddr { EXCLUDED-V4 } return          ip6 daddr { EXCLUDED-V6 } return
    /// LAN-MATCH ip daddr @capture4 ACTION      LAN-MATCH ip6 daddr @capture6 ACTION
    /// ip daddr @bypass4 return                 ip6 daddr @bypass6 return
    /// fib daddr oif exists fib daddr oifname != { UPLINKS } return
    /// LAN-MATCH ACTION
    /// ```
    /// where LAN-MATCH is `iifname { LAN } meta l4proto P fib daddr type != { local, broadcast,
    /// multicast }` and ACTION `redirect to :PORT` (TCP) or `meta mark set MARK tproxy to :PORT
    /// accept` (UDP). Rules whose set or list would be empty are left out, so a table without
    /// bypass, capture and uplinks is exactly the plain redirect braid always made. The UDP
    /// chain's first two rules let what it can never steer go after one rule each: it is a
    /// filter chain, so the kernel runs it for *every* packet the gateway receives, the bonded
    /// TCP bulk coming back over the uplinks included, where each later rule costs a set or FIB
    /// lookup per packet (in the unshaped lab the chain was 2 % of the machine's CPU). The nat
    /// chain sees only a connection's first packet and needs no such guard.
    fn chain_rules(&self, steer: Steer) -> Vec<Vec<Statement<'static>>> {
        let mut rules = Vec::new();
        if let Steer::Udp(_) = steer {
            rules.push(vec![
                matches(meta(MetaKey::L4proto), Operator::NEQ, text(steer.proto())),
                Statement::Return(None),
            ]);
            if !self.lan.is_empty() {
                rules.push(vec![
                    matches(
                        meta(MetaKey::Iifname),
                        Operator::NEQ,
                        set(self.lan.iter().map(|n| text(n.as_str()))),
                    ),
                    Statement::Return(None),
                ]);
            }
        }
        for (proto, v4) in [("ip", true), ("ip6", false)] {
            let addrs: Vec<Expression> = (self.exclude.iter())
                .filter(|a| a.is_ipv4() == v4)
                .map(|a| text(&a.to_string()))
                .collect();
            if !addrs.is_empty() {
                rules.push(vec![
                    matches(payload(proto, "daddr"), Operator::EQ, set(addrs)),
                    Statement::Return(None),
                ]);
            }
        }
        for set in [CAPTURE4, CAPTURE6] {
            if set.elements(&self.capture).is_some() {
                rules.push(self.steered(steer, Some(&set)));
            }
        }
        for set in [BYPASS4, BYPASS6] {
            if set.elements(&self.bypass).is_some() {
                rules.push(vec![set.daddr_in(), Statement::Return(None)]);
            }
        }
        if !self.uplinks.is_empty() {
            rules.push(vec![
                matches(
                    fib_daddr(FibResult::Oif),
                    Operator::EQ,
                    Expression::Boolean(true),
                ),
                matches(
                    fib_daddr(FibResult::Oifname),
                    Operator::NEQ,
                    set(self.uplinks.iter().map(|n| text(n.as_str()))),
                ),
                Statement::Return(None),
            ]);
        }
        rules.push(self.steered(steer, None));
        rules
    }

    /// LAN traffic of the chain's protocol (to the ranges in `to`, if given) taken to braid.
    fn steered(&self, steer: Steer, to: Option<&RangeSet>) -> Vec<Statement<'static>> {
        let not_routed = ["local", "broadcast", "multicast"].map(text);
        let proto = steer.proto();
        let mut rule = vec![
            matches(
                meta(MetaKey::Iifname),
                Operator::EQ,
                set(self.lan.iter().map(|n| text(n.as_str()))),
            ),
            matches(meta(MetaKey::L4proto), Operator::EQ, text(proto)),
        ];
        rule.extend(to.map(RangeSet::daddr_in));
        rule.push(matches(fib_daddr_type(), Operator::NEQ, set(not_routed)));
        match steer {
            Steer::Tcp => rule.push(Statement::Redirect(Some(NAT {
                addr: None,
                family: None,
                port: Some(Expression::Number(self.redirect_port.into())),
                flags: None,
            }))),
            Steer::Udp(u) => rule.extend([
                Statement::Mangle(Mangle {
                    key: meta(MetaKey::Mark),
                    value: Expression::Number(u.mark),
                }),
                // Once the rule matched an address family, nft wants tproxy to name it too.
                Statement::TProxy(TProxy {
                    family: to.map(|r| r.proto().into()),
                    port: u.port,
                    addr: None,
                }),
                Statement::Accept(None),
            ]),
        }
        rule
    }

    /// The same transaction in nft's own syntax, for people and for callers that feed
    /// `nft -f -`; [`CaptureRules::apply`] does not use it.
    pub fn render(&self) -> Result<String, NftError> {
        Ok(batch_text(&self.batch()?))
    }

    /// Creates or replaces the table atomically (`nft -j -f -`).
    pub fn apply(&self) -> Result<(), NftError> {
        apply(&self.batch()?)
    }
}

/// Adds the commands that make `table inet NAME` start empty, in the same transaction as
/// whatever follows: `add table` (so that the delete cannot fail), `delete table`, `add table`.
pub fn replace_table(batch: &mut Batch<'static>, name: &str) {
    let table = || {
        NfListObject::Table(Table {
            family: NfFamily::INet,
            name: name.to_string().into(),
            handle: None,
        })
    };
    batch.add(table());
    batch.delete(table());
    batch.add(table());
}

/// Removes a table braid owns (`nft delete table inet NAME`); a missing table is fine.
pub fn delete_table(table: &str) -> Result<(), NftError> {
    let mut batch = Batch::new();
    replace_table(&mut batch, table);
    let mut objects = batch.to_nftables().objects.into_owned();
    objects.truncate(2);
    apply(&Nftables {
        objects: objects.into(),
    })
}

/// Whether the table exists (`nft list table inet NAME`).
pub fn table_exists(table: &str) -> Result<bool, NftError> {
    let out = Command::new("nft")
        .args(["list", "table", "inet", table])
        .output()
        .map_err(spawn_error)?;
    Ok(out.status.success())
}

/// Applies a batch as one transaction (`nft -j -f -`), keeping nft's message and exit code.
pub fn apply(nftables: &Nftables) -> Result<(), NftError> {
    let json = serde_json::to_string(nftables).map_err(NftError::Encode)?;
    let mut child = Command::new("nft")
        .args(["-j", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_error)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(json.as_bytes()).map_err(NftError::Io)?;
    }
    let out = child.wait_with_output().map_err(NftError::Io)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NftError::Rejected {
            status: out.status.code().unwrap_or(-1),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

fn spawn_error(e: std::io::Error) -> NftError {
    if e.kind() == std::io::ErrorKind::NotFound {
        NftError::NotInstalled(e)
    } else {
        NftError::Io(e)
    }
}

// ---------------------------------------------------------------------------------------------
// Building blocks of rules

/// `LEFT OP RIGHT`, e.g. `tcp dport 22`.
pub fn matches<'a>(left: Expression<'a>, op: Operator, right: Expression<'a>) -> Statement<'a> {
    Statement::Match(Match { left, right, op })
}

/// A header field: `payload("tcp", "dport")` is `tcp dport`.
pub fn payload(protocol: &str, field: &str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(
        PayloadField {
            protocol: protocol.to_string().into(),
            field: field.to_string().into(),
        },
    )))
}

/// `meta KEY`, e.g. `meta l4proto`, `iifname`.
pub fn meta(key: MetaKey) -> Expression<'static> {
    Expression::Named(NamedExpression::Meta(Meta { key }))
}

/// An anonymous set `{ a, b }` of values.
pub fn set<'a>(items: impl IntoIterator<Item = Expression<'a>>) -> Expression<'a> {
    Expression::Named(NamedExpression::Set(
        items.into_iter().map(SetItem::Element).collect(),
    ))
}

/// A string value (`tcp`, `eth0`, `established`).
pub fn text(s: &str) -> Expression<'static> {
    Expression::String(s.to_string().into())
}

fn fib_daddr_type() -> Expression<'static> {
    fib_daddr(FibResult::Type)
}

/// `fib daddr RESULT`: the main routing decision for the packet's destination.
fn fib_daddr(result: FibResult) -> Expression<'static> {
    Expression::Named(NamedExpression::Fib(Fib {
        result,
        flags: [FibFlag::Daddr].into_iter().collect(),
    }))
}

// ---------------------------------------------------------------------------------------------
// nft syntax

/// A batch in nft's own syntax, one command a line (`add table inet braid`, `add rule …`): what
/// `nft -f -` takes. Objects without a text form here become `#` comment lines with their JSON.
pub fn batch_text(nftables: &Nftables) -> String {
    nftables
        .objects
        .iter()
        .map(|o| object_text(o) + "\n")
        .collect()
}

fn object_text(object: &NfObject) -> String {
    let (verb, obj) = match object {
        NfObject::CmdObject(NfCmd::Add(o)) => ("add", o),
        NfObject::CmdObject(NfCmd::Insert(o)) => ("insert", o),
        NfObject::CmdObject(NfCmd::Delete(o)) => ("delete", o),
        NfObject::ListObject(o) => ("add", o),
        other => return format!("# {}", json(other)),
    };
    match obj {
        NfListObject::Table(t) => format!("{verb} table {} {}", name(&t.family), t.name),
        NfListObject::Chain(c) => {
            let head = format!("{verb} chain {} {} {}", name(&c.family), c.table, c.name);
            match (&c._type, &c.hook) {
                (Some(kind), Some(hook)) => format!(
                    "{head} {{ type {} hook {} priority {}; policy {}; }}",
                    name(kind),
                    name(hook),
                    c.prio.unwrap_or(0),
                    name(c.policy.as_ref().unwrap_or(&NfChainPolicy::Accept))
                ),
                _ => head,
            }
        }
        NfListObject::Rule(r) => format!(
            "{verb} rule {} {} {} {}",
            name(&r.family),
            r.table,
            r.chain,
            rule_text(&r.expr)
        ),
        NfListObject::Set(set) => set_text(verb, set),
        other => format!("# {}", json(other)),
    }
}

/// `add set inet T NAME { type ipv4_addr; flags interval; elements = { … } }`.
fn set_text(verb: &str, set: &Set) -> String {
    let kind = match &set.set_type {
        SetTypeValue::Single(t) => name(t),
        SetTypeValue::Concatenated(ts) => ts.iter().map(name).collect::<Vec<_>>().join(" . "),
    };
    let mut body = format!("type {kind};");
    if let Some(flags) = set.flags.as_ref().filter(|f| !f.is_empty()) {
        let mut flags: Vec<String> = flags.iter().map(name).collect();
        flags.sort();
        body += &format!(" flags {};", flags.join(", "));
    }
    if let Some(elem) = set.elem.as_ref().filter(|e| !e.is_empty()) {
        let items: Vec<String> = elem.iter().map(expression_text).collect();
        body += &format!(" elements = {{ {} }}", items.join(", "));
    }
    format!(
        "{verb} set {} {} {} {{ {body} }}",
        name(&set.family),
        set.table,
        set.name
    )
}

/// A rule's statements as nft prints them: `ip saddr 10.0.0.0/8 tcp dport 3306 accept`.
pub fn rule_text(statements: &[Statement]) -> String {
    (statements.iter().map(statement_text))
        .collect::<Vec<_>>()
        .join(" ")
}

/// One statement in nft syntax; JSON for the ones braid does not print.
pub fn statement_text(s: &Statement) -> String {
    match s {
        Statement::Accept(_) => "accept".into(),
        Statement::Drop(_) => "drop".into(),
        Statement::Continue(_) => "continue".into(),
        Statement::Return(_) => "return".into(),
        Statement::Jump(t) => format!("jump {}", t.target),
        Statement::Goto(t) => format!("goto {}", t.target),
        Statement::Match(m) => match_text(m),
        Statement::Counter(Counter::Named(n)) => format!("counter name \"{n}\""),
        Statement::Counter(_) => "counter".into(),
        Statement::Log(_) => "log".into(),
        Statement::Notrack => "notrack".into(),
        Statement::Limit(l) => format!(
            "limit rate {}{} {}/{}",
            if l.inv == Some(true) { "over " } else { "" },
            l.rate,
            l.rate_unit.as_deref().unwrap_or("packets"),
            l.per.as_deref().unwrap_or("second")
        ),
        Statement::Reject(r) => reject_text(r.as_ref()),
        Statement::Redirect(nat) => match nat.as_ref().and_then(|n| n.port.as_ref()) {
            Some(port) => format!("redirect to :{}", expression_text(port)),
            None => "redirect".into(),
        },
        Statement::Masquerade(_) => "masquerade".into(),
        Statement::TProxy(t) => format!(
            "tproxy {}to {}:{}",
            t.family
                .as_deref()
                .map(|f| format!("{f} "))
                .unwrap_or_default(),
            t.addr.as_deref().unwrap_or(""),
            t.port
        ),
        Statement::VerdictMap(v) => format!(
            "{} vmap {}",
            expression_text(&v.key),
            expression_text(&v.data)
        ),
        Statement::Set(set) => format!(
            "{} {} {{ {} }}",
            name(&set.op),
            set.set,
            expression_text(&set.elem)
        ),
        Statement::Mangle(m) => format!(
            "{} set {}",
            expression_text(&m.key),
            expression_text(&m.value)
        ),
        Statement::Quota(QuotaOrQuotaRef::Quota(q)) => format!(
            "quota {}{} {}",
            if q.inv == Some(true) { "over " } else { "" },
            q.val,
            q.val_unit
        ),
        Statement::Quota(QuotaOrQuotaRef::QuotaRef(n)) => format!("quota name \"{n}\""),
        Statement::CTCount(c) => format!(
            "ct count {}{}",
            if c.inv == Some(true) { "over " } else { "" },
            expression_text(&c.val)
        ),
        Statement::Meter(m) => format!(
            "meter {} {{ {} {} }}",
            m.name,
            expression_text(&m.key),
            statement_text(&m.stmt)
        ),
        Statement::XT(Some(xt)) => format!(
            "xt {} {}",
            xt.get("type").and_then(|t| t.as_str()).unwrap_or("?"),
            xt.get("name").and_then(|t| t.as_str()).unwrap_or("?")
        ),
        other => json(other),
    }
}

/// `LEFT OP RIGHT` as nft prints it.
fn match_text(m: &Match) -> String {
    // A fib lookup compared with a boolean is nft's `exists` / `missing`.
    if let (Expression::Named(NamedExpression::Fib(_)), Expression::Boolean(b)) =
        (&m.left, &m.right)
    {
        let found = *b == (m.op == Operator::EQ);
        let word = if found { "exists" } else { "missing" };
        return format!("{} {word}", expression_text(&m.left));
    }
    // nft leaves `==` out, except after a bitwise operation (`tcp flags & syn == syn`).
    let op = match (m.op, &m.left) {
        (Operator::EQ, Expression::BinaryOperation(_)) => "== ".into(),
        (Operator::EQ | Operator::IN, _) => String::new(),
        (op, _) => name(&op) + " ",
    };
    // Interface names are strings, which nft prints quoted.
    let quoted = matches!(
        &m.left,
        Expression::Named(NamedExpression::Meta(Meta {
            key: MetaKey::Iif
                | MetaKey::Oif
                | MetaKey::Iifname
                | MetaKey::Oifname
                | MetaKey::Iifkind
                | MetaKey::Oifkind
                | MetaKey::Ibridgename
                | MetaKey::Obridgename
        })) | Expression::Named(NamedExpression::Fib(Fib {
            result: FibResult::Oifname,
            ..
        }))
    );
    format!(
        "{} {op}{}",
        expression_text(&m.left),
        value_text(&m.right, quoted)
    )
}

fn reject_text(r: Option<&Reject>) -> String {
    let Some(r) = r else {
        return "reject".into();
    };
    match (&r._type, &r.expr) {
        (Some(RejectType::TCPReset), _) => "reject with tcp reset".into(),
        (Some(kind), Some(code)) => format!("reject with {} {}", name(kind), name(code)),
        _ => "reject".into(),
    }
}

/// One expression in nft syntax; JSON for the ones braid does not print.
pub fn expression_text(e: &Expression) -> String {
    value_text(e, false)
}

/// `quoted`: string values are interface names (`iifname "lo"`), which nft prints quoted.
fn value_text(e: &Expression, quoted: bool) -> String {
    let each = |items: &[Expression], sep: &str| {
        (items.iter().map(|i| value_text(i, quoted)))
            .collect::<Vec<_>>()
            .join(sep)
    };
    match e {
        Expression::String(s) if quoted => format!("\"{s}\""),
        Expression::String(s) => s.to_string(),
        Expression::Number(n) => n.to_string(),
        Expression::Boolean(b) => b.to_string(),
        Expression::List(items) => each(items, ","),
        Expression::Range(r) => format!(
            "{}-{}",
            value_text(&r.range[0], quoted),
            value_text(&r.range[1], quoted)
        ),
        Expression::BinaryOperation(op) => match op.as_ref() {
            BinaryOperation::AND(a, b) => {
                format!("{} & {}", expression_text(a), expression_text(b))
            }
            BinaryOperation::OR(items) => each(items, " | "),
            other => json(other),
        },
        Expression::Verdict(v) => match v {
            Verdict::Accept => "accept".into(),
            Verdict::Drop => "drop".into(),
            Verdict::Continue => "continue".into(),
            Verdict::Return => "return".into(),
            Verdict::Jump(t) => format!("jump {}", t.target),
            Verdict::Goto(t) => format!("goto {}", t.target),
        },
        Expression::Named(named) => named_text(named, quoted),
    }
}

fn named_text(e: &NamedExpression, quoted: bool) -> String {
    match e {
        NamedExpression::Set(items) => {
            let items: Vec<String> = (items.iter())
                .map(|i| match i {
                    // A verdict map entry, as the crate reads `[22, {"accept": null}]`.
                    SetItem::Element(Expression::List(pair))
                        if matches!(pair.as_slice(), [_, Expression::Verdict(_)]) =>
                    {
                        format!(
                            "{} : {}",
                            value_text(&pair[0], quoted),
                            expression_text(&pair[1])
                        )
                    }
                    SetItem::Element(e) => value_text(e, quoted),
                    SetItem::Mapping(k, v) => {
                        format!("{} : {}", value_text(k, quoted), expression_text(v))
                    }
                    SetItem::MappingStatement(k, s) => {
                        format!("{} : {}", value_text(k, quoted), statement_text(s))
                    }
                })
                .collect();
            format!("{{ {} }}", items.join(", "))
        }
        NamedExpression::Concat(items) => (items.iter().map(expression_text))
            .collect::<Vec<_>>()
            .join(" . "),
        NamedExpression::Prefix(p) => format!("{}/{}", expression_text(&p.addr), p.len),
        NamedExpression::Payload(Payload::PayloadField(p)) => format!("{} {}", p.protocol, p.field),
        NamedExpression::Meta(Meta { key }) => match key {
            MetaKey::Iif | MetaKey::Oif | MetaKey::Iifname | MetaKey::Oifname => name(key),
            key => format!("meta {}", name(key)),
        },
        NamedExpression::CT(ct) => match &ct.dir {
            Some(dir) => format!("ct {} {}", name(dir), ct.key),
            None => format!("ct {}", ct.key),
        },
        NamedExpression::Fib(f) => {
            let flags: Vec<String> = [
                FibFlag::Saddr,
                FibFlag::Daddr,
                FibFlag::Mark,
                FibFlag::Iif,
                FibFlag::Oif,
            ]
            .iter()
            .filter(|f2| f.flags.contains(f2))
            .map(name)
            .collect();
            format!("fib {} {}", flags.join(" . "), name(&f.result))
        }
        NamedExpression::Elem(e) => value_text(&e.val, quoted),
        NamedExpression::Numgen(n) => format!("numgen {} mod {}", name(&n.mode), n.ng_mod),
        NamedExpression::JHash(h) => {
            format!("jhash {} mod {}", expression_text(&h.expr), h.hash_mod)
        }
        other => json(other),
    }
}

/// The name serde gives a unit variant (`NfFamily::INet` is `inet`, `Operator::NEQ` is `!=`).
fn name<T: Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => "?".into(),
    }
}

fn json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "?".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(lan: &[&str], exclude: &[&str]) -> CaptureRules {
        CaptureRules {
            table: "braid".into(),
            lan: lan.iter().map(|s| s.parse().unwrap()).collect(),
            redirect_port: 1100,
            exclude: exclude.iter().map(|a| a.parse().unwrap()).collect(),
            ..CaptureRules::default()
        }
    }

    #[test]
    fn batch_replaces_the_table_and_redirects_lan_tcp() {
        let n = rules(&["eth1", "br-lan"], &["203.0.113.7", "2001:db8::7"])
            .batch()
            .unwrap();
        let json = serde_json::to_value(&n).unwrap();
        let cmds: Vec<String> = json["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| {
                let (verb, body) = o.as_object().unwrap().iter().next().unwrap();
                format!(
                    "{verb} {}",
                    body.as_object().unwrap().keys().next().unwrap()
                )
            })
            .collect();
        assert_eq!(
            cmds,
            [
                "add table",
                "delete table",
                "add table",
                "add chain",
                "add rule",
                "add rule",
                "add rule"
            ]
        );
        let chain = &json["nftables"][3]["add"]["chain"];
        assert_eq!(chain["type"], "nat");
        assert_eq!(chain["hook"], "prerouting");
        assert_eq!(chain["prio"], -100);
        assert_eq!(chain["policy"], "accept");
        let redirect = &json["nftables"][6]["add"]["rule"]["expr"];
        assert_eq!(
            redirect[0]["match"]["right"],
            serde_json::json!({"set": ["eth1", "br-lan"]})
        );
        assert_eq!(redirect[2]["match"]["op"], "!=");
        assert_eq!(redirect[3], serde_json::json!({"redirect": {"port": 1100}}));
    }

    #[test]
    fn render_excludes_relay_and_local_addresses() {
        let s = rules(&["eth1"], &["203.0.113.7"]).render().unwrap();
        assert!(
            s.contains("add rule inet braid prerouting ip daddr { 203.0.113.7 } return"),
            "{s}"
        );
        assert!(s.contains("iifname { \"eth1\" }"), "{s}");
        assert!(
            s.contains("fib daddr type != { local, broadcast, multicast } redirect to :1100"),
            "{s}"
        );
        assert!(
            s.contains("add chain inet braid prerouting { type nat hook prerouting priority -100; policy accept; }"),
            "{s}"
        );
        assert!(!s.contains("ip6 daddr"), "{s}");
    }

    #[test]
    fn bypass_capture_and_uplinks_steer_before_the_redirect() {
        let mut r = rules(&["eth1"], &["203.0.113.7"]);
        r.bypass = ["10.0.0.0/8", "10.1.0.0/16", "fc00::/7", "192.0.2.9/32"]
            .map(|n| n.parse().unwrap())
            .to_vec();
        r.capture = vec!["10.30.0.0/24".parse().unwrap()];
        r.uplinks = vec!["wan-a".parse().unwrap(), "wan-b".parse().unwrap()];
        let s = r.render().unwrap();
        let lines: Vec<&str> = s.lines().collect();
        assert!(
            lines.contains(&"add set inet braid bypass4 { type ipv4_addr; flags interval; elements = { 10.0.0.0/8, 192.0.2.9 } }"),
            "overlaps merged, a host bare: {s}"
        );
        assert!(s.contains("add set inet braid bypass6 { type ipv6_addr; flags interval; elements = { fc00::/7 } }"), "{s}");
        assert!(!s.contains("capture6"), "an empty set is left out: {s}");
        let rules: Vec<&str> = lines
            .iter()
            .filter_map(|l| l.strip_prefix("add rule inet braid prerouting "))
            .collect();
        assert_eq!(
            rules,
            [
                "ip daddr { 203.0.113.7 } return",
                "iifname { \"eth1\" } meta l4proto tcp ip daddr @capture4 fib daddr type != { local, broadcast, multicast } redirect to :1100",
                "ip daddr @bypass4 return",
                "ip6 daddr @bypass6 return",
                "fib daddr oif exists fib daddr oifname != { \"wan-a\", \"wan-b\" } return",
                "iifname { \"eth1\" } meta l4proto tcp fib daddr type != { local, broadcast, multicast } redirect to :1100",
            ]
        );
        assert!(!s.contains("tproxy"), "no UDP chain unless asked: {s}");
    }

    #[test]
    fn udp_gets_a_mangle_chain_with_the_same_steering_and_tproxy() {
        let mut r = rules(&["eth1"], &["203.0.113.7"]);
        r.bypass = vec!["10.0.0.0/8".parse().unwrap()];
        r.udp = Some(UdpTproxy {
            port: 1100,
            mark: 0xb1d,
        });
        let s = r.render().unwrap();
        assert!(
            s.contains("add chain inet braid capture_udp { type filter hook prerouting priority -150; policy accept; }"),
            "{s}"
        );
        let udp: Vec<&str> = s
            .lines()
            .filter_map(|l| l.strip_prefix("add rule inet braid capture_udp "))
            .collect();
        assert_eq!(
            udp,
            [
                "meta l4proto != udp return",
                "iifname != { \"eth1\" } return",
                "ip daddr { 203.0.113.7 } return",
                "ip daddr @bypass4 return",
                "iifname { \"eth1\" } meta l4proto udp fib daddr type != { local, broadcast, multicast } meta mark set 2845 tproxy to :1100 accept",
            ]
        );
    }

    #[test]
    fn statement_text_prints_what_nft_prints() {
        let parsed: Vec<Statement> = serde_json::from_str(
            r#"[{"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "related"]}},
                {"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "lo"}},
                {"match": {"op": "!=", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": {"range": [1, 1023]}}},
                {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": {"prefix": {"addr": "10.0.0.0", "len": 8}}}},
                {"limit": {"rate": 5, "burst": 5, "per": "minute"}},
                {"reject": {"type": "icmpx", "expr": "admin-prohibited"}}]"#,
        )
        .unwrap();
        assert_eq!(
            rule_text(&parsed),
            "ct state established,related iifname \"lo\" tcp dport != 1-1023 ip saddr 10.0.0.0/8 limit rate 5 packets/minute reject with icmpx admin-prohibited"
        );
    }
}
