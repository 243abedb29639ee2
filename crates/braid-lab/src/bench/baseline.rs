//! A baseline stack started in the lab beside braid (shadowsocks-rust, the bare relays): its
//! processes, stopped with it, and the capture it sits behind in gw: braid's own capture rules
//! (`braid_sys::nftables::CaptureRules`) in their REDIRECT form, in a table of the stack's own,
//! so the LAN client's connection to the traffic server reaches the stack's local port as it
//! reaches braid's.

use std::process::{Child, Stdio};

use crate::harness::{Harness, HarnessError};
use crate::{Lab, Role};

/// A baseline stack's processes and capture table.
pub(super) struct Baseline {
    children: Vec<Child>,
    table: &'static str,
}

impl Baseline {
    /// A stack whose capture table (once [`Baseline::capture`] made it) is `table`.
    pub(super) fn new(table: &'static str) -> Baseline {
        Baseline {
            children: Vec::new(),
            table,
        }
    }

    /// Takes `child` to stop with the stack.
    pub(super) fn spawned(&mut self, child: Child) {
        self.children.push(child);
    }

    /// Redirects the LAN's TCP (but to the relay) to `port` in gw.
    pub(super) fn capture(&self, h: &Harness, port: u16) -> Result<(), HarnessError> {
        install(h, self.table, port)
    }

    /// The processes, for CPU accounting.
    pub(super) fn pids(&self) -> Vec<u32> {
        self.children.iter().map(Child::id).collect()
    }

    /// Kills the processes and removes the capture table (if there is one).
    pub(super) fn stop(mut self, h: &Harness) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = h
            .lab
            .run(Role::Gw, &["nft", "delete", "table", "inet", self.table]);
    }
}

fn install(h: &Harness, table: &str, port: u16) -> Result<(), HarnessError> {
    let io = |what: &str| {
        let what = what.to_string();
        move |source| HarnessError::Io { what, source }
    };
    let rules = braid_sys::nftables::CaptureRules {
        table: table.into(),
        lan: vec![Lab::GW_LAN_IFACE
            .parse()
            .map_err(|e: braid_sys::link::BadIfName| HarnessError::Io {
                what: "the lab's LAN interface name".into(),
                source: std::io::Error::other(e.to_string()),
            })?],
        redirect_port: port,
        exclude: vec![Lab::VPS_PUBLIC.into()],
        ..Default::default()
    };
    let text = rules.render().map_err(|e| HarnessError::Io {
        what: "nft".into(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let mut nft = h.lab.command(Role::Gw, "nft");
    nft.args(["-f", "-"]).stdin(Stdio::piped());
    let mut child = nft.spawn().map_err(io("nft"))?;
    if let Some(mut i) = child.stdin.take() {
        use std::io::Write;
        i.write_all(text.as_bytes()).map_err(io("nft stdin"))?;
    }
    let status = child.wait().map_err(io("nft"))?;
    if !status.success() {
        return Err(HarnessError::Io {
            what: format!("nft -f (table {table})"),
            source: std::io::Error::other(status.to_string()),
        });
    }
    Ok(())
}
