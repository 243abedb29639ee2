//! The optional SOCKS5 listener (CONNECT only, no authentication).
//!
//! Who may connect is decided by the listener (`crate::allow_from`); what they may reach is
//! everything the relay allows, except the relay's in-tunnel control target
//! (`braid-control.invalid`): that channel is for braid's own probes and speed tests, not for LAN
//! clients, who could otherwise run unlimited speed tests through the relay.

use std::net::SocketAddr;
use std::time::Duration;

use braid_proto::logsafe::escaped;
use braid_proto::socks5::{self, Reply, TargetAddr};
use shadowsocks::relay::socks5::Address;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::{debug, warn};

use super::Carrier;
use crate::admission::Handshake;
use crate::listener::{reset, Handler};
use crate::shutdown::Shutdown;

/// How long a SOCKS5 client has for its greeting and request.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the `socks` listener.
pub struct Socks {
    /// The way to the relay.
    pub(super) carrier: Carrier,
}

impl Handler for Socks {
    /// A client still in its handshake at shutdown is dropped; one that is relaying may finish
    /// while the listener drains.
    async fn handle(
        &self,
        mut client: TcpStream,
        peer: SocketAddr,
        admitted: Handshake,
        mut shutdown: Shutdown,
    ) {
        let _ = client.set_nodelay(true);
        let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(&mut client));
        let target = tokio::select! {
            r = handshake => match r {
                Ok(Ok(t)) => t,
                Ok(Err(e)) => {
                    debug!("SOCKS5 {peer}: {}", escaped(&e));
                    return;
                }
                Err(_) => {
                    debug!("SOCKS5 {peer}: handshake timed out");
                    return;
                }
            },
            _ = admitted.evicted() => {
                debug!("SOCKS5 {peer}: its place among the pending handshakes went to a newer connection");
                reset(&client);
                return;
            }
            _ = shutdown.wait() => return,
        };
        let _slot = match admitted.establish() {
            Ok(slot) => slot,
            Err(e) => {
                if let Some(held) = self.carrier.log.allow(peer.ip()) {
                    warn!("SOCKS5 {peer}: not carried: {e}{held}");
                }
                let _ = client
                    .write_all(&socks5::reply(Reply::GeneralFailure))
                    .await;
                return;
            }
        };
        carry(client, peer, target, &self.carrier).await
    }
}

/// Whether a SOCKS5 target names the relay's control channel, in any spelling the relay might
/// still resolve to it (case, a trailing dot), on any port.
fn is_control_target(target: &TargetAddr) -> bool {
    match target {
        TargetAddr::Domain(host, _) => host
            .trim_end_matches('.')
            .eq_ignore_ascii_case(braid_proto::control::CONTROL_HOST),
        TargetAddr::Ip(_) => false,
    }
}

async fn carry(mut client: TcpStream, peer: SocketAddr, target: TargetAddr, c: &Carrier) {
    if is_control_target(&target) {
        if let Some(held) = c.log.allow(peer.ip()) {
            warn!("SOCKS5 {peer} → {}: refused: the relay's control channel is not for LAN clients{held}", escaped(&target.to_string()));
        }
        let _ = client.write_all(&socks5::reply(Reply::NotAllowed)).await;
        return;
    }
    let dialer = &c.dialer;
    let addr = match &target {
        TargetAddr::Ip(a) => Address::SocketAddress(*a),
        TargetAddr::Domain(h, p) => Address::DomainNameAddress(h.clone(), *p),
    };
    // The relay connects to the target only after our header arrives, and SS2022 has no error
    // reply, so success is reported once the relay stream is open (as sslocal does).
    let mut remote = match dialer.open_lan(addr).await {
        Ok(r) => r,
        Err(e) => {
            match c.log.allow(peer.ip()) {
                Some(held) => warn!(
                    "SOCKS5 {peer} → {}: cannot reach the relay {}: {e}{held}",
                    escaped(&target.to_string()),
                    dialer.relay()
                ),
                // Every one at debug, as every carried connection's end is.
                None => debug!(
                    "SOCKS5 {peer} → {}: cannot reach the relay: {e}",
                    escaped(&target.to_string())
                ),
            }
            let _ = client
                .write_all(&socks5::reply(Reply::HostUnreachable))
                .await;
            return;
        }
    };
    if client
        .write_all(&socks5::reply(Reply::Succeeded))
        .await
        .is_err()
    {
        return;
    }
    if super::dialer::send_first_from(&mut client, &mut remote)
        .await
        .is_err()
    {
        return;
    }
    let shown = escaped(&target.to_string()).to_string();
    let (moved, end) = c.carry(shown.clone(), &mut client, &mut remote).await;
    debug!(
        "SOCKS5 {peer} → {shown}: {end:?}, up={} down={} (relay connection from {})",
        moved.up,
        moved.down,
        super::dialer::source_of(remote.get_ref())
    );
}

async fn handshake(client: &mut TcpStream) -> Result<TargetAddr, String> {
    let mut buf = Vec::with_capacity(64);
    let mut chunk = [0u8; 512];
    let used = loop {
        match socks5::parse_greeting(&buf) {
            Ok(Some(n)) => break n,
            Ok(None) => {}
            Err(e) => {
                let _ = client.write_all(&socks5::greeting_reply(false)).await;
                return Err(e.to_string());
            }
        }
        let n = client.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed during greeting".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    buf.drain(..used);
    client
        .write_all(&socks5::greeting_reply(true))
        .await
        .map_err(|e| e.to_string())?;
    loop {
        match socks5::parse_request(&buf) {
            Ok(Some((target, used))) => {
                if used != buf.len() {
                    return Err("data sent before the CONNECT reply".into());
                }
                return Ok(target);
            }
            Ok(None) => {}
            Err(e) => {
                let _ = client.write_all(&socks5::reply(e.reply_code())).await;
                return Err(e.to_string());
            }
        }
        let n = client.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed during request".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_target_is_recognised_in_any_spelling() {
        let d = |h: &str, p| TargetAddr::Domain(h.into(), p);
        assert!(is_control_target(&d("braid-control.invalid", 9)));
        assert!(is_control_target(&d("BRAID-Control.invalid.", 9)));
        assert!(is_control_target(&d("braid-control.invalid", 443)));
        assert!(!is_control_target(&d("example.com", 9)));
        assert!(!is_control_target(&TargetAddr::Ip(
            "10.0.0.1:9".parse().unwrap()
        )));
    }
}
