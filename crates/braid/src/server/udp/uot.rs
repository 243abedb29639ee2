//! UDP over TCP on the relay (sing-box's UoT v2, connect form; framing in
//! `braid_proto::udp::uot`): a stream to the magic target carries one destination's datagrams,
//! for gateways whose UDP to the relay is blocked. The destination policy applies as for UDP.

use std::net::SocketAddr;

use braid_proto::socks5::TargetAddr;
use braid_proto::udp::uot::{frame, next_packet, parse_request};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UdpSocket;
use tracing::{debug, info};

use crate::datagram::MAX_DATAGRAM;
use crate::server::Shared;

/// Most bytes a request header may take (a domain address is at most 1 + 1 + 255 + 2).
const REQUEST_MAX: usize = 300;

/// Relays the datagrams of one UoT stream until either side ends or it idles for the UDP stream
/// timeout.
pub(in crate::server) async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    shared: &Shared,
    stream: &mut S,
    peer: SocketAddr,
) {
    let idle = shared
        .cfg
        .udp
        .map_or(shared.cfg.idle_timeout, |u| u.timeouts.stream);
    let mut pending = Vec::with_capacity(4096);
    let (dst, used) = match read_request(stream, &mut pending, shared.cfg.handshake_timeout).await {
        Ok(x) => x,
        Err(why) => return info!("UDP over TCP from {peer}: {why}"),
    };
    pending.drain(..used);
    let dst = match resolve(&dst).await {
        Ok(d) => d,
        Err(why) => return info!("UDP over TCP from {peer} → {dst}: {why}"),
    };
    if let Err(why) = shared.policy.check(dst.ip(), |ip| shared.own.is_own(ip)) {
        return info!("UDP over TCP from {peer} → {dst}: refused destination ({why}); an operator can allow it with allow_destinations in server.toml");
    }
    let socket = match open(dst).await {
        Ok(s) => s,
        Err(e) => return info!("UDP over TCP from {peer} → {dst}: {e}"),
    };
    debug!("UDP over TCP from {peer} → {dst} begins");
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut chunk = vec![0u8; 64 * 1024];
    let mut datagram = vec![0u8; MAX_DATAGRAM];
    let (mut up, mut down) = (0u64, 0u64);
    loop {
        // Whole packets already read go out first.
        while let Some((range, used)) = next_packet(&pending) {
            up += range.len() as u64;
            let _ = socket.send(&pending[range]).await;
            pending.drain(..used);
        }
        tokio::select! {
            r = rd.read(&mut chunk) => match r {
                Ok(0) | Err(_) => break,
                Ok(n) => pending.extend_from_slice(&chunk[..n]),
            },
            r = socket.recv(&mut datagram) => {
                let Ok(n) = r else { continue };
                let Some(f) = frame(&datagram[..n]) else { continue };
                if wr.write_all(&f).await.is_err() || wr.flush().await.is_err() {
                    break;
                }
                down += n as u64;
            }
            _ = tokio::time::sleep(idle) => break,
        }
    }
    debug!("UDP over TCP from {peer} → {dst} ended; up={up} down={down}");
}

/// Reads until the request header is whole; returns it and the bytes it took.
async fn read_request<S: AsyncRead + Unpin>(
    stream: &mut S,
    pending: &mut Vec<u8>,
    limit: std::time::Duration,
) -> Result<(TargetAddr, usize), String> {
    let work = async {
        let mut chunk = [0u8; 512];
        loop {
            match parse_request(pending) {
                Ok(Some(x)) => return Ok(x),
                Ok(None) if pending.len() >= REQUEST_MAX => {
                    return Err("request header too long".to_string())
                }
                Ok(None) => {}
                Err(e) => return Err(e.to_string()),
            }
            match stream.read(&mut chunk).await {
                Ok(0) => return Err("closed before its request header".into()),
                Ok(n) => pending.extend_from_slice(&chunk[..n]),
                Err(e) => return Err(e.to_string()),
            }
        }
    };
    tokio::time::timeout(limit, work)
        .await
        .unwrap_or_else(|_| Err(format!("no request header within {limit:?}")))
}

async fn resolve(dst: &TargetAddr) -> Result<SocketAddr, String> {
    match dst {
        TargetAddr::Ip(a) => Ok(braid_sys::socket::normalize(*a)),
        TargetAddr::Domain(h, p) => tokio::net::lookup_host((h.as_str(), *p))
            .await
            .map_err(|e| format!("cannot resolve {h}: {e}"))?
            .next()
            .map(braid_sys::socket::normalize)
            .ok_or_else(|| format!("{h} has no address")),
    }
}

/// A UDP socket connected to `dst`: only `dst` may answer.
async fn open(dst: SocketAddr) -> std::io::Result<UdpSocket> {
    let s = UdpSocket::from_std(braid_sys::socket::udp_any()?)?;
    let to = s
        .local_addr()
        .ok()
        .and_then(|l| braid_sys::socket::udp_destination(l, dst))
        .unwrap_or(dst);
    s.connect(to).await?;
    Ok(s)
}
