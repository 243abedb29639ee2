//! `braid lab bench failover`: failover, recovery and stalls per fault scenario, braid beside
//! kernel-only MPTCP, from goodput sampled every 100 ms at the receiver.

use std::fmt::Write as _;
use std::path::Path;
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::demo::demo_uplinks;
use crate::harness::{Harness, HarnessError};
use crate::Role;

/// Options of `braid lab bench failover`.
#[derive(Debug, clap::Args)]
pub struct FailoverArgs {
    /// Seconds of download before the fault.
    #[arg(long, default_value_t = 4)]
    pub before: u64,
    /// Seconds the fault lasts.
    #[arg(long, default_value_t = 5)]
    pub during: u64,
    /// Seconds of download after the repair.
    #[arg(long, default_value_t = 5)]
    pub after: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    LinkDown,
    Blackhole,
    AddressChange,
    /// Every uplink at once: nothing to fail over to; the connection must wait and resume.
    Outage,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::LinkDown => "wifi link down, then up",
            Scenario::Blackhole => "wifi silently blackholed, then restored",
            Scenario::AddressChange => "wifi address changes (10.1.0.1 → 10.1.0.7)",
            Scenario::Outage => "wifi and 5g silently blackholed, then restored",
        }
    }

    /// Whether there is a surviving uplink to fail over to.
    fn fails_over(self) -> bool {
        matches!(self, Scenario::LinkDown | Scenario::Blackhole)
    }
}

/// The figures of one run.
struct Figures {
    failover_s: Option<f64>,
    recovery_s: Option<f64>,
    stall_s: f64,
    before_mbit: f64,
    ok: bool,
}

/// Seconds from `from` to the first 300 ms window whose mean reaches `level`.
fn time_to(samples: &[f64], sample_s: f64, from: f64, level: f64) -> Option<f64> {
    let start = (from / sample_s).floor() as usize;
    (start..samples.len().saturating_sub(2))
        .find(|&i| samples[i..i + 3].iter().sum::<f64>() / 3.0 >= level)
        .map(|i| (i as f64 * sample_s - from).max(0.0))
}

/// Longest run of samples below `level`, in seconds, from `from` on.
fn longest_stall(samples: &[f64], sample_s: f64, from: f64, level: f64) -> f64 {
    let start = (from / sample_s).floor() as usize;
    let (mut best, mut cur) = (0usize, 0usize);
    for &s in samples.iter().skip(start) {
        cur = if s < level { cur + 1 } else { 0 };
        best = best.max(cur);
    }
    best as f64 * sample_s
}

fn figures(
    v: &serde_json::Value,
    a: &FailoverArgs,
    surviving_mbit: f64,
    scenario: Scenario,
) -> Figures {
    let samples: Vec<f64> = v["samples_mbit"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x.as_f64()).collect())
        .unwrap_or_default();
    let dt = v["sample_ms"].as_f64().unwrap_or(100.0) / 1000.0;
    let fault = a.before as f64;
    let repair = fault
        + if scenario == Scenario::AddressChange {
            0.0
        } else {
            a.during as f64
        };
    let warm = (1.0 / dt) as usize;
    let pre: Vec<f64> = samples
        .iter()
        .copied()
        .skip(warm)
        .take(((fault - 1.0) / dt) as usize)
        .collect();
    let before = if pre.is_empty() {
        0.0
    } else {
        pre.iter().sum::<f64>() / pre.len() as f64
    };
    Figures {
        failover_s: if scenario.fails_over() {
            time_to(&samples, dt, fault, 0.8 * surviving_mbit)
        } else {
            None
        },
        recovery_s: time_to(
            &samples,
            dt,
            repair
                + if scenario == Scenario::AddressChange {
                    0.3
                } else {
                    0.0
                },
            0.9 * before,
        )
        .map(|t| {
            t + if scenario == Scenario::AddressChange {
                0.3
            } else {
                0.0
            }
        }),
        stall_s: longest_stall(&samples, dt, fault, 0.1 * before),
        before_mbit: before,
        ok: v["ok"] == true,
    }
}

fn inject(h: &Harness, s: Scenario, on: bool) -> Result<(), HarnessError> {
    match (s, on) {
        (Scenario::LinkDown, on) => {
            h.lab.set_uplink_link("wifi", !on)?;
            if !on {
                h.lab.install_default_route("wifi")?;
            }
        }
        (Scenario::Blackhole, on) => h.lab.set_uplink_blackhole("wifi", on)?,
        (Scenario::Outage, on) => {
            for u in ["wifi", "5g"] {
                h.lab.set_uplink_blackhole(u, on)?;
            }
        }
        (Scenario::AddressChange, true) => h
            .lab
            .change_uplink_address("wifi", "10.1.0.7".parse().expect("literal"))?,
        (Scenario::AddressChange, false) => {}
    }
    Ok(())
}

fn one_run(
    exe: &Path,
    a: &FailoverArgs,
    s: Scenario,
    braid: bool,
) -> Result<Figures, HarnessError> {
    let mut h = Harness::new("bfo", demo_uplinks(), exe)?;
    let role = if braid {
        h.start_server("")?;
        h.start_gateway(&["wifi", "5g"], "")?;
        h.wait_uplinks_up(&["wifi", "5g"], Duration::from_secs(10))?;
        Role::Lan
    } else {
        h.lab.kernel_mptcp_policy()?;
        Role::Gw
    };
    let total = (a.before
        + if s == Scenario::AddressChange {
            0
        } else {
            a.during
        }
        + a.after)
        .to_string();
    let t = Harness::traffic_target();
    let mut args = vec!["stream", "--connect", &t, "--secs", &total];
    if !braid {
        args.push("--mptcp");
    }
    let started = Instant::now();
    let child = h.spawn_traffic(role, &args)?;
    sleep(Duration::from_secs(a.before).saturating_sub(started.elapsed()));
    inject(&h, s, true)?;
    if s != Scenario::AddressChange {
        sleep(Duration::from_secs(a.before + a.during).saturating_sub(started.elapsed()));
        inject(&h, s, false)?;
    }
    let v = h.finish_traffic(child)?;
    Ok(figures(&v, a, 19.0, s))
}

fn cell(x: Option<f64>) -> String {
    x.map(|t| format!("{t:.1}"))
        .unwrap_or_else(|| "never".into())
}

/// Runs every scenario with braid and with kernel-only MPTCP; returns Markdown.
pub fn failover(a: &FailoverArgs, exe: &Path) -> Result<String, HarnessError> {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "### Failover and recovery (wifi 40 Mbit/s 10 ms + 5g 20 Mbit/s 40 ms; fault at {} s for {} s; goodput sampled every 100 ms at the receiver)\n",
        a.before, a.during
    );
    let _ = writeln!(md, "| scenario | stack | bonded before, Mbit/s | failure → ≥ 80 % of 5g, s | repair → ≥ 90 % of bonded, s | longest stall, s | bytes checked |\n|---|---|---|---|---|---|---|");
    for s in [
        Scenario::LinkDown,
        Scenario::Blackhole,
        Scenario::AddressChange,
        Scenario::Outage,
    ] {
        for braid in [false, true] {
            eprintln!(
                "{} with {}…",
                s.name(),
                if braid { "braid" } else { "kernel-only MPTCP" }
            );
            let f = one_run(exe, a, s, braid)?;
            let _ = writeln!(
                md,
                "| {} | {} | {:.1} | {} | {} | {:.1} | {} |",
                s.name(),
                if braid {
                    "**braid**"
                } else {
                    "kernel-only MPTCP (static script setup)"
                },
                f.before_mbit,
                if s.fails_over() {
                    cell(f.failover_s)
                } else {
                    "–".into()
                },
                cell(f.recovery_s),
                f.stall_s,
                if f.ok { "ok" } else { "BROKEN" }
            );
        }
    }
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_to_uses_a_three_sample_window_from_the_start_time() {
        let s = [50.0, 50.0, 0.0, 0.0, 10.0, 20.0, 20.0, 20.0];
        assert_eq!(
            time_to(&s, 0.1, 0.2, 16.0).map(|t| (t * 10.0).round() / 10.0),
            Some(0.2)
        );
        assert_eq!(time_to(&s, 0.1, 0.2, 100.0), None);
    }

    #[test]
    fn longest_stall_counts_consecutive_low_samples() {
        let s = [50.0, 0.0, 0.0, 50.0, 0.0, 0.0, 0.0, 50.0];
        assert!((longest_stall(&s, 0.1, 0.0, 5.0) - 0.3).abs() < 1e-9);
    }
}
