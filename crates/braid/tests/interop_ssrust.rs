//! Interoperability with the stock shadowsocks-rust 1.25 binaries, TCP and UDP, both ways:
//! - `sslocal` (tunnel mode, TCP and UDP) against `braid server`;
//! - `braid gateway` against `ssserver` (TCP and UDP, kernel MPTCP), as OpenMPTCPRouter users
//!   run it.
//!
//! The binaries are found in `$BRAID_SSRUST` or `/opt/ssrust/bin` (`cargo install
//! shadowsocks-rust --version 1.25.0 --root /opt/ssrust`). Where they are not installed these
//! tests say so and return: `interop.rs` and `interop_udp.rs` run the same exchanges against the
//! `shadowsocks` crate, the library inside those binaries, on every machine including CI.
//! Root-only; under CI=true a missing root fails instead of skipping.

mod common;

use std::path::PathBuf;
use std::process::Child;
use std::time::Duration;

use braid_lab::harness::{Harness, RELAY_PORT, TRAFFIC_PORT};
use braid_lab::{Lab, Role};
use common::unshaped_uplinks;

/// How long a stock binary may take to say it listens.
const START_LIMIT: Duration = Duration::from_secs(10);
/// Where `sslocal`'s tunnel listens in the gateway's namespace.
const TUNNEL: &str = "127.0.0.1:15300";

/// The folder with `ssserver` and `sslocal`, or `None` (said on stderr) when they are absent.
fn binaries(test: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("BRAID_SSRUST")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/ssrust/bin"));
    if dir.join("ssserver").is_file() && dir.join("sslocal").is_file() {
        return Some(dir);
    }
    eprintln!(
        "{test}: the shadowsocks-rust binaries are not in {} (set BRAID_SSRUST, or `cargo install shadowsocks-rust --version 1.25.0 --root /opt/ssrust`); interop.rs and interop_udp.rs cover these exchanges with the shadowsocks crate",
        dir.display()
    );
    None
}

/// A stock binary run in `role`'s namespace with its log in the lab's folder, stopped on drop.
struct Stock(Child);

impl Stock {
    /// Starts `program args` and waits until its log says `ready`.
    fn start(h: &Harness, role: Role, program: PathBuf, args: &[&str], ready: &str) -> Stock {
        let name = program
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let log_name = format!("{name}.log");
        let log = std::fs::File::create(h.dir().join(&log_name)).expect("stock binary log");
        let mut cursor = h.log_cursor(&log_name);
        let child = h
            .lab
            .command(role, &program.to_string_lossy())
            .args(args)
            // shadowsocks-rust logs to stdout.
            .stdout(log.try_clone().expect("stock binary log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        let stock = Stock(child);
        cursor
            .wait_for(ready, START_LIMIT)
            .unwrap_or_else(|e| panic!("{name} did not start: {e}\n{}", h.log(&log_name)));
        stock
    }
}

impl Drop for Stock {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Asserts a traffic tool result is `ok`, with the logs when it is not.
#[track_caller]
fn assert_ok(
    h: &Harness,
    what: &str,
    r: Result<serde_json::Value, braid_lab::harness::HarnessError>,
) {
    match r {
        Ok(v) if v["ok"] == true => {}
        other => panic!(
            "{what}: {other:?}\nserver log:\n{}\ngateway log:\n{}\nsslocal log:\n{}\nssserver log:\n{}",
            h.log("server.log"),
            h.log("gateway.log"),
            h.log("sslocal.log"),
            h.log("ssserver.log")
        ),
    }
}

#[test]
fn stock_sslocal_tunnels_tcp_and_udp_through_braid_server() {
    if !braid_lab::root_tests_enabled("interop_ssrust_client") {
        return;
    }
    let Some(dir) = binaries("interop_ssrust_client") else {
        return;
    };
    let mut h = Harness::new("bsr1", unshaped_uplinks(), common::exe()).expect("lab");
    h.start_server("").expect("braid server");
    let server = format!("{}:{RELAY_PORT}", Lab::VPS_PUBLIC);
    let target = format!("{}:{TRAFFIC_PORT}", Lab::SRV);
    let key = h.key().to_string();
    let _local = Stock::start(
        &h,
        Role::Gw,
        dir.join("sslocal"),
        &[
            "--protocol",
            "tunnel",
            "-b",
            TUNNEL,
            "-f",
            &target,
            "-U",
            "-s",
            &server,
            "-m",
            "2022-blake3-aes-256-gcm",
            "-k",
            &key,
            "--tcp-multipath",
        ],
        "UDP tunnel listening",
    );
    let mut udp_sessions = h.log_cursor("server.log");
    assert_ok(
        &h,
        "TCP from sslocal through braid server",
        h.traffic(
            Role::Gw,
            &["echo", "--connect", TUNNEL, "--bytes", "200000"],
        ),
    );
    assert_ok(
        &h,
        "UDP from sslocal through braid server",
        h.traffic(
            Role::Gw,
            &[
                "dgram",
                "--connect",
                TUNNEL,
                "--count",
                "300",
                "--pps",
                "300",
            ],
        ),
    );
    // The datagrams were braid's UDP relay's work, not a fallback.
    udp_sessions
        .wait_for("UDP session", Duration::from_secs(5))
        .expect("braid server logged sslocal's UDP session");
}

#[test]
fn braid_gateway_carries_lan_tcp_and_udp_to_stock_ssserver() {
    if !braid_lab::root_tests_enabled("interop_ssrust_server") {
        return;
    }
    let Some(dir) = binaries("interop_ssrust_server") else {
        return;
    };
    let mut h = Harness::new("bsr2", unshaped_uplinks(), common::exe()).expect("lab");
    let server = format!("{}:{RELAY_PORT}", Lab::VPS_PUBLIC);
    let key = h.key().to_string();
    let _server = Stock::start(
        &h,
        Role::Vps,
        dir.join("ssserver"),
        &[
            "-s",
            &server,
            "-m",
            "2022-blake3-aes-256-gcm",
            "-k",
            &key,
            "-U",
            "--tcp-multipath",
        ],
        "udp server listening",
    );
    // A stock server answers no health probe: the uplinks follow their link state.
    h.start_gateway(&["wifi", "5g"], "").expect("gateway");
    let t = Harness::traffic_target();
    assert_ok(
        &h,
        "LAN TCP through braid gateway to ssserver",
        h.traffic(Role::Lan, &["echo", "--connect", &t, "--bytes", "200000"]),
    );
    assert_ok(
        &h,
        "LAN UDP through braid gateway to ssserver",
        h.traffic(
            Role::Lan,
            &["dgram", "--connect", &t, "--count", "300", "--pps", "300"],
        ),
    );
    h.stop_gateway().expect("stop gateway");
}
