//! `braid lab …`: the subcommands the braid binary gets with its `lab` feature, and [`run`],
//! which carries them out. The braid binary only parses [`LabCommand`] and calls [`run`].

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;

use crate::bench::aggregation::{self, AggregationArgs};
use crate::bench::failover::{self, FailoverArgs};
use crate::bench::fetch::{self, FetchArgs};
use crate::bench::hostile::{self, HostileArgs};
use crate::bench::load::{self, LoadArgs};
use crate::bench::lossy::{self, LossyArgs};
use crate::bench::throughput::{self, ThroughputArgs};
use crate::bench::udp::{self, UdpArgs};
use crate::{demo, harness, traffic};

/// Lab subcommands.
#[derive(Debug, Subcommand)]
pub enum LabCommand {
    /// Build the lab, run the real server and gateway in it, and measure downloads through the
    /// transparent capture over wifi alone, 5g alone and both bonded.
    Demo {
        /// Print the results as JSON.
        #[arg(long)]
        json: bool,
        /// Seconds per measurement.
        #[arg(long, default_value_t = 8)]
        secs: u64,
        /// Namespace name prefix (names are PREFIX-lan, PREFIX-gw, …).
        #[arg(long, default_value = "bdemo")]
        prefix: String,
    },
    /// Benchmarks, side by side in one run (used by bench/*.sh).
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Run COMMAND with setsockopt(TCP_FASTOPEN…) failing with ENOPROTOOPT, as on Linux < 6.2
    /// for MPTCP sockets (fault injection for doctor's TFO check).
    #[command(hide = true)]
    NoTfo {
        /// The command and its arguments.
        #[arg(trailing_var_arg = true, required = true)]
        command: Vec<std::ffi::OsString>,
    },
    /// Traffic tool used inside the lab's namespaces (by the demo, tests and bench/).
    #[command(subcommand, hide = true)]
    Traffic(TrafficCommand),
}

/// Benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Bonded goodput, time to first byte and unshaped throughput; prints Markdown.
    Aggregation(AggregationArgs),
    /// Failover, recovery and stalls per fault, braid beside kernel-only MPTCP; prints Markdown.
    Failover(FailoverArgs),
    /// HTTP fetches through the capture, braid (warm pool on and off) beside shadowsocks-rust,
    /// and the warm pool's idle cost; prints Markdown.
    Fetch(FetchArgs),
    /// Bonded goodput over lossy uplinks per congestion control; prints Markdown.
    Lossy(LossyArgs),
    /// UDP goodput and loss, UDP failover and DNS time, braid beside direct; prints Markdown.
    Udp(UdpArgs),
    /// Connections held per relay and their cost, time to first byte under a flood of
    /// unauthenticated connections, gateway memory, connections per second; prints Markdown.
    Load(LoadArgs),
    /// Unshaped relay throughput and CPU per Gbit (offloads off), braid beside shadowsocks-rust
    /// and raw kernel MPTCP: the last part of `aggregation` alone; prints Markdown.
    Throughput(ThroughputArgs),
    /// An uplink that strips MPTCP, with braid's tunnel and without it; prints Markdown.
    Hostile(HostileArgs),
}

/// Where a traffic client connects, and how.
#[derive(Debug, clap::Args)]
pub struct RouteArgs {
    /// Traffic server.
    #[arg(long)]
    connect: SocketAddr,
    /// Through this SOCKS5 proxy.
    #[arg(long)]
    socks: Option<SocketAddr>,
    /// Source address to bind (selects an uplink by policy routing).
    #[arg(long)]
    bind: Option<std::net::IpAddr>,
    /// Use an MPTCP socket.
    #[arg(long)]
    mptcp: bool,
}

impl RouteArgs {
    fn route(&self) -> traffic::Route {
        traffic::Route {
            target: Some(self.connect),
            socks: self.socks,
            bind: self.bind,
            mptcp: self.mptcp,
        }
    }
}

/// The lab's traffic tool.
#[derive(Debug, Subcommand)]
pub enum TrafficCommand {
    /// Serve downloads, uploads, echo and request/reply.
    Serve {
        /// Listen address.
        #[arg(long)]
        listen: SocketAddr,
    },
    /// Download for --secs and print the steady rate as JSON.
    Get {
        #[command(flatten)]
        route: RouteArgs,
        /// Duration.
        #[arg(long, default_value_t = 8)]
        secs: u64,
    },
    /// Upload for --secs and print the rate as JSON.
    Put {
        #[command(flatten)]
        route: RouteArgs,
        /// Duration.
        #[arg(long, default_value_t = 8)]
        secs: u64,
    },
    /// Send random bytes through echo, compare SHA-256 both ways, print JSON; exit 1 on mismatch.
    Echo {
        #[command(flatten)]
        route: RouteArgs,
        /// Bytes to send.
        #[arg(long, default_value_t = 20_000_000)]
        bytes: u64,
    },
    /// Download a checked stream for --secs, sampling goodput; print JSON; exit 1 on any error.
    Stream {
        #[command(flatten)]
        route: RouteArgs,
        /// Duration.
        #[arg(long, default_value_t = 10)]
        secs: u64,
        /// Sampling interval in ms.
        #[arg(long, default_value_t = 100)]
        sample_ms: u64,
    },
    /// Send COUNT numbered, hashed UDP datagrams to the echo server, paced at PPS; check every
    /// echo; print JSON (lost each way, corrupted, duplicated, longest gap); exit 1 on any loss.
    Dgram {
        /// The traffic server (its UDP echo listens on the same port).
        #[arg(long)]
        connect: SocketAddr,
        /// Datagrams.
        #[arg(long, default_value_t = 1000)]
        count: u32,
        /// Payload bytes per datagram.
        #[arg(long, default_value_t = 1200)]
        size: u16,
        /// Datagrams per second.
        #[arg(long, default_value_t = 500)]
        pps: u32,
        /// Milliseconds to wait for late echoes after the last datagram.
        #[arg(long, default_value_t = 1000)]
        linger_ms: u64,
        /// Ask the server for COUNT datagrams and send nothing more once they flow (a session
        /// that only receives, as a QUIC download does).
        #[arg(long)]
        download: bool,
    },
    /// Look NAME up COUNT times at a DNS server over UDP, each from a fresh port; print the
    /// answers and times as JSON; exit 1 if any lookup failed.
    Dns {
        /// The DNS server.
        #[arg(long)]
        server: SocketAddr,
        /// The name.
        #[arg(long)]
        name: String,
        /// Ask for AAAA instead of A.
        #[arg(long)]
        v6: bool,
        /// Lookups.
        #[arg(long, default_value_t = 1)]
        count: usize,
        /// Per-lookup timeout in ms.
        #[arg(long, default_value_t = 2000)]
        timeout_ms: u64,
    },
    /// Serve checked QUIC transfers on LISTEN (UDP).
    QuicServe {
        /// Listen address.
        #[arg(long)]
        listen: SocketAddr,
    },
    /// Download BYTES over QUIC, checking every byte and sampling goodput; print JSON; exit 1 on
    /// any error (a QUIC connection error included).
    QuicGet {
        /// The QUIC server.
        #[arg(long)]
        connect: SocketAddr,
        /// Bytes to download.
        #[arg(long, default_value_t = 20_000_000)]
        bytes: u64,
        /// Sampling interval in ms.
        #[arg(long, default_value_t = 100)]
        sample_ms: u64,
    },
    /// Time the first reply byte of COUNT fresh request/replies; print JSON.
    Rr {
        #[command(flatten)]
        route: RouteArgs,
        /// Tries.
        #[arg(long, default_value_t = 20)]
        count: usize,
        /// Request and reply size.
        #[arg(long, default_value_t = 100)]
        size: u64,
        /// Per-try timeout in seconds.
        #[arg(long, default_value_t = 10)]
        timeout: u64,
    },
    /// Open COUNT connections (a byte each way through echo, or with --junk nothing at all),
    /// print JSON once they are open, keep them until stdin closes.
    Hold {
        /// Where to connect.
        #[arg(long)]
        connect: SocketAddr,
        /// Connections to hold.
        #[arg(long)]
        count: usize,
        /// Source addresses to bind, in turn.
        #[arg(long, value_delimiter = ',')]
        from: Vec<std::net::IpAddr>,
        /// Send nothing (an unauthenticated client) instead of the echo exchange.
        #[arg(long)]
        junk: bool,
    },
    /// Short request/replies back to back from WORKERS clients for SECS; print JSON.
    Rate {
        /// Traffic server.
        #[arg(long)]
        connect: SocketAddr,
        /// Clients at once.
        #[arg(long, default_value_t = 16)]
        workers: usize,
        /// Duration.
        #[arg(long, default_value_t = 10)]
        secs: u64,
        /// Request and reply size.
        #[arg(long, default_value_t = 100)]
        size: u64,
    },
    /// A bare relay for the throughput bench's ceiling: every accepted stream passed both ways
    /// to CONNECT, no header, no crypto (lab only: it trusts whoever connects).
    Relay {
        /// Listen address.
        #[arg(long)]
        listen: SocketAddr,
        /// Where every accepted stream goes.
        #[arg(long)]
        connect: SocketAddr,
        /// Accept MPTCP (and plain TCP) on the listener.
        #[arg(long)]
        mptcp_in: bool,
        /// Connect over MPTCP.
        #[arg(long)]
        mptcp_out: bool,
        /// How the bytes are moved.
        #[arg(long, value_enum, default_value_t = crate::bare_relay::Mode::Copy)]
        mode: crate::bare_relay::Mode,
    },
}

/// Runs a lab subcommand.
pub fn run(cmd: LabCommand) -> ExitCode {
    match cmd {
        LabCommand::Demo { json, secs, prefix } => demo::main(&prefix, secs, json),
        LabCommand::Traffic(t) => traffic_main(t),
        LabCommand::Bench(b) => bench_main(b),
        LabCommand::NoTfo { command } => {
            let e = crate::seccomp::exec_without_tfo(&command);
            eprintln!("braid lab no-tfo: {e}");
            ExitCode::from(2)
        }
    }
}

fn bench_main(b: BenchCommand) -> ExitCode {
    if !harness::is_root() {
        eprintln!("braid lab bench: needs root (it creates network namespaces)");
        return ExitCode::from(2);
    }
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("braid: {e}");
            return ExitCode::from(1);
        }
    };
    let r = match b {
        BenchCommand::Aggregation(a) => aggregation::aggregation(&a, &exe),
        BenchCommand::Failover(a) => failover::failover(&a, &exe),
        BenchCommand::Fetch(a) => fetch::fetch(&a, &exe),
        BenchCommand::Lossy(a) => lossy::lossy(&a, &exe),
        BenchCommand::Udp(a) => udp::udp(&a, &exe),
        BenchCommand::Load(a) => load::load(&a, &exe),
        BenchCommand::Throughput(a) => throughput::throughput(&a, &exe),
        BenchCommand::Hostile(a) => hostile::hostile(&a, &exe),
    };
    match r {
        Ok(md) => {
            println!("{md}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("braid lab bench failed: {e}");
            ExitCode::from(1)
        }
    }
}

fn traffic_main(t: TrafficCommand) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("braid: {e}");
            return ExitCode::from(1);
        }
    };
    let r: std::io::Result<(String, bool)> = rt.block_on(async move {
        let json = |v: &dyn erased::Json| v.to_json();
        Ok(match t {
            TrafficCommand::Serve { listen } => {
                traffic::serve(traffic::listen(listen)?).await?;
                (String::new(), true)
            }
            TrafficCommand::Get { route, secs } => {
                (json(&traffic::download(route.route(), secs).await?), true)
            }
            TrafficCommand::Put { route, secs } => {
                (json(&traffic::upload(route.route(), secs).await?), true)
            }
            TrafficCommand::Echo { route, bytes } => {
                let c = traffic::echo(route.route(), bytes).await?;
                (json(&c), c.ok)
            }
            TrafficCommand::Stream {
                route,
                secs,
                sample_ms,
            } => {
                let r = traffic::stream(route.route(), secs, sample_ms).await;
                (json(&r), r.ok)
            }
            TrafficCommand::Dgram {
                connect,
                count,
                size,
                pps,
                linger_ms,
                download,
            } => {
                let spec = crate::datagrams::RunSpec {
                    count,
                    size,
                    pps,
                    linger: Duration::from_millis(linger_ms),
                };
                let r = if download {
                    crate::datagrams::download(connect, spec).await?
                } else {
                    crate::datagrams::run(connect, spec).await?
                };
                (json(&r), r.ok)
            }
            TrafficCommand::Dns {
                server,
                name,
                v6,
                count,
                timeout_ms,
            } => {
                let timeout = Duration::from_millis(timeout_ms);
                let r = crate::dns::lookup(server, &name, v6, count, timeout).await?;
                (json(&r), r.failures == 0)
            }
            TrafficCommand::QuicServe { listen } => {
                crate::quic::serve(listen).await?;
                (String::new(), true)
            }
            TrafficCommand::QuicGet {
                connect,
                bytes,
                sample_ms,
            } => {
                let r = crate::quic::get(connect, bytes, sample_ms).await;
                (json(&r), r.ok)
            }
            TrafficCommand::Rr {
                route,
                count,
                size,
                timeout,
            } => {
                let r = traffic::request_reply(
                    route.route(),
                    count,
                    size,
                    Duration::from_secs(timeout),
                )
                .await;
                (json(&r), r.failures == 0)
            }
            TrafficCommand::Hold {
                connect,
                count,
                from,
                junk,
            } => {
                load::hold(connect, count, &from, junk).await?;
                (String::new(), true)
            }
            TrafficCommand::Rate {
                connect,
                workers,
                secs,
                size,
            } => (json(&load::rate(connect, workers, secs, size).await), true),
            TrafficCommand::Relay {
                listen,
                connect,
                mptcp_in,
                mptcp_out,
                mode,
            } => {
                crate::bare_relay::run(listen, connect, mptcp_in, mptcp_out, mode).await?;
                (String::new(), true)
            }
        })
    });
    match r {
        Ok((out, ok)) => {
            // `hold` prints its own line, and its reader may be gone by the time it ends.
            if !out.is_empty() {
                println!("{out}");
            }
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("braid lab traffic: {e}");
            ExitCode::from(1)
        }
    }
}

mod erased {
    /// Object-safe JSON printing for the traffic results.
    pub trait Json {
        fn to_json(&self) -> String;
    }
    impl<T: serde::Serialize> Json for T {
        fn to_json(&self) -> String {
            serde_json::to_string(self).unwrap_or_default()
        }
    }
}
