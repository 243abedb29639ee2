//! The hostile-path tunnel, sans-IO: when an uplink's middlebox strips or resets MPTCP options,
//! its subflows move into an encrypted UDP (WireGuard) tunnel to the relay.
//!
//! ```text
//!  evidence (join missing, fallback) ─► decide::Decider ─► want direct / tunnel / left out
//!  direct-path check outcome ─────────┘      ▲
//!  tunnel up / failed ────────────────────────┘
//!  inner packets ─► inner::parse ─► inner::{to_relay, from_relay}: only subflows to the relay pass
//!  outer path family ─► mtu::tunnel_mtu: full-size inner segments fit one outer datagram
//! ```
//! Nothing here opens a socket or reads a clock: time is passed in, so every rule is tested on a
//! virtual clock.

pub mod decide;
pub mod inner;
pub mod mtu;

pub use decide::{Checked, Decider, Mode, Path};
