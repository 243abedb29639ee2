//! `congestion`: which congestion control braid's relay sockets use and why, from the same facts
//! and rules as the daemons (`crate::congestion`, `braid_proto::congestion`). The same check
//! runs on the gateway and on the relay.

use braid_proto::congestion::{Choice, Decision};

use super::check::Check;
use super::kernel::KernelRoots;

/// The check for the configured `congestion`.
pub fn check(choice: &Choice, roots: &KernelRoots) -> Check {
    let facts = crate::congestion::facts(choice, &roots.procfs());
    let d = braid_proto::congestion::decide(choice, &facts);
    verdict(&d)
        .with("configured", choice.to_string())
        .with("host_default", facts.host_default)
        .with("available", facts.available)
        .with("allowed", facts.allowed)
}

fn verdict(d: &Decision) -> Check {
    if !d.fell_back {
        return Check::ok(
            "congestion",
            format!("relay sockets use {}: {}", d.algorithm, d.reason),
        );
    }
    let (cause, fix) = d
        .reason
        .split_once("; fix: ")
        .unwrap_or((d.reason.as_str(), "set congestion = \"default\""));
    Check::warn(
        "congestion",
        format!(
            "the configured congestion control cannot be used; relay sockets use the host's default, {}",
            d.algorithm
        ),
        cause,
        fix,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::check::Status;

    #[test]
    fn fallback_warns_with_cause_and_fix_apart() {
        let d = braid_proto::congestion::decide(
            &Choice::default(),
            &braid_proto::congestion::Facts {
                host_default: "cubic".into(),
                available: "reno cubic".into(),
                allowed: "reno cubic".into(),
                probe: Some(braid_proto::congestion::Probe::NotAvailable),
            },
        );
        let c = verdict(&d);
        assert_eq!(c.status, Status::Warn);
        assert!(c.summary.contains("cubic"), "{}", c.summary);
        assert!(
            c.cause.contains("not available") && !c.cause.contains("fix:"),
            "{}",
            c.cause
        );
        assert!(c.fix.starts_with("modprobe tcp_bbr"), "{}", c.fix);
    }

    #[test]
    fn algorithm_the_kernel_takes_is_ok_and_named() {
        let c = check(&Choice::Named("reno".into()), &KernelRoots::default());
        assert_eq!(c.status, Status::Ok, "{c:?}");
        assert!(
            c.summary.starts_with("relay sockets use reno"),
            "{}",
            c.summary
        );
    }
}
