//! UDP over TCP on the gateway: while UDP to the relay is blocked, each LAN flow and destination
//! gets a stream through the bonded MPTCP connection to the relay's UoT target (sing-box UoT v2,
//! connect form), and its datagrams ride that stream, framed by `braid_proto::udp::uot`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use braid_proto::udp::uot::{frame, next_packet, request, MAGIC_HOST};
use shadowsocks::relay::socks5::Address;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tracing::debug;

use super::session::Session;
use super::Shared;

/// Datagrams waiting for a flow's stream; beyond it they are dropped, as a full queue would.
const QUEUE: usize = 256;

/// A flow's datagram queue, by (LAN address, destination).
type FlowMap = HashMap<(SocketAddr, SocketAddr), mpsc::Sender<Vec<u8>>>;

/// The live flows, by LAN address and destination.
#[derive(Default)]
pub(super) struct Flows {
    map: Mutex<FlowMap>,
}

impl Flows {
    fn map(&self) -> std::sync::MutexGuard<'_, FlowMap> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Sends `payload` from `session`'s LAN host to `dst` over its flow's stream (opened on the
/// first datagram). Returns false when it had to be dropped.
pub(super) fn send(
    shared: &Arc<Shared>,
    session: &Arc<Session>,
    dst: SocketAddr,
    payload: &[u8],
) -> bool {
    let key = (session.lan, dst);
    let mut map = shared.uot.map();
    if let Some(tx) = map.get(&key) {
        if tx.try_send(payload.to_vec()).is_ok() {
            return true;
        }
        if !tx.is_closed() {
            return false;
        }
    }
    let (tx, rx) = mpsc::channel(QUEUE);
    let _ = tx.try_send(payload.to_vec());
    map.insert(key, tx);
    tokio::spawn(flow(shared.clone(), session.clone(), dst, rx));
    true
}

/// One flow's stream: datagrams out, answers back to the LAN host, until it idles for the
/// session timeout or the stream ends.
async fn flow(
    shared: Arc<Shared>,
    session: Arc<Session>,
    dst: SocketAddr,
    mut rx: mpsc::Receiver<Vec<u8>>,
) {
    let key = (session.lan, dst);
    let target = Address::DomainNameAddress(MAGIC_HOST.into(), 0);
    let stream = match shared.dialer.open(target, false).await {
        Ok(s) => s,
        Err(e) => {
            debug!(
                "UDP over TCP {} → {dst}: cannot reach the relay: {e}",
                session.lan
            );
            shared.uot.map().remove(&key);
            return;
        }
    };
    let (mut rd, mut wr) = tokio::io::split(stream);
    let idle = shared.limits.timeouts.stream;
    let mut header = Some(request(dst));
    let mut pending = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        tokio::select! {
            d = rx.recv() => {
                let Some(d) = d else { break };
                let Some(mut f) = frame(&d) else { continue };
                if let Some(mut h) = header.take() {
                    // The request and the first datagram leave together, with the stream's own
                    // header, in one write.
                    h.append(&mut f);
                    f = h;
                }
                if wr.write_all(&f).await.is_err() || wr.flush().await.is_err() {
                    break;
                }
            }
            r = rd.read(&mut chunk) => {
                match r {
                    Ok(0) | Err(_) => break,
                    Ok(n) => pending.extend_from_slice(&chunk[..n]),
                }
                while let Some((range, used)) = next_packet(&pending) {
                    super::lan::deliver(&shared, &session, dst, &pending[range]).await;
                    pending.drain(..used);
                }
            }
            _ = tokio::time::sleep(idle) => break,
        }
    }
    shared.uot.map().remove(&key);
    debug!("UDP over TCP {} → {dst} ended", session.lan);
}
