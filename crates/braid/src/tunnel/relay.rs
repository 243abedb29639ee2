//! The relay's end of the tunnels: one UDP port and one TUN device for every gateway.
//!
//! ```text
//!  gateway ══UDP══► socket ─► peer by key (handshake) or session index ─► decapsulate
//!                                          └─► inner::to_relay? ─► TUN ─► kernel: MP_JOIN from 10.255.x.y
//!  kernel: reply to 10.255.x.y ─► route 10.255.0.0/16 dev TUN ─► peer by address ─► encapsulate ─► UDP
//! ```
//! Nothing exists until the first gateway asks for a tunnel ([`Tunnels::grant`]): a relay
//! whose gateways never need one opens no port and makes no device. The device is a
//! non-persistent TUN, so the kernel removes it, its address and its route when the relay
//! exits in any way; the relay keeps no record of it.
//!
//! Decrypted packets enter the kernel only when [`inner::to_relay`] allows them: TCP from the
//! peer's own address to the relay's listener. A gateway cannot reach anything else through the
//! tunnel, another gateway's tunnel address included.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Packet, Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use braid_proto::control::{ControlResponse, TunnelGrant};
use braid_proto::tunnel::{inner, mtu};
use braid_sys::tun::Tun;
use ipnet::Ipv4Net;
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::peers::{Endpoint, Peer, Peers, LEASE};
use super::{keys, BUF, KEEPALIVE_SECS};

/// Handshakes per second before the relay asks for cookies (WireGuard's DoS defence).
const HANDSHAKE_RATE: u64 = 100;
/// How often sessions' timers run.
const TIMER_TICK: Duration = Duration::from_millis(250);

/// What the relay's tunnels are made from (server.toml).
#[derive(Debug, Clone)]
pub struct TunnelConfig {
    /// The UDP address tunnels arrive on.
    pub listen: SocketAddr,
    /// The network tunnel addresses are leased from; the first host is the relay's.
    pub net: Ipv4Net,
    /// WireGuard's pre-shared key (from the SS2022 key).
    pub psk: [u8; 32],
    /// The TUN device's name.
    pub device: String,
}

/// The relay's tunnels: started on the first grant, stopped with the relay.
pub struct Tunnels {
    cfg: TunnelConfig,
    running: tokio::sync::Mutex<Option<Result<Arc<Running>, String>>>,
}

/// The live parts: keys, socket, device, peers and the tasks that pump between them.
struct Running {
    secret: StaticSecret,
    public: PublicKey,
    psk: [u8; 32],
    udp: UdpSocket,
    tun: Tun,
    peers: Mutex<Peers>,
    limiter: Arc<RateLimiter>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Tunnels {
    /// Tunnels for `cfg`; nothing is opened yet.
    pub fn new(cfg: TunnelConfig) -> Tunnels {
        Tunnels {
            cfg,
            running: tokio::sync::Mutex::new(None),
        }
    }

    /// The UDP address tunnels arrive on.
    pub fn listen(&self) -> SocketAddr {
        self.cfg.listen
    }

    /// Answers a gateway's request to admit `public_key` for `uplink`, dialing `relay`.
    pub async fn grant(&self, uplink: &str, public_key: &str, relay: &str) -> ControlResponse {
        let error = |message: String| ControlResponse::Error { message };
        let Some(key) = keys::decode(public_key) else {
            return error("the tunnel key is not base64 of 32 bytes; fix: upgrade the gateway to the relay's braid version".into());
        };
        let Ok(relay) = relay.parse::<SocketAddr>() else {
            return error(format!("{relay:?} is not IP:PORT"));
        };
        if !relay.is_ipv4() {
            return error("the tunnel carries IPv4 only, and this gateway dials the relay over IPv6; fix: give the gateway the relay's IPv4 address".into());
        }
        let running = match self.running().await {
            Ok(r) => r,
            Err(e) => return error(e),
        };
        let admitted = {
            let Ok(mut peers) = running.peers.lock() else {
                return error("the relay's tunnel table is unusable (a task panicked)".into());
            };
            let (secret, public, psk, limiter) = (
                running.secret.clone(),
                *key.as_bytes(),
                running.psk,
                running.limiter.clone(),
            );
            peers.admit(*key.as_bytes(), relay, uplink, Instant::now(), |index| {
                Tunn::new(
                    secret,
                    PublicKey::from(public),
                    Some(psk),
                    Some(KEEPALIVE_SECS),
                    index,
                    Some(limiter),
                )
            })
        };
        match admitted {
            Ok(p) => {
                debug!(
                    "tunnel lease for uplink {} of a gateway: {} (session {})",
                    braid_proto::logsafe::escaped(uplink),
                    p.addr,
                    p.index
                );
                ControlResponse::Tunnel(TunnelGrant {
                    server_key: keys::encode(&running.public),
                    address: p.addr.to_string(),
                    port: self.cfg.listen.port(),
                    lease_secs: LEASE.as_secs() as u32,
                })
            }
            Err(e) => error(e.to_string()),
        }
    }

    async fn running(&self) -> Result<Arc<Running>, String> {
        let mut slot = self.running.lock().await;
        if let Some(r) = slot.as_ref() {
            return r.clone();
        }
        let started = start(&self.cfg).await;
        match &started {
            Ok(_) => info!(
                "tunnel for hostile paths: UDP {} and device {} ({}), started for the first gateway that needs it",
                self.cfg.listen, self.cfg.device, self.cfg.net
            ),
            Err(e) => warn!("tunnel for hostile paths not available: {e}"),
        }
        *slot = Some(started.clone());
        started
    }

    /// Stops the pumps and closes the device (the kernel removes it).
    pub async fn stop(&self) {
        if let Some(Ok(r)) = self.running.lock().await.take() {
            if let Ok(mut t) = r.tasks.lock() {
                for h in t.drain(..) {
                    h.abort();
                }
            }
        }
    }

    /// Admitted gateway keys (0 before the first grant).
    pub async fn peers(&self) -> usize {
        match self.running.lock().await.as_ref() {
            Some(Ok(r)) => r.peers.lock().map(|p| p.len()).unwrap_or(0),
            _ => 0,
        }
    }
}

async fn start(cfg: &TunnelConfig) -> Result<Arc<Running>, String> {
    super::log_backend().await;
    let (secret, public) = keys::generate().map_err(|e| format!("no random source: {e}"))?;
    let udp = super::udp_socket(cfg.listen)
        .and_then(|s| {
            s.bind(&cfg.listen.into())?;
            // On a wildcard address, answers leave from the address each gateway wrote to.
            braid_sys::pktinfo::enable(&s)?;
            UdpSocket::from_std(s.into())
        })
        .map_err(|e| {
            format!(
                "cannot listen on UDP {}: {e}; fix: pick a free `tunnel_port` in server.toml",
                cfg.listen
            )
        })?;
    // Sized for any gateway's outer path, IPv4 or IPv6.
    let tun = Tun::open(&cfg.device, mtu::tunnel_mtu(true)).map_err(|e| e.to_string())?;
    let peers = Peers::new(cfg.net);
    let rtnl = braid_sys::netlink::Rtnl::connect().map_err(|e| e.to_string())?;
    rtnl.ensure_address(
        tun.ifindex(),
        braid_sys::address::IfAddr {
            addr: IpAddr::V4(peers.server_addr()),
            prefix_len: cfg.net.prefix_len(),
        },
    )
    .await
    .map_err(|e| e.to_string())?;
    let limiter = Arc::new(RateLimiter::new(&public, HANDSHAKE_RATE));
    let running = Arc::new(Running {
        secret,
        public,
        psk: cfg.psk,
        udp,
        tun,
        peers: Mutex::new(peers),
        limiter,
        tasks: Mutex::new(Vec::new()),
    });
    let tasks = vec![
        tokio::spawn(from_gateways(running.clone())),
        tokio::spawn(to_gateways(running.clone())),
        tokio::spawn(timers(running.clone())),
    ];
    if let Ok(mut t) = running.tasks.lock() {
        *t = tasks;
    }
    Ok(running)
}

impl Running {
    fn peer_of(&self, packet: &Packet<'_>) -> Option<Arc<Peer>> {
        let peers = self.peers.lock().ok()?;
        match packet {
            Packet::HandshakeInit(h) => {
                let half = parse_handshake_anon(&self.secret, &self.public, h).ok()?;
                peers.by_key(&half.peer_static_public)
            }
            Packet::HandshakeResponse(p) => peers.by_index(p.receiver_idx >> 8),
            Packet::PacketCookieReply(p) => peers.by_index(p.receiver_idx >> 8),
            Packet::PacketData(p) => peers.by_index(p.receiver_idx >> 8),
        }
    }

    /// Sends an outer packet to a gateway, from the address it wrote to.
    async fn send(&self, packet: &[u8], to: Endpoint) {
        let sent =
            braid_sys::pktinfo::send_from_async(&self.udp, packet, to.gateway, to.local).await;
        if let Err(e) = sent {
            debug!("tunnel socket: sending to {}: {e}", to.gateway);
        }
    }

    fn touch(&self, p: &Peer, to: Endpoint) {
        if let Ok(mut e) = p.endpoint.lock() {
            *e = Some(to);
        }
        if let Ok(peers) = self.peers.lock() {
            peers.touch(p, Instant::now());
        }
    }
}

/// UDP from gateways: handshakes and data, into the kernel when the rules allow.
async fn from_gateways(r: Arc<Running>) {
    let mut buf = vec![0u8; BUF];
    let mut out = vec![0u8; BUF];
    loop {
        let received = braid_sys::pktinfo::recv_to_async(&r.udp, &mut buf).await;
        let (n, from, local) = match received {
            Ok(x) => x,
            Err(e) => {
                debug!("tunnel socket: {e}");
                continue;
            }
        };
        let to = Endpoint {
            gateway: from,
            local,
        };
        let datagram = &buf[..n];
        let packet = match r.limiter.verify_packet(Some(from.ip()), datagram, &mut out) {
            Ok(p) => p,
            Err(TunnResult::WriteToNetwork(cookie)) => {
                r.send(cookie, to).await;
                continue;
            }
            Err(_) => continue,
        };
        let Some(peer) = r.peer_of(&packet) else {
            continue;
        };
        let mut tunn = peer.tunn.lock().await;
        match tunn.decapsulate(Some(from.ip()), datagram, &mut out) {
            TunnResult::WriteToNetwork(p) => {
                r.touch(&peer, to);
                r.send(p, to).await;
                // Packets queued while the session was being made.
                while let TunnResult::WriteToNetwork(p) = tunn.decapsulate(None, &[], &mut out) {
                    r.send(p, to).await;
                }
            }
            TunnResult::WriteToTunnelV4(p, _) => {
                r.touch(&peer, to);
                let allowed = inner::parse(p)
                    .is_some_and(|i| inner::to_relay(&i, IpAddr::V4(peer.addr), peer.relay));
                if allowed {
                    let _ = r.tun.send(p).await;
                }
            }
            TunnResult::Done => r.touch(&peer, to),
            TunnResult::WriteToTunnelV6(..) | TunnResult::Err(_) => {}
        }
    }
}

/// Packets the kernel routes into the device, to the gateway that leases their destination.
async fn to_gateways(r: Arc<Running>) {
    let mut buf = vec![0u8; BUF];
    let mut out = vec![0u8; BUF];
    loop {
        let n = match r.tun.recv(&mut buf).await {
            Ok(n) => n,
            Err(e) => {
                warn!("tunnel device {}: {e}", r.tun.name());
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(IpAddr::V4(dst)) = Tunn::dst_address(&buf[..n]) else {
            continue;
        };
        let Some(peer) = r.peers.lock().ok().and_then(|p| p.by_addr(dst)) else {
            continue;
        };
        let Some(to) = peer.endpoint() else { continue };
        let mut tunn = peer.tunn.lock().await;
        if let TunnResult::WriteToNetwork(p) = tunn.encapsulate(&buf[..n], &mut out) {
            r.send(p, to).await;
        }
    }
}

/// Sessions' timers (rekeying, keepalives, handshake retries), the handshake rate limit, and
/// expired leases.
async fn timers(r: Arc<Running>) {
    let mut out = vec![0u8; BUF];
    let mut tick = tokio::time::interval(TIMER_TICK);
    let mut last_reset = Instant::now();
    loop {
        tick.tick().await;
        if last_reset.elapsed() >= Duration::from_secs(1) {
            r.limiter.reset_count();
            last_reset = Instant::now();
        }
        let (peers, gone) = match r.peers.lock() {
            Ok(mut p) => {
                let gone = p.expire(Instant::now());
                (p.all(), gone)
            }
            Err(_) => return,
        };
        for p in gone {
            debug!(
                "tunnel lease of {} (uplink {}) expired",
                p.addr,
                braid_proto::logsafe::escaped(&p.uplink)
            );
        }
        for p in peers {
            let Some(to) = p.endpoint() else { continue };
            let mut tunn = p.tunn.lock().await;
            if let TunnResult::WriteToNetwork(pkt) = tunn.update_timers(&mut out) {
                r.send(pkt, to).await;
            }
        }
    }
}
