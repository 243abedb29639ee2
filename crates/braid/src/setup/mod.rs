//! `braid setup`: from a fresh VPS and a bare router to a bonded link, without locking anyone
//! out, and `braid setup undo` to take all of it back.
//!
//! ```text
//!  setup server:  kernel gate ─► server.toml ─► sysctl.d ─► firewall ─► unit ─► wait ─► pairing URI + QR
//!  setup gateway: pairing URI ─► uplinks/LAN found (or asked) ─► gateway.toml ─► sysctl.d ─► unit ─► doctor
//!                        every step yields Changes ─► Executor: journal + apply, or print (--dry-run)
//!  setup undo:    journal ─► each Change undone, newest first
//! ```
//! Files by job: [`kernel_gate`] (doctor's kernel checks, as a gate), [`server_config`] and
//! [`gateway_config`] (the TOML files), [`sysctl`], [`firewall`] (the host firewall, judged on
//! the model doctor uses), [`unit`] (systemd), [`pairing`] (URI and QR), [`discover`] (the
//! router's interfaces), [`reapply`] (firewall rules back after a reboot), [`change`] (one change: apply, undo, describe), [`journal`],
//! [`exec`] (apply or print), [`server`], [`gateway`] and [`undo`] (the three commands).
//!
//! Everything setup writes lives under its root (`/`, or a temporary folder in tests); it asks
//! systemctl only when that root is `/` and systemd runs.

pub mod change;
pub mod command;
pub mod discover;
pub mod exec;
pub mod firewall;
pub mod gateway;
pub mod gateway_config;
pub mod journal;
pub mod kernel_gate;
pub mod pairing;
pub mod reapply;
pub mod server;
pub mod server_config;
pub mod sysctl;
pub mod undo;
pub mod unit;

use std::path::PathBuf;

/// Why setup stopped. Each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The kernel cannot do MPTCP, or a newer one waits for a reboot.
    #[error("{summary}\n  cause: {cause}\n  fix: {fix}\n  (or run setup again with --ignore-kernel to go on anyway)")]
    Kernel {
        /// What is wrong.
        summary: String,
        /// Why it matters.
        cause: String,
        /// What to do.
        fix: String,
    },
    /// A config file exists but cannot be used (setup never overwrites it).
    #[error("{path} exists but cannot be used: {why}; fix: correct it, or move it away to let setup write a new one")]
    ExistingConfig {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// The system's random source failed.
    #[error("cannot make a key: the system's random source failed ({0}); fix: check /dev/urandom")]
    Random(String),
    /// The firewall could not be read.
    #[error("cannot read the host firewall: {0}")]
    Firewall(String),
    /// Setup would not touch the firewall.
    #[error("the host firewall was left as it is: {why}\n  fix: open TCP and UDP port {port} yourself{commands}, then run setup again")]
    FirewallRefused {
        /// Why.
        why: String,
        /// The relay port.
        port: u16,
        /// The commands that would have been run, formatted.
        commands: String,
    },
    /// A change failed; the ones before it are journaled.
    #[error("{step}: {source}\n  everything done before this step is in the journal; `braid setup undo` takes it back")]
    Change {
        /// The change.
        step: String,
        /// What went wrong.
        source: change::ChangeError,
    },
    /// Undoing a change failed; it and everything older stay in the journal.
    #[error("undo: {step}: {source}\n  fix: correct the cause, then run `braid setup undo` again: it goes on from this change")]
    Undo {
        /// The undo step.
        step: String,
        /// What went wrong.
        source: change::ChangeError,
    },
    /// The journal could not be read or written.
    #[error(transparent)]
    Journal(journal::JournalError),
    /// A question or an argument setup needs.
    #[error("{0}")]
    Usage(String),
    /// The daemon did not come up.
    #[error("{0}")]
    NotReady(String),
}
