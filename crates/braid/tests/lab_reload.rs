//! SIGHUP reload in the lab: a changed uplink list adds and removes uplinks while a download
//! keeps running, its bytes checked end to end (`braid lab traffic stream` verifies the byte
//! sequence), and the removed uplink's rule and routes leave the kernel.
//! Root-only (skips without root unless CI=true, where it must run).

mod common;

use std::process::Stdio;
use std::time::Duration;

use braid_lab::harness::{Harness, RELAY_PORT, SOCKS_PORT};
use braid_lab::lab::Lab;
use braid_lab::{LabProcess, Role, UplinkSpec};
use braid_proto::health::LinkState;
use common::{exe, wait_status};

/// gateway.toml with `uplinks` as (name, table), explicit tables as `braid setup` writes them.
fn config(h: &Harness, uplinks: &[(&str, u32)]) -> String {
    let mut cfg = format!(
        "server = \"{}:{RELAY_PORT}\"\nmethod = \"2022-blake3-aes-256-gcm\"\nkey = \"{}\"\nredirect = \"0.0.0.0:1100\"\nlan = [\"{}\"]\nsocks = \"{}:{SOCKS_PORT}\"\n",
        Lab::VPS_PUBLIC,
        h.key(),
        Lab::GW_LAN_IFACE,
        Lab::GW_LAN
    );
    for (name, table) in uplinks {
        cfg += &format!(
            "[[uplink]]\nname = \"{name}\"\ninterface = \"{}\"\ntable = {table}\n",
            h.lab.uplink_iface(name)
        );
    }
    cfg
}

fn hup(gw: &LabProcess) {
    let st = std::process::Command::new("kill")
        .args(["-HUP", &gw.pid().to_string()])
        .status()
        .expect("kill");
    assert!(st.success(), "kill -HUP");
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
    let log = std::fs::File::create(h.dir().join("gateway.log")).expect("log");
    let mut cmd = h.lab.command(Role::Gw, &exe().to_string_lossy());
    cmd.args(["gateway", "--config"])
        .arg(&path)
        .args(["--log", "debug"])
        .stdout(Stdio::null())
        .stderr(log);
    let gw = h.lab.spawn_process(Role::Gw, cmd).expect("gateway");
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
}
