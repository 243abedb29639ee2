//! The relay's Shadowsocks-2022 UDP relay (SIP022 §3.2), on the same address and port as its
//! TCP listener.
//!
//! ```text
//!  client ──► relay socket ─► open (codec) ─► session by client id ─► replay window, client's
//!    ▲        (one, shared)                   (session.rs)            latest address
//!    │                                                                     │ policy per datagram
//!    └──── seal, to the client's latest address ◄── session's own socket ◄─┘ (outbound.rs)
//! ```
//!
//! A datagram to `braid-moved.invalid:1` (`braid_proto::udp::moved`) only moves its session's
//! reply address: a gateway sends one per session when its sessions change uplink, so a session
//! that only receives follows too.
//!
//! Gateways whose UDP to the relay is blocked send it over TCP instead ([`uot`], reached from
//! the TCP listener through the magic target `sp.v2.udp-over-tcp.arpa`).
//!
//! Sessions end after their idle timeout (unreplied or stream, as conntrack) and are capped in
//! number; a datagram that fails any check is dropped without an answer, counted, and logged at
//! most every few seconds, as are sessions moving to another address.

mod outbound;
mod session;
pub(super) mod uot;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use braid_proto::udp::moved::is_moved;
use shadowsocks::relay::socks5::Address;
use tokio::net::UdpSocket;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use super::Shared;
use crate::config::udp::UdpLimits;
use crate::datagram::{Codec, DatagramError, MAX_DATAGRAM};
use crate::shutdown::Shutdown;
use crate::status::model::{tenths, udp_list, UdpSessionStatus, UdpStatus, UdpTransport};
use crate::throttle::Throttle;
use session::{Accepted, NoSession, Session, Table};

/// How often a flood of bad datagrams, a full table or a burst of moves is logged at most.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Counters since start.
#[derive(Debug, Default)]
struct Counters {
    sessions_total: AtomicU64,
    up: AtomicU64,
    down: AtomicU64,
    /// Not authentic, bad timestamp, malformed.
    rejected: AtomicU64,
    replayed: AtomicU64,
    refused: AtomicU64,
    /// New sessions over `udp_max_sessions`.
    full: AtomicU64,
    /// From addresses the session never sent to.
    unsolicited: AtomicU64,
}

/// What the receive loop and the sessions share.
struct Relay {
    socket: UdpSocket,
    codec: Codec,
    limits: UdpLimits,
    server: Arc<Shared>,
    table: Table,
    epoch: Instant,
    counters: Counters,
    bad: Throttle,
    full: Throttle,
    /// Sessions moving to another client address: a gateway's uplink switch moves all of its
    /// sessions at once.
    moves: Throttle,
}

impl Relay {
    /// Time since the relay started, the clock of sessions' liveness.
    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }
}

/// The UDP relay over its bound socket; cheap to clone (the status API holds one).
#[derive(Clone)]
pub struct UdpRelay {
    relay: Arc<Relay>,
}

impl UdpRelay {
    /// A relay on `socket` for the server's key, method and destination policy.
    pub(super) fn new(socket: UdpSocket, server: Arc<Shared>, limits: UdpLimits) -> UdpRelay {
        UdpRelay {
            relay: Arc::new(Relay {
                socket,
                codec: Codec::new(server.cfg.method, &server.cfg.key),
                limits,
                table: Table::new(limits.max_sessions),
                epoch: Instant::now(),
                counters: Counters::default(),
                bad: Throttle::new(LOG_EVERY),
                full: Throttle::new(LOG_EVERY),
                moves: Throttle::new(LOG_EVERY),
                server,
            }),
        }
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.relay.socket.local_addr()
    }

    /// Receives and relays until `shutdown`; then every session ends.
    pub async fn run(self, mut shutdown: Shutdown) {
        let relay = self.relay;
        if let Ok(a) = relay.socket.local_addr() {
            info!("UDP relay on {a}");
        }
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut sessions = JoinSet::new();
        loop {
            let received = braid_sys::pktinfo::recv_to_async(&relay.socket, &mut buf);
            let (n, peer, local) = tokio::select! {
                _ = shutdown.wait() => break,
                Some(_) = sessions.join_next(), if !sessions.is_empty() => continue,
                r = received => match r {
                    Ok(x) => x,
                    Err(e) => {
                        debug!("UDP relay socket: {e}");
                        continue;
                    }
                },
            };
            let peer = braid_sys::socket::normalize(peer);
            if let Some(new) = on_datagram(&relay, &mut buf[..n], peer, local).await {
                sessions.spawn(outbound::pump_replies(relay.clone(), new));
            }
        }
        sessions.abort_all();
    }

    /// The UDP part of the status document.
    pub fn status(&self) -> UdpStatus {
        let r = &self.relay;
        let c = &r.counters;
        let now = r.now();
        let list: Vec<(Duration, UdpSessionStatus)> = (r.table.all().iter())
            .map(|s| {
                let (client, target, idle) = s.view(now);
                (
                    idle,
                    UdpSessionStatus {
                        client: client.to_string(),
                        target,
                        uplink: None,
                        up_bytes: s.up.load(Ordering::Relaxed),
                        down_bytes: s.down.load(Ordering::Relaxed),
                        age_secs: tenths(s.started.elapsed()),
                        idle_secs: tenths(idle),
                    },
                )
            })
            .collect();
        let sessions = list.len() as u64;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        UdpStatus {
            transport: UdpTransport::Udp,
            reason: "Shadowsocks-2022 UDP on the relay's port".into(),
            uplink: None,
            sessions,
            sessions_total: load(&c.sessions_total),
            up_bytes: load(&c.up),
            down_bytes: load(&c.down),
            dropped: [
                &c.rejected,
                &c.replayed,
                &c.refused,
                &c.full,
                &c.unsolicited,
            ]
            .into_iter()
            .map(load)
            .sum(),
            list: udp_list(list),
        }
    }
}

/// Handles one datagram from `peer`; returns a session that was just made, whose reply pump
/// the caller starts.
async fn on_datagram(
    relay: &Arc<Relay>,
    buf: &mut [u8],
    peer: SocketAddr,
    local: Option<IpAddr>,
) -> Option<Arc<Session>> {
    let opened = match relay.codec.open_request(buf) {
        Ok(o) => o,
        Err(e) => {
            relay.counters.rejected.fetch_add(1, Ordering::Relaxed);
            say_rejected(relay, peer, &e);
            return None;
        }
    };
    let now = relay.now();
    if matches!(&opened.addr, Address::DomainNameAddress(h, p) if is_moved(h, *p)) {
        on_moved(
            relay,
            opened.client_session,
            opened.packet_id,
            peer,
            local,
            now,
        );
        return None;
    }
    let made = relay.table.get_or_make(opened.client_session, || {
        let socket = UdpSocket::from_std(braid_sys::socket::udp_any()?)?;
        Ok(Session::new(opened.client_session, peer, socket, now))
    });
    let (session, new) = match made {
        Ok(x) => x,
        Err(NoSession::Full) => {
            relay.counters.full.fetch_add(1, Ordering::Relaxed);
            if let Some(held) = relay.full.ready() {
                warn!(
                    "UDP: {} sessions are live, the most udp_max_sessions allows; new sessions' datagrams are dropped ({held} more since the last warning); fix: raise udp_max_sessions in server.toml",
                    relay.limits.max_sessions
                );
            }
            return None;
        }
        Err(NoSession::Socket(e)) => {
            relay.counters.full.fetch_add(1, Ordering::Relaxed);
            if relay.full.ready().is_some() {
                warn!("UDP: cannot open a socket for a new session ({e}); fix: raise the service's open-file limit (LimitNOFILE) or lower udp_max_sessions");
            }
            return None;
        }
    };
    if !accept(relay, &session, opened.packet_id, peer, local, now) {
        return new.then_some(session);
    }
    if new {
        relay
            .counters
            .sessions_total
            .fetch_add(1, Ordering::Relaxed);
        debug!("UDP session {:016x} from {peer} begins", session.client_id);
    }
    outbound::forward(relay, &session, opened.addr, &buf[..opened.len]).await;
    new.then_some(session)
}

/// Takes packet `packet_id` of `session` from `peer` (replies go there from now on); false
/// for a replay, which is counted and dropped.
fn accept(
    relay: &Relay,
    session: &Session,
    packet_id: u64,
    peer: SocketAddr,
    local: Option<IpAddr>,
    now: Duration,
) -> bool {
    match session.accept(packet_id, peer, local, now) {
        Ok(Accepted::Same) => true,
        Ok(Accepted::Moved { from }) => {
            match relay.moves.ready() {
                Some(held) => info!(
                    "UDP session {:016x} moved from {from} to {peer} (another uplink); it keeps its outbound socket ({held} more sessions moved since the last such line)",
                    session.client_id
                ),
                None => debug!(
                    "UDP session {:016x} moved from {from} to {peer}",
                    session.client_id
                ),
            }
            true
        }
        Err(replay) => {
            relay.counters.replayed.fetch_add(1, Ordering::Relaxed);
            debug!("UDP from {peer}: dropped: {replay}");
            false
        }
    }
}

/// The gateway says session `client_id` rides another uplink now (`braid_proto::udp::moved`):
/// replies go to `peer` from now on. Forwarded nowhere; a session this relay does not have (it
/// ended, or the relay restarted) is not made for it.
fn on_moved(
    relay: &Relay,
    client_id: u64,
    packet_id: u64,
    peer: SocketAddr,
    local: Option<IpAddr>,
    now: Duration,
) {
    match relay.table.get(client_id) {
        Some(session) => {
            accept(relay, &session, packet_id, peer, local, now);
        }
        None => {
            debug!("UDP from {peer}: a move of session {client_id:016x}, which is not live here")
        }
    }
}

/// Logs an unusable datagram, at most every [`LOG_EVERY`].
fn say_rejected(relay: &Relay, peer: SocketAddr, e: &DatagramError) {
    if let Some(held) = relay.bad.ready() {
        info!("UDP from {peer}: dropped a datagram: {e} ({held} more dropped since the last such line)");
    }
}
