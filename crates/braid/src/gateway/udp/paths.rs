//! How UDP sessions reach the relay: one socket per uplink, bound to the uplink's address and
//! interface so its datagrams leave on that uplink, and the choice of uplink
//! (`braid_proto::udp::path::choose`) redone whenever the uplink manager's view changes.
//!
//! ```text
//!  ManagerView ─► follow(): a socket per uplink with an address (re-bound when it changes)
//!                          └► choose(): the uplink sessions ride; logged when it changes
//!  send(datagram) ─► the chosen uplink's socket (or an unbound one: the main table's choice)
//!  every socket ─► receive loop ─► super::lan::on_relay
//! ```
//!
//! All sessions ride the chosen uplink, so when it goes Suspect or Down every session moves
//! with its next datagram, keeping its session id; the relay follows it to the new address. A
//! braid relay is also told at once (`moved.rs`), for the sessions that only receive.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use braid_proto::health::LinkState;
use braid_proto::udp::path::{choose, Candidate};
use braid_sys::link::IfName;
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tracing::{debug, info, warn};

use super::Shared;
use crate::config::gateway::Uplink;
use crate::datagram::MAX_DATAGRAM;
use crate::gateway::uplink::{ManagerView, UplinkView};

/// The sockets and the choice.
pub(super) struct Paths {
    relay: SocketAddr,
    uplinks: Vec<Uplink>,
    pinned: Option<usize>,
    /// Not bound to an uplink: the main routing table decides (no uplinks configured, or none
    /// usable yet).
    unbound: Arc<UdpSocket>,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Per uplink (config order): its address and socket, while it has an address.
    bound: Vec<Option<Bound>>,
    chosen: Option<usize>,
}

struct Bound {
    addr: IpAddr,
    socket: Arc<UdpSocket>,
    receiver: AbortHandle,
}

impl Drop for Bound {
    fn drop(&mut self) {
        self.receiver.abort();
    }
}

impl Paths {
    /// Paths to `relay` over `uplinks`, `pinned` (by name) preferred.
    pub fn new(
        relay: SocketAddr,
        uplinks: &[Uplink],
        pinned: Option<&str>,
    ) -> std::io::Result<Paths> {
        let unbound = UdpSocket::from_std(braid_sys::socket::udp_any()?)?;
        Ok(Paths {
            relay,
            pinned: pinned.and_then(|p| uplinks.iter().position(|u| u.name == p)),
            uplinks: uplinks.to_vec(),
            unbound: Arc::new(unbound),
            inner: Mutex::new(Inner {
                bound: uplinks.iter().map(|_| None).collect(),
                chosen: None,
            }),
        })
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The socket that is not bound to an uplink (its receive loop is started by the caller).
    pub fn unbound(&self) -> Arc<UdpSocket> {
        self.unbound.clone()
    }

    /// The name of uplink `i`.
    pub fn name(&self, i: usize) -> Option<&str> {
        self.uplinks.get(i).map(|u| u.name.as_str())
    }

    /// The uplinks' names, in config order.
    pub fn names(&self) -> Vec<String> {
        self.uplinks.iter().map(|u| u.name.clone()).collect()
    }

    /// The relay.
    pub fn relay(&self) -> SocketAddr {
        self.relay
    }

    /// Every socket to probe UDP reachability through: slot 0 the unbound one (only when no
    /// uplink has a socket), slot `i + 1` uplink `i`'s.
    pub fn probe_sockets(&self) -> Vec<(usize, Arc<UdpSocket>)> {
        let inner = self.inner();
        let bound: Vec<(usize, Arc<UdpSocket>)> = (inner.bound.iter().enumerate())
            .filter_map(|(i, b)| b.as_ref().map(|b| (i + 1, b.socket.clone())))
            .collect();
        if bound.is_empty() {
            vec![(0, self.unbound.clone())]
        } else {
            bound
        }
    }

    /// The uplink sessions ride now.
    pub fn chosen(&self) -> Option<usize> {
        self.inner().chosen
    }

    /// Sends a sealed datagram to the relay over the chosen uplink; returns that uplink (`None`:
    /// the main table's choice).
    pub async fn send(&self, datagram: &[u8]) -> (Option<usize>, std::io::Result<()>) {
        let (uplink, socket) = {
            let inner = self.inner();
            match inner
                .chosen
                .and_then(|i| inner.bound[i].as_ref().map(|b| (i, b)))
            {
                Some((i, b)) => (Some(i), b.socket.clone()),
                None => (None, self.unbound.clone()),
            }
        };
        let to = socket
            .local_addr()
            .ok()
            .and_then(|l| braid_sys::socket::udp_destination(l, self.relay))
            .unwrap_or(self.relay);
        (uplink, socket.send_to(datagram, to).await.map(drop))
    }

    /// Keeps a socket on every uplink that has an address and the choice up to date with the
    /// manager's view, until the view's sender is gone.
    pub async fn follow(shared: Arc<Shared>, mut view: watch::Receiver<ManagerView>) {
        loop {
            let uplinks = view.borrow_and_update().uplinks.clone();
            if let Some(now) = shared.paths.update(&shared, &uplinks) {
                super::moved::announce(&shared, now, super::relay_is_braid(&uplinks)).await;
            }
            if view.changed().await.is_err() {
                return;
            }
        }
    }

    /// Follows `views`; returns the newly chosen uplink when the choice changed.
    fn update(&self, shared: &Arc<Shared>, views: &[UplinkView]) -> Option<usize> {
        let mut inner = self.inner();
        for (i, u) in self.uplinks.iter().enumerate() {
            let addr = views.iter().find(|v| v.name == u.name).and_then(|v| v.addr);
            if inner.bound[i].as_ref().map(|b| b.addr) == addr {
                continue;
            }
            inner.bound[i] = addr.and_then(|a| match bind(&u.interface, a) {
                Ok(socket) => {
                    let socket = Arc::new(socket);
                    let receiver =
                        tokio::spawn(receive(shared.clone(), socket.clone())).abort_handle();
                    debug!("UDP: socket to the relay over uplink {} from {a}", u.name);
                    Some(Bound {
                        addr: a,
                        socket,
                        receiver,
                    })
                }
                Err(e) => {
                    warn!("UDP: cannot open a socket on uplink {} ({a}): {e}; its sessions use another uplink", u.name);
                    None
                }
            });
        }
        let candidates: Vec<Candidate> = (self.uplinks.iter().enumerate())
            .map(|(i, u)| {
                let v = views.iter().find(|v| v.name == u.name);
                Candidate {
                    // An uplink without a socket cannot carry anything.
                    state: match (v, &inner.bound[i]) {
                        (Some(v), Some(_)) => v.state,
                        _ => LinkState::Down,
                    },
                    rtt: v
                        .and_then(|v| v.rtt_ms)
                        .map(|ms| Duration::from_secs_f64(ms.max(0.0) / 1000.0)),
                    backup: u.backup,
                }
            })
            .collect();
        let before = inner.chosen;
        inner.chosen = choose(before, &candidates, self.pinned);
        if inner.chosen != before {
            if let Some(now) = inner.chosen {
                let why = before.map_or_else(
                    || "the first usable uplink".to_string(),
                    |b| {
                        let name = &self.uplinks[b].name;
                        match views.iter().find(|v| v.name == *name) {
                            Some(v) if v.state != LinkState::Up => {
                                format!("{name} is {}", v.state)
                            }
                            _ => format!("it is better than {name} now"),
                        }
                    },
                );
                info!(
                    "UDP sessions now ride uplink {} ({why})",
                    self.uplinks[now].name
                );
                return Some(now);
            }
        }
        None
    }
}

/// A UDP socket bound to `addr` on `iface` (its `ip rule from ADDR` picks the uplink's table;
/// the device binding holds even before that rule is back after a flap).
pub(crate) fn bind(iface: &IfName, addr: IpAddr) -> std::io::Result<UdpSocket> {
    let domain = if addr.is_ipv4() {
        socket2::Domain::IPV4
    } else {
        socket2::Domain::IPV6
    };
    let s = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    s.bind_device(Some(iface.as_str().as_bytes()))?;
    braid_sys::socket::enlarge_udp_buffers(&s);
    s.bind(&SocketAddr::new(addr, 0).into())?;
    s.set_nonblocking(true)?;
    UdpSocket::from_std(s.into())
}

/// Reads the relay's datagrams from `socket` until aborted.
pub(super) async fn receive(shared: Arc<Shared>, socket: Arc<UdpSocket>) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((n, from)) if braid_sys::socket::normalize(from) == shared.paths.relay => {
                super::lan::on_relay(&shared, &mut buf[..n]).await
            }
            // Anything else is not the relay: ignore it.
            Ok(_) => {}
            Err(e) => {
                // ICMP errors (the relay port unreachable) surface here; the probe sees them too.
                debug!("UDP socket to the relay: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
