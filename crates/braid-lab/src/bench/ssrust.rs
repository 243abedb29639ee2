//! The shadowsocks-rust stack that OpenMPTCPRouter users run, started in the lab beside braid:
//! `ssserver --tcp-multipath` in vps, `sslocal --tcp-multipath` in gw as SOCKS5 (on the
//! gateway's LAN address) and in redir mode on :1100, behind a capture table like braid's. The
//! per-uplink policy (tables, rules, endpoints) must be set first (`Lab::kernel_mptcp_policy`).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use super::baseline::Baseline;
use crate::harness::{Harness, HarnessError, RELAY_PORT, SOCKS_PORT};
use crate::{Lab, Role};

/// Starts shadowsocks-rust with the lab's key: ssserver in vps, sslocal (SOCKS5 on the gateway's
/// LAN address, and redir on :1100 behind braid's own capture rules) in gw. What started is
/// stopped again when a later step fails.
pub(super) fn start(h: &Harness, dir: &Path) -> Result<Baseline, HarnessError> {
    let mut stack = Baseline::new("ssbench");
    match spawn_all(h, dir, &mut stack) {
        Ok(()) => Ok(stack),
        Err(e) => {
            stack.stop(h);
            Err(e)
        }
    }
}

fn spawn_all(h: &Harness, dir: &Path, stack: &mut Baseline) -> Result<(), HarnessError> {
    let key = h.key().to_string();
    let server = format!("{}:{RELAY_PORT}", Lab::VPS_PUBLIC);
    let common = [
        "-s",
        server.as_str(),
        "-m",
        "2022-blake3-aes-256-gcm",
        "-k",
        key.as_str(),
        "--tcp-multipath",
    ];
    let socks = format!("{}:{SOCKS_PORT}", Lab::GW_LAN);
    for (role, program, args, what) in [
        (Role::Vps, "ssserver", &[][..], "starting ssserver"),
        (
            Role::Gw,
            "sslocal",
            &["-b", socks.as_str()][..],
            "starting sslocal",
        ),
        (
            Role::Gw,
            "sslocal",
            &["--protocol", "redir", "-b", "0.0.0.0:1100"][..],
            "starting sslocal redir",
        ),
    ] {
        let mut c = h.lab.command(role, &dir.join(program).to_string_lossy());
        c.args(args)
            .args(common)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        stack.spawned(c.spawn().map_err(|source| HarnessError::Io {
            what: what.into(),
            source,
        })?);
        // ssserver must listen before sslocal starts; shadowsocks-rust prints no line to wait on.
        std::thread::sleep(Duration::from_millis(500));
    }
    stack.capture(h, 1100)
}
