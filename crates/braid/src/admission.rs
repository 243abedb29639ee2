//! Who may hold a descriptor: caps on connections that have not authenticated yet (pending
//! handshakes, in all and per source) and on relayed connections, so that a flood of
//! connections that never send a valid request cannot use up the daemon's open-file limit.
//!
//! ```text
//!  accept ─► admit(peer) ─► Handshake ─(request valid)─► establish() ─► Slot (held while relaying)
//!              │ this source has max_handshakes_per_source pending: refused at once
//!              │ max_handshakes pending in all: the oldest pending one is evicted for it
//!                                                      │ max_connections in use: refused
//! ```
//!
//! A valid client completes its handshake within a round trip, so the oldest pending handshake
//! is almost always one that never will: evicting it keeps room for new clients however many
//! addresses a flood comes from. The defaults are sized from the open-file limit
//! ([`Limits::sized_from`]), keeping a reserve for everything else the daemon opens.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

pub use crate::config::LimitsConfig;

/// Descriptors a relayed connection holds on either side: the accepted socket and the one to
/// the relay or destination (status shares the socket, see [`crate::shared_stream`]).
pub const FDS_PER_CONNECTION: u64 = 2;

/// The caps, resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Relayed connections (and control streams) at once.
    pub max_connections: usize,
    /// Connections accepted but not yet authenticated, in all.
    pub max_handshakes: usize,
    /// The same, per source address (per /64 for IPv6).
    pub max_handshakes_per_source: usize,
}

impl Limits {
    /// Descriptors kept back for everything but connections (netlink, probes, the status API,
    /// logs, DNS): a sixteenth of the limit, at least 32 and at most 1024.
    pub fn reserve(nofile: u64) -> u64 {
        (nofile / 16).clamp(32, 1024)
    }

    /// Defaults for an open-file limit of `nofile`: after the [reserve](Limits::reserve), an
    /// eighth for pending handshakes (one descriptor each) and the rest for relayed connections
    /// ([`FDS_PER_CONNECTION`] each); per source an eighth of the handshakes, 16 to 256.
    pub fn sized_from(nofile: u64) -> Limits {
        let usable = nofile.saturating_sub(Self::reserve(nofile));
        let handshakes = (usable / 8).max(8);
        let connections = (usable.saturating_sub(handshakes) / FDS_PER_CONNECTION).max(8);
        let per_source = (handshakes / 8).clamp(16, 256).min(handshakes);
        Limits {
            max_connections: to_usize(connections),
            max_handshakes: to_usize(handshakes),
            max_handshakes_per_source: to_usize(per_source),
        }
    }

    /// The configured caps over the defaults for `nofile`.
    pub fn resolve(cfg: &LimitsConfig, nofile: u64) -> Limits {
        let d = Limits::sized_from(nofile);
        let max_handshakes = cfg.max_handshakes.unwrap_or(d.max_handshakes);
        Limits {
            max_connections: cfg.max_connections.unwrap_or(d.max_connections),
            max_handshakes,
            max_handshakes_per_source: cfg
                .max_handshakes_per_source
                .unwrap_or(d.max_handshakes_per_source)
                .min(max_handshakes),
        }
    }

    /// Descriptors these caps can take at most, with the reserve; more than the open-file
    /// limit means EMFILE before the caps bite.
    pub fn descriptors_needed(&self, nofile: u64) -> u64 {
        self.max_connections as u64 * FDS_PER_CONNECTION
            + self.max_handshakes as u64
            + Self::reserve(nofile)
    }
}

/// The caps of a daemon from its config and the open-file limit it runs with (raised at start
/// by the CLI), said once in the log; a warning names the fix when the configured caps need more
/// descriptors than the limit allows.
pub fn for_daemon(cfg: &LimitsConfig) -> Arc<Admission> {
    Admission::new(resolved(cfg))
}

/// The caps `cfg` gives with the open-file limit in force now, said in the log (at start and
/// at each reload that changes them).
pub fn resolved(cfg: &LimitsConfig) -> Limits {
    let nofile = match braid_sys::rlimit::file_limit() {
        Ok(l) => l.soft,
        Err(e) => {
            tracing::warn!("cannot read the open-file limit ({e}); sizing the caps for 1024");
            1024
        }
    };
    let limits = Limits::resolve(cfg, nofile);
    tracing::info!(
        "limits: {} relayed connections, {} pending handshakes ({} per source), for an open-file limit of {nofile}",
        limits.max_connections,
        limits.max_handshakes,
        limits.max_handshakes_per_source
    );
    let needed = limits.descriptors_needed(nofile);
    if needed > nofile {
        tracing::warn!(
            "max_connections and max_handshakes need up to {needed} descriptors, more than the open-file limit of {nofile}: connections will fail with EMFILE before the caps apply; fix: raise LimitNOFILE= (or ulimit -n), or lower the caps"
        );
    }
    limits
}

fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// Sources are counted per IPv4 address and per IPv6 /64 (one host's share of a network).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Source(u128);

impl Source {
    /// The source key of a peer address (IPv4-mapped IPv6 counts as IPv4).
    pub fn of(ip: IpAddr) -> Source {
        match ip {
            IpAddr::V4(v4) => Source(u128::from(u32::from(v4))),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source(u128::from(u32::from(v4))),
                None => Source((u128::from(v6) >> 64) << 64 | 1),
            },
        }
    }
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Too many pending handshakes from this source.
    #[error("{0} handshakes from this source are already pending (max_handshakes_per_source)")]
    PerSource(usize),
    /// Every connection slot is in use.
    #[error("all {0} connection slots are in use (max_connections); fix: raise max_connections, and the open-file limit (LimitNOFILE=) with it")]
    Connections(usize),
}

struct Pending {
    next: u64,
    /// Oldest first.
    by_age: BTreeMap<u64, (Source, Arc<Notify>)>,
    per_source: HashMap<Source, usize>,
}

impl Pending {
    fn remove(&mut self, id: u64) -> Option<Arc<Notify>> {
        let (source, evict) = self.by_age.remove(&id)?;
        if let Some(n) = self.per_source.get_mut(&source) {
            *n -= 1;
            if *n == 0 {
                self.per_source.remove(&source);
            }
        }
        Some(evict)
    }
}

/// The caps of one daemon, shared by its listeners; a reload may change them.
pub struct Admission {
    limits: Mutex<Limits>,
    connections: Arc<Semaphore>,
    /// Slots still to be taken back after `max_connections` was lowered below the number in
    /// use: each slot returned while this is above 0 is forgotten instead.
    debt: AtomicUsize,
    pending: Mutex<Pending>,
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field("limits", &self.limits())
            .finish_non_exhaustive()
    }
}

impl Admission {
    /// Caps of `limits`.
    pub fn new(limits: Limits) -> Arc<Admission> {
        Arc::new(Admission {
            limits: Mutex::new(limits),
            connections: Arc::new(Semaphore::new(limits.max_connections)),
            debt: AtomicUsize::new(0),
            pending: Mutex::new(Pending {
                next: 0,
                by_age: BTreeMap::new(),
                per_source: HashMap::new(),
            }),
        })
    }

    /// The caps.
    pub fn limits(&self) -> Limits {
        *self.limits.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// New caps (a reload), in force for the next connection. Connections already relayed are
    /// never cut: when `max_connections` falls below the number in use, slots are taken back as
    /// those connections end. Pending handshakes over a lower `max_handshakes` are evicted by
    /// the next arrivals, oldest first, as usual.
    pub fn set_limits(&self, new: Limits) {
        let mut l = self.limits.lock().unwrap_or_else(|p| p.into_inner());
        let old = l.max_connections;
        if new.max_connections > old {
            let mut grow = new.max_connections - old;
            // Slots still owed are simply not taken back.
            while grow > 0 {
                let debt = self.debt.load(Ordering::Acquire);
                let pay = debt.min(grow);
                if pay == 0 {
                    break;
                }
                if self
                    .debt
                    .compare_exchange(debt, debt - pay, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    grow -= pay;
                }
            }
            self.connections.add_permits(grow);
        } else if new.max_connections < old {
            let shrink = old - new.max_connections;
            let now = self.connections.forget_permits(shrink);
            self.debt.fetch_add(shrink - now, Ordering::AcqRel);
        }
        *l = new;
    }

    /// Takes one slot back if some are owed; true when `permit` should be forgotten.
    fn repay(&self) -> bool {
        self.debt
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| d.checked_sub(1))
            .is_ok()
    }

    fn pending(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Handshakes pending now.
    pub fn pending_handshakes(&self) -> usize {
        self.pending().by_age.len()
    }

    /// Relayed connections now.
    pub fn connections(&self) -> usize {
        (self.limits().max_connections + self.debt.load(Ordering::Acquire))
            .saturating_sub(self.connections.available_permits())
    }

    /// Admits a connection from `peer` into the handshake phase, evicting the oldest pending
    /// handshake when all are in use.
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<Handshake, Refused> {
        let source = Source::of(peer);
        let limits = self.limits();
        let mut p = self.pending();
        let from_source = p.per_source.get(&source).copied().unwrap_or(0);
        if from_source >= limits.max_handshakes_per_source {
            return Err(Refused::PerSource(from_source));
        }
        if p.by_age.len() >= limits.max_handshakes {
            if let Some(&oldest) = p.by_age.keys().next() {
                if let Some(evict) = p.remove(oldest) {
                    evict.notify_one();
                }
            }
        }
        let id = p.next;
        p.next += 1;
        let evict = Arc::new(Notify::new());
        p.by_age.insert(id, (source, evict.clone()));
        *p.per_source.entry(source).or_default() += 1;
        Ok(Handshake {
            admission: self.clone(),
            id,
            evict,
        })
    }
}

/// A connection in its handshake phase: it holds one of the `max_handshakes` places until it
/// authenticates ([`Handshake::establish`]), fails, or is evicted.
pub struct Handshake {
    admission: Arc<Admission>,
    id: u64,
    evict: Arc<Notify>,
}

impl Handshake {
    /// Completes when this handshake's place was given to a newer connection: the handler
    /// should close the connection.
    pub async fn evicted(&self) {
        self.evict.notified().await
    }

    /// The peer authenticated: trades the handshake's place for a connection slot.
    pub fn establish(self) -> Result<Slot, Refused> {
        let permit = self.admission.connections.clone().try_acquire_owned();
        permit
            .map(|permit| Slot {
                permit: Some(permit),
                admission: self.admission.clone(),
            })
            .map_err(|_| Refused::Connections(self.admission.limits().max_connections))
    }
}

impl Drop for Handshake {
    fn drop(&mut self) {
        self.admission.pending().remove(self.id);
    }
}

/// One of the `max_connections` slots, held while the connection lasts.
#[derive(Debug)]
pub struct Slot {
    permit: Option<OwnedSemaphorePermit>,
    admission: Arc<Admission>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(p) = self.permit.take() {
            if self.admission.repay() {
                p.forget();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn admission(connections: usize, handshakes: usize, per_source: usize) -> Arc<Admission> {
        Admission::new(Limits {
            max_connections: connections,
            max_handshakes: handshakes,
            max_handshakes_per_source: per_source,
        })
    }

    #[test]
    fn defaults_keep_a_reserve_and_fit_the_limit() {
        for nofile in [256, 1024, 20_000, 524_288] {
            let l = Limits::sized_from(nofile);
            assert!(l.descriptors_needed(nofile) <= nofile, "{nofile}: {l:?}");
            assert!(l.max_handshakes_per_source <= l.max_handshakes);
            assert!(l.max_handshakes_per_source >= 8);
        }
        assert_eq!(
            Limits::sized_from(1024),
            Limits {
                max_connections: 420,
                max_handshakes: 120,
                max_handshakes_per_source: 16
            }
        );
    }

    #[test]
    fn configured_values_override_and_per_source_never_exceeds_the_total() {
        let cfg = LimitsConfig {
            max_connections: Some(10),
            max_handshakes: Some(4),
            max_handshakes_per_source: None,
        };
        let l = Limits::resolve(&cfg, 524_288);
        assert_eq!(
            (
                l.max_connections,
                l.max_handshakes,
                l.max_handshakes_per_source
            ),
            (10, 4, 4)
        );
    }

    #[test]
    fn per_source_cap_refuses_and_frees_with_the_handshake() {
        let a = admission(10, 10, 2);
        let h1 = a.admit(ip("10.0.0.1")).unwrap();
        let _h2 = a.admit(ip("10.0.0.1")).unwrap();
        assert_eq!(a.admit(ip("10.0.0.1")).err(), Some(Refused::PerSource(2)));
        assert!(a.admit(ip("10.0.0.2")).is_ok());
        drop(h1);
        assert!(a.admit(ip("10.0.0.1")).is_ok());
    }

    #[test]
    fn ipv6_sources_count_per_64() {
        let a = admission(10, 10, 1);
        let _h = a.admit(ip("2001:db8:1:2::1")).unwrap();
        assert!(a.admit(ip("2001:db8:1:2::ffff")).is_err());
        assert!(a.admit(ip("2001:db8:1:3::1")).is_ok());
        assert_eq!(
            Source::of(ip("::ffff:10.0.0.1")),
            Source::of(ip("10.0.0.1"))
        );
    }

    #[tokio::test]
    async fn full_handshakes_evict_the_oldest() {
        let a = admission(10, 2, 2);
        let oldest = a.admit(ip("10.0.0.1")).unwrap();
        let _next = a.admit(ip("10.0.0.2")).unwrap();
        let _new = a.admit(ip("10.0.0.3")).unwrap();
        assert_eq!(a.pending_handshakes(), 2);
        tokio::time::timeout(Duration::from_secs(1), oldest.evicted())
            .await
            .expect("the oldest handshake is told to go");
        // Its per-source count went with it.
        let _again = a.admit(ip("10.0.0.1")).unwrap();
        drop(oldest);
        assert_eq!(a.pending_handshakes(), 2);
    }

    #[test]
    fn established_connections_hold_slots_up_to_the_cap() {
        let a = admission(1, 10, 10);
        let slot = a.admit(ip("10.0.0.1")).unwrap().establish().unwrap();
        assert_eq!(a.pending_handshakes(), 0);
        assert_eq!(a.connections(), 1);
        let e = a.admit(ip("10.0.0.2")).unwrap().establish().unwrap_err();
        assert_eq!(e, Refused::Connections(1));
        drop(slot);
        assert!(a.admit(ip("10.0.0.2")).unwrap().establish().is_ok());
    }

    #[test]
    fn lowered_caps_never_cut_a_connection_and_take_slots_back_as_they_end() {
        let a = admission(3, 10, 10);
        let establish = |n: &str| a.admit(ip(n)).unwrap().establish();
        let mut held: Vec<Slot> = ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
            .iter()
            .map(|n| establish(n).unwrap())
            .collect();
        let lower = |max_connections| Limits {
            max_connections,
            max_handshakes: 10,
            max_handshakes_per_source: 1,
        };
        a.set_limits(lower(1));
        assert_eq!(a.connections(), 3, "the running connections stay");
        assert_eq!(a.limits().max_handshakes_per_source, 1);
        held.pop();
        held.pop();
        assert_eq!(a.connections(), 1);
        assert_eq!(establish("10.0.0.4").unwrap_err(), Refused::Connections(1));
        held.pop();
        assert_eq!(a.connections(), 0);
        let one = establish("10.0.0.5").unwrap();
        assert_eq!(establish("10.0.0.6").unwrap_err(), Refused::Connections(1));
        // Raised again: two more slots at once.
        a.set_limits(lower(3));
        let two = [
            establish("10.0.0.7").unwrap(),
            establish("10.0.0.8").unwrap(),
        ];
        assert_eq!(a.connections(), 3);
        assert!(establish("10.0.0.9").is_err());
        drop((one, two));
        assert_eq!(a.connections(), 0);
    }

    #[test]
    fn a_cap_raised_while_slots_are_still_owed_cancels_the_debt_first() {
        let a = admission(2, 10, 10);
        let slots = [
            a.admit(ip("10.0.0.1")).unwrap().establish().unwrap(),
            a.admit(ip("10.0.0.2")).unwrap().establish().unwrap(),
        ];
        let caps = |max_connections| Limits {
            max_connections,
            max_handshakes: 10,
            max_handshakes_per_source: 10,
        };
        a.set_limits(caps(0));
        a.set_limits(caps(2));
        drop(slots);
        assert_eq!(a.connections(), 0);
        let again = [
            a.admit(ip("10.0.0.3")).unwrap().establish().unwrap(),
            a.admit(ip("10.0.0.4")).unwrap().establish().unwrap(),
        ];
        assert!(a.admit(ip("10.0.0.5")).unwrap().establish().is_err());
        drop(again);
    }
}
