//! Root tests of the lab. Each test uses its own namespace prefix (`bltN`) and the lab's
//! Drop removes everything even when an assertion fails. Without root they print SKIP, except
//! under CI=true where they fail.

use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::path::Path;

use braid_lab::{root_tests_enabled, Lab, LabSpec, Role, UplinkSpec};

fn spec(prefix: &str, uplinks: Vec<UplinkSpec>) -> LabSpec {
    LabSpec {
        prefix: prefix.into(),
        uplinks,
    }
}

/// Namespaces currently named `{prefix}-*`.
fn namespaces(prefix: &str) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/var/run/netns") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(&format!("{}{prefix}-", braid_lab::prefix_tag())))
        .collect()
}

fn ping_via(lab: &Lab, uplink: &str, count: u32) -> braid_lab::PingStats {
    let iface = lab.uplink_iface(uplink);
    let count = count.to_string();
    let dest = Lab::VPS_PUBLIC.to_string();
    let args = [
        "-U", "-n", "-c", &count, "-i", "0.02", "-W", "1", "-I", &iface, &dest,
    ];
    lab.ping(Role::Gw, &args).expect("ping runs")
}

#[test]
fn lab_up_connects_every_uplink_and_teardown_removes_everything() {
    if !root_tests_enabled("lab_up_connects_every_uplink_and_teardown_removes_everything") {
        return;
    }
    let lab = Lab::up(spec(
        "blt1",
        vec![UplinkSpec::new("wifi"), UplinkSpec::new("5g")],
    ))
    .unwrap();
    let mut names = namespaces("blt1");
    names.sort();
    let tag = braid_lab::prefix_tag();
    let want: Vec<String> = ["gw", "lan", "srv", "vps"]
        .iter()
        .map(|r| format!("{tag}blt1-{r}"))
        .collect();
    assert_eq!(names, want);

    for up in ["wifi", "5g"] {
        let p = ping_via(&lab, up, 2);
        assert_eq!(p.received, 2, "gw reaches the vps over {up}: {p:?}");
    }
    let p = lab
        .ping(Role::Srv, &["-c", "1", "-W", "1", "10.30.0.1"])
        .unwrap();
    assert_eq!(p.received, 1, "srv reaches the vps");
    let p = lab
        .ping(Role::Lan, &["-c", "1", "-W", "1", "10.9.0.1"])
        .unwrap();
    assert_eq!(p.received, 1, "lan reaches gw");
    let routes = lab
        .run(Role::Gw, &["ip", "route", "show", "default"])
        .unwrap();
    assert!(
        routes.contains("via 10.1.0.2 dev wan-wifi metric 100"),
        "{routes}"
    );
    assert!(
        routes.contains("via 10.2.0.2 dev wan-5g metric 200"),
        "{routes}"
    );
    assert_eq!(
        lab.read_sysctl(Role::Gw, "net.ipv4.conf.wan-5g.rp_filter")
            .unwrap(),
        "2"
    );

    // Baseline policy: twice, and still one rule per uplink and one endpoint each.
    lab.kernel_mptcp_policy().unwrap();
    lab.kernel_mptcp_policy().unwrap();
    let rules = lab.run(Role::Gw, &["ip", "rule", "show"]).unwrap();
    assert_eq!(
        rules.matches("from 10.1.0.1 lookup 101").count(),
        1,
        "{rules}"
    );
    assert_eq!(
        rules.matches("from 10.2.0.1 lookup 102").count(),
        1,
        "{rules}"
    );
    let endpoints = lab
        .run(Role::Gw, &["ip", "mptcp", "endpoint", "show"])
        .unwrap();
    assert_eq!(endpoints.matches("subflow").count(), 2, "{endpoints}");

    // Processes inside the namespaces die with the lab, tracked or not.
    let mut sleep = lab.command(Role::Vps, "sleep");
    sleep.arg("600");
    let tracked = lab.spawn_process(Role::Vps, sleep).unwrap();
    let mut untracked = lab.command(Role::Srv, "sleep").arg("600").spawn().unwrap();
    lab.teardown();
    assert_eq!(namespaces("blt1"), Vec::<String>::new());
    assert!(
        tracked.try_wait().unwrap().is_some(),
        "tracked process was killed"
    );
    let status = untracked.wait().unwrap();
    assert!(!status.success(), "untracked process was killed: {status}");
}

#[test]
fn lab_dropped_during_panic_leaves_no_namespaces() {
    if !root_tests_enabled("lab_dropped_during_panic_leaves_no_namespaces") {
        return;
    }
    let result = std::panic::catch_unwind(|| {
        let _lab = Lab::up(spec("blt2", vec![UplinkSpec::new("a").rtt_ms(10)])).unwrap();
        assert_eq!(namespaces("blt2").len(), 4);
        panic!("test body fails");
    });
    assert!(result.is_err());
    assert_eq!(namespaces("blt2"), Vec::<String>::new());
    // A stale lab (e.g. from a killed test run) is replaced, not an error.
    let first = Lab::up(spec("blt2", vec![UplinkSpec::new("a")])).unwrap();
    std::mem::forget(first);
    let second = Lab::up(spec("blt2", vec![UplinkSpec::new("a")])).unwrap();
    second.teardown();
    assert_eq!(namespaces("blt2"), Vec::<String>::new());
}

#[test]
fn delay_rtt40_pings_take_rtt_and_rtt0_stays_fast() {
    if !root_tests_enabled("delay_rtt40_pings_take_rtt_and_rtt0_stays_fast") {
        return;
    }
    let lab = Lab::up(spec(
        "blt3",
        vec![UplinkSpec::new("slow").rtt_ms(40), UplinkSpec::new("fast")],
    ))
    .unwrap();
    let slow = ping_via(&lab, "slow", 5);
    let median = slow.median_ms().expect("replies over the delayed uplink");
    assert!(
        (32.0..120.0).contains(&median),
        "rtt 40 ms uplink: median {median} ms, {slow:?}"
    );
    let fast = ping_via(&lab, "fast", 5);
    let median = fast.median_ms().expect("replies over the fast uplink");
    assert!(median < 10.0, "rtt 0 uplink: median {median} ms");
    // Both directions went through an emulator.
    let passed = lab.netem_packets();
    assert_eq!(passed.len(), 2, "{passed:?}");
    assert!(passed.iter().all(|(_, _, n)| *n >= 5), "{passed:?}");
}

#[test]
fn rate_limit_installs_htb_on_both_ends_without_offloads() {
    if !root_tests_enabled("rate_limit_installs_htb_on_both_ends_without_offloads") {
        return;
    }
    let lab = Lab::up(spec(
        "blt4",
        vec![
            UplinkSpec::new("dsl").rate_mbit(20),
            UplinkSpec::new("free"),
        ],
    ))
    .unwrap();
    for (role, iface) in [(Role::Gw, "wan-dsl"), (Role::Vps, "up-dsl")] {
        let classes = lab
            .run(role, &["tc", "class", "show", "dev", iface])
            .unwrap();
        assert!(
            classes.contains("htb 1:1") && classes.contains("rate 20Mbit"),
            "{iface}: {classes}"
        );
        let qdiscs = lab
            .run(role, &["tc", "qdisc", "show", "dev", iface])
            .unwrap();
        assert!(
            qdiscs.contains("qdisc bfifo 10:") && qdiscs.contains("limit 250000b"),
            "{qdiscs}"
        );
        let features = lab.run(role, &["ethtool", "-k", iface]).unwrap();
        for f in [
            "tcp-segmentation-offload: off",
            "generic-segmentation-offload: off",
            "generic-receive-offload: off",
        ] {
            assert!(features.contains(f), "{iface}: {f}");
        }
    }
    let qdiscs = lab
        .run(Role::Gw, &["tc", "qdisc", "show", "dev", "wan-free"])
        .unwrap();
    assert!(
        !qdiscs.contains("htb"),
        "unlimited uplink has no htb: {qdiscs}"
    );
    // Traffic really passes through the htb class.
    let p = ping_via(&lab, "dsl", 3);
    assert_eq!(p.received, 3);
    let stats = lab
        .run(Role::Gw, &["tc", "-s", "class", "show", "dev", "wan-dsl"])
        .unwrap();
    assert!(!stats.contains("Sent 0 bytes"), "{stats}");
}

#[test]
fn loss_500_permille_drops_some_pings_and_zero_drops_none() {
    if !root_tests_enabled("loss_500_permille_drops_some_pings_and_zero_drops_none") {
        return;
    }
    let lab = Lab::up(spec(
        "blt5",
        vec![
            UplinkSpec::new("lossy").loss_permille(500),
            UplinkSpec::new("clean"),
        ],
    ))
    .unwrap();
    let lossy = ping_via(&lab, "lossy", 40);
    // 50 % each way: about 25 % of round trips survive; all 40 surviving has p ≈ 1e-24.
    assert!(lossy.lost() > 0, "{lossy:?}");
    assert!(
        lossy.received < 30,
        "about a quarter should survive: {lossy:?}"
    );
    let clean = ping_via(&lab, "clean", 40);
    assert_eq!(clean.lost(), 0, "{clean:?}");
    // The rate can be changed at run time and removed.
    lab.set_uplink_loss("lossy", 0).unwrap();
    let healed = ping_via(&lab, "lossy", 20);
    assert_eq!(healed.lost(), 0, "{healed:?}");
}

#[test]
fn byte_counters_follow_traffic_per_uplink() {
    if !root_tests_enabled("byte_counters_follow_traffic_per_uplink") {
        return;
    }
    let lab = Lab::up(spec(
        "blt6",
        vec![UplinkSpec::new("a"), UplinkSpec::new("b")],
    ))
    .unwrap();
    let (a0, b0) = (
        lab.uplink_bytes("a").unwrap(),
        lab.uplink_bytes("b").unwrap(),
    );
    let args = [
        "-c",
        "50",
        "-i",
        "0.01",
        "-s",
        "1000",
        "-I",
        "wan-a",
        "10.200.0.1",
    ];
    assert_eq!(lab.ping(Role::Gw, &args).unwrap().received, 50);
    let a = lab.uplink_bytes("a").unwrap().since(a0);
    let b = lab.uplink_bytes("b").unwrap().since(b0);
    assert!(a.tx >= 50 * 1028 && a.rx >= 50 * 1028, "uplink a: {a:?}");
    assert!(b.tx < 2000 && b.rx < 2000, "uplink b stayed idle: {b:?}");
    let vps_side = lab.iface_bytes(Role::Vps, "up-a").unwrap();
    assert!(vps_side.rx >= 50 * 1028, "{vps_side:?}");
}

#[test]
fn faults_toggle_and_restore() {
    if !root_tests_enabled("faults_toggle_and_restore") {
        return;
    }
    let lab = Lab::up(spec(
        "blt7",
        vec![UplinkSpec::new("wifi").rtt_ms(4), UplinkSpec::new("lte")],
    ))
    .unwrap();
    let works = |up: &str| ping_via(&lab, up, 2).received > 0;
    assert!(works("wifi") && works("lte"));

    // Silent blackhole: carrier stays up, nothing passes; lte unaffected.
    lab.set_uplink_blackhole("wifi", true).unwrap();
    lab.set_uplink_blackhole("wifi", true).unwrap();
    assert!(!works("wifi"), "blackholed uplink must not pass pings");
    assert!(works("lte"));
    let link = lab
        .run(Role::Gw, &["ip", "link", "show", "wan-wifi"])
        .unwrap();
    assert!(link.contains("state UP"), "{link}");
    lab.set_uplink_blackhole("wifi", false).unwrap();
    assert!(works("wifi"));

    // Link down: the kernel drops the route; up + route back restores it.
    lab.set_uplink_link("wifi", false).unwrap();
    assert!(lab
        .ping(
            Role::Gw,
            &["-c", "1", "-W", "1", "-I", "wan-wifi", "10.200.0.1"]
        )
        .map_or(true, |p| p.received == 0));
    let routes = lab
        .run(Role::Gw, &["ip", "route", "show", "default"])
        .unwrap();
    assert!(!routes.contains("wan-wifi"), "{routes}");
    lab.set_uplink_link("wifi", true).unwrap();
    lab.install_default_route("wifi").unwrap();
    assert!(works("wifi"));

    // Address change: the new address is used, the old one is gone.
    let new = Ipv4Addr::new(10, 1, 0, 7);
    lab.change_uplink_address("wifi", new).unwrap();
    assert_eq!(lab.uplink_gw_addr("wifi"), new);
    let addrs = lab
        .run(Role::Gw, &["ip", "-4", "addr", "show", "dev", "wan-wifi"])
        .unwrap();
    assert!(
        addrs.contains("10.1.0.7/24") && !addrs.contains("10.1.0.1/"),
        "{addrs}"
    );
    assert!(works("wifi"));
    assert!(lab
        .change_uplink_address("wifi", Ipv4Addr::new(10, 2, 0, 9))
        .is_err());
    lab.change_uplink_address("wifi", Ipv4Addr::new(10, 1, 0, 1))
        .unwrap();
    assert!(works("wifi"));

    // sysctl in one namespace only.
    lab.sysctl(Role::Gw, "net.ipv4.tcp_rto_max_ms", "1000")
        .unwrap();
    assert_eq!(
        lab.read_sysctl(Role::Gw, "net.ipv4.tcp_rto_max_ms")
            .unwrap(),
        "1000"
    );
    assert_ne!(
        lab.read_sysctl(Role::Vps, "net.ipv4.tcp_rto_max_ms")
            .unwrap(),
        "1000"
    );
    lab.sysctl(Role::Gw, "net.ipv4.tcp_rto_max_ms", "120000")
        .unwrap();

    // Errors name the command and its stderr.
    let err = lab
        .run(Role::Gw, &["ip", "link", "show", "nosuchif"])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!(
            "ip netns exec {} ip link show nosuchif",
            lab.ns_name(Role::Gw)
        )) && err.contains("exit status"),
        "{err}"
    );
    assert!(lab.set_uplink_link("nosuch", true).is_err());
}

/// An MPTCP listener in vps and a client in gw: the vps counts MP_CAPABLE SYNs unless the
/// uplink strips option 30.
#[test]
fn mptcp_strip_removes_mp_capable_until_turned_off() {
    if !root_tests_enabled("mptcp_strip_removes_mp_capable_until_turned_off") {
        return;
    }
    let lab = Lab::up(spec("blt8", vec![UplinkSpec::new("wifi")])).unwrap();
    let listener = lab
        .in_netns(Role::Vps, || mptcp_listener(Lab::VPS_PUBLIC))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let syns = || {
        lab.netstat(Role::Vps, "MPTcpExt", "MPCapableSYNRX")
            .unwrap()
    };
    let connect = || {
        let stream = lab
            .in_netns(Role::Gw, || {
                mptcp_connect(SocketAddrV4::new(Lab::VPS_PUBLIC, port))
            })
            .unwrap();
        let (_accepted, _) = listener.accept().unwrap();
        drop(stream);
    };

    let before = syns();
    connect();
    assert_eq!(syns() - before, 1, "plain path carries MP_CAPABLE");

    lab.set_mptcp_strip("wifi", true).unwrap();
    lab.set_mptcp_strip("wifi", true).unwrap();
    let before = syns();
    connect();
    assert_eq!(
        syns() - before,
        0,
        "stripped path must not carry MP_CAPABLE"
    );

    lab.set_mptcp_strip("wifi", false).unwrap();
    let rules = lab
        .run(Role::Vps, &["iptables", "-t", "mangle", "-S", "PREROUTING"])
        .unwrap();
    assert!(!rules.contains("TCPOPTSTRIP"), "{rules}");
    let before = syns();
    connect();
    assert_eq!(syns() - before, 1, "restored path carries MP_CAPABLE again");
}

fn mptcp_socket() -> std::os::fd::OwnedFd {
    use rustix::net::{ipproto, socket, AddressFamily, SocketType};
    socket(
        AddressFamily::INET,
        SocketType::STREAM,
        Some(ipproto::MPTCP),
    )
    .expect("MPTCP socket (net.mptcp.enabled?)")
}

fn mptcp_listener(addr: Ipv4Addr) -> TcpListener {
    let fd = mptcp_socket();
    rustix::net::bind(&fd, &SocketAddrV4::new(addr, 0)).unwrap();
    rustix::net::listen(&fd, 16).unwrap();
    TcpListener::from(fd)
}

fn mptcp_connect(addr: SocketAddrV4) -> TcpStream {
    let fd = mptcp_socket();
    rustix::net::connect(&fd, &addr).unwrap();
    TcpStream::from(fd)
}

#[test]
fn invalid_spec_is_rejected_before_anything_is_made() {
    let err = Lab::up(spec("blt9", vec![UplinkSpec::new("much-too-long")])).unwrap_err();
    assert!(err.to_string().contains("uplink name"), "{err}");
    assert!(!Path::new("/var/run/netns/blt9-gw").exists());
}

/// The standalone emulator API, in its per-packet fallback mode, on a queue of our own.
#[test]
fn netem_standalone_fallback_mode_delays_packets() {
    use braid_lab::netem::{spawn_in_netns, DelayConfig};
    use braid_lab::ns::netns_path;
    use std::time::Duration;

    if !root_tests_enabled("netem_standalone_fallback_mode_delays_packets") {
        return;
    }
    let lab = Lab::up(spec("blt10", vec![UplinkSpec::new("a")])).unwrap();
    let config = DelayConfig {
        prefer_batch: false,
        ..DelayConfig::new(5, Duration::from_millis(20))
    };
    let handle = spawn_in_netns(&netns_path(&lab.ns_name(Role::Vps)), config).unwrap();
    assert!(!handle.batch_mode());
    let rule = [
        "iptables",
        "-w",
        "-t",
        "mangle",
        "-A",
        "PREROUTING",
        "-i",
        "up-a",
        "-j",
        "NFQUEUE",
        "--queue-num",
        "5",
    ];
    lab.run(Role::Vps, &rule).unwrap();
    let p = ping_via(&lab, "a", 5);
    let median = p.median_ms().expect("replies");
    assert!(
        (16.0..60.0).contains(&median),
        "20 ms one way: median {median} ms"
    );
    let stats = handle.stop().unwrap();
    assert!(stats.packets >= 5 && !stats.batch_mode, "{stats:?}");
}
