//! Two bare relays (`braid lab traffic relay`, [`crate::bare_relay`]) started in the lab as a
//! stack: one in gw behind a REDIRECT capture, connecting over MPTCP to the other in vps, which
//! connects to the traffic server. The same hops as braid and shadowsocks-rust with nothing of
//! a proxy's own work: the ceiling the throughput bench measures them against. The per-uplink
//! policy must be set first (`Lab::kernel_mptcp_policy`).

use std::io::BufRead;
use std::process::Child;

use crate::bare_relay::Mode;
use crate::harness::{Harness, HarnessError, RELAY_PORT};
use crate::{Lab, Role};

/// The capture's port in gw.
const CAPTURE_PORT: u16 = 1101;
/// The vps side's port: beside the relay port, which no daemon holds during this phase anyway.
const VPS_PORT: u16 = RELAY_PORT + 1;
const TABLE: &str = "barebench";

/// The two relays, running.
pub(super) struct BareRelay {
    children: Vec<Child>,
}

impl BareRelay {
    /// Starts both ends (vps first) and the capture; returns once both listen.
    pub(super) fn start(h: &Harness, mode: Mode) -> Result<BareRelay, HarnessError> {
        let vps = format!("{}:{VPS_PORT}", Lab::VPS_PUBLIC);
        let gw = format!("0.0.0.0:{CAPTURE_PORT}");
        let target = Harness::traffic_target();
        let mode = match mode {
            Mode::Copy => "copy",
            Mode::Splice => "splice",
        };
        let mut me = BareRelay { children: vec![] };
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
                    mode,
                ],
            )?;
            let line = c.stdout.take().map(|o| {
                let mut line = String::new();
                let _ = std::io::BufReader::new(o).read_line(&mut line);
                line
            });
            me.children.push(c);
            if !line.is_some_and(|l| l.starts_with("listening on")) {
                me.stop(h);
                return Err(HarnessError::Io {
                    what: format!("starting the bare relay in {role:?} on {listen}"),
                    source: std::io::Error::other("it exited before it listened"),
                });
            }
        }
        super::redirect::install(h, TABLE, CAPTURE_PORT)?;
        Ok(me)
    }

    /// The processes, for CPU accounting.
    pub(super) fn pids(&self) -> Vec<u32> {
        self.children.iter().map(|c| c.id()).collect()
    }

    /// Stops both and removes the capture.
    pub(super) fn stop(mut self, h: &Harness) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.children.clear();
        super::redirect::remove(h, TABLE);
    }
}
