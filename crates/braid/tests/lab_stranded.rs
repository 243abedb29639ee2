//! A relay connection the kernel leaves without any subflow is given up, and its LAN client
//! gets a reset instead of hanging.
//!
//! The relay here accepts no joins (`ip mptcp limits set subflows 0` in its namespace), so each
//! connection has only the subflow it started on. It runs with the in-kernel path manager
//! (`bond_after_kib = 0`), as a stock Shadowsocks server does: that one decides when a
//! connection begins whether it will ever take a join. When the uplink goes down, braid
//! withdraws its endpoint, the kernel closes the subflow, and the connection lives on with
//! none, while the other uplink is up: nothing will ever add one, not even when the uplink
//! returns and the relay's limit is raised (shown here). (braid's own path manager decides at
//! each join, so with it such a connection does get its subflow back when the uplink returns
//! at once.) Without braid's rule
//! (`braid_proto::stranded`) the LAN client's read waits forever; with it the client is reset
//! about a second after the subflow closed, and status and the log say why. A connection whose
//! request never reached the relay (it drops every data packet to its port here) keeps its
//! subflow on the dead uplink, established, but no join can rescue it either: it is reset
//! within about a second too.
//! Root-only (skips without root unless CI=true, where it must run).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use braid_lab::harness::Harness;
use braid_lab::Role;
use braid_proto::health::LinkState;
use common::{shaped_uplinks, uplink, wait_status};

/// The lab with `relay_setup` run in the relay's namespace before the server starts, the
/// gateway up on both uplinks, and one LAN connection through the capture that has sent
/// `hello` (an echo request); with the uplink name its only subflow rides and the other's.
fn stranded_lab(prefix: &str, relay_setup: &[&str]) -> (Harness, TcpStream, String, String) {
    let mut h = Harness::new(prefix, shaped_uplinks(), common::exe()).expect("lab");
    h.start_server("bond_after_kib = 0").expect("server");
    // Fresh connections: each starts on one subflow (the warm pool's are covered in lab_pool).
    h.start_gateway(&["wifi", "5g"], "fast_open = \"off\"\nwarm_pool = \"off\"")
        .expect("gateway");
    h.wait_uplinks_up(&["wifi", "5g"], Duration::from_secs(10))
        .expect("uplinks up");
    h.lab.run(Role::Vps, relay_setup).expect("relay setup");
    let mut lan = common::open_echo(&h);
    lan.write_all(b"hello").expect("send");
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
    let other = if carrier == "wifi" { "5g" } else { "wifi" }.to_owned();
    assert_eq!(s.connections.stranded_total, 0);
    (h, lan, carrier, other)
}

/// Takes `carrier` down (and up again once braid saw it Down, with `back`) and waits until the
/// gateway has given the connection up, `other` carrying traffic throughout; then the LAN
/// client must read a reset, and the gateway's log must say `why`.
fn expect_reset(
    h: &Harness,
    lan: &mut TcpStream,
    (carrier, other): (&str, &str),
    back: bool,
    why: &str,
) {
    h.lab.set_uplink_link(carrier, false).expect("link down");
    let c = carrier.to_owned();
    wait_status(
        h,
        &format!("{carrier} Down"),
        Duration::from_secs(5),
        move |s| uplink(s, &c).state == LinkState::Down,
    );
    let down_at = Instant::now();
    if back {
        h.lab.set_uplink_link(carrier, true).expect("link up");
        let c = carrier.to_owned();
        wait_status(
            h,
            &format!("{carrier} Up again"),
            Duration::from_secs(10),
            move |s| uplink(s, &c).state == LinkState::Up,
        );
    }
    let o = other.to_owned();
    let s = wait_status(
        h,
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
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
            eprintln!("lab_stranded: the LAN client was reset {waited:?} after {carrier} went Down ({why})");
        }
        other => panic!(
            "the LAN client got {other:?} {waited:?} after {carrier} went Down, not a reset\ngateway log:\n{}",
            h.log("gateway.log")
        ),
    }
    let log = h.log("gateway.log");
    assert!(
        log.contains(why),
        "the gateway does not say {why:?}:\n{log}"
    );
    let metrics = common::metrics(h);
    assert!(
        metrics.contains("braid_connections_stranded_total 1"),
        "{metrics}"
    );
}

/// What the gateway logs for an answered connection whose last subflow closed.
const LAST_SUBFLOW_CLOSED: &str = "last subflow closed with the uplink it rode";

/// The lab of [`stranded_lab`] with a relay that takes no joins, so the LAN connection keeps
/// only the subflow it started on, and whose first echo came back: the relay answered.
fn answered_lab(prefix: &str) -> (Harness, TcpStream, String, String) {
    let (h, mut lan, carrier, other) =
        stranded_lab(prefix, &["ip", "mptcp", "limits", "set", "subflows", "0"]);
    lan.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut back = [0u8; 5];
    lan.read_exact(&mut back).expect("first echo");
    assert_eq!(&back, b"hello");
    (h, lan, carrier, other)
}

#[test]
fn a_connection_left_without_a_subflow_is_reset_not_left_hanging() {
    if !braid_lab::root_tests_enabled("lab_stranded") {
        return;
    }
    let (h, mut lan, carrier, other) = answered_lab("bsd1");
    expect_reset(&h, &mut lan, (&carrier, &other), false, LAST_SUBFLOW_CLOSED);
}

/// Against a relay whose in-kernel path manager refused joins when the connection began, no
/// subflow is added to a connection left with none, even when its uplink returns at once and
/// the relay's limit is raised: such a connection is given up after `LOST_GRACE` rather than
/// waited for (`braid_proto::stranded`). Were it rescued, the echo would come back instead of
/// a reset.
#[test]
fn a_connection_whose_last_subflow_closed_is_reset_even_when_its_uplink_returns() {
    if !braid_lab::root_tests_enabled("lab_stranded") {
        return;
    }
    let (h, mut lan, carrier, other) = answered_lab("bsd3");
    h.lab
        .run(
            Role::Vps,
            &[
                "ip",
                "mptcp",
                "limits",
                "set",
                "subflows",
                "8",
                "add_addr_accepted",
                "8",
            ],
        )
        .expect("relay takes joins again");
    expect_reset(&h, &mut lan, (&carrier, &other), true, LAST_SUBFLOW_CLOSED);
}

#[test]
fn a_connection_the_relay_never_answered_is_reset_soon_after_losing_its_subflow() {
    if !braid_lab::root_tests_enabled("lab_stranded") {
        return;
    }
    // The relay's kernel drops every data packet to its port: handshakes and the gateway's
    // probes (UDP) pass, the request of a new connection never arrives.
    let (h, mut lan, carrier, other) = stranded_lab(
        "bsd2",
        &[
            "nft",
            "add table inet bsd2test; add chain inet bsd2test in { type filter hook input priority 0; }; add rule inet bsd2test in tcp dport 8388 meta length > 150 drop",
        ],
    );
    expect_reset(
        &h,
        &mut lan,
        (&carrier, &other),
        false,
        "only subflow rode an uplink that went down before the relay answered",
    );
}
