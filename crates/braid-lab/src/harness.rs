//! Runs the real `braid server` and `braid gateway` inside a lab, for the demo, the end-to-end
//! tests and the benchmarks. Everything it starts is stopped, and the lab removed, on drop.
//!
//! The harness runs the braid *binary* it is given (`braid server`, `braid gateway`, `braid lab
//! traffic serve`, `braid doctor`); it does not link the braid crate, which links this one.
//! Waits on daemon logs go through [`LogCursor`]s, so they see only what was written after the
//! wait began.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;

use crate::log_cursor::{LogCursor, LogWaitError};
use crate::{Lab, LabSpec, Role, UplinkSpec};

/// Where the lab's traffic server listens (in the srv namespace).
pub const TRAFFIC_PORT: u16 = 5201;
/// Where the relay listens (on the vps's public address).
pub const RELAY_PORT: u16 = 8388;
/// The gateway's SOCKS5 port (on the gateway's LAN address).
pub const SOCKS_PORT: u16 = 1080;
/// The name the lab's DNS server answers ([`Harness::start_dns`]), and its addresses.
pub const DNS_NAME: &str = "braid.lab";
/// [`DNS_NAME`]'s IPv4 address.
pub const DNS_ANSWER_V4: &str = "10.30.0.99";
/// [`DNS_NAME`]'s IPv6 address.
pub const DNS_ANSWER_V6: &str = "2001:db8:30::99";

/// A lab with braid processes in it.
pub struct Harness {
    /// The namespaces and links.
    pub lab: Lab,
    exe: PathBuf,
    dir: PathBuf,
    key: String,
    server: Option<Child>,
    gateway: Option<Child>,
    traffic: Option<Child>,
    server_runs: u32,
    gateway_runs: u32,
    /// A cursor taken just before the current gateway started: it sees that run's whole log.
    gateway_start: Option<LogCursor>,
    /// The relay listens on, and the gateway dials, the VPS's IPv6 address.
    ipv6_relay: bool,
    /// The relay listens on every address of the VPS rather than its public one.
    relay_on_every_address: bool,
}

/// A harness step that failed.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// The lab could not be built or a lab command failed.
    #[error("lab: {0}")]
    Lab(#[from] crate::LabError),
    /// A file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// A daemon did not become ready.
    #[error("{what} did not become ready within {secs} s; its log:\n{log}")]
    NotReady {
        /// Which daemon.
        what: &'static str,
        /// Seconds waited.
        secs: u64,
        /// Its log so far.
        log: String,
    },
    /// An awaited log line did not appear.
    #[error(transparent)]
    LogWait(#[from] LogWaitError),
    /// A traffic command failed.
    #[error("traffic {args:?} failed ({status}): {stderr}")]
    Traffic {
        /// Its arguments.
        args: Vec<String>,
        /// Exit status.
        status: String,
        /// What it printed on stderr.
        stderr: String,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> HarnessError {
    let what = what.into();
    move |source| HarnessError::Io { what, source }
}

impl Harness {
    /// Builds the lab and starts the traffic server in srv.
    pub fn new(
        prefix: &str,
        uplinks: Vec<UplinkSpec>,
        exe: &Path,
    ) -> Result<Harness, HarnessError> {
        let lab = Lab::up(LabSpec {
            prefix: prefix.to_string(),
            uplinks,
        })?;
        let dir = std::env::temp_dir().join(format!("braid-lab-{}", lab.prefix()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
        let key = new_key()?;
        let mut h = Harness {
            lab,
            exe: exe.to_path_buf(),
            dir,
            key,
            server: None,
            gateway: None,
            traffic: None,
            server_runs: 0,
            gateway_runs: 0,
            gateway_start: None,
            ipv6_relay: false,
            relay_on_every_address: false,
        };
        let listen = format!("{}:{TRAFFIC_PORT}", Lab::SRV);
        let mut cmd = h.lab.command(Role::Srv, &h.exe.to_string_lossy());
        cmd.args(["lab", "traffic", "serve", "--listen", &listen])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        h.traffic = Some(cmd.spawn().map_err(io_err("starting the traffic server"))?);
        let mut cmd6 = h.lab.command(Role::Srv, &h.exe.to_string_lossy());
        cmd6.args([
            "lab",
            "traffic",
            "serve",
            "--listen",
            &Self::traffic_target6(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        h.lab.spawn(Role::Srv, cmd6)?;
        Ok(h)
    }

    /// The pre-shared key in use.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The folder with configs and logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// From now on the relay listens on the VPS's IPv6 address and the gateway dials it there:
    /// uplinks, tables, rules, endpoints and subflows are IPv6.
    pub fn use_ipv6_relay(&mut self) {
        self.ipv6_relay = true;
    }

    /// The next relay listens on every address (`0.0.0.0`, or `[::]` with an IPv6 relay) while
    /// gateways still use its public address, as on a VPS with several addresses.
    pub fn relay_on_every_address(&mut self) {
        self.relay_on_every_address = true;
    }

    /// The relay's `listen`.
    fn relay_listen(&self) -> String {
        match (self.relay_on_every_address, self.ipv6_relay) {
            (true, true) => format!("[::]:{RELAY_PORT}"),
            (true, false) => format!("0.0.0.0:{RELAY_PORT}"),
            (false, _) => self.relay_addr(),
        }
    }

    /// The relay's address as the configs write it.
    fn relay_addr(&self) -> String {
        if self.ipv6_relay {
            format!("[{}]:{RELAY_PORT}", Lab::VPS_PUBLIC6)
        } else {
            format!("{}:{RELAY_PORT}", Lab::VPS_PUBLIC)
        }
    }

    /// Starts `braid server` in vps with `extra` appended to its config; waits until it listens.
    pub fn start_server(&mut self, extra: &str) -> Result<(), HarnessError> {
        self.start_server_with_prefix(&[], extra)
    }

    /// Like [`Harness::start_server`], run under a wrapper command (e.g. `faketime -f +60s`).
    pub fn start_server_with_prefix(
        &mut self,
        wrapper: &[&str],
        extra: &str,
    ) -> Result<(), HarnessError> {
        // Like the gateway's record, the relay's salt file stays in the lab's own folder.
        let cfg = format!(
            "listen = \"{}\"\nmethod = \"2022-blake3-aes-256-gcm\"\nkey = \"{}\"\nallow_destinations = [\"{}/32\"]\nstate_dir = \"{}\"\n{extra}\n",
            self.relay_listen(),
            self.key,
            Lab::SRV,
            self.state_dir().display()
        );
        self.keep_old_log("server", self.server_runs);
        self.server_runs += 1;
        let mut started = self.log_cursor("server.log");
        let child = self.spawn_daemon(Role::Vps, "server", &cfg, wrapper)?;
        self.server = Some(child);
        wait_ready(&mut started, "listening on", "braid server")
    }

    /// Starts `braid gateway` in gw with the named uplinks; waits until it is up. Its config
    /// captures the traffic server's address (`capture`): the lab's "internet" is private
    /// address space, which braid would otherwise send out directly.
    pub fn start_gateway(&mut self, uplinks: &[&str], extra: &str) -> Result<(), HarnessError> {
        let list: Vec<(&str, bool)> = uplinks.iter().map(|u| (*u, false)).collect();
        self.start_gateway_with(&list, extra)
    }

    /// Like [`Harness::start_gateway`], with a `backup` flag per uplink.
    pub fn start_gateway_with(
        &mut self,
        uplinks: &[(&str, bool)],
        extra: &str,
    ) -> Result<(), HarnessError> {
        let lines: Vec<(&str, String)> = uplinks
            .iter()
            .map(|(u, backup)| (*u, format!("backup = {backup}\n")))
            .collect();
        let lines: Vec<(&str, &str)> = lines.iter().map(|(u, l)| (*u, l.as_str())).collect();
        self.start_gateway_uplinks(&lines, extra)
    }

    /// Like [`Harness::start_gateway`], with extra keys in each `[[uplink]]` (`tunnel = "always"`).
    pub fn start_gateway_uplinks(
        &mut self,
        uplinks: &[(&str, &str)],
        extra: &str,
    ) -> Result<(), HarnessError> {
        // Each lab keeps its gateway's state record in its own folder: /run is shared by every
        // namespace, and gateways of parallel tests must not find each other's record.
        let mut cfg = format!(
            "server = \"{}\"\nmethod = \"2022-blake3-aes-256-gcm\"\nkey = \"{}\"\nlan = [\"{}\"]\ncapture = [\"{}/32\"]\nsocks = \"{}:{SOCKS_PORT}\"\nstate_dir = \"{}\"\n{extra}\n",
            self.relay_addr(),
            self.key,
            Lab::GW_LAN_IFACE,
            Lab::SRV,
            Lab::GW_LAN,
            self.state_dir().display()
        );
        for (u, keys) in uplinks {
            cfg += &format!(
                "[[uplink]]\nname = \"{u}\"\ninterface = \"{}\"\n{keys}\n",
                self.lab.uplink_iface(u)
            );
        }
        self.keep_old_log("gateway", self.gateway_runs);
        self.gateway_runs += 1;
        let started = self.log_cursor("gateway.log");
        self.gateway_start = Some(started.clone());
        let child = self.spawn_daemon(Role::Gw, "gateway", &cfg, &[])?;
        self.gateway = Some(child);
        wait_ready(&mut started.clone(), "gateway up", "braid gateway")
    }

    /// Keeps an earlier run's log as `NAME-N.log`, so `NAME.log` is always the current run's.
    /// Renamed rather than deleted: the old file keeps its inode, so a [`LogCursor`] on it can
    /// tell the new file from the old one.
    fn keep_old_log(&self, name: &str, runs: u32) {
        if runs > 0 {
            let _ = fs::rename(
                self.dir.join(format!("{name}.log")),
                self.dir.join(format!("{name}-{runs}.log")),
            );
        }
    }

    /// `ip netns exec NS sh -c …` that runs the program and arguments appended to it with
    /// cgroup2 mounted at /sys/fs/cgroup, as on a systemd host: `ip netns exec` gives the
    /// namespace a fresh /sys without it, and the relay (and its doctor check) attach the
    /// `initial_window` program there. The mount is made in the command's own mount namespace
    /// (the host's mounts are untouched); the shell then execs the program, so its pid stays
    /// the child's.
    fn with_cgroup2(&self, role: Role) -> Command {
        let mut cmd = self.lab.command(role, "sh");
        cmd.args([
            "-c",
            "grep -q ' /sys/fs/cgroup cgroup2 ' /proc/mounts || mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null; exec \"$@\"",
            "sh",
        ]);
        cmd
    }

    fn spawn_daemon(
        &self,
        role: Role,
        name: &str,
        cfg: &str,
        wrapper: &[&str],
    ) -> Result<Child, HarnessError> {
        let cfg_path = self.dir.join(format!("{name}.toml"));
        fs::write(&cfg_path, cfg).map_err(io_err(format!("writing {}", cfg_path.display())))?;
        let log_path = self.dir.join(format!("{name}.log"));
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io_err(format!("opening {}", log_path.display())))?;
        let mut cmd = self.with_cgroup2(role);
        cmd.args(wrapper).arg(&self.exe);
        cmd.args([name, "--config"])
            .arg(&cfg_path)
            .args(["--log", "debug"])
            .stdout(Stdio::null())
            .stderr(log);
        cmd.spawn()
            .map_err(io_err(format!("starting braid {name}")))
    }

    /// A cursor at the current end of a log ("server.log", "gateway.log"): take it before an
    /// action, then [`LogCursor::wait_for`] sees only what the daemon logged after it. A cursor
    /// taken before a daemon (re)starts sees that run's log from its first line.
    pub fn log_cursor(&self, file: &str) -> LogCursor {
        LogCursor::at_end(self.dir.join(file))
    }

    /// A log file's whole text ("server.log", "gateway.log"), e.g. for an assertion message.
    pub fn log(&self, file: &str) -> String {
        fs::read_to_string(self.dir.join(file)).unwrap_or_default()
    }

    /// Where the gateway keeps its state record and the relay its salts (`state_dir`).
    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// Kills the gateway with SIGKILL, so it removes nothing, and reaps it.
    pub fn kill_gateway(&mut self) -> Result<Option<ExitStatus>, HarnessError> {
        Ok(match self.gateway.take() {
            Some(mut c) => {
                let _ = c.kill();
                Some(c.wait().map_err(io_err("waiting for the killed gateway"))?)
            }
            None => None,
        })
    }

    /// Process id of the running server.
    pub fn server_pid(&self) -> Option<u32> {
        self.server.as_ref().map(Child::id)
    }

    /// Process id of the running gateway.
    pub fn gateway_pid(&self) -> Option<u32> {
        self.gateway.as_ref().map(Child::id)
    }

    /// Process ids of the running server and gateway (for CPU accounting).
    pub fn daemon_pids(&self) -> Vec<u32> {
        [&self.server, &self.gateway]
            .into_iter()
            .flatten()
            .map(|c| c.id())
            .collect()
    }

    /// Freezes (SIGSTOP) or thaws (SIGCONT) the gateway, so a test can change kernel state
    /// behind its back and look before it repairs it.
    pub fn freeze_gateway(&self, frozen: bool) {
        if let Some(c) = &self.gateway {
            let sig = if frozen {
                nix::sys::signal::Signal::SIGSTOP
            } else {
                nix::sys::signal::Signal::SIGCONT
            };
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), sig);
        }
    }

    /// Writes a file into the harness folder and returns its path.
    pub fn write(&self, name: &str, text: &str) -> Result<PathBuf, HarnessError> {
        let p = self.dir.join(name);
        fs::write(&p, text).map_err(io_err(format!("writing {}", p.display())))?;
        Ok(p)
    }

    /// Runs `braid doctor --json --config FILE ARGS` in `role`; returns its exit code and report.
    pub fn doctor(
        &self,
        role: Role,
        config: &Path,
        args: &[&str],
    ) -> Result<(i32, serde_json::Value), HarnessError> {
        self.doctor_wrapped(role, false, config, args)
    }

    /// Like [`Harness::doctor`]; with `no_tfo`, under `braid lab no-tfo` (TFO socket options
    /// fail with ENOPROTOOPT, as on MPTCP sockets before Linux 6.2).
    pub fn doctor_wrapped(
        &self,
        role: Role,
        no_tfo: bool,
        config: &Path,
        args: &[&str],
    ) -> Result<(i32, serde_json::Value), HarnessError> {
        let mut cmd = self.with_cgroup2(role);
        cmd.arg(&self.exe);
        if no_tfo {
            cmd.args(["lab", "no-tfo", "--"]).arg(&self.exe);
        }
        cmd.args(["doctor", "--json", "--config"])
            .arg(config)
            .args(args);
        let out = cmd.output().map_err(io_err("running braid doctor"))?;
        let v = serde_json::from_slice(&out.stdout).map_err(|e| HarnessError::Traffic {
            args: vec!["doctor".into()],
            status: out.status.to_string(),
            stderr: format!(
                "{} (stdout not JSON: {e})",
                String::from_utf8_lossy(&out.stderr)
            ),
        })?;
        Ok((out.status.code().unwrap_or(-1), v))
    }

    /// Stops the gateway with SIGTERM and returns its exit status.
    pub fn stop_gateway(&mut self) -> Result<Option<ExitStatus>, HarnessError> {
        Ok(match self.gateway.take() {
            Some(c) => Some(terminate(c)?),
            None => None,
        })
    }

    /// Waits until every named uplink has come Up (`uplink NAME: Recovering → Up`) since the
    /// current gateway started; uplinks start in Recovering. For an uplink that comes back
    /// later, take a [`Harness::log_cursor`] before the fault instead.
    pub fn wait_uplinks_up(&self, names: &[&str], limit: Duration) -> Result<(), HarnessError> {
        let started = self.gateway_start.as_ref().ok_or(HarnessError::NotReady {
            what: "an uplink coming Up (no gateway was started)",
            secs: 0,
            log: String::new(),
        })?;
        for n in names {
            started
                .clone()
                .wait_for(&format!("uplink {n}: Recovering → Up"), limit)?;
        }
        Ok(())
    }

    /// Starts the gateway expecting it to refuse to start; returns its exit status.
    pub fn gateway_must_fail(
        &mut self,
        uplinks: &[&str],
        extra: &str,
    ) -> Result<ExitStatus, HarnessError> {
        match self.start_gateway(uplinks, extra) {
            Ok(()) => {
                self.stop_gateway()?;
                Err(HarnessError::NotReady {
                    what: "a failing braid gateway (it started)",
                    secs: 0,
                    log: self.log("gateway.log"),
                })
            }
            Err(HarnessError::NotReady { .. }) | Err(HarnessError::Io { .. }) => {
                let mut c = self.gateway.take().ok_or_else(|| HarnessError::Io {
                    what: "gateway".into(),
                    source: io::Error::other("not started"),
                })?;
                let start = Instant::now();
                loop {
                    if let Some(st) = c.try_wait().map_err(io_err("waiting for the gateway"))? {
                        return Ok(st);
                    }
                    if start.elapsed() > Duration::from_secs(10) {
                        return terminate(c);
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Stops the server with SIGTERM.
    pub fn stop_server(&mut self) -> Result<Option<ExitStatus>, HarnessError> {
        Ok(match self.server.take() {
            Some(c) => Some(terminate(c)?),
            None => None,
        })
    }

    /// Runs `braid lab traffic ARGS` in `role` and parses its JSON output.
    pub fn traffic(&self, role: Role, args: &[&str]) -> Result<serde_json::Value, HarnessError> {
        let mut cmd = self.lab.command(role, &self.exe.to_string_lossy());
        cmd.args(["lab", "traffic"]).args(args);
        let out = cmd.output().map_err(io_err("running the traffic client"))?;
        let fail = |status: String, stderr: String| HarnessError::Traffic {
            args: args.iter().map(|s| s.to_string()).collect(),
            status,
            stderr,
        };
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| {
            fail(
                out.status.to_string(),
                format!(
                    "{} (stdout not JSON: {e})",
                    String::from_utf8_lossy(&out.stderr)
                ),
            )
        })?;
        if !out.status.success() {
            return Err(fail(
                out.status.to_string(),
                format!("{} {v}", String::from_utf8_lossy(&out.stderr)),
            ));
        }
        Ok(v)
    }

    /// Starts `braid lab traffic ARGS` in `role` in the background (see [`Harness::finish_traffic`]).
    pub fn spawn_traffic(&self, role: Role, args: &[&str]) -> Result<Child, HarnessError> {
        let mut cmd = self.lab.command(role, &self.exe.to_string_lossy());
        cmd.args(["lab", "traffic"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd.spawn().map_err(io_err("starting a traffic client"))
    }

    /// Waits for a background traffic client and parses its JSON (also when it failed).
    pub fn finish_traffic(&self, child: Child) -> Result<serde_json::Value, HarnessError> {
        let out = child
            .wait_with_output()
            .map_err(io_err("waiting for a traffic client"))?;
        serde_json::from_slice(&out.stdout).map_err(|e| HarnessError::Traffic {
            args: vec![],
            status: out.status.to_string(),
            stderr: format!(
                "{} (stdout not JSON: {e})",
                String::from_utf8_lossy(&out.stderr)
            ),
        })
    }

    /// Starts a real DNS server, dnsmasq (Debian's `dnsmasq-base`, installed by
    /// `scripts/setup`), in srv on port 53 of the traffic server's address, answering
    /// [`DNS_NAME`] with [`DNS_ANSWER_V4`] / [`DNS_ANSWER_V6`]; returns once it answers there
    /// (asked from srv itself). It is killed with the lab.
    pub fn start_dns(&self) -> Result<String, HarnessError> {
        let server = format!("{}:53", Lab::SRV);
        let mut cmd = self.lab.command(Role::Srv, "dnsmasq");
        cmd.args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--user=root",
            "--group=root",
            "--port=53",
            "--log-facility=-",
        ])
        .arg(format!("--listen-address={}", Lab::SRV))
        .arg(format!("--address=/{DNS_NAME}/{DNS_ANSWER_V4}"))
        .arg(format!("--address=/{DNS_NAME}/{DNS_ANSWER_V6}"))
        .arg(format!(
            "--pid-file={}",
            self.dir.join("dnsmasq.pid").display()
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        self.lab.spawn(Role::Srv, cmd)?;
        let deadline = Instant::now() + READY_LIMIT;
        loop {
            let asked = self.traffic(
                Role::Srv,
                &[
                    "dns",
                    "--server",
                    &server,
                    "--name",
                    DNS_NAME,
                    "--timeout-ms",
                    "300",
                ],
            );
            match asked {
                Ok(_) => return Ok(server),
                Err(e) if Instant::now() >= deadline => {
                    return Err(HarnessError::NotReady {
                        what: "dnsmasq (is dnsmasq-base installed? run scripts/setup)",
                        secs: READY_LIMIT.as_secs(),
                        log: e.to_string(),
                    })
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// The traffic server's address, as LAN clients use it.
    pub fn traffic_target() -> String {
        format!("{}:{TRAFFIC_PORT}", Lab::SRV)
    }

    /// The IPv6 traffic server (same tool, same port, srv's IPv6 address).
    pub fn traffic_target6() -> String {
        format!("[{}]:{TRAFFIC_PORT}", Lab::SRV6)
    }

    /// The gateway's SOCKS5 address.
    pub fn socks_addr() -> String {
        format!("{}:{SOCKS_PORT}", Lab::GW_LAN)
    }
}

/// How long a daemon gets to log that it is ready.
const READY_LIMIT: Duration = Duration::from_secs(15);

/// Waits for a daemon's ready line after `started`; a daemon that does not get there is
/// `NotReady`, with what it logged instead.
fn wait_ready(
    started: &mut LogCursor,
    needle: &str,
    what: &'static str,
) -> Result<(), HarnessError> {
    started
        .wait_for(needle, READY_LIMIT)
        .map(drop)
        .map_err(|e| HarnessError::NotReady {
            what,
            secs: READY_LIMIT.as_secs(),
            log: e.new_lines,
        })
}

/// A fresh pre-shared key for `2022-blake3-aes-256-gcm`: 32 random bytes, base64 (what `braid
/// keygen` prints; the lab cannot call into braid, which depends on it).
fn new_key() -> Result<String, HarnessError> {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|e| HarnessError::Io {
        what: "reading the system's random source for a key".into(),
        source: io::Error::other(e.to_string()),
    })?;
    Ok(base64::engine::general_purpose::STANDARD.encode(key))
}

/// SIGTERM, then wait up to 10 s, then SIGKILL.
fn terminate(mut c: Child) -> Result<ExitStatus, HarnessError> {
    let pid = nix::unistd::Pid::from_raw(c.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let start = Instant::now();
    loop {
        if let Some(st) = c.try_wait().map_err(io_err("waiting for a daemon"))? {
            return Ok(st);
        }
        if start.elapsed() > Duration::from_secs(10) {
            let _ = c.kill();
            return c.wait().map_err(io_err("waiting for a killed daemon"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        for c in [self.gateway.take(), self.server.take()]
            .into_iter()
            .flatten()
        {
            let _ = terminate(c);
        }
        if let Some(mut t) = self.traffic.take() {
            let _ = t.kill();
            let _ = t.wait();
        }
    }
}

/// Is this process root (the lab needs it)?
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Runs a command and returns stdout, for checks that read kernel state inside a namespace.
pub fn output(mut cmd: Command) -> String {
    cmd.output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}
