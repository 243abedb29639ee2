//! The host firewall as typed data: tables of chains of rules, each rule a list of matches and a
//! verdict. Every parser produces it ([`super::nft`], [`super::iptables`]), the evaluator judges
//! it ([`super::eval`]) and planned rules are written in it ([`super::plan`]).
//!
//! Only what decides "is a new connection from the internet to port P of this host admitted?" is
//! typed: the L4 protocol, destination ports, `ct state`, the input interface, the family, and
//! the verdicts with their jumps. Everything else a rule says is kept as an
//! [`Match::Uninterpreted`] text, so that an answer that depends on it can quote it.

use std::fmt;

/// The IP family of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

/// A transport that has ports, as braid uses them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum L4 {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl L4 {
    /// `tcp` or `udp`, as nft and iptables write it.
    pub fn name(self) -> &'static str {
        match self {
            L4::Tcp => "tcp",
            L4::Udp => "udp",
        }
    }
}

/// A protocol named by a match (`meta l4proto icmp`, `-p sctp`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Protocol {
    /// One braid judges.
    L4(L4),
    /// Any other (`icmp`, `ipv6-icmp`, `sctp`, `47`): never a TCP or UDP packet.
    Other(String),
}

impl Protocol {
    /// From a name or number as nft and iptables write it (`tcp`, `6`, `udp`, `17`, `icmp`).
    pub fn parse(s: &str) -> Protocol {
        match s {
            "tcp" | "6" => Protocol::L4(L4::Tcp),
            "udp" | "17" => Protocol::L4(L4::Udp),
            other => Protocol::Other(other.to_string()),
        }
    }
}

/// The families of packets a table sees.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TableFamily {
    /// `ip` (and every iptables table).
    Ip,
    /// `ip6` (and every ip6tables table).
    Ip6,
    /// `inet`: both.
    Inet,
    /// `arp`, `bridge`, `netdev`: never an IP packet to a local port at the input hook.
    Other(String),
}

impl TableFamily {
    /// Whether packets of `family` pass through this table.
    pub fn sees(&self, family: Family) -> bool {
        matches!(
            (self, family),
            (TableFamily::Inet, _) | (TableFamily::Ip, Family::V4) | (TableFamily::Ip6, Family::V6)
        )
    }
}

impl fmt::Display for TableFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TableFamily::Ip => "ip",
            TableFamily::Ip6 => "ip6",
            TableFamily::Inet => "inet",
            TableFamily::Other(s) => s,
        })
    }
}

/// Which tool shows, and writes, a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// `nft` (this includes iptables-nft tables read through nft).
    Nft,
    /// `iptables-save` / `ip6tables-save` (iptables-nft, or iptables without nft).
    Iptables,
    /// `iptables-legacy-save`: the old kernel tables, invisible to nft but still filtering.
    IptablesLegacy,
}

/// The host's firewall, as gathered (or as planned).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ruleset {
    /// Where the rules came from (`nft -j list ruleset`, `iptables-save`).
    pub source: String,
    /// Every table of every family.
    pub tables: Vec<Table>,
    /// Tables or chains nothing could read, quoted: they might drop anything.
    pub unreadable: Vec<String>,
    /// Remarks on how the rules were gathered.
    pub notes: Vec<String>,
}

/// One table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// Its family.
    pub family: TableFamily,
    /// Its name (`filter`, `firewalld`).
    pub name: String,
    /// The tool it was read with.
    pub origin: Origin,
    /// True when nft showed opaque `xt` expressions in it: iptables-nft wrote matches nft cannot
    /// show, and `iptables-save` can.
    pub has_xt: bool,
    /// Its chains.
    pub chains: Vec<Chain>,
}

/// One chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    /// Its name.
    pub name: String,
    /// Set for a base chain (hooked into the stack); a regular chain is only reached by jumps.
    pub base: Option<BaseChain>,
    /// Rules in order.
    pub rules: Vec<Rule>,
}

/// Where and how a base chain is hooked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BaseChain {
    /// `filter`, `nat` or `route`.
    pub kind: ChainKind,
    /// The netfilter hook.
    pub hook: Hook,
    /// Its priority (lower runs first); 0 for iptables chains.
    pub priority: i32,
    /// What happens to a packet that no rule decides.
    pub policy: Policy,
}

/// The type of a base chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainKind {
    /// Filters: the only kind that drops new connections.
    Filter,
    /// Rewrites addresses.
    Nat,
    /// Reroutes.
    Route,
}

/// A netfilter hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// `ingress` (netdev).
    Ingress,
    /// `prerouting`.
    Prerouting,
    /// `input`: packets to this host.
    Input,
    /// `forward`.
    Forward,
    /// `output`.
    Output,
    /// `postrouting`.
    Postrouting,
    /// `egress` (netdev).
    Egress,
}

/// A base chain's policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// `accept`.
    Accept,
    /// `drop`.
    Drop,
}

/// One rule: its matches (all must hold) and its verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Matches, all of which must hold.
    pub matches: Vec<Match>,
    /// What the rule does when they hold.
    pub verdict: Verdict,
    /// The rule as the user would recognise it (nft syntax with its handle, or the
    /// `iptables-save` line), for evidence.
    pub text: String,
}

impl Rule {
    /// A rule built in code (a plan, a test); its text is its nft form
    /// (`tcp dport { 22, 8388 } accept`).
    pub fn new(matches: Vec<Match>, verdict: Verdict) -> Rule {
        let text = (matches.iter().map(Match::to_string))
            .chain([verdict.to_string()])
            .collect::<Vec<_>>()
            .join(" ");
        Rule {
            matches,
            verdict,
            text,
        }
    }
}

/// One match of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    /// The packet's L4 protocol is one of these (not one of them, when negated).
    Protocol {
        /// `meta l4proto { tcp, udp }`, `-p tcp`.
        any_of: Vec<Protocol>,
        /// `!=`, `! -p`.
        negate: bool,
    },
    /// The destination port is in one of the ranges (not in them, when negated). A port match
    /// implies its protocol even when negated: `tcp dport != 80` never holds for UDP.
    Dport {
        /// `tcp dport`, `udp dport`; `None` for `th dport` (any transport with ports).
        proto: Option<L4>,
        /// Inclusive ranges.
        ports: Vec<PortRange>,
        /// `!=`, `! --dport`.
        negate: bool,
    },
    /// The connection tracking state is one of these (not one of them, when negated).
    CtState {
        /// `ct state established,related`.
        any_of: Vec<CtState>,
        /// `!=`.
        negate: bool,
    },
    /// The packet came in on one of these interfaces (not on them, when negated).
    Iifname {
        /// `iifname { "lo" }`, `-i lo`.
        any_of: Vec<String>,
        /// `!=`, `! -i`.
        negate: bool,
    },
    /// Only packets of this family (`meta nfproto ipv6`, or implied by `ip saddr …`).
    Family(Family),
    /// A TCP SYN without ACK (`--syn`); implies TCP, even when negated.
    TcpSyn {
        /// `! --syn`.
        negate: bool,
    },
    /// Decided when parsed for every new connection from the internet to this host, whatever
    /// its protocol, port and family: `ct status dnat` (false), `fib daddr type local` (true).
    Fixed {
        /// Whether it holds.
        holds: bool,
        /// As written.
        text: String,
    },
    /// Something braid does not decide, as written.
    Uninterpreted(String),
}

/// An inclusive range of ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortRange {
    /// First port.
    pub first: u16,
    /// Last port (equal to `first` for one port).
    pub last: u16,
}

impl PortRange {
    /// One port.
    pub fn one(port: u16) -> PortRange {
        PortRange {
            first: port,
            last: port,
        }
    }

    /// Whether `port` is in the range.
    pub fn contains(self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

/// A connection tracking state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CtState {
    /// The first packet of a connection: what braid judges.
    New,
    /// A packet of a connection that saw traffic both ways.
    Established,
    /// A new connection expected by another (FTP data, ICMP errors).
    Related,
    /// A packet that fits no connection.
    Invalid,
    /// A packet exempted from tracking (`notrack`).
    Untracked,
}

impl CtState {
    /// From nft's (`established`) or iptables' (`ESTABLISHED`) name.
    pub fn parse(s: &str) -> Option<CtState> {
        Some(match s.to_ascii_lowercase().as_str() {
            "new" => CtState::New,
            "established" => CtState::Established,
            "related" => CtState::Related,
            "invalid" => CtState::Invalid,
            "untracked" => CtState::Untracked,
            _ => return None,
        })
    }

    /// nft's name.
    pub fn name(self) -> &'static str {
        match self {
            CtState::New => "new",
            CtState::Established => "established",
            CtState::Related => "related",
            CtState::Invalid => "invalid",
            CtState::Untracked => "untracked",
        }
    }
}

/// What a rule does when its matches hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// `accept`: final for this base chain only; other base chains at the hook still run.
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
    /// No verdict (`counter`, `log`, a non-terminal iptables target): go on with the next rule.
    Continue,
    /// A verdict braid does not know (`queue`, an unknown target), as written.
    Uninterpreted(String),
}

impl fmt::Display for Match {
    /// nft syntax, as in the rule it came from.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let neg = |negate: bool| if negate { "!= " } else { "" };
        match self {
            Match::Protocol { any_of, negate } => {
                let names: Vec<&str> = (any_of.iter())
                    .map(|p| match p {
                        Protocol::L4(l4) => l4.name(),
                        Protocol::Other(s) => s,
                    })
                    .collect();
                write!(f, "meta l4proto {}{}", neg(*negate), set(&names))
            }
            Match::Dport {
                proto,
                ports,
                negate,
            } => {
                let ports: Vec<String> = ports.iter().map(PortRange::to_string).collect();
                let proto = proto.map_or("th", L4::name);
                write!(f, "{proto} dport {}{}", neg(*negate), set(&ports))
            }
            Match::CtState { any_of, negate } => {
                let names: Vec<&str> = any_of.iter().map(|s| s.name()).collect();
                write!(f, "ct state {}{}", neg(*negate), names.join(","))
            }
            Match::Iifname { any_of, negate } => {
                let names: Vec<String> = any_of.iter().map(|n| format!("\"{n}\"")).collect();
                write!(f, "iifname {}{}", neg(*negate), set(&names))
            }
            Match::Family(Family::V4) => f.write_str("meta nfproto ipv4"),
            Match::Family(Family::V6) => f.write_str("meta nfproto ipv6"),
            Match::TcpSyn { negate } => write!(f, "tcp flags {}syn / syn,ack", neg(*negate)),
            Match::Fixed { text, .. } | Match::Uninterpreted(text) => f.write_str(text),
        }
    }
}

/// `x` for one item, `{ x, y }` for more.
fn set<T: AsRef<str>>(items: &[T]) -> String {
    match items {
        [one] => one.as_ref().to_string(),
        many => {
            let inner: Vec<&str> = many.iter().map(AsRef::as_ref).collect();
            format!("{{ {} }}", inner.join(", "))
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Accept => f.write_str("accept"),
            Verdict::Drop => f.write_str("drop"),
            Verdict::Reject => f.write_str("reject"),
            Verdict::Jump(c) => write!(f, "jump {c}"),
            Verdict::Goto(c) => write!(f, "goto {c}"),
            Verdict::Return => f.write_str("return"),
            Verdict::Continue => f.write_str("continue"),
            Verdict::Uninterpreted(s) => f.write_str(s),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Finding things

/// A chain's full name, as evidence and fixes print it: `inet filter input`,
/// `ip filter(legacy) INPUT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainId {
    /// Its table's family.
    pub family: TableFamily,
    /// Its table's name.
    pub table: String,
    /// Its name.
    pub chain: String,
    /// The tool its table was read with.
    pub origin: Origin,
}

impl fmt::Display for ChainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let legacy = if self.origin == Origin::IptablesLegacy {
            "(legacy)"
        } else {
            ""
        };
        write!(f, "{} {}{legacy} {}", self.family, self.table, self.chain)
    }
}

impl Table {
    /// The chain named `name`.
    pub fn chain(&self, name: &str) -> Option<&Chain> {
        self.chains.iter().find(|c| c.name == name)
    }

    /// The full name of one of its chains.
    pub fn id(&self, chain: &Chain) -> ChainId {
        ChainId {
            family: self.family.clone(),
            table: self.name.clone(),
            chain: chain.name.clone(),
            origin: self.origin,
        }
    }
}

impl Chain {
    /// A filter base chain at the input hook: one that can drop packets to this host.
    pub fn is_input_filter(&self) -> bool {
        matches!(
            self.base,
            Some(BaseChain {
                kind: ChainKind::Filter,
                hook: Hook::Input,
                ..
            })
        )
    }

    /// Whether its policy drops.
    pub fn policy_drops(&self) -> bool {
        matches!(
            self.base,
            Some(BaseChain {
                policy: Policy::Drop,
                ..
            })
        )
    }
}

/// The tool that manages a host's firewall, which is the tool a fix should use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Manager {
    /// ufw (its chains are named `ufw-…`).
    Ufw,
    /// firewalld (its nft table is `inet firewalld`).
    Firewalld,
    /// Plain iptables (or ip6tables): the `filter` table's `INPUT` chain.
    Iptables,
    /// Plain nftables.
    Nft,
}

impl Ruleset {
    /// The filter base chains at the input hook that packets of `family` pass, with their tables.
    pub fn input_chains(&self, family: Family) -> impl Iterator<Item = (&Table, &Chain)> {
        (self.tables.iter())
            .filter(move |t| t.family.sees(family))
            .flat_map(|t| t.chains.iter().map(move |c| (t, c)))
            .filter(|(_, c)| c.is_input_filter())
    }

    /// Whether any table of `family` has opaque iptables-nft `xt` expressions.
    pub fn has_xt(&self, family: &TableFamily) -> bool {
        self.tables.iter().any(|t| &t.family == family && t.has_xt)
    }

    /// Replaces the table `family name` (if any) by `with` (e.g. an iptables-nft table whose
    /// `xt` expressions nft cannot show, by its `iptables-save` form).
    pub fn replace_table(&mut self, family: &TableFamily, name: &str, with: Vec<Table>) {
        self.tables
            .retain(|t| !(&t.family == family && t.name == name));
        self.tables.extend(with);
    }

    /// The tool that manages the chain `chain` of this firewall.
    pub fn manager(&self, chain: &ChainId) -> Manager {
        let chains = || self.tables.iter().flat_map(|t| &t.chains);
        if chains().any(|c| c.name.starts_with("ufw")) {
            Manager::Ufw
        } else if self.tables.iter().any(|t| t.name == "firewalld") {
            Manager::Firewalld
        } else if chain.origin != Origin::Nft || (chain.table == "filter" && chain.chain == "INPUT")
        {
            Manager::Iptables
        } else {
            Manager::Nft
        }
    }
}
