//! braid-sys: the Linux layer of braid, and the only crate allowed `unsafe`.
//!
//! ```text
//!   braid (daemons, CLI) ──► braid-sys ──► kernel
//!                              ├─ socket.rs       MPTCP/TCP sockets, SO_ORIGINAL_DST
//!                              ├─ tfo.rs          TCP Fast Open probes and setsockopts
//!                              ├─ mptcp/info.rs   MPTCP_INFO, TCP_IS_MPTCP
//!                              ├─ mptcp/{pm,endpoint,limits}.rs   mptcp_pm generic netlink
//!                              ├─ mptcp/blackhole.rs  the kernel's MPTCP blackhole counters
//!                              ├─ monitor.rs      rtnetlink events (links, addresses, routes)
//!                              ├─ link, address, route, rule      rtnetlink
//!                              ├─ nftables.rs     braid's own nftables table (capture, TPROXY)
//!                              ├─ tproxy.rs       transparent UDP sockets (original destination)
//!                              ├─ tproxy_route.rs fwmark rule + local route TPROXY needs
//!                              └─ sysctl.rs, kernel.rs            procfs readers
//! ```
//! Every `unsafe` block carries a `// SAFETY:` note. Errors keep the kernel's errno.

pub mod address;
pub mod kernel;
pub mod link;
pub mod monitor;
pub mod mptcp;
pub mod netlink;
pub mod nftables;
pub mod route;
pub mod rule;
pub mod socket;
mod sockopt;
pub mod sysctl;
pub mod tfo;
pub mod tproxy;
pub mod tproxy_route;
