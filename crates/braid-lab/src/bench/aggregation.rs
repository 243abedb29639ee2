//! `braid lab bench aggregation`: side-by-side measurements in one run, printed as Markdown tables.
//!
//! The machines are shared and noisy, so every figure that matters is a ratio of two things
//! measured in the same run: braid against the sum of single-uplink TCP, against raw kernel MPTCP
//! without a proxy, and (when its binaries are given) against the shadowsocks-rust stack that
//! OpenMPTCPRouter users run today.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::demo::demo_uplinks;
use crate::harness::{Harness, HarnessError};
use crate::Role;

/// Options of `braid lab bench aggregation`.
#[derive(Debug, clap::Args)]
pub struct AggregationArgs {
    /// Seconds per transfer.
    #[arg(long, default_value_t = 10)]
    pub secs: u64,
    /// Folder with shadowsocks-rust's `ssserver` and `sslocal`, to measure that stack side by side.
    #[arg(long)]
    pub ssrust: Option<PathBuf>,
    /// Rounds of the unshaped measurement (each runs every stack once, in rotated order).
    #[arg(long, default_value_t = 2)]
    pub rounds: usize,
    /// Also measure unshaped throughput with segmentation offloads on, in a fresh lab after the
    /// rest. On Linux 6.18 this can make the kernel's TCP memory accounting run away and break
    /// TCP for the whole machine until reboot: only on a machine you can reboot.
    #[arg(long)]
    pub offloads_on: bool,
}

fn rate(v: &serde_json::Value) -> f64 {
    v["mbit_per_s"].as_f64().unwrap_or(0.0)
}

pub(super) fn get(h: &Harness, role: Role, extra: &[&str], secs: u64) -> Result<f64, HarnessError> {
    let s = secs.to_string();
    let t = Harness::traffic_target();
    let mut a = vec!["get", "--connect", &t, "--secs", &s];
    a.extend_from_slice(extra);
    h.traffic(role, &a).map(|v| rate(&v))
}

pub(super) fn put(h: &Harness, role: Role, extra: &[&str], secs: u64) -> Result<f64, HarnessError> {
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
    h.start_gateway(&["wifi", "5g"], "fast_open = \"auto\"")?;
    let braid = (
        get(&h, Role::Lan, &[], secs)?,
        put(&h, Role::Lan, &[], secs)?,
    );
    h.stop_gateway()?;
    eprintln!("shaped lab: time to first byte…");
    // Fresh connections for the first-byte rows whatever the default: the warm pool would answer
    // from connections opened ahead, which `bench/fetch.sh` measures on its own.
    let mut run = h.log_cursor("gateway.log");
    h.start_gateway(&["wifi", "5g"], "fast_open = \"auto\"\nwarm_pool = \"off\"")?;
    let decision = run
        .wait_for("TCP Fast Open o", Duration::from_secs(30))?
        .split("TCP Fast Open ")
        .nth(1)
        .unwrap_or("")
        .to_string();
    let braid_auto = rr(&h, Role::Lan, &[])?;
    h.stop_gateway()?;
    h.start_gateway(&["wifi", "5g"], "fast_open = \"off\"\nwarm_pool = \"off\"")?;
    let braid_off = rr(&h, Role::Lan, &[])?;
    h.stop_gateway()?;
    let mut run = h.log_cursor("gateway.log");
    h.start_gateway(
        &["wifi"],
        "fast_open = \"auto\"\nmptcp = false\nwarm_pool = \"off\"",
    )?;
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
            let s = super::ssrust::start(&h, dir)?;
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
    md += &row(
        "braid, MPTCP, fast_open = \"off\", warm_pool = \"off\" (capture)",
        &braid_off,
    );
    md += &row(
        &format!(
            "braid, MPTCP, warm_pool = \"off\", fast_open = \"auto\" → {}",
            decision.replace('|', "/")
        ),
        &braid_auto,
    );
    md += &row(
        "braid, plain TCP to the relay, warm_pool = \"off\", fast_open = \"auto\" (TFO verified: request in the SYN)",
        &braid_tcp_tfo,
    );
    md += "\n";

    // 3. Unshaped lab: the proxy's own cost.
    md += &super::throughput::unshaped(
        exe,
        &super::throughput::ThroughputPlan {
            secs,
            rounds: args.rounds,
            ssrust: args.ssrust.clone(),
            offloads_on: args.offloads_on,
            shaped: false,
            only: Vec::new(),
        },
    )?;
    Ok(md)
}
