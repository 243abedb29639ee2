//! Live relayed connections, so status can count them and find their subflows.
//!
//! Each entry keeps a [`SocketHandle`] to the relay socket: the relay task owns the stream, and
//! status reads `MPTCP_INFO` / `MPTCP_SUBFLOW_ADDRS` through the handle, on the same descriptor
//! (no `dup`, so a relayed connection costs no extra descriptor). The entry goes away when the
//! guard drops.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::shared_stream::SocketHandle;

/// One live connection.
pub struct Live {
    /// Destination (gateway) or peer (server).
    pub target: String,
    /// The MPTCP/TCP socket, for the kernel's view of it.
    pub socket: SocketHandle,
    /// When it opened.
    pub started: Instant,
}

/// The set of live connections.
#[derive(Default)]
pub struct Registry {
    next: AtomicU64,
    live: Mutex<HashMap<u64, Live>>,
    /// Connections that fell back to plain TCP since start.
    pub fallback_total: AtomicU64,
}

/// Removes its connection from the registry when dropped.
pub struct Guard {
    registry: Arc<Registry>,
    id: u64,
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
        if let Ok(mut m) = self.live.lock() {
            m.insert(
                id,
                Live {
                    target,
                    socket,
                    started: Instant::now(),
                },
            );
        }
        Guard {
            registry: self.clone(),
            id,
        }
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

    #[tokio::test]
    async fn guard_drop_removes_the_entry() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = tokio::net::TcpStream::connect(l.local_addr().unwrap())
            .await
            .unwrap();
        let shared = crate::shared_stream::SharedStream::new(c);
        let r = Arc::new(Registry::default());
        let g = r.add("x".into(), shared.handle());
        assert_eq!(r.len(), 1);
        drop(g);
        assert!(r.is_empty());
    }
}
