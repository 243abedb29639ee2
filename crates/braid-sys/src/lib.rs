//! braid-sys: the Linux layer of braid, and the only crate allowed `unsafe`.
//!
//! ```text
//!   braid (daemons, CLI) ──► braid-sys ──► kernel
//!                              ├─ socket.rs       MPTCP/TCP sockets, SO_ORIGINAL_DST
//!                              ├─ recv.rs         recv into uninitialised memory (no memset per read)
//!                              ├─ rcvbuf.rs       a larger receive buffer that autotuning still grows
//!                              ├─ sock_ops.rs     a larger initial congestion window (cgroup BPF)
//!                              ├─ keepalive.rs    keepalive and TCP_USER_TIMEOUT (liveness)
//!                              ├─ local_addr.rs   is an address this host's own? (the kernel's routing)
//!                              ├─ rlimit.rs       the open-file limit
//!                              ├─ tfo.rs          TCP Fast Open probes and setsockopts
//!                              ├─ congestion.rs   TCP_CONGESTION per socket, the kernel's lists
//!                              ├─ mptcp/info.rs   MPTCP_INFO, TCP_IS_MPTCP
//!                              ├─ mptcp/{pm,endpoint,limits}.rs   mptcp_pm generic netlink
//!                              ├─ mptcp/blackhole.rs  the kernel's MPTCP blackhole counters
//!                              ├─ monitor.rs      rtnetlink events (links, addresses, routes)
//!                              ├─ link, address, route, rule      rtnetlink
//!                              ├─ nftables.rs     braid's own nftables table (capture, TPROXY)
//!                              ├─ tproxy.rs       transparent UDP sockets (original destination)
//!                              ├─ tproxy_route.rs fwmark rule + local route TPROXY needs
//!                              ├─ tun.rs          TUN devices (the userspace tunnel)
//!                              ├─ wireguard.rs    the kernel's `wireguard` genetlink family
//!                              ├─ tcp_mem.rs      TCP memory counter, limits, runaway test
//!                              ├─ kmsg.rs         the kernel log: the MPTCP accounting fault
//!                              └─ sysctl.rs, kernel.rs            procfs readers
//! ```
//! Every `unsafe` block carries a `// SAFETY:` note. Errors keep the kernel's errno.

pub mod address;
pub mod congestion;
#[cfg(any(test, feature = "fuzz"))]
#[doc(hidden)]
pub mod fuzz_api;
pub mod keepalive;
pub mod kernel;
pub mod kmsg;
pub mod link;
pub mod local_addr;
pub mod monitor;
pub mod mptcp;
pub mod netlink;
pub mod nftables;
pub mod pktinfo;
pub mod rcvbuf;
pub mod recv;
pub mod rlimit;
pub mod route;
pub mod rule;
pub mod sock_ops;
pub mod socket;
mod sockopt;
pub mod sysctl;
pub mod tcp_mem;
pub mod tfo;
pub mod tproxy;
pub mod tproxy_route;
pub mod tun;
pub mod wireguard;
