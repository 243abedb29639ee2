//! IPv6 end to end in the lab (every link has IPv6): the relay on the VPS's IPv6 address, the
//! uplinks' IPv6 addresses with their own tables, rules and MPTCP endpoints, and a LAN host's
//! IPv6 TCP and UDP through the dual-stack capture, the TCP on subflows over both uplinks.
//!
//! Root-only; under CI=true a missing root fails instead of skipping.

mod common;

use std::time::Duration;

use braid_lab::harness::Harness;
use braid_lab::Role;
use common::unshaped_uplinks;

fn gw(h: &Harness, argv: &[&str]) -> String {
    h.lab
        .run(Role::Gw, argv)
        .unwrap_or_else(|e| panic!("{argv:?} in gw: {e}"))
}

#[test]
fn ipv6_relay_uplinks_and_lan_tcp_and_udp_through_the_capture() {
    if !braid_lab::root_tests_enabled("lab_ipv6") {
        return;
    }
    let mut h = Harness::new("bln9", unshaped_uplinks(), common::exe()).expect("lab");
    h.use_ipv6_relay();
    h.start_server("").expect("server on IPv6");
    h.start_gateway(&["wifi", "5g"], "").expect("gateway");
    h.wait_uplinks_up(&["wifi", "5g"], Duration::from_secs(10))
        .expect("uplinks up over IPv6");

    // Per-uplink IPv6 state: rules from the uplinks' IPv6 addresses, endpoints on them.
    let rules = gw(&h, &["ip", "-6", "rule", "show"]);
    let eps = gw(&h, &["ip", "mptcp", "endpoint", "show"]);
    for name in ["wifi", "5g"] {
        let a = h.lab.uplink_gw_addr6(name).to_string();
        assert!(
            rules
                .lines()
                .any(|l| l.contains(&format!("from {a}")) && l.contains("proto 212")),
            "no IPv6 rule from {a}:\n{rules}"
        );
        assert!(eps.contains(&a), "no endpoint on {a}:\n{eps}");
    }

    // LAN TCP over IPv6, through the capture, bonded over both uplinks.
    let target = Harness::traffic_target6();
    let mut relay_log = h.log_cursor("server.log");
    let v = h
        .traffic(
            Role::Lan,
            &["echo", "--connect", &target, "--bytes", "30000000"],
        )
        .unwrap_or_else(|e| panic!("IPv6 echo: {e}\ngateway log:\n{}", h.log("gateway.log")));
    assert_eq!(v["ok"], true, "IPv6 TCP through the capture: {v}");
    let closed = relay_log
        .wait_for("]:5201: closed", Duration::from_secs(5))
        .expect("the relay logging the IPv6 connection");
    assert!(
        closed.contains("transport=mptcp") && closed.contains("subflows=2"),
        "expected 2 IPv6 subflows: {closed}"
    );

    // LAN UDP over IPv6, through TPROXY and the relay.
    let v = h
        .traffic(
            Role::Lan,
            &[
                "dgram",
                "--connect",
                &target,
                "--count",
                "1000",
                "--pps",
                "500",
            ],
        )
        .unwrap_or_else(|e| {
            panic!(
                "IPv6 datagrams: {e}\ngateway log:\n{}",
                h.log("gateway.log")
            )
        });
    assert_eq!(v["ok"], true, "IPv6 UDP through the capture: {v}");
    // And IPv4 still goes through the IPv6 relay.
    let v = h
        .traffic(
            Role::Lan,
            &[
                "echo",
                "--connect",
                &Harness::traffic_target(),
                "--bytes",
                "1000000",
            ],
        )
        .expect("IPv4 echo over the IPv6 relay");
    assert_eq!(v["ok"], true, "{v}");
}
