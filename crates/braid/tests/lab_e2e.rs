//! End-to-end tests in the lab: the real `braid server` and `braid gateway` binaries, real
//! kernel MPTCP, real nftables capture, in network namespaces each test makes and removes.
//!
//! Root-only. Without root they skip, except under CI=true, where skipping would hide a broken
//! feature, so they fail instead.

mod common;

use std::time::Duration;

use braid_lab::harness::Harness;
use braid_lab::log_cursor::LogCursor;
use braid_lab::{Role, UplinkSpec};
use common::{exe, shaped_uplinks, unshaped_uplinks};

/// How long the relay may take to log a connection's end after the client's.
const CLOSE_LIMIT: Duration = Duration::from_secs(5);

fn gw(h: &Harness, argv: &[&str]) -> String {
    h.lab
        .run(Role::Gw, argv)
        .unwrap_or_else(|e| panic!("{argv:?} in gw: {e}"))
}

fn echo_ok(h: &Harness, socks: bool, bytes: u64) {
    let target = Harness::traffic_target();
    let socks_addr = Harness::socks_addr();
    let bytes = bytes.to_string();
    let mut args = vec!["echo", "--connect", &target, "--bytes", &bytes];
    if socks {
        args.extend(["--socks", &socks_addr]);
    }
    let v = h.traffic(Role::Lan, &args).unwrap_or_else(|e| {
        panic!(
            "echo (socks={socks}): {e}\ngateway log:\n{}",
            h.log("gateway.log")
        )
    });
    assert_eq!(
        v["ok"],
        true,
        "echo through {} lost or changed bytes: {v}",
        if socks { "SOCKS5" } else { "the capture" }
    );
    assert_eq!(v["sent_sha256"], v["received_sha256"]);
}

/// Waits for the relay's line about a traffic connection that closed after `relay_log`.
fn closed_line(relay_log: &mut LogCursor) -> String {
    relay_log
        .wait_for(":5201: closed", CLOSE_LIMIT)
        .expect("the relay logging the connection's end")
}

#[test]
fn bonded_tunnel_carries_exact_bytes_on_two_subflows_and_cleans_up() {
    if !braid_lab::root_tests_enabled("bonded_tunnel") {
        return;
    }
    let fast = vec![
        UplinkSpec::new("wifi").rate_mbit(200).rtt_ms(2),
        UplinkSpec::new("5g").rate_mbit(100).rtt_ms(4),
    ];
    let mut h = common::running("bte1", fast, "");

    // The kernel state the gateway promised is there while it runs.
    let rules = gw(&h, &["ip", "rule", "show"]);
    for from in ["10.1.0.1", "10.2.0.1"] {
        assert!(
            rules
                .lines()
                .any(|l| l.contains(&format!("from {from}")) && l.contains("proto 212")),
            "no rule from {from}:\n{rules}"
        );
    }
    // An uplink's endpoint is installed just after it is logged Up (the next reconcile): wait.
    common::wait_until(
        "an MPTCP endpoint on each uplink",
        std::time::Duration::from_secs(5),
        || {
            let eps = gw(&h, &["ip", "mptcp", "endpoint", "show"]);
            if eps.contains("10.1.0.1") && eps.contains("10.2.0.1") && eps.contains("subflow") {
                Ok(())
            } else {
                Err(format!("endpoints:\n{eps}"))
            }
        },
    );
    assert!(gw(&h, &["ip", "route", "show", "table", "102"]).contains("default via 10.2.0.2"));
    assert!(gw(&h, &["nft", "list", "tables"]).contains("inet braid"));

    // Random bytes, both directions at once, through the capture and through SOCKS5.
    echo_ok(&h, false, 30_000_000);
    echo_ok(&h, true, 30_000_000);

    // A bulk transfer: the relay must see two subflows on it.
    let mut relay_log = h.log_cursor("server.log");
    let v = h
        .traffic(
            Role::Lan,
            &[
                "get",
                "--connect",
                &Harness::traffic_target(),
                "--secs",
                "3",
            ],
        )
        .expect("download");
    assert!(v["bytes"].as_u64().unwrap_or(0) > 0, "{v}");
    let last = closed_line(&mut relay_log);
    assert!(
        last.contains("transport=mptcp") && last.contains("subflows=2"),
        "expected a 2-subflow MPTCP connection: {last}"
    );

    // SIGTERM with a LAN connection still open: the listeners drain it while the uplink
    // manager has already stopped, and that is a clean exit too (it used to be reported as
    // "the uplink manager stopped unexpectedly", exit status 1).
    let target = Harness::traffic_target();
    let mut open = h
        .lab
        .in_netns(Role::Lan, || std::net::TcpStream::connect(&target))
        .expect("entering lan")
        .expect("connect through the capture");
    let mut hello = vec![3u8]; // the traffic server's echo op
    hello.extend_from_slice(&0u64.to_be_bytes());
    hello.extend_from_slice(b"hello");
    std::io::Write::write_all(&mut open, &hello).expect("send");
    let mut back = [0u8; 5];
    open.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("timeout");
    std::io::Read::read_exact(&mut open, &mut back).expect("echo");
    // SIGTERM: clean exit, nothing left in the kernel.
    let status = h.stop_gateway().expect("stop").expect("was running");
    drop(open);
    assert!(
        status.success(),
        "gateway exit status {status}\n{}",
        h.log("gateway.log")
    );
    assert!(
        !gw(&h, &["ip", "rule", "show"]).contains("proto 212"),
        "rules left behind"
    );
    assert_eq!(
        gw(&h, &["ip", "route", "show", "table", "all", "proto", "212"]).trim(),
        "",
        "routes left behind"
    );
    assert_eq!(
        gw(&h, &["ip", "mptcp", "endpoint", "show"]).trim(),
        "",
        "endpoints left behind"
    );
    assert!(
        !gw(&h, &["nft", "list", "tables"]).contains("braid"),
        "nftables table left behind"
    );
}

#[test]
fn server_with_mptcp_disabled_is_reported_as_fallback() {
    if !braid_lab::root_tests_enabled("fallback") {
        return;
    }
    let mut h = Harness::new("bte3", unshaped_uplinks(), exe()).expect("lab");
    h.lab
        .sysctl(Role::Vps, "net.mptcp.enabled", "0")
        .expect("sysctl");
    h.start_server("").expect("server");
    assert!(
        h.log("server.log").contains("MPTCP UNAVAILABLE"),
        "server did not say MPTCP is unavailable:\n{}",
        h.log("server.log")
    );
    // The gateway says so once, at its first relay connection (a probe may come first).
    let mut gateway_run = h.log_cursor("gateway.log");
    h.start_gateway(&["wifi", "5g"], "").expect("gateway");
    let mut relay_log = h.log_cursor("server.log");
    echo_ok(&h, false, 2_000_000);
    gateway_run
        .wait_for("fell back to plain TCP", Duration::from_secs(5))
        .expect("the gateway reporting the fallback");
    let last = closed_line(&mut relay_log);
    assert!(
        last.contains("transport=tcp") && last.contains("subflows=1"),
        "{last}"
    );
}

/// How long the gateway may take to decide on TFO (it times request/replies through the relay).
const TFO_DECISION_LIMIT: Duration = Duration::from_secs(30);

/// TFO is what these checks count: LAN connections open their own relay connections (the warm
/// pool would serve them on connections opened earlier, without a SYN).
const NO_POOL_AUTO: &str = "fast_open = \"auto\"\nwarm_pool = \"off\"";

fn fastopen_active(h: &Harness) -> u64 {
    let text = h
        .lab
        .run(Role::Gw, &["cat", "/proc/net/netstat"])
        .expect("netstat");
    braid_sys::sysctl::find_counter(&text, "TcpExtTCPFastOpenActive").unwrap_or(0)
}

#[test]
fn tfo_auto_follows_end_to_end_evidence_and_on_refuses_when_impossible() {
    if !braid_lab::root_tests_enabled("tfo") {
        return;
    }
    let mut h = Harness::new("bte4", shaped_uplinks(), exe()).expect("lab");
    h.lab
        .sysctl(Role::Vps, "net.ipv4.tcp_fastopen", "3")
        .expect("sysctl");
    h.start_server("").expect("server");
    let mut run = h.log_cursor("gateway.log");
    h.start_gateway(&["wifi", "5g"], NO_POOL_AUTO)
        .expect("gateway");
    let line = run
        .wait_for("TCP Fast Open o", TFO_DECISION_LIMIT)
        .expect("the TFO decision");
    let enabled = line.contains("TCP Fast Open on:");
    assert!(
        line.contains("Linux"),
        "the decision must name the kernel: {line}"
    );

    // Whatever was decided, requests through the capture never fail, and TFO is used exactly
    // when the gateway says so.
    let before = fastopen_active(&h);
    let v = h
        .traffic(
            Role::Lan,
            &[
                "rr",
                "--connect",
                &Harness::traffic_target(),
                "--count",
                "10",
                "--timeout",
                "10",
            ],
        )
        .expect("rr");
    assert_eq!(v["failures"], 0, "{v}");
    let used = fastopen_active(&h) - before;
    if enabled {
        assert!(
            used >= 5,
            "gateway said TFO on, but only {used} of 10 SYNs carried data ({line})"
        );
    } else {
        assert_eq!(
            used, 0,
            "gateway said TFO off, but {used} SYNs carried data ({line})"
        );
    }
    h.stop_gateway().expect("stop");

    // Where auto found TFO broken end to end, "on" must refuse to start, with the same evidence.
    if !enabled {
        let st = h
            .gateway_must_fail(&["wifi", "5g"], "fast_open = \"on\"")
            .expect("on must fail");
        assert_eq!(st.code(), Some(1), "{}", h.log("gateway.log"));
        let log = h.log("gateway.log");
        assert!(
            log.contains("fast_open = \"on\", but TCP Fast Open cannot work")
                && log.contains("without TFO took"),
            "{log}"
        );
    }

    // Over plain TCP the same kernel does TFO end to end: auto must find that out and use it.
    let mut run = h.log_cursor("gateway.log");
    h.start_gateway(
        &["wifi"],
        "fast_open = \"auto\"\nmptcp = false\nwarm_pool = \"off\"",
    )
    .expect("gateway over TCP");
    let tcp_line = run
        .wait_for("TCP Fast Open o", TFO_DECISION_LIMIT)
        .expect("the TFO decision over TCP");
    assert!(
        tcp_line.contains("TCP Fast Open on:") && tcp_line.contains("over TCP verified"),
        "{tcp_line}"
    );
    let before = fastopen_active(&h);
    let v = h
        .traffic(
            Role::Lan,
            &[
                "rr",
                "--connect",
                &Harness::traffic_target(),
                "--count",
                "10",
                "--timeout",
                "10",
            ],
        )
        .expect("rr");
    assert_eq!(v["failures"], 0, "{v}");
    let used = fastopen_active(&h) - before;
    assert!(used >= 5, "TFO on, but only {used} of 10 SYNs carried data");
    h.stop_gateway().expect("stop");

    // Without the client bit, auto says why; on refuses to start.
    h.lab
        .sysctl(Role::Gw, "net.ipv4.tcp_fastopen", "0")
        .expect("sysctl");
    h.start_gateway(&["wifi"], "fast_open = \"auto\"")
        .expect("gateway");
    assert!(
        h.log("gateway.log")
            .contains("TCP Fast Open off: net.ipv4.tcp_fastopen = 0 lacks the client bit"),
        "{}",
        h.log("gateway.log")
    );
    h.stop_gateway().expect("stop");
    let st = h
        .gateway_must_fail(&["wifi"], "fast_open = \"on\"")
        .expect("on must fail");
    assert_eq!(st.code(), Some(1), "{}", h.log("gateway.log"));
    assert!(
        h.log("gateway.log")
            .contains("fast_open = \"on\", but TCP Fast Open cannot work"),
        "{}",
        h.log("gateway.log")
    );
    // Nothing was installed by the gateway that refused to start.
    assert!(!gw(&h, &["ip", "rule", "show"]).contains("proto 212"));
}
