//! What braid changed in the kernel, recorded on disk, so that the next start can put the kernel
//! back however the last run ended: SIGTERM, SIGKILL, a crash or a failed start.
//!
//! ```text
//!  start: recover() ─► record left by a dead run of this namespace? ─► undo each step ─► delete file
//!  run:   Journal::note_*() ─► file written (temp + rename) ─► then the change is made
//!  stop:  the daemon removes its state ─► Journal::finish(): undo what is still recorded ─► delete file
//! ```
//! The gateway records its nftables capture table, the MPTCP endpoints it adds, the routing
//! tables of its routes and rules, and the original MPTCP limits and `net.mptcp.blackhole_timeout`
//! it changes, in `<state_dir>/gateway-<nft_table>.json` (`state_dir` defaults to `/run/braid`,
//! which the system empties at boot, when the kernel state is gone too). An uplink's tunnel is
//! recorded the same way: its routing table with the uplink's, its endpoint by address; its TUN
//! device is not persistent, so the kernel removes it (with its address) when braid exits in
//! any way. The relay changes no kernel state that outlives it: its tunnel device is such a TUN
//! too, and its address and route go with it, so it keeps no record.

pub mod file;
mod journal;
pub mod owner;
pub mod record;
mod undo;

use std::path::PathBuf;

pub use journal::{recover, Journal};

/// Where state files go unless `state_dir` says otherwise.
pub const DEFAULT_DIR: &str = "/run/braid";

/// Why the state record could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The file or its directory could not be read or written.
    #[error("{what} the state file {path}: {source}; fix: make `state_dir` in the config (default /run/braid) a directory that braid, running as root, can write")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a record this braid can use.
    #[error("state file {path}: {source}; fix: compare `ip mptcp endpoint show`, `ip mptcp limits show`, `ip rule show`, `nft list tables` and `sysctl net.mptcp.blackhole_timeout` with what they should be, undo braid's changes by hand, then delete the file")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: record::RecordError,
    },
    /// A live process owns the record.
    #[error("another braid (pid {pid}) is running and records its kernel state in {path}; fix: stop it first, or give each gateway its own `nft_table` (which names the file) or `state_dir`")]
    InUse {
        /// The file.
        path: PathBuf,
        /// The live owner.
        pid: u32,
    },
    /// This process could not be identified.
    #[error(
        "cannot identify this process in /proc ({0}); fix: run braid with procfs mounted at /proc"
    )]
    Owner(#[source] std::io::Error),
}
