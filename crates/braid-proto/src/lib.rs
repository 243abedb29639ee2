//! braid-proto: braid's sans-IO core.
//!
//! Bytes and time go in; parsed messages, replies and decisions come out. Nothing here opens a
//! socket, spawns a task or reads a clock, so every rule can be tested with plain byte slices and
//! a virtual clock.
//!
//! ```text
//!   LAN app ──SOCKS5──► socks5.rs ─┐
//!                                   ├─► gateway ══ SS2022 over MPTCP ══► server ─► internet
//!   braid tools ──────► control.rs ─┘          (control.rs messages ride inside the tunnel)
//! ```
//!
//! Also here: the relay's destination policy (`destination`), SIP022's request-header rules
//! (`sip022`), the rules of the gateway's warm pool of relay connections (`pool`) and the parked
//! request that bonds them before use (`park`), when a relay connection left without a subflow
//! is given up (`stranded`) and when one that lost an uplink's subflow is reported
//! (`lost_join`), the hostile-path tunnel's decisions, inner-packet
//! rules and MTU (`tunnel`), and log lines a peer can neither forge nor flood (`logsafe`).
#![forbid(unsafe_code)]

pub mod congestion;
pub mod control;
pub mod destination;
#[cfg(any(test, feature = "fuzz"))]
#[doc(hidden)]
pub mod fuzz_api;
pub mod health;
pub mod logsafe;
pub mod lost_join;
pub mod park;
pub mod pool;
pub mod rate;
pub mod sip022;
pub mod socks5;
pub mod stranded;
pub mod subflow_priority;
pub mod tfo;
pub mod tunnel;
pub mod udp;
