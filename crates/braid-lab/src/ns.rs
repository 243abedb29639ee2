//! Entering network namespaces from a thread. `setns(2)` with `CLONE_NEWNET` changes only the
//! calling thread, so the lab runs namespace-bound work (the delay emulator, sockets a test wants
//! to create "inside" a namespace) on dedicated threads.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use nix::sched::{setns, CloneFlags};

/// Where `ip netns add NAME` mounts the namespace: `/var/run/netns/NAME`.
pub fn netns_path(name: &str) -> PathBuf {
    Path::new("/var/run/netns").join(name)
}

/// Moves the *calling thread* into the network namespace mounted at `path`
/// (like `ip netns exec`, for one thread). Sockets created afterwards on this thread belong to
/// that namespace for their whole life, even when used from other threads.
pub fn enter_netns(path: &Path) -> io::Result<()> {
    let file = File::open(path)?;
    setns(&file, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)
}
