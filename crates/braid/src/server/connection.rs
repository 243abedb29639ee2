//! One accepted connection: classify it, authenticate it, then relay or answer control requests.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd;
use std::sync::atomic::Ordering;
use std::time::Instant;

use braid_proto::control::{ConnectionReport, Transport, CONTROL_HOST, CONTROL_PORT};
use braid_sys::mptcp::info::{mptcp_state, MptcpState};
use shadowsocks::relay::socks5::Address;
use shadowsocks::relay::tcprelay::proxy_stream::ProxyServerStream;
use tokio::net::TcpStream;
use tracing::{debug, info};

use super::Shared;
use crate::listener::Handler;
use crate::relay::{self, End};
use crate::shutdown::Shutdown;

/// How often a relayed connection's subflows are counted.
const SUBFLOW_SAMPLE: std::time::Duration = std::time::Duration::from_millis(500);

/// What a socket's MPTCP state means for the reports (status, control, logs).
pub fn transport_of(s: MptcpState) -> Transport {
    match s {
        MptcpState::Mptcp { .. } => Transport::Mptcp,
        MptcpState::Fallback => Transport::Fallback,
        MptcpState::Tcp => Transport::Tcp,
    }
}

fn report<S: AsFd>(stream: &S, peer: SocketAddr, tfo: bool) -> ConnectionReport {
    let state = mptcp_state(stream);
    let subflow_peers = match state {
        MptcpState::Mptcp { .. } => braid_sys::mptcp::info::subflow_addrs(stream)
            .map(|v| {
                v.into_iter()
                    .map(|(_, remote)| braid_sys::socket::normalize(remote).to_string())
                    .collect()
            })
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    ConnectionReport {
        peer: peer.to_string(),
        transport: transport_of(state),
        subflows: state.subflows(),
        tfo,
        subflow_peers,
    }
}

impl Handler for Shared {
    /// Control streams end at shutdown between requests; relayed connections may finish while
    /// the listener drains.
    async fn handle(&self, stream: TcpStream, peer: SocketAddr, shutdown: Shutdown) {
        serve(self, stream, peer, shutdown).await
    }
}

async fn serve(shared: &Shared, stream: TcpStream, peer: SocketAddr, shutdown: Shutdown) {
    let started = Instant::now();
    let _ = stream.set_nodelay(true);
    let first = mptcp_state(&stream);
    let tfo = shared.tfo_listener && braid_sys::tfo::syn_data_acked(&stream).unwrap_or(false);
    match first {
        MptcpState::Mptcp { .. } => shared.stats.mptcp.fetch_add(1, Ordering::Relaxed),
        MptcpState::Fallback => {
            info!("connection from {peer} fell back to plain TCP: its MPTCP option was lost on the way (a middlebox stripped it) or refused; this connection cannot bond");
            shared
                .registry
                .fallback_total
                .fetch_add(1, Ordering::Relaxed);
            shared.stats.fallback.fetch_add(1, Ordering::Relaxed)
        }
        MptcpState::Tcp => {
            debug!("connection from {peer} is plain TCP: the client did not ask for MPTCP");
            shared.stats.tcp.fetch_add(1, Ordering::Relaxed)
        }
    };
    let cfg = &shared.cfg;
    let mut ss = ProxyServerStream::from_stream(
        shared.ctx.clone(),
        stream,
        cfg.method.cipher(),
        cfg.key.as_bytes(),
    );
    let target = match tokio::time::timeout(cfg.handshake_timeout, ss.handshake()).await {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => {
            info!("rejected {peer}: Shadowsocks-2022 handshake failed ({e}); a wrong key or method, a clock more than 30 s off, a replay, or a probe");
            // Reveal nothing about how many bytes were consumed: reset.
            let _ =
                socket2::SockRef::from(ss.get_ref()).set_linger(Some(std::time::Duration::ZERO));
            return;
        }
        Err(_) => {
            debug!(
                "{peer}: no request header within {:?}",
                cfg.handshake_timeout
            );
            let _ =
                socket2::SockRef::from(ss.get_ref()).set_linger(Some(std::time::Duration::ZERO));
            return;
        }
    };
    if let Address::DomainNameAddress(host, port) = &target {
        if host == CONTROL_HOST && *port == CONTROL_PORT {
            // Sampled at each request, through a duplicate descriptor, because subflows join
            // after the handshake.
            let dup = ss.get_ref().as_fd().try_clone_to_owned();
            let snapshot = move || match &dup {
                Ok(fd) => report(fd, peer, tfo),
                Err(_) => ConnectionReport {
                    peer: peer.to_string(),
                    transport: Transport::Unknown,
                    subflows: 0,
                    tfo,
                    subflow_peers: vec![],
                },
            };
            if let Err(e) = super::control::serve(&mut ss, snapshot, shutdown).await {
                debug!("control stream from {peer} ended: {e}");
            }
            return;
        }
        if host == braid_proto::udp::uot::MAGIC_HOST {
            let _live = shared
                .registry
                .add(format!("{peer} → UDP over TCP"), ss.get_ref());
            super::udp::uot::serve(shared, &mut ss, peer).await;
            return;
        }
    }
    let _live = shared
        .registry
        .add(format!("{peer} → {target}"), ss.get_ref());
    let mut upstream = match connect_target(shared, &target).await {
        Ok(s) => s,
        Err(why) => {
            info!("{peer} → {target}: {why}");
            return;
        }
    };
    // Subflows come and go during a connection (joins after the handshake, teardown before
    // close), so the count reported is the most seen, sampled through a duplicate descriptor
    // while the relay owns the stream.
    let probe = ss.get_ref().as_fd().try_clone_to_owned().ok();
    let mut most = first.subflows();
    let (moved, end) = {
        let pump = relay::relay(&mut ss, &mut upstream, cfg.idle_timeout);
        tokio::pin!(pump);
        let mut tick = tokio::time::interval(SUBFLOW_SAMPLE);
        loop {
            tokio::select! {
                r = &mut pump => break r,
                _ = tick.tick() => {
                    if let Some(fd) = &probe {
                        most = most.max(mptcp_state(fd).subflows());
                    }
                }
            }
        }
    };
    let mut r = report(ss.get_ref(), peer, tfo);
    r.subflows = r.subflows.max(most);
    let how = match end {
        End::Done => "closed".to_string(),
        End::Idle => format!("idle for {:?}, closed", cfg.idle_timeout),
        End::Error(e) => format!("ended by error ({e})"),
    };
    info!(
        "{peer} → {target}: {how}; transport={} subflows={} tfo={} up={} down={} secs={:.1}",
        r.transport,
        r.subflows,
        r.tfo,
        moved.up,
        moved.down,
        started.elapsed().as_secs_f64()
    );
}

async fn connect_target(shared: &Shared, target: &Address) -> Result<TcpStream, String> {
    let candidates: Vec<SocketAddr> = match target {
        Address::SocketAddress(a) => vec![braid_sys::socket::normalize(*a)],
        Address::DomainNameAddress(h, p) => match tokio::net::lookup_host((h.as_str(), *p)).await {
            Ok(it) => it.collect(),
            Err(e) => return Err(format!("cannot resolve {h}: {e}")),
        },
    };
    let own: Vec<IpAddr> = shared.own.get();
    let mut last = String::from("no address");
    for addr in candidates {
        if let Err(refusal) = shared.policy.check(addr.ip(), &own) {
            last = format!("refused destination {addr}: {refusal}; an operator can allow it with allow_destinations in server.toml");
            continue;
        }
        match tokio::time::timeout(shared.cfg.connect_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Ok(Err(e)) => last = format!("connect to {addr} failed: {e}"),
            Err(_) => {
                last = format!(
                    "connect to {addr} timed out after {:?}",
                    shared.cfg.connect_timeout
                )
            }
        }
    }
    Err(last)
}
