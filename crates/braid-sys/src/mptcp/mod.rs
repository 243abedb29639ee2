//! Kernel MPTCP: per-socket information and the `mptcp_pm` path-manager family.

pub mod blackhole;
pub mod endpoint;
pub mod events;
pub mod info;
pub mod limits;
pub mod pm;
pub mod subflow;
