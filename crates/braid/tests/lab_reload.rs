//! SIGHUP reload in the lab: a changed uplink list adds and removes uplinks while a download
//! keeps running, its bytes checked end to end (`braid lab traffic stream` verifies the byte
//! sequence), and the removed uplink's rule and routes leave the kernel. The gateway runs as
//! under a `Type=notify` unit (`$NOTIFY_SOCKET`, `$WATCHDOG_USEC`): READY=1 once it is up,
//! WATCHDOG=1 pings, RELOADING=1 then READY=1 around each reload, STOPPING=1 at SIGTERM.
//! Root-only (skips without root unless CI=true, where it must run).

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use braid_lab::harness::{Harness, RELAY_PORT, SOCKS_PORT};
use braid_lab::lab::Lab;
use braid_lab::{LabProcess, Role, UplinkSpec};
use braid_proto::health::LinkState;
use common::{exe, wait_status};

/// gateway.toml with `uplinks` as (name, table), explicit tables as `braid setup` writes them.
fn config(h: &Harness, uplinks: &[(&str, u32)]) -> String {
    let mut cfg = format!(
        "server = \"{}:{RELAY_PORT}\"\nmethod = \"2022-blake3-aes-256-gcm\"\nkey = \"{}\"\nredirect = \"0.0.0.0:1100\"\nlan = [\"{}\"]\ncapture = [\"{}/32\"]\nsocks = \"{}:{SOCKS_PORT}\"\nstate_dir = \"{}\"\n",
        Lab::VPS_PUBLIC,
        h.key(),
        Lab::GW_LAN_IFACE,
        Lab::SRV,
        Lab::GW_LAN,
        h.state_dir().display()
    );
    for (name, table) in uplinks {
        cfg += &format!(
            "[[uplink]]\nname = \"{name}\"\ninterface = \"{}\"\ntable = {table}\n",
            h.lab.uplink_iface(name)
        );
    }
    cfg
}

/// systemd's side of `$NOTIFY_SOCKET`: a thread reads every datagram as it comes (as systemd
/// does, so the gateway's queue never fills) into a channel the test waits on.
fn notify_listener(path: &std::path::Path) -> mpsc::Receiver<String> {
    let _ = std::fs::remove_file(path);
    let sock = UnixDatagram::bind(path).expect("notify socket");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok(n) = sock.recv(&mut buf) {
            if tx
                .send(String::from_utf8_lossy(&buf[..n]).into_owned())
                .is_err()
            {
                break;
            }
        }
    });
    rx
}

/// Waits for the notification `want`; panics after `limit` with what came instead.
fn expect_state(rx: &mpsc::Receiver<String>, want: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(msg) if msg.lines().any(|l| l == want) => return,
            Ok(msg) => seen.push(msg),
            Err(_) => break,
        }
    }
    panic!("no {want} from the gateway within {limit:?}; it sent {seen:?}");
}

fn signal(gw: &LabProcess, sig: &str) {
    let st = std::process::Command::new("kill")
        .args([sig, &gw.pid().to_string()])
        .status()
        .expect("kill");
    assert!(st.success(), "kill {sig}");
}

fn hup(gw: &LabProcess) {
    signal(gw, "-HUP");
}

/// Waits until the gateway lists exactly `names`, all Up, and the download's connection has a
/// subflow on exactly those uplinks.
fn wait_uplinks(h: &Harness, names: &[&str], what: &str) {
    let target = Harness::traffic_target();
    let want: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    wait_status(h, what, Duration::from_secs(10), move |s| {
        let listed: Vec<String> = s.uplinks.iter().map(|u| u.name.clone()).collect();
        let up = s.uplinks.iter().all(|u| u.state == LinkState::Up);
        let conn = s.connections.list.iter().find(|c| c.target == target);
        let mut on: Vec<String> = conn
            .map(|c| c.subflows_per_uplink.keys().cloned().collect())
            .unwrap_or_default();
        on.sort();
        let mut want_sorted = want.clone();
        want_sorted.sort();
        listed == want && up && on == want_sorted
    });
}

#[test]
fn sighup_with_a_changed_uplink_list_adds_and_removes_uplinks_while_a_download_goes_on() {
    if !braid_lab::root_tests_enabled("sighup_uplinks") {
        return;
    }
    let uplinks = vec![
        UplinkSpec::new("wifi"),
        UplinkSpec::new("5g"),
        UplinkSpec::new("lte"),
    ];
    let mut h = Harness::new("bsu4", uplinks, exe()).expect("lab");
    h.start_server("").expect("server");
    let path = h
        .write("gateway.toml", &config(&h, &[("wifi", 101), ("5g", 102)]))
        .expect("config");
    let notify_path = h.dir().join("notify.sock");
    let notify = notify_listener(&notify_path);
    let log = std::fs::File::create(h.dir().join("gateway.log")).expect("log");
    let mut cmd = h.lab.command(Role::Gw, &exe().to_string_lossy());
    cmd.args(["gateway", "--config"])
        .arg(&path)
        .args(["--log", "debug"])
        .env("NOTIFY_SOCKET", &notify_path)
        .env("WATCHDOG_USEC", "400000")
        .stdout(Stdio::null())
        .stderr(log);
    let gw = h.lab.spawn_process(Role::Gw, cmd).expect("gateway");
    expect_state(&notify, "READY=1", Duration::from_secs(15));
    // READY means the data path is up: the capture table and the uplinks are there now.
    let table = h
        .lab
        .run(Role::Gw, &["nft", "list", "table", "inet", "braid"]);
    assert!(table.is_ok(), "READY=1 before the capture table: {table:?}");
    expect_state(&notify, "WATCHDOG=1", Duration::from_secs(2));
    wait_status(&h, "wifi and 5g Up", Duration::from_secs(15), |s| {
        s.uplinks.len() == 2 && s.uplinks.iter().all(|u| u.state == LinkState::Up)
    });
    let stream = common::start_bonded_stream(&h, 10);

    h.write(
        "gateway.toml",
        &config(&h, &[("wifi", 101), ("5g", 102), ("lte", 103)]),
    )
    .expect("config");
    hup(&gw);
    expect_state(&notify, "RELOADING=1", Duration::from_secs(5));
    expect_state(&notify, "READY=1", Duration::from_secs(5));
    wait_uplinks(
        &h,
        &["wifi", "5g", "lte"],
        "lte added: Up, with a subflow of the running download",
    );

    h.write("gateway.toml", &config(&h, &[("wifi", 101), ("lte", 103)]))
        .expect("config");
    hup(&gw);
    wait_uplinks(
        &h,
        &["wifi", "lte"],
        "5g removed: the download on wifi and lte only",
    );
    let rules = h
        .lab
        .run(Role::Gw, &["ip", "rule", "show"])
        .expect("ip rule");
    assert!(
        !rules.contains("lookup 102"),
        "5g's rule is still there:\n{rules}"
    );
    assert_eq!(
        rules.matches("lookup 103").count(),
        1,
        "one rule for lte:\n{rules}"
    );

    // [health] changes live: every uplink keeps its state (none starts over in Recovering).
    let before: Vec<(String, u64)> = common::status(&h)
        .uplinks
        .iter()
        .map(|u| (u.name.clone(), u.state_changes))
        .collect();
    let mut reloaded = h.log_cursor("gateway.log");
    let with_health = config(&h, &[("wifi", 101), ("lte", 103)]).replacen(
        "[[uplink]]",
        "[health]\ninterval_ms = 100\ndown_after = 5\n\n[[uplink]]",
        1,
    );
    h.write("gateway.toml", &with_health).expect("config");
    hup(&gw);
    reloaded
        .wait_for(
            "reload: [health] → probes every 100ms",
            Duration::from_secs(5),
        )
        .expect("the health reload is logged");
    reloaded
        .wait_for(
            "reload: probes restarted on 2 uplink(s), every 100ms",
            Duration::from_secs(5),
        )
        .expect("probes restarted at the new interval");
    let after: Vec<(String, u64)> = common::status(&h)
        .uplinks
        .iter()
        .map(|u| (u.name.clone(), u.state_changes))
        .collect();
    assert_eq!(before, after, "a health reload changed an uplink's state");
    assert!(
        !reloaded.new_lines().contains("→ Recovering")
            && !h.log("gateway.log").contains("`health` changed"),
        "{}",
        h.log("gateway.log")
    );

    let v = h.finish_traffic(stream).expect("download");
    assert_eq!(
        v["ok"],
        true,
        "the download lost or changed bytes across the reloads: {v}\n{}",
        h.log("gateway.log")
    );
    assert!(
        h.log("gateway.log")
            .contains("reload: uplinks [wifi, 5g] → [wifi, 5g, lte]"),
        "the reload is logged"
    );
    assert!(
        gw.try_wait().expect("gateway").is_none(),
        "SIGHUP must not stop the gateway"
    );
    signal(&gw, "-TERM");
    expect_state(&notify, "STOPPING=1", Duration::from_secs(5));
    let _ = gw.wait_timeout(Duration::from_secs(10));
}

/// `braid lab traffic echo` from the LAN through the capture: whether the bytes came back.
fn echo_ok(h: &Harness) -> bool {
    let target = Harness::traffic_target();
    h.traffic(
        Role::Lan,
        &["echo", "--connect", &target, "--bytes", "10000"],
    )
    .is_ok_and(|v| v["ok"] == true)
}

#[test]
fn sighup_with_a_changed_allowlist_refuses_new_destinations_and_keeps_running_transfers() {
    if !braid_lab::root_tests_enabled("sighup_allowlist") {
        return;
    }
    let h = common::running("bsu5", common::unshaped_uplinks(), "");
    let server_pid = h.daemon_pids()[0];
    let cfg_path = h.dir().join("server.toml");
    let with_allow = std::fs::read_to_string(&cfg_path).expect("server.toml");
    let without: String = with_allow
        .lines()
        .filter(|l| !l.starts_with("allow_destinations"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(echo_ok(&h), "the lab's destination is allowed at first");
    let stream = common::start_bonded_stream(&h, 4);

    let hup_server = |text: &str, expect: &str| {
        let mut log = h.log_cursor("server.log");
        std::fs::write(&cfg_path, text).expect("server.toml");
        let st = std::process::Command::new("kill")
            .args(["-HUP", &server_pid.to_string()])
            .status()
            .expect("kill");
        assert!(st.success());
        log.wait_for(expect, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("{e}\nserver log:\n{}", h.log("server.log")));
    };
    hup_server(&without, "reload: allow_destinations = []");
    assert!(
        !echo_ok(&h),
        "a new connection to a private destination must be refused now"
    );
    let v = h.finish_traffic(stream).expect("download");
    assert_eq!(
        v["ok"], true,
        "the running download must go on, bytes intact: {v}"
    );

    hup_server(&with_allow, "reload: allow_destinations = [10.30.0.2/32]");
    assert!(echo_ok(&h), "allowed again after the second reload");

    // The caps change live too (their arithmetic is admission.rs's unit tests): the relay
    // says the new figures, and neither the running download nor new connections notice.
    let stream = common::start_bonded_stream(&h, 4);
    hup_server(
        &format!("{with_allow}max_connections = 500\n"),
        "limits: 500 relayed connections",
    );
    assert!(
        echo_ok(&h),
        "new connections are admitted under the new cap"
    );
    let v = h.finish_traffic(stream).expect("download");
    assert_eq!(v["ok"], true, "the running download must go on: {v}");
}
