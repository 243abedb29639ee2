//! `braid lab bench …`: benchmarks that run the real braid binary in a lab beside baselines
//! measured in the same run (the machines are shared and noisy, so ratios are what count), and
//! print Markdown for `docs/BENCHMARKS.md`. `bench/*.sh` runs them.
//!
//! - [`aggregation`]: bonded goodput, time to first byte and the unshaped relay's own cost.
//! - [`failover`]: failover, recovery and stalls per fault, braid beside kernel-only MPTCP.
//! - [`hostile`]: an uplink whose middlebox strips MPTCP, with braid's tunnel and without it.

pub mod aggregation;
pub mod failover;
pub mod hostile;
pub mod lossy;
