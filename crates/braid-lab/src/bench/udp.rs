//! `braid lab bench udp`: UDP through braid beside the same uplink without braid, in one lab
//! (the demo's uplinks: wifi 40 Mbit/s 10 ms, 5g 20 Mbit/s 40 ms):
//!
//! - goodput and loss of a paced datagram run at a share of wifi's rate (`--load`, 90 % by
//!   default): direct from the gateway itself over wifi, and from the LAN host through the
//!   capture and the relay with `udp_uplink = "wifi"`;
//! - a UDP session's longest gap when its uplink is blackholed, both ways and receiving only;
//! - DNS query time (median of `--queries`) to dnsmasq behind the relay, direct and through braid;
//! - a QUIC download (`--quic-mb`), direct over wifi (the best single uplink) and through braid.

use std::path::Path;
use std::time::Duration;

use crate::demo::demo_uplinks;
use crate::harness::{Harness, HarnessError, DNS_NAME};
use crate::Role;

/// Options of `braid lab bench udp`.
#[derive(Debug, Clone, clap::Args)]
pub struct UdpArgs {
    /// Seconds of each datagram run.
    #[arg(long, default_value_t = 8)]
    pub secs: u64,
    /// Load as a share of wifi's 40 Mbit/s.
    #[arg(long, default_value_t = 0.9)]
    pub load: f64,
    /// DNS lookups per side.
    #[arg(long, default_value_t = 100)]
    pub queries: usize,
    /// Megabytes of the QUIC download.
    #[arg(long, default_value_t = 20)]
    pub quic_mb: u64,
    /// Namespace prefix.
    #[arg(long, default_value = "bbu")]
    pub prefix: String,
}

/// Payload bytes of each datagram.
const SIZE: u32 = 1200;

/// Goodput (Mbit/s) and loss (%) of one run.
fn goodput(v: &serde_json::Value, secs: u64) -> (f64, f64) {
    let (sent, got) = (
        v["sent"].as_f64().unwrap_or(0.0),
        v["received"].as_f64().unwrap_or(0.0),
    );
    let mbit = got * f64::from(SIZE) * 8.0 / secs as f64 / 1e6;
    let loss = if sent > 0.0 {
        (sent - got) / sent * 100.0
    } else {
        100.0
    };
    (mbit, loss)
}

fn dgram(h: &Harness, role: Role, pps: u32, secs: u64) -> Result<serde_json::Value, HarnessError> {
    let (count, pps, size) = (
        (pps as u64 * secs).to_string(),
        pps.to_string(),
        SIZE.to_string(),
    );
    let child = h.spawn_traffic(
        role,
        &[
            "dgram",
            "--connect",
            &Harness::traffic_target(),
            "--count",
            &count,
            "--size",
            &size,
            "--pps",
            &pps,
        ],
    )?;
    h.finish_traffic(child)
}

fn dns_median(
    h: &Harness,
    role: Role,
    server: &str,
    n: usize,
) -> Result<Option<f64>, HarnessError> {
    let v = h.traffic(
        role,
        &[
            "dns",
            "--server",
            server,
            "--name",
            DNS_NAME,
            "--count",
            &n.to_string(),
        ],
    )?;
    Ok(v["median_ms"].as_f64())
}

/// Mbit/s of a QUIC download of `mb` MB from `role` (`None` when it failed).
fn quic_mbit(h: &Harness, role: Role, server: &str, mb: u64) -> Result<Option<f64>, HarnessError> {
    let bytes = (mb * 1_000_000).to_string();
    let child = h.spawn_traffic(role, &["quic-get", "--connect", server, "--bytes", &bytes])?;
    let v = h.finish_traffic(child)?;
    Ok((v["ok"] == true).then(|| {
        v["bytes"].as_f64().unwrap_or(0.0) * 8.0 / v["secs"].as_f64().unwrap_or(1.0) / 1e6
    }))
}

fn ms(x: Option<f64>) -> String {
    x.map_or_else(|| "–".into(), |v| format!("{v:.2}"))
}

/// 6 s of a 200 datagrams/s session (`braid lab traffic dgram` with `mode`'s flags) from the
/// LAN host, wifi blackholed after 2 s and let through again at the end, until sessions ride it
/// again; the run's JSON.
fn blackhole_wifi_during(h: &Harness, mode: &[&str]) -> Result<serde_json::Value, HarnessError> {
    let target = Harness::traffic_target();
    let mut args = vec!["dgram", "--connect", &target];
    args.extend_from_slice(mode);
    args.extend_from_slice(&["--count", "1200", "--size", "600", "--pps", "200"]);
    let run = h.spawn_traffic(Role::Lan, &args)?;
    std::thread::sleep(Duration::from_secs(2));
    h.lab.set_uplink_blackhole("wifi", true)?;
    let v = h.finish_traffic(run)?;
    let mut back = h.log_cursor("gateway.log");
    h.lab.set_uplink_blackhole("wifi", false)?;
    back.wait_for("UDP sessions now ride uplink wifi", Duration::from_secs(20))?;
    Ok(v)
}

/// Runs the benchmark and returns its Markdown.
pub fn udp(a: &UdpArgs, exe: &Path) -> Result<String, HarnessError> {
    let mut h = Harness::new(&a.prefix, demo_uplinks(), exe)?;
    h.start_server("")?;
    let dns = h.start_dns()?;
    let quic = format!("{}:4433", crate::Lab::SRV);
    let mut cmd = h.lab.command(Role::Srv, &exe.to_string_lossy());
    cmd.args(["lab", "traffic", "quic-serve", "--listen", &quic]);
    h.lab.spawn(Role::Srv, cmd)?;
    // The gateway's own traffic is not captured: it is the "same uplink without braid".
    let pps = (40e6 * a.load / (f64::from(SIZE) * 8.0)) as u32;
    let direct = dgram(&h, Role::Gw, pps, a.secs)?;
    let dns_direct = dns_median(&h, Role::Gw, &dns, a.queries)?;
    let quic_direct = quic_mbit(&h, Role::Gw, &quic, a.quic_mb)?;
    h.start_gateway(&["wifi", "5g"], "udp_uplink = \"wifi\"")?;
    h.wait_uplinks_up(&["wifi", "5g"], Duration::from_secs(10))?;
    let braid = dgram(&h, Role::Lan, pps, a.secs)?;
    let dns_braid = dns_median(&h, Role::Lan, &dns, a.queries)?;
    let quic_braid = quic_mbit(&h, Role::Lan, &quic, a.quic_mb)?;

    let failover = blackhole_wifi_during(&h, &[])?;
    let receive_only = blackhole_wifi_during(&h, &["--download"])?;

    let (d_mbit, d_loss) = goodput(&direct, a.secs);
    let (b_mbit, b_loss) = goodput(&braid, a.secs);
    let mut md = format!(
        "UDP at {:.0} % of wifi's 40 Mbit/s ({pps} datagrams/s of {SIZE} B, {} s):\n\n",
        a.load * 100.0,
        a.secs
    );
    md += "| path | goodput Mbit/s | loss % |\n|---|---:|---:|\n";
    md += &format!("| wifi direct (no braid) | {d_mbit:.1} | {d_loss:.2} |\n");
    md += &format!("| LAN → capture → relay over wifi | {b_mbit:.1} | {b_loss:.2} |\n");
    md += &format!(
        "\nbraid / direct: {:.1} % goodput, loss {:+.2} points.\n",
        if d_mbit > 0.0 {
            b_mbit / d_mbit * 100.0
        } else {
            0.0
        },
        b_loss - d_loss
    );
    md += &format!(
        "\nUDP failover (wifi blackholed under a 200 datagrams/s session): longest gap {} ms, {} of {} datagrams lost; a session that only receives (the server streams, the LAN host sends only its request): longest gap {} ms, {} of {} lost.\n",
        ms(failover["longest_gap_ms"].as_f64()),
        failover["lost"],
        failover["sent"],
        ms(receive_only["longest_gap_ms"].as_f64()),
        receive_only["lost"],
        receive_only["sent"]
    );
    md += &format!(
        "\nDNS to dnsmasq behind the relay, median of {}: direct {} ms, through braid {} ms.\n",
        a.queries,
        ms(dns_direct),
        ms(dns_braid)
    );
    let mbit = |x: Option<f64>| x.map_or_else(|| "failed".into(), |v| format!("{v:.1} Mbit/s"));
    md += &format!(
        "\nQUIC download of {} MB: wifi direct (best single uplink) {}, through braid {}.\n",
        a.quic_mb,
        mbit(quic_direct),
        mbit(quic_braid)
    );
    Ok(md)
}
