//! What the gateway's listeners take when they are bound wide, in the lab: the capture on `[::]`
//! never relays a connection to the gateway itself (that looped through the relay), SOCKS5 on
//! `0.0.0.0` serves only the sources in `socks_allow_from`, and the status API answers only to
//! its own Host names (DNS rebinding).
//! Root-only (skips without root unless CI=true, where it must run).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use braid::lab::harness::{Harness, RELAY_PORT};
use braid_lab::{Lab, LabProcess, Role, UplinkSpec};

/// A lab with the relay running and one uplink.
fn lab(prefix: &str) -> Harness {
    let mut h = Harness::new(
        prefix,
        vec![UplinkSpec::new("wifi")],
        Path::new(env!("CARGO_BIN_EXE_braid")),
    )
    .expect("lab");
    h.start_server("").expect("server");
    h
}

/// Starts `braid gateway` in gw with the keys the harness fixes written by the test (`redirect`,
/// `socks`, `control`) plus `extra`; logs to `gateway-wide.log`. Returns once it is up.
fn start_wide_gateway(h: &Harness, listeners: &str, extra: &str) -> LabProcess {
    let cfg = format!(
        "server = \"{}:{RELAY_PORT}\"\nmethod = \"2022-blake3-aes-256-gcm\"\nkey = \"{}\"\nlan = [\"{}\"]\n{listeners}\n{extra}\n[[uplink]]\nname = \"wifi\"\ninterface = \"{}\"\n",
        Lab::VPS_PUBLIC,
        h.key(),
        Lab::GW_LAN_IFACE,
        h.lab.uplink_iface("wifi"),
    );
    let path = h.write("gateway-wide.toml", &cfg).expect("config");
    let log = std::fs::File::create(h.dir().join("gateway-wide.log")).expect("log");
    let mut cmd = h.lab.command(Role::Gw, env!("CARGO_BIN_EXE_braid"));
    cmd.args(["gateway", "--config"])
        .arg(&path)
        .args(["--log", "debug"])
        .stdout(Stdio::null())
        .stderr(log);
    let p = h
        .lab
        .spawn_process(Role::Gw, cmd)
        .expect("start the gateway");
    h.wait_log(
        "gateway-wide.log",
        "gateway up",
        "braid gateway",
        Duration::from_secs(15),
    )
    .expect("gateway up");
    p
}

/// Connects from `role` to `to`, sends `bytes`, and returns what comes back before the peer
/// closes (empty when the connection is closed or reset without a word).
fn exchange(h: &Harness, role: Role, to: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    h.lab
        .in_netns(role, || {
            let Ok(mut s) = TcpStream::connect_timeout(&to, Duration::from_secs(3)) else {
                return Vec::new();
            };
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = s.write_all(bytes);
            let mut back = Vec::new();
            let _ = s.read_to_end(&mut back);
            back
        })
        .expect("netns")
}

#[test]
fn capture_on_every_interface_never_relays_a_connection_to_the_gateway_itself() {
    if !braid_lab::root_tests_enabled("capture_self_loop") {
        return;
    }
    let h = lab("bhd3");
    let _gw = start_wide_gateway(&h, "redirect = \"[::]:1100\"\ncontrol = \"off\"", "");
    // From the WAN side, straight to the gateway's uplink address on the redirect port.
    let gw_wan = SocketAddr::new(h.lab.uplink_gw_addr("wifi").into(), 1100);
    exchange(&h, Role::Vps, gw_wan, b"GET / HTTP/1.0\r\n\r\n");
    h.wait_log(
        "gateway-wide.log",
        "the destination is this gateway itself",
        "the capture refusing a connection to itself",
        Duration::from_secs(5),
    )
    .expect("refused");
    // The relay never got a request for the gateway's own address (the loop's first turn).
    let own = gw_wan.to_string();
    let relay_log = h.log("server.log");
    assert!(
        !relay_log.contains(&format!("→ {own}")),
        "the gateway relayed a connection to itself:\n{relay_log}"
    );
    // Captured LAN traffic still flows.
    let t = Harness::traffic_target();
    let v = h
        .traffic(Role::Lan, &["rr", "--connect", &t, "--count", "2"])
        .expect("request/reply");
    assert_eq!(v["failures"], 0, "{v}");
}
