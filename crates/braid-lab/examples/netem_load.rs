//! Does the delay emulator hold its delay under load? Brings up a lab with one uplink of
//! `RTT` ms (default 10) and optional rate, runs iperf3 from gw to vps for a few seconds and pings
//! over the same uplink meanwhile.
//!
//! `sudo cargo run --release -p braid-lab --example netem_load -- [rtt_ms] [rate_mbit|0] [seconds]`

use std::io::Read;
use std::process::Stdio;
use std::time::Duration;

use braid_lab::{Lab, LabSpec, Role, UplinkSpec};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<u32> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let rtt = args.first().copied().unwrap_or(10);
    let rate = args.get(1).copied().filter(|r| *r > 0);
    let secs = args.get(2).copied().unwrap_or(5);
    let mut uplink = UplinkSpec::new("a").rtt_ms(rtt);
    uplink.rate_mbit = rate;
    let lab = Lab::up(LabSpec {
        prefix: "blx-load".into(),
        uplinks: vec![uplink],
    })?;
    let idle = ping(&lab, 10)?;
    println!("idle ping median {:?} ms", idle.median_ms());

    let mut server = lab.command(Role::Vps, "iperf3");
    server.args(["-s", "-1"]).stdout(Stdio::null());
    lab.spawn(Role::Vps, server)?;
    std::thread::sleep(Duration::from_millis(300));
    let mut client = lab.command(Role::Gw, "iperf3");
    let t = secs.to_string();
    client
        .args(["-c", "10.200.0.1", "-B", "10.1.0.1", "-t", &t, "-f", "m"])
        .stdout(Stdio::piped());
    let client = lab.spawn_process(Role::Gw, client)?;
    std::thread::sleep(Duration::from_secs(1));
    let loaded = ping(&lab, (secs - 2).max(1) * 10)?;
    let mut out = String::new();
    client
        .take_stdout()
        .expect("piped")
        .read_to_string(&mut out)?;
    client.wait_timeout(Duration::from_secs(5))?;
    for line in out
        .lines()
        .filter(|l| l.contains("sender") || l.contains("receiver"))
    {
        println!("{line}");
    }
    let mut rtts = loaded.rtts_ms.clone();
    rtts.sort_by(f64::total_cmp);
    println!(
        "loaded ping: {} of {} replies, median {:?} ms, max {:?} ms",
        loaded.received,
        loaded.transmitted,
        loaded.median_ms(),
        rtts.last()
    );
    println!("netem packets: {:?}", lab.netem_packets());
    lab.teardown();
    Ok(())
}

fn ping(lab: &Lab, count: u32) -> Result<braid_lab::PingStats, braid_lab::LabError> {
    let c = count.to_string();
    lab.ping(
        Role::Gw,
        &[
            "-U",
            "-n",
            "-c",
            &c,
            "-i",
            "0.1",
            "-I",
            "wan-a",
            "10.200.0.1",
        ],
    )
}
