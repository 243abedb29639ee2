//! Unshaped relay throughput: the relay's own cost per byte, one stream each way through the
//! capture, braid beside the shadowsocks-rust stack and raw kernel MPTCP (no proxy), in one lab.
//!
//! How it is kept fair (the earlier harness reported braid 17–24× that stack because it ran
//! with offloads on, where the kernel's TCP memory accounting ran away and throttled whatever
//! ran after it; the shadowsocks-rust phase ran last):
//! - Every veth of the lab has TSO, GSO and GRO off, as in the shaped lab: each packet is
//!   processed as a packet, and the runaway seen with offloads on does not happen.
//! - The stacks take turns: each round runs them in a rotated order, so none always runs first
//!   or last, and every figure is given per round.
//! - The kernel's TCP memory counter (`mem` of `/proc/net/sockstat`, host-wide) is recorded
//!   before and after every phase, and a phase whose counter grew past
//!   [`RUNAWAY_PAGES`] stops the run: what follows would be poisoned.
//! - `--offloads-on` measures once more in a fresh lab with offloads on (separately, never
//!   mixed with the figures above), under the same guard. Only on a machine you can reboot.
//! - Every transfer also records what MPTCP did to it (`MPTcpExtMPTCPRetrans` in the sender's
//!   namespace: data re-sent on another subflow after the connection-level timeout;
//!   `MPTcpExtDuplicateData` in the receiver's: the copies that arrived twice). A phase far
//!   below its neighbours with many of them stalled on the connection level, not on CPU.
//! - And the packets the gateway's interfaces carried per MB moved, bulk and back, on the
//!   uplinks and on the LAN: the cost here is the kernel's per packet, so a stack that cut its
//!   segments small or sent more ACKs and window updates would show it there.
//!
//! `--shaped` runs the same phases on the demo's shaped uplinks (a household's rates, where the
//! CPU is not the limit), and `--only` picks stacks, for a focused comparison such as pooled
//! against fresh connections.

use std::fmt::Write as _;
use std::path::Path;

use crate::harness::{Harness, HarnessError};
use crate::{Lab, Role, UplinkSpec};

/// Growth of the TCP memory counter in one phase that means the kernel's accounting ran away.
pub const RUNAWAY_PAGES: u64 = 50_000;

/// Options of `braid lab bench throughput` (the unshaped part of `aggregation` alone).
#[derive(Debug, clap::Args)]
pub struct ThroughputArgs {
    /// Seconds per transfer.
    #[arg(long, default_value_t = 10)]
    pub secs: u64,
    /// Rounds, each running every stack once in rotated order.
    #[arg(long, default_value_t = 2)]
    pub rounds: usize,
    /// Folder with shadowsocks-rust's `ssserver` and `sslocal`, to measure that stack side by side.
    #[arg(long)]
    pub ssrust: Option<std::path::PathBuf>,
    /// Also measure with segmentation offloads on, in a fresh lab after the rest (can break TCP
    /// for the whole machine on Linux 6.18: only where a reboot is fine).
    #[arg(long)]
    pub offloads_on: bool,
    /// Run on the demo's shaped uplinks (wifi 40 Mbit/s 10 ms, 5g 20 Mbit/s 40 ms) instead.
    #[arg(long)]
    pub shaped: bool,
    /// Measure only these stacks (repeat the option); all of them when absent.
    #[arg(long, value_enum)]
    pub only: Vec<Stack>,
}

/// Runs `braid lab bench throughput` and returns Markdown.
pub fn throughput(args: &ThroughputArgs, exe: &Path) -> Result<String, HarnessError> {
    unshaped(
        exe,
        &ThroughputPlan {
            secs: args.secs,
            rounds: args.rounds,
            ssrust: args.ssrust.clone(),
            offloads_on: args.offloads_on,
            shaped: args.shaped,
            only: args.only.clone(),
        },
    )
}

/// What the unshaped measurement needs.
#[derive(Debug, Clone)]
pub struct ThroughputPlan {
    /// Seconds per transfer.
    pub secs: u64,
    /// Rounds, each with every stack once, in rotated order.
    pub rounds: usize,
    /// shadowsocks-rust's binaries, when it is measured too.
    pub ssrust: Option<std::path::PathBuf>,
    /// Also measure in a fresh lab with segmentation offloads on.
    pub offloads_on: bool,
    /// On the demo's shaped uplinks, not unshaped ones.
    pub shaped: bool,
    /// The stacks measured; every one when empty.
    pub only: Vec<Stack>,
}

/// The stacks measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Stack {
    /// braid with its defaults but the warm pool: fresh connections, as the other stacks have.
    Braid,
    /// braid with `congestion = "cubic"`: a loss-based algorithm that does not pace, beside
    /// braid's default BBR, which paces every packet with a timer when no fq qdisc does it; the
    /// other stacks use the host's default (printed with the table).
    #[value(name = "cubic")]
    BraidCubic,
    /// braid with `warm_pool = "auto"`: each transfer on a pooled connection, parked on the relay
    /// and bonded before use.
    #[value(name = "pool")]
    BraidPool,
    /// shadowsocks-rust's sslocal and ssserver over kernel MPTCP.
    #[value(name = "ssrust")]
    SsRust,
    /// The traffic tool in gw over an MPTCP socket: no proxy, no crypto.
    Raw,
    /// Two bare relays (`braid lab traffic relay --mode copy`) on the proxies' three hops:
    /// tokio read and write, 64 KiB, no header, no crypto: a proxy's ceiling on this path.
    #[value(name = "bare-copy")]
    BareCopy,
    /// The same with splice(2): no byte copied into user space, the hops' kernel cost alone.
    #[value(name = "bare-splice")]
    BareSplice,
}

impl Stack {
    /// How the per-phase lines name it.
    fn short(self) -> &'static str {
        match self {
            Stack::Braid => "braid",
            Stack::BraidCubic => "braid (cubic)",
            Stack::BraidPool => "braid (pool)",
            Stack::SsRust => "shadowsocks-rust",
            Stack::Raw => "raw",
            Stack::BareCopy => "bare copy",
            Stack::BareSplice => "bare splice",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Stack::Braid => "**braid**, warm_pool = \"off\" (capture, fresh connections)",
            Stack::BraidCubic => "braid, congestion = \"cubic\", warm_pool = \"off\" (capture)",
            Stack::BraidPool => "braid, warm_pool = \"auto\" (capture, pooled connections)",
            Stack::SsRust => "shadowsocks-rust 1.25 (capture)",
            Stack::Raw => "raw kernel MPTCP, no proxy",
            Stack::BareCopy => "bare relay, read/write (capture; no header, no crypto)",
            Stack::BareSplice => "bare relay, splice (capture; no copy to user space)",
        }
    }
}

/// One transfer: its rate, the CPU the proxy's processes spent per Gbit moved, and the CPU the
/// whole machine spent per Gbit. The kernel runs much of a packet's path (the next namespace's
/// receive, its firewall and conntrack) in whichever context sent it, or in ksoftirqd: a
/// process's own figure moves with that timing, the machine's does not.
#[derive(Debug, Clone, Copy, Default)]
struct Costed {
    mbit: f64,
    cpu_per_gbit: Option<f64>,
    machine_per_gbit: Option<f64>,
    mptcp: Option<Reinjections>,
    packets: Option<Packets>,
}

/// Packets the gateway's interfaces carried during one transfer, per direction of the bulk:
/// a stack that moves the same bytes in more packets (smaller segments, more ACKs or window
/// updates) pays the kernel's per-packet cost more often, which is most of the cost here.
#[derive(Debug, Clone, Copy, Default)]
struct Packets {
    /// Over the uplinks (the MPTCP hop): the bulk's segments and what went back against them.
    uplink_bulk: u64,
    uplink_back: u64,
    /// Over the LAN (the client's plain TCP hop), the same two.
    lan_bulk: u64,
    lan_back: u64,
}

/// `(rx, tx)` packets of each of `ifaces`, summed, from `/proc/net/dev`'s text.
fn iface_packets(dev: &str, ifaces: &[String]) -> Option<(u64, u64)> {
    let mut sum = (0, 0);
    for iface in ifaces {
        let line = dev
            .lines()
            .find_map(|l| l.trim_start().strip_prefix(&format!("{iface}:")))?;
        let f: Vec<u64> = line
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        sum.0 += f.get(1)?;
        sum.1 += f.get(9)?;
    }
    Some(sum)
}

/// The gateway's `(uplinks rx, uplinks tx, LAN rx, LAN tx)` packet counters, now.
fn gateway_packets(lab: &Lab) -> Option<[u64; 4]> {
    let dev = lab.run(Role::Gw, &["cat", "/proc/net/dev"]).ok()?;
    let uplinks: Vec<String> = lab
        .uplinks()
        .iter()
        .map(|u| lab.uplink_iface(&u.name))
        .collect();
    let (ur, ut) = iface_packets(&dev, &uplinks)?;
    let (lr, lt) = iface_packets(&dev, &[Lab::GW_LAN_IFACE.to_string()])?;
    Some([ur, ut, lr, lt])
}

/// What MPTCP re-sent during one transfer: connection-level retransmissions by the sender, and
/// the duplicates the receiver dropped.
#[derive(Debug, Clone, Copy, Default)]
struct Reinjections {
    resent: u64,
    duplicates: u64,
}

/// Which namespace sends a transfer's bulk and which receives it.
#[derive(Debug, Clone, Copy)]
enum Direction {
    /// The relay (vps) sends to the gateway (gw).
    Down,
    /// The gateway sends to the relay.
    Up,
}

impl Direction {
    fn sender_receiver(self) -> (Role, Role) {
        match self {
            Direction::Down => (Role::Vps, Role::Gw),
            Direction::Up => (Role::Gw, Role::Vps),
        }
    }
}

/// One counter of `role`'s namespace (`nstat` name), `None` where the kernel has no such line.
fn net_counter(lab: &Lab, role: Role, name: &str) -> Option<u64> {
    let text = lab.run(role, &["cat", "/proc/net/netstat"]).ok()?;
    braid_sys::sysctl::find_counter(&text, name)
}

/// The counters behind [`Reinjections`], read now.
fn reinjection_counters(lab: &Lab, dir: Direction) -> Option<Reinjections> {
    let (sender, receiver) = dir.sender_receiver();
    Some(Reinjections {
        resent: net_counter(lab, sender, "MPTcpExtMPTCPRetrans")?,
        duplicates: net_counter(lab, receiver, "MPTcpExtDuplicateData")?,
    })
}

/// One phase: a stack's download and upload, and the TCP memory counter around them.
#[derive(Debug, Clone)]
struct Phase {
    stack: Stack,
    round: usize,
    down: Costed,
    up: Costed,
    mem_before: Option<u64>,
    mem_after: Option<u64>,
}

/// CPU seconds (user + system) used so far by these processes.
pub(super) fn cpu_secs(pids: &[u32]) -> f64 {
    let tck = clock_ticks();
    pids.iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).ok())
        .filter_map(|st| {
            let rest = st.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / tck)
        })
        .sum()
}

/// CPU seconds the whole machine spent so far outside idle and iowait (`/proc/stat`).
fn machine_cpu_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let busy: f64 = v
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, x)| x)
        .sum();
    Some(busy / clock_ticks())
}

/// Clock ticks per second, the unit of `/proc/*/stat` and `/proc/stat` times.
fn clock_ticks() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64
}

/// Pages charged to TCP, host-wide, now.
pub fn tcp_mem_pages() -> Option<u64> {
    braid_sys::tcp_mem::read(&braid_sys::sysctl::Procfs::default()).pages
}

/// Runs `transfer` (Mbit/s over `secs`) in direction `dir`, charges it the CPU of `pids`
/// (none: not costed) and notes what MPTCP re-sent meanwhile.
fn costed(
    h: &Harness,
    dir: Direction,
    pids: &[u32],
    secs: u64,
    transfer: impl FnOnce(&Harness) -> Result<f64, HarnessError>,
) -> Result<Costed, HarnessError> {
    let r0 = reinjection_counters(&h.lab, dir);
    let p0 = gateway_packets(&h.lab);
    let (c0, m0) = (cpu_secs(pids), machine_cpu_secs());
    let mbit = transfer(h)?;
    let cpu = cpu_secs(pids) - c0;
    let machine = machine_cpu_secs().zip(m0).map(|(m1, m0)| m1 - m0);
    let p1 = gateway_packets(&h.lab);
    let r1 = reinjection_counters(&h.lab, dir);
    let gbits = mbit / 1000.0 * secs as f64;
    Ok(Costed {
        mbit,
        cpu_per_gbit: (!pids.is_empty() && gbits > 0.0).then(|| cpu / gbits),
        machine_per_gbit: machine.filter(|_| gbits > 0.0).map(|m| m / gbits),
        mptcp: r0.zip(r1).map(|(a, b)| Reinjections {
            resent: b.resent.saturating_sub(a.resent),
            duplicates: b.duplicates.saturating_sub(a.duplicates),
        }),
        packets: p0.zip(p1).map(|(a, b)| {
            let d = |i: usize| b[i].saturating_sub(a[i]);
            // Down: the bulk comes in over the uplinks and goes out to the LAN.
            match dir {
                Direction::Down => Packets {
                    uplink_bulk: d(0),
                    uplink_back: d(1),
                    lan_bulk: d(3),
                    lan_back: d(2),
                },
                Direction::Up => Packets {
                    uplink_bulk: d(1),
                    uplink_back: d(0),
                    lan_bulk: d(2),
                    lan_back: d(3),
                },
            }
        }),
    })
}

/// Turns TSO, GSO and GRO off on every veth of the lab (both ends of each uplink, the LAN and
/// the server side), so every hop processes real packets.
fn offloads_off(lab: &Lab) -> Result<(), HarnessError> {
    let mut ends: Vec<(Role, String)> = vec![
        (Role::Lan, Lab::LAN_IFACE.into()),
        (Role::Gw, Lab::GW_LAN_IFACE.into()),
        (Role::Vps, Lab::VPS_SRV_IFACE.into()),
        (Role::Srv, Lab::SRV_IFACE.into()),
    ];
    for u in lab.uplinks() {
        ends.push((Role::Gw, lab.uplink_iface(&u.name)));
        ends.push((Role::Vps, lab.uplink_vps_iface(&u.name)));
    }
    for (role, iface) in ends {
        lab.run(
            role,
            &[
                "ethtool", "-K", &iface, "tso", "off", "gso", "off", "gro", "off",
            ],
        )?;
    }
    Ok(())
}

/// Removes the per-uplink policy `Lab::kernel_mptcp_policy` set (endpoints, rules, tables), so
/// braid's gateway installs its own on a clean namespace.
pub(super) fn clear_kernel_policy(lab: &Lab) -> Result<(), HarnessError> {
    lab.run(Role::Gw, &["ip", "mptcp", "endpoint", "flush"])?;
    for (i, u) in lab.uplinks().iter().enumerate() {
        let table = (101 + i).to_string();
        let addr = lab.uplink_gw_addr(&u.name).to_string();
        while lab
            .run(
                Role::Gw,
                &["ip", "rule", "del", "from", &addr, "table", &table],
            )
            .is_ok()
        {}
        let _ = lab.run(Role::Gw, &["ip", "route", "flush", "table", &table]);
    }
    Ok(())
}

/// One stack's download and upload, with the counter read around them.
fn phase(
    h: &mut Harness,
    stack: Stack,
    round: usize,
    plan: &ThroughputPlan,
) -> Result<Phase, HarnessError> {
    let secs = plan.secs;
    let mem_before = tcp_mem_pages();
    let (down, up) = match stack {
        Stack::Braid | Stack::BraidCubic | Stack::BraidPool => {
            let (server, gateway) = match stack {
                Stack::BraidCubic => (
                    "congestion = \"cubic\"",
                    "congestion = \"cubic\"\nwarm_pool = \"off\"",
                ),
                Stack::BraidPool => ("", "warm_pool = \"auto\""),
                _ => ("", "warm_pool = \"off\""),
            };
            clear_kernel_policy(&h.lab)?;
            h.start_server(server)?;
            h.start_gateway(&["wifi", "5g"], gateway)?;
            let pids = h.daemon_pids();
            let pooled = stack == Stack::BraidPool;
            if pooled {
                super::fetch::wait_warm(h)?;
            }
            let d = costed(h, Direction::Down, &pids, secs, |h| {
                super::aggregation::get(h, Role::Lan, &[], secs)
            })?;
            if pooled {
                super::fetch::wait_warm(h)?;
            }
            let u = costed(h, Direction::Up, &pids, secs, |h| {
                super::aggregation::put(h, Role::Lan, &[], secs)
            })?;
            h.stop_gateway()?;
            h.stop_server()?;
            (d, u)
        }
        Stack::SsRust | Stack::BareCopy | Stack::BareSplice => {
            h.lab.kernel_mptcp_policy()?;
            let s = match stack {
                Stack::SsRust => super::ssrust::start(
                    h,
                    plan.ssrust
                        .as_deref()
                        .unwrap_or(Path::new("/opt/ssrust/bin")),
                )?,
                Stack::BareCopy => super::bare_relay::start(h, crate::bare_relay::Mode::Copy)?,
                _ => super::bare_relay::start(h, crate::bare_relay::Mode::Splice)?,
            };
            let pids = s.pids();
            let d = costed(h, Direction::Down, &pids, secs, |h| {
                super::aggregation::get(h, Role::Lan, &[], secs)
            });
            let u = costed(h, Direction::Up, &pids, secs, |h| {
                super::aggregation::put(h, Role::Lan, &[], secs)
            });
            s.stop(h);
            (d?, u?)
        }
        Stack::Raw => {
            h.lab.kernel_mptcp_policy()?;
            let m = ["--mptcp"];
            let d = costed(h, Direction::Down, &[], secs, |h| {
                super::aggregation::get(h, Role::Gw, &m, secs)
            })?;
            let u = costed(h, Direction::Up, &[], secs, |h| {
                super::aggregation::put(h, Role::Gw, &m, secs)
            })?;
            (d, u)
        }
    };
    Ok(Phase {
        stack,
        round,
        down,
        up,
        mem_before,
        mem_after: tcp_mem_pages(),
    })
}

/// Runs every round in a fresh lab; stops early (keeping what was measured) when a phase's
/// counter ran away.
fn rounds(
    exe: &Path,
    plan: &ThroughputPlan,
    offloads: bool,
) -> Result<(Vec<Phase>, Option<String>), HarnessError> {
    let uplinks = if plan.shaped {
        crate::demo::demo_uplinks()
    } else {
        vec![UplinkSpec::new("wifi"), UplinkSpec::new("5g")]
    };
    let mut h = Harness::new(if offloads { "bago" } else { "bagu" }, uplinks, exe)?;
    if !offloads {
        offloads_off(&h.lab)?;
    }
    let mut stacks = vec![
        Stack::Braid,
        Stack::Raw,
        Stack::BraidCubic,
        Stack::BraidPool,
        Stack::BareCopy,
        Stack::BareSplice,
    ];
    if plan.ssrust.is_some() {
        stacks.insert(1, Stack::SsRust);
    }
    if !plan.only.is_empty() {
        stacks.retain(|s| plan.only.contains(s));
    }
    let rounds = if offloads { 1 } else { plan.rounds.max(1) };
    let mut phases = Vec::new();
    for r in 0..rounds {
        let mut order = stacks.clone();
        order.rotate_left(r % stacks.len());
        for stack in order {
            eprintln!(
                "{}, offloads {}: round {}, {}…",
                if plan.shaped { "shaped" } else { "unshaped" },
                if offloads { "on" } else { "off" },
                r + 1,
                stack.name()
            );
            let p = phase(&mut h, stack, r, plan)?;
            let grew = p
                .mem_after
                .unwrap_or(0)
                .saturating_sub(p.mem_before.unwrap_or(0));
            phases.push(p);
            if grew > RUNAWAY_PAGES {
                return Ok((phases, Some(format!(
                    "stopped after this phase: the kernel's TCP memory counter grew by {grew} pages in it (its accounting ran away; every later figure on this boot is suspect; see `braid doctor`, kernel.tcp_mem)"
                ))));
            }
        }
    }
    Ok((phases, None))
}

/// Markdown for the unshaped measurement (offloads off; then on, if asked).
pub fn unshaped(exe: &Path, plan: &ThroughputPlan) -> Result<String, HarnessError> {
    let mut md = String::new();
    let (phases, stopped) = rounds(exe, plan, false)?;
    md += &table(&phases, plan, "offloads off on every veth");
    // A lab namespace starts with the host's default; shadowsocks-rust and the raw path keep it.
    let host_cc = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_congestion_control")
        .map_or_else(|e| format!("unknown ({e})"), |s| s.trim().to_string());
    let _ = writeln!(
        md,
        "Congestion control: shadowsocks-rust and the raw path use the host's default ({host_cc}); **braid** its own default (bbr) unless the row names another.\n"
    );
    if let Some(s) = &stopped {
        let _ = writeln!(md, "**{s}**\n");
    }
    if plan.offloads_on && stopped.is_none() {
        let (phases, stopped) = rounds(exe, plan, true)?;
        md += &table(
            &phases,
            plan,
            "offloads on (TSO/GSO/GRO), a fresh lab, one round",
        );
        if let Some(s) = &stopped {
            let _ = writeln!(md, "**{s}**\n");
        }
    }
    Ok(md)
}

/// "round N stack: what" for every phase in run order, joined with `sep`.
fn each_phase(phases: &[Phase], sep: &str, what: impl Fn(&Phase) -> String) -> String {
    phases
        .iter()
        .map(|p| format!("round {} {}: {}", p.round + 1, p.stack.short(), what(p)))
        .collect::<Vec<_>>()
        .join(sep)
}

/// The per-round figures of `stack`, formatted and joined with " / ".
fn per_round(phases: &[Phase], stack: Stack, f: impl Fn(&Phase) -> Option<String>) -> String {
    let v: Vec<String> = phases
        .iter()
        .filter(|p| p.stack == stack)
        .map(|p| f(p).unwrap_or_else(|| "–".into()))
        .collect();
    if v.is_empty() {
        "–".into()
    } else {
        v.join(" / ")
    }
}

fn table(phases: &[Phase], plan: &ThroughputPlan, how: &str) -> String {
    let mut md = String::new();
    let rounds = phases.iter().map(|p| p.round + 1).max().unwrap_or(0);
    let (title, links, unit) = if plan.shaped {
        (
            "Shaped relay throughput",
            "wifi 40 Mbit/s 10 ms + 5g 20 Mbit/s 40 ms",
            "Mbit/s",
        )
    } else {
        (
            "Unshaped relay throughput",
            "2 veth uplinks, no rate or delay",
            "Gbit/s",
        )
    };
    let _ = writeln!(
        md,
        "### {title} ({how}; {links}, 1 stream, {} s; {rounds} round(s), stacks in rotated order; figures per round)\n",
        plan.secs
    );
    let _ = writeln!(
        md,
        "| path | down {unit} | CPU s per Gbit: proxy | machine | up {unit} | CPU s per Gbit: proxy | machine |\n|---|---|---|---|---|---|---|"
    );
    let gbit = |c: Costed| {
        Some(if plan.shaped {
            format!("{:.1}", c.mbit)
        } else {
            format!("{:.2}", c.mbit / 1000.0)
        })
    };
    let cpu = |c: Costed| c.cpu_per_gbit.map(|v| format!("{v:.2}"));
    let machine = |c: Costed| c.machine_per_gbit.map(|v| format!("{v:.2}"));
    for stack in [
        Stack::Raw,
        Stack::BareSplice,
        Stack::BareCopy,
        Stack::SsRust,
        Stack::Braid,
        Stack::BraidCubic,
        Stack::BraidPool,
    ] {
        if !phases.iter().any(|p| p.stack == stack) {
            continue;
        }
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} |",
            stack.name(),
            per_round(phases, stack, |p| gbit(p.down)),
            per_round(phases, stack, |p| cpu(p.down)),
            per_round(phases, stack, |p| machine(p.down)),
            per_round(phases, stack, |p| gbit(p.up)),
            per_round(phases, stack, |p| cpu(p.up)),
            per_round(phases, stack, |p| machine(p.up)),
        );
    }
    for (ours, other, label) in [
        (Stack::Braid, Stack::SsRust, "braid / shadowsocks-rust"),
        (Stack::Braid, Stack::Raw, "braid / raw kernel MPTCP"),
        (
            Stack::Braid,
            Stack::BareCopy,
            "braid / bare relay, read/write",
        ),
        (Stack::BareCopy, Stack::Raw, "bare relay, read/write / raw"),
        (Stack::BareSplice, Stack::Raw, "bare relay, splice / raw"),
        (
            Stack::BraidCubic,
            Stack::SsRust,
            "braid with cubic / shadowsocks-rust",
        ),
        (Stack::BraidPool, Stack::Braid, "braid pooled / braid fresh"),
    ] {
        let ratio = |down: bool| {
            let mut v = Vec::new();
            for r in 0..rounds {
                let of = |s: Stack| {
                    phases
                        .iter()
                        .find(|p| p.stack == s && p.round == r)
                        .map(|p| if down { p.down.mbit } else { p.up.mbit })
                };
                if let (Some(b), Some(o)) = (of(ours), of(other)) {
                    v.push(format!("{:.2}×", b / o.max(1e-9)));
                }
            }
            v.join(" / ")
        };
        if phases.iter().any(|p| p.stack == other) && phases.iter().any(|p| p.stack == ours) {
            let _ = writeln!(
                md,
                "| {label} | {} | | | {} | | |",
                ratio(true),
                ratio(false)
            );
        }
    }
    let _ = writeln!(
        md,
        "\nCPU s per Gbit: *proxy* counts the relay's and the gateway's processes (for raw, none); *machine* every CPU of the host outside idle (the traffic tool and the kernel's softirq work in every context and in ksoftirqd included), which the kernel cannot shift from one column to another by where it runs a packet's receive path."
    );
    let pages = |v: Option<u64>| v.map_or("?".into(), |v| v.to_string());
    let _ = writeln!(
        md,
        "\nTCP memory (sockstat mem, pages) per phase: {}\n",
        each_phase(phases, "; ", |p| format!(
            "{} → {}",
            pages(p.mem_before),
            pages(p.mem_after)
        ))
    );
    let resent = |c: Costed| {
        c.mptcp
            .map_or("?".into(), |r| format!("{}/{}", r.resent, r.duplicates))
    };
    let _ = writeln!(
        md,
        "MPTCP connection-level re-sends / duplicates received (sender's `MPTcpExtMPTCPRetrans` / receiver's `MPTcpExtDuplicateData`), down; up: {}\n",
        each_phase(phases, " · ", |p| format!(
            "{}; {}",
            resent(p.down),
            resent(p.up)
        ))
    );
    let per_mb = |c: Costed| {
        let mb = c.mbit * plan.secs as f64 / 8.0;
        c.packets.filter(|_| mb > 0.0).map_or("?".into(), |p| {
            let f = |n: u64| n as f64 / mb;
            format!(
                "{:.0}+{:.0} / {:.0}+{:.0}",
                f(p.uplink_bulk),
                f(p.uplink_back),
                f(p.lan_bulk),
                f(p.lan_back)
            )
        })
    };
    let _ = writeln!(
        md,
        "Packets per MB moved, at the gateway (bulk + back, over the uplinks / over the LAN), down; up: {}\n",
        each_phase(phases, " · ", |p| format!("{}; {}", per_mb(p.down), per_mb(p.up)))
    );
    md
}
