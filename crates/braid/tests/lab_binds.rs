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

use braid_lab::harness::{Harness, RELAY_PORT};
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
        "server = \"{}:{RELAY_PORT}\"\nmethod = \"2022-blake3-aes-256-gcm\"\nkey = \"{}\"\nlan = [\"{}\"]\ncapture = [\"{}/32\"]\nstate_dir = \"{}\"\n{listeners}\n{extra}\n[[uplink]]\nname = \"wifi\"\ninterface = \"{}\"\n",
        Lab::VPS_PUBLIC,
        h.key(),
        Lab::GW_LAN_IFACE,
        Lab::SRV,
        h.state_dir().display(),
        h.lab.uplink_iface("wifi"),
    );
    let path = h.write("gateway-wide.toml", &cfg).expect("config");
    let log = std::fs::File::create(h.dir().join("gateway-wide.log")).expect("log");
    let mut up = h.log_cursor("gateway-wide.log");
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
    up.wait_for("gateway up", Duration::from_secs(15))
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
    let mut refused = h.log_cursor("gateway-wide.log");
    exchange(&h, Role::Vps, gw_wan, b"GET / HTTP/1.0\r\n\r\n");
    refused
        .wait_for(
            "the destination is this gateway itself",
            Duration::from_secs(5),
        )
        .expect("the capture refusing a connection to itself");
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

/// SOCKS5 and the status API on every interface, each limited to the LAN's sources.
const WIDE: &str = "redirect = \"0.0.0.0:1100\"\nsocks = \"0.0.0.0:1080\"\nsocks_allow_from = [\"10.9.0.0/24\"]\ncontrol = \"0.0.0.0:9090\"\ncontrol_allow_from = [\"10.9.0.0/24\"]";

#[test]
fn socks_on_every_interface_is_no_open_proxy_and_keeps_the_control_target() {
    if !braid_lab::root_tests_enabled("socks_wan") {
        return;
    }
    let h = lab("bhd5");
    let _gw = start_wide_gateway(&h, WIDE, "");
    let greeting = [5u8, 1, 0];
    // From the WAN side, to the gateway's uplink address: reset without a word.
    let wan = SocketAddr::new(h.lab.uplink_gw_addr("wifi").into(), 1080);
    let mut refusal = h.log_cursor("gateway-wide.log");
    let back = exchange(&h, Role::Vps, wan, &greeting);
    assert!(
        back.is_empty(),
        "SOCKS5 answered the WAN side: {back:?}\ngateway log:\n{}",
        h.log("gateway-wide.log")
    );
    refusal
        .wait_for(
            "SOCKS5 listener: refused a connection from",
            Duration::from_secs(5),
        )
        .expect("the refusal logged");
    // From the LAN: served, but not to the relay's control channel.
    let lan = SocketAddr::new(Lab::GW_LAN.into(), 1080);
    let host = b"braid-control.invalid";
    let mut req = greeting.to_vec();
    req.extend_from_slice(&[5, 1, 0, 3, host.len() as u8]);
    req.extend_from_slice(host);
    req.extend_from_slice(&9u16.to_be_bytes());
    let back = exchange(&h, Role::Lan, lan, &req);
    assert_eq!(
        back.get(..4),
        Some(&[5u8, 0, 5, 2][..]),
        "method accepted, then CONNECT not allowed by ruleset: {back:?}"
    );
    // And SOCKS5 from the LAN still carries traffic.
    let t = Harness::traffic_target();
    let socks = lan.to_string();
    let v = h
        .traffic(
            Role::Lan,
            &["rr", "--connect", &t, "--socks", &socks, "--count", "2"],
        )
        .expect("request/reply over SOCKS5");
    assert_eq!(v["failures"], 0, "{v}");
}

/// A raw HTTP/1.0 GET; the status line of the answer, empty if the connection was refused.
fn http_status(h: &Harness, role: Role, to: SocketAddr, path: &str, host: &str) -> String {
    let req = format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n");
    let back = exchange(h, role, to, req.as_bytes());
    String::from_utf8_lossy(&back)
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

#[test]
fn status_api_answers_only_to_its_own_names_and_sources() {
    if !braid_lab::root_tests_enabled("status_rebinding") {
        return;
    }
    let h = lab("bhd6");
    let _gw = start_wide_gateway(&h, WIDE, "");
    let api = SocketAddr::new(Lab::GW_LAN.into(), 9090);
    // A LAN browser on the router's address: served.
    let ok = http_status(&h, Role::Lan, api, "/api/status", "10.9.0.1:9090");
    assert!(ok.contains(" 200 "), "{ok}");
    // The same browser on a page whose name an attacker pointed at the router: refused.
    let rebound = http_status(&h, Role::Lan, api, "/api/status", "evil.example:9090");
    assert!(
        rebound.contains(" 421 "),
        "DNS rebinding read the status: {rebound}"
    );
    // The WAN side: not even an answer.
    let wan = SocketAddr::new(h.lab.uplink_gw_addr("wifi").into(), 9090);
    let from_wan = http_status(&h, Role::Vps, wan, "/api/status", "10.1.0.1:9090");
    assert!(
        from_wan.is_empty(),
        "the WAN side read the status: {from_wan}"
    );
}
