//! Transparent capture: LAN TCP redirected by braid's nftables table to a local listener, then
//! carried to its original destination through the relay.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use shadowsocks::relay::socks5::Address;
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, warn};

use super::dialer::Dialer;
use crate::shutdown::Shutdown;
use crate::status::registry::Registry;

/// Accepts redirected connections until shutdown.
pub async fn serve(
    listener: TcpListener,
    dialer: Arc<Dialer>,
    registry: Arc<Registry>,
    idle: Duration,
    mut shutdown: Shutdown,
) {
    let own = listener.local_addr().ok();
    loop {
        tokio::select! {
            _ = shutdown.wait() => return,
            r = listener.accept() => match r {
                Ok((lan, peer)) => {
                    let dialer = dialer.clone();
                    let registry = registry.clone();
                    tokio::spawn(async move { carry(lan, peer, own, dialer, registry, idle).await });
                }
                Err(e) => {
                    warn!("redirect listener: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

async fn carry(
    mut lan: TcpStream,
    peer: SocketAddr,
    own: Option<SocketAddr>,
    dialer: Arc<Dialer>,
    registry: Arc<Registry>,
    idle: Duration,
) {
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
    if own.is_some_and(|o| o.port() == dst.port()) && lan.local_addr().is_ok_and(|l| l == dst) {
        debug!("{peer}: direct connection to the redirect port, not a captured one; closing");
        return;
    }
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
    let (moved, end) = super::dialer::carry(
        &dialer,
        &registry,
        dst.to_string(),
        &mut lan,
        &mut remote,
        idle,
    )
    .await;
    debug!(
        "{peer} → {dst}: {end:?}, up={} down={}",
        moved.up, moved.down
    );
}
