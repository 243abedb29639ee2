//! Live relayed connections, so status can count them and find their subflows.
//!
//! Each entry keeps a duplicate of the relay socket's descriptor: the relay task owns the
//! stream, and status reads `MPTCP_INFO` / `MPTCP_SUBFLOW_ADDRS` through the duplicate without
//! touching it. The entry (and the duplicate) goes away when the guard drops.

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// One live connection.
pub struct Live {
    /// Destination (gateway) or peer (server).
    pub target: String,
    /// A duplicate of the MPTCP/TCP socket's descriptor.
    pub fd: OwnedFd,
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
    /// Records a connection; `None` if its descriptor cannot be duplicated (then it is simply
    /// not shown).
    pub fn add<S: AsFd>(self: &Arc<Self>, target: String, sock: &S) -> Option<Guard> {
        let fd = sock.as_fd().try_clone_to_owned().ok()?;
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.live.lock().ok()?.insert(
            id,
            Live {
                target,
                fd,
                started: Instant::now(),
            },
        );
        Some(Guard {
            registry: self.clone(),
            id,
        })
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

    #[test]
    fn guard_drop_removes_the_entry() {
        let r = Arc::new(Registry::default());
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let g = r.add("x".into(), &a).unwrap();
        assert_eq!(r.len(), 1);
        drop(g);
        assert!(r.is_empty());
    }
}
