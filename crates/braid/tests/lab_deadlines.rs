//! Deadlines, in the lab: when an uplink's address changes (a DHCP lease, a 5G reattach) the
//! gateway's old probe stream goes quiet without a FIN, and the relay must let go of it; the
//! sockets it keeps carry TCP keepalive.
//! Root-only (skips without root unless CI=true, where it must run).

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use braid_lab::harness::{Harness, RELAY_PORT};
use braid_lab::{Role, UplinkSpec};

/// The relay's TCP sockets (any state) whose peer is `peer`, as `ss` lists them.
fn relay_sockets_from(h: &Harness, peer: Ipv4Addr) -> Vec<String> {
    let out = h
        .lab
        .run(
            Role::Vps,
            &[
                "ss",
                "-tanoH",
                "sport",
                "=",
                &format!(":{RELAY_PORT}"),
                "dst",
                &peer.to_string(),
            ],
        )
        .unwrap_or_default();
    out.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("TIME-WAIT"))
        .map(str::to_string)
        .collect()
}

#[test]
fn probe_stream_of_an_address_that_went_away_is_released_by_the_relay() {
    if !braid_lab::root_tests_enabled("probe_stream_leak") {
        return;
    }
    let mut h = Harness::new(
        "bhd4",
        vec![UplinkSpec::new("wifi")],
        Path::new(env!("CARGO_BIN_EXE_braid")),
    )
    .expect("lab");
    h.start_server("").expect("server");
    h.start_gateway(&["wifi"], "").expect("gateway");
    h.wait_uplinks_up(&["wifi"], Duration::from_secs(10))
        .expect("up");
    let old = h.lab.uplink_gw_addr("wifi");
    let before = relay_sockets_from(&h, old);
    assert!(
        !before.is_empty(),
        "no probe stream from {old} on the relay to begin with"
    );
    // Every socket the relay holds for the gateway has keepalive running.
    for l in &before {
        assert!(l.contains("timer:(keepalive"), "no keepalive on: {l}");
    }

    let new = Ipv4Addr::new(10, 1, 0, 7);
    h.lab
        .change_uplink_address("wifi", new)
        .expect("new address");
    let start = Instant::now();
    let mut left = relay_sockets_from(&h, old);
    while !left.is_empty() && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(200));
        left = relay_sockets_from(&h, old);
    }
    assert!(
        left.is_empty(),
        "the relay still holds the old address's streams after {:?}:\n{}\nserver log:\n{}",
        start.elapsed(),
        left.join("\n"),
        h.log("server.log")
    );
    eprintln!("old probe stream released after {:?}", start.elapsed());
    // The uplink probes on from its new address.
    while relay_sockets_from(&h, new).is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no probe stream from the new address {new}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
