//! Transparent capture: LAN TCP redirected by braid's nftables table to a local listener, then
//! carried to its original destination through the relay.

use std::net::SocketAddr;

use shadowsocks::relay::socks5::Address;
use tokio::net::TcpStream;
use tracing::{debug, warn};

use super::Carrier;
use crate::admission::Handshake;
use crate::listener::{reset, Handler};
use crate::shutdown::Shutdown;

/// Serves the `redirect` listener: each connection is carried to its original destination.
pub struct Capture {
    /// The listener's own address, to tell a direct connection from a redirected one.
    pub(super) own: Option<SocketAddr>,
    /// The way to the relay.
    pub(super) carrier: Carrier,
}

impl Handler for Capture {
    /// A captured connection is relayed until it ends (draining lets it finish).
    async fn handle(
        &self,
        lan: TcpStream,
        peer: SocketAddr,
        handshake: Handshake,
        _shutdown: Shutdown,
    ) {
        // A LAN connection has no handshake of its own: it takes a connection slot at once.
        let _slot = match handshake.establish() {
            Ok(slot) => slot,
            Err(e) => {
                if let Some(held) = self.carrier.log.allow(peer.ip()) {
                    warn!("{peer}: not carried: {e}{held}");
                }
                reset(&lan);
                return;
            }
        };
        carry(lan, peer, self).await
    }
}

async fn carry(mut lan: TcpStream, peer: SocketAddr, c: &Capture) {
    let _ = lan.set_nodelay(true);
    let dst = match braid_sys::socket::original_dst(&lan) {
        Ok(d) => d,
        Err(e) => {
            warn!("{peer}: no original destination ({e}); was this connection redirected by braid's nftables table? Closing it");
            return;
        }
    };
    // A connection made straight to the listener (not redirected) has itself as "original"
    // destination; relaying it would loop.
    if c.own.is_some_and(|o| o.port() == dst.port()) && lan.local_addr().is_ok_and(|l| l == dst) {
        debug!("{peer}: direct connection to the redirect port, not a captured one; closing");
        return;
    }
    let dialer = &c.carrier.dialer;
    let mut remote = match dialer.open_for(&mut lan, Address::SocketAddress(dst)).await {
        Ok(r) => r,
        Err(e) => {
            warn!(
                "{peer} → {dst}: cannot reach the relay {}: {e}",
                dialer.relay()
            );
            return;
        }
    };
    let (moved, end) = c
        .carrier
        .carry(dst.to_string(), &mut lan, &mut remote)
        .await;
    debug!(
        "{peer} → {dst}: {end:?}, up={} down={}",
        moved.up, moved.down
    );
}
