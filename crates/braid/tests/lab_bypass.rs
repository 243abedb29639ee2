//! Local destinations are left alone: with the capture on, a LAN host reaches a private address
//! behind the gateway (the "modem's admin page") and a public-looking address on another LAN
//! segment directly, TCP and UDP, and none of that traffic reaches the relay; the traffic server, forced
//! through the relay by `capture`, still goes through it.
//!
//! Root-only; under CI=true a missing root fails instead of skipping.

mod common;

use std::time::Duration;

use braid_lab::harness::Harness;
use braid_lab::Role;
use common::{unshaped_uplinks, wait_until};

/// A second traffic server's port (the harness's own listens on 5201 in srv).
const LOCAL_PORT: &str = "5202";
/// Another LAN segment behind the gateway: gw `seg2` 198.51.100.1 ── srv `seg2p` 198.51.100.2.
/// Global-looking on purpose: only the route through a non-uplink interface makes it local.
const SEGMENT_GW: &str = "198.51.100.1";
const SEGMENT_HOST: &str = "198.51.100.2";

fn run(h: &Harness, role: Role, argv: &[&str]) {
    h.lab
        .run(role, argv)
        .unwrap_or_else(|e| panic!("{argv:?} in {role:?}: {e}"));
}

/// Starts `braid lab traffic serve` on `listen` in `role` (killed with the lab).
fn serve(h: &Harness, role: Role, listen: &str) {
    let mut cmd = h.lab.command(role, &common::exe().to_string_lossy());
    cmd.args(["lab", "traffic", "serve", "--listen", listen]);
    h.lab.spawn(role, cmd).expect("starting a traffic server");
}

/// Echoes a few hundred KB from the LAN host to `target`, retrying while the server starts;
/// panics with the last error after a few seconds.
fn echo_from_lan(h: &Harness, target: &str) {
    wait_until(
        &format!("an exact echo from the LAN host to {target}"),
        Duration::from_secs(8),
        || match h.traffic(
            Role::Lan,
            &["echo", "--connect", target, "--bytes", "300000"],
        ) {
            Ok(v) if v["ok"] == true => Ok(()),
            Ok(v) => Err(format!("bytes differ: {v}")),
            Err(e) => Err(e.to_string()),
        },
    );
}

#[test]
fn local_destinations_go_out_directly_and_never_reach_the_relay() {
    if !braid_lab::root_tests_enabled("lab_bypass") {
        return;
    }
    let h = common::running("bln1", unshaped_uplinks(), "");
    // The wifi uplink's next hop stands in for a modem's admin page (192.168.8.1 on a real
    // 5G modem): private, and behind the gateway.
    let modem = format!("{}:{LOCAL_PORT}", h.lab.uplink_vps_addr("wifi"));
    serve(&h, Role::Vps, &modem);
    // A real router masquerades its LAN toward the modem; the lab routes it back instead.
    let wifi_gw = h.lab.uplink_gw_addr("wifi").to_string();
    run(
        &h,
        Role::Vps,
        &["ip", "route", "add", "10.9.0.0/24", "via", &wifi_gw],
    );
    // Another LAN segment, routed through an interface that is not an uplink.
    run(
        &h,
        Role::Gw,
        &[
            "ip",
            "link",
            "add",
            "seg2",
            "type",
            "veth",
            "peer",
            "name",
            "seg2p",
            "netns",
            &h.lab.ns_name(Role::Srv),
        ],
    );
    run(
        &h,
        Role::Gw,
        &[
            "ip",
            "addr",
            "add",
            &format!("{SEGMENT_GW}/24"),
            "dev",
            "seg2",
        ],
    );
    run(&h, Role::Gw, &["ip", "link", "set", "seg2", "up"]);
    run(
        &h,
        Role::Srv,
        &[
            "ip",
            "addr",
            "add",
            &format!("{SEGMENT_HOST}/24"),
            "dev",
            "seg2p",
        ],
    );
    run(&h, Role::Srv, &["ip", "link", "set", "seg2p", "up"]);
    run(
        &h,
        Role::Srv,
        &["ip", "route", "add", "10.9.0.0/24", "via", SEGMENT_GW],
    );
    let segment = format!("{SEGMENT_HOST}:{LOCAL_PORT}");
    serve(&h, Role::Srv, &segment);

    let mut relay_log = h.log_cursor("server.log");
    echo_from_lan(&h, &modem);
    echo_from_lan(&h, &segment);
    // UDP too: the same steering decides for the TPROXY chain.
    for local in [&modem, &segment] {
        let v = h
            .traffic(
                Role::Lan,
                &[
                    "dgram",
                    "--connect",
                    local,
                    "--count",
                    "200",
                    "--pps",
                    "400",
                ],
            )
            .unwrap_or_else(|e| panic!("datagrams to {local}: {e}"));
        assert_eq!(v["ok"], true, "UDP to {local}: {v}");
    }
    // The traffic server is forced through the relay by the harness's `capture`: its line in
    // the relay's log also shows the log has caught up with everything before it.
    echo_from_lan(&h, &Harness::traffic_target());
    relay_log
        .wait_for(":5201: closed", Duration::from_secs(5))
        .expect("the captured connection through the relay");
    let seen = relay_log.new_lines();
    for local in [&modem, &segment] {
        assert!(
            !seen.contains(local.as_str()),
            "{local} reached the relay:\n{seen}"
        );
    }
    let rules = h
        .lab
        .run(Role::Gw, &["nft", "list", "table", "inet", "braid"])
        .expect("nft list");
    assert!(
        rules.contains("ip daddr @bypass4 return") && rules.contains("fib daddr oifname"),
        "{rules}"
    );
}
