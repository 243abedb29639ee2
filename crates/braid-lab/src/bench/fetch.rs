//! `braid lab bench fetch`: what a browser's fetch feels like through each stack. HTTP fetches of
//! 100 B, 100 kB and 1 MB from a server in srv, each on a fresh LAN connection through the
//! transparent capture, in the shaped lab (wifi 40 Mbit/s 10 ms, 5g 20 Mbit/s 40 ms): braid with
//! its warm pool, the same with the relay's `initial_window = 0` (the kernel's first flight),
//! braid without the pool, and the shadowsocks-rust stack when its binaries are there.
//! Stacks take turns in rotated order each round; medians over all fetches, with each round's
//! median beside them. braid runs with `fast_open = "off"`, so what it gains is the pool's.
//!
//! Also the warm pool's idle cost: with no LAN traffic, the connections it holds and opens and
//! the bytes each uplink carries per minute, with the pool and without (the health probes'
//! traffic is in both).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::http::{self, Fetched, HttpServer};
use super::throughput::tcp_mem_pages;
use crate::harness::{Harness, HarnessError};
use crate::{Lab, Role};

/// Options of `braid lab bench fetch`.
#[derive(Debug, clap::Args)]
pub struct FetchArgs {
    /// Fetches per size, per stack and round.
    #[arg(long, default_value_t = 15)]
    pub count: usize,
    /// Rounds; each runs every stack once, in rotated order.
    #[arg(long, default_value_t = 2)]
    pub rounds: usize,
    /// Pause between fetches, in ms (a page's links are not fetched back to back forever; the
    /// pool's `auto` size follows the pace).
    #[arg(long, default_value_t = 500)]
    pub gap_ms: u64,
    /// Seconds of idling to measure the warm pool's idle cost (0 skips it).
    #[arg(long, default_value_t = 60)]
    pub idle_secs: u64,
    /// Folder with shadowsocks-rust's `ssserver` and `sslocal`, to measure that stack side by side.
    #[arg(long)]
    pub ssrust: Option<PathBuf>,
    /// Print every fetch's times on stderr (medians hide a bimodal spread).
    #[arg(long)]
    pub samples: bool,
    /// Give braid's 5g uplink `backup = true`: its subflow carries data only when wifi fails,
    /// so a pooled connection fetches as over wifi alone. Shows what keeping the slow subflow
    /// as backup for a connection's first round trips would buy, and what it costs bulk.
    #[arg(long)]
    pub backup_5g: bool,
}

/// Body sizes fetched.
const SIZES: [usize; 3] = [100, 100_000, 1_000_000];
/// The HTTP server's port in srv.
const HTTP_PORT: u16 = 80;
/// A fetch slower than this counts as failed.
const FETCH_LIMIT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stack {
    BraidPool,
    /// Pooled, with the relay's `initial_window = 0`: what the larger first flight buys.
    BraidKernelWindow,
    BraidNoPool,
    SsRust,
    /// An MPTCP socket from the gateway itself, no proxy: what the kernel alone does.
    Raw,
}

impl Stack {
    fn name(self) -> &'static str {
        match self {
            Stack::BraidPool => "**braid**, warm_pool = \"auto\"",
            Stack::BraidKernelWindow => "braid, warm_pool = \"auto\", initial_window = 0",
            Stack::BraidNoPool => "braid, warm_pool = \"off\"",
            Stack::SsRust => "shadowsocks-rust 1.25 + kernel MPTCP",
            Stack::Raw => "raw kernel MPTCP from the gateway, no proxy",
        }
    }
}

/// One stack's fetches in one round, per size: times, and failures.
#[derive(Debug, Default)]
struct Fetches {
    by_size: Vec<(Vec<Fetched>, usize)>,
    /// The pool's hits and misses over the phase (braid).
    pool: Option<(u64, u64)>,
    mem: (Option<u64>, Option<u64>),
}

/// The warm pool's idle cost, measured over `secs`.
#[derive(Debug, Clone)]
struct Idle {
    secs: u64,
    held: u64,
    opened: u64,
    /// Bytes (rx + tx) per uplink, in config order.
    bytes: Vec<(String, u64)>,
}

fn median(v: &mut [f64]) -> Option<f64> {
    v.sort_by(|a, b| a.total_cmp(b));
    (!v.is_empty()).then(|| v[v.len() / 2])
}

/// The gateway's status document (its API on loopback in gw).
fn gateway_status(h: &Harness) -> Result<serde_json::Value, HarnessError> {
    let addr: SocketAddr = "127.0.0.1:9090".parse().expect("address");
    h.lab
        .in_netns(Role::Gw, || http::status(addr))?
        .map_err(|e| HarnessError::Io {
            what: "reading the gateway's status".into(),
            source: std::io::Error::other(e),
        })
}

/// Waits until the gateway's pool holds a warm connection (the pool fills in the background).
pub(super) fn wait_warm(h: &Harness) -> Result<(), HarnessError> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = gateway_status(h)?;
        if s["warm_pool"]["warm"].as_u64().unwrap_or(0) >= 1 {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(HarnessError::Io {
                what: "waiting for a warm pool connection".into(),
                source: std::io::Error::other(format!("last status: {}", s["warm_pool"])),
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn pool_counts(s: &serde_json::Value) -> (u64, u64, u64, u64) {
    let p = &s["warm_pool"];
    let n = |k: &str| p[k].as_u64().unwrap_or(0);
    (n("hits"), n("misses"), n("opened"), n("idle"))
}

/// Fetches every size `count` times from `role` (over MPTCP with `mptcp`), `gap` apart, after
/// one uncounted fetch.
fn fetch_all(
    h: &Harness,
    role: Role,
    mptcp: bool,
    args: &FetchArgs,
) -> Result<Vec<(Vec<Fetched>, usize)>, HarnessError> {
    let (count, samples) = (args.count, args.samples);
    let gap = Duration::from_millis(args.gap_ms);
    let target = SocketAddr::new(Lab::SRV.into(), HTTP_PORT);
    Ok(h.lab.in_netns(role, move || {
        let _ = http::fetch(target, SIZES[0], FETCH_LIMIT, mptcp);
        SIZES
            .iter()
            .map(|&size| {
                let (mut ok, mut failed) = (Vec::new(), 0);
                for _ in 0..count {
                    std::thread::sleep(gap);
                    match http::fetch(target, size, FETCH_LIMIT, mptcp) {
                        Ok(f) => {
                            if samples {
                                eprintln!(
                                    "fetch {size} B: first byte {:.1} ms, total {:.1} ms",
                                    f.first_byte_ms, f.total_ms
                                );
                            }
                            ok.push(f)
                        }
                        Err(e) => {
                            eprintln!("fetch of {size} B failed: {e}");
                            failed += 1;
                        }
                    }
                }
                (ok, failed)
            })
            .collect()
    })?)
}

/// Bytes each uplink carried (gw side, rx + tx) and the pool's counters over `secs` of no LAN
/// traffic.
fn idle_cost(h: &Harness, secs: u64) -> Result<Idle, HarnessError> {
    let names: Vec<String> = h.lab.uplinks().iter().map(|u| u.name.clone()).collect();
    let before: Vec<_> = names
        .iter()
        .map(|n| h.lab.uplink_bytes(n))
        .collect::<Result<_, _>>()?;
    let (_, _, opened0, _) = pool_counts(&gateway_status(h)?);
    std::thread::sleep(Duration::from_secs(secs));
    let (_, _, opened1, held) = pool_counts(&gateway_status(h)?);
    let mut bytes = Vec::new();
    for (n, b0) in names.iter().zip(before) {
        let d = h.lab.uplink_bytes(n)?.since(b0);
        bytes.push((n.clone(), d.rx + d.tx));
    }
    Ok(Idle {
        secs,
        held,
        opened: opened1.saturating_sub(opened0),
        bytes,
    })
}

/// One phase: `stack` set up, fetched through, (idle cost measured,) torn down.
fn phase(
    h: &mut Harness,
    stack: Stack,
    args: &FetchArgs,
    idle: Option<u64>,
) -> Result<(Fetches, Option<Idle>), HarnessError> {
    let mem0 = tcp_mem_pages();
    let mut cost = None;
    let (by_size, pool) = match stack {
        Stack::BraidPool | Stack::BraidKernelWindow | Stack::BraidNoPool => {
            let pool = if stack == Stack::BraidNoPool {
                "off"
            } else {
                "auto"
            };
            let server = if stack == Stack::BraidKernelWindow {
                "initial_window = 0"
            } else {
                ""
            };
            super::throughput::clear_kernel_policy(&h.lab)?;
            h.start_server(server)?;
            h.start_gateway_with(
                &[("wifi", false), ("5g", args.backup_5g)],
                &format!("fast_open = \"off\"\nwarm_pool = \"{pool}\""),
            )?;
            h.wait_uplinks_up(&["wifi", "5g"], Duration::from_secs(10))?;
            if pool == "auto" {
                wait_warm(h)?;
            }
            let (hits0, misses0, _, _) = pool_counts(&gateway_status(h)?);
            let r = fetch_all(h, Role::Lan, false, args);
            let (hits1, misses1, _, _) = pool_counts(&gateway_status(h)?);
            if let (Ok(_), Some(secs)) = (&r, idle) {
                eprintln!("idle cost, warm_pool = \"{pool}\", {secs} s…");
                cost = Some(idle_cost(h, secs)?);
            }
            h.stop_gateway()?;
            h.stop_server()?;
            (r?, Some((hits1 - hits0, misses1 - misses0)))
        }
        Stack::SsRust => {
            let dir = args
                .ssrust
                .as_deref()
                .unwrap_or(Path::new("/opt/ssrust/bin"));
            h.lab.kernel_mptcp_policy()?;
            let s = super::ssrust::start(h, dir)?;
            let r = fetch_all(h, Role::Lan, false, args);
            s.stop(h);
            (r?, None)
        }
        Stack::Raw => {
            h.lab.kernel_mptcp_policy()?;
            (fetch_all(h, Role::Gw, true, args)?, None)
        }
    };
    Ok((
        Fetches {
            by_size,
            pool,
            mem: (mem0, tcp_mem_pages()),
        },
        cost,
    ))
}

/// Runs the benchmark and returns Markdown.
pub fn fetch(args: &FetchArgs, exe: &Path) -> Result<String, HarnessError> {
    let mut h = Harness::new("bfetch", crate::demo::demo_uplinks(), exe)?;
    let listener = h.lab.in_netns(Role::Srv, || {
        std::net::TcpListener::bind(SocketAddr::new(Lab::SRV.into(), HTTP_PORT))
    })?;
    let _server = HttpServer::start(listener.map_err(|source| HarnessError::Io {
        what: format!("HTTP server on {}:{HTTP_PORT} in srv", Lab::SRV),
        source,
    })?);
    let mut stacks = vec![
        Stack::BraidPool,
        Stack::BraidKernelWindow,
        Stack::BraidNoPool,
        Stack::Raw,
    ];
    if args.ssrust.is_some() {
        stacks.insert(1, Stack::SsRust);
    }
    let mut results: Vec<(Stack, usize, Fetches)> = Vec::new();
    let mut idle: Vec<(Stack, Idle)> = Vec::new();
    for r in 0..args.rounds.max(1) {
        let mut order = stacks.clone();
        order.rotate_left(r % stacks.len());
        for stack in order {
            eprintln!("fetch: round {}, {}…", r + 1, stack.name());
            // The idle cost is the pool's, the same with either window.
            let braid = matches!(stack, Stack::BraidPool | Stack::BraidNoPool);
            let measure_idle = (r == 0 && braid && args.idle_secs > 0).then_some(args.idle_secs);
            let (f, cost) = phase(&mut h, stack, args, measure_idle)?;
            if let Some(c) = cost {
                idle.push((stack, c));
            }
            results.push((stack, r, f));
        }
    }
    drop(h);
    Ok(report(args, &stacks, &results, &idle))
}

/// "median (round medians a / b)" of `value` over every fetch of `size_at` by `stack`.
fn cell(
    results: &[(Stack, usize, Fetches)],
    stack: Stack,
    size_at: usize,
    value: fn(&Fetched) -> f64,
) -> (String, Option<f64>) {
    let mut all = Vec::new();
    let mut rounds = Vec::new();
    for (_, _, f) in results.iter().filter(|(s, _, _)| *s == stack) {
        let mut v: Vec<f64> = f.by_size[size_at].0.iter().map(value).collect();
        all.extend_from_slice(&v);
        rounds.push(median(&mut v).map_or("–".into(), |m| format!("{m:.1}")));
    }
    let m = median(&mut all);
    (
        format!(
            "{} ({})",
            m.map_or("–".into(), |m| format!("{m:.1}")),
            rounds.join(" / ")
        ),
        m,
    )
}

fn report(
    args: &FetchArgs,
    stacks: &[Stack],
    results: &[(Stack, usize, Fetches)],
    idle: &[(Stack, Idle)],
) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "### HTTP fetches through the capture, fresh LAN connection each (wifi 40 Mbit/s 10 ms + 5g 20 Mbit/s 40 ms; {} fetches per size, stack and round, {} ms apart; {} round(s), stacks in rotated order)\n",
        args.count, args.gap_ms, args.rounds.max(1)
    );
    if args.backup_5g {
        let _ = writeln!(
            md,
            "braid's 5g uplink has `backup = true` (`--backup-5g`): braid's rows use wifi alone until it fails; the other stacks bond as always.\n"
        );
    }
    let _ = writeln!(
        md,
        "Median ms over all fetches (each round's median in brackets).\n"
    );
    let _ = writeln!(
        md,
        "| stack | 100 B: first byte | 100 kB: total | 1 MB: total | 100 kB: first byte | 1 MB: first byte | failures | pool hits / misses |\n|---|---|---|---|---|---|---|---|"
    );
    let first = |f: &Fetched| f.first_byte_ms;
    let total = |f: &Fetched| f.total_ms;
    let mut totals = Vec::new();
    for &stack in stacks {
        let failures: usize = results
            .iter()
            .filter(|(s, _, _)| *s == stack)
            .flat_map(|(_, _, f)| f.by_size.iter().map(|(_, n)| n))
            .sum();
        let pool = results
            .iter()
            .filter(|(s, _, _)| *s == stack)
            .filter_map(|(_, _, f)| f.pool)
            .fold(None, |acc: Option<(u64, u64)>, (h, m)| {
                let (a, b) = acc.unwrap_or((0, 0));
                Some((a + h, b + m))
            });
        let (ttfb, _) = cell(results, stack, 0, first);
        let (k100, k100m) = cell(results, stack, 1, total);
        let (m1, m1m) = cell(results, stack, 2, total);
        let (k100f, _) = cell(results, stack, 1, first);
        let (m1f, _) = cell(results, stack, 2, first);
        let _ = writeln!(
            md,
            "| {} | {ttfb} | {k100} | {m1} | {k100f} | {m1f} | {failures} | {} |",
            stack.name(),
            pool.map_or("–".into(), |(h, m)| format!("{h} / {m}"))
        );
        totals.push((stack, k100m, m1m));
    }
    let of = |s: Stack| totals.iter().find(|t| t.0 == s).copied();
    if let (Some(b), Some(ss)) = (of(Stack::BraidPool), of(Stack::SsRust)) {
        let r = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
            _ => "–".into(),
        };
        let _ = writeln!(
            md,
            "| braid (pool) / shadowsocks-rust, total time | | {} | {} | | | | |",
            r(b.1, ss.1),
            r(b.2, ss.2)
        );
        if let Some(k) = of(Stack::BraidKernelWindow) {
            let _ = writeln!(
                md,
                "| braid (pool, the kernel's initial window) / shadowsocks-rust, total time | | {} | {} | | | | |",
                r(k.1, ss.1),
                r(k.2, ss.2)
            );
        }
    }
    let _ = writeln!(
        md,
        "\nTCP memory (sockstat mem, pages) per phase: {}\n",
        results
            .iter()
            .map(|(s, r, f)| format!(
                "round {} {}: {} → {}",
                r + 1,
                match s {
                    Stack::BraidPool => "braid (pool)",
                    Stack::BraidKernelWindow => "braid (pool, kernel's window)",
                    Stack::BraidNoPool => "braid (no pool)",
                    Stack::SsRust => "shadowsocks-rust",
                    Stack::Raw => "raw",
                },
                f.mem.0.map_or("?".into(), |v| v.to_string()),
                f.mem.1.map_or("?".into(), |v| v.to_string())
            ))
            .collect::<Vec<_>>()
            .join("; ")
    );
    if !idle.is_empty() {
        md += &idle_table(idle);
    }
    md
}

fn idle_table(idle: &[(Stack, Idle)]) -> String {
    let mut md = String::new();
    let names: Vec<String> = idle[0].1.bytes.iter().map(|(n, _)| n.clone()).collect();
    let _ = writeln!(
        md,
        "### The warm pool's idle cost ({} s without LAN traffic; the health probes run in both rows)\n",
        idle[0].1.secs
    );
    let _ = writeln!(
        md,
        "| gateway | idle connections held | pool connections opened per minute | {} |\n|---|---|---|{}",
        names
            .iter()
            .map(|n| format!("{n}: bytes per minute (rx + tx)"))
            .collect::<Vec<_>>()
            .join(" | "),
        "---|".repeat(names.len())
    );
    let per_min = |v: u64, secs: u64| v as f64 * 60.0 / secs.max(1) as f64;
    for (stack, c) in idle {
        let _ = writeln!(
            md,
            "| {} | {} | {:.1} | {} |",
            stack.name(),
            c.held,
            per_min(c.opened, c.secs),
            c.bytes
                .iter()
                .map(|(_, b)| format!("{:.0}", per_min(*b, c.secs)))
                .collect::<Vec<_>>()
                .join(" | ")
        );
    }
    let find = |s: Stack| idle.iter().find(|(x, _)| *x == s).map(|(_, c)| c);
    if let (Some(on), Some(off)) = (find(Stack::BraidPool), find(Stack::BraidNoPool)) {
        let diff: Vec<String> = on
            .bytes
            .iter()
            .zip(&off.bytes)
            .map(|((_, a), (_, b))| format!("{:+.0}", per_min(*a, on.secs) - per_min(*b, off.secs)))
            .collect();
        let _ = writeln!(md, "| the pool's share | | | {} |", diff.join(" | "));
    }
    md.push('\n');
    md
}
