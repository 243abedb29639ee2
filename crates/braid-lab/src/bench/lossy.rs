//! `braid lab bench lossy`: bonded goodput over uplinks with random loss, per congestion control
//! of braid's relay sockets, against the lossless single-uplink sum measured in the same run.
//!
//! Loss-based congestion control (cubic) backs off at every random loss of wifi and 5G; braid's
//! `congestion` key (BBR by default) is meant to keep the bonded rate near what the links carry.
//! The table has: the lossless single-uplink TCP rates and their sum (the 100 % line), braid on
//! the clean links per algorithm (no worse than before), braid on the lossy links per algorithm,
//! and the MPTCP sysctls that bear on loss (`net.mptcp.stale_loss_cnt`, each available
//! `net.mptcp.scheduler`) under BBR. The host's own default is never changed: every algorithm is
//! chosen through braid's `congestion` key, so the result does not depend on it (a lab namespace
//! inherits the host's default and may not change it to one outside
//! `net.ipv4.tcp_allowed_congestion_control`).

use std::fmt::Write as _;
use std::path::Path;

use super::aggregation::{down_up, pct};
use crate::harness::{Harness, HarnessError};
use crate::Role;

/// Options of `braid lab bench lossy`.
#[derive(Debug, clap::Args)]
pub struct LossyArgs {
    /// Seconds per transfer.
    #[arg(long, default_value_t = 10)]
    pub secs: u64,
    /// Random loss on wifi, in ‰ per direction.
    #[arg(long, default_value_t = 5)]
    pub wifi_loss_permille: u32,
    /// Random loss on 5g, in ‰ per direction.
    #[arg(long, default_value_t = 10)]
    pub g5_loss_permille: u32,
    /// Congestion controls to compare (values of braid's `congestion` key).
    #[arg(long, value_delimiter = ',', default_values_t = ["cubic".to_string(), "bbr".to_string()])]
    pub congestion: Vec<String>,
    /// Values of `net.mptcp.stale_loss_cnt` to try with BBR besides the kernel's default.
    #[arg(long, value_delimiter = ',', default_values_t = [2u32, 8])]
    pub stale_loss_cnt: Vec<u32>,
}

/// Down and up, Mbit/s.
type Rates = (f64, f64);

/// braid through the capture with `extra` in both configs; both daemons are stopped after.
fn braid(h: &mut Harness, extra: &str, secs: u64) -> Result<Rates, HarnessError> {
    h.start_server(extra)?;
    h.start_gateway(&["wifi", "5g"], extra)?;
    let r = down_up(h, Role::Lan, &[], secs)?;
    h.stop_gateway()?;
    h.stop_server()?;
    Ok(r)
}

/// One table row; the ratio columns stay empty without a sum.
fn row(name: &str, r: Rates, sum: Option<Rates>) -> String {
    let (d, u) = sum.map_or((String::new(), String::new()), |s| {
        (pct(r.0, s.0), pct(r.1, s.1))
    });
    format!("| {name} | {:.1} | {d} | {:.1} | {u} |\n", r.0, r.1)
}

/// Sets an MPTCP sysctl on both ends of the tunnel (inside the lab's namespaces).
fn mptcp_sysctl(h: &Harness, key: &str, value: &str) -> Result<(), HarnessError> {
    h.lab.sysctl(Role::Gw, key, value)?;
    h.lab.sysctl(Role::Vps, key, value)?;
    Ok(())
}

/// Runs the benchmark and returns Markdown.
pub fn lossy(args: &LossyArgs, exe: &Path) -> Result<String, HarnessError> {
    let secs = args.secs;
    let mut h = Harness::new("blossy", crate::demo::demo_uplinks(), exe)?;
    let host_default = h
        .lab
        .read_sysctl(Role::Gw, "net.ipv4.tcp_congestion_control")?;
    let stale_default = h.lab.read_sysctl(Role::Gw, "net.mptcp.stale_loss_cnt")?;
    let schedulers = h
        .lab
        .read_sysctl(Role::Gw, "net.mptcp.available_schedulers")
        .unwrap_or_default();

    let mut rows: Vec<(String, Rates)> = Vec::new();
    eprintln!("clean links: braid per congestion control…");
    for cc in &args.congestion {
        let r = braid(&mut h, &format!("congestion = \"{cc}\""), secs)?;
        rows.push((format!("clean links, braid, congestion = \"{cc}\""), r));
    }

    eprintln!("lossy links: braid per congestion control…");
    h.lab.set_uplink_loss("wifi", args.wifi_loss_permille)?;
    h.lab.set_uplink_loss("5g", args.g5_loss_permille)?;
    for cc in &args.congestion {
        let r = braid(&mut h, &format!("congestion = \"{cc}\""), secs)?;
        rows.push((format!("lossy links, braid, congestion = \"{cc}\""), r));
    }
    eprintln!("lossy links: MPTCP sysctls under BBR…");
    for n in &args.stale_loss_cnt {
        mptcp_sysctl(&h, "net.mptcp.stale_loss_cnt", &n.to_string())?;
        let r = braid(&mut h, "congestion = \"bbr\"", secs)?;
        rows.push((
            format!("lossy links, braid, bbr, net.mptcp.stale_loss_cnt = {n}"),
            r,
        ));
    }
    mptcp_sysctl(&h, "net.mptcp.stale_loss_cnt", &stale_default)?;
    for s in schedulers.split_whitespace().filter(|s| *s != "default") {
        mptcp_sysctl(&h, "net.mptcp.scheduler", s)?;
        let r = braid(&mut h, "congestion = \"bbr\"", secs)?;
        rows.push((
            format!("lossy links, braid, bbr, net.mptcp.scheduler = {s}"),
            r,
        ));
    }

    // The 100 % line: single-uplink TCP on the clean links, with the policy a script would set.
    eprintln!("clean links: single-uplink TCP…");
    h.lab.set_uplink_loss("wifi", 0)?;
    h.lab.set_uplink_loss("5g", 0)?;
    h.lab.kernel_mptcp_policy()?;
    let wifi_ip = h.lab.uplink_gw_addr("wifi").to_string();
    let g5_ip = h.lab.uplink_gw_addr("5g").to_string();
    let wifi = down_up(&h, Role::Gw, &["--bind", &wifi_ip], secs)?;
    let g5 = down_up(&h, Role::Gw, &["--bind", &g5_ip], secs)?;
    drop(h);
    let sum = (wifi.0 + g5.0, wifi.1 + g5.1);

    let mut md = String::new();
    let _ = writeln!(
        md,
        "### Bonded goodput over lossy uplinks (wifi 40 Mbit/s 10 ms, {} ‰ loss each way + 5g 20 Mbit/s 40 ms, {} ‰; 1 stream, {secs} s each)\n",
        args.wifi_loss_permille, args.g5_loss_permille
    );
    let _ = writeln!(
        md,
        "Host default congestion control (inherited by the lab): {host_default}; net.mptcp.stale_loss_cnt default {stale_default}; schedulers available: {}.\n",
        if schedulers.is_empty() { "–" } else { &schedulers }
    );
    md += "| path | down Mbit/s | down / lossless sum | up Mbit/s | up / lossless sum |\n|---|---|---|---|---|\n";
    md += &row(
        &format!("clean links, TCP over wifi alone ({host_default})"),
        wifi,
        None,
    );
    md += &row(
        &format!("clean links, TCP over 5g alone ({host_default})"),
        g5,
        None,
    );
    md += &row("lossless single-uplink sum", sum, Some(sum));
    for (name, r) in &rows {
        md += &row(name, *r, Some(sum));
    }
    Ok(md)
}
