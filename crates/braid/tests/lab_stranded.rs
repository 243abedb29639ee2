//! A relay connection the kernel leaves without any subflow is given up, and its LAN client
//! gets a reset instead of hanging.
//!
//! The relay here accepts no joins (`ip mptcp limits set subflows 0` in its namespace), so each
//! connection has only the subflow it started on. When that uplink goes down, braid withdraws
//! its endpoint, the kernel closes the subflow, and the connection lives on with none, while
//! the other uplink is up: nothing in the kernel will ever add one. Without braid's rule
//! (`braid_proto::stranded`) the LAN client's read waits forever; with it the client is reset
//! after the grace, and status and the log say why.
//! Root-only (skips without root unless CI=true, where it must run).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use braid_lab::harness::Harness;
use braid_lab::Role;
use braid_proto::health::LinkState;
use common::{shaped_uplinks, uplink, wait_status};

/// The lab traffic server's echo op (`braid_lab::traffic::op::ECHO`).
const ECHO: u8 = 3;

#[test]
fn a_connection_left_without_a_subflow_is_reset_not_left_hanging() {
    if !braid_lab::root_tests_enabled("lab_stranded") {
        return;
    }
    let mut h = Harness::new("bsd1", shaped_uplinks(), common::exe()).expect("lab");
    h.lab
        .run(
            Role::Vps,
            &["ip", "mptcp", "limits", "set", "subflows", "0"],
        )
        .expect("relay refuses joins");
    h.start_server("").expect("server");
    h.start_gateway(&["wifi", "5g"], "fast_open = \"off\"")
        .expect("gateway");
    h.wait_uplinks_up(&["wifi", "5g"], Duration::from_secs(10))
        .expect("uplinks up");

    // A LAN connection through the capture, echoing: the socket keeps the LAN namespace.
    let target = Harness::traffic_target();
    let mut lan = h
        .lab
        .in_netns(Role::Lan, || TcpStream::connect(&target))
        .expect("entering lan")
        .expect("connect through the capture");
    lan.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut hello = vec![ECHO];
    hello.extend_from_slice(&0u64.to_be_bytes());
    hello.extend_from_slice(b"hello");
    lan.write_all(&hello).expect("send");
    let mut back = [0u8; 5];
    lan.read_exact(&mut back).expect("first echo");
    assert_eq!(&back, b"hello");

    // The uplink its only subflow rides.
    let s = wait_status(
        &h,
        "the LAN connection listed with its subflow",
        Duration::from_secs(5),
        |s| {
            s.connections.list.len() == 1
                && s.connections.list[0]
                    .subflows_per_uplink
                    .values()
                    .sum::<u32>()
                    == 1
        },
    );
    let carrier = s.connections.list[0]
        .subflows_per_uplink
        .iter()
        .find(|(_, n)| **n > 0)
        .map(|(name, _)| name.clone())
        .expect("an uplink with its subflow");
    let other = if carrier == "wifi" { "5g" } else { "wifi" };
    assert_eq!(s.connections.stranded_total, 0);

    h.lab.set_uplink_link(&carrier, false).expect("link down");
    let c = carrier.clone();
    wait_status(
        &h,
        &format!("{carrier} Down"),
        Duration::from_secs(5),
        move |s| uplink(s, &c).state == LinkState::Down,
    );
    let down_at = Instant::now();

    // The other uplink stays up the whole time: a stranded connection, not an outage.
    let o = other.to_owned();
    let s = wait_status(
        &h,
        "the connection given up",
        Duration::from_secs(15),
        move |s| {
            assert!(
                uplink(s, &o).state.carries_traffic(),
                "{o} stopped carrying traffic"
            );
            s.connections.stranded_total == 1
        },
    );
    assert!(s.connections.list.is_empty(), "{:?}", s.connections.list);
    // The LAN client learns it from a reset, not from its own timeout.
    lan.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut buf = [0u8; 16];
    let got = lan.read(&mut buf);
    let waited = down_at.elapsed();
    match got {
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!(
            "the LAN client got {other:?} {waited:?} after {carrier} went Down, not a reset\ngateway log:\n{}",
            h.log("gateway.log")
        ),
    }
    let log = h.log("gateway.log");
    assert!(
        log.contains("no subflow left"),
        "the gateway does not say why:\n{log}"
    );
    let metrics = common::metrics(&h);
    assert!(
        metrics.contains("braid_connections_stranded_total 1"),
        "{metrics}"
    );
}
