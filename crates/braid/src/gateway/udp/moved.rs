//! Tells a braid relay that the sessions ride another uplink now (`braid_proto::udp::moved`):
//! one empty, authenticated datagram per session over the new uplink, so the relay's replies
//! follow at once, also for a session that only receives and so has no next datagram to carry
//! the news.

use braid_proto::udp::moved::{MOVED_HOST, MOVED_PORT};
use bytes::BytesMut;
use shadowsocks::relay::socks5::Address;
use tracing::{debug, info};

use super::Shared;

/// Sends the announcement for every live session not already seen on uplink `to`; `relay_is_braid`
/// false (a stock server would try to resolve the name) or datagrams riding inside TCP: nothing
/// to do.
pub(super) async fn announce(shared: &Shared, to: usize, relay_is_braid: bool) {
    if shared.over_tcp() {
        return;
    }
    if !relay_is_braid {
        let live = shared.sessions.all().len();
        if live > 0 {
            info!(
                "UDP: the relay is not braid server, so it cannot be told that {live} session(s) \
                 moved: each follows when it next sends a datagram (one that only receives, as a \
                 download or a stream, waits for its application to send or retry)"
            );
        }
        return;
    }
    let target = Address::DomainNameAddress(MOVED_HOST.into(), MOVED_PORT);
    let mut out = BytesMut::new();
    let (mut told, mut failed) = (0u32, 0u32);
    for session in shared.sessions.all() {
        if session.uplink() == Some(to) {
            continue;
        }
        let packet = session.next_packet_id();
        shared
            .codec
            .seal_request(session.id, packet, &target, &[], &mut out);
        match shared.carry(&out).await {
            (uplink, Ok(())) => {
                session.moved(uplink);
                told += 1;
            }
            (_, Err(e)) => {
                failed += 1;
                debug!(
                    "UDP session {:016x}: telling the relay it moved: {e}",
                    session.id
                );
            }
        }
    }
    if told + failed > 0 {
        debug!("UDP: told the relay {told} sessions moved ({failed} could not be told)");
    }
}
