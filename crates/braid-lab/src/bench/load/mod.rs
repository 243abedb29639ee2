//! `braid lab bench load`: how many idle relayed connections one relay holds, at what cost in
//! descriptors and memory per connection on each side; a valid client's time to first byte
//! while thousands of unauthenticated connections are held open on the relay; the gateway's
//! memory idle and with connections; and relayed connections opened per second through the
//! capture (beside the shadowsocks-rust stack when its binaries are given).
//!
//! ```text
//!  lan: hold N ══ capture ══ gw: braid gateway ══ wifi + 5g ══ vps: braid server ══ srv: echo
//!  srv: hold M unauthenticated (32 source addresses) ─────────► vps: braid server
//! ```
//!
//! The daemons size their caps from the open-file limit they start with, so this benchmark
//! raises its own (soft and hard, [`LoadArgs::nofile`]) before it starts anything: every process
//! of the lab inherits it, and the host's defaults are left alone. The table says which limits
//! and caps were in force.

mod clients;
mod procfs;

pub use clients::{hold, rate, Held, Opened};

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Stdio};
use std::time::{Duration, Instant};

use super::ssrust;
use crate::demo::demo_uplinks;
use crate::harness::{Harness, HarnessError, RELAY_PORT};
use crate::{Lab, Role};

/// Options of `braid lab bench load`.
#[derive(Debug, clap::Args)]
pub struct LoadArgs {
    /// Relayed connections held through the capture at once.
    #[arg(long, default_value_t = 10_000)]
    pub connections: usize,
    /// Unauthenticated connections held open on the relay while a valid client is timed.
    #[arg(long, default_value_t = 5_000)]
    pub unauthenticated: usize,
    /// Relayed connections for the gateway's memory figure.
    #[arg(long, default_value_t = 1_000)]
    pub gateway_connections: usize,
    /// Seconds of back-to-back short connections for the rate.
    #[arg(long, default_value_t = 10)]
    pub rate_secs: u64,
    /// Clients opening short connections at once for the rate.
    #[arg(long, default_value_t = 16)]
    pub rate_workers: usize,
    /// Open-file limit (soft and hard) of this benchmark and of every process it starts.
    #[arg(long, default_value_t = 65_536)]
    pub nofile: u64,
    /// Folder with shadowsocks-rust's `ssserver` and `sslocal`, for its connection rate.
    #[arg(long)]
    pub ssrust: Option<PathBuf>,
}

/// Source addresses of the unauthenticated clients: the relay keeps at most 256 pending
/// handshakes per address, so a flood that is to be held needs many.
const JUNK_SOURCES: u8 = 32;
/// Tries of the time-to-first-byte measurement.
const RR_TRIES: &str = "20";
/// How long held connections may take to close once released.
const DRAIN: Duration = Duration::from_secs(60);

fn io(what: &str) -> impl FnOnce(std::io::Error) -> HarnessError {
    let what = what.to_string();
    move |source| HarnessError::Io { what, source }
}

/// Raises this process's open-file limit, soft and hard, to `n`; where the hard limit cannot be
/// raised (no CAP_SYS_RESOURCE, as in some containers), the soft one goes as far as the hard one
/// allows. Returns what is in force (soft, hard) and why it is less than asked, if it is.
fn raise_nofile(n: u64) -> (u64, u64, Option<String>) {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let now = getrlimit(Resource::Nofile);
    let hard = now.maximum.unwrap_or(u64::MAX);
    let wanted = Rlimit {
        current: Some(n),
        maximum: Some(hard.max(n)),
    };
    let why = match setrlimit(Resource::Nofile, wanted) {
        Ok(()) => None,
        Err(e) => {
            let _ = setrlimit(
                Resource::Nofile,
                Rlimit {
                    current: Some(n.min(hard)),
                    maximum: now.maximum,
                },
            );
            Some(format!(
                "the hard limit {hard} could not be raised to {n} ({e}: this process lacks CAP_SYS_RESOURCE)"
            ))
        }
    };
    let after = getrlimit(Resource::Nofile);
    (
        after.current.unwrap_or(u64::MAX),
        after.maximum.unwrap_or(u64::MAX),
        why,
    )
}

/// A `braid lab traffic hold` client and the connections it keeps open.
struct Holder {
    child: Child,
    stdin: Option<ChildStdin>,
    held: Held,
}

impl Holder {
    /// Opens `count` connections from `role` to `target` and returns once they are open.
    fn start(
        h: &Harness,
        exe: &Path,
        role: Role,
        target: &str,
        count: usize,
        sources: &[IpAddr],
        junk: bool,
    ) -> Result<Holder, HarnessError> {
        let mut cmd = h.lab.command(role, &exe.to_string_lossy());
        let count_s = count.to_string();
        cmd.args([
            "lab",
            "traffic",
            "hold",
            "--connect",
            target,
            "--count",
            &count_s,
        ]);
        if !sources.is_empty() {
            let list: Vec<String> = sources.iter().map(IpAddr::to_string).collect();
            cmd.args(["--from", &list.join(",")]);
        }
        if junk {
            cmd.arg("--junk");
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().map_err(io("starting a hold client"))?;
        let stdin = child.stdin.take();
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            BufReader::new(out)
                .read_line(&mut line)
                .map_err(io("reading the hold client"))?;
        }
        let held: Held = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(HarnessError::Traffic {
                    args: vec!["hold".into(), target.into(), count_s],
                    status: "no report".into(),
                    stderr: format!("{e}: {line:?}"),
                });
            }
        };
        Ok(Holder { child, stdin, held })
    }

    /// Lets the connections go and waits for the client to exit.
    fn release(mut self) {
        self.stdin.take();
        let _ = self.child.wait();
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        if self.stdin.take().is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Descriptors a daemon may open or close on its own meanwhile (probe streams, netlink).
const SLACK: usize = 16;

/// Waits until `pid` is back to about `fds` descriptors (released connections closed).
fn drained(pid: u32, fds: usize) {
    let start = Instant::now();
    while procfs::fds(pid) > fds + SLACK && start.elapsed() < DRAIN {
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until `pid` has at least `fds` descriptors: a client's connections are open when the
/// kernel has queued them, the daemon holds them once it has accepted them.
fn accepted(pid: u32, fds: usize) {
    let start = Instant::now();
    while procfs::fds(pid) < fds && start.elapsed() < DRAIN {
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One daemon's figures with N connections held.
struct Side {
    fds_per_conn: f64,
    rss_idle_kib: u64,
    rss_held_kib: u64,
    rss_per_conn_kib: f64,
}

fn side(pid: u32, fds_idle: usize, rss_idle_kib: u64, open: usize) -> Side {
    let (fds, rss) = (procfs::fds(pid), procfs::rss_kib(pid));
    let n = open.max(1) as f64;
    Side {
        fds_per_conn: fds.saturating_sub(fds_idle) as f64 / n,
        rss_idle_kib,
        rss_held_kib: rss,
        rss_per_conn_kib: rss.saturating_sub(rss_idle_kib) as f64 / n,
    }
}

/// The median time to first byte of `RR_TRIES` request/replies from the LAN, and the failures.
fn ttfb(h: &Harness) -> Result<(Option<f64>, u64), HarnessError> {
    let t = Harness::traffic_target();
    let child = h.spawn_traffic(Role::Lan, &["rr", "--connect", &t, "--count", RR_TRIES])?;
    let v = h.finish_traffic(child)?;
    Ok((v["median_ms"].as_f64(), v["failures"].as_u64().unwrap_or(0)))
}

/// Connections opened per second from the LAN through whatever captures it.
fn opened_per_sec(h: &Harness, args: &LoadArgs) -> Result<serde_json::Value, HarnessError> {
    let t = Harness::traffic_target();
    let (w, s) = (args.rate_workers.to_string(), args.rate_secs.to_string());
    let child = h.spawn_traffic(
        Role::Lan,
        &["rate", "--connect", &t, "--workers", &w, "--secs", &s],
    )?;
    h.finish_traffic(child)
}

/// The daemon's own line about its caps (`limits: …`), from its log.
fn caps_line(h: &Harness, log: &str) -> String {
    h.log(log)
        .lines()
        .find_map(|l| l.split_once("limits: ").map(|(_, rest)| rest.to_string()))
        .unwrap_or_else(|| "not logged".into())
}

fn mb(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

/// The running lab: harness, daemons' pids, the flood's source addresses, the limits in force.
struct Running {
    h: Harness,
    spid: u32,
    gpid: u32,
    sources: Vec<IpAddr>,
    limits: String,
}

/// Raises the open-file limit, builds the lab with the flood's source addresses in srv, starts
/// both daemons and waits for the uplinks.
fn start(args: &LoadArgs, exe: &Path) -> Result<Running, HarnessError> {
    let (soft, hard, short) = raise_nofile(args.nofile);
    if let Some(why) = &short {
        eprintln!("bench load: open-file limit {soft}/{hard}: {why}");
    }
    let mut h = Harness::new("bload", demo_uplinks(), exe)?;
    let sources: Vec<IpAddr> = (0..JUNK_SOURCES)
        .map(|i| IpAddr::from([10, 30, 0, 100 + i]))
        .collect();
    for s in &sources {
        let a = format!("{s}/24");
        h.lab
            .run(Role::Srv, &["ip", "addr", "add", &a, "dev", Lab::SRV_IFACE])?;
    }
    // The flood must still be pending when the valid client is timed (default: 15 s).
    h.start_server("handshake_timeout_secs = 300")?;
    h.start_gateway(&["wifi", "5g"], "")?;
    h.wait_uplinks_up(&["wifi", "5g"], Duration::from_secs(30))?;
    let (Some(spid), Some(gpid)) = (h.server_pid(), h.gateway_pid()) else {
        return Err(HarnessError::NotReady {
            what: "braid server and gateway",
            secs: 0,
            log: String::new(),
        });
    };
    let limits = format!(
        "open-file limit (soft/hard) asked {}, in force for the benchmark and everything it started {soft}/{hard}{}: relay {}, gateway {}; relay caps: {}; gateway caps: {}",
        args.nofile,
        short.map(|w| format!(" ({w})")).unwrap_or_default(),
        procfs::nofile(spid),
        procfs::nofile(gpid),
        caps_line(&h, "server.log"),
        caps_line(&h, "gateway.log"),
    );
    Ok(Running {
        h,
        spid,
        gpid,
        sources,
        limits,
    })
}

/// Everything the benchmark measured.
struct Figures {
    limits: String,
    gateway_idle_kib: u64,
    few: (Held, Side),
    many: (Held, Side, Side),
    idle_ttfb: (Option<f64>, u64),
    flood: Flood,
    braid_rate: serde_json::Value,
    ss_rate: Option<serde_json::Value>,
}

/// The unauthenticated connections held on the relay, the descriptors they cost it, and the
/// valid client's time to first byte meanwhile.
struct Flood {
    junk: Held,
    fds: usize,
    ttfb: (Option<f64>, u64),
}

/// Holds `count` relayed connections from the LAN; the figures of (relay, gateway) meanwhile.
fn held(
    r: &Running,
    exe: &Path,
    count: usize,
    idle: Idle,
) -> Result<(Held, Side, Side), HarnessError> {
    let target = Harness::traffic_target();
    let hold = Holder::start(&r.h, exe, Role::Lan, &target, count, &[], false)?;
    accepted(r.spid, idle.s_fds + 2 * hold.held.open);
    accepted(r.gpid, idle.g_fds + 2 * hold.held.open);
    let relay = side(r.spid, idle.s_fds, idle.s_rss, hold.held.open);
    let gateway = side(r.gpid, idle.g_fds, idle.g_rss, hold.held.open);
    let report = hold.held.clone();
    hold.release();
    drained(r.spid, idle.s_fds);
    drained(r.gpid, idle.g_fds);
    Ok((report, relay, gateway))
}

/// Times a valid client while `count` unauthenticated connections are held open on the relay;
/// also what they cost the relay in descriptors.
fn flooded(r: &Running, exe: &Path, count: usize, idle: Idle) -> Result<Flood, HarnessError> {
    let relay = format!("{}:{RELAY_PORT}", Lab::VPS_PUBLIC);
    let junk = Holder::start(&r.h, exe, Role::Srv, &relay, count, &r.sources, true)?;
    accepted(r.spid, idle.s_fds + junk.held.open);
    let t = ttfb(&r.h)?;
    let fds = procfs::fds(r.spid).saturating_sub(idle.s_fds);
    let report = junk.held.clone();
    junk.release();
    drained(r.spid, idle.s_fds);
    Ok(Flood {
        junk: report,
        fds,
        ttfb: t,
    })
}

/// The daemons' descriptors and memory before any connection.
#[derive(Clone, Copy)]
struct Idle {
    s_fds: usize,
    g_fds: usize,
    s_rss: u64,
    g_rss: u64,
}

/// Runs the benchmark and returns Markdown.
pub fn load(args: &LoadArgs, exe: &Path) -> Result<String, HarnessError> {
    let mut r = start(args, exe)?;
    let idle = Idle {
        s_fds: procfs::fds(r.spid),
        g_fds: procfs::fds(r.gpid),
        s_rss: procfs::rss_kib(r.spid),
        g_rss: procfs::rss_kib(r.gpid),
    };
    eprintln!("gateway with {} connections…", args.gateway_connections);
    let (few, _, g_few) = held(&r, exe, args.gateway_connections, idle)?;
    eprintln!("relay with {} connections…", args.connections);
    let many = held(&r, exe, args.connections, idle)?;
    eprintln!(
        "time to first byte, idle and with {} unauthenticated connections…",
        args.unauthenticated
    );
    let idle_ttfb = ttfb(&r.h)?;
    let flood = flooded(&r, exe, args.unauthenticated, idle)?;
    eprintln!("connections opened per second…");
    let braid_rate = opened_per_sec(&r.h, args)?;
    r.h.stop_gateway()?;
    r.h.stop_server()?;
    let ss_rate = match &args.ssrust {
        Some(dir) => {
            eprintln!("connections opened per second, shadowsocks-rust…");
            r.h.lab.kernel_mptcp_policy()?;
            let s = ssrust::start(&r.h, dir)?;
            let rate = opened_per_sec(&r.h, args);
            s.stop(&r.h);
            Some(rate?)
        }
        None => None,
    };
    let figures = Figures {
        limits: std::mem::take(&mut r.limits),
        gateway_idle_kib: idle.g_rss,
        few: (few, g_few),
        many,
        idle_ttfb,
        flood,
        braid_rate,
        ss_rate,
    };
    drop(r);
    Ok(render(args, &figures))
}

/// The figures as Markdown tables.
fn render(args: &LoadArgs, f: &Figures) -> String {
    let (many, s_many, g_many) = &f.many;
    let (few, g_few) = &f.few;
    let mut md = String::new();
    let _ = writeln!(
        md,
        "### Load (wifi 40 Mbit/s 10 ms + 5g 20 Mbit/s 40 ms; relayed connections through the capture, idle after a byte each way)\n"
    );
    let _ = writeln!(md, "Limits in force: {}.\n", f.limits);
    md += "| figure | relay | gateway | target |\n|---|---|---|---|\n";
    let _ = writeln!(
        md,
        "| relayed connections held at once | {} of {} ({} failed{}; opened in {:.1} s) | same | ≥ 10,000 |",
        many.open,
        args.connections,
        many.failed,
        many.first_error.as_deref().map(|e| format!(": {e}")).unwrap_or_default(),
        many.secs
    );
    let _ = writeln!(
        md,
        "| descriptors per held connection | {:.2} | {:.2} | ≤ 2 per side |",
        s_many.fds_per_conn, g_many.fds_per_conn
    );
    let _ = writeln!(
        md,
        "| RSS idle → with them held, MB | {} → {} | {} → {} | recorded |",
        mb(s_many.rss_idle_kib),
        mb(s_many.rss_held_kib),
        mb(g_many.rss_idle_kib),
        mb(g_many.rss_held_kib)
    );
    let _ = writeln!(
        md,
        "| RSS per held connection, KiB | {:.1} | {:.1} | recorded |",
        s_many.rss_per_conn_kib, g_many.rss_per_conn_kib
    );
    let _ = writeln!(
        md,
        "| gateway RSS idle with 2 uplinks, MB | | {} | ≤ 15 MB |",
        mb(f.gateway_idle_kib)
    );
    let _ = writeln!(
        md,
        "| gateway RSS with {} relayed connections ({} held, {} failed), MB | | {} ({:.2} descriptors each) | recorded |",
        args.gateway_connections,
        few.open,
        few.failed,
        mb(g_few.rss_held_kib),
        g_few.fds_per_conn
    );
    md += &render_ttfb(args, f);
    md += &render_rate(args, f);
    md
}

fn render_ttfb(args: &LoadArgs, f: &Figures) -> String {
    let ms = |v: Option<f64>| v.map_or("–".to_string(), |m| format!("{m:.1}"));
    let Flood {
        junk,
        fds,
        ttfb: flooded,
    } = &f.flood;
    let idle = f.idle_ttfb;
    let mut md = format!(
        "\n| time to first byte, 100-byte request/reply from the LAN, {RR_TRIES} fresh connections | median ms | failures |\n|---|---|---|\n"
    );
    let _ = writeln!(
        md,
        "| idle relay | {} | {} of {RR_TRIES} |",
        ms(idle.0),
        idle.1
    );
    let _ = writeln!(
        md,
        "| {} unauthenticated connections held open on the relay ({} open from {} addresses, {} failed; relay descriptors +{}) | {} | {} of {RR_TRIES} |",
        args.unauthenticated,
        junk.open,
        JUNK_SOURCES,
        junk.failed,
        fds,
        ms(flooded.0),
        flooded.1
    );
    if let (Some(a), Some(b)) = (idle.0, flooded.0) {
        let _ = writeln!(md, "| ratio (target ≤ 2×) | {:.2}× | |", b / a);
    }
    md
}

fn render_rate(args: &LoadArgs, f: &Figures) -> String {
    let mut md = format!(
        "\n| relayed connections opened per second through the capture (100-byte request/reply, {} clients, {} s) | per second | completed | failed |\n|---|---|---|---|\n",
        args.rate_workers, args.rate_secs
    );
    let row = |name: &str, v: &serde_json::Value| {
        format!(
            "| {name} | {:.0} | {} | {} |\n",
            v["per_sec"].as_f64().unwrap_or(0.0),
            v["completed"],
            v["failed"]
        )
    };
    md += &row("**braid**", &f.braid_rate);
    match &f.ss_rate {
        Some(v) => md += &row("shadowsocks-rust 1.25 + kernel MPTCP", v),
        None => md += "| shadowsocks-rust 1.25 + kernel MPTCP | not measured (no --ssrust) | | |\n",
    }
    md
}
