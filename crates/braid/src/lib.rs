//! braid: bonds a gateway's uplinks into one connection with kernel MPTCP and a
//! Shadowsocks-2022 relay.
//!
//! ```text
//!  LAN ─► gateway (capture / SOCKS5) ══ SS2022 over MPTCP, one subflow per uplink ══► server ─► internet
//! ```
//! - [`config`]: TOML files into typed configs, with errors that name key, value and fix.
//! - [`server`]: the relay; [`gateway`]: the router side; [`relay`]: the byte pump both use.
//! - [`datagram`]: Shadowsocks-2022 UDP packets, sealed and opened (the server's UDP relay and
//!   the gateway's UDP capture).
//! - [`listener`]: the one accept loop (connection tasks tracked, drained at shutdown), with
//!   [`admission`] (caps on handshakes and connections) and [`allow_from`] (who may connect);
//!   [`control`]: the in-tunnel control channel as a framed connection; [`shared_stream`]: one
//!   socket held by a connection and the status registry (one descriptor, no `dup`).
//! - [`status`]: the status document and the HTTP status API ([`status::http`]).
//! - [`firewall`]: the host firewall read, judged and planned (doctor's checks, setup's rules).
//! - [`state`]: the on-disk record of braid's kernel changes, undone at the next start after a crash.
//! - [`cli`]: the command line; `main.rs` only parses it and calls in here.
//!
//! Wire formats and decisions live in `braid-proto`, kernel access in `braid-sys`. The lab (`braid
//! lab …`: namespaces, demo, traffic tool, benchmarks) lives in `braid-lab` and is linked only
//! with the default-on `lab` feature.
#![forbid(unsafe_code)]

pub mod admission;
pub mod allow_from;
pub mod cli;
pub mod config;
pub mod congestion;
pub mod control;
pub mod datagram;
pub mod doctor;
pub mod fast_open;
pub mod firewall;
#[cfg(any(test, feature = "fuzz"))]
#[doc(hidden)]
pub mod fuzz_api;
pub mod gateway;
pub mod generate;
pub mod initial_window;
pub mod keygen;
pub mod listener;
pub mod log_limit;
pub mod relay;
pub mod server;
pub mod setup;
pub mod shared_stream;
pub mod shutdown;
pub mod speedtest;
pub mod state;
pub mod status;
pub mod systemd;
pub mod throttle;
pub mod tunnel;
