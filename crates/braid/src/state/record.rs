//! The state record: what one braid daemon changed in the kernel, and the original values it
//! must put back. Pure data and decisions; reading and writing the file is `file.rs`, touching
//! the kernel is `undo.rs`.
//!
//! Example (`/run/braid/gateway-braid.json`):
//! ```json
//! {
//!   "version": 1,
//!   "role": "gateway",
//!   "name": "braid",
//!   "owner": { "pid": 4242, "start_ticks": 1234567, "netns": 4026531840 },
//!   "nft_tables": ["braid"],
//!   "endpoints": ["10.1.0.1", "10.2.0.1"],
//!   "route_tables": [101, 102],
//!   "mptcp_limits": { "subflows": 0, "add_addr_accepted": 0 },
//!   "sysctls": [{ "key": "net.mptcp.blackhole_timeout", "original": "3600" }]
//! }
//! ```
//! Every entry is written *before* the change it describes, so a record may name something that
//! was never applied; undoing such an entry must be (and is) harmless. An original value, once
//! recorded, is never replaced: a later run that finds the kernel still changed must not take
//! the changed value for the original.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::owner::Owner;

/// The record format this braid writes and reads.
pub const VERSION: u32 = 1;

/// The sysctls braid may change and so may restore. A record naming any other key is refused:
/// the file is root's, but braid never writes a sysctl it did not set itself.
pub const RESTORABLE_SYSCTLS: [&str; 1] = [braid_sys::mptcp::blackhole::TIMEOUT_SYSCTL];

/// MPTCP limits as they were before braid raised them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitsRecord {
    /// `subflows`.
    pub subflows: u32,
    /// `add_addr_accepted`.
    pub add_addr_accepted: u32,
}

/// A sysctl's value before braid set it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SysctlOriginal {
    /// Dotted key.
    pub key: String,
    /// The value to put back, as read.
    pub original: String,
}

/// What one daemon changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// [`VERSION`] when written.
    pub version: u32,
    /// `gateway` (the relay changes no kernel state).
    pub role: String,
    /// The instance: the gateway's `nft_table`.
    pub name: String,
    /// The process that wrote it.
    pub owner: Owner,
    /// nftables tables (family inet) braid created.
    #[serde(default)]
    pub nft_tables: Vec<String>,
    /// Addresses braid gave an MPTCP endpoint.
    #[serde(default)]
    pub endpoints: Vec<IpAddr>,
    /// Routing tables holding braid's routes (protocol 212) and selected by braid's rules.
    #[serde(default)]
    pub route_tables: Vec<u32>,
    /// MPTCP limits before braid raised them.
    #[serde(default)]
    pub mptcp_limits: Option<LimitsRecord>,
    /// Sysctls before braid set them.
    #[serde(default)]
    pub sysctls: Vec<SysctlOriginal>,
}

/// Why a record cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// Not JSON of the expected shape.
    #[error("not a braid state record ({0})")]
    Syntax(String),
    /// Written by a braid with a newer format.
    #[error("written in format version {0}, but this braid reads only version {VERSION}; fix: run the braid that wrote it, or undo its changes by hand")]
    Version(u32),
    /// A value braid would never have written.
    #[error("{0}")]
    Invalid(String),
}

/// One step that puts the kernel back as it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Undo {
    /// Delete braid's nftables table (first, so LAN TCP is no longer redirected to nothing).
    DeleteNftTable(String),
    /// Delete the user endpoints on these addresses.
    DeleteEndpoints(Vec<IpAddr>),
    /// Delete protocol-212 routes in these tables and protocol-212 rules selecting them.
    DeleteRoutesAndRules(Vec<u32>),
    /// Put the MPTCP limits back.
    RestoreLimits(LimitsRecord),
    /// Put a sysctl back.
    RestoreSysctl(SysctlOriginal),
}

/// Like the command that undoes it by hand.
impl fmt::Display for Undo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |v: &[String]| v.join(", ");
        match self {
            Undo::DeleteNftTable(t) => write!(f, "nft delete table inet {t}"),
            Undo::DeleteEndpoints(a) => write!(
                f,
                "delete the MPTCP endpoints on {}",
                list(&a.iter().map(|a| a.to_string()).collect::<Vec<_>>())
            ),
            Undo::DeleteRoutesAndRules(t) => write!(
                f,
                "delete braid's routes and rules (proto 212) of table(s) {}",
                list(&t.iter().map(|t| t.to_string()).collect::<Vec<_>>())
            ),
            Undo::RestoreLimits(l) => write!(
                f,
                "ip mptcp limits set subflows {} add_addr_accepted {}",
                l.subflows, l.add_addr_accepted
            ),
            Undo::RestoreSysctl(s) => write!(f, "sysctl -w {}={}", s.key, s.original),
        }
    }
}

/// Accepts what the config accepts for `nft_table`: letters, digits, '-', '_'.
fn valid_table_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

impl Record {
    /// An empty record for `owner`.
    pub fn new(role: &str, name: &str, owner: Owner) -> Record {
        Record {
            version: VERSION,
            role: role.into(),
            name: name.into(),
            owner,
            nft_tables: Vec::new(),
            endpoints: Vec::new(),
            route_tables: Vec::new(),
            mptcp_limits: None,
            sysctls: Vec::new(),
        }
    }

    /// Parses and checks a record's JSON text.
    pub fn parse(text: &str) -> Result<Record, RecordError> {
        let r: Record =
            serde_json::from_str(text).map_err(|e| RecordError::Syntax(e.to_string()))?;
        if r.version != VERSION {
            return Err(RecordError::Version(r.version));
        }
        if let Some(t) = r.nft_tables.iter().find(|t| !valid_table_name(t)) {
            return Err(RecordError::Invalid(format!(
                "nft table name {t:?} is not one braid would create"
            )));
        }
        if let Some(t) = r.route_tables.iter().find(|t| matches!(t, 0 | 253..=255)) {
            return Err(RecordError::Invalid(format!(
                "routing table {t} is reserved; braid never uses it"
            )));
        }
        if let Some(s) = r
            .sysctls
            .iter()
            .find(|s| !RESTORABLE_SYSCTLS.contains(&s.key.as_str()))
        {
            return Err(RecordError::Invalid(format!(
                "sysctl {} is not one braid sets",
                s.key
            )));
        }
        Ok(r)
    }

    /// True when nothing needs undoing.
    pub fn is_empty(&self) -> bool {
        undo_plan(self).is_empty()
    }

    /// Notes that braid is about to create nftables table `t`; true if the record changed.
    pub fn note_nft_table(&mut self, t: &str) -> bool {
        push_new(&mut self.nft_tables, t.to_string())
    }

    /// Notes that braid is about to give `addr` an endpoint; true if the record changed.
    pub fn note_endpoint(&mut self, addr: IpAddr) -> bool {
        push_new(&mut self.endpoints, addr)
    }

    /// Drops `addr` once braid removed its endpoint; true if the record changed.
    pub fn forget_endpoint(&mut self, addr: IpAddr) -> bool {
        let before = self.endpoints.len();
        self.endpoints.retain(|a| *a != addr);
        self.endpoints.len() != before
    }

    /// Notes the routing tables braid is about to fill; true if the record changed.
    pub fn note_route_tables(&mut self, tables: &[u32]) -> bool {
        let before = self.route_tables.len();
        for t in tables {
            push_new(&mut self.route_tables, *t);
        }
        self.route_tables.len() != before
    }

    /// Notes `current` as the limits to restore, unless an original is already recorded.
    /// Returns the original to restore and whether the record changed.
    pub fn note_limits(&mut self, current: LimitsRecord) -> (LimitsRecord, bool) {
        match self.mptcp_limits {
            Some(original) => (original, false),
            None => {
                self.mptcp_limits = Some(current);
                (current, true)
            }
        }
    }

    /// Notes `current` as the value of `key` to restore, unless an original is already
    /// recorded. Returns the original to restore and whether the record changed.
    pub fn note_sysctl(&mut self, key: &str, current: &str) -> (String, bool) {
        if let Some(s) = self.sysctls.iter().find(|s| s.key == key) {
            return (s.original.clone(), false);
        }
        self.sysctls.push(SysctlOriginal {
            key: key.into(),
            original: current.into(),
        });
        (current.into(), true)
    }

    /// Removes what `step` undid.
    pub fn forget(&mut self, step: &Undo) {
        match step {
            Undo::DeleteNftTable(t) => self.nft_tables.retain(|x| x != t),
            Undo::DeleteEndpoints(a) => self.endpoints.retain(|x| !a.contains(x)),
            Undo::DeleteRoutesAndRules(t) => self.route_tables.retain(|x| !t.contains(x)),
            Undo::RestoreLimits(_) => self.mptcp_limits = None,
            Undo::RestoreSysctl(s) => self.sysctls.retain(|x| x.key != s.key),
        }
    }

    /// The same record, now owned by `owner` (a later run adopting what it could not undo).
    pub fn adopted_by(mut self, owner: Owner) -> Record {
        self.owner = owner;
        self
    }
}

fn push_new<T: PartialEq>(v: &mut Vec<T>, x: T) -> bool {
    if v.contains(&x) {
        false
    } else {
        v.push(x);
        true
    }
}

/// The steps that undo `r`, in order: the capture table first (LAN TCP must not be redirected
/// to a port nobody serves), then endpoints, routes and rules, then the limits and sysctls.
pub fn undo_plan(r: &Record) -> Vec<Undo> {
    let mut steps: Vec<Undo> = r
        .nft_tables
        .iter()
        .cloned()
        .map(Undo::DeleteNftTable)
        .collect();
    if !r.endpoints.is_empty() {
        steps.push(Undo::DeleteEndpoints(r.endpoints.clone()));
    }
    if !r.route_tables.is_empty() {
        steps.push(Undo::DeleteRoutesAndRules(r.route_tables.clone()));
    }
    if let Some(l) = r.mptcp_limits {
        steps.push(Undo::RestoreLimits(l));
    }
    steps.extend(r.sysctls.iter().cloned().map(Undo::RestoreSysctl));
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(pid: u32) -> Owner {
        Owner {
            pid,
            start_ticks: 7,
            netns: 4026531840,
        }
    }

    fn full() -> Record {
        let mut r = Record::new("gateway", "braid", owner(10));
        r.note_route_tables(&[101, 102]);
        r.note_endpoint("10.1.0.1".parse().expect("ip"));
        r.note_nft_table("braid");
        r.note_limits(LimitsRecord {
            subflows: 0,
            add_addr_accepted: 0,
        });
        r.note_sysctl("net.mptcp.blackhole_timeout", "3600");
        r
    }

    #[test]
    fn empty_record_needs_no_undo() {
        let r = Record::new("gateway", "braid", owner(1));
        assert!(r.is_empty());
        assert!(undo_plan(&r).is_empty());
    }

    #[test]
    fn undo_plan_deletes_the_capture_table_first_and_restores_values_last() {
        let steps = undo_plan(&full());
        let shown: Vec<String> = steps.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            shown,
            [
                "nft delete table inet braid",
                "delete the MPTCP endpoints on 10.1.0.1",
                "delete braid's routes and rules (proto 212) of table(s) 101, 102",
                "ip mptcp limits set subflows 0 add_addr_accepted 0",
                "sysctl -w net.mptcp.blackhole_timeout=3600",
            ]
        );
    }

    #[test]
    fn recorded_original_wins_over_a_still_changed_value() {
        let mut r = full();
        // A later run finds the values braid itself had set.
        let (limits, changed) = r.note_limits(LimitsRecord {
            subflows: 2,
            add_addr_accepted: 2,
        });
        assert!(!changed);
        assert_eq!(limits.subflows, 0);
        let (v, changed) = r.note_sysctl("net.mptcp.blackhole_timeout", "7");
        assert_eq!((v.as_str(), changed), ("3600", false));
    }

    #[test]
    fn noting_twice_changes_nothing_and_forget_endpoint_drops_it() {
        let mut r = full();
        assert!(!r.note_endpoint("10.1.0.1".parse().expect("ip")));
        assert!(!r.note_nft_table("braid"));
        assert!(!r.note_route_tables(&[102]));
        assert!(r.forget_endpoint("10.1.0.1".parse().expect("ip")));
        assert!(r.endpoints.is_empty());
    }

    #[test]
    fn forgetting_every_undone_step_empties_the_record() {
        let mut r = full();
        for s in undo_plan(&r) {
            r.forget(&s);
        }
        assert!(r.is_empty(), "{r:?}");
    }

    #[test]
    fn record_survives_a_json_round_trip() {
        let r = full();
        let text = serde_json::to_string_pretty(&r).expect("json");
        assert_eq!(Record::parse(&text).expect("parse"), r);
    }

    #[test]
    fn parse_refuses_other_versions_and_values_braid_never_writes() {
        let r = full();
        let bump = serde_json::to_string(&Record {
            version: 2,
            ..r.clone()
        })
        .expect("json");
        assert!(matches!(Record::parse(&bump), Err(RecordError::Version(2))));
        let mut bad = r.clone();
        bad.nft_tables = vec!["x; flush ruleset".into()];
        let e = Record::parse(&serde_json::to_string(&bad).expect("json")).unwrap_err();
        assert!(e.to_string().contains("nft table"), "{e}");
        let mut bad = r.clone();
        bad.sysctls[0].key = "kernel.panic".into();
        let e = Record::parse(&serde_json::to_string(&bad).expect("json")).unwrap_err();
        assert!(e.to_string().contains("kernel.panic"), "{e}");
        let mut bad = r;
        bad.route_tables = vec![254];
        assert!(Record::parse(&serde_json::to_string(&bad).expect("json")).is_err());
        assert!(matches!(
            Record::parse("{\"version\":1"),
            Err(RecordError::Syntax(_))
        ));
    }
}
