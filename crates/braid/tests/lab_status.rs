//! `braid status`, `/metrics` and the dashboard against a running lab gateway: they agree with
//! each other and with the kernel (subflows against `ss -M`, bytes against the interface
//! counters), and an uplink blackholed mid-test shows Down in all three.
//! Root-only (skips without root unless CI=true, where it must run).

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use braid_lab::browser::{render_dom, screenshot};
use braid_lab::harness::Harness;
use braid_lab::Role;
use common::{in_netns, shaped_uplinks, start_bonded_stream, wait_status, wait_until};
use serde_json::Value;

/// GET inside a namespace (the control API listens on the gateway's loopback).
fn http_get(ns: String, path: &'static str) -> String {
    in_netns(ns, move || {
        let mut s = std::net::TcpStream::connect("127.0.0.1:9090").expect("control API");
        write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read");
        out.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default()
    })
    .join()
    .expect("http thread")
}

/// `braid status --json`, run in gw: the CLI's view of the control API.
fn status(h: &Harness) -> Value {
    let cfg = h.dir().join("gateway.toml");
    let mut cmd = h.lab.command(Role::Gw, env!("CARGO_BIN_EXE_braid"));
    cmd.args(["status", "--json", "--config"]).arg(&cfg);
    let out = cmd.output().expect("braid status");
    assert!(
        out.status.success(),
        "braid status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("status JSON")
}

fn uplink<'a>(s: &'a Value, name: &str) -> &'a Value {
    s["uplinks"]
        .as_array()
        .and_then(|a| a.iter().find(|u| u["name"] == name))
        .unwrap_or_else(|| panic!("no uplink {name} in {s}"))
}

fn metric(text: &str, line_start: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no metric {line_start} in\n{text}"))
}

fn iface_rx(h: &Harness, iface: &str) -> u64 {
    h.lab
        .run(
            Role::Gw,
            &[
                "cat",
                &format!("/sys/class/net/{iface}/statistics/rx_bytes"),
            ],
        )
        .expect("counter")
        .trim()
        .parse()
        .expect("number")
}

#[test]
fn status_metrics_and_dashboard_agree_with_the_kernel_and_show_a_failure() {
    if !braid_lab::root_tests_enabled("status") {
        return;
    }
    let h = common::running("bts1", shaped_uplinks(), "");
    let t = Harness::traffic_target();
    let stream = start_bonded_stream(&h, 14);

    // Status against the kernel: the live connection's subflows, per uplink.
    let s = status(&h);
    for n in ["wifi", "5g"] {
        let u = uplink(&s, n);
        assert_eq!(u["state"], "up", "{u}");
        assert!(u["rtt_ms"].as_f64().unwrap_or(0.0) > 0.0, "{u}");
        assert!(u["address"].is_string(), "{u}");
        assert_eq!(
            u["subflows"], 1,
            "{n} should carry one subflow of the download: {s}"
        );
    }
    let conn = s["connections"]["list"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["target"] == t.as_str()))
        .cloned()
        .unwrap_or_default();
    assert_eq!(conn["subflows"], 2, "{s}");
    assert_eq!(s["connections"]["mptcp"].as_u64().unwrap_or(0), 1, "{s}");
    let ss = h.lab.run(Role::Gw, &["ss", "-MniH"]).expect("ss -M");
    // ss counts extra subflows ("subflows:1" = 2 in all); newer iproute2 also prints the total.
    assert!(
        ss.contains("subflows_total:2") || ss.contains(" subflows:1 "),
        "the kernel disagrees about subflows:\n{ss}"
    );

    // Bytes against the interface counters, over the same 15 MB of download (about 3 s at
    // wifi's share; long enough that the moments the two are read hardly matter).
    let (st0, k0) = (
        uplink(&status(&h), "wifi")["rx_bytes"]
            .as_u64()
            .unwrap_or(0),
        iface_rx(&h, "wan-wifi"),
    );
    wait_until("15 MB more on wan-wifi", Duration::from_secs(8), || {
        let got = iface_rx(&h, "wan-wifi") - k0;
        if got >= 15_000_000 {
            Ok(())
        } else {
            Err(format!("{got} bytes"))
        }
    });
    let (st1, k1) = (
        uplink(&status(&h), "wifi")["rx_bytes"]
            .as_u64()
            .unwrap_or(0),
        iface_rx(&h, "wan-wifi"),
    );
    let (ds, dk) = ((st1 - st0) as f64, (k1 - k0) as f64);
    assert!(
        dk > 1e6 && (ds - dk).abs() <= 0.1 * dk,
        "status bytes {ds} vs interface {dk}"
    );
    // And the rate is plausible for a 40 Mbit/s link that carries its share.
    assert!(
        uplink(&status(&h), "wifi")["rx_bps"]
            .as_f64()
            .unwrap_or(0.0)
            > 5e6
    );

    // Metrics agree with status.
    let m = http_get(h.lab.ns_name(Role::Gw), "/metrics");
    let s = status(&h);
    assert_eq!(metric(&m, "braid_uplink_up{uplink=\"wifi\"}"), 1.0);
    assert_eq!(
        metric(&m, "braid_uplink_subflows{uplink=\"5g\"}"),
        uplink(&s, "5g")["subflows"].as_f64().unwrap_or(-1.0)
    );
    let mrx = metric(&m, "braid_uplink_rx_bytes_total{uplink=\"wifi\"}");
    let srx = uplink(&s, "wifi")["rx_bytes"].as_f64().unwrap_or(0.0);
    assert!(
        (srx - mrx).abs() <= 0.1 * srx,
        "metrics {mrx} vs status {srx}"
    );
    assert_eq!(metric(&m, "braid_connections{kind=\"mptcp\"}"), 1.0);
    assert!(
        m.contains("# TYPE braid_mptcp_fallback_total counter")
            || m.contains("# TYPE braid_mptcp_fallback counter"),
        "{m}"
    );

    // The dashboard, in a real headless Chromium: cards with the right names and states.
    let url = "http://127.0.0.1:9090/";
    let dom = render_dom(&h.lab, Role::Gw, url, 3000).expect("chromium");
    for n in ["wifi", "5g"] {
        assert!(
            dom.contains(&format!("data-uplink=\"{n}\"")),
            "no card for {n}"
        );
    }
    assert!(dom.contains("data-state=\"up\""), "cards not Up");

    // Blackhole wifi: Down in status, metrics and dashboard within the failover target.
    h.lab.set_uplink_blackhole("wifi", true).expect("blackhole");
    wait_status(&h, "wifi Down", Duration::from_secs(3), |s| {
        common::uplink(s, "wifi").state == braid_proto::health::LinkState::Down
    });
    assert_eq!(uplink(&status(&h), "wifi")["state"], "down", "braid status");
    let m = http_get(h.lab.ns_name(Role::Gw), "/metrics");
    assert_eq!(metric(&m, "braid_uplink_up{uplink=\"wifi\"}"), 0.0);
    assert!(metric(&m, "braid_uplink_state_changes_total{uplink=\"wifi\"}") >= 1.0);
    let dom = render_dom(&h.lab, Role::Gw, url, 3000).expect("chromium");
    let card = dom.split("data-uplink=\"wifi\"").nth(1).unwrap_or("");
    let card = &card[..card.len().min(2000)];
    assert!(
        card.contains("data-state=\"down\""),
        "the wifi card does not show Down:\n{card}"
    );
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-wifi-down.png");
    let _ = screenshot(&h.lab, Role::Gw, url, 3000, &shot, 1200, 900);
    h.lab.set_uplink_blackhole("wifi", false).expect("restore");
    let v = h.finish_traffic(stream).expect("stream");
    assert_eq!(v["ok"], true, "{v}");
}
