//! The LAN side of UDP: datagrams TPROXY delivers (with their original destination) go to the
//! relay in their LAN flow's session; the relay's answers go back to the LAN host from the far
//! end's own address and port, through a transparent reply socket.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use braid_sys::tproxy::{reply_socket, TransparentUdp};
use bytes::BytesMut;
use shadowsocks::relay::socks5::Address;
use tracing::{debug, info, warn};

use super::session::Session;
use super::Shared;
use crate::datagram::{socket_addr, MAX_DATAGRAM};

/// Reads captured LAN datagrams from `socket` until aborted.
pub(super) async fn receive(shared: Arc<Shared>, socket: TransparentUdp) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        match socket.recv(&mut buf).await {
            Ok(r) => on_lan(&shared, r.source, r.original_dst, &buf[..r.len]).await,
            Err(e) => {
                debug!("UDP capture socket: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// One LAN datagram from `lan` to `dst`: into its session, sealed, to the relay.
async fn on_lan(shared: &Arc<Shared>, lan: SocketAddr, dst: SocketAddr, payload: &[u8]) {
    let now = shared.now();
    let Some((session, new)) = shared.sessions.get_or_make(lan, now) else {
        shared.counters.full.fetch_add(1, Ordering::Relaxed);
        if let Some(held) = shared.full_log.ready() {
            warn!(
                "UDP: {} sessions are live, the most udp_max_sessions allows; datagrams of new LAN flows are dropped ({held} more since the last warning); fix: raise udp_max_sessions in gateway.toml",
                shared.limits.max_sessions
            );
        }
        return;
    };
    if new {
        shared
            .counters
            .sessions_total
            .fetch_add(1, Ordering::Relaxed);
        debug!("UDP session {:016x}: {lan} → {dst} begins", session.id);
    }
    if shared.over_tcp() {
        if super::uot::send(shared, &session, dst, payload) {
            session.sent(dst, payload.len(), None, now);
            shared
                .counters
                .up
                .fetch_add(payload.len() as u64, Ordering::Relaxed);
        }
        return;
    }
    let mut out = BytesMut::with_capacity(payload.len() + 128);
    shared.codec.seal_request(
        session.id,
        session.next_packet_id(),
        &Address::SocketAddress(dst),
        payload,
        &mut out,
    );
    let (uplink, sent) = shared.carry(&out).await;
    match sent {
        Ok(()) => {
            session.sent(dst, payload.len(), uplink, now);
            shared
                .counters
                .up
                .fetch_add(payload.len() as u64, Ordering::Relaxed);
        }
        Err(e) => debug!("UDP {lan} → {dst}: to the relay: {e}"),
    }
}

/// One datagram from the relay (`buf`, opened in place): to the LAN host of its session.
pub(super) async fn on_relay(shared: &Shared, buf: &mut [u8]) {
    let opened = match shared.codec.open_reply(buf) {
        Ok(o) => o,
        Err(e) => {
            shared.counters.rejected.fetch_add(1, Ordering::Relaxed);
            if let Some(held) = shared.bad_log.ready() {
                info!("UDP from the relay: dropped a datagram: {e} ({held} more since the last such line)");
            }
            return;
        }
    };
    if shared.is_probe(&opened) {
        return super::probe::on_answer(shared);
    }
    let now = shared.now();
    let Some(session) = shared.sessions.by_id(opened.client_session) else {
        // A session that ended here; its late answers have nowhere to go.
        return;
    };
    if let Err(replay) = session.accept_reply(opened.server_session, opened.packet_id, now) {
        shared.counters.replayed.fetch_add(1, Ordering::Relaxed);
        return debug!("UDP from the relay: dropped: {replay}");
    }
    let Some(far) = socket_addr(&opened.addr) else {
        return;
    };
    deliver(shared, &session, far, &buf[..opened.len]).await;
}

/// An answer from `far` to `session`'s LAN host, sent from `far`'s own address (a transparent
/// reply socket); counted, and the session's liveness told.
pub(super) async fn deliver(shared: &Shared, session: &Session, far: SocketAddr, payload: &[u8]) {
    let socket = match session.reply_socket(far, || reply_socket(far)) {
        Ok(s) => s,
        Err(e) => {
            if shared.bad_log.ready().is_some() {
                warn!("UDP: cannot answer {} from {far}: {e} (a transparent socket needs CAP_NET_ADMIN, and open files must not run out)", session.lan);
            }
            return;
        }
    };
    match socket.send_to(payload, session.lan).await {
        Ok(_) => {
            session
                .down
                .fetch_add(payload.len() as u64, Ordering::Relaxed);
            shared
                .counters
                .down
                .fetch_add(payload.len() as u64, Ordering::Relaxed);
            session.replied(shared.now());
        }
        Err(e) => debug!("UDP {far} → {}: {e}", session.lan),
    }
}
