//! `braid lab demo`: the README's first command. Builds the lab, runs the real relay and
//! gateway, measures downloads through the transparent capture over wifi alone, 5g alone and
//! both bonded, prints the table and removes everything.

use std::process::ExitCode;

use braid_lab::{Role, UplinkSpec};
use serde::Serialize;

use super::harness::{is_root, Harness, HarnessError};

/// One measured path.
#[derive(Debug, Serialize)]
pub struct Row {
    /// "wifi", "5g" or "bonded".
    pub path: String,
    /// Steady download rate through braid.
    pub mbit_per_s: f64,
    /// Subflows the relay saw on that connection.
    pub subflows: Option<u32>,
}

/// The demo's result.
#[derive(Debug, Serialize)]
pub struct Report {
    /// One row per path.
    pub results: Vec<Row>,
    /// bonded / (wifi + 5g).
    pub bonding_efficiency: f64,
}

/// The lab links of the demo: wifi 40 Mbit/s, 10 ms RTT; 5g 20 Mbit/s, 40 ms RTT.
pub fn demo_uplinks() -> Vec<UplinkSpec> {
    vec![
        UplinkSpec {
            name: "wifi".into(),
            rate_mbit: Some(40),
            rtt_ms: 10,
            loss_permille: 0,
        },
        UplinkSpec {
            name: "5g".into(),
            rate_mbit: Some(20),
            rtt_ms: 40,
            loss_permille: 0,
        },
    ]
}

/// Entry point of `braid lab demo`.
pub fn main(prefix: &str, secs: u64, json: bool) -> ExitCode {
    if !is_root() {
        eprintln!(
            "braid lab demo: needs root (it creates network namespaces); fix: run it with sudo"
        );
        return ExitCode::from(2);
    }
    match run(prefix, secs) {
        Ok(report) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).unwrap_or_default()
                );
            } else {
                print_table(&report);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("braid lab demo failed: {e}");
            ExitCode::from(1)
        }
    }
}

fn last_subflows(server_log: &str) -> Option<u32> {
    server_log
        .lines()
        .rev()
        .filter(|l| l.contains(":5201: closed"))
        .find_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("subflows="))
                .and_then(|v| v.parse().ok())
        })
}

fn measure(h: &mut Harness, path: &str, uplinks: &[&str], secs: u64) -> Result<Row, HarnessError> {
    eprintln!("measuring {path} ({secs} s)…");
    h.start_gateway(uplinks, "")?;
    let v = h.traffic(
        Role::Lan,
        &[
            "get",
            "--connect",
            &Harness::traffic_target(),
            "--secs",
            &secs.to_string(),
        ],
    );
    h.stop_gateway()?;
    let v = v?;
    std::thread::sleep(std::time::Duration::from_millis(200));
    Ok(Row {
        path: path.into(),
        mbit_per_s: v["mbit_per_s"].as_f64().unwrap_or(0.0),
        subflows: last_subflows(&h.log("server.log")),
    })
}

/// Builds the lab, measures, tears down.
pub fn run(prefix: &str, secs: u64) -> Result<Report, HarnessError> {
    let exe = std::env::current_exe().map_err(|source| HarnessError::Io {
        what: "finding the braid binary".into(),
        source,
    })?;
    eprintln!("building the lab (namespaces {prefix}-lan, -gw, -vps, -srv)…");
    let mut h = Harness::new(prefix, demo_uplinks(), &exe)?;
    h.lab.sysctl(Role::Vps, "net.ipv4.tcp_fastopen", "3")?;
    h.start_server("")?;
    let wifi = measure(&mut h, "wifi", &["wifi"], secs)?;
    // "5g alone" means wifi is gone: with wifi up, the first subflow would still leave via the
    // main table's preferred default route.
    h.lab.set_uplink_link("wifi", false)?;
    let g5 = measure(&mut h, "5g", &["5g"], secs);
    h.lab.set_uplink_link("wifi", true)?;
    let g5 = g5?;
    let bonded = measure(&mut h, "bonded", &["wifi", "5g"], secs)?;
    let sum = wifi.mbit_per_s + g5.mbit_per_s;
    let eff = if sum > 0.0 {
        bonded.mbit_per_s / sum
    } else {
        0.0
    };
    Ok(Report {
        results: vec![wifi, g5, bonded],
        bonding_efficiency: eff,
    })
}

fn print_table(r: &Report) {
    println!("{:<8} {:>10} {:>9}", "path", "Mbit/s", "subflows");
    for row in &r.results {
        println!(
            "{:<8} {:>10.1} {:>9}",
            row.path,
            row.mbit_per_s,
            row.subflows
                .map(|s| s.to_string())
                .unwrap_or_else(|| "?".into())
        );
    }
    println!(
        "bonding efficiency: {:.1} % of wifi + 5g",
        r.bonding_efficiency * 100.0
    );
}
