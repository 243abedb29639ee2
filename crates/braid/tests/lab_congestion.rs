//! Congestion control of braid's relay sockets, in the lab: every subflow on both ends uses the
//! configured algorithm (read per subflow with `ss -ti`, as the kernel reports it), `braid
//! status` and `/metrics` name it, and an algorithm the kernel does not have falls back to the
//! host's default with one warning.
//!
//! The configured algorithm is one the namespaces do not use by default, so a daemon that did
//! not set it would fail the test. Root-only; under CI=true a missing root is a failure.

mod common;

use std::time::{Duration, Instant};

use braid_lab::harness::{Harness, RELAY_PORT};
use braid_lab::Role;
use serde_json::Value;

fn sysctl(h: &Harness, key: &str) -> String {
    h.lab
        .run(Role::Gw, &["sysctl", "-n", key])
        .expect("sysctl")
        .trim()
        .to_string()
}

/// An algorithm this kernel has that is not the namespaces' default.
fn other_than_default(h: &Harness) -> (String, String) {
    let default = sysctl(h, "net.ipv4.tcp_congestion_control");
    let available = sysctl(h, "net.ipv4.tcp_available_congestion_control");
    let pick = ["cubic", "reno", "bbr"]
        .into_iter()
        .find(|a| *a != default && available.split_whitespace().any(|x| x == *a))
        .expect("reno is always built in");
    (pick.to_string(), default)
}

/// The algorithm of each MPTCP subflow of the relay port in `role`'s namespace, from `ss -ti`
/// (each subflow is a `tcp-ulp-mptcp` socket whose info line starts with its algorithm).
fn subflow_algorithms(h: &Harness, role: Role) -> Vec<String> {
    let filter = format!("( sport = :{RELAY_PORT} or dport = :{RELAY_PORT} )");
    let out = h
        .lab
        .run(role, &["ss", "-tniH", "state", "established", &filter])
        .expect("ss");
    out.lines()
        .filter(|l| l.starts_with(char::is_whitespace) && l.contains("tcp-ulp-mptcp"))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// Waits until both ends show at least two subflows (the download is bonded), then returns
/// each end's subflow algorithms.
fn bonded_subflows(h: &Harness) -> (Vec<String>, Vec<String>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let gw = subflow_algorithms(h, Role::Gw);
        let vps = subflow_algorithms(h, Role::Vps);
        if gw.len() >= 2 && vps.len() >= 2 {
            return (gw, vps);
        }
        assert!(
            Instant::now() < deadline,
            "no bonded relay connection within 10 s: gw {gw:?}, vps {vps:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn status(h: &Harness) -> Value {
    let cfg = h.dir().join("gateway.toml");
    let mut cmd = h.lab.command(Role::Gw, &common::exe().to_string_lossy());
    cmd.args(["status", "--json", "--config"]).arg(&cfg);
    let out = cmd.output().expect("braid status");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("status JSON")
}

/// `GET /metrics` on the gateway's control API (loopback in its namespace), with bash's /dev/tcp.
fn metrics(h: &Harness) -> String {
    let get =
        "exec 3<>/dev/tcp/127.0.0.1/9090; printf 'GET /metrics HTTP/1.0\\r\\n\\r\\n' >&3; cat <&3";
    h.lab.run(Role::Gw, &["bash", "-c", get]).expect("metrics")
}

#[test]
fn every_relay_subflow_on_both_ends_uses_the_configured_algorithm() {
    if !braid_lab::root_tests_enabled("lab_congestion") {
        return;
    }
    let mut h = Harness::new("bcc1", common::shaped_uplinks(), common::exe()).expect("lab");
    let (alg, default) = other_than_default(&h);
    let key = format!("congestion = \"{alg}\"");
    h.start_server(&key).expect("server");
    h.start_gateway(&["wifi", "5g"], &key).expect("gateway");
    h.wait_uplinks_up(&["wifi", "5g"], Duration::from_secs(15))
        .expect("uplinks up");
    for log in ["server.log", "gateway.log"] {
        assert!(
            h.log(log)
                .contains(&format!("congestion control {alg} on relay sockets")),
            "{log} does not say which congestion control it uses:\n{}",
            h.log(log)
        );
    }

    let target = Harness::traffic_target();
    let download = h
        .spawn_traffic(Role::Lan, &["get", "--connect", &target, "--secs", "4"])
        .expect("download");
    let (gw, vps) = bonded_subflows(&h);
    let v = h.finish_traffic(download).expect("download result");
    assert!(
        gw.iter().chain(&vps).all(|a| *a == alg),
        "configured {alg} (the namespaces' default is {default}), but the subflows use gw {gw:?}, vps {vps:?}"
    );
    assert!(v["mbit_per_s"].as_f64().unwrap_or(0.0) > 0.0, "{v}");

    let s = status(&h);
    assert_eq!(s["congestion"]["algorithm"], alg.as_str(), "{s}");
    assert_eq!(s["congestion"]["fell_back"], false, "{s}");
    let m = metrics(&h);
    assert!(
        m.contains(&format!(
            "braid_congestion_control{{algorithm=\"{alg}\"}} 1"
        )),
        "{m}"
    );
    h.stop_gateway().expect("stop");

    // An algorithm the kernel does not have: one warning with the fix, the host's default used.
    h.start_gateway(&["wifi", "5g"], "congestion = \"no_such_cc\"")
        .expect("gateway");
    let log = h.log("gateway.log");
    let warned: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("congestion = \"no_such_cc\" is not available"))
        .collect();
    assert_eq!(warned.len(), 1, "{log}");
    assert!(
        warned[0].contains("fix:") && warned[0].contains(&default),
        "{}",
        warned[0]
    );
    let s = status(&h);
    assert_eq!(s["congestion"]["algorithm"], default.as_str(), "{s}");
    assert_eq!(s["congestion"]["fell_back"], true, "{s}");
}
