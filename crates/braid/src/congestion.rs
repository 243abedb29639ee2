//! The local facts of the congestion-control decision, gathered on this machine: the kernel's
//! congestion-control sysctls and its answer when asked for the configured algorithm. The rules
//! are in `braid_proto::congestion`; the daemons and `braid doctor` gather through here and
//! decide through there, so they cannot disagree.

use std::os::fd::AsFd;

use braid_proto::congestion::{Choice, Decision, Facts, Probe};
use braid_sys::sysctl::Procfs;

/// Gathers the facts for `choice` and decides.
pub fn decide(choice: &Choice, procfs: &Procfs) -> Decision {
    braid_proto::congestion::decide(choice, &facts(choice, procfs))
}

/// The facts for `choice`: the sysctls, and for a named algorithm the kernel's answer on a
/// plain TCP socket (which also loads the algorithm's module, so the relay's subflows find it).
pub fn facts(choice: &Choice, procfs: &Procfs) -> Facts {
    let s = braid_sys::congestion::sysctls(procfs);
    let probe = match choice {
        Choice::HostDefault => None,
        Choice::Named(name) => Some(match braid_sys::congestion::probe(name) {
            Ok(()) => Probe::Took,
            Err(e) => match e.raw_os_error() {
                Some(libc::ENOENT) => Probe::NotAvailable,
                Some(libc::EPERM) => Probe::NotAllowed,
                errno => Probe::Failed(errno.unwrap_or(-1)),
            },
        }),
    };
    Facts {
        host_default: s.default,
        available: s.available,
        allowed: s.allowed,
        probe,
    }
}

/// Says once which congestion control the relay sockets use; loudly when the configured one
/// could not be used.
pub fn log(d: &Decision) {
    if d.fell_back {
        tracing::warn!(
            "congestion control {} on relay sockets: {}",
            d.algorithm,
            d.reason
        );
    } else {
        tracing::info!(
            "congestion control {} on relay sockets: {}",
            d.algorithm,
            d.reason
        );
    }
}

/// Puts a relay socket on the decided algorithm (nothing to do when it keeps the host's
/// default). On an MPTCP socket this covers every subflow, also those that join later. A
/// failure leaves the socket on the host's default, which still works, so it is only logged.
pub fn apply<S: AsFd>(sock: &S, d: &Decision) {
    if d.set {
        if let Err(e) = braid_sys::congestion::set(sock, &d.algorithm) {
            tracing::debug!(
                "setting congestion control {} on a relay socket: {e}",
                d.algorithm
            );
        }
    }
}
