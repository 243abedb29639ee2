//! `braid lab bench …`: benchmarks that run the real braid binary in a lab beside baselines
//! measured in the same run (the machines are shared and noisy, so ratios are what count), and
//! print Markdown for `docs/BENCHMARKS.md`. `bench/*.sh` runs them.
//!
//! - [`aggregation`]: bonded goodput, time to first byte and the unshaped relay's own cost
//!   ([`throughput`]: offloads off, stacks in rotated order, TCP memory per phase, beside two
//!   bare relays on the same hops: what any proxy could reach there).
//! - [`fetch`]: HTTP fetches of 100 B, 100 kB and 1 MB through the capture on fresh LAN
//!   connections, braid (warm pool on and off) beside the shadowsocks-rust stack, and the warm
//!   pool's idle cost.
//! - [`failover`]: failover, recovery and stalls per fault, braid beside kernel-only MPTCP.
//! - [`udp`]: UDP goodput and loss, UDP failover, DNS time, through braid beside direct.
//! - [`lossy`]: bonded goodput over lossy uplinks per congestion control.
//! - [`hostile`]: an uplink whose middlebox strips MPTCP, with braid's tunnel and without it.
//! - [`load`]: connections held per relay and their cost, time to first byte under a flood of
//!   unauthenticated connections, the gateway's memory, connections opened per second.

pub mod aggregation;
mod bare_relay;
mod baseline;
pub mod failover;
pub mod fetch;
pub mod hostile;
mod http;
pub mod load;
pub mod lossy;
mod ssrust;
pub mod throughput;
pub mod udp;
