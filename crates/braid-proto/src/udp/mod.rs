//! UDP relaying, sans-IO: what both ends of a Shadowsocks-2022 UDP session decide without
//! touching a socket.
//!
//! ```text
//!  datagram in ─► replay::ReplayWindow (packet id seen? too old?) ─► accept / drop
//!  traffic at t ─► liveness::Liveness (unreplied or stream, as conntrack) ─► expiry deadline
//!  uplink views ─► path::choose (Up, lowest RTT, pinned, hysteresis) ─► the session's uplink
//!  probe answers ─► blocked::Reachability ─► datagrams, or UDP over TCP (uot.rs framing)
//!  chosen uplink changed ─► moved: one empty datagram per session tells the relay where it is
//! ```

pub mod blocked;
pub mod liveness;
pub mod moved;
pub mod path;
pub mod replay;
pub mod uot;
