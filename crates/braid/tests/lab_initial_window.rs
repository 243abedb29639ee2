//! The relay's initial congestion window (`initial_window`) on the real kernel: the subflows it
//! accepts, first subflows and joins alike, start with the configured window; with
//! `initial_window = 0` they start with the kernel's. Read from the kernel (`ss -ti` in the
//! relay's namespace) on a warm pool connection, whose subflows the relay has sent nothing on.
//!
//! What would show it broken: a program that never runs or whose `bpf_setsockopt` fails
//! (every window the kernel's 10), one that misses the joins (only one socket at 32), or one
//! still attached after the relay stopped (the second relay's sockets at 32).
//! Root-only (skips without root unless CI=true, where it must run).

mod common;

use std::time::Duration;

use braid_lab::harness::{Harness, RELAY_PORT};
use braid_lab::Role;
use common::{shaped_uplinks, wait_status};

/// The congestion window of every established TCP socket on the relay's port in vps (each
/// MPTCP subflow is one).
fn relay_cwnds(h: &Harness) -> Vec<u32> {
    let port = format!(":{RELAY_PORT}");
    let text = h
        .lab
        .run(
            Role::Vps,
            &[
                "ss",
                "-tinH",
                "state",
                "established",
                "(",
                "sport",
                "=",
                &port,
                ")",
            ],
        )
        .expect("ss");
    text.split_whitespace()
        .filter_map(|f| f.strip_prefix("cwnd:"))
        .filter_map(|v| v.parse().ok())
        .collect()
}

/// Starts a relay with `server_extra` and a gateway with a warm pool over both uplinks, and
/// waits until a pooled connection has its subflow on each.
fn warm(h: &mut Harness, server_extra: &str) {
    h.start_server(server_extra).expect("server");
    h.start_gateway(&["wifi", "5g"], "fast_open = \"off\"\nwarm_pool = 2")
        .expect("gateway");
    h.wait_uplinks_up(&["wifi", "5g"], Duration::from_secs(10))
        .expect("uplinks up");
    wait_status(h, "a warm connection", Duration::from_secs(10), |s| {
        s.warm_pool.as_ref().is_some_and(|p| p.warm >= 1)
    });
}

#[test]
fn accepted_subflows_start_with_the_initial_window_and_the_kernels_without_it() {
    if !braid_lab::root_tests_enabled("lab_initial_window") {
        return;
    }
    let mut h = Harness::new("biw", shaped_uplinks(), common::exe()).expect("lab");

    warm(&mut h, "initial_window = 32");
    let cwnds = relay_cwnds(&h);
    let log = h.log("server.log");
    assert!(
        log.contains(&format!(
            "initial_window = 32: set on each connection accepted on port {RELAY_PORT}"
        )),
        "the relay does not say the window is in force:\n{log}"
    );
    assert!(
        cwnds.iter().all(|&c| c >= 32),
        "a socket the relay accepted started below 32 segments: {cwnds:?}"
    );
    assert!(
        cwnds.iter().filter(|&&c| c == 32).count() >= 2,
        "a warm connection's two subflows (its first and its join) should sit at exactly 32: {cwnds:?}"
    );
    h.stop_gateway().expect("stop gateway");
    h.stop_server().expect("stop server");

    // The same lab without the window: the kernel's again, so the first relay's program is gone.
    warm(&mut h, "initial_window = 0");
    let cwnds = relay_cwnds(&h);
    assert!(
        cwnds.iter().filter(|&&c| c < 32).count() >= 2,
        "with initial_window = 0 the warm connection's subflows should start with the kernel's window: {cwnds:?}"
    );
    assert!(
        h.log("server.log")
            .contains("initial_window = 0: the kernel's"),
        "{}",
        h.log("server.log")
    );
}
