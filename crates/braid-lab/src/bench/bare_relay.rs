//! Two bare relays (`braid lab traffic relay`, [`crate::bare_relay`]) started in the lab as a
//! stack: one in gw behind a REDIRECT capture, connecting over MPTCP to the other in vps, which
//! connects to the traffic server. The same hops as braid and shadowsocks-rust with nothing of
//! a proxy's own work: the ceiling the throughput bench measures them against. The per-uplink
//! policy must be set first (`Lab::kernel_mptcp_policy`).

use std::io::BufRead;

use super::baseline::Baseline;
use crate::bare_relay::Mode;
use crate::harness::{Harness, HarnessError, RELAY_PORT};
use crate::{Lab, Role};

/// The capture's port in gw.
const CAPTURE_PORT: u16 = 1101;
/// The vps side's port: beside the relay port, which no daemon holds during this phase anyway.
const VPS_PORT: u16 = RELAY_PORT + 1;
const TABLE: &str = "barebench";

/// Starts both ends (vps first) and the capture; returns once both listen. What started is
/// stopped again when a later step fails.
pub(super) fn start(h: &Harness, mode: Mode) -> Result<Baseline, HarnessError> {
    let mut stack = Baseline::new(TABLE);
    match spawn_both(h, mode, &mut stack) {
        Ok(()) => Ok(stack),
        Err(e) => {
            stack.stop(h);
            Err(e)
        }
    }
}

fn spawn_both(h: &Harness, mode: Mode, stack: &mut Baseline) -> Result<(), HarnessError> {
    let vps = format!("{}:{VPS_PORT}", Lab::VPS_PUBLIC);
    let gw = format!("0.0.0.0:{CAPTURE_PORT}");
    let target = Harness::traffic_target();
    // The name `--mode` takes, from the same definition the relay's parser uses.
    let mode = clap::ValueEnum::to_possible_value(&mode)
        .map(|v| v.get_name().to_string())
        .unwrap_or_default();
    for (role, listen, connect, flag) in [
        (Role::Vps, vps.as_str(), target.as_str(), "--mptcp-in"),
        (Role::Gw, gw.as_str(), vps.as_str(), "--mptcp-out"),
    ] {
        let mut c = h.spawn_traffic(
            role,
            &[
                "relay",
                "--listen",
                listen,
                "--connect",
                connect,
                flag,
                "--mode",
                &mode,
            ],
        )?;
        let line = c.stdout.take().map(|o| {
            let mut line = String::new();
            let _ = std::io::BufReader::new(o).read_line(&mut line);
            line
        });
        stack.spawned(c);
        if !line.is_some_and(|l| l.starts_with("listening on")) {
            return Err(HarnessError::Io {
                what: format!("starting the bare relay in {role:?} on {listen}"),
                source: std::io::Error::other("it exited before it listened"),
            });
        }
    }
    stack.capture(h, CAPTURE_PORT)
}
