//! `braid lab …`: the subcommands the braid binary gets with its `lab` feature, and [`run`],
//! which carries them out. The braid binary only parses [`LabCommand`] and calls [`run`].

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;

use crate::bench::aggregation::{self, AggregationArgs};
use crate::bench::failover::{self, FailoverArgs};
use crate::bench::hostile::{self, HostileArgs};
use crate::bench::lossy::{self, LossyArgs};
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
    /// Bonded goodput over lossy uplinks per congestion control; prints Markdown.
    Lossy(LossyArgs),
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
        BenchCommand::Lossy(a) => lossy::lossy(&a, &exe),
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
        })
    });
    match r {
        Ok((out, ok)) => {
            println!("{out}");
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
