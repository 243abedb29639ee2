//! The kernel's TCP memory in status, metrics and doctor, end to end: both daemons report the
//! live counter, and `braid doctor` names the accounting runaway from a faked procfs root and
//! kernel log (the real fault cannot be triggered on a shared machine: the counter is global and
//! a runaway stops every TCP connection on the host until a reboot).
//!
//! Root-only (skips without root unless CI=true, where it must run).

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use braid_lab::harness::Harness;
use braid_lab::Role;
use serde_json::Value;

fn lab(prefix: &str) -> Harness {
    Harness::new(prefix, common::unshaped_uplinks(), common::exe()).expect("lab")
}

/// `braid ARGS` in `role`; exit code and stdout as JSON.
fn braid_json(h: &Harness, role: Role, args: &[&str]) -> (i32, Value) {
    let mut cmd = h.lab.command(role, env!("CARGO_BIN_EXE_braid"));
    cmd.args(args);
    let out = cmd.output().expect("braid");
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "braid {args:?}: stdout is not JSON ({e}); stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), v)
}

/// `GET /metrics` from the daemon's control API on `role`'s loopback.
fn metrics(h: &Harness, role: Role) -> String {
    h.lab
        .in_netns(role, || {
            let mut s = std::net::TcpStream::connect("127.0.0.1:9090").expect("control API");
            s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
                .expect("write");
            let mut out = String::new();
            s.read_to_string(&mut out).expect("read");
            out
        })
        .expect("in netns")
}

fn assert_tcp_mem_reported(what: &str, s: &Value) {
    let t = &s["tcp_mem"];
    assert_eq!(t["state"], "ok", "{what}: {t}");
    assert!(t["pages"].as_u64().is_some(), "{what}: no counter: {t}");
    assert_eq!(t["runaway"], false, "{what}: {t}");
    // tcp_mem itself is only visible in the initial network namespace.
    assert!(t["max_pages"].is_null(), "{what}: {t}");
    assert!(
        t["reason"].as_str().is_some_and(|r| r.contains("pages")),
        "{what}: {t}"
    );
}

#[test]
fn both_daemons_report_the_tcp_memory_counter_in_status_and_metrics() {
    if !braid_lab::root_tests_enabled("tcp_mem_status") {
        return;
    }
    let mut h = lab("bcr3");
    h.start_server("").expect("server");
    h.start_gateway(&["wifi", "5g"], "").expect("gateway");
    for (role, file) in [(Role::Gw, "gateway.toml"), (Role::Vps, "server.toml")] {
        let cfg = h.dir().join(file);
        let cfg = cfg.to_str().expect("utf8");
        let (code, s) = braid_json(&h, role, &["status", "--json", "--config", cfg]);
        assert_eq!(code, 0, "{s}");
        assert_tcp_mem_reported(file, &s);
        let m = metrics(&h, role);
        for name in [
            "braid_kernel_tcp_mem_pages ",
            "braid_kernel_tcp_mem_pressure 0",
            "braid_kernel_tcp_mem_exhausted 0",
            "braid_kernel_tcp_mem_runaway 0",
        ] {
            assert!(m.contains(name), "{file}: no {name} in /metrics:\n{m}");
        }
    }
}

/// A procfs root where the counter ran away past tcp_mem, and a kernel log with the warning.
fn fake_runaway(dir: &Path) -> (PathBuf, PathBuf) {
    let proc = dir.join("fake-proc");
    for (rel, text) in [
        ("sys/net/mptcp/enabled", "1\n"),
        (
            "net/sockstat",
            "sockets: used 40\nTCP: inuse 1 orphan 0 tw 0 alloc 12 mem 5800000\n",
        ),
        ("sys/net/ipv4/tcp_mem", "287898\t383866\t575796\n"),
        ("sys/net/ipv4/tcp_rmem", "4096\t131072\t6291456\n"),
        ("sys/net/ipv4/tcp_wmem", "4096\t16384\t4194304\n"),
        ("net/tcp", ""),
        ("net/tcp6", ""),
    ] {
        let p = proc.join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("dir");
        std::fs::write(&p, text).expect("write");
    }
    let kmsg = dir.join("fake-kmsg");
    std::fs::write(
        &kmsg,
        "4,9002,812345700,-;WARNING: CPU: 1 PID: 0 at net/ipv4/af_inet.c:156 inet_sock_destruct+0x1a5/0x1d0\n4,9008,812345760,c; __mptcp_close_ssk+0x2d6/0x4a0\n6,9011,820000000,-;TCP: out of memory -- consider tuning tcp_mem\n",
    )
    .expect("kmsg");
    (proc, kmsg)
}

#[test]
fn doctor_names_the_runaway_from_a_faked_procfs_and_kernel_log() {
    if !braid_lab::root_tests_enabled("tcp_mem_doctor") {
        return;
    }
    let mut h = lab("bcr4");
    h.start_server("").expect("server");
    let (proc, kmsg) = fake_runaway(h.dir());
    let cfg = h.dir().join("server.toml");
    let (code, r) = braid_json(
        &h,
        Role::Vps,
        &[
            "doctor",
            "--json",
            "--config",
            cfg.to_str().expect("utf8"),
            "--proc-root",
            proc.to_str().expect("utf8"),
            "--kmsg",
            kmsg.to_str().expect("utf8"),
            "--kernel-release",
            "6.18.44-amd64",
        ],
    );
    let c = r["checks"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["id"] == "kernel.tcp_mem"))
        .cloned()
        .unwrap_or_else(|| panic!("no kernel.tcp_mem check in {r}"));
    assert_eq!(code, 1, "a failed check must exit 1: {r}");
    assert_eq!(c["status"], "fail", "{c}");
    let text = format!("{} {} {}", c["summary"], c["cause"], c["fix"]);
    for needle in [
        "ran away",
        "Linux 6.18.44-amd64",
        "__mptcp_close_ssk",
        "reboot",
        "only postpones",
    ] {
        assert!(text.contains(needle), "no {needle:?} in {c}");
    }
    assert_eq!(c["evidence"]["kernel_log_mptcp_warnings"], 1, "{c}");
    assert_eq!(c["evidence"]["tcp_mem_max_pages"], 575_796, "{c}");
}
