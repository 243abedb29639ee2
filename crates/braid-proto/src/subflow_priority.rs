//! Which subflows of a relay connection carry its data: the first path alone while the
//! transfer is short, every path once it is bulk.
//!
//! Why: a warm connection has every uplink's subflow joined before its request, so the
//! kernel's scheduler spreads even a 100 kB answer over all of them, and the slow uplink's
//! share (about a fifth on the lab's 10 ms wifi + 40 ms 5g) arrives a slow round trip late:
//! the fetch took 1.26× as long as over a fresh connection that had only its first subflow.
//! A joined subflow flagged *backup* carries nothing while the first one works; once the
//! connection has moved [`Policy::bond_after`] bytes in either direction, the flags are cleared
//! and the transfer bonds. The flags are per connection, which only the kernel's userspace path
//! manager offers (the in-kernel one flags an endpoint, every connection on it).
//!
//! The same manager decides whether a join is accepted at all (the kernel applies no limit of
//! its own to a userspace-managed connection), so joins beyond [`Policy::max_joins`] are closed
//! here.
//!
//! Sans-IO: the caller feeds kernel events and "this connection is bulk" signals, and carries
//! out the returned [`Action`]s (netlink commands).

use std::collections::HashMap;
use std::net::SocketAddr;

/// The rule's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Bytes a connection moves in one direction before its joined subflows carry data.
    pub bond_after: u64,
    /// Joined subflows a connection may have; more are closed (`max_joins` in server.toml, at
    /// most 8 like the in-kernel limit).
    pub max_joins: usize,
    /// Connections followed at once; joins of connections beyond it are left as they come
    /// (they bond from the start), never refused.
    pub max_connections: usize,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            bond_after: 128 * 1024,
            max_joins: 8,
            max_connections: 65_536,
        }
    }
}

/// One subflow of connection `token`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SubflowId {
    /// The connection's local token.
    pub token: u32,
    /// This end's address.
    pub local: SocketAddr,
    /// The peer's address.
    pub remote: SocketAddr,
}

/// What the caller must ask the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Flag the subflow backup: it carries data only if no other subflow can.
    Backup(SubflowId),
    /// Clear the backup flag this rule set.
    Bond(SubflowId),
    /// Close the subflow: the connection has more joins than allowed.
    Close(SubflowId),
}

#[derive(Debug, Default)]
struct Conn {
    /// Whether this connection is one the rule manages (accepted on the relay's port).
    managed: bool,
    /// The first subflow's ends, from `Established`.
    first: Option<(SocketAddr, SocketAddr)>,
    /// Joined subflows, and whether this rule flagged each backup.
    joins: Vec<(SubflowId, bool)>,
    /// The connection moved `bond_after` bytes, or lost its first subflow.
    bonded: bool,
}

/// Counters for status and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Joins flagged backup at their arrival.
    pub held: u64,
    /// Connections whose joins were released because they became bulk.
    pub bonded_bulk: u64,
    /// Connections whose joins were released because their first subflow closed.
    pub bonded_first_lost: u64,
    /// Joins closed over [`Policy::max_joins`].
    pub closed_over_limit: u64,
    /// Connections not followed because [`Policy::max_connections`] were.
    pub untracked: u64,
}

/// The rule's state: the connections it follows.
#[derive(Debug)]
pub struct SubflowPriority {
    policy: Policy,
    /// The local ports of the relay's listeners: only connections accepted there are managed.
    ports: Vec<u16>,
    conns: HashMap<u32, Conn>,
    counts: Counts,
}

impl SubflowPriority {
    /// A rule for connections accepted on `ports`.
    pub fn new(policy: Policy, ports: Vec<u16>) -> Self {
        SubflowPriority {
            policy,
            ports,
            conns: HashMap::new(),
            counts: Counts::default(),
        }
    }

    /// The counters so far.
    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// Connections followed now.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    fn conn(&mut self, token: u32) -> Option<&mut Conn> {
        if !self.conns.contains_key(&token) {
            if self.conns.len() >= self.policy.max_connections {
                self.counts.untracked += 1;
                return None;
            }
            self.conns.insert(token, Conn::default());
        }
        self.conns.get_mut(&token)
    }

    /// The connection is fully established over its first subflow.
    pub fn established(&mut self, token: u32, local: SocketAddr, remote: SocketAddr) {
        let managed = self.ports.contains(&local.port());
        if let Some(c) = self.conn(token) {
            c.first = Some((local, remote));
            c.managed = managed;
        }
    }

    /// A subflow joined. `peer_backup` is the backup flag the peer gave it (a gateway's backup
    /// uplink): such a join is left alone.
    pub fn joined(&mut self, sub: SubflowId, peer_backup: bool) -> Option<Action> {
        let policy = self.policy;
        let managed_port = self.ports.contains(&sub.local.port());
        let c = self.conn(sub.token)?;
        // A join may be reported before the connection's own event was read.
        c.managed |= managed_port;
        if c.joins.len() >= policy.max_joins {
            self.counts.closed_over_limit += 1;
            return Some(Action::Close(sub));
        }
        let hold = c.managed && !c.bonded && !peer_backup;
        c.joins.push((sub, hold));
        if hold {
            self.counts.held += 1;
            Some(Action::Backup(sub))
        } else {
            None
        }
    }

    /// A subflow closed. When it was the first one, the joins carry the connection now.
    pub fn subflow_closed(&mut self, sub: SubflowId) -> Vec<Action> {
        let Some(c) = self.conns.get_mut(&sub.token) else {
            return Vec::new();
        };
        c.joins.retain(|(j, _)| *j != sub);
        if c.first == Some((sub.local, sub.remote)) && !c.bonded {
            self.counts.bonded_first_lost += 1;
            return release(c);
        }
        Vec::new()
    }

    /// The connection moved `bond_after` bytes: its joins carry data from now on.
    pub fn bulk(&mut self, token: u32) -> Vec<Action> {
        let Some(c) = self.conn(token) else {
            return Vec::new();
        };
        if c.bonded {
            return Vec::new();
        }
        let out = release(c);
        self.counts.bonded_bulk += 1;
        out
    }

    /// The connection is gone.
    pub fn closed(&mut self, token: u32) {
        self.conns.remove(&token);
    }

    /// Events were lost: what is known of each connection may be stale, so each one is
    /// released (a stale hold would keep a bulk transfer off a path for good), and
    /// connections that closed meanwhile are forgotten at their next event or never.
    pub fn overrun(&mut self) -> Vec<Action> {
        let mut out = Vec::new();
        for c in self.conns.values_mut() {
            if !c.bonded {
                out.extend(release(c));
            }
        }
        self.conns.clear();
        out
    }
}

fn release(c: &mut Conn) -> Vec<Action> {
    c.bonded = true;
    c.joins
        .iter_mut()
        .filter(|(_, held)| *held)
        .map(|(sub, held)| {
            *held = false;
            Action::Bond(*sub)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const RELAY: &str = "10.9.0.2:8388";

    fn sub(token: u32, remote: &str) -> SubflowId {
        SubflowId {
            token,
            local: RELAY.parse().unwrap(),
            remote: remote.parse().unwrap(),
        }
    }

    fn rule() -> SubflowPriority {
        let mut r = SubflowPriority::new(Policy::default(), vec![8388]);
        r.established(1, RELAY.parse().unwrap(), "10.1.0.1:5000".parse().unwrap());
        r
    }

    #[test]
    fn joins_are_held_until_the_connection_is_bulk_then_released_once() {
        let mut r = rule();
        let j = sub(1, "10.2.0.1:6000");
        assert_eq!(r.joined(j, false), Some(Action::Backup(j)));
        assert_eq!(r.bulk(1), vec![Action::Bond(j)]);
        assert_eq!(r.bulk(1), vec![]);
        // A join after the connection went bulk carries data at once.
        assert_eq!(r.joined(sub(1, "10.3.0.1:7000"), false), None);
        assert_eq!(r.counts().held, 1);
        assert_eq!(r.counts().bonded_bulk, 1);
    }

    #[test]
    fn losing_the_first_subflow_releases_the_joins() {
        let mut r = rule();
        let j = sub(1, "10.2.0.1:6000");
        r.joined(j, false);
        assert_eq!(
            r.subflow_closed(sub(1, "10.1.0.1:5000")),
            vec![Action::Bond(j)]
        );
        assert_eq!(r.counts().bonded_first_lost, 1);
        // A join closing releases nothing.
        let mut r = rule();
        r.joined(j, false);
        assert_eq!(r.subflow_closed(j), vec![]);
        assert_eq!(r.bulk(1), vec![]);
    }

    #[test]
    fn peer_backup_joins_and_other_ports_are_left_alone() {
        let mut r = rule();
        assert_eq!(r.joined(sub(1, "10.2.0.1:6000"), true), None);
        let other = SubflowId {
            token: 2,
            local: "10.9.0.2:443".parse().unwrap(),
            remote: "10.2.0.1:6001".parse().unwrap(),
        };
        r.established(2, other.local, "10.1.0.1:5001".parse().unwrap());
        assert_eq!(r.joined(other, false), None);
    }

    #[test]
    fn joins_over_the_limit_are_closed_even_on_other_ports() {
        let mut r = SubflowPriority::new(
            Policy {
                max_joins: 2,
                ..Policy::default()
            },
            vec![8388],
        );
        let at = |p: u16| SubflowId {
            token: 5,
            local: "10.9.0.2:443".parse().unwrap(),
            remote: SocketAddr::from(([10, 2, 0, 1], p)),
        };
        assert_eq!(r.joined(at(1), false), None);
        assert_eq!(r.joined(at(2), false), None);
        assert_eq!(r.joined(at(3), false), Some(Action::Close(at(3))));
        // A closed join frees its place.
        r.subflow_closed(at(1));
        assert_eq!(r.joined(at(4), false), None);
        assert_eq!(r.counts().closed_over_limit, 1);
    }

    #[test]
    fn the_table_is_bounded_and_forgets_closed_connections() {
        let mut r = SubflowPriority::new(
            Policy {
                max_connections: 1,
                ..Policy::default()
            },
            vec![8388],
        );
        r.established(1, RELAY.parse().unwrap(), "10.1.0.1:5000".parse().unwrap());
        assert_eq!(r.joined(sub(2, "10.2.0.1:6000"), false), None);
        assert_eq!(r.counts().untracked, 1);
        r.closed(1);
        assert_eq!(r.connections(), 0);
        let j = sub(2, "10.2.0.1:6000");
        assert_eq!(r.joined(j, false), Some(Action::Backup(j)));
    }

    #[test]
    fn an_overrun_releases_every_held_join() {
        let mut r = rule();
        let j = sub(1, "10.2.0.1:6000");
        r.joined(j, false);
        assert_eq!(r.overrun(), vec![Action::Bond(j)]);
        assert_eq!(r.connections(), 0);
    }
}
