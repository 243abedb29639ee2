//! The kernel's WireGuard, configured over its generic-netlink family `wireguard`
//! (`wg set DEV private-key … listen-port … peer KEY endpoint … allowed-ips …`).
//!
//! ```text
//!   Wireguard ──► genetlink ──► NETLINK_GENERIC ──► wireguard (version 1)
//!      ├─ available()       the family resolves: the kernel has the module
//!      └─ set_device(cfg)   WG_CMD_SET_DEVICE with the device's key, port, fwmark and peers
//!   Rtnl::add_wireguard_link / delete_link_by_name   `ip link add NAME type wireguard` / `del`
//! ```
//! braid uses the kernel's WireGuard where [`Wireguard::available`] says the family exists and
//! its userspace implementation over TUN otherwise. **Untested against a kernel**: the machine
//! braid is developed on has no WireGuard module, so only the message layout is tested (against
//! `include/uapi/linux/wireguard.h`), not the kernel's acceptance of it.

use std::net::{IpAddr, SocketAddr};

use genetlink::GenetlinkError;
use netlink_packet_core::{NLM_F_ACK, NLM_F_REQUEST};

use crate::mptcp::pm::{request_raw, NlaWriter, PmError, RawFamily, RawMessage};

/// `WG_GENL_NAME`.
pub const FAMILY_NAME: &str = "wireguard";
const FAMILY_VERSION: u8 = 1;
/// `WG_CMD_SET_DEVICE`.
const CMD_SET_DEVICE: u8 = 1;

/// `WGDEVICE_A_*`.
mod device_attr {
    pub const IFNAME: u16 = 2;
    pub const PRIVATE_KEY: u16 = 3;
    pub const FLAGS: u16 = 5;
    pub const LISTEN_PORT: u16 = 6;
    pub const FWMARK: u16 = 7;
    pub const PEERS: u16 = 8;
}
/// `WGDEVICE_F_REPLACE_PEERS`.
const DEVICE_F_REPLACE_PEERS: u32 = 1;
/// `WGPEER_A_*`.
mod peer_attr {
    pub const PUBLIC_KEY: u16 = 1;
    pub const PRESHARED_KEY: u16 = 2;
    pub const FLAGS: u16 = 3;
    pub const ENDPOINT: u16 = 4;
    pub const PERSISTENT_KEEPALIVE_INTERVAL: u16 = 5;
    pub const ALLOWEDIPS: u16 = 9;
}
/// `WGPEER_F_REPLACE_ALLOWEDIPS`.
const PEER_F_REPLACE_ALLOWEDIPS: u32 = 2;
/// `WGALLOWEDIP_A_*`.
mod allowedip_attr {
    pub const FAMILY: u16 = 1;
    pub const IPADDR: u16 = 2;
    pub const CIDR_MASK: u16 = 3;
}

/// One peer of a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    /// The peer's public key.
    pub public_key: [u8; 32],
    /// The pre-shared key mixed into the handshake.
    pub preshared_key: Option<[u8; 32]>,
    /// Where to send the peer's packets (until it roams).
    pub endpoint: Option<SocketAddr>,
    /// Seconds between keepalives when idle (0: none).
    pub keepalive_secs: u16,
    /// The inner addresses the peer may use, replacing any it had.
    pub allowed_ips: Vec<(IpAddr, u8)>,
}

/// A device's whole configuration; its peers replace the ones it had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceConfig {
    /// The device (`ip link add NAME type wireguard`).
    pub ifname: String,
    /// The device's private key.
    pub private_key: [u8; 32],
    /// UDP port to listen on (0: the kernel picks one).
    pub listen_port: u16,
    /// Mark of the outer packets, so a policy rule can send them out of one uplink.
    pub fwmark: u32,
    /// The peers.
    pub peers: Vec<PeerConfig>,
}

/// `struct sockaddr_in` / `sockaddr_in6` as the kernel reads `WGPEER_A_ENDPOINT`.
fn sockaddr(a: &SocketAddr) -> Vec<u8> {
    match a {
        SocketAddr::V4(v4) => {
            let mut b = vec![0u8; 16];
            b[0..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
            b[2..4].copy_from_slice(&v4.port().to_be_bytes());
            b[4..8].copy_from_slice(&v4.ip().octets());
            b
        }
        SocketAddr::V6(v6) => {
            let mut b = vec![0u8; 28];
            b[0..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
            b[2..4].copy_from_slice(&v6.port().to_be_bytes());
            b[4..8].copy_from_slice(&v6.flowinfo().to_be_bytes());
            b[8..24].copy_from_slice(&v6.ip().octets());
            b[24..28].copy_from_slice(&v6.scope_id().to_ne_bytes());
            b
        }
    }
}

fn allowed_ip(ip: &IpAddr, cidr: u8) -> NlaWriter {
    let mut w = NlaWriter::default();
    let (family, bytes) = match ip {
        IpAddr::V4(a) => (libc::AF_INET as u16, a.octets().to_vec()),
        IpAddr::V6(a) => (libc::AF_INET6 as u16, a.octets().to_vec()),
    };
    w.bytes(allowedip_attr::FAMILY, &family.to_ne_bytes());
    w.bytes(allowedip_attr::IPADDR, &bytes);
    w.bytes(allowedip_attr::CIDR_MASK, &[cidr]);
    w
}

fn peer(p: &PeerConfig) -> NlaWriter {
    let mut w = NlaWriter::default();
    w.bytes(peer_attr::PUBLIC_KEY, &p.public_key);
    if let Some(psk) = &p.preshared_key {
        w.bytes(peer_attr::PRESHARED_KEY, psk);
    }
    w.u32(peer_attr::FLAGS, PEER_F_REPLACE_ALLOWEDIPS);
    if let Some(e) = &p.endpoint {
        w.bytes(peer_attr::ENDPOINT, &sockaddr(e));
    }
    w.bytes(
        peer_attr::PERSISTENT_KEEPALIVE_INTERVAL,
        &p.keepalive_secs.to_ne_bytes(),
    );
    let mut ips = NlaWriter::default();
    for (i, (ip, cidr)) in p.allowed_ips.iter().enumerate() {
        ips.nested(i as u16, allowed_ip(ip, *cidr));
    }
    w.nested(peer_attr::ALLOWEDIPS, ips);
    w
}

/// The attributes of `WG_CMD_SET_DEVICE` for `cfg` (peers replaced).
pub fn encode_set_device(cfg: &DeviceConfig) -> Vec<u8> {
    let mut w = NlaWriter::default();
    let mut name = cfg.ifname.as_bytes().to_vec();
    name.push(0);
    w.bytes(device_attr::IFNAME, &name);
    w.bytes(device_attr::PRIVATE_KEY, &cfg.private_key);
    w.u32(device_attr::FLAGS, DEVICE_F_REPLACE_PEERS);
    w.bytes(device_attr::LISTEN_PORT, &cfg.listen_port.to_ne_bytes());
    w.u32(device_attr::FWMARK, cfg.fwmark);
    let mut peers = NlaWriter::default();
    for (i, p) in cfg.peers.iter().enumerate() {
        peers.nested(i as u16, peer(p));
    }
    w.nested(device_attr::PEERS, peers);
    w.into_bytes()
}

/// The `wireguard` family, version 1.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct WgFamily;

impl RawFamily for WgFamily {
    const NAME: &'static str = FAMILY_NAME;
    const VERSION: u8 = FAMILY_VERSION;
}

/// A connection to the kernel's `wireguard` family.
#[derive(Clone, Debug)]
pub struct Wireguard {
    handle: genetlink::GenetlinkHandle,
}

impl Wireguard {
    /// Opens the family; `Ok(None)` when the kernel has no WireGuard (the family does not
    /// resolve), which is the cue for the userspace tunnel. Must run inside a tokio runtime.
    pub async fn connect() -> Result<Option<Wireguard>, PmError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| PmError::NoRuntime)?;
        let (conn, handle, _) = genetlink::new_connection().map_err(PmError::Connect)?;
        runtime.spawn(conn);
        match handle.resolve_family::<RawMessage<WgFamily>>().await {
            Ok(_) => Ok(Some(Wireguard { handle })),
            Err(GenetlinkError::NetlinkError(_)) => Ok(None),
            Err(_) => Err(PmError::ConnectionClosed),
        }
    }

    /// Configures a device (`wg setconf`). The kernel's errno is kept.
    pub async fn set_device(&self, cfg: &DeviceConfig) -> Result<(), PmError> {
        let mut nlas = NlaWriter::default();
        nlas.raw(&encode_set_device(cfg));
        let msg = RawMessage::<WgFamily>::new(CMD_SET_DEVICE, nlas);
        request_raw(&self.handle, msg, NLM_F_REQUEST | NLM_F_ACK, || {
            format!("wg set {} (WG_CMD_SET_DEVICE)", cfg.ifname)
        })
        .await
        .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mptcp::pm::parse_nlas;

    fn cfg() -> DeviceConfig {
        DeviceConfig {
            ifname: "braid-t102".into(),
            private_key: [1; 32],
            listen_port: 0,
            fwmark: 0x212,
            peers: vec![PeerConfig {
                public_key: [2; 32],
                preshared_key: Some([3; 32]),
                endpoint: Some("10.200.0.1:8389".parse().unwrap()),
                keepalive_secs: 5,
                allowed_ips: vec![("10.200.0.1".parse().unwrap(), 32)],
            }],
        }
    }

    #[test]
    fn set_device_carries_name_key_port_fwmark_and_one_nested_peer() {
        let bytes = encode_set_device(&cfg());
        let top = parse_nlas(&bytes).unwrap();
        let kinds: Vec<u16> = top.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            kinds,
            [
                device_attr::IFNAME,
                device_attr::PRIVATE_KEY,
                device_attr::FLAGS,
                device_attr::LISTEN_PORT,
                device_attr::FWMARK,
                device_attr::PEERS
            ]
        );
        assert_eq!(top[0].1, b"braid-t102\0");
        assert_eq!(top[4].1, 0x212u32.to_ne_bytes());
        let peers = parse_nlas(top[5].1).unwrap();
        assert_eq!(peers.len(), 1);
        let p = parse_nlas(peers[0].1).unwrap();
        let get = |k: u16| p.iter().find(|(kind, _)| *kind == k).map(|(_, v)| *v);
        assert_eq!(get(peer_attr::PUBLIC_KEY), Some(&[2u8; 32][..]));
        assert_eq!(get(peer_attr::PRESHARED_KEY), Some(&[3u8; 32][..]));
        let ep = get(peer_attr::ENDPOINT).unwrap();
        assert_eq!(ep.len(), 16);
        assert_eq!(&ep[2..4], &8389u16.to_be_bytes());
        assert_eq!(&ep[4..8], &[10, 200, 0, 1]);
        assert_eq!(
            get(peer_attr::PERSISTENT_KEEPALIVE_INTERVAL),
            Some(&5u16.to_ne_bytes()[..])
        );
        let ips = parse_nlas(get(peer_attr::ALLOWEDIPS).unwrap()).unwrap();
        let ip = parse_nlas(ips[0].1).unwrap();
        assert_eq!(ip[1].1, &[10, 200, 0, 1]);
        assert_eq!(ip[2].1, &[32]);
    }

    #[test]
    fn ipv6_endpoint_is_a_28_byte_sockaddr_in6() {
        let b = sockaddr(&"[2001:db8::1]:51820".parse().unwrap());
        assert_eq!(b.len(), 28);
        assert_eq!(&b[2..4], &51820u16.to_be_bytes());
        assert_eq!(b[8], 0x20);
    }
}
