//! Hostile paths: an uplink whose middlebox strips MPTCP options still bonds, through the
//! encrypted UDP tunnel braid chooses by itself (`tunnel = "auto"`), and moves back when the
//! direct path works again.
//!
//! The middlebox is the lab's `TCPOPTSTRIP --strip-options 30` on one uplink; the firewall that
//! passes no UDP is an nftables drop. Waits are on events (the gateway's log and status API,
//! the kernel's state in each namespace), each with a limit; fixed sleeps only prove that
//! something does not happen. Each test fails when the tunnel is off (`tunnel = "never"`): the
//! stripped uplink then never carries a subflow again.
//! Root-only (skips without root unless CI=true, where it must run).

mod common;

use std::process::Child;
use std::time::{Duration, Instant};

use braid::status::model::Status;
use braid_lab::harness::Harness;
use braid_lab::Role;
use common::{shaped_uplinks, uplink, wait_received, wait_status, wait_until};

/// How long a stripped uplink may take to carry subflows through the tunnel (the issue's
/// budget is a few seconds; the benchmark measures it).
const SWITCH_LIMIT: Duration = Duration::from_secs(8);

/// The demo's uplinks with the server and a gateway; `keys` per uplink, `extra` at the top.
fn lab(prefix: &str, keys: [&str; 2], extra: &str) -> Harness {
    let mut h = Harness::new(prefix, shaped_uplinks(), common::exe()).expect("lab");
    h.start_server("").expect("server");
    h.start_gateway_uplinks(&[("wifi", keys[0]), ("5g", keys[1])], extra)
        .expect("gateway");
    h
}

fn finish_ok(h: &Harness, c: Child, what: &str) {
    let v = h.finish_traffic(c).expect("stream result");
    assert_eq!(
        v["ok"],
        true,
        "{what}: the LAN connection broke or lost bytes: {}\ngateway log:\n{}",
        v["error"],
        h.log("gateway.log")
    );
}

/// A checked download through the capture for `secs`.
fn stream(h: &Harness, secs: u64) -> Child {
    let target = Harness::traffic_target();
    h.spawn_traffic(
        Role::Lan,
        &["stream", "--connect", &target, "--secs", &secs.to_string()],
    )
    .expect("starting the download")
}

/// Waits until `name` carries subflows through its tunnel (path `tunnel`, a tunnel address,
/// and at least one live subflow from it).
#[track_caller]
fn wait_tunnelled(h: &Harness, name: &str, limit: Duration) -> Status {
    let n = name.to_owned();
    wait_status(
        h,
        &format!("{name} to carry subflows through the tunnel"),
        limit,
        move |s| {
            let u = uplink(s, &n);
            u.path == "tunnel" && u.tunnel.is_some() && u.subflows >= 1
        },
    )
}

/// Waits until `name`'s tunnel is up and carries the uplink (no traffic needed).
#[track_caller]
fn wait_tunnel_up(h: &Harness, name: &str, limit: Duration) -> Status {
    let n = name.to_owned();
    wait_status(h, &format!("{name}'s tunnel up"), limit, move |s| {
        let u = uplink(s, &n);
        u.path == "tunnel" && u.tunnel.is_some()
    })
}

/// The relay's established connections on its port from tunnel addresses (`ss` in vps).
fn relay_peers_from_tunnels(h: &Harness) -> Vec<String> {
    let out = h
        .lab
        .run(
            Role::Vps,
            &["ss", "-Htn", "state", "established", "( sport = :8388 )"],
        )
        .unwrap_or_default();
    out.lines()
        .filter_map(|l| l.split_whitespace().last().map(str::to_owned))
        .filter(|peer| peer.starts_with("10.255."))
        .collect()
}

/// Everything braid may leave in gw and vps: tunnel devices, proto-212 rules and routes,
/// endpoints on tunnel addresses.
fn leftovers(h: &Harness) -> Vec<String> {
    let mut left = Vec::new();
    let links = h
        .lab
        .run(Role::Gw, &["ip", "-o", "link", "show"])
        .unwrap_or_default();
    left.extend(
        links
            .lines()
            .filter(|l| l.contains("braid-t"))
            .map(|l| format!("gw link: {l}")),
    );
    let links = h
        .lab
        .run(Role::Vps, &["ip", "-o", "link", "show"])
        .unwrap_or_default();
    left.extend(
        links
            .lines()
            .filter(|l| l.contains("braid8389"))
            .map(|l| format!("vps link: {l}")),
    );
    let rules = h
        .lab
        .run(Role::Gw, &["ip", "rule", "show"])
        .unwrap_or_default();
    left.extend(
        rules
            .lines()
            .filter(|l| {
                !["lookup local", "lookup main", "lookup default"]
                    .iter()
                    .any(|d| l.ends_with(d))
            })
            .map(|l| format!("gw rule: {l}")),
    );
    let routes = h
        .lab
        .run(
            Role::Gw,
            &["ip", "route", "show", "table", "all", "proto", "212"],
        )
        .unwrap_or_default();
    left.extend(routes.lines().map(|l| format!("gw route: {l}")));
    let eps = h
        .lab
        .run(Role::Gw, &["ip", "mptcp", "endpoint", "show"])
        .unwrap_or_default();
    left.extend(eps.lines().map(|l| format!("gw endpoint: {l}")));
    let vps_routes = h
        .lab
        .run(Role::Vps, &["ip", "route", "show"])
        .unwrap_or_default();
    left.extend(
        vps_routes
            .lines()
            .filter(|l| l.starts_with("10.255."))
            .map(|l| format!("vps route: {l}")),
    );
    left
}

#[test]
fn stripped_5g_bonds_through_the_tunnel_and_returns_when_stripping_stops() {
    if !braid_lab::root_tests_enabled("stripped_5g") {
        return;
    }
    let h = lab("btn1", ["", ""], "tunnel_retry_secs = 3");
    h.wait_uplinks_up(&["wifi", "5g"], Duration::from_secs(10))
        .expect("uplinks up");
    let c = common::start_bonded_stream(&h, 30);
    let mut log = h.log_cursor("gateway.log");
    h.lab.set_mptcp_strip("5g", true).expect("strip");
    let stripped = Instant::now();
    log.wait_for("uplink 5g: MPTCP does not pass its path", SWITCH_LIMIT)
        .expect("the evidence, logged");
    wait_tunnelled(&h, "5g", SWITCH_LIMIT);
    let took = stripped.elapsed();
    eprintln!("5g carried subflows through the tunnel {took:?} after stripping began");
    // The tunnel's outer packets are on wan-5g: a real share of 5g's 20 Mbit/s arrives there.
    wait_received(
        &h,
        "5g",
        20_000_000 / 8 / 4,
        Duration::from_secs(3),
        "through the tunnel",
    );
    wait_until(
        "the relay to see a subflow from a tunnel address",
        Duration::from_secs(3),
        || {
            let p = relay_peers_from_tunnels(&h);
            if p.is_empty() {
                Err("none".into())
            } else {
                Ok(p)
            }
        },
    );
    let said = h.log("gateway.log");
    assert_eq!(
        said.matches("uplink 5g: MPTCP does not pass its path")
            .count(),
        1,
        "said once:\n{said}"
    );
    // The middlebox goes away: 5g is direct again within a retry or two, with no LAN reset.
    let mut log = h.log_cursor("gateway.log");
    h.lab.set_mptcp_strip("5g", false).expect("unstrip");
    log.wait_for(
        "uplink 5g: a direct MPTCP connection works again",
        Duration::from_secs(10),
    )
    .expect("moved back");
    wait_status(
        &h,
        "5g direct with a subflow from its own address",
        Duration::from_secs(5),
        |s| {
            let u = uplink(s, "5g");
            u.path == "direct" && u.tunnel.is_none() && u.subflows >= 1
        },
    );
    finish_ok(&h, c, "strip 5g, tunnel, unstrip");
}

#[test]
fn stripped_first_path_starts_new_connections_through_its_tunnel() {
    if !braid_lab::root_tests_enabled("stripped_wifi") {
        return;
    }
    // The warm pool (named here, so that this stays covered whatever the default) holds idle
    // connections opened before the strip, and opens new ones that fall back idle after it:
    // they must count as evidence, and none may be handed out to break.
    let h = lab(
        "btn2",
        ["", ""],
        "tunnel_retry_secs = 30\nwarm_pool = \"auto\"",
    );
    h.wait_uplinks_up(&["wifi", "5g"], Duration::from_secs(10))
        .expect("uplinks up");
    let first = common::start_bonded_stream(&h, 14);
    // wifi, the path connections start on, becomes hostile: the next connection falls back to
    // plain TCP on it, which is the evidence.
    let mut log = h.log_cursor("gateway.log");
    h.lab.set_mptcp_strip("wifi", true).expect("strip");
    let during = stream(&h, 10);
    log.wait_for("uplink wifi: MPTCP does not pass its path", SWITCH_LIMIT)
        .expect("the evidence, logged");
    wait_tunnel_up(&h, "wifi", SWITCH_LIMIT);
    // The pool's idle connections are warm again, with wifi's subflow from its tunnel (those
    // with one on wifi's direct path are gone).
    wait_status(
        &h,
        "a warm pooled connection through wifi's tunnel",
        SWITCH_LIMIT,
        |s| s.warm_pool.as_ref().is_some_and(|p| p.warm >= 1),
    );
    // A new connection starts on wifi's tunnel and bonds over both uplinks.
    let after = stream(&h, 6);
    let s = wait_status(
        &h,
        "a new connection through wifi's tunnel, MPTCP over both uplinks",
        SWITCH_LIMIT,
        |s| {
            uplink(s, "wifi").subflows >= 1
                && s.connections
                    .list
                    .iter()
                    .any(|c| c.transport.to_string() == "mptcp" && c.subflows_per_uplink.len() == 2)
        },
    );
    let tun = uplink(&s, "wifi").tunnel.clone().expect("tunnel").address;
    let peers = relay_peers_from_tunnels(&h);
    assert!(
        peers.iter().any(|p| p.starts_with(&format!("{tun}:"))),
        "the relay sees no connection from wifi's tunnel {tun}: {peers:?}"
    );
    finish_ok(&h, after, "a connection started through the tunnel");
    finish_ok(&h, during, "a connection that fell back during the switch");
    finish_ok(&h, first, "a connection bonded before the strip");
}

#[test]
fn always_tunnels_at_once_and_never_stays_direct_when_stripped() {
    if !braid_lab::root_tests_enabled("always_never") {
        return;
    }
    let h = lab("btn3", ["tunnel = \"never\"", "tunnel = \"always\""], "");
    wait_tunnel_up(&h, "5g", Duration::from_secs(10));
    let c = stream(&h, 8);
    wait_tunnelled(&h, "5g", Duration::from_secs(5));
    h.lab.set_mptcp_strip("wifi", true).expect("strip");
    // Proves that something does not happen: with `never`, wifi stays direct.
    std::thread::sleep(Duration::from_secs(4));
    let s = common::status(&h);
    assert_eq!(
        uplink(&s, "wifi").path,
        "direct",
        "{:?}",
        uplink(&s, "wifi")
    );
    assert!(!h
        .log("gateway.log")
        .contains("uplink wifi: MPTCP does not pass"));
    finish_ok(&h, c, "never/always");
}

#[test]
fn udp_blocked_on_the_stripped_uplink_leaves_it_out_with_the_reason() {
    if !braid_lab::root_tests_enabled("udp_blocked") {
        return;
    }
    let mut h = Harness::new("btn4", shaped_uplinks(), common::exe()).expect("lab");
    h.lab.set_mptcp_strip("5g", true).expect("strip");
    h.lab.set_udp_block("5g", true).expect("udp");
    h.start_server("").expect("server");
    let mut log = h.log_cursor("gateway.log");
    h.start_gateway(&["wifi", "5g"], "").expect("gateway");
    let line = log
        .wait_for(
            "uplink 5g: MPTCP does not pass its path",
            Duration::from_secs(15),
        )
        .expect("the evidence");
    assert!(line.contains("tunnel"), "{line}");
    let out = log
        .wait_for("the uplink is left out", Duration::from_secs(15))
        .expect("the stated message");
    assert!(
        out.contains("UDP") && out.contains("8389") && out.contains("fix:"),
        "{out}"
    );
    let s = wait_status(&h, "5g out", Duration::from_secs(3), |s| {
        uplink(s, "5g").path == "out"
    });
    assert!(
        uplink(&s, "5g").path_reason.contains("UDP"),
        "{:?}",
        uplink(&s, "5g")
    );
    let eps = h
        .lab
        .run(Role::Gw, &["ip", "mptcp", "endpoint", "show"])
        .expect("eps");
    assert!(
        !eps.contains("10.2.0.1"),
        "5g's endpoint is withheld: {eps}"
    );
}

#[test]
fn clean_exit_and_sigkill_then_restart_leave_nothing_on_either_side() {
    if !braid_lab::root_tests_enabled("tunnel_cleanup") {
        return;
    }
    let mut h = lab("btn5", ["", "tunnel = \"always\""], "");
    wait_tunnel_up(&h, "5g", Duration::from_secs(10));
    assert!(!leftovers(&h).is_empty(), "nothing installed?");
    h.stop_gateway().expect("stop");
    assert_eq!(
        leftovers(&h)
            .into_iter()
            .filter(|l| !l.starts_with("vps"))
            .collect::<Vec<_>>(),
        Vec::<String>::new(),
        "after SIGTERM"
    );
    // SIGKILL: the kernel removes the TUN device; the next start undoes the rest.
    h.start_gateway_uplinks(&[("wifi", ""), ("5g", "tunnel = \"always\"")], "")
        .expect("gateway");
    wait_tunnel_up(&h, "5g", Duration::from_secs(10));
    h.kill_gateway().expect("kill");
    let mut log = h.log_cursor("gateway.log");
    h.start_gateway_uplinks(&[("wifi", ""), ("5g", "tunnel = \"never\"")], "")
        .expect("restart");
    log.wait_for("gateway up", Duration::from_secs(10))
        .expect("up");
    h.stop_gateway().expect("stop");
    let gw_left: Vec<String> = leftovers(&h)
        .into_iter()
        .filter(|l| !l.starts_with("vps"))
        .collect();
    assert_eq!(gw_left, Vec::<String>::new(), "after SIGKILL and a restart");
    // The relay's device goes with the relay, however it ends.
    let server = h.daemon_pids()[0];
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    wait_until(
        "the relay's tunnel device to go",
        Duration::from_secs(5),
        || {
            let l = leftovers(&h);
            if l.is_empty() {
                Ok(())
            } else {
                Err(format!("{l:?}"))
            }
        },
    );
}

#[test]
fn a_relay_on_every_address_answers_tunnel_packets_from_the_address_the_gateway_wrote_to() {
    if !braid_lab::root_tests_enabled("tunnel_wildcard") {
        return;
    }
    let mut h = Harness::new("btn7", shaped_uplinks(), common::exe()).expect("lab");
    // The VPS answers from its veth address unless told otherwise; the gateway's tunnel talks to
    // the public address and drops anything else.
    h.relay_on_every_address();
    h.start_server("").expect("server");
    h.start_gateway_uplinks(&[("wifi", ""), ("5g", "tunnel = \"always\"")], "")
        .expect("gateway");
    wait_tunnel_up(&h, "5g", Duration::from_secs(10));
    let c = stream(&h, 6);
    wait_tunnelled(&h, "5g", Duration::from_secs(5));
    finish_ok(&h, c, "tunnel to a relay on every address");
}
