//! The [`Lab`] handle: namespace names, running commands inside them, tracked processes and
//! teardown. Building the topology lives in `topology.rs`, shaping in `shaping.rs`, faults in
//! `faults.rs`.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::cmd::{self, describe};
use crate::measure::{IfaceBytes, PingStats};
use crate::netem::NetemHandle;
use crate::ns::{enter_netns, netns_path};
use crate::spec::{uplink_addr, LabSpec, UplinkSpec};
use crate::{topology, LabError};

/// The four namespaces of a lab.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// A LAN client behind the gateway (10.9.0.2).
    Lan,
    /// The gateway with the uplinks (`wan-NAME`), where braid's gateway daemon runs.
    Gw,
    /// The relay on the "VPS" (public 10.200.0.1), where braid's server runs.
    Vps,
    /// A server on the internet side of the VPS (10.30.0.2).
    Srv,
}

impl Role {
    /// Every role, in creation order.
    pub const ALL: [Role; 4] = [Role::Lan, Role::Gw, Role::Vps, Role::Srv];

    /// The namespace suffix: `lan`, `gw`, `vps`, `srv`.
    pub fn suffix(self) -> &'static str {
        match self {
            Role::Lan => "lan",
            Role::Gw => "gw",
            Role::Vps => "vps",
            Role::Srv => "srv",
        }
    }
}

/// A running lab. Everything it made is removed by [`Lab::teardown`] or on drop, also when a
/// test panics.
pub struct Lab {
    pub(crate) prefix: String,
    pub(crate) uplinks: Vec<UplinkSpec>,
    /// Current gateway-side address of each uplink (changed by `change_uplink_address`).
    pub(crate) gw_addrs: Mutex<Vec<Ipv4Addr>>,
    /// Delay emulators as (uplink name, receiving role, handle).
    pub(crate) netems: Mutex<Vec<(String, Role, NetemHandle)>>,
    children: Mutex<Vec<LabProcess>>,
    torn_down: bool,
}

impl std::fmt::Debug for Lab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lab")
            .field("prefix", &self.prefix)
            .field("uplinks", &self.uplinks)
            .finish_non_exhaustive()
    }
}

impl Lab {
    /// The VPS's public address (on its `lo`), reachable from gw over every uplink.
    pub const VPS_PUBLIC: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);
    /// The LAN client's address (`lan0` in lan).
    pub const LAN_CLIENT: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 2);
    /// The gateway's LAN address (`eth-lan` in gw); the LAN's default route.
    pub const GW_LAN: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 1);
    /// The server behind the VPS (`eth-vps` in srv).
    pub const SRV: Ipv4Addr = Ipv4Addr::new(10, 30, 0, 2);
    /// The VPS's address towards the server (`eth-srv` in vps); srv's default route.
    pub const VPS_SRV_SIDE: Ipv4Addr = Ipv4Addr::new(10, 30, 0, 1);
    /// The VPS's public IPv6 address (on its `lo`).
    pub const VPS_PUBLIC6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x200, 0, 0, 0, 0, 1);
    /// The LAN client's IPv6 address.
    pub const LAN_CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 9, 0, 0, 0, 0, 2);
    /// The gateway's LAN IPv6 address; the LAN's IPv6 default route.
    pub const GW_LAN6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 9, 0, 0, 0, 0, 1);
    /// The server behind the VPS, IPv6 (global documentation space, so braid captures it).
    pub const SRV6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x30, 0, 0, 0, 0, 2);
    /// The VPS's IPv6 address toward the server; srv's IPv6 default route.
    pub const VPS_SRV_SIDE6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x30, 0, 0, 0, 0, 1);
    /// LAN interface in lan.
    pub const LAN_IFACE: &'static str = "lan0";
    /// LAN interface in gw.
    pub const GW_LAN_IFACE: &'static str = "eth-lan";
    /// Interface towards srv in vps.
    pub const VPS_SRV_IFACE: &'static str = "eth-srv";
    /// Interface towards vps in srv.
    pub const SRV_IFACE: &'static str = "eth-vps";

    /// Creates the namespaces, links, addresses, routes and shaping of `spec`. Stale
    /// namespaces with the same prefix are removed first; on any failure everything made so far
    /// is torn down again.
    pub fn up(spec: LabSpec) -> Result<Lab, LabError> {
        spec.validate()?;
        if !rustix::process::geteuid().is_root() {
            return Err(LabError::NotRoot);
        }
        let prefix = format!("{}{}", prefix_tag(), spec.prefix);
        cleanup_stale(&prefix)?;
        let gw_addrs = (0..spec.uplinks.len()).map(|i| uplink_addr(i, 1)).collect();
        let lab = Lab {
            prefix,
            uplinks: spec.uplinks,
            gw_addrs: Mutex::new(gw_addrs),
            netems: Mutex::new(Vec::new()),
            children: Mutex::new(Vec::new()),
            torn_down: false,
        };
        // On error `lab` is dropped here, which tears down whatever was made.
        topology::build(&lab)?;
        tracing::info!(prefix = %lab.prefix, uplinks = lab.uplinks.len(), "lab up");
        Ok(lab)
    }

    /// The namespace prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The uplinks as specified.
    pub fn uplinks(&self) -> &[UplinkSpec] {
        &self.uplinks
    }

    /// `{prefix}-{lan,gw,vps,srv}`.
    pub fn ns_name(&self, role: Role) -> String {
        ns_name(&self.prefix, role)
    }

    /// `ip netns exec NS program`; add arguments and run it yourself.
    pub fn command(&self, role: Role, program: &str) -> Command {
        cmd::in_ns(&self.ns_name(role), program)
    }

    /// Runs `argv` inside `role`'s namespace and returns its stdout; a non-zero exit is an error
    /// naming the command, its status and stderr.
    pub fn run(&self, role: Role, argv: &[&str]) -> Result<String, LabError> {
        cmd::run_in(&self.ns_name(role), argv)
    }

    /// Runs `argv` inside `role`'s namespace and returns its output whatever the exit status
    /// (for commands expected to fail, such as a ping across a blackhole).
    pub fn output(&self, role: Role, argv: &[&str]) -> Result<std::process::Output, LabError> {
        let (program, args) = argv
            .split_first()
            .ok_or_else(|| LabError::InvalidSpec("empty argv".into()))?;
        cmd::output(self.command(role, program).args(args))
    }

    /// Runs `ping args…` inside `role`'s namespace and parses the result. Packet loss is not an
    /// error; a ping that could not send at all (no route, link down) is, with its stderr.
    pub fn ping(&self, role: Role, args: &[&str]) -> Result<PingStats, LabError> {
        let mut cmd = self.command(role, "ping");
        cmd.args(args);
        let out = cmd::output(&mut cmd)?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        PingStats::parse(&stdout).map_err(|_| LabError::Command {
            command: describe(&cmd),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }

    /// One counter from `/proc/net/netstat` or `/proc/net/snmp` inside `role`'s namespace, e.g.
    /// `("MPTcpExt", "MPCapableSYNRX")` or `("TcpExt", "TCPTimeouts")`.
    pub fn netstat(&self, role: Role, group: &str, name: &str) -> Result<u64, LabError> {
        let text = self.run(role, &["cat", "/proc/net/netstat", "/proc/net/snmp"])?;
        crate::measure::netstat_counter(&text, group, name)
            .ok_or_else(|| LabError::parse("netstat counter", &format!("{group}: {name}")))
    }

    /// Starts `cmd` inside `role`'s namespace and returns its pid. The process is killed at
    /// teardown. See [`Lab::spawn_process`].
    pub fn spawn(&self, role: Role, cmd: Command) -> Result<u32, LabError> {
        Ok(self.spawn_process(role, cmd)?.pid())
    }

    /// Starts `cmd` inside `role`'s namespace and returns a handle to it; the lab keeps a clone
    /// and kills the process at teardown.
    ///
    /// `cmd` may already come from [`Lab::command`] (then it is used as is, stdio settings
    /// included). A plain `Command::new("iperf3")` is rewrapped in `ip netns exec`, keeping its
    /// program, arguments, environment and working directory but not its stdio settings.
    pub fn spawn_process(&self, role: Role, cmd: Command) -> Result<LabProcess, LabError> {
        let ns = self.ns_name(role);
        let mut cmd = if is_wrapped_for(&cmd, &ns) {
            cmd
        } else {
            rewrap(&cmd, &ns)
        };
        let child = cmd.spawn().map_err(|source| LabError::Spawn {
            command: describe(&cmd),
            source,
        })?;
        tracing::debug!(command = %describe(&cmd), pid = child.id(), "spawned");
        let process = LabProcess {
            pid: child.id(),
            child: Arc::new(Mutex::new(child)),
        };
        lock(&self.children).push(process.clone());
        Ok(process)
    }

    /// Runs `f` on a new thread inside `role`'s network namespace and returns its result.
    /// Sockets created in `f` belong to that namespace and can be returned and used anywhere.
    pub fn in_netns<T, F>(&self, role: Role, f: F) -> Result<T, LabError>
    where
        T: Send,
        F: FnOnce() -> T + Send,
    {
        let path = netns_path(&self.ns_name(role));
        std::thread::scope(|s| {
            let worker = s.spawn(|| {
                enter_netns(&path).map_err(|source| LabError::Io {
                    what: format!("entering {}", path.display()),
                    source,
                })?;
                Ok(f())
            });
            worker
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// Gateway-side interface of uplink `name`: `wan-{name}`.
    pub fn uplink_iface(&self, name: &str) -> String {
        format!("wan-{name}")
    }

    /// VPS-side interface of uplink `name`: `up-{name}`.
    pub fn uplink_vps_iface(&self, name: &str) -> String {
        format!("up-{name}")
    }

    /// Current gateway-side address of uplink `name` (10.{i+1}.0.1 unless changed).
    ///
    /// # Panics
    /// If the lab has no uplink `name`.
    pub fn uplink_gw_addr(&self, name: &str) -> Ipv4Addr {
        let i = self.expect_uplink(name);
        lock(&self.gw_addrs)[i]
    }

    /// Gateway-side IPv6 address of uplink `name`: 2001:db8:{i+1}::1.
    ///
    /// # Panics
    /// If the lab has no uplink `name`.
    pub fn uplink_gw_addr6(&self, name: &str) -> Ipv6Addr {
        crate::spec::uplink_addr6(self.expect_uplink(name), 1)
    }

    /// VPS-side address of uplink `name`: 10.{i+1}.0.2, the gateway's next hop.
    ///
    /// # Panics
    /// If the lab has no uplink `name`.
    pub fn uplink_vps_addr(&self, name: &str) -> Ipv4Addr {
        uplink_addr(self.expect_uplink(name), 2)
    }

    /// Byte counters of `iface` inside `role`'s namespace.
    pub fn iface_bytes(&self, role: Role, iface: &str) -> Result<IfaceBytes, LabError> {
        let dir = format!("/sys/class/net/{iface}/statistics");
        let text = self.run(
            role,
            &[
                "cat",
                &format!("{dir}/rx_bytes"),
                &format!("{dir}/tx_bytes"),
            ],
        )?;
        IfaceBytes::parse(&text)
    }

    /// Byte counters of uplink `name` on the gateway side (`tx` = towards the VPS).
    pub fn uplink_bytes(&self, name: &str) -> Result<IfaceBytes, LabError> {
        self.uplink_index(name)?;
        self.iface_bytes(Role::Gw, &self.uplink_iface(name))
    }

    /// Packets each delay emulator has passed so far, as (uplink, receiving role, packets).
    pub fn netem_packets(&self) -> Vec<(String, Role, u64)> {
        lock(&self.netems)
            .iter()
            .map(|(name, role, h)| (name.clone(), *role, h.packets()))
            .collect()
    }

    /// Removes everything: stops the delay emulators, kills tracked processes and every process
    /// still inside the namespaces, deletes the namespaces. Also runs on drop; idempotent.
    pub fn teardown(mut self) {
        self.teardown_inner();
    }

    pub(crate) fn uplink_index(&self, name: &str) -> Result<usize, LabError> {
        self.uplinks
            .iter()
            .position(|u| u.name == name)
            .ok_or_else(|| LabError::UnknownUplink(name.to_owned()))
    }

    fn expect_uplink(&self, name: &str) -> usize {
        self.uplink_index(name).unwrap_or_else(|e| panic!("{e}"))
    }

    fn teardown_inner(&mut self) {
        if self.torn_down {
            return;
        }
        self.torn_down = true;
        for (_, _, handle) in lock(&self.netems).drain(..) {
            if let Err(e) = handle.stop() {
                tracing::warn!(error = %e, "lab teardown: netem");
            }
        }
        for process in lock(&self.children).drain(..) {
            process.kill();
        }
        if let Err(e) = cleanup_stale(&self.prefix) {
            tracing::warn!(error = %e, prefix = %self.prefix, "lab teardown");
        }
        tracing::info!(prefix = %self.prefix, "lab down");
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.teardown_inner();
    }
}

/// A process started with [`Lab::spawn_process`]. Clones share the process.
#[derive(Debug, Clone)]
pub struct LabProcess {
    pid: u32,
    child: Arc<Mutex<Child>>,
}

impl LabProcess {
    /// Its pid (the program's own: `ip netns exec` execs it).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Kills it (SIGKILL) and reaps it; harmless if it already exited.
    pub fn kill(&self) {
        let mut child = lock(&self.child);
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Its exit status if it has exited.
    pub fn try_wait(&self) -> std::io::Result<Option<ExitStatus>> {
        lock(&self.child).try_wait()
    }

    /// Waits up to `timeout` for it to exit.
    pub fn wait_timeout(&self, timeout: Duration) -> std::io::Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Its stdout, if it was piped and not taken yet.
    pub fn take_stdout(&self) -> Option<ChildStdout> {
        lock(&self.child).stdout.take()
    }

    /// Its stderr, if it was piped and not taken yet.
    pub fn take_stderr(&self) -> Option<ChildStderr> {
        lock(&self.child).stderr.take()
    }
}

/// Removes the namespaces `{prefix}-{lan,gw,vps,srv}` if they exist, after killing every
/// process inside them. Only these four exact names are touched.
pub fn cleanup_stale(prefix: &str) -> Result<(), LabError> {
    let mut first_error = None;
    for role in Role::ALL {
        let ns = ns_name(prefix, role);
        if !netns_path(&ns).exists() {
            continue;
        }
        kill_ns_processes(&ns);
        let result = cmd::checked(Command::new("ip").args(["netns", "del", &ns]));
        if let Err(e) = result {
            tracing::warn!(error = %e, "removing namespace");
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Whether a test that needs root should run: yes as root; otherwise it prints a skip line and
/// says no, except under `CI=true`, where missing root is a failure (panic).
pub fn root_tests_enabled(test: &str) -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: needs root, and CI=true does not allow skipping");
    }
    eprintln!("SKIP {test}: needs root (set CI=true to make this a failure)");
    false
}

/// `BRAID_LAB_TAG` (up to 4 characters of `[a-z0-9]`), put in front of every lab prefix, so
/// that two checkouts can run their lab tests on one machine at once without removing each
/// other's namespaces. Anything else is ignored.
pub fn prefix_tag() -> String {
    std::env::var("BRAID_LAB_TAG")
        .ok()
        .filter(|t| {
            t.len() <= 4
                && t.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        })
        .unwrap_or_default()
}

pub(crate) fn ns_name(prefix: &str, role: Role) -> String {
    format!("{prefix}-{}", role.suffix())
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// SIGKILLs everything `ip netns pids NS` lists (never this process) and waits briefly for
/// them to go.
fn kill_ns_processes(ns: &str) {
    let me = std::process::id();
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let pids: Vec<u32> = cmd::checked(Command::new("ip").args(["netns", "pids", ns]))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .filter(|&p| p != me)
            .collect();
        if pids.is_empty() || Instant::now() >= deadline {
            return;
        }
        for pid in pids {
            let Ok(pid) = i32::try_from(pid) else {
                continue;
            };
            tracing::debug!(pid, ns, "killing leftover process");
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether `cmd` is `ip netns exec NS …` for this namespace.
fn is_wrapped_for(cmd: &Command, ns: &str) -> bool {
    let args: Vec<_> = cmd.get_args().take(3).collect();
    cmd.get_program() == "ip"
        && args.len() == 3
        && args[0] == "netns"
        && args[1] == "exec"
        && args[2] == ns
}

/// `ip netns exec NS program args…` with `cmd`'s environment and working directory.
fn rewrap(cmd: &Command, ns: &str) -> Command {
    let mut wrapped = Command::new("ip");
    wrapped
        .args(["netns", "exec", ns])
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (key, value) in cmd.get_envs() {
        match value {
            Some(v) => wrapped.env(key, v),
            None => wrapped.env_remove(key),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        wrapped.current_dir(dir);
    }
    wrapped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrap_plain_command_keeps_args_env_dir() {
        let mut c = Command::new("iperf3");
        c.args(["-s", "-1"]).env("A", "b").current_dir("/tmp");
        let w = rewrap(&c, "x-gw");
        assert_eq!(describe(&w), "ip netns exec x-gw iperf3 -s -1");
        assert!(w
            .get_envs()
            .any(|(k, v)| k == "A" && v == Some("b".as_ref())));
        assert_eq!(w.get_current_dir(), Some(std::path::Path::new("/tmp")));
        assert!(is_wrapped_for(&w, "x-gw"));
        assert!(!is_wrapped_for(&w, "x-vps"));
        assert!(!is_wrapped_for(&c, "x-gw"));
    }

    #[test]
    fn lab_is_shareable_across_threads() {
        fn check<T: Send + Sync>() {}
        check::<Lab>();
        check::<LabProcess>();
    }

    #[test]
    fn ns_name_joins_prefix_and_role() {
        assert_eq!(ns_name("blt1", Role::Gw), "blt1-gw");
        assert_eq!(ns_name("blt1", Role::Srv), "blt1-srv");
    }
}
