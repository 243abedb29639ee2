//! The capture a baseline stack sits behind in gw: braid's own capture rules
//! (`braid_sys::nftables::CaptureRules`) in their REDIRECT form, in a table of the stack's own,
//! so the LAN client's connection to the traffic server reaches a local port as it reaches
//! braid's.

use std::process::Stdio;

use crate::harness::{Harness, HarnessError};
use crate::{Lab, Role};

/// Installs table `table` in gw, redirecting the LAN's TCP (but to the relay) to `port`.
pub(super) fn install(h: &Harness, table: &str, port: u16) -> Result<(), HarnessError> {
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

/// Removes table `table` from gw.
pub(super) fn remove(h: &Harness, table: &str) {
    let _ = h
        .lab
        .run(Role::Gw, &["nft", "delete", "table", "inet", table]);
}
