//! The relay's UDP sessions, keyed by client session id (SIP022 §3.2.4), not by source address:
//! a gateway whose session moves to another uplink arrives from a new address and keeps its
//! session, its replay window and its outbound socket, so the destination sees nothing change.
//!
//! Each session remembers the last address its client was seen at (replies go there), the
//! addresses it sent to (only those may answer), and its liveness (conntrack-like timeouts).

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use braid_proto::udp::liveness::{Liveness, Timeouts};
use braid_proto::udp::replay::{Replay, ReplayWindow};
use tokio::net::UdpSocket;

/// Most destination addresses a session remembers as allowed to answer.
const TARGETS_MAX: usize = 64;

/// One client session.
pub(super) struct Session {
    /// The client's session id.
    pub client_id: u64,
    /// Ours, for replies (never the client's, as SIP022 requires).
    pub server_id: u64,
    /// When it began.
    pub started: Instant,
    /// The outbound socket every destination of the session sees.
    pub socket: UdpSocket,
    /// Payload bytes sent to destinations.
    pub up: AtomicU64,
    /// Payload bytes sent back to the client.
    pub down: AtomicU64,
    next_packet: AtomicU64,
    state: Mutex<State>,
}

/// Where a session's replies go: the client's latest address, from the relay's address the
/// client wrote to (a host may have several; the client drops an answer from another).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyTo {
    /// The client's latest address.
    pub client: SocketAddr,
    /// The relay's address it wrote to, when the kernel said.
    pub local: Option<IpAddr>,
}

struct State {
    replay: ReplayWindow,
    peer: SocketAddr,
    local: Option<IpAddr>,
    liveness: Liveness,
    /// Destinations sent to, newest last: only these may answer.
    targets: VecDeque<IpAddr>,
    last_target: String,
    /// A refused destination was logged for this session already.
    said_refused: bool,
}

/// What a packet id check found.
pub(super) enum Accepted {
    /// From the address the session was last seen at.
    Same,
    /// The client moved (another uplink); replies go to the new address from now on.
    Moved {
        /// Where it was.
        from: SocketAddr,
    },
}

impl Session {
    /// A session first seen from `peer` at `now` (relative to the relay's epoch).
    pub fn new(client_id: u64, peer: SocketAddr, socket: UdpSocket, now: Duration) -> Session {
        Session {
            client_id,
            server_id: new_server_id(client_id),
            started: Instant::now(),
            socket,
            up: AtomicU64::new(0),
            down: AtomicU64::new(0),
            next_packet: AtomicU64::new(0),
            state: Mutex::new(State {
                replay: ReplayWindow::default(),
                peer,
                local: None,
                liveness: Liveness::new(now),
                targets: VecDeque::new(),
                last_target: String::new(),
                said_refused: false,
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes an authentic packet `packet_id` from `peer`, sent to the relay's address `local`, at
    /// `now`: refuses a replay, else moves the window, remembers where to answer and counts the
    /// activity.
    pub fn accept(
        &self,
        packet_id: u64,
        peer: SocketAddr,
        local: Option<IpAddr>,
        now: Duration,
    ) -> Result<Accepted, Replay> {
        let mut st = self.state();
        st.replay.accept(packet_id)?;
        st.liveness.on_outbound(now);
        st.local = local;
        let from = std::mem::replace(&mut st.peer, peer);
        Ok(if from == peer {
            Accepted::Same
        } else {
            Accepted::Moved { from }
        })
    }

    /// Records `target` as a destination this session sent to (`shown` for status).
    pub fn sent_to(&self, target: IpAddr, shown: &str, bytes: usize) {
        self.up.fetch_add(bytes as u64, Ordering::Relaxed);
        let mut st = self.state();
        if st.last_target != shown {
            st.last_target = shown.to_string();
        }
        if st.targets.back() != Some(&target) {
            st.targets.retain(|t| *t != target);
            if st.targets.len() == TARGETS_MAX {
                st.targets.pop_front();
            }
            st.targets.push_back(target);
        }
    }

    /// Whether this session sent to `target` lately (a destination already judged by the policy:
    /// judging each datagram again would ask the kernel about the relay's own addresses per
    /// packet).
    pub fn knows(&self, target: IpAddr) -> bool {
        self.state().targets.contains(&target)
    }

    /// A datagram from `source` at `now`: the client's address to send it to, if `source` is a
    /// destination of this session (else it is unsolicited and dropped).
    pub fn reply_from(&self, source: IpAddr, now: Duration) -> Option<ReplyTo> {
        let mut st = self.state();
        if !st.targets.contains(&source) {
            return None;
        }
        st.liveness.on_reply(now);
        Some(ReplyTo {
            client: st.peer,
            local: st.local,
        })
    }

    /// Where replies go now.
    pub fn reply_to(&self) -> ReplyTo {
        let st = self.state();
        ReplyTo {
            client: st.peer,
            local: st.local,
        }
    }

    /// The address the client was last seen at.
    pub fn client_addr(&self) -> SocketAddr {
        self.state().peer
    }

    /// The next server packet id.
    pub fn next_packet_id(&self) -> u64 {
        self.next_packet.fetch_add(1, Ordering::Relaxed)
    }

    /// When the session ends if nothing more happens.
    pub fn expires_at(&self, t: &Timeouts) -> Duration {
        self.state().liveness.expires_at(t)
    }

    /// True the first time a refused destination is reported for this session.
    pub fn first_refusal(&self) -> bool {
        !std::mem::replace(&mut self.state().said_refused, true)
    }

    /// For status: the client's address, the latest target, and the idle time at `now`.
    pub fn view(&self, now: Duration) -> (SocketAddr, String, Duration) {
        let st = self.state();
        (
            st.peer,
            st.last_target.clone(),
            now.saturating_sub(st.liveness.last_activity()),
        )
    }
}

/// A server session id that is not the client's: random, mixed with the client id.
fn new_server_id(client_id: u64) -> u64 {
    let mut b = [0u8; 8];
    let random = getrandom::fill(&mut b)
        .map(|_| u64::from_ne_bytes(b))
        .unwrap_or(0x9e37_79b9_7f4a_7c15);
    let id = random ^ client_id.rotate_left(17);
    if id == client_id {
        id ^ 1
    } else {
        id
    }
}

/// The sessions, at most `max` at once.
pub(super) struct Table {
    max: usize,
    map: Mutex<HashMap<u64, Arc<Session>>>,
}

/// Why no session could be had.
pub(super) enum NoSession {
    /// `udp_max_sessions` are live.
    Full,
    /// The outbound socket could not be made (file descriptors exhausted?).
    Socket(std::io::Error),
}

impl Table {
    /// An empty table for at most `max` sessions.
    pub fn new(max: usize) -> Table {
        Table {
            max,
            map: Mutex::new(HashMap::new()),
        }
    }

    fn map(&self) -> MutexGuard<'_, HashMap<u64, Arc<Session>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The session `client_id`, and whether it was just made (with `make`, when there is
    /// room).
    pub fn get_or_make(
        &self,
        client_id: u64,
        make: impl FnOnce() -> std::io::Result<Session>,
    ) -> Result<(Arc<Session>, bool), NoSession> {
        let mut map = self.map();
        if let Some(s) = map.get(&client_id) {
            return Ok((s.clone(), false));
        }
        if map.len() >= self.max {
            return Err(NoSession::Full);
        }
        let s = Arc::new(make().map_err(NoSession::Socket)?);
        map.insert(client_id, s.clone());
        Ok((s, true))
    }

    /// The session `client_id`, if it is live.
    pub fn get(&self, client_id: u64) -> Option<Arc<Session>> {
        self.map().get(&client_id).cloned()
    }

    /// Forgets the session `client_id`.
    pub fn remove(&self, client_id: u64) {
        self.map().remove(&client_id);
    }

    /// The live sessions.
    pub fn all(&self) -> Vec<Arc<Session>> {
        self.map().values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn socket() -> UdpSocket {
        let s = braid_sys::socket::udp_bind("127.0.0.1:0".parse().unwrap()).unwrap();
        UdpSocket::from_std(s).unwrap()
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[tokio::test]
    async fn session_accepts_each_packet_once_and_follows_its_client_to_a_new_address() {
        let s = Session::new(7, addr("10.1.0.1:4000"), socket(), Duration::ZERO);
        assert_ne!(s.server_id, 7);
        assert!(matches!(
            s.accept(0, addr("10.1.0.1:4000"), None, Duration::ZERO),
            Ok(Accepted::Same)
        ));
        assert!(s
            .accept(0, addr("10.2.0.1:5000"), None, Duration::ZERO)
            .is_err());
        match s.accept(1, addr("10.2.0.1:5000"), None, Duration::ZERO) {
            Ok(Accepted::Moved { from }) => assert_eq!(from, addr("10.1.0.1:4000")),
            _ => panic!("the move was not seen"),
        }
        s.sent_to("10.30.0.2".parse().unwrap(), "10.30.0.2:53", 10);
        assert_eq!(
            s.reply_from("10.30.0.2".parse().unwrap(), Duration::ZERO)
                .map(|r| r.client),
            Some(addr("10.2.0.1:5000")),
            "replies go to the new address"
        );
        assert_eq!(
            s.reply_from("10.30.0.3".parse().unwrap(), Duration::ZERO),
            None,
            "an address never sent to may not answer"
        );
    }

    #[tokio::test]
    async fn table_is_capped_and_forgets_on_request() {
        let t = Table::new(2);
        for id in [1, 2] {
            let (_, new) = t
                .get_or_make(id, || {
                    Ok(Session::new(
                        id,
                        addr("10.1.0.1:1"),
                        socket(),
                        Duration::ZERO,
                    ))
                })
                .ok()
                .unwrap();
            assert!(new);
        }
        assert!(matches!(
            t.get_or_make(3, || unreachable!()),
            Err(NoSession::Full)
        ));
        assert!(matches!(
            t.get_or_make(1, || unreachable!()),
            Ok((_, false))
        ));
        t.remove(1);
        assert_eq!(t.all().len(), 1);
    }
}
