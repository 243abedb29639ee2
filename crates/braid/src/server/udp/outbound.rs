//! A session's outbound side: each datagram checked against the destination policy and sent
//! from the session's own socket, and what comes back sealed and sent to the client's latest
//! address, until the session has been idle for its timeout.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use braid_proto::control::{CONTROL_HOST, CONTROL_PORT};
use bytes::BytesMut;
use shadowsocks::relay::socks5::Address;
use tracing::{debug, info};

use super::session::{ReplyTo, Session};
use super::Relay;
use crate::datagram::MAX_DATAGRAM;

/// Sends `payload` to `target` for `session`. A domain target is resolved on a task of its own,
/// so a slow resolver never holds up the relay's receive loop.
pub(super) async fn forward(
    relay: &Arc<Relay>,
    session: &Arc<Session>,
    target: Address,
    payload: &[u8],
) {
    match target {
        Address::SocketAddress(a) => {
            let dst = braid_sys::socket::normalize(a);
            send_checked(relay, session, dst, &dst.to_string(), payload).await
        }
        Address::DomainNameAddress(host, port) if host == CONTROL_HOST && port == CONTROL_PORT => {
            // braid's UDP probe: answered by the relay itself, to the address it came from, so
            // the gateway learns whether UDP gets through on that uplink.
            let source = Address::DomainNameAddress(host, port);
            reply(relay, session, &source, payload, session.reply_to()).await;
        }
        Address::DomainNameAddress(host, port) => {
            let (relay, session, payload) = (relay.clone(), session.clone(), payload.to_vec());
            tokio::spawn(async move {
                let shown = format!("{host}:{port}");
                match tokio::net::lookup_host((host.as_str(), port)).await {
                    Ok(mut addrs) => {
                        if let Some(dst) = addrs.next() {
                            let dst = braid_sys::socket::normalize(dst);
                            send_checked(&relay, &session, dst, &shown, &payload).await;
                        }
                    }
                    Err(e) => debug!(
                        "UDP session {:016x}: cannot resolve {shown}: {e}",
                        session.client_id
                    ),
                }
            });
        }
    }
}

/// Sends to `dst` unless the destination policy refuses it (said once per session).
async fn send_checked(
    relay: &Relay,
    session: &Session,
    dst: SocketAddr,
    shown: &str,
    payload: &[u8],
) {
    // A destination this session already sent to was judged then.
    if !session.knows(dst.ip()) {
        if let Err(why) = relay
            .server
            .policy
            .check(dst.ip(), |ip| relay.server.own.is_own(ip))
        {
            relay.counters.refused.fetch_add(1, Ordering::Relaxed);
            if session.first_refusal() {
                info!(
                    "UDP {} → {shown}: refused destination ({why}); an operator can allow it with allow_destinations in server.toml",
                    session.client_addr()
                );
            }
            return;
        }
    }
    let local = match session.socket.local_addr() {
        Ok(l) => l,
        Err(e) => return debug!("UDP session socket: {e}"),
    };
    let Some(to) = braid_sys::socket::udp_destination(local, dst) else {
        return debug!("UDP → {shown}: this relay has no IPv6");
    };
    match session.socket.send_to(payload, to).await {
        Ok(_) => {
            session.sent_to(dst.ip(), shown, payload.len());
            relay
                .counters
                .up
                .fetch_add(payload.len() as u64, Ordering::Relaxed);
        }
        Err(e) => debug!("UDP → {shown}: {e}"),
    }
}

/// Seals `payload` from `source` and sends it to the client at `to`.
async fn reply(relay: &Relay, session: &Session, source: &Address, payload: &[u8], to: ReplyTo) {
    let mut out = BytesMut::with_capacity(payload.len() + 128);
    relay.codec.seal_reply(
        session.client_id,
        session.server_id,
        session.next_packet_id(),
        source,
        payload,
        &mut out,
    );
    let sent = braid_sys::pktinfo::send_from_async(&relay.socket, &out, to.client, to.local).await;
    match sent {
        Ok(_) => {
            session
                .down
                .fetch_add(payload.len() as u64, Ordering::Relaxed);
            relay
                .counters
                .down
                .fetch_add(payload.len() as u64, Ordering::Relaxed);
        }
        Err(e) => debug!("UDP reply to {}: {e}", to.client),
    }
}

/// Carries the destinations' answers back to the client until the session expires, then
/// forgets it.
pub(super) async fn pump_replies(relay: Arc<Relay>, session: Arc<Session>) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let timeouts = relay.limits.timeouts;
    loop {
        let deadline = relay.epoch + session.expires_at(&timeouts);
        let got = tokio::select! {
            _ = tokio::time::sleep_until(deadline.into()) => {
                if relay.now() >= session.expires_at(&timeouts) {
                    break;
                }
                continue;
            }
            r = session.socket.recv_from(&mut buf) => r,
        };
        let (n, source) = match got {
            Ok(x) => x,
            Err(e) => {
                debug!("UDP session {:016x}: {e}", session.client_id);
                continue;
            }
        };
        let source = braid_sys::socket::normalize(source);
        let Some(client) = session.reply_from(source.ip(), relay.now()) else {
            relay.counters.unsolicited.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        reply(
            &relay,
            &session,
            &Address::SocketAddress(source),
            &buf[..n],
            client,
        )
        .await;
    }
    relay.table.remove(session.client_id);
    let (client, target, _) = session.view(relay.now());
    debug!(
        "UDP session {:016x} from {client} (last to {target}) ended after {:.1} s idle timeout; up={} down={}",
        session.client_id,
        session.started.elapsed().as_secs_f64(),
        session.up.load(Ordering::Relaxed),
        session.down.load(Ordering::Relaxed)
    );
}
