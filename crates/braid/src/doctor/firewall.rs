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

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use super::check::Check;

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
    fn label(&self) -> String {
        format!("{} {} {}", self.family, self.table, self.name)
    }

    fn is_input_filter(&self) -> bool {
        self.hook.as_deref() == Some("input")
            && self.kind == "filter"
            && matches!(self.family.as_str(), "ip" | "ip6" | "inet")
    }

    fn applies_to(&self, fam: Family) -> bool {
        match self.family.as_str() {
            "inet" => true,
            "ip" => fam == Family::V4,
            "ip6" => fam == Family::V6,
            _ => false,
        }
    }
}

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
// nft JSON

type Sets = HashMap<(String, String, String), Vec<Value>>;

/// Parses `nft -j list ruleset`.
pub fn parse_nft_json(text: &str) -> Result<FirewallRules, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let items = v
        .get("nftables")
        .and_then(Value::as_array)
        .ok_or("no \"nftables\" array")?;
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let mut rules = FirewallRules {
        source: "nft -j list ruleset".into(),
        ..FirewallRules::default()
    };
    let mut sets = Sets::new();
    for item in items {
        if let Some(c) = item.get("chain") {
            rules.chains.push(Chain {
                family: s(c, "family"),
                table: s(c, "table"),
                name: s(c, "name"),
                hook: c.get("hook").and_then(Value::as_str).map(str::to_string),
                kind: s(c, "type"),
                policy_drop: c.get("policy").and_then(Value::as_str) == Some("drop"),
                rules: Vec::new(),
            });
        } else if let Some(set) = item.get("set").or_else(|| item.get("map")) {
            let elems = set
                .get("elem")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            sets.insert((s(set, "family"), s(set, "table"), s(set, "name")), elems);
        }
    }
    for item in items {
        let Some(r) = item.get("rule") else { continue };
        let (family, table, chain) = (s(r, "family"), s(r, "table"), s(r, "chain"));
        let parsed = parse_nft_rule(r, &sets);
        if let Some(c) = rules
            .chains
            .iter_mut()
            .find(|c| c.family == family && c.table == table && c.name == chain)
        {
            c.rules.extend(parsed);
        }
    }
    Ok(rules)
}

/// One nft rule; a verdict map becomes one rule per entry.
fn parse_nft_rule(r: &Value, sets: &Sets) -> Vec<Rule> {
    let exprs = r
        .get("expr")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let ctx = (
        r.get("family").and_then(Value::as_str).unwrap_or(""),
        r.get("table").and_then(Value::as_str).unwrap_or(""),
    );
    let text = format!(
        "{} {} {} handle {}: {}",
        ctx.0,
        ctx.1,
        r.get("chain").and_then(Value::as_str).unwrap_or(""),
        r.get("handle").map(Value::to_string).unwrap_or_default(),
        exprs.iter().map(render_expr).collect::<Vec<_>>().join(" ")
    );
    let mut conds = Vec::new();
    let mut action = Action::Continue;
    let mut vmap = None;
    for e in exprs {
        let Some((key, body)) = e.as_object().and_then(|o| o.iter().next()) else {
            continue;
        };
        match key.as_str() {
            "match" => conds.extend(match_conds(body, sets, ctx)),
            "accept" => action = Action::Accept,
            "drop" => action = Action::Drop,
            "reject" => action = Action::Reject,
            "jump" | "goto" => {
                let target = body
                    .get("target")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                action = if key == "jump" {
                    Action::Jump(target)
                } else {
                    Action::Goto(target)
                };
            }
            "return" => action = Action::Return,
            "continue" => action = Action::Continue,
            "vmap" => vmap = Some(body),
            "xt" => {
                let name = body.get("name").and_then(Value::as_str).unwrap_or("?");
                if body.get("type").and_then(Value::as_str) == Some("target") {
                    action = match name {
                        "ACCEPT" => Action::Accept,
                        "DROP" => Action::Drop,
                        "REJECT" => Action::Reject,
                        n if NON_TERMINAL_TARGETS.contains(&n) => Action::Continue,
                        n => Action::Unknown(format!("iptables target {n}")),
                    };
                } else if name != "comment" {
                    conds.push(Cond::Unknown(format!(
                        "iptables match {name} (shown by iptables-save, not by nft)"
                    )));
                }
            }
            // Statements that do not filter.
            "counter" | "log" | "mangle" | "notrack" | "set" | "comment" => {}
            _ => conds.push(Cond::Unknown(render_expr(e))),
        }
    }
    let Some(vmap) = vmap else {
        return vec![Rule {
            text,
            conds,
            action,
        }];
    };
    let Some(entries) = vmap
        .get("data")
        .and_then(|d| d.get("set"))
        .and_then(Value::as_array)
    else {
        let data = vmap.get("data").map(render_value).unwrap_or_default();
        return vec![Rule {
            text,
            conds,
            action: Action::Unknown(format!("verdict map {data}")),
        }];
    };
    let mut out = Vec::new();
    for entry in entries {
        let (Some(k), Some(verdict)) = (entry.get(0), entry.get(1)) else {
            continue;
        };
        let m = serde_json::json!({"op": "==", "left": vmap.get("key").cloned().unwrap_or(Value::Null), "right": k});
        let mut c = conds.clone();
        c.extend(match_conds(&m, sets, ctx));
        let action = match verdict.as_object().and_then(|o| o.iter().next()) {
            Some((v, _)) if v == "accept" => Action::Accept,
            Some((v, _)) if v == "drop" => Action::Drop,
            Some((v, _)) if v == "reject" => Action::Reject,
            Some((v, _)) if v == "return" => Action::Return,
            Some((v, b)) if v == "jump" || v == "goto" => {
                let t = b
                    .get("target")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                if v == "jump" {
                    Action::Jump(t)
                } else {
                    Action::Goto(t)
                }
            }
            _ => Action::Unknown(verdict.to_string()),
        };
        out.push(Rule {
            text: text.clone(),
            conds: c,
            action,
        });
    }
    out
}

const NON_TERMINAL_TARGETS: &[&str] = &[
    "LOG", "NFLOG", "ULOG", "MARK", "CONNMARK", "CT", "TCPMSS", "NOTRACK", "AUDIT", "TRACE",
    "CLASSIFY", "DSCP", "TOS", "SET", "TEE", "CHECKSUM", "NFACCT",
];

/// The conditions of one nft `match` expression.
fn match_conds(body: &Value, sets: &Sets, ctx: (&str, &str)) -> Vec<Cond> {
    let op = body.get("op").and_then(Value::as_str).unwrap_or("==");
    let unknown = || {
        vec![Cond::Unknown(render_expr(
            &serde_json::json!({ "match": body }),
        ))]
    };
    if !matches!(op, "==" | "!=" | "in") {
        return unknown();
    }
    let negate = op == "!=";
    let (left, right) = (
        body.get("left").unwrap_or(&Value::Null),
        body.get("right").unwrap_or(&Value::Null),
    );
    let key = |k: &str| {
        left.get(k)
            .and_then(|m| m.get("key"))
            .and_then(Value::as_str)
    };
    if let Some(p) = left.get("payload") {
        let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("");
        let field = p.get("field").and_then(Value::as_str).unwrap_or("");
        return match (proto, field) {
            ("tcp" | "th", "dport") => match ports(right, sets, ctx) {
                Some(ranges) => vec![Cond::Dport { ranges, negate }],
                None => unknown(),
            },
            // A match on another transport's header implies that transport: never TCP.
            (
                "udp" | "udplite" | "sctp" | "dccp" | "icmp" | "icmpv6" | "esp" | "ah" | "comp"
                | "igmp" | "gre",
                _,
            ) => vec![Cond::Const(false)],
            ("ip", "protocol") => vec![
                Cond::Family(Family::V4),
                l4proto(right, negate).unwrap_or_else(|| unknown().remove(0)),
            ],
            ("ip6", "nexthdr") => vec![
                Cond::Family(Family::V6),
                l4proto(right, negate).unwrap_or_else(|| unknown().remove(0)),
            ],
            ("ip", _) => vec![Cond::Family(Family::V4), unknown().remove(0)],
            ("ip6", _) => vec![Cond::Family(Family::V6), unknown().remove(0)],
            _ => unknown(),
        };
    }
    let names = || {
        values(right)
            .into_iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string())
            })
            .collect::<Vec<_>>()
    };
    match (key("meta"), key("ct")) {
        (Some("l4proto"), _) => l4proto(right, negate)
            .map(|c| vec![c])
            .unwrap_or_else(unknown),
        (Some("nfproto" | "protocol"), _) => {
            let n = names();
            let fam = match n.as_slice() {
                [one] if one == "ipv4" || one == "ip" => Family::V4,
                [one] if one == "ipv6" || one == "ip6" => Family::V6,
                _ => return unknown(),
            };
            let fam = match (fam, negate) {
                (f, false) => f,
                (Family::V4, true) => Family::V6,
                (Family::V6, true) => Family::V4,
            };
            vec![Cond::Family(fam)]
        }
        // The packet comes from the internet, never from loopback.
        (Some("iifname" | "iif"), _) => {
            let n = names();
            if !n.is_empty() && n.iter().all(|s| s == "lo") {
                vec![Cond::Const(negate)]
            } else {
                unknown()
            }
        }
        (_, Some("state")) => {
            let n = names();
            if n.is_empty() {
                return unknown();
            }
            vec![Cond::Const(n.iter().any(|s| s == "new") != negate)]
        }
        _ => unknown(),
    }
}

/// The elements of a match's right-hand side.
fn values(right: &Value) -> Vec<Value> {
    let items = match right {
        Value::Array(a) => a.clone(),
        Value::Object(o) if o.contains_key("set") => {
            o["set"].as_array().cloned().unwrap_or_default()
        }
        v => vec![v.clone()],
    };
    items
        .into_iter()
        .map(|v| {
            v.get("elem")
                .and_then(|e| e.get("val"))
                .cloned()
                .unwrap_or(v)
        })
        .collect()
}

/// `meta l4proto tcp` and friends: `None` when the value cannot be read.
fn l4proto(right: &Value, negate: bool) -> Option<Cond> {
    let vals = values(right);
    if vals.is_empty() {
        return None;
    }
    let mut tcp = false;
    for v in &vals {
        match v {
            Value::String(s) => tcp |= s == "tcp",
            Value::Number(n) => tcp |= n.as_u64() == Some(6),
            _ => return None,
        }
    }
    Some(Cond::Const(tcp != negate))
}

/// Port ranges of a dport match; `None` when something cannot be resolved.
fn ports(right: &Value, sets: &Sets, ctx: (&str, &str)) -> Option<Vec<(u16, u16)>> {
    let mut out = Vec::new();
    for v in values(right) {
        match &v {
            Value::Number(n) => {
                let p = u16::try_from(n.as_u64()?).ok()?;
                out.push((p, p));
            }
            Value::String(s) if s.starts_with('@') => {
                let elems =
                    sets.get(&(ctx.0.to_string(), ctx.1.to_string(), s[1..].to_string()))?;
                out.extend(ports(&Value::Array(elems.clone()), sets, ctx)?);
            }
            Value::String(s) => {
                let p = service_port(s)?;
                out.push((p, p));
            }
            Value::Object(o) if o.contains_key("range") => {
                let r = o["range"].as_array()?;
                let lo = u16::try_from(r.first()?.as_u64()?).ok()?;
                let hi = u16::try_from(r.get(1)?.as_u64()?).ok()?;
                out.push((lo, hi));
            }
            _ => return None,
        }
    }
    Some(out)
}

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

/// A short, nft-like text of one expression; JSON for anything unfamiliar.
fn render_expr(e: &Value) -> String {
    let Some((key, body)) = e.as_object().and_then(|o| o.iter().next()) else {
        return e.to_string();
    };
    match key.as_str() {
        "match" => {
            let op = match body.get("op").and_then(Value::as_str).unwrap_or("==") {
                "==" | "in" => String::new(),
                op => format!("{op} "),
            };
            format!(
                "{} {op}{}",
                render_left(&body["left"]),
                render_value(&body["right"])
            )
        }
        "accept" | "drop" | "return" | "continue" | "counter" | "log" => key.clone(),
        "reject" => match body.get("type").and_then(Value::as_str) {
            Some("tcp reset") => "reject with tcp reset".into(),
            _ => "reject".into(),
        },
        "jump" | "goto" => format!(
            "{key} {}",
            body.get("target").and_then(Value::as_str).unwrap_or("?")
        ),
        "xt" => format!(
            "xt {} {}",
            body.get("type").and_then(Value::as_str).unwrap_or("?"),
            body.get("name").and_then(Value::as_str).unwrap_or("?")
        ),
        "vmap" => {
            let entries = body
                .get("data")
                .and_then(|d| d.get("set"))
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .map(|kv| {
                            format!(
                                "{} : {}",
                                render_value(&kv[0]),
                                kv.get(1).map(render_expr).unwrap_or_default()
                            )
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                });
            match entries {
                Some(entries) => format!("{} vmap {{ {entries} }}", render_left(&body["key"])),
                None => format!(
                    "{} vmap {}",
                    render_left(&body["key"]),
                    render_value(&body["data"])
                ),
            }
        }
        _ => e.to_string(),
    }
}

fn render_left(v: &Value) -> String {
    if let Some(p) = v.get("payload") {
        return format!(
            "{} {}",
            p["protocol"].as_str().unwrap_or("?"),
            p["field"].as_str().unwrap_or("?")
        );
    }
    for k in ["meta", "ct"] {
        if let Some(key) = v.get(k).and_then(|m| m.get("key")).and_then(Value::as_str) {
            return if k == "meta" && matches!(key, "iifname" | "iif" | "oifname" | "oif") {
                key.to_string()
            } else {
                format!("{k} {key}")
            };
        }
    }
    v.to_string()
}

fn render_value(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Array(a) => a.iter().map(render_value).collect::<Vec<_>>().join(","),
        Value::Object(o) if o.contains_key("set") => format!(
            "{{ {} }}",
            values(v)
                .iter()
                .map(render_value)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Value::Object(o) if o.contains_key("range") => format!(
            "{}-{}",
            render_value(&o["range"][0]),
            render_value(&o["range"][1])
        ),
        Value::Object(o) if o.contains_key("prefix") => format!(
            "{}/{}",
            render_value(&o["prefix"]["addr"]),
            render_value(&o["prefix"]["len"])
        ),
        v => v.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// iptables-save

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

fn describe(a: &Admission) -> String {
    match a {
        Admission::Admitted => "admitted".into(),
        Admission::Blocked { by, .. } => format!("dropped by {by}"),
        Admission::Unsure { otherwise, doubts } => {
            format!("{otherwise}, unless: {}", doubts.join("; "))
        }
    }
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

// ---------------------------------------------------------------------------------------------
// sshd's ports

/// The TCP ports sshd listens on: the `Port`/`ListenAddress` lines of `sshd_config` (and of
/// files it `Include`s; default 22), plus the LISTEN sockets that belong to a process named
/// `sshd`. The latter are found by matching the socket inodes of `/proc/<pid>/fd` (the procfs
/// root is taken as the grandparent of the first `proc_net_tcp` path, e.g. `/proc` for
/// `/proc/net/tcp`) against the LISTEN (`0A`) lines of `proc_net_tcp`. That scan needs root; it
/// catches an sshd still listening on a port the config no longer names (not restarted yet).
/// With systemd socket activation (`ssh.socket`) the listener belongs to systemd and only the
/// config ports are found.
pub fn sshd_ports(sshd_config: &Path, proc_net_tcp: &[PathBuf]) -> Vec<u16> {
    let mut ports = config_ports(sshd_config);
    let proc_root = proc_net_tcp
        .first()
        .and_then(|p| p.parent())
        .and_then(Path::parent);
    let inodes = proc_root.map(sshd_socket_inodes).unwrap_or_default();
    if !inodes.is_empty() {
        for f in proc_net_tcp {
            if let Ok(text) = std::fs::read_to_string(f) {
                ports.extend(
                    listening(&text)
                        .into_iter()
                        .filter(|(_, inode)| inodes.contains(inode))
                        .map(|(p, _)| p),
                );
            }
        }
    }
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// Ports named by an sshd config: `ListenAddress host:port` as written, `Port` for the
/// addresses without a port (or for all addresses); 22 when nothing says otherwise.
fn config_ports(path: &Path) -> Vec<u16> {
    let mut port_lines = Vec::new();
    let mut listen = Vec::new();
    let base = path.parent().unwrap_or(Path::new("/etc/ssh")).to_path_buf();
    read_sshd_config(path, &base, 0, &mut port_lines, &mut listen);
    if port_lines.is_empty() {
        port_lines.push(22);
    }
    if listen.is_empty() {
        return port_lines;
    }
    listen
        .into_iter()
        .flat_map(|p: Option<u16>| p.map_or_else(|| port_lines.clone(), |p| vec![p]))
        .collect()
}

fn read_sshd_config(
    path: &Path,
    base: &Path,
    depth: u32,
    ports: &mut Vec<u16>,
    listen: &mut Vec<Option<u16>>,
) {
    let Ok(text) = std::fs::read_to_string(path) else {
        return;
    };
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let mut words = line.split_whitespace();
        let (Some(key), Some(value)) = (words.next(), words.next()) else {
            continue;
        };
        match key.to_ascii_lowercase().as_str() {
            "port" => ports.extend(value.parse::<u16>().ok()),
            "listenaddress" => listen.push(listen_port(value)),
            "include" if depth < 8 => {
                for pattern in std::iter::once(value).chain(words) {
                    for file in expand_include(base, pattern) {
                        read_sshd_config(&file, base, depth + 1, ports, listen);
                    }
                }
            }
            // Port and ListenAddress are not allowed inside Match blocks.
            "match" => return,
            _ => {}
        }
    }
}

/// The port of a `ListenAddress` value, if it has one: `1.2.3.4:2222`, `[::1]:2222`.
fn listen_port(v: &str) -> Option<u16> {
    if let Some(rest) = v.strip_prefix('[') {
        return rest.split_once("]:").and_then(|(_, p)| p.parse().ok());
    }
    match v.matches(':').count() {
        1 => v.rsplit_once(':').and_then(|(_, p)| p.parse().ok()),
        _ => None,
    }
}

/// The files an `Include` pattern names (relative to /etc/ssh; `*` and `?` in the file name).
fn expand_include(base: &Path, pattern: &str) -> Vec<PathBuf> {
    let full = if Path::new(pattern).is_absolute() {
        PathBuf::from(pattern)
    } else {
        base.join(pattern)
    };
    let name = full
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("")
        .to_string();
    if !name.contains(['*', '?']) {
        return vec![full];
    }
    let dir = full.parent().unwrap_or(base);
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| e.file_name().to_str().is_some_and(|n| wildcard(&name, n)))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// Shell-style match of `*` and `?`.
fn wildcard(pattern: &str, name: &str) -> bool {
    match pattern.chars().next() {
        None => name.is_empty(),
        Some('*') => (0..=name.len())
            .filter(|&i| name.is_char_boundary(i))
            .any(|i| wildcard(&pattern[1..], &name[i..])),
        Some(c) => {
            let mut n = name.chars();
            match n.next() {
                Some(d) if c == '?' || c == d => wildcard(&pattern[c.len_utf8()..], n.as_str()),
                _ => false,
            }
        }
    }
}

/// Socket inodes held by processes named `sshd` under the procfs root.
fn sshd_socket_inodes(proc_root: &Path) -> HashSet<u64> {
    let mut inodes = HashSet::new();
    let Ok(dir) = std::fs::read_dir(proc_root) else {
        return inodes;
    };
    for entry in dir.filter_map(Result::ok) {
        let pid_dir = entry.path();
        if !entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        {
            continue;
        }
        if !std::fs::read_to_string(pid_dir.join("comm")).is_ok_and(|c| c.trim() == "sshd") {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(pid_dir.join("fd")) else {
            continue;
        };
        for fd in fds.filter_map(Result::ok) {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let t = target.to_string_lossy();
            if let Some(n) = t
                .strip_prefix("socket:[")
                .and_then(|s| s.strip_suffix(']'))
                .and_then(|s| s.parse().ok())
            {
                inodes.insert(n);
            }
        }
    }
    inodes
}

/// `(port, inode)` of the LISTEN sockets in a `/proc/net/tcp` or `tcp6` text.
fn listening(text: &str) -> Vec<(u16, u64)> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.get(3) != Some(&"0A") {
                return None;
            }
            let port = u16::from_str_radix(f.get(1)?.rsplit_once(':')?.1, 16).ok()?;
            Some((port, f.get(9)?.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::check::Status;
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// Captured with `unshare -n` from nft 1.0.6: `nft -f` of
    /// ```text
    /// table inet filter {
    ///   chain input { type filter hook input priority filter; policy drop;
    ///     ct state established,related accept
    ///     iifname "lo" accept
    ///     tcp dport { 22, 8388 } accept
    ///     tcp dport 60000-60010 accept
    ///     tcp dport 23 reject
    ///     ip saddr 10.0.0.0/8 tcp dport 3306 accept
    ///     tcp dport != 80 drop
    ///     jump myc
    ///     reject }
    ///   chain myc { tcp dport 443 accept } }
    /// ```
    /// then `nft -j list ruleset`.
    const NFT_REAL: &str = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}, {"table": {"family": "inet", "name": "filter", "handle": 1}}, {"chain": {"family": "inet", "table": "filter", "name": "input", "handle": 1, "type": "filter", "hook": "input", "prio": 0, "policy": "drop"}}, {"chain": {"family": "inet", "table": "filter", "name": "myc", "handle": 2}}, {"rule": {"family": "inet", "table": "filter", "chain": "input", "handle": 3, "expr": [{"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "related"]}}, {"accept": null}]}}, {"rule": {"family": "inet", "table": "filter", "chain": "input", "handle": 4, "expr": [{"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "lo"}}, {"accept": null}]}}, {"rule": {"family": "inet", "table": "filter", "chain": "input", "handle": 6, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": {"set": [22, 8388]}}}, {"accept": null}]}}, {"rule": {"family": "inet", "table": "filter", "chain": "input", "handle": 7, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": {"range": [60000, 60010]}}}, {"accept": null}]}}, {"rule": {"family": "inet", "table": "filter", "chain": "input", "handle": 8, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 23}}, {"reject": {"type": "icmpx", "expr": "port-unreachable"}}]}}, {"rule": {"family": "inet", "table": "filter", "chain": "input", "handle": 9, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": {"prefix": {"addr": "10.0.0.0", "len": 8}}}}, {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 3306}}, {"accept": null}]}}, {"rule": {"family": "inet", "table": "filter", "chain": "input", "handle": 10, "expr": [{"match": {"op": "!=", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 80}}, {"drop": null}]}}, {"rule": {"family": "inet", "table": "filter", "chain": "input", "handle": 11, "expr": [{"jump": {"target": "myc"}}]}}, {"rule": {"family": "inet", "table": "filter", "chain": "input", "handle": 12, "expr": [{"reject": {"type": "icmpx", "expr": "port-unreachable"}}]}}, {"rule": {"family": "inet", "table": "filter", "chain": "myc", "handle": 13, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 443}}, {"accept": null}]}}]}"#;

    /// Captured the same way: verdict maps, a named interval set, `meta nfproto`, a rate limit,
    /// and a nat chain at the input hook (which must be ignored).
    const NFT_VMAP: &str = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}, {"table": {"family": "inet", "name": "f", "handle": 1}}, {"set": {"family": "inet", "name": "allowed", "table": "f", "type": "inet_service", "handle": 3, "flags": ["interval"], "elem": [443, {"range": [1000, 1010]}]}}, {"chain": {"family": "inet", "table": "f", "name": "input", "handle": 1, "type": "filter", "hook": "input", "prio": 0, "policy": "drop"}}, {"chain": {"family": "inet", "table": "f", "name": "nat_in", "handle": 2, "type": "nat", "hook": "input", "prio": 100, "policy": "accept"}}, {"rule": {"family": "inet", "table": "f", "chain": "input", "handle": 5, "expr": [{"vmap": {"key": {"ct": {"key": "state"}}, "data": {"set": [["invalid", {"drop": null}], ["established", {"accept": null}], ["related", {"accept": null}]]}}}]}}, {"rule": {"family": "inet", "table": "f", "chain": "input", "handle": 7, "expr": [{"vmap": {"key": {"meta": {"key": "iifname"}}, "data": {"set": [["lo", {"accept": null}]]}}}]}}, {"rule": {"family": "inet", "table": "f", "chain": "input", "handle": 9, "expr": [{"vmap": {"key": {"payload": {"protocol": "tcp", "field": "dport"}}, "data": {"set": [[22, {"accept": null}], [23, {"drop": null}]]}}}]}}, {"rule": {"family": "inet", "table": "f", "chain": "input", "handle": 10, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": "@allowed"}}, {"accept": null}]}}, {"rule": {"family": "inet", "table": "f", "chain": "input", "handle": 11, "expr": [{"match": {"op": "==", "left": {"meta": {"key": "nfproto"}}, "right": "ipv6"}}, {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 8388}}, {"accept": null}]}}, {"rule": {"family": "inet", "table": "f", "chain": "input", "handle": 12, "expr": [{"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": "new"}}, {"limit": {"rate": 5, "burst": 5, "per": "minute"}}, {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 2222}}, {"accept": null}]}}]}"#;

    /// What nft shows of a ufw-like iptables-nft ruleset: conntrack and multiport are opaque `xt`.
    const NFT_IPTABLES_NFT: &str = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}, {"table": {"family": "ip", "name": "filter", "handle": 1}}, {"chain": {"family": "ip", "table": "filter", "name": "ufw-before-input", "handle": 1}}, {"chain": {"family": "ip", "table": "filter", "name": "ufw-user-input", "handle": 2}}, {"chain": {"family": "ip", "table": "filter", "name": "INPUT", "handle": 3, "type": "filter", "hook": "input", "prio": 0, "policy": "drop"}}, {"rule": {"family": "ip", "table": "filter", "chain": "ufw-before-input", "handle": 5, "expr": [{"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "lo"}}, {"counter": {"packets": 0, "bytes": 0}}, {"accept": null}]}}, {"rule": {"family": "ip", "table": "filter", "chain": "ufw-before-input", "handle": 6, "expr": [{"xt": {"type": "match", "name": "conntrack"}}, {"counter": {"packets": 0, "bytes": 0}}, {"accept": null}]}}, {"rule": {"family": "ip", "table": "filter", "chain": "ufw-before-input", "handle": 7, "expr": [{"counter": {"packets": 0, "bytes": 0}}, {"jump": {"target": "ufw-user-input"}}]}}, {"rule": {"family": "ip", "table": "filter", "chain": "ufw-user-input", "handle": 8, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 22}}, {"counter": {"packets": 0, "bytes": 0}}, {"accept": null}]}}, {"rule": {"family": "ip", "table": "filter", "chain": "ufw-user-input", "handle": 9, "expr": [{"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "tcp"}}, {"xt": {"type": "match", "name": "multiport"}}, {"counter": {"packets": 0, "bytes": 0}}, {"accept": null}]}}, {"rule": {"family": "ip", "table": "filter", "chain": "ufw-user-input", "handle": 10, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 23}}, {"counter": {"packets": 0, "bytes": 0}}, {"xt": {"type": "target", "name": "REJECT"}}]}}, {"rule": {"family": "ip", "table": "filter", "chain": "ufw-user-input", "handle": 11, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": {"prefix": {"addr": "10.0.0.0", "len": 8}}}}, {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 3306}}, {"counter": {"packets": 0, "bytes": 0}}, {"accept": null}]}}, {"rule": {"family": "ip", "table": "filter", "chain": "ufw-user-input", "handle": 12, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": {"range": [2000, 2010]}}}, {"xt": {"type": "match", "name": "comment"}}, {"counter": {"packets": 0, "bytes": 0}}, {"accept": null}]}}, {"rule": {"family": "ip", "table": "filter", "chain": "INPUT", "handle": 4, "expr": [{"counter": {"packets": 0, "bytes": 0}}, {"jump": {"target": "ufw-before-input"}}]}}]}"#;

    /// `iptables-save` of the same ruleset.
    const IPTABLES_SAVE_UFW: &str = r#"# Generated by iptables-save v1.8.9 (nf_tables) on Mon Nov 23 08:54:40 2026
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

    fn nft(text: &str) -> FirewallRules {
        parse_nft_json(text).unwrap()
    }

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
    fn real_nft_output_set_and_range_accept() {
        let r = nft(NFT_REAL);
        for port in [22, 8388, 60000, 60005, 60010] {
            assert_eq!(
                admits(&r, port, Family::V4),
                Admission::Admitted,
                "port {port}"
            );
            assert_eq!(
                admits(&r, port, Family::V6),
                Admission::Admitted,
                "port {port}"
            );
        }
    }

    #[test]
    fn real_nft_output_ct_state_and_lo_do_not_admit_new_syn() {
        let r = nft(NFT_REAL);
        // 8080 passes ct state, iifname lo and the sets, then hits `tcp dport != 80 drop`.
        let a = admits(&r, 8080, Family::V4);
        assert!(
            matches!(&a, Admission::Blocked { by, .. } if by.contains("tcp dport != 80 drop")),
            "{a:?}"
        );
        assert!(
            matches!(admits(&r, 23, Family::V4), Admission::Blocked { by, .. } if by.contains("tcp dport 23 reject"))
        );
        // 80 escapes the != 80 drop, jumps to myc (only 443 there) and meets the final reject.
        assert!(
            matches!(admits(&r, 80, Family::V4), Admission::Blocked { by, .. } if by.contains("handle 12: reject"))
        );
        // 443 would be accepted in myc, but the `!= 80` drop comes first.
        assert!(matches!(
            admits(&r, 443, Family::V4),
            Admission::Blocked { .. }
        ));
    }

    #[test]
    fn source_restricted_accept_warns_with_the_rule() {
        let r = nft(NFT_REAL);
        let c = relay_port(3306, &r);
        assert_eq!(c.status, Status::Warn, "{c:?}");
        assert!(
            c.cause
                .contains("ip saddr 10.0.0.0/8 tcp dport 3306 accept"),
            "{}",
            c.cause
        );
        // IPv6 packets do not match `ip saddr`, so there the answer is certain.
        assert!(matches!(
            admits(&r, 3306, Family::V6),
            Admission::Blocked { .. }
        ));
    }

    #[test]
    fn vmaps_named_sets_and_nfproto_are_interpreted() {
        let r = nft(NFT_VMAP);
        assert_eq!(admits(&r, 22, Family::V4), Admission::Admitted);
        assert!(matches!(
            admits(&r, 23, Family::V4),
            Admission::Blocked { .. }
        ));
        assert_eq!(admits(&r, 443, Family::V4), Admission::Admitted);
        assert_eq!(admits(&r, 1005, Family::V4), Admission::Admitted);
        assert!(matches!(
            admits(&r, 1011, Family::V4),
            Admission::Blocked { .. }
        ));
        assert_eq!(admits(&r, 8388, Family::V6), Admission::Admitted);
        assert!(matches!(
            admits(&r, 8388, Family::V4),
            Admission::Blocked { .. }
        ));
        let c = relay_port(8388, &r);
        assert_eq!(c.status, Status::Fail, "{c:?}");
        // A rate limit cannot be judged: warn, quoting it.
        let c = relay_port(2222, &r);
        assert_eq!(c.status, Status::Warn, "{c:?}");
        assert!(c.cause.contains("limit"), "{}", c.cause);
    }

    #[test]
    fn iptables_nft_xt_rules_warn_instead_of_failing() {
        let r = nft(NFT_IPTABLES_NFT);
        // 8388 meets the opaque conntrack and multiport rules before the policy drop.
        let c = relay_port(8388, &r);
        assert_eq!(c.status, Status::Warn, "{c:?}");
        assert!(
            c.cause.contains("could not interpret") && c.cause.contains("conntrack"),
            "{}",
            c.cause
        );
        assert!(r.has_xt("ip"));
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

    /// A fake /etc/ssh and /proc under the temp dir, removed on drop.
    struct Tree(PathBuf);

    impl Tree {
        fn new() -> Tree {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let dir = std::env::temp_dir().join(format!(
                "braid-doctor-fw-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir).unwrap();
            Tree(dir)
        }

        fn file(&self, rel: &str, text: &str) -> PathBuf {
            let p = self.0.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, text).unwrap();
            p
        }
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const PROC_NET_TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 00000000:08AE 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5555 1 0000000000000000 100 0 0 10 0\n\
   1: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 9999 1 0000000000000000 100 0 0 10 0\n\
   2: 0100007F:FEBE 0100007F:0016 01 00000000:00000000 00:00000000 00000000     0        0 5556 1 0000000000000000 100 0 0 10 0\n";

    #[test]
    fn sshd_ports_reads_includes_and_sshd_listen_sockets() {
        let t = Tree::new();
        let cfg = t.file(
            "etc/ssh/sshd_config",
            "# Port 22\nInclude sshd_config.d/*.conf\nPasswordAuthentication no\n",
        );
        t.file("etc/ssh/sshd_config.d/10-omr.conf", "Port 65222\n");
        t.file("etc/ssh/sshd_config.d/README", "Port 1\n");
        let tcp = t.file("proc/net/tcp", PROC_NET_TCP);
        t.file("proc/1234/comm", "sshd\n");
        t.file("proc/99/comm", "nginx\n");
        std::fs::create_dir_all(t.0.join("proc/1234/fd")).unwrap();
        std::fs::create_dir_all(t.0.join("proc/99/fd")).unwrap();
        std::os::unix::fs::symlink("socket:[5555]", t.0.join("proc/1234/fd/3")).unwrap();
        std::os::unix::fs::symlink("socket:[9999]", t.0.join("proc/99/fd/6")).unwrap();
        // 0x08AE = 2222: the running sshd still listens on an old port; 80 belongs to nginx.
        assert_eq!(
            sshd_ports(&cfg, &[tcp, t.0.join("proc/net/tcp6")]),
            vec![2222, 65222]
        );
    }

    #[test]
    fn sshd_ports_defaults_to_22_and_honours_listen_address_ports() {
        let t = Tree::new();
        let none = sshd_ports(&t.0.join("missing"), &[]);
        assert_eq!(none, vec![22]);
        let cfg = t.file(
            "sshd_config",
            "Port 2200\nListenAddress 0.0.0.0:4000\nListenAddress [::]\nMatch User x\nPort 5\n",
        );
        assert_eq!(sshd_ports(&cfg, &[]), vec![2200, 4000]);
    }
}
