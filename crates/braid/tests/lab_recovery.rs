//! Crash recovery in the lab: a gateway killed with SIGKILL removes nothing, so the next start
//! must put the kernel back exactly as the killed run found it (routes, rules, MPTCP endpoints
//! and limits, `net.mptcp.blackhole_timeout`, the nftables table), also when that start then
//! fails early, and also when an uplink's address changed in between.
//!
//! Root-only (skips without root unless CI=true, where it must run).

mod common;

use std::net::Ipv4Addr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use braid_lab::harness::Harness;
use braid_lab::Role;

/// Sets the blackhole sysctl, so the test sees it changed and restored.
const EXTRA: &str = "mptcp_blackhole_timeout_secs = 7";

fn lab(prefix: &str) -> Harness {
    let mut h = Harness::new(prefix, common::unshaped_uplinks(), common::exe()).expect("lab");
    h.start_server("").expect("server");
    h
}

fn gw(h: &Harness, argv: &[&str]) -> String {
    h.lab
        .run(Role::Gw, argv)
        .unwrap_or_else(|e| panic!("{argv:?} in gw: {e}"))
}

/// The gateway namespace's kernel state that braid may change.
#[derive(Debug, PartialEq)]
struct Kernel {
    rules: String,
    rules6: String,
    routes: String,
    braid_routes: String,
    endpoints: String,
    limits: String,
    blackhole_timeout: String,
    nft: String,
}

impl Kernel {
    fn read(h: &Harness) -> Kernel {
        Kernel {
            rules: gw(h, &["ip", "rule", "show"]),
            rules6: gw(h, &["ip", "-6", "rule", "show"]),
            routes: gw(h, &["ip", "route", "show", "table", "all"]),
            braid_routes: gw(h, &["ip", "route", "show", "table", "all", "proto", "212"]),
            endpoints: gw(h, &["ip", "mptcp", "endpoint", "show"]),
            limits: gw(h, &["ip", "mptcp", "limits", "show"]),
            blackhole_timeout: gw(h, &["sysctl", "-n", "net.mptcp.blackhole_timeout"])
                .trim()
                .to_string(),
            nft: gw(h, &["nft", "list", "ruleset"]),
        }
    }

    /// Every field braid changes, compared with `before`, except the full route list (for
    /// when the test itself changed an address, and with it the kernel's own routes).
    fn assert_as_found_except_own_routes(&self, before: &Kernel, log: &str) {
        let pairs = [
            ("ip rule", &self.rules, &before.rules),
            ("ip -6 rule", &self.rules6, &before.rules6),
            ("braid's routes", &self.braid_routes, &before.braid_routes),
            ("MPTCP endpoints", &self.endpoints, &before.endpoints),
            ("MPTCP limits", &self.limits, &before.limits),
            (
                "net.mptcp.blackhole_timeout",
                &self.blackhole_timeout,
                &before.blackhole_timeout,
            ),
            ("nft ruleset", &self.nft, &before.nft),
        ];
        for (what, now, then) in pairs {
            assert_eq!(
                now, then,
                "{what} is not as the gateway found it\ngateway logs:\n{log}"
            );
        }
    }
}

fn logs(h: &Harness) -> String {
    let mut all = String::new();
    for n in 1..=3 {
        let old = h.log(&format!("gateway-{n}.log"));
        if !old.is_empty() {
            all += &format!("--- run {n}\n{old}");
        }
    }
    all + "--- current run\n" + &h.log("gateway.log")
}

fn record_path(h: &Harness) -> std::path::PathBuf {
    h.state_dir().join("gateway-braid.json")
}

/// Starts the gateway, checks it changed everything the test looks at, and kills it.
fn start_and_kill(h: &mut Harness, before: &Kernel) {
    h.start_gateway(&["wifi", "5g"], EXTRA).expect("gateway");
    h.wait_uplinks_up(&["wifi", "5g"], Duration::from_secs(10))
        .expect("uplinks up");
    let running = Kernel::read(h);
    assert_ne!(running.endpoints, before.endpoints, "no endpoint installed");
    assert_ne!(running.limits, before.limits, "limits not raised");
    assert_eq!(running.blackhole_timeout, "7");
    assert!(running.nft.contains("table inet braid"), "{}", running.nft);
    assert!(record_path(h).exists(), "no state record while running");
    h.kill_gateway().expect("SIGKILL");
    // SIGKILL removes nothing: the premise of the test.
    let left = Kernel::read(h);
    assert!(left.nft.contains("table inet braid") && left.blackhole_timeout == "7");
}

#[test]
fn gateway_killed_then_restarted_leaves_the_kernel_as_found() {
    if !braid_lab::root_tests_enabled("gateway_killed_then_restarted") {
        return;
    }
    let mut h = lab("bcr1");
    let before = Kernel::read(&h);
    start_and_kill(&mut h, &before);

    // A DHCP renewal while braid was dead: the old address's endpoint must not survive.
    h.lab
        .change_uplink_address("wifi", Ipv4Addr::new(10, 1, 0, 7))
        .expect("new address");
    assert!(gw(&h, &["ip", "mptcp", "endpoint", "show"]).contains("10.1.0.1 "));

    h.start_gateway(&["wifi", "5g"], EXTRA).expect("restart");
    let log = h.log("gateway.log");
    assert!(
        log.contains("ended without removing its kernel state"),
        "the restart did not reconcile the killed run's record:\n{log}"
    );
    h.wait_uplinks_up(&["wifi", "5g"], Duration::from_secs(10))
        .expect("uplinks up after the restart");
    let eps = gw(&h, &["ip", "mptcp", "endpoint", "show"]);
    assert!(
        !eps.contains("10.1.0.1 ") && eps.contains("10.1.0.7 "),
        "endpoints after the restart:\n{eps}\n{}",
        logs(&h)
    );

    let status = h.stop_gateway().expect("stop").expect("was running");
    assert!(status.success(), "exit {status}\n{}", logs(&h));
    Kernel::read(&h).assert_as_found_except_own_routes(&before, &logs(&h));
    assert!(
        !record_path(&h).exists(),
        "the record outlived a clean stop"
    );
}

#[test]
fn gateway_killed_then_failing_to_start_leaves_the_kernel_as_found() {
    if !braid_lab::root_tests_enabled("gateway_killed_then_failing_to_start") {
        return;
    }
    let mut h = lab("bcr2");
    let before = Kernel::read(&h);
    start_and_kill(&mut h, &before);

    // Something else takes the redirect port, so the next start fails at its first bind.
    let mut holder = h.lab.command(Role::Gw, env!("CARGO_BIN_EXE_braid"));
    holder
        .args(["lab", "traffic", "serve", "--listen", "0.0.0.0:1100"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let holder = h.lab.spawn_process(Role::Gw, holder).expect("port holder");
    let start = Instant::now();
    while gw(&h, &["ss", "-Hltn", "sport = :1100"]).trim().is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "port 1100 never taken"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let status = h
        .gateway_must_fail(&["wifi", "5g"], EXTRA)
        .expect("failed start");
    holder.kill();
    let log = h.log("gateway.log");
    assert!(!status.success(), "{log}");
    assert!(
        log.contains("cannot listen") && log.contains("redirect"),
        "the start failed for another reason:\n{log}"
    );
    let now = Kernel::read(&h);
    now.assert_as_found_except_own_routes(&before, &logs(&h));
    assert_eq!(now.routes, before.routes, "routes differ\n{}", logs(&h));
    assert!(!record_path(&h).exists(), "the record outlived the undo");
}
