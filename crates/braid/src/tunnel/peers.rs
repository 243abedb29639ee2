//! The relay's tunnel peers: one per gateway key, each with its own WireGuard session and an
//! address leased from the tunnel network.
//!
//! Bounded and expiring: at most [`MAX_PEERS`] keys are admitted, and a key that neither renews
//! its lease nor sends an authenticated packet for the lease time is dropped. A gateway can only
//! ever touch its own entry (the key is its identity; a session needs its private key), so one
//! gateway can neither read nor disturb another's tunnel.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use boringtun::noise::Tunn;
use ipnet::Ipv4Net;

/// Most gateway keys admitted at once.
pub const MAX_PEERS: usize = 1024;
/// How long a lease lasts without renewal or traffic.
pub const LEASE: Duration = Duration::from_secs(600);

/// One admitted gateway key.
pub struct Peer {
    /// The gateway's public key.
    pub key: [u8; 32],
    /// Its address inside the tunnel.
    pub addr: Ipv4Addr,
    /// The relay address it dials: the only destination its packets may have.
    pub relay: SocketAddr,
    /// Its session index (boringtun's `index`, the receiver index's upper 24 bits).
    pub index: u32,
    /// The uplink name it gave, for logs.
    pub uplink: String,
    /// Its WireGuard session.
    pub tunn: tokio::sync::Mutex<Tunn>,
    /// Where its last authenticated packet came from (WireGuard's roaming), and to.
    pub endpoint: Mutex<Option<Endpoint>>,
    /// Milliseconds after the table's epoch of its last renewal or authenticated packet.
    seen_ms: AtomicU64,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("addr", &self.addr)
            .field("index", &self.index)
            .field("uplink", &self.uplink)
            .finish_non_exhaustive()
    }
}

/// Both ends of a gateway's outer packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    /// The gateway's outer address and port.
    pub gateway: SocketAddr,
    /// The relay address it wrote to: the source of the answers, so that a relay listening on
    /// a wildcard address on a multi-homed VPS answers from the address the gateway expects
    /// (`None` where the kernel did not say).
    pub local: Option<std::net::IpAddr>,
}

impl Peer {
    /// Its current outer addresses, if it has sent an authenticated packet.
    pub fn endpoint(&self) -> Option<Endpoint> {
        self.endpoint.lock().ok().and_then(|e| *e)
    }
}

/// Why a key was not admitted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AdmitError {
    /// Every lease is taken.
    #[error("the relay's tunnel table is full ({0} gateway keys); fix: wait for unused leases to expire (10 min), or widen `tunnel_net` in server.toml")]
    Full(usize),
}

/// Every admitted key, by key, address and session index.
pub struct Peers {
    net: Ipv4Net,
    epoch: Instant,
    by_key: HashMap<[u8; 32], Arc<Peer>>,
    by_addr: HashMap<Ipv4Addr, Arc<Peer>>,
    by_index: HashMap<u32, Arc<Peer>>,
    next_index: u32,
    max: usize,
}

impl Peers {
    /// An empty table leasing from `net`, whose first host address is the relay's own.
    pub fn new(net: Ipv4Net) -> Peers {
        let room = net.hosts().count().saturating_sub(1);
        Peers {
            net,
            epoch: Instant::now(),
            by_key: HashMap::new(),
            by_addr: HashMap::new(),
            by_index: HashMap::new(),
            next_index: 1,
            max: room.min(MAX_PEERS),
        }
    }

    /// The relay's own address in the tunnel network.
    pub fn server_addr(&self) -> Ipv4Addr {
        self.net.hosts().next().unwrap_or(self.net.addr())
    }

    fn now_ms(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_millis() as u64
    }

    /// Admits `key` (or renews it: same address, same session), making its session with
    /// `session(index)`.
    pub fn admit(
        &mut self,
        key: [u8; 32],
        relay: SocketAddr,
        uplink: &str,
        now: Instant,
        session: impl FnOnce(u32) -> Tunn,
    ) -> Result<Arc<Peer>, AdmitError> {
        if let Some(p) = self.by_key.get(&key) {
            p.seen_ms.store(self.now_ms(now), Ordering::Relaxed);
            if p.relay == relay {
                return Ok(p.clone());
            }
            // The gateway dials another address now: start over for this key.
            let old = p.clone();
            self.remove(&old);
        }
        self.expire(now);
        if self.by_key.len() >= self.max {
            return Err(AdmitError::Full(self.max));
        }
        let server = self.server_addr();
        let addr = self
            .net
            .hosts()
            .find(|a| *a != server && !self.by_addr.contains_key(a))
            .ok_or(AdmitError::Full(self.max))?;
        let mut index = self.next_index;
        while self.by_index.contains_key(&index) {
            index = (index + 1) & 0x00ff_ffff;
        }
        self.next_index = (index + 1) & 0x00ff_ffff;
        let peer = Arc::new(Peer {
            key,
            addr,
            relay,
            index,
            uplink: uplink.to_string(),
            tunn: tokio::sync::Mutex::new(session(index)),
            endpoint: Mutex::new(None),
            seen_ms: AtomicU64::new(self.now_ms(now)),
        });
        self.by_key.insert(key, peer.clone());
        self.by_addr.insert(addr, peer.clone());
        self.by_index.insert(index, peer.clone());
        Ok(peer)
    }

    fn remove(&mut self, p: &Arc<Peer>) {
        self.by_key.remove(&p.key);
        self.by_addr.remove(&p.addr);
        self.by_index.remove(&p.index);
    }

    /// Notes an authenticated packet from `p` (it keeps its lease).
    pub fn touch(&self, p: &Peer, now: Instant) {
        p.seen_ms.store(self.now_ms(now), Ordering::Relaxed);
    }

    /// Drops every key whose lease ran out; returns them.
    pub fn expire(&mut self, now: Instant) -> Vec<Arc<Peer>> {
        let limit = LEASE.as_millis() as u64;
        let now_ms = self.now_ms(now);
        let old: Vec<Arc<Peer>> = self
            .by_key
            .values()
            .filter(|p| now_ms.saturating_sub(p.seen_ms.load(Ordering::Relaxed)) > limit)
            .cloned()
            .collect();
        for p in &old {
            self.remove(p);
        }
        old
    }

    /// The peer holding `key`.
    pub fn by_key(&self, key: &[u8; 32]) -> Option<Arc<Peer>> {
        self.by_key.get(key).cloned()
    }

    /// The peer leasing `addr`.
    pub fn by_addr(&self, addr: Ipv4Addr) -> Option<Arc<Peer>> {
        self.by_addr.get(&addr).cloned()
    }

    /// The peer with session `index`.
    pub fn by_index(&self, index: u32) -> Option<Arc<Peer>> {
        self.by_index.get(&index).cloned()
    }

    /// Every peer.
    pub fn all(&self) -> Vec<Arc<Peer>> {
        self.by_key.values().cloned().collect()
    }

    /// Admitted keys.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// True when no key is admitted.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(index: u32) -> Tunn {
        let (a, _) = crate::tunnel::keys::generate().unwrap();
        let (_, b) = crate::tunnel::keys::generate().unwrap();
        Tunn::new(a, b, None, None, index, None)
    }

    const RELAY: &str = "10.200.0.1:8388";

    #[test]
    fn same_key_renews_the_same_lease_and_other_keys_get_other_addresses() {
        let mut p = Peers::new("10.255.0.0/16".parse().unwrap());
        let t = Instant::now();
        let r = RELAY.parse().unwrap();
        let a = p.admit([1; 32], r, "5g", t, session).unwrap();
        assert_eq!(p.server_addr(), Ipv4Addr::new(10, 255, 0, 1));
        assert_eq!(a.addr, Ipv4Addr::new(10, 255, 0, 2));
        let again = p.admit([1; 32], r, "5g", t, session).unwrap();
        assert!(Arc::ptr_eq(&a, &again));
        let b = p.admit([2; 32], r, "wifi", t, session).unwrap();
        assert_ne!(a.addr, b.addr);
        assert_ne!(a.index, b.index);
        assert!(p.by_index(b.index).is_some_and(|x| x.key == [2; 32]));
    }

    /// A gateway's session and the relay's, as `relay.rs` pairs them: the handshake initiation
    /// finds its peer by the key inside it, every later packet by its session index, and data
    /// decrypts only with the pre-shared key both derive from the SS2022 key.
    #[test]
    fn gateway_and_relay_sessions_pair_by_key_and_index_and_carry_a_subflow_packet() {
        use boringtun::noise::handshake::parse_handshake_anon;
        use boringtun::noise::{Packet, TunnResult};
        let (relay_secret, relay_public) = crate::tunnel::keys::generate().unwrap();
        let (gw_secret, gw_public) = crate::tunnel::keys::generate().unwrap();
        let (_, other_public) = crate::tunnel::keys::generate().unwrap();
        let psk = [7u8; 32];
        let mut peers = Peers::new("10.255.0.0/16".parse().unwrap());
        let relay_addr: SocketAddr = RELAY.parse().unwrap();
        let admit = |peers: &mut Peers, key: &boringtun::x25519::PublicKey| {
            let (s, k) = (relay_secret.clone(), *key);
            peers
                .admit(*key.as_bytes(), relay_addr, "5g", Instant::now(), |i| {
                    Tunn::new(s, k, Some(psk), None, i, None)
                })
                .unwrap()
        };
        admit(&mut peers, &other_public);
        let me = admit(&mut peers, &gw_public);
        let mut gw = Tunn::new(gw_secret, relay_public, Some(psk), None, 0, None);
        let (mut a, mut b) = (vec![0u8; 2048], vec![0u8; 2048]);
        let TunnResult::WriteToNetwork(init) = gw.format_handshake_initiation(&mut a, false) else {
            panic!("no initiation");
        };
        let init = init.to_vec();
        let Ok(Packet::HandshakeInit(h)) = Tunn::parse_incoming_packet(&init) else {
            panic!("not an initiation");
        };
        let half = parse_handshake_anon(&relay_secret, &relay_public, &h).unwrap();
        let found = peers.by_key(&half.peer_static_public).unwrap();
        assert_eq!(
            found.addr, me.addr,
            "found by the key inside the initiation"
        );
        let resp = {
            let mut t = found.tunn.try_lock().unwrap();
            match t.decapsulate(None, &init, &mut b) {
                TunnResult::WriteToNetwork(r) => r.to_vec(),
                other => panic!("{other:?}"),
            }
        };
        let Ok(Packet::HandshakeResponse(r)) = Tunn::parse_incoming_packet(&resp) else {
            panic!("not a response");
        };
        assert_eq!(r.receiver_idx >> 8, 0, "addressed to the gateway's session");
        assert!(!matches!(
            gw.decapsulate(None, &resp, &mut a),
            TunnResult::Err(_)
        ));
        // A subflow packet from the leased address to the relay's port.
        let mut syn = vec![0u8; 40];
        syn[0] = 0x45;
        syn[2..4].copy_from_slice(&40u16.to_be_bytes());
        syn[9] = 6;
        syn[12..16].copy_from_slice(&me.addr.octets());
        syn[16..20].copy_from_slice(&[10, 200, 0, 1]);
        syn[22..24].copy_from_slice(&8388u16.to_be_bytes());
        let data = match gw.encapsulate(&syn, &mut a) {
            TunnResult::WriteToNetwork(d) => d.to_vec(),
            other => panic!("{other:?}"),
        };
        let Ok(Packet::PacketData(d)) = Tunn::parse_incoming_packet(&data) else {
            panic!("not data");
        };
        let peer = peers.by_index(d.receiver_idx >> 8).unwrap();
        let mut t = peer.tunn.try_lock().unwrap();
        match t.decapsulate(None, &data, &mut b) {
            TunnResult::WriteToTunnelV4(p, _) => {
                let i = braid_proto::tunnel::inner::parse(p).unwrap();
                assert!(braid_proto::tunnel::inner::to_relay(
                    &i,
                    std::net::IpAddr::V4(peer.addr),
                    relay_addr
                ));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn full_table_refuses_and_expired_leases_free_their_place() {
        let mut p = Peers::new("10.255.0.0/29".parse().unwrap());
        let t = Instant::now();
        let r = RELAY.parse().unwrap();
        for k in 1..=5u8 {
            p.admit([k; 32], r, "x", t, session).unwrap();
        }
        let e = p.admit([9; 32], r, "x", t, session).unwrap_err();
        assert!(e.to_string().contains("full") && e.to_string().contains("fix:"));
        let later = t + LEASE + Duration::from_secs(1);
        p.touch(&p.by_key(&[1; 32]).unwrap(), later);
        let fresh = p.admit([9; 32], r, "x", later, session).unwrap();
        assert_eq!(
            p.len(),
            2,
            "four expired, the touched one and the new one stay"
        );
        assert!(p.by_key(&[1; 32]).is_some());
        assert!(p.by_addr(fresh.addr).is_some());
    }
}
