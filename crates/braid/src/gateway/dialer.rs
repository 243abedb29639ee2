//! Opening Shadowsocks-2022 streams to the relay over MPTCP (with TFO when it was proven to work,
//! and the configured congestion control).

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Once};
use std::time::Duration;

use braid_sys::mptcp::info::{mptcp_state, MptcpState};
use braid_sys::socket::stream_socket;
use shadowsocks::config::{ServerConfig as SsServerConfig, ServerType};
use shadowsocks::context::{Context, SharedContext};
use shadowsocks::relay::socks5::Address;
use shadowsocks::relay::tcprelay::proxy_stream::ProxyClientStream;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::{info, warn};

use super::pool::{Pooled, WarmPool};
use crate::config::gateway::GatewayConfig;
use crate::shared_stream::SharedStream;

/// A stream to the relay (its socket shared with the status registry: one descriptor).
pub type RelayStream = ProxyClientStream<SharedStream>;

/// How long a fresh LAN connection may stay silent before the request header goes out alone.
/// Sending the first payload with the header saves a packet, and with TFO it rides in the SYN;
/// server-speaks-first protocols (SSH, SMTP) wait at most this long.
pub const FIRST_PAYLOAD_WAIT: Duration = Duration::from_millis(50);

/// The local address of a relay connection, as the relay names it in its log: what ties a
/// line of the gateway's log to the relay's.
pub fn source_of(socket: &TcpStream) -> String {
    socket
        .local_addr()
        .map(|a| braid_sys::socket::normalize(a).to_string())
        .unwrap_or_else(|_| "an unknown address".into())
}

/// Opens relay streams. Shared by every listener.
pub struct Dialer {
    relay: SocketAddr,
    ss: SsServerConfig,
    ctx: SharedContext,
    mptcp: bool,
    connect_timeout: Duration,
    tfo: AtomicBool,
    mptcp_warned: Once,
    fallback_seen: AtomicBool,
    tfo_reason: std::sync::RwLock<String>,
    source: std::sync::RwLock<Option<std::net::IpAddr>>,
    congestion: braid_proto::congestion::Decision,
    /// The warm pool LAN connections take from first (the gateway attaches it; doctor and
    /// speedtest dial without one).
    pool: std::sync::OnceLock<Arc<WarmPool>>,
}

impl Dialer {
    /// A dialer for `relay`, the resolved server address.
    pub fn new(cfg: &GatewayConfig, relay: SocketAddr) -> io::Result<Arc<Dialer>> {
        let ss = SsServerConfig::new(relay, cfg.key.as_base64(), cfg.method.cipher())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{e:?}")))?;
        Ok(Arc::new(Dialer {
            relay,
            ss,
            ctx: Arc::new(Context::new(ServerType::Local)),
            mptcp: cfg.mptcp,
            connect_timeout: cfg.connect_timeout,
            tfo: AtomicBool::new(false),
            mptcp_warned: Once::new(),
            fallback_seen: AtomicBool::new(false),
            tfo_reason: std::sync::RwLock::new("not decided yet".into()),
            source: std::sync::RwLock::new(None),
            congestion: crate::congestion::decide(
                &cfg.congestion,
                &braid_sys::sysctl::Procfs::default(),
            ),
            pool: std::sync::OnceLock::new(),
        }))
    }

    /// Lets LAN connections ([`Dialer::open_for`], [`Dialer::open_lan`]) take idle relay
    /// connections from `pool`. Once only; a second pool is ignored.
    pub fn attach_pool(&self, pool: Arc<WarmPool>) {
        let _ = self.pool.set(pool);
    }

    /// The warm pool, when one is attached.
    pub fn pool(&self) -> Option<&Arc<WarmPool>> {
        self.pool.get()
    }

    /// A stream to `target` over `stream`, which has sent nothing yet.
    fn wrap(&self, stream: TcpStream, target: Address) -> RelayStream {
        ProxyClientStream::from_stream(
            self.ctx.clone(),
            SharedStream::new(stream),
            &self.ss,
            target,
        )
    }

    /// The congestion control of relay connections, and why.
    pub fn congestion(&self) -> &braid_proto::congestion::Decision {
        &self.congestion
    }

    /// The relay's address.
    pub fn relay(&self) -> SocketAddr {
        self.relay
    }

    /// Sets the source address of new relay connections, which picks the uplink that carries
    /// their first subflow (its `ip rule` selects its table). The uplink manager points it at a
    /// healthy uplink, so new connections never start on a dead one; `None` leaves the choice to
    /// the main routing table.
    pub fn set_source(&self, src: Option<std::net::IpAddr>) {
        if let Ok(mut s) = self.source.write() {
            *s = src;
        }
    }

    /// Opens a control stream for health probes: plain TCP (so it measures exactly one path),
    /// bound to the uplink's interface and address.
    pub async fn open_probe(
        &self,
        src: std::net::IpAddr,
        iface: &braid_sys::link::IfName,
        timeout: Duration,
    ) -> io::Result<RelayStream> {
        let (sock, _, _) = stream_socket(&self.relay, false)?;
        sock.bind_device(Some(iface.as_str().as_bytes()))?;
        sock.bind(&SocketAddr::new(src, 0).into())?;
        sock.set_tcp_nodelay(true)?;
        let socket = tokio::net::TcpSocket::from_std_stream(sock.into());
        let stream = match tokio::time::timeout(timeout, socket.connect(self.relay)).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "probe connect timed out",
                ))
            }
        };
        let target = Address::DomainNameAddress(
            braid_proto::control::CONTROL_HOST.into(),
            braid_proto::control::CONTROL_PORT,
        );
        Ok(self.wrap(stream, target))
    }

    /// Wraps a connected socket as a control stream to the relay (a check that makes its own
    /// socket, such as the tunnel's direct-path check).
    pub fn control_stream(&self, stream: TcpStream) -> RelayStream {
        let target = Address::DomainNameAddress(
            braid_proto::control::CONTROL_HOST.into(),
            braid_proto::control::CONTROL_PORT,
        );
        ProxyClientStream::from_stream(
            self.ctx.clone(),
            SharedStream::new(stream),
            &self.ss,
            target,
        )
    }

    /// Records the TFO decision and its reason, for status.
    pub fn set_tfo_decision(&self, on: bool, reason: &str) {
        self.set_tfo(on);
        if let Ok(mut r) = self.tfo_reason.write() {
            *r = reason.to_string();
        }
    }

    /// Why TFO is on or off.
    pub fn tfo_reason(&self) -> String {
        self.tfo_reason
            .read()
            .map(|r| r.clone())
            .unwrap_or_default()
    }

    /// Switches TFO on or off for new streams.
    pub fn set_tfo(&self, on: bool) {
        self.tfo.store(on, Ordering::Relaxed);
    }

    /// Whether new streams use TFO.
    pub fn tfo(&self) -> bool {
        self.tfo.load(Ordering::Relaxed)
    }

    /// Records what an established relay connection really is, and says so when connections
    /// start (or stop) falling back to plain TCP — the silent failure that leaves one uplink
    /// carrying everything.
    /// Returns true when the connection fell back.
    pub fn note_transport(&self, stream: &TcpStream) -> bool {
        match mptcp_state(stream) {
            MptcpState::Fallback => {
                if !self.fallback_seen.swap(true, Ordering::Relaxed) {
                    warn!(
                        "connections to the relay {} fell back to plain TCP: the relay does not speak MPTCP (no MPTCP kernel, or net.mptcp.enabled=0 there), or a middlebox strips the MPTCP option on the first path. Only one uplink carries traffic",
                        self.relay
                    );
                }
                true
            }
            MptcpState::Mptcp { subflows } => {
                if self.fallback_seen.swap(false, Ordering::Relaxed) {
                    info!("connections to the relay are MPTCP again ({subflows} subflow(s))");
                }
                false
            }
            MptcpState::Tcp => false,
        }
    }

    /// Connects a raw socket to the relay. With `tfo`, connect returns at once and the SYN
    /// leaves with the first write.
    pub async fn connect_raw(&self, tfo: bool) -> io::Result<TcpStream> {
        let (sock, _transport, why) = stream_socket(&self.relay, self.mptcp)?;
        if let Some(why) = why {
            self.mptcp_warned.call_once(|| {
                warn!("MPTCP UNAVAILABLE on this gateway, using plain TCP to the relay (no bonding): {why}");
            });
        }
        if tfo {
            braid_sys::tfo::set_connect_fastopen(&sock)?;
        }
        crate::congestion::apply(&sock, &self.congestion);
        // A relay that vanished is noticed by keepalive (MPTCP refuses TCP_USER_TIMEOUT).
        if let Err(e) = braid_sys::keepalive::apply(&sock, &crate::listener::LIVENESS) {
            tracing::debug!("keepalive toward the relay: {e}");
        }
        let src = self.source.read().ok().and_then(|s| *s);
        if let Some(src) = src.filter(|s| s.is_ipv4() == self.relay.is_ipv4()) {
            // The address may have just gone away (DHCP); then let the kernel choose.
            if sock.bind(&SocketAddr::new(src, 0).into()).is_err() {
                tracing::debug!(
                    "cannot bind the relay connection to {src}; using the kernel's choice"
                );
            }
        }
        sock.set_tcp_nodelay(true)?;
        let socket = tokio::net::TcpSocket::from_std_stream(sock.into());
        match tokio::time::timeout(self.connect_timeout, socket.connect(self.relay)).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "connecting to the relay {} timed out after {:?}",
                    self.relay, self.connect_timeout
                ),
            )),
        }
    }

    /// Sends a parked request on `stream` (`braid_proto::park`): the relay, a braid server,
    /// waits for the real target, and the other uplinks' subflows can join meanwhile.
    pub async fn park(&self, stream: TcpStream) -> io::Result<RelayStream> {
        let target = Address::DomainNameAddress(
            braid_proto::park::PARK_HOST.into(),
            braid_proto::park::PARK_PORT,
        );
        let mut r = self.wrap(stream, target);
        send_first(&mut r, &[]).await?;
        Ok(r)
    }

    /// Names `target` on a parked stream, with `first` (the LAN client's first bytes, possibly
    /// none) in the same chunk.
    async fn unpark(
        &self,
        mut r: RelayStream,
        target: &Address,
        first: &[u8],
    ) -> io::Result<RelayStream> {
        let mut second = Vec::with_capacity(target.serialized_len() + first.len());
        target.write_to_buf(&mut second);
        second.extend_from_slice(first);
        // Named by the relay connection: the relay logs the one whose target never arrived.
        let named = |e: io::Error, r: &RelayStream| {
            let source = source_of(r.get_ref());
            io::Error::new(e.kind(), format!("{e} (relay connection from {source})"))
        };
        r.write_all(&second).await.map_err(|e| named(e, &r))?;
        r.flush().await.map_err(|e| named(e, &r))?;
        Ok(r)
    }

    /// A pooled connection as a stream to `target`, `first` sent with its header (a raw one) or
    /// its second stage (a parked one).
    async fn use_pooled(
        &self,
        pooled: Pooled,
        target: Address,
        first: &[u8],
    ) -> io::Result<RelayStream> {
        match pooled {
            Pooled::Raw(stream) => {
                grow_rcvbuf(&stream);
                let mut r = self.wrap(stream, target);
                send_first(&mut r, first).await?;
                Ok(r)
            }
            Pooled::Parked(r) => {
                grow_rcvbuf(r.get_ref());
                self.unpark(*r, &target, first).await
            }
        }
    }

    /// Opens a stream to `target` through the relay. Nothing is sent yet: the caller's first
    /// write carries the request header.
    pub async fn open(&self, target: Address, tfo: bool) -> io::Result<RelayStream> {
        let stream = self.connect_raw(tfo).await?;
        Ok(self.wrap(stream, target))
    }

    /// Opens a stream for a LAN connection: on an idle connection of the warm pool when there is
    /// one, else on a new one (with TFO when it is on). Nothing of the LAN client's is sent yet
    /// (a parked connection has named its target).
    pub async fn open_lan(&self, target: Address) -> io::Result<RelayStream> {
        match self.pool().and_then(|p| p.take()) {
            Some(Pooled::Raw(stream)) => Ok(self.wrap(stream, target)),
            Some(Pooled::Parked(r)) => self.unpark(*r, &target, &[]).await,
            None => self.open(target, self.tfo()).await,
        }
    }

    /// Opens a stream for a LAN connection and sends the request header together with whatever
    /// the LAN client sent within [`FIRST_PAYLOAD_WAIT`]: at once on an idle connection of the
    /// warm pool, else on a new connection (the wait overlaps the connect, or with TFO the
    /// bytes ride in the SYN).
    pub async fn open_for<L: AsyncRead + Unpin>(
        &self,
        lan: &mut L,
        target: Address,
    ) -> io::Result<RelayStream> {
        let mut first = vec![0u8; 16 * 1024];
        if let Some(pooled) = self.pool().and_then(|p| p.take()) {
            let n = read_first(lan, &mut first).await?;
            return self.use_pooled(pooled, target, &first[..n]).await;
        }
        let tfo = self.tfo();
        let (n, remote) = if tfo {
            let n = read_first(lan, &mut first).await?;
            (n, self.open(target, true).await?)
        } else {
            let (n, remote) = tokio::join!(read_first(lan, &mut first), self.open(target, false));
            (n?, remote?)
        };
        let mut remote = remote;
        send_first(&mut remote, &first[..n]).await?;
        Ok(remote)
    }
}

/// Sends the request header with `first` (the LAN client's first bytes, possibly none).
async fn send_first(remote: &mut RelayStream, first: &[u8]) -> io::Result<()> {
    if first.is_empty() {
        // An empty first write makes the client stream send the header with padding.
        let _ = remote.write(&[]).await?;
    } else {
        remote.write_all(first).await?;
    }
    remote.flush().await
}

/// Waits up to [`FIRST_PAYLOAD_WAIT`] for the LAN client's first bytes and sends them with the
/// request header on a stream that is already open (SOCKS5 opens it before replying).
pub async fn send_first_from<L: AsyncRead + Unpin>(
    lan: &mut L,
    remote: &mut RelayStream,
) -> io::Result<()> {
    let mut first = vec![0u8; 16 * 1024];
    let n = read_first(lan, &mut first).await?;
    send_first(remote, &first[..n]).await
}

/// Relays a LAN connection over its relay stream, listed in the status registry while it
/// lasts, and counts a fallback to plain TCP.
pub async fn carry<L: AsyncRead + tokio::io::AsyncWrite + Unpin>(
    dialer: &Dialer,
    registry: &Arc<crate::status::registry::Registry>,
    label: String,
    lan: &mut L,
    remote: &mut RelayStream,
    idle: Duration,
) -> (crate::relay::Moved, crate::relay::End) {
    let guard = registry.add(label, remote.get_ref().handle());
    let r = crate::relay::relay_until(lan, remote, idle, guard.stopped()).await;
    drop(guard);
    if dialer.note_transport(remote.get_ref()) {
        registry.fallback_total.fetch_add(1, Ordering::Relaxed);
    }
    r
}

async fn read_first<L: AsyncRead + Unpin>(lan: &mut L, buf: &mut [u8]) -> io::Result<usize> {
    match tokio::time::timeout(FIRST_PAYLOAD_WAIT, lan.read(buf)).await {
        Ok(r) => r,
        Err(_) => Ok(0),
    }
}

/// A pooled connection's receive buffer, grown when a LAN connection takes it. Its subflows are
/// all joined, so the relay's scheduler spreads the answer over every uplink from the first
/// packet and the slower uplink's part arrives late; with the kernel's starting buffer (and a
/// window that grows once per round trip of the *slowest* subflow) the faster uplink stalls
/// behind it. Measured (bench/fetch.sh, pool on): 1 MB 277 → 223 ms, 100 kB 95 → 67 ms; fresh
/// connections gained nothing (their other subflows join later), so only taken ones are grown.
fn grow_rcvbuf<S: std::os::fd::AsFd>(sock: &S) {
    crate::relay::grow_idled_rcvbuf(sock, "warm pool: a taken connection");
}
