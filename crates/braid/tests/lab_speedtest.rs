//! `braid speedtest` in the lab: the real server and gateway in network namespaces, the
//! speed test run in the gateway's namespace, checked against the lab's own traffic tool.
//! A correctness test with tolerances, not a benchmark.
//!
//! Root-only. Without root it skips, except under CI=true, where it fails instead.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use braid_lab::harness::{Harness, RELAY_PORT};
use braid_lab::{Lab, Role};
use common::{exe, in_netns, runtime, shaped_uplinks};
use serde_json::Value;

/// Runs `braid speedtest --json --secs N` in gw; returns exit code, stdout JSON (or Null),
/// stderr.
fn speedtest(h: &Harness, secs: &str) -> (i32, Value, String) {
    let cfg = h.dir().join("gateway.toml");
    let mut cmd = h.lab.command(Role::Gw, &exe().to_string_lossy());
    cmd.args(["speedtest", "--config"])
        .arg(&cfg)
        .args(["--json", "--secs", secs]);
    let out = cmd.output().expect("running braid speedtest");
    let v = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (
        out.status.code().unwrap_or(-1),
        v,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn result<'a>(v: &'a Value, path: &str, dir: &str) -> &'a Value {
    v["results"]
        .as_array()
        .and_then(|rs| {
            rs.iter()
                .find(|r| r["path"] == path && r["direction"] == dir)
        })
        .unwrap_or_else(|| panic!("no {path} {dir} result in {v:#}"))
}

fn mbit(r: &Value) -> f64 {
    r["mbit_per_s"].as_f64().unwrap_or(0.0)
}

/// Whether the speed test's figure is within `tolerance` of plain TCP's, and if not, why.
fn within(what: &str, got: f64, want: f64, tolerance: f64) -> Result<(), String> {
    if (got - want).abs() <= want * tolerance {
        return Ok(());
    }
    Err(format!(
        "{what}: speedtest says {got:.1} Mbit/s, plain TCP {want:.1} Mbit/s (more than {:.0} % apart)",
        tolerance * 100.0
    ))
}

/// Plain single-uplink TCP from gw, bound to the uplink's address (the gateway's policy
/// routing picks the uplink from the source address): (uplink, down, up) in Mbit/s.
fn plain_tcp(h: &Harness) -> Vec<(&'static str, f64, f64)> {
    let srv = Harness::traffic_target();
    let mut plain = Vec::new();
    for u in ["wifi", "5g"] {
        let bind = h.lab.uplink_gw_addr(u).to_string();
        let get = h
            .traffic(
                Role::Gw,
                &["get", "--connect", &srv, "--bind", &bind, "--secs", "4"],
            )
            .expect("plain download");
        let put = h
            .traffic(
                Role::Gw,
                &["put", "--connect", &srv, "--bind", &bind, "--secs", "4"],
            )
            .expect("plain upload");
        plain.push((u, mbit(&get), mbit(&put)));
    }
    eprintln!("plain TCP (uplink, down, up Mbit/s): {plain:?}");
    plain
}

/// Each single uplink's figures: (what, the speed test's, plain TCP's), in Mbit/s.
fn single_uplink_figures(plain: &[(&str, f64, f64)], v: &Value) -> Vec<(String, f64, f64)> {
    plain
        .iter()
        .flat_map(|(u, get, put)| {
            [
                (format!("{u} down"), mbit(result(v, u, "down")), *get),
                (format!("{u} up"), mbit(result(v, u, "up")), *put),
            ]
        })
        .collect()
}

/// Every speed-test figure within 15 % of plain TCP's.
fn all_within(figures: &[(String, f64, f64)]) -> Result<(), String> {
    for (what, got, want) in figures {
        within(what, *got, *want, 0.15)?;
    }
    Ok(())
}

#[test]
fn speedtest_measures_each_uplink_alone_and_bonded_like_plain_tcp() {
    if !braid_lab::root_tests_enabled("speedtest") {
        return;
    }
    // The figures are compared with plain TCP measured minutes apart: the other test's lab
    // beside this one took the CPU from one side in a CI run (plain wifi down 27.2 and 28.4
    // Mbit/s against the speed test's 35.7 and 37.5, both runs).
    let _serial = common::one_at_a_time();
    let h = common::running("bsp1", shaped_uplinks(), "");

    let plain = plain_tcp(&h);
    let (code, mut v, stderr) = speedtest(&h, "4");
    eprintln!("speedtest JSON:\n{v:#}");
    assert_eq!(
        code,
        0,
        "braid speedtest failed: {stderr}\n{v:#}\nserver log:\n{}",
        h.log("server.log")
    );
    for path in ["wifi", "5g", "bonded"] {
        for dir in ["down", "up"] {
            let r = result(&v, path, dir);
            assert!(mbit(r) > 0.0, "{path} {dir}: {r}");
            assert!(r["bytes_per_uplink"]["wifi"].is_u64(), "{r}");
            assert!(r["bytes_per_uplink"]["5g"].is_u64(), "{r}");
        }
    }

    // The shaped lab shares the machine's CPU (and the host's, with other machines: up to a
    // third of it stolen at times) with whatever else runs: a 4 s transfer, plain or not, now
    // and then comes out 15-25 % low (plain wifi 34.8 against 38.1 in one run, plain wifi up
    // 27.8 against 35.7 in a CI run where a second lab ran beside it). Noise only ever slows a
    // transfer, so when a figure is out of tolerance both sides are measured once more and the
    // better of the two runs of each side must agree: a speed test that measures wrongly does
    // so in both runs.
    let first = single_uplink_figures(&plain, &v);
    if let Err(why) = all_within(&first) {
        eprintln!("measuring again: {why}");
        let plain_again = plain_tcp(&h);
        let (code, again, stderr) = speedtest(&h, "4");
        assert_eq!(code, 0, "braid speedtest failed: {stderr}\n{again:#}");
        eprintln!("speedtest JSON, second run:\n{again:#}");
        let best: Vec<(String, f64, f64)> = first
            .iter()
            .zip(single_uplink_figures(&plain_again, &again))
            .map(|((what, got, want), (_, got2, want2))| {
                (what.clone(), got.max(got2), want.max(want2))
            })
            .collect();
        if let Err(second) = all_within(&best) {
            panic!("out of tolerance in the better of two runs of each side: {second} (first run: {why})");
        }
        v = again;
    }
    for (u, _, _) in &plain {
        let down = result(&v, u, "down");
        assert_eq!(down["subflows"], 1, "{down}");
        // Alone means alone: the uplink carried the test, the other only probes.
        let other = if *u == "wifi" { "5g" } else { "wifi" };
        let mine = down["bytes_per_uplink"][u].as_u64().unwrap_or(0);
        let theirs = down["bytes_per_uplink"][other].as_u64().unwrap_or(0);
        assert!(mine > 20 * theirs, "{u} down leaked onto {other}: {down}");
    }

    let bonded = result(&v, "bonded", "down");
    assert_eq!(bonded["subflows"], 2, "{bonded}");
    for u in ["wifi", "5g"] {
        let b = bonded["bytes_per_uplink"][u].as_u64().unwrap_or(0);
        assert!(
            b > 1_000_000,
            "bonded down carried only {b} bytes on {u}: {bonded}"
        );
    }
    let best = ["wifi", "5g"]
        .iter()
        .map(|u| mbit(result(&v, u, "down")))
        .fold(0.0, f64::max);
    assert!(
        mbit(bonded) > best,
        "bonded down {:.1} Mbit/s is not faster than the best single uplink {best:.1}",
        mbit(bonded)
    );
}

#[test]
fn speedtest_against_a_stock_server_says_it_needs_braid_server() {
    use shadowsocks::config::{ServerConfig, ServerType};
    use shadowsocks::context::Context;
    use shadowsocks::crypto::CipherKind;
    use shadowsocks::relay::tcprelay::proxy_listener::ProxyListener;

    if !braid_lab::root_tests_enabled("speedtest_stock") {
        return;
    }
    let _serial = common::one_at_a_time();
    let mut h = Harness::new("bsp2", shaped_uplinks(), exe()).expect("lab");
    let relay: SocketAddr = format!("{}:{RELAY_PORT}", Lab::VPS_PUBLIC)
        .parse()
        .expect("addr");
    // A stock shadowsocks server (the library in shadowsocks-rust) in vps: it drops the stream
    // to the unresolvable control host.
    let key = h.key().to_string();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    let server = in_netns(h.lab.ns_name(Role::Vps), move || {
        runtime().block_on(async move {
            let ctx = Context::new_shared(ServerType::Server);
            let cfg =
                ServerConfig::new(relay, key.as_str(), CipherKind::AEAD2022_BLAKE3_AES_256_GCM)
                    .expect("config");
            let listener = Arc::new(ProxyListener::bind(ctx, &cfg).await.expect("bind"));
            ready_tx.send(()).expect("ready");
            let accept = async move {
                loop {
                    let (mut s, _) = listener.accept().await.expect("accept");
                    tokio::spawn(async move {
                        // A stock server cannot resolve `.invalid` and closes the stream.
                        let _ = s.handshake().await;
                    });
                }
            };
            tokio::select! { _ = accept => {}, _ = stop_rx => {} }
        })
    });
    ready_rx.recv().expect("stock server ready");
    h.start_gateway(&["wifi", "5g"], "").expect("gateway");

    let (code, v, stderr) = speedtest(&h, "2");
    assert_eq!(code, 1, "expected exit 1; stdout {v}, stderr {stderr}");
    assert!(
        stderr.contains("the relay does not support speedtest (a stock Shadowsocks-2022 server): braid speedtest needs braid server"),
        "stderr: {stderr}"
    );
    let _ = stop_tx.send(());
    server.join().expect("stock server thread");
}
