//! Does UDP reach the relay? Every second each uplink's socket sends a probe datagram to the
//! relay's own control target, which braid's relay answers over the same path; the answers feed
//! `braid_proto::udp::blocked`, which decides between datagrams and UDP over TCP. The change is
//! logged once each way.

use std::sync::Arc;
use std::time::Duration;

use braid_proto::control::{CONTROL_HOST, CONTROL_PORT};
use braid_proto::udp::blocked::Route;
use bytes::BytesMut;
use shadowsocks::relay::socks5::Address;
use tokio::sync::watch;
use tracing::{info, warn};

use super::Shared;
use crate::gateway::uplink::ManagerView;

/// How often each uplink is probed.
pub const EVERY: Duration = Duration::from_secs(1);

/// The probe session id of uplink slot `i` (slot 0 is the unbound socket): distinct per uplink,
/// so the relay's session for each stays on one address.
pub(super) fn session_id(base: u64, slot: usize) -> u64 {
    base.wrapping_add(slot as u64)
}

/// Probes until aborted; `view` tells whether the relay is braid (its TCP probes answered).
pub(super) async fn run(shared: Arc<Shared>, view: watch::Receiver<ManagerView>) {
    let mut tick = tokio::time::interval(EVERY);
    let mut packet = 0u64;
    let target = Address::DomainNameAddress(CONTROL_HOST.into(), CONTROL_PORT);
    let mut out = BytesMut::new();
    loop {
        tick.tick().await;
        for (slot, socket) in shared.paths.probe_sockets() {
            shared.codec.seal_request(
                session_id(shared.probe_base, slot),
                packet,
                &target,
                &packet.to_be_bytes(),
                &mut out,
            );
            let to = socket
                .local_addr()
                .ok()
                .and_then(|l| braid_sys::socket::udp_destination(l, shared.paths.relay()))
                .unwrap_or(shared.paths.relay());
            let _ = socket.send_to(&out, to).await;
        }
        packet += 1;
        let braid = super::relay_is_braid(&view.borrow().uplinks);
        let changed = shared.reach().on_tick(shared.now(), braid);
        say(changed);
    }
}

/// A probe answer arrived (any uplink).
pub(super) fn on_answer(shared: &Shared) {
    let changed = shared.reach().on_answer(shared.now());
    say(changed);
}

fn say(changed: Option<Route>) {
    match changed {
        Some(Route::OverTcp) => warn!("UDP to the relay is blocked on every uplink (its probes go unanswered, while TCP works): LAN UDP now rides inside the bonded TCP connection (UDP over TCP); braid keeps probing and switches back when UDP gets through"),
        Some(Route::Datagrams) => info!("UDP gets through to the relay again: LAN UDP goes as datagrams again"),
        None => {}
    }
}
