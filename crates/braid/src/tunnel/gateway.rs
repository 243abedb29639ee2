//! The gateway's end of one uplink's tunnel: lease an address, make the TUN device, and pump
//! packets between it and a UDP socket that leaves on the uplink itself.
//!
//! ```text
//!  register: plain TCP over the uplink ─► control Tunnel{key} ─► grant {relay key, address, port}
//!  kernel: subflow from 10.255.x.y ─► rule ─► table ─► dev braid-tNNN ─► encapsulate ─► UDP
//!      UDP bound to the uplink's address and device ─► relay:port      (outer packets)
//!  UDP from the relay ─► decapsulate ─► inner::from_relay? ─► TUN ─► kernel
//! ```
//! The task reports its [`State`]; dropping the [`Handle`] stops it and closes the device, which
//! the kernel then removes with its address (routes, rule and endpoint belong to the uplink
//! plan). The lease is renewed every third of its time over the same kind of control stream;
//! when the relay answers with another key or address (it restarted), the session starts over.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use braid_proto::control::{ControlRequest, ControlResponse, TunnelGrant};
use braid_proto::tunnel::{inner, mtu};
use braid_sys::link::IfName;
use braid_sys::tun::Tun;
use tokio::net::UdpSocket;
use tokio::sync::watch;

use super::{keys, BUF, KEEPALIVE_SECS};
use crate::gateway::dialer::Dialer;

/// How long the first handshake may take before UDP is taken to be blocked (WireGuard resends
/// its initiation after 5 s, so two have gone out by then).
pub const HANDSHAKE_LIMIT: Duration = Duration::from_secs(6);
/// A tunnel that has heard nothing from the relay for this long is lost (keepalives come every
/// [`KEEPALIVE_SECS`]).
const SILENCE_LIMIT: Duration = Duration::from_secs(20);
/// Timers of the session run this often.
const TIMER_TICK: Duration = Duration::from_millis(250);
/// How long registering may take.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(5);

/// What one uplink's tunnel needs.
#[derive(Clone)]
pub struct Spec {
    /// The uplink's name.
    pub uplink: String,
    /// The uplink's interface: outer packets leave on it.
    pub iface: IfName,
    /// The uplink's address: the outer packets' source.
    pub src: IpAddr,
    /// The TUN device's name.
    pub device: String,
    /// The relay as the gateway dials it.
    pub relay: SocketAddr,
    /// Opens the registration stream.
    pub dialer: Arc<Dialer>,
    /// WireGuard's pre-shared key.
    pub psk: [u8; 32],
    /// This gateway's tunnel key pair.
    pub secret: StaticSecret,
    /// Its public half.
    pub public: PublicKey,
}

/// Where a tunnel is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Registering, making the device, or waiting for the first handshake.
    Starting,
    /// The handshake completed: subflows may use `addr` on device `ifindex`.
    Up {
        /// The device.
        device: String,
        /// Its index.
        ifindex: u32,
        /// The leased address.
        addr: Ipv4Addr,
        /// From the first initiation to the completed handshake.
        handshake_ms: u64,
    },
    /// It cannot work: why, with the fix.
    Failed(String),
}

/// A running tunnel; dropping it stops the tunnel and removes its device.
pub struct Handle {
    /// Its state.
    pub state: watch::Receiver<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How a session ended.
enum End {
    /// Start over at once (the relay restarted, or went silent): why.
    Restart(String),
    /// Something that may pass (the relay cannot be reached over TCP either: the uplink is
    /// down, which its health says): try again after [`RETRY`].
    Later(String),
    /// The tunnel cannot work on this uplink (UDP is blocked): why, with the fix.
    Failed(String),
}

/// Pause before a session that ended with [`End::Later`] starts again.
const RETRY: Duration = Duration::from_secs(2);

/// Starts the tunnel of `spec`.
pub fn spawn(spec: Spec) -> Handle {
    let (tx, state) = watch::channel(State::Starting);
    let task = tokio::spawn(async move {
        loop {
            let end = session(&spec, &tx).await;
            let _ = tx.send(State::Starting);
            match end {
                End::Restart(why) => {
                    tracing::info!("uplink {}: {why}; starting the tunnel over", spec.uplink)
                }
                End::Later(why) => {
                    tracing::debug!("uplink {}: tunnel: {why}; trying again", spec.uplink);
                    tokio::time::sleep(RETRY).await;
                }
                End::Failed(why) => {
                    let _ = tx.send(State::Failed(why));
                    return;
                }
            }
        }
    });
    Handle { state, task }
}

/// Why a lease was not had.
#[derive(Debug)]
pub struct NoLease {
    /// The relay answered and refused (or answered nonsense): asking again will not help.
    pub refused: bool,
    /// What happened, with the fix where there is one.
    pub why: String,
}

impl std::fmt::Display for NoLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.why)
    }
}

/// Asks the relay for a lease over plain TCP on the uplink (which works even where MPTCP
/// options are stripped).
pub async fn register(spec: &Spec) -> Result<TunnelGrant, NoLease> {
    let transient = |why: String| NoLease {
        refused: false,
        why,
    };
    let refused = |why: String| NoLease { refused: true, why };
    let req = ControlRequest::Tunnel {
        uplink: spec.uplink.clone(),
        public_key: keys::encode(&spec.public),
        relay: spec.relay.to_string(),
    };
    let asked = async {
        let s = spec
            .dialer
            .open_probe(spec.src, &spec.iface, REGISTER_TIMEOUT)
            .await
            .map_err(|e| format!("cannot reach the relay over {}: {e}", spec.iface))?;
        let mut c = crate::control::Connection::new(s);
        c.request::<_, ControlResponse>(&req)
            .await
            .map_err(|e| e.to_string())
    };
    match tokio::time::timeout(REGISTER_TIMEOUT, asked).await {
        Err(_) => Err(transient(format!(
            "the relay did not answer the tunnel request within {REGISTER_TIMEOUT:?}"
        ))),
        Ok(Err(e)) => Err(transient(format!(
            "asking the relay for a tunnel failed: {e}"
        ))),
        Ok(Ok(ControlResponse::Tunnel(g))) => Ok(g),
        Ok(Ok(ControlResponse::Error { message })) => {
            Err(refused(format!("the relay refused a tunnel: {message}")))
        }
        Ok(Ok(other)) => Err(refused(format!(
            "the relay answered the tunnel request with {other:?}; fix: run the same braid version on both ends"
        ))),
    }
}

/// The outer UDP socket: bound to the uplink's address and device, connected to the relay.
fn outer_socket(spec: &Spec, port: u16) -> std::io::Result<UdpSocket> {
    let to = SocketAddr::new(spec.relay.ip(), port);
    let sock = super::udp_socket(to)?;
    sock.bind_device(Some(spec.iface.as_str().as_bytes()))?;
    sock.bind(&SocketAddr::new(spec.src, 0).into())?;
    sock.connect(&to.into())?;
    UdpSocket::from_std(sock.into())
}

/// One session: lease, device, pump, until it ends.
async fn session(spec: &Spec, tx: &watch::Sender<State>) -> End {
    super::log_backend().await;
    let grant = match register(spec).await {
        Ok(g) => g,
        Err(e) if e.refused => return End::Failed(e.why),
        Err(e) => return End::Later(e.why),
    };
    match start(spec, grant).await {
        Ok(pump) => pump.run(tx).await,
        Err(e) => End::Failed(e),
    }
}

/// Makes the device and the socket for `grant`.
async fn start(spec: &Spec, grant: TunnelGrant) -> Result<Pump<'_>, String> {
    let addr: Ipv4Addr = grant
        .address
        .parse()
        .map_err(|_| format!("the relay leased {:?}, not an IPv4 address", grant.address))?;
    let server = keys::decode(&grant.server_key)
        .ok_or("the relay's tunnel key is not base64 of 32 bytes")?;
    let tun = Tun::open(&spec.device, mtu::tunnel_mtu(spec.relay.is_ipv6()))
        .map_err(|e| e.to_string())?;
    let rtnl = braid_sys::netlink::Rtnl::connect().map_err(|e| e.to_string())?;
    rtnl.ensure_address(
        tun.ifindex(),
        braid_sys::address::IfAddr {
            addr: IpAddr::V4(addr),
            prefix_len: 32,
        },
    )
    .await
    .map_err(|e| e.to_string())?;
    let udp = outer_socket(spec, grant.port).map_err(|e| {
        format!(
            "cannot open the tunnel's UDP socket on {} ({}): {e}",
            spec.iface, spec.src
        )
    })?;
    let tunn = Tunn::new(
        spec.secret.clone(),
        server,
        Some(spec.psk),
        Some(KEEPALIVE_SECS),
        0,
        None,
    );
    Ok(Pump {
        spec,
        tun,
        udp,
        tunn,
        addr,
        grant,
    })
}

struct Pump<'a> {
    spec: &'a Spec,
    tun: Tun,
    udp: UdpSocket,
    tunn: Tunn,
    addr: Ipv4Addr,
    grant: TunnelGrant,
}

impl Pump<'_> {
    async fn run(mut self, tx: &watch::Sender<State>) -> End {
        let mut from_tun = vec![0u8; BUF];
        let mut from_udp = vec![0u8; BUF];
        let mut out = vec![0u8; BUF];
        let started = Instant::now();
        let mut up = false;
        let mut last_rx = Instant::now();
        if let TunnResult::WriteToNetwork(p) =
            self.tunn.format_handshake_initiation(&mut out, false)
        {
            let _ = self.udp.send(p).await;
        }
        let mut tick = tokio::time::interval(TIMER_TICK);
        let renew_every = Duration::from_secs(u64::from(self.grant.lease_secs / 3).max(10));
        let mut renew_at = tokio::time::Instant::now() + renew_every;
        let mut renewal: Option<tokio::task::JoinHandle<Result<TunnelGrant, NoLease>>> = None;
        loop {
            tokio::select! {
                r = self.tun.recv(&mut from_tun) => {
                    let Ok(n) = r else { continue };
                    if let TunnResult::WriteToNetwork(p) = self.tunn.encapsulate(&from_tun[..n], &mut out) {
                        let _ = self.udp.send(p).await;
                    }
                }
                r = self.udp.recv(&mut from_udp) => {
                    // ECONNREFUSED (an ICMP port unreachable) and the like: the relay will say.
                    let Ok(n) = r else { continue };
                    last_rx = Instant::now();
                    self.decapsulate(&from_udp[..n], &mut out).await;
                }
                _ = tick.tick() => {
                    if let TunnResult::WriteToNetwork(p) = self.tunn.update_timers(&mut out) {
                        let _ = self.udp.send(p).await;
                    }
                    let handshaken = self.tunn.time_since_last_handshake().is_some();
                    if handshaken && !up {
                        up = true;
                        let _ = tx.send(State::Up {
                            device: self.tun.name().to_string(),
                            ifindex: self.tun.ifindex(),
                            addr: self.addr,
                            handshake_ms: started.elapsed().as_millis() as u64,
                        });
                    }
                    if !up && started.elapsed() > HANDSHAKE_LIMIT {
                        return End::Failed(format!(
                            "UDP to the relay's tunnel port {}:{} gets no WireGuard answer over {} within {} s (blocked on this uplink, or by the VPS's firewall); fix: allow UDP {} to the VPS (provider firewall and ufw/nftables there)",
                            self.spec.relay.ip(), self.grant.port, self.spec.iface, HANDSHAKE_LIMIT.as_secs(), self.grant.port
                        ));
                    }
                    if up && last_rx.elapsed() > SILENCE_LIMIT {
                        // The relay restarted (new key), the uplink is down, or UDP is blocked
                        // now: a fresh lease and handshake tell which.
                        return End::Restart(format!(
                            "the tunnel over {} went silent (nothing from the relay for {} s)",
                            self.spec.iface, SILENCE_LIMIT.as_secs()
                        ));
                    }
                }
                _ = tokio::time::sleep_until(renew_at), if renewal.is_none() => {
                    let spec = self.spec.clone();
                    renewal = Some(tokio::spawn(async move { register(&spec).await }));
                }
                Some(done) = futures::future::OptionFuture::from(renewal.as_mut()), if renewal.is_some() => {
                    renewal = None;
                    renew_at = tokio::time::Instant::now() + renew_every;
                    match done {
                        Ok(Ok(g)) if g.address != self.grant.address || g.server_key != self.grant.server_key => {
                            return End::Restart("the relay gave the tunnel a new key or address (it restarted)".into());
                        }
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => tracing::debug!("uplink {}: renewing the tunnel lease: {e}", self.spec.uplink),
                        Err(_) => {}
                    }
                }
            }
        }
    }

    async fn decapsulate(&mut self, datagram: &[u8], out: &mut [u8]) {
        match self.tunn.decapsulate(None, datagram, out) {
            TunnResult::WriteToNetwork(p) => {
                let _ = self.udp.send(p).await;
                while let TunnResult::WriteToNetwork(p) = self.tunn.decapsulate(None, &[], out) {
                    let _ = self.udp.send(p).await;
                }
            }
            TunnResult::WriteToTunnelV4(p, _) => {
                let allowed = inner::parse(p)
                    .is_some_and(|i| inner::from_relay(&i, self.spec.relay, IpAddr::V4(self.addr)));
                if allowed {
                    let _ = self.tun.send(p).await;
                }
            }
            _ => {}
        }
    }
}
