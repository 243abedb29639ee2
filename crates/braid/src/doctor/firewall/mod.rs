//! Server-side firewall checks of `braid doctor`: does the host firewall admit new TCP
//! connections to the relay port, and to the port(s) sshd listens on (so that turning the
//! firewall on cannot lock the user out, as OpenMPTCPRouter's installer did by moving SSH to
//! 65222)?
//!
//! Reading and judging the firewall is [`crate::firewall`]'s job, shared with `braid setup`;
//! this module turns its verdicts into the checks `firewall.relay_port`, `firewall.relay_udp` and `firewall.ssh`.

mod checks;

pub use crate::firewall::{gather, sshd_ports};
pub use checks::{relay_port, relay_udp, ssh};
