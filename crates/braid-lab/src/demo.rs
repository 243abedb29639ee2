//! `braid lab demo`: the README's first command. Builds the lab, runs the real relay and
//! gateway, measures each uplink alone and both bonded with `braid speedtest` (through the relay
//! itself), then a real download from the LAN host through the transparent capture, prints the
//! table and removes everything.

use std::process::ExitCode;

use serde::Serialize;
use serde_json::Value;

use crate::harness::{is_root, Harness, HarnessError};
use crate::{Role, UplinkSpec};

/// One measured path.
#[derive(Debug, Serialize)]
pub struct Row {
    /// "wifi", "5g", "bonded" or "lan via capture (bonded)".
    pub path: String,
    /// Download rate.
    pub down_mbit_per_s: f64,
    /// Upload rate (not measured for the LAN row).
    pub up_mbit_per_s: Option<f64>,
    /// Subflows of the measured connection.
    pub subflows: Option<u32>,
}

/// The demo's result.
#[derive(Debug, Serialize)]
pub struct Report {
    /// One row per path.
    pub results: Vec<Row>,
    /// bonded / (sum of the uplinks alone), download.
    pub bonding_efficiency_down: f64,
    /// The same, upload.
    pub bonding_efficiency_up: f64,
}

/// The lab links of the demo: wifi 40 Mbit/s, 10 ms RTT; 5g 20 Mbit/s, 40 ms RTT. The
/// benchmarks and most lab tests use the same pair, so their figures compare with the README's.
pub fn demo_uplinks() -> Vec<UplinkSpec> {
    vec![
        UplinkSpec::new("wifi").rate_mbit(40).rtt_ms(10),
        UplinkSpec::new("5g").rate_mbit(20).rtt_ms(40),
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

/// The `subflows=N` of a relay's "closed" log line.
fn subflows_of(closed_line: &str) -> Option<u32> {
    closed_line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("subflows="))
        .and_then(|v| v.parse().ok())
}

fn speedtest(h: &Harness, exe: &std::path::Path, secs: u64) -> Result<Value, HarnessError> {
    let mut cmd = h.lab.command(Role::Gw, &exe.to_string_lossy());
    cmd.args([
        "speedtest",
        "--json",
        "--secs",
        &secs.to_string(),
        "--config",
    ])
    .arg(h.dir().join("gateway.toml"));
    let out = cmd.output().map_err(|source| HarnessError::Io {
        what: "running braid speedtest".into(),
        source,
    })?;
    serde_json::from_slice(&out.stdout).map_err(|e| HarnessError::Traffic {
        args: vec!["speedtest".into()],
        status: out.status.to_string(),
        stderr: format!(
            "{} (stdout not JSON: {e})",
            String::from_utf8_lossy(&out.stderr)
        ),
    })
}

fn find(v: &Value, path: &str, dir: &str) -> Option<(f64, Option<u32>)> {
    v["results"]
        .as_array()?
        .iter()
        .find(|r| r["path"] == path && r["direction"] == dir)
        .map(|r| {
            (
                r["mbit_per_s"].as_f64().unwrap_or(0.0),
                r["subflows"].as_u64().map(|s| s as u32),
            )
        })
}

/// Builds the lab, measures, tears down.
pub fn run(prefix: &str, secs: u64) -> Result<Report, HarnessError> {
    let exe = std::env::current_exe().map_err(|source| HarnessError::Io {
        what: "finding the braid binary".into(),
        source,
    })?;
    eprintln!("building the lab (namespaces {prefix}-lan, -gw, -vps, -srv; wifi 40 Mbit/s 10 ms, 5g 20 Mbit/s 40 ms)…");
    let mut h = Harness::new(prefix, demo_uplinks(), &exe)?;
    h.start_server("")?;
    h.start_gateway(&["wifi", "5g"], "")?;
    h.wait_uplinks_up(&["wifi", "5g"], std::time::Duration::from_secs(10))?;
    eprintln!("braid speedtest: each uplink alone, then bonded, down and up ({secs} s each)…");
    let st = speedtest(&h, &exe, secs)?;
    let mut results = Vec::new();
    for path in ["wifi", "5g", "bonded"] {
        let down = find(&st, path, "down");
        let up = find(&st, path, "up");
        results.push(Row {
            path: path.into(),
            down_mbit_per_s: down.map(|d| d.0).unwrap_or(0.0),
            up_mbit_per_s: up.map(|u| u.0),
            subflows: down.and_then(|d| d.1),
        });
    }
    eprintln!("a download from the LAN host through the transparent capture ({secs} s)…");
    let mut relay_log = h.log_cursor("server.log");
    let v = h.traffic(
        Role::Lan,
        &[
            "get",
            "--connect",
            &Harness::traffic_target(),
            "--secs",
            &secs.to_string(),
        ],
    )?;
    // The relay logs the connection's subflows when it closes, just after the client's end.
    let closed = relay_log.wait_for(
        &format!(":{}: closed", crate::harness::TRAFFIC_PORT),
        std::time::Duration::from_secs(5),
    )?;
    results.push(Row {
        path: "lan via capture (bonded)".into(),
        down_mbit_per_s: v["mbit_per_s"].as_f64().unwrap_or(0.0),
        up_mbit_per_s: None,
        subflows: subflows_of(&closed),
    });
    h.stop_gateway()?;
    let eff = |get: &dyn Fn(&Row) -> f64| {
        let sum = get(&results[0]) + get(&results[1]);
        if sum > 0.0 {
            get(&results[2]) / sum
        } else {
            0.0
        }
    };
    let down = eff(&|r: &Row| r.down_mbit_per_s);
    let up = eff(&|r: &Row| r.up_mbit_per_s.unwrap_or(0.0));
    Ok(Report {
        results,
        bonding_efficiency_down: down,
        bonding_efficiency_up: up,
    })
}

fn print_table(r: &Report) {
    println!(
        "{:<26} {:>12} {:>12} {:>9}",
        "path", "down Mbit/s", "up Mbit/s", "subflows"
    );
    for row in &r.results {
        println!(
            "{:<26} {:>12.1} {:>12} {:>9}",
            row.path,
            row.down_mbit_per_s,
            row.up_mbit_per_s
                .map(|u| format!("{u:.1}"))
                .unwrap_or_else(|| "-".into()),
            row.subflows
                .map(|s| s.to_string())
                .unwrap_or_else(|| "?".into())
        );
    }
    println!(
        "bonding efficiency: {:.1} % down, {:.1} % up (bonded / (wifi + 5g))",
        r.bonding_efficiency_down * 100.0,
        r.bonding_efficiency_up * 100.0
    );
}
