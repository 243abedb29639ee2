//! One accepted connection: classify it, authenticate it, then relay or answer control requests.

use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::atomic::Ordering;
use std::time::Instant;

use braid_proto::control::{ConnectionReport, Transport, CONTROL_HOST, CONTROL_PORT};
use braid_proto::logsafe::escaped;
use braid_proto::park;
use braid_proto::socks5::TargetAddr;
use braid_sys::mptcp::info::{mptcp_state, MptcpState};
use tokio::net::TcpStream;
use tracing::{debug, info, warn};

use super::stream::{HandshakeError, ServerStream};
use super::Shared;
use crate::admission::Handshake;
use crate::listener::{reset, Handler};
use crate::relay::{self, End};
use crate::shared_stream::SharedStream;
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
    async fn handle(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        handshake: Handshake,
        shutdown: Shutdown,
    ) {
        serve(self, stream, peer, handshake, shutdown).await
    }
}

/// What the relay learnt of a connection before its request: transport and TFO.
#[derive(Clone, Copy)]
struct Arrival {
    first: MptcpState,
    tfo: bool,
    started: Instant,
}

async fn serve(
    shared: &Shared,
    stream: TcpStream,
    peer: SocketAddr,
    handshake: Handshake,
    shutdown: Shutdown,
) {
    let arrival = classify(shared, &stream, peer);
    // Pushes a reply the kernel holds while a TFO handshake ends; lives with the connection.
    let _push = super::tfo_push::start(&stream, arrival.first, arrival.tfo);
    let cfg = &shared.cfg;
    let mut ss = ServerStream::new(
        shared.ctx.clone(),
        SharedStream::new(stream),
        cfg.method.cipher(),
        cfg.key.as_bytes(),
    );
    let Some(target) = authenticate(shared, &mut ss, peer, &handshake, arrival.started).await
    else {
        reset(ss.get_ref());
        return;
    };
    let _slot = match handshake.establish() {
        Ok(slot) => slot,
        Err(e) => {
            if let Some(held) = shared.rejects.allow(peer.ip()) {
                warn!("refused {peer} after its handshake: {e}{held}");
            }
            reset(ss.get_ref());
            return;
        }
    };
    if let TargetAddr::Domain(host, port) = &target {
        let control = host == CONTROL_HOST && *port == CONTROL_PORT;
        if control || host == braid_proto::udp::uot::MAGIC_HOST {
            // A speed test must bond from its start; datagrams are no request and answer.
            if let Some(pm) = shared.path_manager.get() {
                pm.release(ss.get_ref());
            }
        }
        if control {
            // Sampled at each request, because subflows join after the handshake.
            let socket = ss.get_ref().handle();
            let snapshot = move || report(&socket, peer, arrival.tfo);
            let limits = handshake_limits(shared);
            if let Err(e) = super::control::serve(
                &mut ss,
                snapshot,
                limits,
                shared.joins.get().copied(),
                shared.tunnels.as_deref(),
                shutdown,
            )
            .await
            {
                debug!("control stream from {peer} ended: {e}");
                // A vanished or broken client gets no FIN to wait on.
                reset(ss.get_ref());
            }
            return;
        }
        if host == braid_proto::udp::uot::MAGIC_HOST {
            let _live = shared
                .registry
                .add(format!("{peer} → UDP over TCP"), ss.get_ref().handle());
            super::udp::uot::serve(shared, &mut ss, peer).await;
            return;
        }
    }
    relay_to(shared, ss, peer, &target, arrival).await
}

/// What control requests report of the relay's pending-handshake limits (the gateway's warm
/// pool keeps its idle connections within them).
fn handshake_limits(shared: &Shared) -> braid_proto::control::HandshakeLimits {
    braid_proto::control::HandshakeLimits {
        timeout_ms: shared.cfg.handshake_timeout.as_millis() as u64,
        max_per_source: shared.admission.limits().max_handshakes_per_source as u64,
        parks: true,
    }
}

/// Counts the connection by transport and says when it fell back to plain TCP.
fn classify(shared: &Shared, stream: &TcpStream, peer: SocketAddr) -> Arrival {
    let started = Instant::now();
    let _ = stream.set_nodelay(true);
    crate::congestion::apply(stream, &shared.congestion);
    let first = mptcp_state(stream);
    let tfo = shared.tfo_listener && braid_sys::tfo::syn_data_acked(stream).unwrap_or(false);
    match first {
        MptcpState::Mptcp { .. } => shared.stats.mptcp.fetch_add(1, Ordering::Relaxed),
        MptcpState::Fallback => {
            if let Some(held) = shared.rejects.allow(peer.ip()) {
                info!("connection from {peer} fell back to plain TCP: its MPTCP option was lost on the way (a middlebox stripped it) or refused; this connection cannot bond{held}");
            }
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
    Arrival {
        first,
        tfo,
        started,
    }
}

/// Reads the request within `handshake_timeout` of the connect, unless the connection's place
/// among the pending handshakes goes to a newer one first. A parked request (a gateway's warm
/// pool, `braid_proto::park`) stays a pending handshake until its second stage names the real
/// target, within the same time. Failures are logged at most once per source per minute.
async fn authenticate(
    shared: &Shared,
    ss: &mut ServerStream<SharedStream>,
    peer: SocketAddr,
    handshake: &Handshake,
    started: Instant,
) -> Option<TargetAddr> {
    let timeout = shared.cfg.handshake_timeout;
    let parked = std::sync::atomic::AtomicBool::new(false);
    let request = async {
        let target = ss.handshake().await?;
        // Kept for a replay check even if the stream goes no further.
        if let Some(salt) = ss.salt() {
            shared.salts.record(salt);
        }
        if !park::is_park(&target) {
            return Ok(target);
        }
        parked.store(true, Ordering::Relaxed);
        let target = ss.second_stage().await?;
        grow_parked_rcvbuf(ss.get_ref());
        Ok(target)
    };
    let deadline = tokio::time::Instant::from_std(started + timeout);
    let why = tokio::select! {
        r = tokio::time::timeout_at(deadline, request) => match r {
            Ok(Ok(target)) => return Some(target),
            // What a gateway's warm pool does with a connection it did not need: no failure.
            Ok(Err(HandshakeError::Closed)) => {
                debug!("{peer} closed its connection before sending a request (an unused warm-pool connection retired by its gateway)");
                return None;
            }
            Ok(Err(e)) => format!("Shadowsocks-2022 handshake failed ({e}); a wrong key or method, a clock more than 30 s off, a replay, or a probe"),
            Err(_) if parked.load(Ordering::Relaxed) => format!("a parked request named no target within {timeout:?} of the connect (a gateway's warm pool keeps its connections shorter than the relay's handshake_timeout_secs it is told)"),
            Err(_) => format!("no request within {timeout:?}"),
        },
        _ = handshake.evicted() => "its place among the pending handshakes went to a newer connection (max_handshakes)".to_string(),
    };
    if let Some(held) = shared.rejects.allow(peer.ip()) {
        info!("rejected {peer}: {why}{held}");
    }
    None
}

/// A parked connection's receive buffer, grown once its target arrives. The kernel had not
/// autotuned it during a bulk upload on Linux 6.18 (its subflows kept `rcv_space` 14480 and a
/// window under 100 kB, `ss -tinm` in the relay's namespace, where a fresh connection's buffer
/// grew to 32 MiB), and pooled uploads ran slower than fresh ones until it was grown to what
/// autotuning gives a fresh one (`relay::IDLED_RCVBUF`).
fn grow_parked_rcvbuf<S: std::os::fd::AsFd>(sock: &S) {
    crate::relay::grow_idled_rcvbuf(sock, "a parked connection");
}

/// Relays an authenticated connection to `target`, listed in status while it lasts.
async fn relay_to(
    shared: &Shared,
    mut ss: ServerStream<SharedStream>,
    peer: SocketAddr,
    target: &TargetAddr,
    arrival: Arrival,
) {
    let shown = escaped(&target.to_string()).to_string();
    let _live = shared
        .registry
        .add(format!("{peer} → {shown}"), ss.get_ref().handle());
    let mut upstream = match super::upstream::connect(shared, target).await {
        Ok(s) => s,
        Err(why) => {
            info!("{peer} → {shown}: {why}");
            return;
        }
    };
    // Subflows come and go during a connection (joins after the handshake, teardown before
    // close), so the count reported is the most seen, sampled through the shared socket while
    // the relay owns the stream.
    let socket = ss.get_ref().handle();
    let mut most = arrival.first.subflows();
    let idle = shared.cfg.idle_timeout;
    // The path manager keeps joins as backups until the connection is bulk.
    let bulk = shared.path_manager.get().and_then(|pm| pm.watch(&socket));
    let (moved, end) = {
        let pump = relay::relay_watched(&mut ss, &mut upstream, idle, std::future::pending(), bulk);
        tokio::pin!(pump);
        let mut tick = tokio::time::interval(SUBFLOW_SAMPLE);
        loop {
            tokio::select! {
                r = &mut pump => break r,
                _ = tick.tick() => most = most.max(mptcp_state(&socket).subflows()),
            }
        }
    };
    if matches!(end, End::Error(_)) {
        // Resets, not FINs: neither end may take a broken transfer for a whole one.
        reset(&upstream);
        reset(ss.get_ref());
    }
    let mut r = report(ss.get_ref(), peer, arrival.tfo);
    r.subflows = r.subflows.max(most);
    let how = match end {
        End::Done => "closed".to_string(),
        End::Idle => format!("idle for {idle:?}, closed"),
        End::Error(e) => format!("ended by error ({e})"),
    };
    info!(
        "{peer} → {shown}: {how}; transport={} subflows={} tfo={} up={} down={} secs={:.1}",
        r.transport,
        r.subflows,
        r.tfo,
        moved.up,
        moved.down,
        arrival.started.elapsed().as_secs_f64()
    );
}
