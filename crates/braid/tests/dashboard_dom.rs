//! The dashboard in a real browser: headless Chromium inside a lab namespace loads the embedded
//! page from a tiny HTTP responder that serves a canned status document (wifi up, 5g down), and
//! the DOM after the page's JavaScript ran must show both uplinks with their states. When the
//! status API fails, the page must show its "disconnected" banner instead of throwing.
//! Screenshots (desktop and phone) are left in target/ as artifacts.
//!
//! Root-only (skips without root unless CI=true); needs the `chromium` package. Uses its own lab
//! `bdash-t1-*`, removed at the end and on panic.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use braid::status::dashboard::DASHBOARD_HTML;
use braid::status::model::{
    Blackhole, ConnectionStatus, Connections, RelayInfo, Status, Tfo, Totals, UplinkStatus,
};
use braid_lab::browser::{render_dom, screenshot};
use braid_lab::{Lab, LabSpec, Role, UplinkSpec};
use braid_proto::health::LinkState;

/// Virtual time the page gets: a few polls.
const WAIT_MS: u64 = 3000;

#[test]
fn dashboard_canned_status_shows_uplink_states_in_a_real_browser() {
    if !braid_lab::root_tests_enabled("dashboard_dom") {
        return;
    }
    let lab = Lab::up(LabSpec {
        prefix: "bdash-t1".into(),
        uplinks: vec![UplinkSpec::new("wifi")],
    })
    .expect("lab up");
    let server = Responder::start(&lab, serde_json::to_string(&canned_status()).unwrap());
    let url = format!("http://{}/", server.addr);

    let dom = render_dom(&lab, Role::Gw, &url, WAIT_MS).expect("render_dom");
    assert!(
        dom.contains("data-status=\"ok\""),
        "page did not load the status:\n{dom}"
    );
    assert_eq!(uplink_state(&dom, "wifi"), Some(("up".into(), "Up".into())));
    assert_eq!(
        uplink_state(&dom, "5g"),
        Some(("down".into(), "Down".into()))
    );
    for text in [
        "example.com:443",                               // connection table
        "TFO works on every uplink",                     // TFO reason
        "Linux 6.12.0-test",                             // relay kernel
        "48.0 Mbit/s",                                   // bonded rx total
        "points=\"0.5,", // graphs drawn from the oldest of 300 seconds
        "1 without the subflow of an uplink that is up", // connections title
    ] {
        assert!(dom.contains(text), "DOM lacks {text:?}:\n{dom}");
    }

    let target = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target");
    screenshot(
        &lab,
        Role::Gw,
        &url,
        WAIT_MS,
        &target.join("dashboard-test.png"),
        1280,
        1000,
    )
    .expect("desktop screenshot");
    screenshot(
        &lab,
        Role::Gw,
        &url,
        WAIT_MS,
        &target.join("dashboard-test-phone.png"),
        390,
        844,
    )
    .expect("phone screenshot");

    // The API fails: a visible banner, not an exception.
    server.fail.store(true, Ordering::SeqCst);
    let dom = render_dom(&lab, Role::Gw, &url, WAIT_MS).expect("render_dom, API failing");
    assert!(
        dom.contains("data-status=\"disconnected\"") && dom.contains("Disconnected: "),
        "no disconnected banner:\n{dom}"
    );
    drop(server);
    lab.teardown();
}

/// Two uplinks: wifi up and busy, 5g down after carrying traffic; one MPTCP connection.
fn canned_status() -> Status {
    let wave = |base: f64, amp: f64, phase: f64| -> Vec<f64> {
        (0..300)
            .map(|i| (base + amp * ((i as f64) / 17.0 + phase).sin()).max(0.0) * 1e6)
            .collect()
    };
    // Ends at its peak, 48 Mbit/s, the current rate.
    let wifi_rx = wave(40.0, 8.0, std::f64::consts::FRAC_PI_2 - 299.0 / 17.0);
    let wifi_tx = wave(4.0, 1.0, 1.0);
    let mut g5_rx = wave(25.0, 10.0, 2.0);
    let mut g5_tx = wave(2.0, 1.0, 0.5);
    // 5g went down 60 s ago.
    g5_rx[240..].fill(0.0);
    g5_tx[240..].fill(0.0);
    let sum = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x + y).collect::<Vec<_>>();
    let uplink = |name: &str, state: LinkState, rx: Vec<f64>, tx: Vec<f64>| UplinkStatus {
        name: name.into(),
        state,
        rx_bps: *rx.last().unwrap(),
        tx_bps: *tx.last().unwrap(),
        history_rx_bps: rx,
        history_tx_bps: tx,
        interface: format!("wan-{name}"),
        ..UplinkStatus::default()
    };
    let mut wifi = uplink("wifi", LinkState::Up, wifi_rx.clone(), wifi_tx.clone());
    wifi.address = Some("10.1.0.1".into());
    wifi.rtt_ms = Some(12.4);
    wifi.loss = 0.0;
    wifi.subflows = 1;
    wifi.rx_bytes = 1_234_567_890;
    wifi.tx_bytes = 98_765_432;
    let mut g5 = uplink("5g", LinkState::Down, g5_rx.clone(), g5_tx.clone());
    g5.address = Some("10.2.0.1".into());
    g5.loss = 1.0;
    g5.backup = true;
    g5.state_changes = 3;
    Status {
        role: braid::status::model::Role::Gateway,
        version: "0.1.0".into(),
        kernel: "6.12.0-gw".into(),
        total: Totals {
            rx_bps: wifi.rx_bps + g5.rx_bps,
            tx_bps: wifi.tx_bps + g5.tx_bps,
            history_rx_bps: sum(&wifi_rx, &g5_rx),
            history_tx_bps: sum(&wifi_tx, &g5_tx),
        },
        uplinks: vec![wifi, g5],
        connections: Connections {
            mptcp: 1,
            fallback: 0,
            tcp: 0,
            fallback_total: 2,
            stranded_total: 1,
            lost_join: 1,
            lost_join_total: 1,
            list: vec![ConnectionStatus {
                target: "example.com:443".into(),
                transport: braid_proto::control::Transport::Mptcp,
                subflows: 1,
                subflows_per_uplink: BTreeMap::from([("wifi".into(), 1)]),
                age_secs: 75.0,
            }],
        },
        tfo: Tfo {
            enabled: true,
            reason: "TFO works on every uplink (probed at start).".into(),
        },
        congestion: Default::default(),
        blackhole: Blackhole {
            active: false,
            count: 0,
            timeout_secs: Some(3600),
        },
        relay: Some(RelayInfo {
            address: "10.200.0.1:8388".into(),
            version: "0.1.0".into(),
            kernel: "6.12.0-test".into(),
        }),
        tcp_mem: Default::default(),
        udp: Default::default(),
        warm_pool: None,
        path_manager: None,
    }
}

/// The (data-state, visible text) of the `class="… state …"` element in uplink `name`'s card.
fn uplink_state(dom: &str, name: &str) -> Option<(String, String)> {
    let start = dom.find(&format!("data-uplink=\"{name}\""))?;
    let card = &dom[start..];
    let card = &card[..card.find("</article>")?];
    let mut rest = card;
    while let Some(open) = rest.find("<span") {
        let tag_end = open + rest[open..].find('>')?;
        let tag = &rest[open..tag_end];
        let classes = attr(tag, "class").unwrap_or_default();
        if classes.split_whitespace().any(|c| c == "state") {
            let text_end = tag_end + rest[tag_end..].find("</span>")?;
            let text = rest[tag_end + 1..text_end].trim().to_owned();
            return Some((attr(tag, "data-state")?, text));
        }
        rest = &rest[tag_end..];
    }
    None
}

fn attr(tag: &str, name: &str) -> Option<String> {
    let key = format!(" {name}=\"");
    let start = tag.find(&key)? + key.len();
    let len = tag[start..].find('"')?;
    Some(tag[start..start + len].to_owned())
}

/// A minimal HTTP/1.1 responder inside the lab's gw namespace: `/` is the dashboard,
/// `/api/status` the canned JSON (or a 503 once `fail` is set), anything else 404.
struct Responder {
    addr: SocketAddr,
    fail: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Responder {
    fn start(lab: &Lab, status_json: String) -> Responder {
        let listener = lab
            .in_netns(Role::Gw, || TcpListener::bind("127.0.0.1:0"))
            .expect("entering gw")
            .expect("bind in gw");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let fail = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (f, s) = (fail.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => serve(stream, &status_json, f.load(Ordering::SeqCst)),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(10))
                    }
                    Err(e) => panic!("accept: {e}"),
                }
            }
        });
        Responder {
            addr,
            fail,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Answers one request and closes the connection.
fn serve(mut stream: TcpStream, status_json: &str, fail: bool) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut req = Vec::new();
    let mut buf = [0u8; 4096];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => req.extend_from_slice(&buf[..n]),
        }
    }
    let req = String::from_utf8_lossy(&req);
    let path = req.split_whitespace().nth(1).unwrap_or("/");
    let (status, ctype, body) = match path {
        "/" => ("200 OK", "text/html; charset=utf-8", DASHBOARD_HTML),
        "/api/status" if fail => ("503 Service Unavailable", "text/plain", "down\n"),
        "/api/status" => ("200 OK", "application/json", status_json),
        _ => ("404 Not Found", "text/plain", "not found\n"),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body.as_bytes());
}
