//! Transparent capture: LAN TCP redirected by braid's nftables table to a local listener, then
//! carried to its original destination through the relay.
//!
//! A connection whose original destination is this gateway itself is never carried: one made
//! straight to the listener (from the LAN or, with the listener on every interface, from the
//! WAN side) has the listener's own address as its "original" destination, and relaying it would
//! have the relay connect back here, again and again. The check asks the kernel whether the
//! address is local ([`braid_sys::local_addr`]), so it holds for any listener family (on a
//! dual-stack `[::]` listener the local address reads `[::ffff:a.b.c.d]`) and any of the
//! gateway's addresses.

use std::net::SocketAddr;

use shadowsocks::relay::socks5::Address;
use tokio::net::TcpStream;
use tracing::{debug, info, warn};

use super::Carrier;
use crate::admission::Handshake;
use crate::listener::{reset, Handler};
use crate::shutdown::Shutdown;

/// Serves the `redirect` listener: each connection is carried to its original destination.
pub struct Capture {
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
    let log = &c.carrier.log;
    let dst = match braid_sys::socket::original_dst(&lan) {
        Ok(d) => d,
        Err(e) => {
            if let Some(held) = log.allow(peer.ip()) {
                warn!("{peer}: no original destination ({e}); was this connection redirected by braid's nftables table? Closing it{held}");
            }
            return;
        }
    };
    match braid_sys::local_addr::is_local(dst.ip()) {
        Ok(false) => {}
        Ok(true) => {
            if let Some(held) = log.allow(peer.ip()) {
                info!("{peer} → {dst}: not carried: the destination is this gateway itself (a connection made straight to the redirect listener, not a captured one); carrying it would loop through the relay back here{held}");
            }
            reset(&lan);
            return;
        }
        Err(e) => {
            if let Some(held) = log.allow(peer.ip()) {
                warn!("{peer} → {dst}: not carried: cannot tell whether the destination is this gateway itself ({e}){held}");
            }
            reset(&lan);
            return;
        }
    }
    let dialer = &c.carrier.dialer;
    let mut remote = match dialer.open_for(&mut lan, Address::SocketAddress(dst)).await {
        Ok(r) => r,
        Err(e) => {
            match log.allow(peer.ip()) {
                Some(held) => warn!(
                    "{peer} → {dst}: cannot reach the relay {}: {e}{held}",
                    dialer.relay()
                ),
                // Every one at debug, as every carried connection's end is.
                None => debug!("{peer} → {dst}: cannot reach the relay: {e}"),
            }
            return;
        }
    };
    let (moved, end) = c
        .carrier
        .carry(dst.to_string(), &mut lan, &mut remote)
        .await;
    debug!(
        "{peer} → {dst}: {end:?}, up={} down={} (relay connection from {})",
        moved.up,
        moved.down,
        super::dialer::source_of(remote.get_ref())
    );
}
