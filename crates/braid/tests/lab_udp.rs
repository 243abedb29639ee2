//! LAN UDP through the gateway's TPROXY capture and the relay, in the lab: numbered, hashed
//! datagrams both ways (none lost on clean links, the losses counted on lossy ones), a real DNS
//! server answering a LAN host, and the sessions in the status API and the metrics.
//!
//! Root-only; under CI=true a missing root fails instead of skipping.

mod common;

use std::time::Duration;

use braid_lab::harness::{Harness, DNS_ANSWER_V4, DNS_NAME};
use braid_lab::{Role, UplinkSpec};
use common::{unshaped_uplinks, wait_status};

/// Runs `braid lab traffic dgram` from the LAN host to the traffic server and returns its JSON
/// (also when datagrams were lost).
fn datagrams(h: &Harness, count: u32, pps: u32) -> serde_json::Value {
    let (count, pps) = (count.to_string(), pps.to_string());
    let child = h
        .spawn_traffic(
            Role::Lan,
            &[
                "dgram",
                "--connect",
                &Harness::traffic_target(),
                "--count",
                &count,
                "--size",
                "1200",
                "--pps",
                &pps,
            ],
        )
        .expect("starting the datagram run");
    h.finish_traffic(child).expect("datagram run output")
}

#[test]
fn datagrams_through_the_capture_arrive_intact_both_ways_on_clean_links() {
    if !braid_lab::root_tests_enabled("lab_udp_clean") {
        return;
    }
    let _serial = common::one_at_a_time();
    let h = common::running("bln3", unshaped_uplinks(), "");
    let mut relay_log = h.log_cursor("server.log");
    let v = datagrams(&h, 2000, 1000);
    assert_eq!(
        v["ok"],
        true,
        "datagrams lost or changed: {v}\ngateway log:\n{}",
        h.log("gateway.log")
    );
    assert_eq!(
        (v["lost_up"].as_u64(), v["lost_down"].as_u64()),
        (Some(0), Some(0)),
        "{v}"
    );
    relay_log
        .wait_for("UDP session", Duration::from_secs(3))
        .expect("the relay carried a UDP session");

    // The gateway's status shows the session, its bytes and the uplink it rides.
    let s = wait_status(
        &h,
        "a UDP session in the status",
        Duration::from_secs(3),
        |s| {
            s.udp
                .list
                .iter()
                .any(|x| x.target == Harness::traffic_target())
        },
    );
    let session = s
        .udp
        .list
        .iter()
        .find(|x| x.target == Harness::traffic_target())
        .expect("listed");
    assert!(session.client.starts_with("10.9.0.2:"), "{session:?}");
    assert!(
        session.up_bytes >= 2000 * 1200 && session.down_bytes >= 2000 * 1200,
        "{session:?}"
    );
    let uplink = session.uplink.clone().expect("the session's uplink");
    assert_eq!(s.udp.uplink.as_deref(), Some(uplink.as_str()));
    assert_eq!(
        common::uplink(&s, &uplink).udp_sessions,
        1,
        "{:?}",
        s.uplinks
    );
    assert_eq!(s.udp.transport.to_string(), "udp");
}

#[test]
fn a_relay_on_every_address_answers_from_the_address_the_gateway_wrote_to() {
    if !braid_lab::root_tests_enabled("lab_udp_wildcard") {
        return;
    }
    let _serial = common::one_at_a_time();
    // The VPS's public address is on lo; its uplink-facing interfaces have their own. A relay on
    // 0.0.0.0 that let the kernel pick the source would answer from those, and the gateway would
    // drop the answers.
    let mut h = Harness::new("bln10", unshaped_uplinks(), common::exe()).expect("lab");
    h.relay_on_every_address();
    h.start_server("").expect("server on 0.0.0.0");
    h.start_gateway(&["wifi", "5g"], "").expect("gateway");
    h.wait_uplinks_up(&["wifi", "5g"], Duration::from_secs(10))
        .expect("uplinks up");
    let v = datagrams(&h, 300, 300);
    assert_eq!(
        v["ok"],
        true,
        "datagrams through a relay on 0.0.0.0: {v}\ngateway log:\n{}",
        h.log("gateway.log")
    );
}

#[test]
fn lossy_uplinks_lose_datagrams_and_the_run_counts_them_per_direction() {
    if !braid_lab::root_tests_enabled("lab_udp_lossy") {
        return;
    }
    let _serial = common::one_at_a_time();
    // 3 % loss each way on both uplinks: with 1000 datagrams, some are lost for sure.
    let lossy = vec![
        UplinkSpec::new("wifi").loss_permille(30),
        UplinkSpec::new("5g").loss_permille(30),
    ];
    let h = common::running("bln4", lossy, "");
    let v = datagrams(&h, 1000, 500);
    let lost = v["lost"].as_u64().expect("lost count");
    let (up, down) = (v["lost_up"].as_u64(), v["lost_down"].as_u64());
    eprintln!("lossy run: {v}");
    assert!(
        lost > 0 && lost < 200,
        "3 % each way should lose some, not most: {v}"
    );
    assert_eq!(up.zip(down).map(|(u, d)| u + d), Some(lost), "{v}");
    assert_eq!(v["corrupted"], 0, "{v}");
}

#[test]
fn a_real_dns_server_behind_the_relay_answers_a_lan_host_through_the_capture() {
    if !braid_lab::root_tests_enabled("lab_udp_dns") {
        return;
    }
    let _serial = common::one_at_a_time();
    let h = common::running("bln5", unshaped_uplinks(), "");
    let server = h.start_dns().expect("dnsmasq in srv");
    let mut relay_log = h.log_cursor("server.log");
    let v = h
        .traffic(
            Role::Lan,
            &[
                "dns", "--server", &server, "--name", DNS_NAME, "--count", "20",
            ],
        )
        .unwrap_or_else(|e| {
            panic!(
                "DNS from the LAN host: {e}\ngateway log:\n{}",
                h.log("gateway.log")
            )
        });
    assert_eq!(v["answers"], serde_json::json!([DNS_ANSWER_V4]), "{v}");
    assert_eq!(v["failures"], 0, "{v}");
    // Twenty lookups from twenty source ports: twenty sessions at the relay.
    relay_log
        .wait_for("UDP session", Duration::from_secs(3))
        .expect("the queries went through the relay");
    let s = wait_status(&h, "the DNS sessions", Duration::from_secs(3), |s| {
        s.udp.list.iter().filter(|x| x.target == server).count() == 20
    });
    assert!(s.udp.sessions_total >= 20, "{:?}", s.udp);
}

/// Runs 8 s of datagrams (`braid lab traffic dgram`, 200 a second, with `mode`'s flags) from
/// the LAN host, blackholes the uplink its session rides once answers flow, waits for the
/// session on the other uplink and for the relay to follow it there, and returns the run's JSON.
fn across_a_blackhole(h: &Harness, mode: &[&str]) -> serde_json::Value {
    let target = Harness::traffic_target();
    let mut args = vec!["dgram", "--connect", &target];
    args.extend_from_slice(mode);
    args.extend_from_slice(&["--count", "1600", "--size", "600", "--pps", "200"]);
    let run = h
        .spawn_traffic(Role::Lan, &args)
        .expect("starting the datagram run");
    let s = wait_status(
        h,
        "the datagram session answered over an uplink",
        Duration::from_secs(3),
        |s| {
            (s.udp.list.iter())
                .any(|x| x.target == target && x.down_bytes > 0 && x.uplink.is_some())
        },
    );
    let carrying = s.udp.uplink.clone().expect("the uplink sessions ride");
    let other = if carrying == "wifi" { "5g" } else { "wifi" };
    let mut relay_log = h.log_cursor("server.log");
    h.lab
        .set_uplink_blackhole(&carrying, true)
        .expect("blackholing the carrying uplink");
    // Detection takes about 1 s (3 lost probes); the rest is slack for a busy machine.
    wait_status(
        h,
        "the session on the other uplink",
        Duration::from_secs(6),
        |s| {
            s.udp.uplink.as_deref() == Some(other)
                && (s.udp.list.iter())
                    .any(|x| x.target == target && x.uplink.as_deref() == Some(other))
        },
    );
    relay_log
        .wait_for("moved from", Duration::from_secs(3))
        .expect("the relay sending the session's replies to its new address");
    let v = h.finish_traffic(run).expect("datagram run output");
    eprintln!("{carrying} blackholed during {mode:?}: {v}");
    v
}

#[test]
fn a_session_whose_uplink_is_blackholed_moves_to_the_other_within_a_second() {
    if !braid_lab::root_tests_enabled("lab_udp_failover") {
        return;
    }
    let _serial = common::one_at_a_time();
    let h = common::running("bln6", unshaped_uplinks(), "");
    // Datagrams both ways: the session moves with its next one.
    let v = across_a_blackhole(&h, &[]);
    let gap = v["longest_gap_ms"].as_f64().expect("gap");
    assert!(gap <= 1000.0, "UDP stalled {gap} ms: {v}");
    assert!(
        v["received"].as_u64().unwrap_or(0) >= 1400,
        "most datagrams must arrive across the failover: {v}"
    );
}

#[test]
fn a_session_that_only_receives_follows_its_uplink_being_blackholed() {
    if !braid_lab::root_tests_enabled("lab_udp_receive_only") {
        return;
    }
    let _serial = common::one_at_a_time();
    let h = common::running("bln11", unshaped_uplinks(), "");
    // The server streams; the LAN host sends only its request, so nothing of its own moves the
    // session when its uplink dies: the gateway must tell the relay.
    let v = across_a_blackhole(&h, &["--download"]);
    let gap = v["longest_gap_ms"].as_f64().expect("gap");
    assert!(gap <= 1500.0, "the download stalled {gap} ms: {v}");
    assert!(
        v["received"].as_u64().unwrap_or(0) >= 1300,
        "most datagrams must arrive across the failover: {v}"
    );
}

/// Drops (`on`) or lets through UDP to the relay's port on every uplink, at the VPS.
fn block_udp_to_relay(h: &Harness, on: bool) {
    let script = if on {
        format!(
            "add table inet blockudp\nadd chain inet blockudp pre {{ type filter hook prerouting priority -300; policy accept; }}\nadd rule inet blockudp pre meta l4proto udp udp dport {} drop\n",
            braid_lab::harness::RELAY_PORT
        )
    } else {
        "delete table inet blockudp\n".to_string()
    };
    let path = h.write("blockudp.nft", &script).expect("nft script");
    h.lab
        .run(Role::Vps, &["nft", "-f", &path.to_string_lossy()])
        .expect("nft in vps");
}

/// The status of doctor's `uplink.NAME.udp` check, run in gw against the gateway's config.
fn udp_check(h: &Harness, uplink: &str) -> String {
    let (_, report) = h
        .doctor(Role::Gw, &h.dir().join("gateway.toml"), &[])
        .expect("braid doctor");
    let id = format!("uplink.{uplink}.udp");
    let check = report["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["id"] == id.as_str()))
        .unwrap_or_else(|| panic!("no {id} in {report}"));
    check["status"].as_str().unwrap_or("?").to_string()
}

#[test]
fn blocked_udp_rides_inside_tcp_and_comes_back_when_udp_works_again() {
    if !braid_lab::root_tests_enabled("lab_udp_over_tcp") {
        return;
    }
    let _serial = common::one_at_a_time();
    let h = common::running("bln8", unshaped_uplinks(), "");
    let server = h.start_dns().expect("dnsmasq in srv");
    let mut log = h.log_cursor("gateway.log");
    block_udp_to_relay(&h, true);
    log.wait_for(
        "UDP to the relay is blocked on every uplink",
        Duration::from_secs(8),
    )
    .expect("the gateway noticing that UDP is blocked");
    let s = wait_status(
        &h,
        "UDP over TCP in the status",
        Duration::from_secs(3),
        |s| s.udp.transport.to_string() == "udp-over-tcp",
    );
    assert_eq!(s.udp.uplink, None, "{:?}", s.udp);
    let mut relay_log = h.log_cursor("server.log");
    let v = h
        .traffic(
            Role::Lan,
            &[
                "dns", "--server", &server, "--name", DNS_NAME, "--count", "10",
            ],
        )
        .unwrap_or_else(|e| panic!("DNS over TCP: {e}\ngateway log:\n{}", h.log("gateway.log")));
    assert_eq!(v["answers"], serde_json::json!([DNS_ANSWER_V4]), "{v}");
    let v = datagrams(&h, 1000, 500);
    assert_eq!(v["ok"], true, "datagrams over TCP: {v}");
    relay_log
        .wait_for("UDP over TCP from", Duration::from_secs(3))
        .expect("the datagrams rode the relay's UDP-over-TCP streams");
    assert_eq!(udp_check(&h, "wifi"), "warn", "doctor while UDP is dropped");

    block_udp_to_relay(&h, false);
    log.wait_for(
        "UDP gets through to the relay again",
        Duration::from_secs(5),
    )
    .expect("the gateway noticing that UDP works again");
    assert_eq!(udp_check(&h, "5g"), "ok", "doctor once UDP gets through");
    let v = datagrams(&h, 500, 500);
    assert_eq!(v["ok"], true, "datagrams after UDP came back: {v}");
    wait_status(
        &h,
        "datagrams again in the status",
        Duration::from_secs(3),
        |s| s.udp.transport.to_string() == "udp" && s.udp.uplink.is_some(),
    );
}

#[test]
fn a_quic_download_survives_its_uplink_being_blackholed() {
    if !braid_lab::root_tests_enabled("lab_udp_quic") {
        return;
    }
    let _serial = common::one_at_a_time();
    let h = common::running("bln10", common::shaped_uplinks(), "");
    let server = format!("{}:4433", braid_lab::Lab::SRV);
    let mut cmd = h.lab.command(Role::Srv, &common::exe().to_string_lossy());
    cmd.args(["lab", "traffic", "quic-serve", "--listen", &server]);
    h.lab.spawn(Role::Srv, cmd).expect("QUIC server");
    // About 5 s at wifi's 40 Mbit/s.
    let run = h
        .spawn_traffic(
            Role::Lan,
            &["quic-get", "--connect", &server, "--bytes", "25000000"],
        )
        .expect("starting the QUIC download");
    let s = wait_status(
        &h,
        "the QUIC session moving bytes",
        Duration::from_secs(5),
        |s| {
            s.udp
                .list
                .iter()
                .any(|x| x.target == server && x.down_bytes > 2_000_000 && x.uplink.is_some())
        },
    );
    let carrying = s.udp.uplink.clone().expect("the uplink sessions ride");
    let other = if carrying == "wifi" { "5g" } else { "wifi" };
    h.lab
        .set_uplink_blackhole(&carrying, true)
        .expect("blackholing the carrying uplink");
    // Detection takes about 1 s (3 lost probes); the rest is slack for a busy machine.
    wait_status(
        &h,
        "the QUIC session on the other uplink",
        Duration::from_secs(6),
        |s| {
            s.udp
                .list
                .iter()
                .any(|x| x.target == server && x.uplink.as_deref() == Some(other))
        },
    );
    let v = h.finish_traffic(run).expect("QUIC download output");
    eprintln!(
        "QUIC run: ok={} bytes={} secs={} longest_gap_ms={} error={}",
        v["ok"], v["bytes"], v["secs"], v["longest_gap_ms"], v["error"]
    );
    assert_eq!(v["ok"], true, "the QUIC transfer did not survive: {v}");
    assert_eq!(v["bytes"], 25_000_000u64);
}
