//! A network-namespace lab for braid's tests, benchmarks and `braid lab`.
//!
//! [`Lab::up`] builds four namespaces joined by veth pairs, with N shaped "internet uplinks"
//! between the gateway and the VPS:
//!
//! ```text
//!  {p}-lan ── {p}-gw ══ wan-a / up-a ══ {p}-vps ── {p}-srv
//!                    ══ wan-b / up-b ══
//!  10.9.0.2   10.9.0.1   10.{i+1}.0.1 ↔ .2   10.200.0.1 (lo)   10.30.0.1 ↔ 10.30.0.2
//! ```
//!
//! Layers, top-down:
//! - [`lab`]: the [`Lab`] handle — namespace names, commands inside them, tracked processes,
//!   teardown (also on drop and panic).
//! - `topology`: namespaces, links, addresses, main-table default routes, sysctls;
//!   [`Lab::kernel_mptcp_policy`] for a kernel-only baseline.
//! - `shaping`: htb rate on both ends, delay through NFQUEUE and the in-process emulator
//!   ([`netem`]), loss with nftables `numgen random`.
//! - `faults`: link down, silent blackhole, MPTCP option stripping, address change, sysctl.
//! - [`measure`]: byte counters and ping parsing.
//!
//! Not supported: IPv6 (disabled in the lab namespaces), jitter or reordering (delay is
//! constant), per-uplink policy routing in `up()` (that is the daemon under test's job).
//! Everything runs inside namespaces the lab creates; the host's routes, firewall and sysctls
//! are never touched. Needs root and `ip`, `tc`, `iptables` (nft backend), `nft`, `ethtool`,
//! `sysctl`.
#![forbid(unsafe_code)]

pub mod cmd;
mod error;
mod faults;
pub mod lab;
pub mod log_cursor;
pub mod measure;
pub mod netem;
pub mod ns;
pub mod seccomp;
mod shaping;
mod spec;
mod topology;

pub use error::LabError;
pub use lab::{cleanup_stale, prefix_tag, root_tests_enabled, Lab, LabProcess, Role};
pub use measure::{IfaceBytes, PingStats};
pub use shaping::bfifo_limit_bytes;
pub use spec::{LabSpec, UplinkSpec, MAX_PREFIX, MAX_UPLINKS, MAX_UPLINK_NAME};
