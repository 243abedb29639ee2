//! `braid doctor`'s fault matrix: inject each fault in the lab, run doctor, and check that the
//! expected check fails (or warns, where that is the honest verdict) and that no other check
//! fails. A healthy lab gives no failure and no warning.
//! Root-only (skips without root unless CI=true, where it must run).

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use braid::status::model::Status;
use braid_lab::harness::Harness;
use braid_lab::Role;
use braid_proto::health::LinkState;
use common::{unshaped_uplinks, wait_until};
use serde_json::Value;

fn lab(prefix: &str) -> Harness {
    Harness::new(prefix, unshaped_uplinks(), common::exe()).expect("lab")
}

/// An empty /boot, so the machine's own installed kernels do not leak into the lab's verdicts.
fn boot(h: &Harness) -> PathBuf {
    let p = h.dir().join("boot");
    std::fs::create_dir_all(&p).expect("boot dir");
    p
}

fn doctor(h: &Harness, role: Role, config: &Path, extra: &[&str]) -> (i32, Value) {
    let b = boot(h);
    let mut args = vec![
        "--boot-root",
        b.to_str().expect("utf8"),
        "--run-root",
        b.to_str().expect("utf8"),
    ];
    args.extend_from_slice(extra);
    h.doctor(role, config, &args).expect("doctor ran")
}

fn status<'a>(v: &'a Value, id: &str) -> &'a str {
    v["checks"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["id"] == id))
        .and_then(|c| c["status"].as_str())
        .unwrap_or("missing")
}

/// `expected` must fail (or warn, for ids listed in `may_warn`); nothing else may fail.
fn expect(what: &str, (code, v): (i32, Value), expected: &[&str], may_warn: &[&str]) {
    let pretty = serde_json::to_string_pretty(&v).unwrap_or_default();
    for id in expected {
        let st = status(&v, id);
        let allowed = st == "fail" || (st == "warn" && may_warn.contains(id));
        assert!(allowed, "{what}: {id} should fail but is {st}\n{pretty}");
    }
    for c in v["checks"].as_array().expect("checks") {
        let id = c["id"].as_str().unwrap_or("");
        if c["status"] == "fail" {
            assert!(
                expected.contains(&id),
                "{what}: unexpected failure of {id} (false alarm)\n{pretty}"
            );
        }
        assert!(
            c["cause"].is_string() && c["fix"].is_string() && c["evidence"].is_object(),
            "{what}: {id} lacks the fixed shape"
        );
    }
    let any_fail = v["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .any(|c| c["status"] == "fail");
    assert_eq!(
        code,
        i32::from(any_fail),
        "{what}: exit code must be 1 exactly when a check failed\n{pretty}"
    );
}

fn gw_config(h: &Harness) -> PathBuf {
    h.dir().join("gateway.toml")
}

#[test]
fn gateway_faults_are_named_without_false_alarms() {
    if !braid_lab::root_tests_enabled("doctor_gateway") {
        return;
    }
    let mut h = lab("btd1");
    h.start_server("").expect("server");
    // The faults below must stay for doctor to name: braid's own remedy for stripped MPTCP
    // (the tunnel, tested in lab_tunnel) is off here.
    let never = "tunnel = \"never\"";
    h.start_gateway_uplinks(&[("wifi", never), ("5g", never)], "fast_open = \"off\"")
        .expect("gateway");
    h.wait_uplinks_up(&["wifi", "5g"], Duration::from_secs(10))
        .expect("up");
    let cfg = gw_config(&h);

    // Healthy: nothing fails, nothing warns.
    let (code, v) = doctor(&h, Role::Gw, &cfg, &[]);
    expect("healthy", (code, v.clone()), &[], &[]);
    for c in v["checks"].as_array().expect("checks") {
        assert_ne!(c["status"], "warn", "healthy lab warns: {c}");
        if c["status"] == "skip" {
            assert_eq!(c["id"], "tfo", "healthy lab skips {c}");
        }
    }
    assert_eq!(code, 0);

    // MPTCP options stripped on the second uplink only: its join fails.
    h.lab.set_mptcp_strip("5g", true).expect("strip");
    expect(
        "strip 5g",
        doctor(&h, Role::Gw, &cfg, &[]),
        &["uplink.5g.join"],
        &[],
    );
    h.lab.set_mptcp_strip("5g", false).expect("unstrip");

    // Stripped on the first uplink: everything falls back, and doctor names the middlebox.
    h.lab.set_mptcp_strip("wifi", true).expect("strip");
    let r = doctor(&h, Role::Gw, &cfg, &[]);
    let mptcp = r.1["checks"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["id"] == "server.mptcp"))
        .cloned()
        .unwrap_or_default();
    assert!(
        mptcp["summary"]
            .as_str()
            .unwrap_or("")
            .contains("middlebox"),
        "{mptcp}"
    );
    expect("strip wifi", r, &["server.mptcp"], &[]);
    h.lab.set_mptcp_strip("wifi", false).expect("unstrip");

    // Strict rp_filter on an uplink.
    h.lab
        .sysctl(Role::Gw, "net.ipv4.conf.all.rp_filter", "1")
        .expect("sysctl");
    h.lab
        .sysctl(Role::Gw, "net.ipv4.conf.wan-5g.rp_filter", "1")
        .expect("sysctl");
    expect(
        "rp_filter",
        doctor(&h, Role::Gw, &cfg, &[]),
        &["uplink.5g.rp_filter"],
        &[],
    );
    h.lab
        .sysctl(Role::Gw, "net.ipv4.conf.all.rp_filter", "2")
        .expect("sysctl");
    h.lab
        .sysctl(Role::Gw, "net.ipv4.conf.wan-5g.rp_filter", "2")
        .expect("sysctl");

    // Applied state broken behind the gateway's back (frozen so it cannot repair it first).
    h.freeze_gateway(true);
    // The route to the relay in 5g's table: doctor checks the daemon's own plan, not only the
    // default route.
    h.lab
        .run(
            Role::Gw,
            &["ip", "route", "del", "10.200.0.1", "table", "102"],
        )
        .expect("delete relay route");
    let r = doctor(&h, Role::Gw, &cfg, &[]);
    let route = r.1["checks"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["id"] == "uplink.5g.route"))
        .cloned()
        .unwrap_or_default();
    assert!(
        route["summary"]
            .as_str()
            .unwrap_or("")
            .contains("missing route 10.200.0.1/32"),
        "{route}"
    );
    assert!(
        route["cause"]
            .as_str()
            .unwrap_or("")
            .contains("route to the relay"),
        "{route}"
    );
    expect("relay route deleted", r, &["uplink.5g.route"], &[]);
    h.lab
        .run(
            Role::Gw,
            &[
                "ip",
                "route",
                "add",
                "10.200.0.1/32",
                "via",
                "10.2.0.2",
                "dev",
                "wan-5g",
                "src",
                "10.2.0.1",
                "table",
                "102",
                "proto",
                "212",
            ],
        )
        .expect("restore relay route");
    let eps = h
        .lab
        .run(Role::Gw, &["ip", "mptcp", "endpoint", "show"])
        .expect("endpoints");
    let id = eps
        .lines()
        .find(|l| l.starts_with("10.2.0.1 "))
        .and_then(|l| l.split_whitespace().nth(2))
        .expect("5g endpoint id")
        .to_string();
    h.lab
        .run(Role::Gw, &["ip", "mptcp", "endpoint", "delete", "id", &id])
        .expect("delete endpoint");
    expect(
        "endpoint deleted",
        doctor(&h, Role::Gw, &cfg, &[]),
        &["uplink.5g.endpoint"],
        &[],
    );
    h.lab
        .run(
            Role::Gw,
            &["ip", "rule", "del", "from", "10.2.0.1", "table", "102"],
        )
        .expect("delete rule");
    expect(
        "rule deleted",
        doctor(&h, Role::Gw, &cfg, &[]),
        &["uplink.5g.route", "uplink.5g.endpoint"],
        &[],
    );
    h.lab
        .run(Role::Gw, &["ip", "mptcp", "limits", "set", "subflows", "0"])
        .expect("limits");
    expect(
        "subflow limit 0",
        doctor(&h, Role::Gw, &cfg, &[]),
        &["uplink.5g.route", "uplink.5g.endpoint", "mptcp.limits"],
        &[],
    );
    h.lab
        .run(
            Role::Gw,
            &[
                "ip",
                "mptcp",
                "limits",
                "set",
                "subflows",
                "2",
                "add_addr_accepted",
                "2",
            ],
        )
        .expect("limits");
    h.freeze_gateway(false);
    // The gateway repairs the rule, route and endpoint by itself.
    wait_until(
        "the gateway to restore 5g's rule, route and endpoint",
        Duration::from_secs(5),
        || {
            let gw = |argv: &[&str]| h.lab.run(Role::Gw, argv).map_err(|e| e.to_string());
            let rules = gw(&["ip", "rule", "show"])?;
            let routes = gw(&["ip", "route", "show", "table", "102"])?;
            let eps = gw(&["ip", "mptcp", "endpoint", "show"])?;
            if rules.contains("from 10.2.0.1 lookup 102")
                && routes.contains("default via 10.2.0.2")
                && eps.lines().any(|l| l.starts_with("10.2.0.1 "))
            {
                Ok(())
            } else {
                Err(format!(
                    "rules:\n{rules}routes in 102:\n{routes}endpoints:\n{eps}"
                ))
            }
        },
    );
    expect("repaired", doctor(&h, Role::Gw, &cfg, &[]), &[], &[]);

    // A wrong key.
    let wrong = std::fs::read_to_string(&cfg).expect("cfg").replace(
        h.key(),
        &braid::keygen::generate(braid::config::Method::Aes256Gcm).expect("key"),
    );
    let wrong = h.write("wrong-key.toml", &wrong).expect("write");
    expect(
        "wrong key",
        doctor(&h, Role::Gw, &wrong, &[]),
        &["server.relay"],
        &[],
    );

    // The relay port silently dropped, then rejected, by the server's firewall.
    for (what, verdict) in [("dropped", "drop"), ("rejected", "reject with tcp reset")] {
        let rules = h.write("fw.nft", &format!("table inet fw {{\n chain input {{\n  type filter hook input priority 0;\n  tcp dport 8388 {verdict}\n }}\n}}\n")).expect("write");
        h.lab
            .run(Role::Vps, &["nft", "-f", rules.to_str().expect("utf8")])
            .expect("nft");
        let r = doctor(&h, Role::Gw, &cfg, &[]);
        let reach = r.1["checks"]
            .as_array()
            .and_then(|a| a.iter().find(|c| c["id"] == "uplink.wifi.reach"))
            .cloned()
            .unwrap_or_default();
        let word = if verdict == "drop" {
            "silently dropped"
        } else {
            "closed"
        };
        assert!(
            reach["summary"].as_str().unwrap_or("").contains(word),
            "{what}: {reach}"
        );
        expect(
            what,
            r,
            &["server.reachable", "uplink.wifi.reach", "uplink.5g.reach"],
            &[],
        );
        h.lab
            .run(Role::Vps, &["nft", "delete", "table", "inet", "fw"])
            .expect("nft");
    }

    // With the gateway stopped, applied-state checks skip and say why; nothing fails.
    h.stop_gateway().expect("stop");
    let r = doctor(&h, Role::Gw, &cfg, &[]);
    for id in [
        "mptcp.limits",
        "uplink.wifi.route",
        "uplink.wifi.endpoint",
        "uplink.5g.join",
    ] {
        assert_eq!(
            status(&r.1, id),
            "skip",
            "{id} with the gateway stopped: {}",
            r.1
        );
    }
    assert!(
        format!("{}", r.1).contains("the gateway is not running"),
        "{}",
        r.1
    );
    expect("gateway stopped", r, &[], &[]);
}

#[test]
fn server_without_mptcp_and_a_kernel_blackhole_are_named() {
    if !braid_lab::root_tests_enabled("doctor_server_mptcp") {
        return;
    }
    let mut h = lab("btd2");
    h.lab
        .sysctl(Role::Vps, "net.mptcp.enabled", "0")
        .expect("sysctl");
    h.start_server("").expect("server");
    h.start_gateway(&["wifi", "5g"], "fast_open = \"off\"")
        .expect("gateway");
    h.wait_uplinks_up(&["wifi", "5g"], Duration::from_secs(10))
        .expect("up");
    let cfg = gw_config(&h);
    let r = doctor(&h, Role::Gw, &cfg, &[]);
    let m = r.1["checks"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["id"] == "server.mptcp"))
        .cloned()
        .unwrap_or_default();
    assert!(
        m["summary"]
            .as_str()
            .unwrap_or("")
            .contains("does not speak MPTCP"),
        "{m}"
    );
    expect("server mptcp off", r, &["server.mptcp"], &[]);
    h.stop_gateway().expect("stop");
    h.stop_server().expect("stop");

    // The kernel's blackhole state, triggered for real: the VPS drops SYNs carrying MPTCP.
    h.lab
        .sysctl(Role::Vps, "net.mptcp.enabled", "1")
        .expect("sysctl");
    h.start_server("").expect("server");
    // The LAN connection below must open a new MPTCP connection after the SYNs are dropped:
    // no warm pool (its connections were opened before), and no tunnel around the fault.
    let never = "tunnel = \"never\"";
    h.start_gateway_uplinks(
        &[("wifi", never), ("5g", never)],
        "fast_open = \"off\"\nwarm_pool = \"off\"",
    )
    .expect("gateway");
    h.wait_uplinks_up(&["wifi", "5g"], Duration::from_secs(10))
        .expect("up");
    h.lab
        .run(
            Role::Vps,
            &[
                "iptables",
                "-t",
                "mangle",
                "-I",
                "PREROUTING",
                "-p",
                "tcp",
                "--syn",
                "-m",
                "tcp",
                "--tcp-option",
                "30",
                "-j",
                "DROP",
            ],
        )
        .expect("iptables");
    let t = Harness::traffic_target();
    let _ = h.traffic(Role::Lan, &["echo", "--connect", &t, "--bytes", "1000"]);
    expect(
        "blackhole",
        doctor(&h, Role::Gw, &cfg, &[]),
        &["mptcp.blackhole"],
        &[],
    );
}

#[test]
fn relay_clock_off_and_fake_kernels_are_named() {
    if !braid_lab::root_tests_enabled("doctor_clock_kernel") {
        return;
    }
    let mut h = lab("btd3");
    h.start_server("").expect("server");
    h.start_gateway(&["wifi", "5g"], "fast_open = \"off\"")
        .expect("gateway");
    h.wait_uplinks_up(&["wifi", "5g"], Duration::from_secs(10))
        .expect("up");
    let cfg = gw_config(&h);

    // An out-of-tree v0 kernel and a pending reboot, from fake procfs and /boot trees.
    let fake = h.dir().join("proc-v0");
    for (f, v) in [
        ("sys/net/mptcp/mptcp_enabled", "1"),
        ("sys/net/ipv4/conf/all/rp_filter", "2"),
        ("sys/net/ipv4/conf/wan-wifi/rp_filter", "2"),
        ("sys/net/ipv4/conf/wan-5g/rp_filter", "2"),
        ("sys/net/ipv4/tcp_fastopen", "1"),
        ("net/netstat", ""),
    ] {
        let p = fake.join(f);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("dir");
        std::fs::write(&p, v).expect("write");
    }
    let fake_s = fake.to_str().expect("utf8").to_string();
    let r = doctor(
        &h,
        Role::Gw,
        &cfg,
        &["--proc-root", &fake_s, "--kernel-release", "5.4.230-omr"],
    );
    let k = r.1["checks"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["id"] == "kernel.mptcp"))
        .cloned()
        .unwrap_or_default();
    assert!(format!("{k}").contains("v0"), "{k}");
    expect("v0 kernel", r, &["kernel.mptcp"], &[]);

    let newer = h.dir().join("boot-newer");
    std::fs::create_dir_all(&newer).expect("dir");
    std::fs::write(newer.join("vmlinuz-6.1.0-31-amd64"), "").expect("write");
    std::fs::write(newer.join("vmlinuz-6.12.9-1-amd64"), "").expect("write");
    let newer_s = newer.to_str().expect("utf8").to_string();
    let r = h
        .doctor(
            Role::Gw,
            &cfg,
            &[
                "--boot-root",
                &newer_s,
                "--run-root",
                &newer_s,
                "--kernel-release",
                "6.1.0-31-amd64",
            ],
        )
        .expect("doctor");
    assert_eq!(status(&r.1, "kernel.reboot_pending"), "warn", "{}", r.1);
    expect("reboot pending", r, &[], &["kernel.reboot_pending"]);

    // TFO refused on MPTCP sockets (ENOPROTOOPT, as before Linux 6.2), injected with seccomp:
    // with "auto" an honest warning that names the errno and 6.2; with "on" a failure.
    let b = boot(&h);
    let bs = b.to_str().expect("utf8").to_string();
    let auto = h
        .write(
            "tfo-auto.toml",
            &std::fs::read_to_string(&cfg)
                .expect("cfg")
                .replace("fast_open = \"off\"", "fast_open = \"auto\""),
        )
        .expect("write");
    let r = h
        .doctor_wrapped(
            Role::Gw,
            true,
            &auto,
            &["--boot-root", &bs, "--run-root", &bs],
        )
        .expect("doctor");
    let t = r.1["checks"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["id"] == "tfo"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(t["status"], "warn", "{t}");
    assert!(
        t["cause"].as_str().unwrap_or("").contains("ENOPROTOOPT")
            && t["cause"].as_str().unwrap_or("").contains("6.2"),
        "{t}"
    );
    assert_eq!(t["evidence"]["setsockopt"], "Unsupported", "{t}");
    expect("TFO ENOPROTOOPT, auto", r, &[], &["tfo"]);
    let on = h
        .write(
            "tfo-on.toml",
            &std::fs::read_to_string(&cfg)
                .expect("cfg")
                .replace("fast_open = \"off\"", "fast_open = \"on\""),
        )
        .expect("write");
    expect(
        "TFO ENOPROTOOPT, on",
        h.doctor_wrapped(
            Role::Gw,
            true,
            &on,
            &["--boot-root", &bs, "--run-root", &bs],
        )
        .expect("doctor"),
        &["tfo"],
        &[],
    );

    // The relay's clock 60 s ahead: Shadowsocks-2022 refuses every request.
    h.stop_server().expect("stop");
    h.start_server_with_prefix(&["faketime", "-f", "+60s"], "")
        .expect("server under faketime");
    let r = doctor(&h, Role::Gw, &cfg, &[]);
    let rel = r.1["checks"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["id"] == "server.relay"))
        .cloned()
        .unwrap_or_default();
    assert!(
        rel["cause"].as_str().unwrap_or("").contains("clocks"),
        "{rel}"
    );
    expect("clock 60 s off", r, &["server.relay"], &[]);
}

#[test]
fn server_side_firewall_and_ssh_lockout_are_named() {
    if !braid_lab::root_tests_enabled("doctor_server_fw") {
        return;
    }
    let mut h = lab("btd4");
    h.start_server("").expect("server");
    let server_cfg = h.dir().join("server.toml");
    let sshd = h.write("sshd_config", "Port 65222\n").expect("sshd");
    let sshd_s = sshd.to_str().expect("utf8").to_string();
    let args = ["--sshd-config", sshd_s.as_str()];
    // Healthy: no firewall at all; the relay's initial_window program loads and attaches here.
    let healthy = doctor(&h, Role::Vps, &server_cfg, &args);
    assert_eq!(
        status(&healthy.1, "initial_window"),
        "ok",
        "{:#}",
        healthy.1
    );
    assert_eq!(status(&healthy.1, "mptcp.joins"), "ok", "{:#}", healthy.1);
    expect("no firewall", healthy, &[], &["tfo"]);
    // With the in-kernel path manager the namespace's limit caps joins: the kernel's default 2
    // is below max_joins (8), then raised to it.
    let text = std::fs::read_to_string(&server_cfg).expect("server.toml");
    let in_kernel = h
        .write(
            "server-in-kernel.toml",
            &format!("{text}\nbond_after_kib = 0\n"),
        )
        .expect("write");
    h.lab
        .run(
            Role::Vps,
            &["ip", "mptcp", "limits", "set", "subflows", "2"],
        )
        .expect("limits");
    expect(
        "in-kernel path manager, 2 joins",
        doctor(&h, Role::Vps, &in_kernel, &args),
        &["mptcp.joins"],
        &["tfo", "mptcp.joins"],
    );
    h.lab
        .run(
            Role::Vps,
            &["ip", "mptcp", "limits", "set", "subflows", "8"],
        )
        .expect("limits");
    let raised = doctor(&h, Role::Vps, &in_kernel, &args);
    assert_eq!(status(&raised.1, "mptcp.joins"), "ok", "{:#}", raised.1);
    // A firewall that admits the relay and port 22, but sshd listens on 65222: lock-out ahead.
    let rules = h
        .write("fw1.nft", "table inet fw {\n chain input {\n  type filter hook input priority 0; policy drop;\n  ct state established,related accept\n  iifname \"lo\" accept\n  tcp dport { 22, 8388 } accept\n }\n}\n")
        .expect("write");
    h.lab
        .run(Role::Vps, &["nft", "-f", rules.to_str().expect("utf8")])
        .expect("nft");
    expect(
        "ssh not admitted",
        doctor(&h, Role::Vps, &server_cfg, &args),
        &["firewall.ssh"],
        &["tfo"],
    );
    h.lab
        .run(Role::Vps, &["nft", "delete", "table", "inet", "fw"])
        .expect("nft");
    // The relay port closed by the firewall.
    let rules = h
        .write("fw2.nft", "table inet fw {\n chain input {\n  type filter hook input priority 0; policy drop;\n  ct state established,related accept\n  tcp dport 65222 accept\n }\n}\n")
        .expect("write");
    h.lab
        .run(Role::Vps, &["nft", "-f", rules.to_str().expect("utf8")])
        .expect("nft");
    let closed = doctor(&h, Role::Vps, &server_cfg, &args);
    // The same policy drops the UDP relay and the tunnel: a warning (TCP still bonds).
    assert_eq!(
        status(&closed.1, "firewall.relay_udp"),
        "warn",
        "{:#}",
        closed.1
    );
    expect(
        "relay port closed",
        closed,
        &["firewall.relay_port"],
        &["tfo"],
    );
}

#[test]
fn a_relay_that_takes_too_few_joins_is_named() {
    if !braid_lab::root_tests_enabled("doctor_relay_joins") {
        return;
    }
    let mut h = lab("btd6");
    let cfg = gw_config(&h);
    // Two uplinks need one join; a relay that takes exactly one has no room for an uplink that
    // comes back before its old subflow closed, and one that takes none never bonds.
    for (max_joins, want) in [(1, "warn"), (0, "fail")] {
        h.start_server(&format!("max_joins = {max_joins}"))
            .expect("server");
        h.start_gateway(&["wifi", "5g"], "fast_open = \"off\"")
            .expect("gateway");
        h.wait_uplinks_up(&["wifi", "5g"], Duration::from_secs(10))
            .expect("up");
        let (_, v) = doctor(&h, Role::Gw, &cfg, &[]);
        assert_eq!(
            status(&v, "server.joins"),
            want,
            "max_joins = {max_joins}: {v:#}"
        );
        h.stop_gateway().expect("stop");
        h.stop_server().expect("stop");
    }
}

/// Waits until the gateway's status has every uplink in `state`.
#[track_caller]
fn wait_all_uplinks(h: &Harness, state: LinkState, limit: Duration) -> Status {
    common::wait_status(h, &format!("every uplink {state}"), limit, move |s| {
        !s.uplinks.is_empty() && s.uplinks.iter().all(|u| u.state == state)
    })
}

/// During a relay outage no uplink carries traffic, and braid keeps every endpoint so that the
/// connections' subflows can resume (`HealthVerdict::among`); doctor says so, and calls nothing
/// a fault, also while the uplinks are still Recovering after the relay is back.
#[test]
fn endpoints_kept_during_a_relay_outage_are_not_called_faults() {
    if !braid_lab::root_tests_enabled("doctor_withdrawn") {
        return;
    }
    let mut h = lab("btd5");
    h.start_server("").expect("server");
    // Slow recovery (30 good probes 500 ms apart: 15 s) keeps the uplinks Recovering after the
    // relay is back, which is when doctor used to call the withdrawn endpoints missing; a 1 s
    // probe timeout keeps a busy machine from losing probes (and restarting the count).
    h.start_gateway(
        &["wifi", "5g"],
        "fast_open = \"off\"\n[health]\ninterval_ms = 500\ntimeout_ms = 1000\ntimeout_max_ms = 2000\nrecover_after = 30",
    )
    .expect("gateway");
    wait_all_uplinks(&h, LinkState::Up, Duration::from_secs(60));
    let cfg = gw_config(&h);

    h.stop_server().expect("stop server");
    wait_all_uplinks(&h, LinkState::Down, Duration::from_secs(10));
    h.start_server("").expect("server again");
    let s = common::status(&h);
    assert!(
        s.uplinks.iter().all(|u| u.state != LinkState::Up),
        "uplinks came back too fast for this test: {s:?}"
    );
    let r = doctor(&h, Role::Gw, &cfg, &[]);
    for u in ["wifi", "5g"] {
        let id = format!("uplink.{u}.endpoint");
        let c = r.1["checks"]
            .as_array()
            .and_then(|a| a.iter().find(|c| c["id"] == id.as_str()))
            .cloned()
            .unwrap_or_default();
        assert_eq!(c["status"], "warn", "{c}");
        let summary = c["summary"].as_str().unwrap_or("");
        assert!(
            summary.contains("keeps the MPTCP endpoint")
                && summary.contains("while no uplink carries traffic")
                && (summary.contains("is Recovering") || summary.contains("is Down")),
            "doctor names what braid did and why: {c}"
        );
    }
    // Nothing fails.
    expect(
        "endpoints kept in an outage",
        r,
        &[],
        &["uplink.wifi.endpoint", "uplink.5g.endpoint"],
    );
}
