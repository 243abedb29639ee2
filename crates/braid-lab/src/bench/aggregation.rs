//! `braid lab bench aggregation`: side-by-side measurements in one run, printed as Markdown tables.
//!
//! The machines are shared and noisy, so every figure that matters is a ratio of two things
//! measured in the same run: braid against the sum of single-uplink TCP, against raw kernel MPTCP
//! without a proxy, and (when its binaries are given) against the shadowsocks-rust stack that
//! OpenMPTCPRouter users run today.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use crate::demo::demo_uplinks;
use crate::harness::{Harness, HarnessError, RELAY_PORT, SOCKS_PORT};
use crate::{Lab, Role, UplinkSpec};

/// Options of `braid lab bench aggregation`.
#[derive(Debug, clap::Args)]
pub struct AggregationArgs {
    /// Seconds per transfer.
    #[arg(long, default_value_t = 10)]
    pub secs: u64,
    /// Folder with shadowsocks-rust's `ssserver` and `sslocal`, to measure that stack side by side.
    #[arg(long)]
    pub ssrust: Option<PathBuf>,
}

fn rate(v: &serde_json::Value) -> f64 {
    v["mbit_per_s"].as_f64().unwrap_or(0.0)
}

fn get(h: &Harness, role: Role, extra: &[&str], secs: u64) -> Result<f64, HarnessError> {
    let s = secs.to_string();
    let t = Harness::traffic_target();
    let mut a = vec!["get", "--connect", &t, "--secs", &s];
    a.extend_from_slice(extra);
    h.traffic(role, &a).map(|v| rate(&v))
}

fn put(h: &Harness, role: Role, extra: &[&str], secs: u64) -> Result<f64, HarnessError> {
    let s = secs.to_string();
    let t = Harness::traffic_target();
    let mut a = vec!["put", "--connect", &t, "--secs", &s];
    a.extend_from_slice(extra);
    h.traffic(role, &a).map(|v| rate(&v))
}

/// A download then an upload from `role` for `secs` each: (down, up) in Mbit/s.
pub(super) fn down_up(
    h: &Harness,
    role: Role,
    extra: &[&str],
    secs: u64,
) -> Result<(f64, f64), HarnessError> {
    Ok((get(h, role, extra, secs)?, put(h, role, extra, secs)?))
}

/// CPU seconds (user + system) used so far by these processes.
pub(super) fn cpu_secs(pids: &[u32]) -> f64 {
    let tck = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    pids.iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).ok())
        .filter_map(|st| {
            let rest = st.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / tck)
        })
        .sum()
}

/// A rate with the CPU the proxy processes spent on it.
struct Costed {
    mbit: f64,
    cpu_per_gbit: f64,
}

fn costed(
    h: &Harness,
    pids: &[u32],
    f: impl FnOnce() -> Result<f64, HarnessError>,
    secs: u64,
) -> Result<Costed, HarnessError> {
    let c0 = cpu_secs(pids);
    let mbit = f()?;
    let cpu = cpu_secs(pids) - c0;
    let _ = h;
    let gbits = mbit / 1000.0 * secs as f64;
    Ok(Costed {
        mbit,
        cpu_per_gbit: if gbits > 0.0 { cpu / gbits } else { 0.0 },
    })
}

/// shadowsocks-rust started in the lab: ssserver in vps, sslocal (SOCKS5 on the gateway's LAN
/// address, and redir on :1100 behind braid's own capture rules) in gw.
struct SsRust {
    children: Vec<Child>,
}

impl SsRust {
    fn start(h: &Harness, dir: &Path) -> Result<SsRust, HarnessError> {
        let io = |what: &str| {
            let what = what.to_string();
            move |source| HarnessError::Io { what, source }
        };
        let key = h.key().to_string();
        let server = format!("{}:{RELAY_PORT}", Lab::VPS_PUBLIC);
        let mut s = h
            .lab
            .command(Role::Vps, &dir.join("ssserver").to_string_lossy());
        s.args([
            "-s",
            &server,
            "-m",
            "2022-blake3-aes-256-gcm",
            "-k",
            &key,
            "--tcp-multipath",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        let mut children = vec![s.spawn().map_err(io("starting ssserver"))?];
        std::thread::sleep(Duration::from_millis(500));
        let socks = format!("{}:{SOCKS_PORT}", Lab::GW_LAN);
        let mut l = h
            .lab
            .command(Role::Gw, &dir.join("sslocal").to_string_lossy());
        l.args([
            "-b",
            &socks,
            "-s",
            &server,
            "-m",
            "2022-blake3-aes-256-gcm",
            "-k",
            &key,
            "--tcp-multipath",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        children.push(l.spawn().map_err(io("starting sslocal"))?);
        let mut r = h
            .lab
            .command(Role::Gw, &dir.join("sslocal").to_string_lossy());
        r.args([
            "--protocol",
            "redir",
            "-b",
            "0.0.0.0:1100",
            "-s",
            &server,
            "-m",
            "2022-blake3-aes-256-gcm",
            "-k",
            &key,
            "--tcp-multipath",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        children.push(r.spawn().map_err(io("starting sslocal redir"))?);
        let rules = braid_sys::nftables::CaptureRules {
            table: "ssbench".into(),
            lan: vec![Lab::GW_LAN_IFACE
                .parse()
                .map_err(|e: braid_sys::link::BadIfName| HarnessError::Io {
                    what: "the lab's LAN interface name".into(),
                    source: std::io::Error::other(e.to_string()),
                })?],
            redirect_port: 1100,
            exclude: vec![Lab::VPS_PUBLIC.into()],
        };
        let text = rules.render().map_err(|e| HarnessError::Io {
            what: "nft".into(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let mut nft = h.lab.command(Role::Gw, "nft");
        nft.args(["-f", "-"]).stdin(Stdio::piped());
        let mut child = nft.spawn().map_err(io("nft"))?;
        if let Some(mut i) = child.stdin.take() {
            use std::io::Write;
            i.write_all(text.as_bytes()).map_err(io("nft stdin"))?;
        }
        child.wait().map_err(io("nft"))?;
        std::thread::sleep(Duration::from_millis(500));
        Ok(SsRust { children })
    }

    fn pids(&self) -> Vec<u32> {
        self.children.iter().map(|c| c.id()).collect()
    }

    fn stop(mut self, h: &Harness) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = h
            .lab
            .run(Role::Gw, &["nft", "delete", "table", "inet", "ssbench"]);
    }
}

pub(super) fn pct(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.1} %", a / b * 100.0)
    } else {
        "–".into()
    }
}

/// Runs the aggregation benchmark and returns Markdown.
pub fn aggregation(args: &AggregationArgs, exe: &Path) -> Result<String, HarnessError> {
    let secs = args.secs;
    let mut md = String::new();

    // 1. Shaped lab: wifi 40 Mbit/s 10 ms, 5g 20 Mbit/s 40 ms. braid first, while the gateway's
    //    namespace has no policy routing but braid's own.
    eprintln!("shaped lab: braid…");
    let rr = |h: &Harness, role: Role, extra: &[&str]| -> Result<serde_json::Value, HarnessError> {
        let t = Harness::traffic_target();
        let mut a = vec!["rr", "--connect", &t, "--count", "20", "--timeout", "10"];
        a.extend_from_slice(extra);
        let mut cmd = h.lab.command(role, &exe.to_string_lossy());
        cmd.args(["lab", "traffic"]).args(&a);
        let out = cmd.output().map_err(|source| HarnessError::Io {
            what: "rr".into(),
            source,
        })?;
        Ok(serde_json::from_slice(&out.stdout).unwrap_or_default())
    };
    let mut h = Harness::new("bagg", demo_uplinks(), exe)?;
    h.lab.sysctl(Role::Vps, "net.ipv4.tcp_fastopen", "3")?;
    h.start_server("")?;
    let mut run = h.log_cursor("gateway.log");
    h.start_gateway(&["wifi", "5g"], "fast_open = \"auto\"")?;
    let braid = (
        get(&h, Role::Lan, &[], secs)?,
        put(&h, Role::Lan, &[], secs)?,
    );
    eprintln!("shaped lab: time to first byte…");
    let decision = run
        .wait_for("TCP Fast Open o", Duration::from_secs(30))?
        .split("TCP Fast Open ")
        .nth(1)
        .unwrap_or("")
        .to_string();
    let braid_auto = rr(&h, Role::Lan, &[])?;
    h.stop_gateway()?;
    h.start_gateway(&["wifi", "5g"], "fast_open = \"off\"")?;
    let braid_off = rr(&h, Role::Lan, &[])?;
    h.stop_gateway()?;
    let mut run = h.log_cursor("gateway.log");
    h.start_gateway(&["wifi"], "fast_open = \"auto\"\nmptcp = false")?;
    run.wait_for("TCP Fast Open o", Duration::from_secs(30))?;
    let braid_tcp_tfo = rr(&h, Role::Lan, &[])?;
    h.stop_gateway()?;
    h.stop_server()?;

    // The baselines need the per-uplink policy a script would set (as OMR does).
    h.lab.kernel_mptcp_policy()?;
    let wifi_ip = h.lab.uplink_gw_addr("wifi").to_string();
    let g5_ip = h.lab.uplink_gw_addr("5g").to_string();
    let (ss, ss_rr) = match &args.ssrust {
        Some(dir) => {
            eprintln!("shaped lab: shadowsocks-rust…");
            let s = SsRust::start(&h, dir)?;
            let r = (
                get(&h, Role::Lan, &[], secs)?,
                put(&h, Role::Lan, &[], secs)?,
            );
            let t = rr(&h, Role::Lan, &[])?;
            s.stop(&h);
            (Some(r), Some(t))
        }
        None => (None, None),
    };
    eprintln!("shaped lab: single-uplink TCP and raw kernel MPTCP…");
    let wifi = (
        get(&h, Role::Gw, &["--bind", &wifi_ip], secs)?,
        put(&h, Role::Gw, &["--bind", &wifi_ip], secs)?,
    );
    let g5 = (
        get(&h, Role::Gw, &["--bind", &g5_ip], secs)?,
        put(&h, Role::Gw, &["--bind", &g5_ip], secs)?,
    );
    let raw = (
        get(&h, Role::Gw, &["--mptcp"], secs)?,
        put(&h, Role::Gw, &["--mptcp"], secs)?,
    );
    let direct = rr(&h, Role::Gw, &["--bind", &wifi_ip])?;
    drop(h);

    let sum = (wifi.0 + g5.0, wifi.1 + g5.1);
    let _ = writeln!(
        md,
        "### Bonded goodput (wifi 40 Mbit/s 10 ms + 5g 20 Mbit/s 40 ms, 1 stream, {secs} s each)\n"
    );
    let _ = writeln!(
        md,
        "| path | down Mbit/s | down / sum | up Mbit/s | up / sum |\n|---|---|---|---|---|"
    );
    let _ = writeln!(
        md,
        "| TCP over wifi alone | {:.1} | | {:.1} | |",
        wifi.0, wifi.1
    );
    let _ = writeln!(md, "| TCP over 5g alone | {:.1} | | {:.1} | |", g5.0, g5.1);
    let _ = writeln!(
        md,
        "| sum of single uplinks | {:.1} | 100 % | {:.1} | 100 % |",
        sum.0, sum.1
    );
    let _ = writeln!(
        md,
        "| raw kernel MPTCP, no proxy | {:.1} | {} | {:.1} | {} |",
        raw.0,
        pct(raw.0, sum.0),
        raw.1,
        pct(raw.1, sum.1)
    );
    if let Some(s) = ss {
        let _ = writeln!(
            md,
            "| shadowsocks-rust 1.25 + kernel MPTCP (capture) | {:.1} | {} | {:.1} | {} |",
            s.0,
            pct(s.0, sum.0),
            s.1,
            pct(s.1, sum.1)
        );
    }
    let _ = writeln!(
        md,
        "| **braid** (capture) | {:.1} | **{}** | {:.1} | **{}** |\n",
        braid.0,
        pct(braid.0, sum.0),
        braid.1,
        pct(braid.1, sum.1)
    );

    let row = |name: &str, v: &serde_json::Value| {
        format!(
            "| {name} | {} | {} |\n",
            v["median_ms"]
                .as_f64()
                .map(|m| format!("{m:.1}"))
                .unwrap_or_else(|| "–".into()),
            v["failures"]
                .as_u64()
                .map(|f| format!("{f} of 20"))
                .unwrap_or_else(|| "–".into())
        )
    };
    let _ = writeln!(md, "### Time to first byte, 100-byte request/reply, 20 fresh connections (same lab; wifi RTT 10 ms)\n");
    let _ = writeln!(md, "| path | median ms | failures |\n|---|---|---|");
    md += &row(
        "plain TCP from the gateway over wifi, no proxy (1 RTT handshake + 1 RTT)",
        &direct,
    );
    if let Some(v) = &ss_rr {
        md += &row("shadowsocks-rust 1.25 + kernel MPTCP, no TFO (capture)", v);
    }
    md += &row("braid, MPTCP, fast_open = \"off\" (capture)", &braid_off);
    md += &row(
        &format!(
            "braid, MPTCP, fast_open = \"auto\" → {}",
            decision.replace('|', "/")
        ),
        &braid_auto,
    );
    md += &row(
        "braid, plain TCP to the relay, fast_open = \"auto\" (TFO verified: request in the SYN)",
        &braid_tcp_tfo,
    );
    md += "\n";

    // 3. Unshaped lab: the proxy's own cost.
    eprintln!("unshaped lab…");
    let mut h = Harness::new(
        "bagu",
        vec![UplinkSpec::new("wifi"), UplinkSpec::new("5g")],
        exe,
    )?;
    h.start_server("")?;
    h.start_gateway(&["wifi", "5g"], "")?;
    let pids = h.daemon_pids();
    let bd = costed(&h, &pids, || get(&h, Role::Lan, &[], secs), secs)?;
    let bu = costed(&h, &pids, || put(&h, Role::Lan, &[], secs), secs)?;
    h.stop_gateway()?;
    h.stop_server()?;
    h.lab.kernel_mptcp_policy()?;
    let ssu = match &args.ssrust {
        Some(dir) => {
            let s = SsRust::start(&h, dir)?;
            let p = s.pids();
            let d = costed(&h, &p, || get(&h, Role::Lan, &[], secs), secs)?;
            let u = costed(&h, &p, || put(&h, Role::Lan, &[], secs), secs)?;
            s.stop(&h);
            Some((d, u))
        }
        None => None,
    };
    let rawu = (
        get(&h, Role::Gw, &["--mptcp"], secs)?,
        put(&h, Role::Gw, &["--mptcp"], secs)?,
    );
    drop(h);
    let _ = writeln!(md, "### Unshaped relay throughput (2 veth uplinks, no rate or delay, 1 stream, {secs} s; 2 cores shared by everything)\n");
    let _ = writeln!(md, "| path | down Gbit/s | CPU s per Gbit | up Gbit/s | CPU s per Gbit |\n|---|---|---|---|---|");
    let _ = writeln!(
        md,
        "| raw kernel MPTCP, no proxy | {:.2} | – | {:.2} | – |",
        rawu.0 / 1000.0,
        rawu.1 / 1000.0
    );
    if let Some((d, u)) = &ssu {
        let _ = writeln!(
            md,
            "| shadowsocks-rust 1.25 (capture) | {:.2} | {:.3} | {:.2} | {:.3} |",
            d.mbit / 1000.0,
            d.cpu_per_gbit,
            u.mbit / 1000.0,
            u.cpu_per_gbit
        );
    }
    let _ = writeln!(
        md,
        "| **braid** (capture) | {:.2} | {:.3} | {:.2} | {:.3} |",
        bd.mbit / 1000.0,
        bd.cpu_per_gbit,
        bu.mbit / 1000.0,
        bu.cpu_per_gbit
    );
    if let Some((d, u)) = &ssu {
        let _ = writeln!(
            md,
            "| braid / shadowsocks-rust | {:.2}× | | {:.2}× | |",
            bd.mbit / d.mbit.max(1e-9),
            bu.mbit / u.mbit.max(1e-9)
        );
    }
    Ok(md)
}
