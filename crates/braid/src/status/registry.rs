//! Live relayed connections, so status can count them and find their subflows.
//!
//! Each entry keeps a [`SocketHandle`] to the relay socket: the relay task owns the stream, and
//! status reads `MPTCP_INFO` / `MPTCP_SUBFLOW_ADDRS` through the handle, on the same descriptor
//! (no `dup`, so a relayed connection costs no extra descriptor). The entry goes away when the
//! guard drops. The entry can also end its relay from outside ([`Registry::stop`]): the
//! gateway gives up connections stranded without a subflow (`braid_proto::stranded`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::shared_stream::SocketHandle;

/// One live connection.
pub struct Live {
    /// Its id, for [`Registry::stop`].
    pub id: u64,
    /// Destination (gateway) or peer (server).
    pub target: String,
    /// The MPTCP/TCP socket, for the kernel's view of it.
    pub socket: SocketHandle,
    /// When it opened.
    pub started: Instant,
    /// Wakes its relay to end it.
    stop: Arc<Stop>,
}

/// Why and that a connection's relay should end.
#[derive(Default)]
struct Stop {
    wake: tokio::sync::Notify,
    reason: std::sync::OnceLock<String>,
}

/// The set of live connections.
#[derive(Default)]
pub struct Registry {
    next: AtomicU64,
    live: Mutex<HashMap<u64, Live>>,
    /// Connections that fell back to plain TCP since start.
    pub fallback_total: AtomicU64,
    /// Connections given up since start because they had no subflow left.
    pub stranded_total: AtomicU64,
    /// Subflows found lost since start: a connection without the subflow of an uplink that
    /// is up, once per connection and uplink (`braid_proto::lost_join`).
    pub lost_join_total: AtomicU64,
    /// Of the live connections, those without the subflow of an uplink that is up now.
    pub lost_join_now: AtomicU64,
}

/// Removes its connection from the registry when dropped.
pub struct Guard {
    registry: Arc<Registry>,
    id: u64,
    stop: Arc<Stop>,
}

impl Guard {
    /// Resolves when [`Registry::stop`] ended this connection, with the reason as the error
    /// its relay ends with.
    pub async fn stopped(&self) -> std::io::Error {
        self.stop.wake.notified().await;
        let reason = self.stop.reason.get().map(String::as_str);
        std::io::Error::other(reason.unwrap_or("stopped by the gateway").to_owned())
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(mut m) = self.registry.live.lock() {
            m.remove(&self.id);
        }
    }
}

impl Registry {
    /// Records a connection until the guard drops.
    pub fn add(self: &Arc<Self>, target: String, socket: SocketHandle) -> Guard {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let stop = Arc::new(Stop::default());
        if let Ok(mut m) = self.live.lock() {
            m.insert(
                id,
                Live {
                    id,
                    target,
                    socket,
                    started: Instant::now(),
                    stop: stop.clone(),
                },
            );
        }
        Guard {
            registry: self.clone(),
            id,
            stop,
        }
    }

    /// Ends the relay of live connection `id` with `reason` as its error (the LAN side gets a
    /// reset). False when it is no longer live.
    pub fn stop(&self, id: u64, reason: &str) -> bool {
        let Some(stop) = self
            .live
            .lock()
            .ok()
            .and_then(|m| m.get(&id).map(|l| l.stop.clone()))
        else {
            return false;
        };
        // The first reason stands: a second stop finds the relay ending already.
        let _ = stop.reason.set(reason.to_owned());
        // A stored permit: the relay sees it even if it polls `stopped` only later.
        stop.wake.notify_one();
        true
    }

    /// Calls `f` for every live connection.
    pub fn for_each(&self, mut f: impl FnMut(&Live)) {
        if let Ok(m) = self.live.lock() {
            m.values().for_each(&mut f);
        }
    }

    /// Live connections.
    pub fn len(&self) -> usize {
        self.live.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// True when none are live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connected loopback stream (its listener may go: only the descriptor is used) and an
    /// empty registry.
    async fn connected() -> (crate::shared_stream::SharedStream, Arc<Registry>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = tokio::net::TcpStream::connect(l.local_addr().unwrap())
            .await
            .unwrap();
        (
            crate::shared_stream::SharedStream::new(c),
            Arc::new(Registry::default()),
        )
    }

    #[tokio::test]
    async fn guard_drop_removes_the_entry() {
        let (shared, r) = connected().await;
        let g = r.add("x".into(), shared.handle());
        assert_eq!(r.len(), 1);
        drop(g);
        assert!(r.is_empty());
    }

    #[tokio::test]
    async fn stop_ends_only_its_own_connection_with_its_reason() {
        let (shared, r) = connected().await;
        let a = r.add("a".into(), shared.handle());
        let b = r.add("b".into(), shared.handle());
        let mut ids = Vec::new();
        r.for_each(|l| ids.push((l.target.clone(), l.id)));
        let a_id = ids.iter().find(|(t, _)| t == "a").unwrap().1;
        assert!(r.stop(a_id, "no subflow left"));
        let e = tokio::time::timeout(std::time::Duration::from_secs(5), a.stopped())
            .await
            .expect("a is stopped");
        assert_eq!(e.to_string(), "no subflow left");
        // b was not stopped: its future stays pending.
        assert!(futures::FutureExt::now_or_never(b.stopped()).is_none());
        drop(a);
        assert!(!r.stop(a_id, "again"), "a connection no longer live");
    }
}
