//! `braid lab bench hostile`: bonding when one uplink's middlebox strips MPTCP options, with
//! braid's tunnel for hostile paths and without it, against the single-uplink TCP sum of the
//! same run.
//!
//! Rows: the single-uplink TCP rates and their sum (the 100 % line); braid with 5g stripped and
//! `tunnel = "never"` (5g carries nothing: wifi alone); braid with `tunnel = "auto"` (5g through
//! the tunnel); the time from the first stripped join to 5g carrying subflows through the tunnel
//! (the gateway's own log line); 5g alone through the tunnel against 5g alone direct; and the
//! relay's CPU per Gbit through the tunnel beside the direct path on unshaped uplinks, with
//! every segmentation offload off first (offloads on with unshaped MPTCP trip the kernel's TCP
//! memory accounting runaway; see docs/BENCHMARKS.md).

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use super::aggregation::{down_up, pct};
use super::throughput::cpu_secs;
use crate::harness::{Harness, HarnessError};
use crate::{Lab, Role, UplinkSpec};

/// Options of `braid lab bench hostile`.
#[derive(Debug, clap::Args)]
pub struct HostileArgs {
    /// Seconds per transfer.
    #[arg(long, default_value_t = 10)]
    pub secs: u64,
}

/// A download through the capture from the LAN host, Mbit/s.
fn down(h: &Harness, secs: u64) -> Result<f64, HarnessError> {
    let t = Harness::traffic_target();
    let s = secs.to_string();
    let v = h.traffic(Role::Lan, &["get", "--connect", &t, "--secs", &s])?;
    Ok(v["mbit_per_s"].as_f64().unwrap_or(0.0))
}

/// braid with 5g's `tunnel` key set to `mode`; the gateway runs when this returns.
fn gateway(h: &mut Harness, uplinks: &[&str], mode: &str) -> Result<(), HarnessError> {
    let keys = format!("tunnel = \"{mode}\"\n");
    let list: Vec<(&str, &str)> = uplinks
        .iter()
        .map(|u| (*u, if *u == "5g" { keys.as_str() } else { "" }))
        .collect();
    let mut log = h.log_cursor("gateway.log");
    h.start_gateway_uplinks(&list, "tunnel_retry_secs = 600")?;
    h.wait_uplinks_up(uplinks, Duration::from_secs(15))?;
    if mode == "always" {
        // Until the tunnel is up the uplink carries nothing, and connections start elsewhere.
        log.wait_for(
            "uplink 5g: subflows now go through the tunnel",
            Duration::from_secs(15),
        )?;
    }
    Ok(())
}

/// Turns TSO, GSO and GRO off on every veth of the lab (unshaped uplinks keep them otherwise).
fn offloads_off(lab: &Lab) -> Result<(), HarnessError> {
    let mut ifaces = vec![
        (Role::Gw, Lab::GW_LAN_IFACE.to_string()),
        (Role::Lan, Lab::LAN_IFACE.to_string()),
        (Role::Vps, Lab::VPS_SRV_IFACE.to_string()),
        (Role::Srv, Lab::SRV_IFACE.to_string()),
    ];
    for u in lab.uplinks() {
        ifaces.push((Role::Gw, lab.uplink_iface(&u.name)));
        ifaces.push((Role::Vps, lab.uplink_vps_iface(&u.name)));
    }
    for (role, i) in ifaces {
        lab.run(
            role,
            &[
                "ethtool", "-K", &i, "tso", "off", "gso", "off", "gro", "off",
            ],
        )?;
    }
    Ok(())
}

/// The relay's CPU seconds per Gbit for a download over 5g alone, with `mode`.
fn relay_cost(h: &mut Harness, mode: &str, secs: u64) -> Result<(f64, f64), HarnessError> {
    h.start_server("")?;
    gateway(h, &["5g"], mode)?;
    let server = h.daemon_pids()[0];
    let c0 = cpu_secs(&[server]);
    let mbit = down(h, secs)?;
    let cpu = cpu_secs(&[server]) - c0;
    h.stop_gateway()?;
    h.stop_server()?;
    let gbit = mbit / 1000.0 * secs as f64;
    Ok((mbit, if gbit > 0.0 { cpu / gbit } else { 0.0 }))
}

/// Runs the benchmark and returns Markdown.
pub fn hostile(args: &HostileArgs, exe: &Path) -> Result<String, HarnessError> {
    let secs = args.secs;
    let mut h = Harness::new("bhost", crate::demo::demo_uplinks(), exe)?;
    h.lab.set_mptcp_strip("5g", true)?;

    eprintln!("5g stripped, tunnel = \"never\"…");
    h.start_server("")?;
    gateway(&mut h, &["wifi", "5g"], "never")?;
    let never = down(&h, secs)?;
    h.stop_gateway()?;

    eprintln!("5g stripped, tunnel = \"auto\": time to the tunnel, then goodput…");
    h.lab.set_mptcp_strip("5g", false)?;
    gateway(&mut h, &["wifi", "5g"], "auto")?;
    let t = Harness::traffic_target();
    let bg = h.spawn_traffic(Role::Lan, &["get", "--connect", &t, "--secs", "8"])?;
    std::thread::sleep(Duration::from_secs(2));
    let mut log = h.log_cursor("gateway.log");
    h.lab.set_mptcp_strip("5g", true)?;
    let stripped = Instant::now();
    log.wait_for(
        "uplink 5g: subflows now go through the tunnel",
        Duration::from_secs(30),
    )?;
    let switch = stripped.elapsed();
    let _ = h.finish_traffic(bg);
    let auto = down(&h, secs)?;
    h.stop_gateway()?;

    eprintln!("5g alone through the tunnel…");
    gateway(&mut h, &["5g"], "always")?;
    let g5_tunnel = down(&h, secs)?;
    h.stop_gateway()?;
    h.stop_server()?;

    eprintln!("single-uplink TCP…");
    h.lab.set_mptcp_strip("5g", false)?;
    h.lab.kernel_mptcp_policy()?;
    let wifi_ip = h.lab.uplink_gw_addr("wifi").to_string();
    let g5_ip = h.lab.uplink_gw_addr("5g").to_string();
    let wifi = down_up(&h, Role::Gw, &["--bind", &wifi_ip], secs)?.0;
    let g5 = down_up(&h, Role::Gw, &["--bind", &g5_ip], secs)?.0;
    drop(h);
    let sum = wifi + g5;

    eprintln!("unshaped, offloads off: the relay's CPU per Gbit…");
    let mut u = Harness::new(
        "bhostu",
        vec![UplinkSpec::new("wifi"), UplinkSpec::new("5g")],
        exe,
    )?;
    offloads_off(&u.lab)?;
    let direct_cost = relay_cost(&mut u, "never", secs.min(5))?;
    let tunnel_cost = relay_cost(&mut u, "always", secs.min(5))?;
    drop(u);

    let mut md = String::new();
    let _ = writeln!(md, "### Hostile path: MPTCP stripped on 5g (wifi 40 Mbit/s 10 ms, 5g 20 Mbit/s 40 ms; 1 stream down, {secs} s each)\n");
    md += "| what | Mbit/s | ratio |\n|---|---|---|\n";
    let _ = writeln!(md, "| TCP over wifi alone | {wifi:.1} | |");
    let _ = writeln!(md, "| TCP over 5g alone (direct) | {g5:.1} | |");
    let _ = writeln!(md, "| single-uplink sum | {sum:.1} | 100 % |");
    let _ = writeln!(
        md,
        "| braid, 5g stripped, tunnel = \"never\" | {never:.1} | {} of the sum |",
        pct(never, sum)
    );
    let _ = writeln!(
        md,
        "| braid, 5g stripped, tunnel = \"auto\" | {auto:.1} | {} of the sum |",
        pct(auto, sum)
    );
    let _ = writeln!(
        md,
        "| 5g alone through the tunnel | {g5_tunnel:.1} | {} of 5g direct |",
        pct(g5_tunnel, g5)
    );
    let _ = writeln!(md, "\nFirst stripped join to 5g carrying subflows through the tunnel: {:.2} s (from turning the strip on during a download to the gateway's log line).\n", switch.as_secs_f64());
    md += "| unshaped, offloads off, 5g alone | Mbit/s | relay CPU s per Gbit |\n|---|---|---|\n";
    let _ = writeln!(
        md,
        "| direct | {:.0} | {:.2} |",
        direct_cost.0, direct_cost.1
    );
    let _ = writeln!(
        md,
        "| through the tunnel | {:.0} | {:.2} |",
        tunnel_cost.0, tunnel_cost.1
    );
    Ok(md)
}
