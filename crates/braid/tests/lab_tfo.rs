//! TCP Fast Open over MPTCP on the running kernel, end to end in the lab.
//!
//! On Linux 6.2 to 6.18 an MPTCP server holds back a reply written before the third ACK of a TFO
//! handshake (docs/TFO-MPTCP.md). braid's relay pushes such replies, so `fast_open = "auto"` must
//! find TFO working over MPTCP and use it. With the push switched off (`BRAID_TFO_PUSH=off`, the
//! kernel's own behaviour) the same check must find the stall, turn TFO off with the kernel's
//! reason, and `fast_open = "on"` must refuse to start.
//!
//! Root-only; under CI=true a missing root is a failure, not a skip.

mod common;

use std::time::Duration;

use braid_lab::harness::Harness;
use braid_lab::log_cursor::LogCursor;
use braid_lab::Role;

fn fastopen_active(h: &Harness) -> u64 {
    let text = h
        .lab
        .run(Role::Gw, &["cat", "/proc/net/netstat"])
        .expect("netstat");
    braid_sys::sysctl::find_counter(&text, "TcpExtTCPFastOpenActive").unwrap_or(0)
}

/// The gateway's one TFO decision line, written after `c` was taken.
fn decision(c: &mut LogCursor) -> String {
    c.wait_for("TCP Fast Open o", Duration::from_secs(30))
        .expect("the TFO decision")
}

/// 10 fresh requests through the capture; a reply held back for 2 s counts as a failure.
/// Returns how many of their SYNs carried data.
fn requests_through_capture(h: &Harness) -> u64 {
    let before = fastopen_active(h);
    let target = Harness::traffic_target();
    let v = h
        .traffic(
            Role::Lan,
            &[
                "rr",
                "--connect",
                &target,
                "--count",
                "10",
                "--timeout",
                "2",
            ],
        )
        .expect("rr");
    assert_eq!(v["failures"], 0, "a request got no reply within 2 s: {v}");
    fastopen_active(h) - before
}

/// TFO is what these checks count: LAN connections open their own relay connections (the warm
/// pool would serve them on connections opened earlier, without a SYN).
const NO_POOL_AUTO: &str = "fast_open = \"auto\"\nwarm_pool = \"off\"";

#[test]
fn mptcp_relay_that_pushes_held_replies_gets_tfo_and_one_that_does_not_is_refused() {
    if !braid_lab::root_tests_enabled("lab_tfo") {
        return;
    }
    let mut h = Harness::new("btf1", common::shaped_uplinks(), common::exe()).expect("lab");
    h.lab
        .sysctl(Role::Vps, "net.ipv4.tcp_fastopen", "3")
        .expect("sysctl");

    // braid's relay: auto verifies TFO over MPTCP end to end and uses it.
    h.start_server("").expect("server");
    let mut c = h.log_cursor("gateway.log");
    h.start_gateway(&["wifi", "5g"], NO_POOL_AUTO)
        .expect("gateway");
    let line = decision(&mut c);
    assert!(
        line.contains("TCP Fast Open on:") && line.contains("over MPTCP verified"),
        "{line}"
    );
    let used = requests_through_capture(&h);
    assert!(used >= 5, "TFO on, but only {used} of 10 SYNs carried data");
    let slog = h.log("server.log");
    assert!(
        slog.contains("left SYN_RECV") && slog.contains("queued reply pushed: true"),
        "the relay never pushed a reply written in SYN_RECV:\n{slog}"
    );
    h.stop_gateway().expect("stop");
    h.stop_server().expect("stop");

    // The kernel alone holds replies back; only kernels known to do so are checked.
    let kernel = braid_sys::kernel::KernelRelease::running();
    let holds_back = kernel.at_least(6, 2) && !kernel.at_least(6, 19);
    if !holds_back {
        eprintln!(
            "Linux {}: the stall without the relay's push is known on 6.2 to 6.18 only; not checked",
            kernel.release
        );
        return;
    }
    h.start_server_with_prefix(&["env", "BRAID_TFO_PUSH=off"], "")
        .expect("server without the push");
    let mut c = h.log_cursor("gateway.log");
    h.start_gateway(&["wifi", "5g"], NO_POOL_AUTO)
        .expect("gateway");
    let line = decision(&mut c);
    assert!(
        line.contains("TCP Fast Open off:")
            && line.contains("third ACK")
            && line.contains(&kernel.release),
        "{line}"
    );
    assert_eq!(
        requests_through_capture(&h),
        0,
        "TFO off, but SYNs carried data"
    );
    h.stop_gateway().expect("stop");
    let st = h
        .gateway_must_fail(&["wifi", "5g"], "fast_open = \"on\"")
        .expect("on must fail");
    assert_eq!(st.code(), Some(1), "{}", h.log("gateway.log"));
    let log = h.log("gateway.log");
    assert!(
        log.contains("fast_open = \"on\", but TCP Fast Open cannot work")
            && log.contains("third ACK"),
        "{log}"
    );
}
