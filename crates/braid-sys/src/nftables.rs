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
//! [`apply`] runs `nft -j -f -` itself rather than through the crate's
//! `helper::apply_ruleset`: in nftables 0.6.3 that helper leaves nft's stderr attached to ours
//! and returns an error with neither nft's message nor its exit code (nftables-rs issue #209),
//! and both are what a user needs to fix a rejected ruleset.

use std::io::Write;
use std::net::IpAddr;
use std::process::{Command, Stdio};

use nftables::batch::Batch;
use nftables::expr::{BinaryOperation, Expression, FibFlag, MetaKey, NamedExpression, SetItem};
use nftables::expr::{Fib, FibResult, Meta, Payload, PayloadField, Verdict};
use nftables::schema::{Chain, NfCmd, NfListObject, NfObject, Nftables, Rule, Table};
use nftables::stmt::NAT;
use nftables::stmt::{Counter, Match, Operator, QuotaOrQuotaRef, Reject, RejectType, Statement};
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
#[derive(Debug, Clone)]
pub struct CaptureRules {
    /// Table name inside family `inet`.
    pub table: String,
    /// LAN interfaces whose forwarded TCP is captured.
    pub lan: Vec<IfName>,
    /// Local port of the transparent listener.
    pub redirect_port: u16,
    /// Destinations never captured (the relay itself).
    pub exclude: Vec<IpAddr>,
}

/// True for names the kernel accepts as interface names (see [`IfName`]), for names that come
/// from elsewhere than braid's config (another program's ruleset).
pub fn valid_ifname(name: &str) -> bool {
    name.parse::<IfName>().is_ok()
}

/// The `dstnat` priority of a nat prerouting chain.
const PRIO_DSTNAT: i32 = -100;

impl CaptureRules {
    /// The table as one transaction:
    /// ```text
    /// table inet NAME { chain prerouting { type nat hook prerouting priority dstnat; policy accept;
    ///   ip daddr { EXCLUDED-V4 } return
    ///   ip6 daddr { EXCLUDED-V6 } return
    ///   iifname { LAN } meta l4proto tcp fib daddr type != { local, broadcast, multicast } redirect to :PORT } }
    /// ```
    /// Traffic to the gateway's own addresses is never captured (`fib daddr type`), nor is
    /// traffic to the relay.
    pub fn batch(&self) -> Result<Nftables<'static>, NftError> {
        let mut batch = Batch::new();
        replace_table(&mut batch, &self.table);
        batch.add(NfListObject::Chain(Chain {
            family: NfFamily::INet,
            table: self.table.clone().into(),
            name: "prerouting".into(),
            _type: Some(NfChainType::NAT),
            hook: Some(NfHook::Prerouting),
            prio: Some(PRIO_DSTNAT),
            policy: Some(NfChainPolicy::Accept),
            ..Chain::default()
        }));
        let mut rule = |expr: Vec<Statement<'static>>| {
            batch.add(NfListObject::Rule(Rule {
                family: NfFamily::INet,
                table: self.table.clone().into(),
                chain: "prerouting".into(),
                expr: expr.into(),
                ..Rule::default()
            }))
        };
        for (proto, v4) in [("ip", true), ("ip6", false)] {
            let addrs: Vec<Expression> = (self.exclude.iter())
                .filter(|a| a.is_ipv4() == v4)
                .map(|a| text(&a.to_string()))
                .collect();
            if !addrs.is_empty() {
                rule(vec![
                    matches(payload(proto, "daddr"), Operator::EQ, set(addrs)),
                    Statement::Return(None),
                ]);
            }
        }
        let not_routed = ["local", "broadcast", "multicast"].map(text);
        rule(vec![
            matches(
                meta(MetaKey::Iifname),
                Operator::EQ,
                set(self.lan.iter().map(|n| text(n.as_str()))),
            ),
            matches(meta(MetaKey::L4proto), Operator::EQ, text("tcp")),
            matches(fib_daddr_type(), Operator::NEQ, set(not_routed)),
            Statement::Redirect(Some(NAT {
                addr: None,
                family: None,
                port: Some(Expression::Number(self.redirect_port.into())),
                flags: None,
            })),
        ]);
        Ok(batch.to_nftables())
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
    Expression::Named(NamedExpression::Fib(Fib {
        result: FibResult::Type,
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
        other => format!("# {}", json(other)),
    }
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
