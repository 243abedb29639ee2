//! A network-namespace lab for braid's tests, benchmarks and `braid lab`: the namespaces
//! themselves, and on top of them the harness that runs the real braid binary inside, the demo,
//! the traffic tool and the benchmarks. The braid binary links this crate only with its
//! default-on `lab` feature, so a gateway built without it carries none of this (no nfq, no
//! seccomp, no benchmark code).
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
//! On top, what runs braid in a lab (it starts the braid binary it is given; it never links the
//! braid crate, which depends on this one):
//! - [`harness`]: the real `braid server` and `braid gateway` in a lab, their configs and logs;
//!   [`log_cursor`] waits for a log line written after a point in time.
//! - [`traffic`]: the traffic tool (`braid lab traffic`): bulk, checked stream, echo, timing;
//!   [`datagrams`]: its UDP side (echo server, checked datagram runs); [`dns`]: a DNS client;
//!   [`quic`]: a checked QUIC transfer (quinn).
//! - [`demo`], [`bench`]: `braid lab demo` and `braid lab bench …` (used by `bench/*.sh`).
//! - [`browser`]: headless Chromium inside a namespace, for the dashboard tests.
//! - [`cli`]: the `braid lab` subcommands and their dispatch.
//!
//! Every link has IPv6 too (2001:db8::/32, static, without router advertisements). Not
//! supported: jitter or reordering (delay is constant), per-uplink policy routing in `up()` (that is the daemon under test's job).
//! Everything runs inside namespaces the lab creates; the host's routes, firewall and sysctls
//! are never touched. Needs root and `ip`, `tc`, `iptables` (nft backend), `nft`, `ethtool`,
//! `sysctl`.
#![forbid(unsafe_code)]

pub mod bare_relay;
pub mod bench;
pub mod browser;
pub mod cli;
pub mod cmd;
pub mod datagrams;
pub mod demo;
pub mod dns;
mod error;
mod faults;
pub mod harness;
pub mod lab;
pub mod log_cursor;
pub mod measure;
pub mod netem;
pub mod ns;
pub mod quic;
pub mod seccomp;
mod shaping;
mod spec;
mod topology;
pub mod traffic;

pub use error::LabError;
pub use lab::{cleanup_stale, prefix_tag, root_tests_enabled, Lab, LabProcess, Role};
pub use measure::{IfaceBytes, PingStats};
pub use shaping::bfifo_limit_bytes;
pub use spec::{LabSpec, UplinkSpec, MAX_PREFIX, MAX_UPLINKS, MAX_UPLINK_NAME};
