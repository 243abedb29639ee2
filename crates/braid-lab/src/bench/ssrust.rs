//! The shadowsocks-rust stack that OpenMPTCPRouter users run, started in the lab beside braid:
//! `ssserver --tcp-multipath` in vps, `sslocal --tcp-multipath` in gw as SOCKS5 (on the
//! gateway's LAN address) and in redir mode on :1100, behind a capture table like braid's. The
//! per-uplink policy (tables, rules, endpoints) must be set first (`Lab::kernel_mptcp_policy`).

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use crate::harness::{Harness, HarnessError, RELAY_PORT, SOCKS_PORT};
use crate::{Lab, Role};

/// shadowsocks-rust started in the lab: ssserver in vps, sslocal (SOCKS5 on the gateway's LAN
/// address, and redir on :1100 behind braid's own capture rules) in gw.
pub(super) struct SsRust {
    children: Vec<Child>,
}

impl SsRust {
    /// Starts the stack with the lab's key and installs its capture table.
    pub(super) fn start(h: &Harness, dir: &Path) -> Result<SsRust, HarnessError> {
        let io = |what: &str| {
            let what = what.to_string();
            move |source| HarnessError::Io { what, source }
        };
        let key = h.key().to_string();
        let server = format!("{}:{RELAY_PORT}", Lab::VPS_PUBLIC);
        let mut s = h
            .lab
            .command(Role::Vps, &dir.join("ssserver").to_string_lossy());
        s.args([
            "-s",
            &server,
            "-m",
            "2022-blake3-aes-256-gcm",
            "-k",
            &key,
            "--tcp-multipath",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        let mut children = vec![s.spawn().map_err(io("starting ssserver"))?];
        std::thread::sleep(Duration::from_millis(500));
        let socks = format!("{}:{SOCKS_PORT}", Lab::GW_LAN);
        let mut l = h
            .lab
            .command(Role::Gw, &dir.join("sslocal").to_string_lossy());
        l.args([
            "-b",
            &socks,
            "-s",
            &server,
            "-m",
            "2022-blake3-aes-256-gcm",
            "-k",
            &key,
            "--tcp-multipath",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        children.push(l.spawn().map_err(io("starting sslocal"))?);
        let mut r = h
            .lab
            .command(Role::Gw, &dir.join("sslocal").to_string_lossy());
        r.args([
            "--protocol",
            "redir",
            "-b",
            "0.0.0.0:1100",
            "-s",
            &server,
            "-m",
            "2022-blake3-aes-256-gcm",
            "-k",
            &key,
            "--tcp-multipath",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        children.push(r.spawn().map_err(io("starting sslocal redir"))?);
        super::redirect::install(h, "ssbench", 1100)?;
        std::thread::sleep(Duration::from_millis(500));
        Ok(SsRust { children })
    }

    /// The processes, for CPU accounting.
    pub(super) fn pids(&self) -> Vec<u32> {
        self.children.iter().map(|c| c.id()).collect()
    }

    /// Stops the processes and removes the capture table.
    pub(super) fn stop(mut self, h: &Harness) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        super::redirect::remove(h, "ssbench");
    }
}
