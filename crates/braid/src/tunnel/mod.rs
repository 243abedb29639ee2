//! The tunnel for hostile paths: an uplink whose middlebox strips or resets MPTCP options still
//! bonds, through an encrypted UDP (WireGuard) tunnel to the relay that braid sets up by itself.
//!
//! ```text
//!  gateway                                                       relay (VPS)
//!  kernel MPTCP ─ subflow from 10.255.0.2 ─► braid-t102 (TUN)    one UDP port, one TUN
//!                                            │ gateway.rs         │ relay.rs, peers.rs
//!                    WireGuard over UDP, leaving on the uplink ══►│──► kernel: MP_JOIN from 10.255.0.2
//! ```
//! - [`keys`]: each end's own key pair; the gateway registers its public key over the
//!   authenticated control channel, so pairing stays one `ss://` URI.
//! - [`gateway`]: one uplink's end (lease, TUN device, UDP socket bound to the uplink, pump).
//! - [`relay`] and [`peers`]: the relay's end, one port for every gateway, a bounded, expiring
//!   lease per gateway key.
//! - [`check`] and [`evidence`]: is MPTCP passing an uplink's direct path? The decision itself
//!   is sans-IO in `braid_proto::tunnel::decide`; the uplink manager drives it.
//!
//! The WireGuard protocol is boringtun's `noise::Tunn` (userspace, over TUN). The kernel's own
//! WireGuard (`braid_sys::wireguard`) is detected and named in the log, but not used yet: see
//! the README.

pub mod check;
pub mod evidence;
pub mod gateway;
pub mod keys;
pub mod peers;
pub mod relay;

/// Buffer size for one packet, with room for WireGuard's overhead around the largest one.
pub const BUF: usize = 65_535 + 64;
/// Seconds between keepalives on an idle tunnel, both ways: NAT mappings stay open and each end
/// notices a dead tunnel.
pub const KEEPALIVE_SECS: u16 = 5;

/// Socket buffers of the tunnel's UDP sockets: a burst of full-size datagrams at a few Gbit/s
/// must not overflow the kernel's default (about 200 KiB) while the pump encrypts.
pub const UDP_BUFFER: usize = 4 * 1024 * 1024;

/// A non-blocking UDP socket for `family_of`, with [`UDP_BUFFER`]-sized buffers (the kernel caps
/// them at `net.core.{r,w}mem_max`).
pub fn udp_socket(family_of: std::net::SocketAddr) -> std::io::Result<socket2::Socket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = Socket::new(
        Domain::for_address(family_of),
        Type::DGRAM,
        Some(Protocol::UDP),
    )?;
    let _ = sock.set_recv_buffer_size(UDP_BUFFER);
    let _ = sock.set_send_buffer_size(UDP_BUFFER);
    sock.set_nonblocking(true)?;
    Ok(sock)
}

/// Says once per process which WireGuard carries the tunnels, and whether the kernel has its
/// own (which braid does not use yet).
pub async fn log_backend() {
    use std::sync::atomic::{AtomicBool, Ordering};
    static SAID: AtomicBool = AtomicBool::new(false);
    if SAID.swap(true, Ordering::Relaxed) {
        return;
    }
    match braid_sys::wireguard::Wireguard::connect().await {
        Ok(Some(_)) => tracing::info!("tunnels use braid's userspace WireGuard over TUN; the kernel has WireGuard too, which braid does not use yet"),
        _ => tracing::info!("tunnels use braid's userspace WireGuard over TUN (this kernel has no WireGuard module)"),
    }
}
