//! End-to-end tests in the lab: the real `braid server` and `braid gateway` binaries, real
//! kernel MPTCP, real nftables capture, in network namespaces each test makes and removes.
//!
//! Root-only. Without root they skip, except under CI=true, where skipping would hide a broken
//! feature, so they fail instead.

use std::path::Path;

use braid::lab::harness::Harness;
use braid_lab::{Lab, Role, UplinkSpec};

fn exe() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_braid"))
}

fn uplinks(rate: Option<u32>, rtts: [u32; 2]) -> Vec<UplinkSpec> {
    vec![
        UplinkSpec {
            name: "wifi".into(),
            rate_mbit: rate,
            rtt_ms: rtts[0],
            loss_permille: 0,
        },
        UplinkSpec {
            name: "5g".into(),
            rate_mbit: rate.map(|r| r / 2),
            rtt_ms: rtts[1],
            loss_permille: 0,
        },
    ]
}

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

fn closed_lines(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains(":5201: closed"))
        .map(String::from)
        .collect()
}

#[test]
fn bonded_tunnel_carries_exact_bytes_on_two_subflows_and_cleans_up() {
    if !braid_lab::root_tests_enabled("bonded_tunnel") {
        return;
    }
    let mut h = Harness::new("bte1", uplinks(Some(200), [2, 4]), exe()).expect("lab");
    h.start_server("").expect("server");
    h.start_gateway(&["wifi", "5g"], "").expect("gateway");
    h.wait_uplinks_up(&["wifi", "5g"], std::time::Duration::from_secs(10))
        .expect("uplinks up");

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
    let eps = gw(&h, &["ip", "mptcp", "endpoint", "show"]);
    assert!(
        eps.contains("10.1.0.1") && eps.contains("10.2.0.1") && eps.contains("subflow"),
        "endpoints:\n{eps}"
    );
    assert!(gw(&h, &["ip", "route", "show", "table", "102"]).contains("default via 10.2.0.2"));
    assert!(gw(&h, &["nft", "list", "tables"]).contains("inet braid"));

    // Random bytes, both directions at once, through the capture and through SOCKS5.
    echo_ok(&h, false, 30_000_000);
    echo_ok(&h, true, 30_000_000);

    // A bulk transfer: the relay must see two subflows on it.
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
    std::thread::sleep(std::time::Duration::from_millis(300));
    let log = h.log("server.log");
    let last = closed_lines(&log)
        .pop()
        .unwrap_or_else(|| panic!("no relayed connection in the server log:\n{log}"));
    assert!(
        last.contains("transport=mptcp") && last.contains("subflows=2"),
        "expected a 2-subflow MPTCP connection: {last}"
    );

    // SIGTERM: clean exit, nothing left in the kernel.
    let status = h.stop_gateway().expect("stop").expect("was running");
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
    let mut h = Harness::new("bte3", uplinks(None, [0, 0]), exe()).expect("lab");
    h.lab
        .sysctl(Role::Vps, "net.mptcp.enabled", "0")
        .expect("sysctl");
    h.start_server("").expect("server");
    assert!(
        h.log("server.log").contains("MPTCP UNAVAILABLE"),
        "server did not say MPTCP is unavailable:\n{}",
        h.log("server.log")
    );
    h.start_gateway(&["wifi", "5g"], "").expect("gateway");
    echo_ok(&h, false, 2_000_000);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let glog = h.log("gateway.log");
    assert!(
        glog.contains("fell back to plain TCP"),
        "gateway did not report the fallback:\n{glog}"
    );
    let slog = h.log("server.log");
    let last = closed_lines(&slog).pop().expect("a relayed connection");
    assert!(
        last.contains("transport=tcp") && last.contains("subflows=1"),
        "{last}"
    );
}

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
    let mut h = Harness::new("bte4", uplinks(Some(40), [10, 40]), exe()).expect("lab");
    h.lab
        .sysctl(Role::Vps, "net.ipv4.tcp_fastopen", "3")
        .expect("sysctl");
    h.start_server("").expect("server");
    h.start_gateway(&["wifi", "5g"], "fast_open = \"auto\"")
        .expect("gateway");
    h.wait_log(
        "gateway.log",
        "TCP Fast Open o",
        "the TFO decision",
        std::time::Duration::from_secs(30),
    )
    .expect("decision");
    let log = h.log("gateway.log");
    let line = log
        .lines()
        .find(|l| l.contains("TCP Fast Open o"))
        .unwrap_or_default()
        .to_string();
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
    h.start_gateway(&["wifi"], "fast_open = \"auto\"\nmptcp = false")
        .expect("gateway over TCP");
    h.wait_log(
        "gateway.log",
        "TCP Fast Open o",
        "the TFO decision",
        std::time::Duration::from_secs(30),
    )
    .expect("decision");
    let log = h.log("gateway.log");
    let tcp_line = log
        .lines()
        .find(|l| l.contains("TCP Fast Open o"))
        .unwrap_or_default()
        .to_string();
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
    let _ = Lab::VPS_PUBLIC;
}
