//! The gateway's UDP sessions: one per LAN source address and port, as SIP022 asks of clients
//! (§3.2), each with its own client session id, packet counter and liveness. A session
//! remembers the relay's server sessions it has heard from (a relay restart starts a new one;
//! each has its own replay window) and the reply sockets it answers the LAN host from, one per
//! far-end address.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use braid_proto::udp::liveness::{Liveness, Timeouts};
use braid_proto::udp::replay::{Replay, ReplayWindow};
use tokio::net::UdpSocket;

/// Server sessions remembered per client session (SIP022: more than one, for relay restarts).
const SERVER_SESSIONS_MAX: usize = 4;
/// Far-end addresses a session keeps a reply socket for.
const REPLY_SOCKETS_MAX: usize = 16;

/// One LAN flow.
pub(super) struct Session {
    /// The LAN host and port.
    pub lan: SocketAddr,
    /// Our client session id.
    pub id: u64,
    /// When it began.
    pub started: Instant,
    /// Payload bytes from the LAN host.
    pub up: AtomicU64,
    /// Payload bytes to the LAN host.
    pub down: AtomicU64,
    next_packet: AtomicU64,
    state: Mutex<State>,
}

struct State {
    liveness: Liveness,
    /// (server session id, its replay window), most recent last.
    servers: Vec<(u64, ReplayWindow)>,
    /// Sockets bound to far-end addresses, most recent last.
    replies: Vec<(SocketAddr, Arc<UdpSocket>)>,
    last_target: Option<SocketAddr>,
    /// The uplink (index) its last datagram left on; `None`: the main table's choice or UoT.
    uplink: Option<usize>,
}

impl Session {
    fn new(lan: SocketAddr, id: u64, now: Duration) -> Session {
        Session {
            lan,
            id,
            started: Instant::now(),
            up: AtomicU64::new(0),
            down: AtomicU64::new(0),
            next_packet: AtomicU64::new(0),
            state: Mutex::new(State {
                liveness: Liveness::new(now),
                servers: Vec::new(),
                replies: Vec::new(),
                last_target: None,
                uplink: None,
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The next client packet id.
    pub fn next_packet_id(&self) -> u64 {
        self.next_packet.fetch_add(1, Ordering::Relaxed)
    }

    /// A datagram of `bytes` from the LAN host to `target` at `now`, sent on `uplink`.
    pub fn sent(&self, target: SocketAddr, bytes: usize, uplink: Option<usize>, now: Duration) {
        self.up.fetch_add(bytes as u64, Ordering::Relaxed);
        let mut st = self.state();
        st.liveness.on_outbound(now);
        st.last_target = Some(target);
        st.uplink = uplink;
    }

    /// The relay was told the session rides `uplink` now (`super::moved`); no LAN traffic, so
    /// its liveness is untouched.
    pub fn moved(&self, uplink: Option<usize>) {
        self.state().uplink = uplink;
    }

    /// The uplink its latest datagram left on.
    pub fn uplink(&self) -> Option<usize> {
        self.state().uplink
    }

    /// Takes packet `packet_id` of server session `server` at `now`, once (replay window).
    pub fn accept_reply(&self, server: u64, packet_id: u64, now: Duration) -> Result<(), Replay> {
        let mut st = self.state();
        let i = match st.servers.iter().position(|(id, _)| *id == server) {
            Some(i) => i,
            None => {
                if st.servers.len() == SERVER_SESSIONS_MAX {
                    st.servers.remove(0);
                }
                st.servers.push((server, ReplayWindow::default()));
                st.servers.len() - 1
            }
        };
        st.servers[i].1.accept(packet_id)?;
        let newest = st.servers.remove(i);
        st.servers.push(newest);
        st.liveness.on_reply(now);
        Ok(())
    }

    /// An answer reached the LAN host at `now` by a way without packet ids (UDP over TCP).
    pub fn replied(&self, now: Duration) {
        self.state().liveness.on_reply(now);
    }

    /// The socket to answer the LAN host from `far`, made by `make` the first time.
    pub fn reply_socket(
        &self,
        far: SocketAddr,
        make: impl FnOnce() -> std::io::Result<UdpSocket>,
    ) -> std::io::Result<Arc<UdpSocket>> {
        let mut st = self.state();
        if let Some(i) = st.replies.iter().position(|(a, _)| *a == far) {
            let s = st.replies[i].1.clone();
            return Ok(s);
        }
        let s = Arc::new(make()?);
        if st.replies.len() == REPLY_SOCKETS_MAX {
            st.replies.remove(0);
        }
        st.replies.push((far, s.clone()));
        Ok(s)
    }

    /// Whether the session has been idle past its timeout at `now`.
    pub fn expired(&self, t: &Timeouts, now: Duration) -> bool {
        self.state().liveness.expired(t, now)
    }

    /// For status: latest target, uplink, and idle time at `now`.
    pub fn view(&self, now: Duration) -> (Option<SocketAddr>, Option<usize>, Duration) {
        let st = self.state();
        (
            st.last_target,
            st.uplink,
            now.saturating_sub(st.liveness.last_activity()),
        )
    }
}

/// A fresh random client session id.
fn new_id() -> u64 {
    let mut b = [0u8; 8];
    match getrandom::fill(&mut b) {
        Ok(()) => u64::from_ne_bytes(b),
        // No randomness at all would be a broken system; fall back to time so ids still differ.
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
    }
}

/// The sessions, by LAN address and by client session id, at most `max` at once.
pub(super) struct Table {
    max: usize,
    inner: Mutex<Maps>,
}

#[derive(Default)]
struct Maps {
    by_lan: HashMap<SocketAddr, Arc<Session>>,
    by_id: HashMap<u64, Arc<Session>>,
}

impl Table {
    /// An empty table for at most `max` sessions.
    pub fn new(max: usize) -> Table {
        Table {
            max,
            inner: Mutex::new(Maps::default()),
        }
    }

    fn maps(&self) -> MutexGuard<'_, Maps> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The session of LAN address `lan` and whether it was just made; `None` when full.
    pub fn get_or_make(&self, lan: SocketAddr, now: Duration) -> Option<(Arc<Session>, bool)> {
        let mut m = self.maps();
        if let Some(s) = m.by_lan.get(&lan) {
            return Some((s.clone(), false));
        }
        if m.by_lan.len() >= self.max {
            return None;
        }
        let mut id = new_id();
        while m.by_id.contains_key(&id) {
            id = new_id();
        }
        let s = Arc::new(Session::new(lan, id, now));
        m.by_lan.insert(lan, s.clone());
        m.by_id.insert(id, s.clone());
        Some((s, true))
    }

    /// The session with client session id `id`.
    pub fn by_id(&self, id: u64) -> Option<Arc<Session>> {
        self.maps().by_id.get(&id).cloned()
    }

    /// Removes and returns the sessions idle past their timeout at `now`.
    pub fn sweep(&self, t: &Timeouts, now: Duration) -> Vec<Arc<Session>> {
        let mut m = self.maps();
        let gone: Vec<Arc<Session>> = (m.by_lan.values())
            .filter(|s| s.expired(t, now))
            .cloned()
            .collect();
        for s in &gone {
            m.by_lan.remove(&s.lan);
            m.by_id.remove(&s.id);
        }
        gone
    }

    /// The live sessions.
    pub fn all(&self) -> Vec<Arc<Session>> {
        self.maps().by_lan.values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timeouts = Timeouts {
        unreplied: Duration::from_secs(30),
        stream: Duration::from_secs(120),
    };

    fn lan(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 9, 0, 2], port))
    }

    #[test]
    fn one_session_per_lan_source_found_by_its_id_and_swept_when_idle() {
        let t = Table::new(2);
        let (a, new) = t.get_or_make(lan(1000), Duration::ZERO).unwrap();
        assert!(new);
        let (a2, new) = t.get_or_make(lan(1000), Duration::ZERO).unwrap();
        assert!(!new && a2.id == a.id);
        let (b, _) = t.get_or_make(lan(1001), Duration::ZERO).unwrap();
        assert_ne!(a.id, b.id);
        assert!(t.get_or_make(lan(1002), Duration::ZERO).is_none(), "capped");
        assert_eq!(t.by_id(b.id).map(|s| s.lan), Some(lan(1001)));
        b.sent(lan(53), 10, Some(1), Duration::from_secs(20));
        let gone = t.sweep(&T, Duration::from_secs(31));
        assert_eq!(gone.iter().map(|s| s.lan).collect::<Vec<_>>(), [lan(1000)]);
        assert!(t.by_id(a.id).is_none());
        assert_eq!(t.all().len(), 1);
    }

    #[test]
    fn replies_are_accepted_once_per_server_session_and_a_restarted_relay_is_heard() {
        let t = Table::new(4);
        let (s, _) = t.get_or_make(lan(1000), Duration::ZERO).unwrap();
        assert!(s.accept_reply(77, 0, Duration::ZERO).is_ok());
        assert!(s.accept_reply(77, 0, Duration::ZERO).is_err());
        // The relay restarted: a new server session starts its ids at 0 again.
        assert!(s.accept_reply(78, 0, Duration::ZERO).is_ok());
        assert!(s.accept_reply(77, 1, Duration::ZERO).is_ok());
    }
}
