//! The load benchmark's clients, run inside the lab's namespaces as `braid lab traffic hold` and
//! `braid lab traffic rate` (they need the traffic server's protocol, [`crate::traffic`]).
//!
//! - [`hold`] opens many connections and keeps them: relayed ones pass a byte each way through
//!   the traffic server's echo first; unauthenticated ones send nothing and wait (the
//!   shadowsocks crate refuses at once a first read shorter than its fixed header, so a client
//!   that is to stay pending must not send a partial one). It prints one JSON line ([`Held`]) when all are open, then keeps them
//!   until its standard input closes, so the benchmark can look at the daemons meanwhile.
//! - [`rate`] opens short request/reply connections back to back from a few workers for a while
//!   and counts the completed ones ([`Opened`]).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::traffic::op;

/// Connections opened at once while filling up.
const IN_FLIGHT: usize = 200;
/// Time for one connection to open (and pass its byte each way).
const OPEN_TIMEOUT: Duration = Duration::from_secs(20);

/// What [`hold`] opened.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Held {
    /// Connections open (and, for relayed ones, through which a byte went each way).
    pub open: usize,
    /// Connections that failed or timed out.
    pub failed: usize,
    /// The first failure, if any.
    pub first_error: Option<String>,
    /// Time to open them all.
    pub secs: f64,
}

async fn connect(target: SocketAddr, source: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let sock = if target.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = source {
        sock.bind(SocketAddr::new(ip, 0))?;
    }
    let s = sock.connect(target).await?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// One held connection: an echo of one byte each way, or (`junk`) nothing at all.
async fn open_one(
    target: SocketAddr,
    source: Option<IpAddr>,
    junk: bool,
) -> std::io::Result<TcpStream> {
    let mut s = connect(target, source).await?;
    if junk {
        // The relay waits for a request that never comes.
        return Ok(s);
    }
    let mut msg = vec![op::ECHO];
    msg.extend_from_slice(&0u64.to_be_bytes());
    msg.push(b'x');
    s.write_all(&msg).await?;
    let mut back = [0u8; 1];
    s.read_exact(&mut back).await?;
    Ok(s)
}

/// Opens `count` connections to `target` (from `sources` in turn, if given), prints [`Held`]
/// as one JSON line, and keeps them until standard input closes.
pub async fn hold(
    target: SocketAddr,
    count: usize,
    sources: &[IpAddr],
    junk: bool,
) -> std::io::Result<()> {
    let start = Instant::now();
    let gate = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        let source = (!sources.is_empty()).then(|| sources[i % sources.len()]);
        let permit = gate
            .clone()
            .acquire_owned()
            .await
            .map_err(std::io::Error::other)?;
        tasks.push(tokio::spawn(async move {
            let r = tokio::time::timeout(OPEN_TIMEOUT, open_one(target, source, junk)).await;
            drop(permit);
            match r {
                Ok(r) => r,
                Err(_) => Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "no answer in time",
                )),
            }
        }));
    }
    let mut open = Vec::with_capacity(count);
    let mut failed = 0;
    let mut first_error = None;
    for t in tasks {
        match t.await.map_err(std::io::Error::other)? {
            Ok(s) => open.push(s),
            Err(e) => {
                failed += 1;
                first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    let held = Held {
        open: open.len(),
        failed,
        first_error,
        secs: start.elapsed().as_secs_f64(),
    };
    println!("{}", serde_json::to_string(&held).unwrap_or_default());
    // Held until the benchmark is done looking: it closes our standard input.
    let mut stdin = tokio::io::stdin();
    let mut sink = [0u8; 64];
    while stdin.read(&mut sink).await? > 0 {}
    drop(open);
    Ok(())
}

/// What [`rate`] measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Opened {
    /// Request/replies completed.
    pub completed: u64,
    /// Those that failed.
    pub failed: u64,
    /// Seconds measured.
    pub secs: f64,
    /// Completed per second.
    pub per_sec: f64,
}

/// One short connection: `size` bytes of request, the same back, close.
async fn request_reply(target: SocketAddr, size: u64) -> std::io::Result<()> {
    let mut s = connect(target, None).await?;
    let mut msg = vec![op::RR];
    msg.extend_from_slice(&size.to_be_bytes());
    msg.extend(std::iter::repeat_n(b'x', size as usize));
    s.write_all(&msg).await?;
    let mut back = vec![0u8; size as usize];
    s.read_exact(&mut back).await?;
    Ok(())
}

/// `workers` loops of short request/replies of `size` bytes to `target` for `secs` seconds.
pub async fn rate(target: SocketAddr, workers: usize, secs: u64, size: u64) -> Opened {
    let (done, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let (done, failed) = (done.clone(), failed.clone());
            tokio::spawn(async move {
                while Instant::now() < end {
                    let r =
                        tokio::time::timeout(Duration::from_secs(10), request_reply(target, size))
                            .await;
                    let counter = if matches!(r, Ok(Ok(()))) {
                        &done
                    } else {
                        &failed
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    let secs = start.elapsed().as_secs_f64();
    let completed = done.load(Ordering::Relaxed);
    Opened {
        completed,
        failed: failed.load(Ordering::Relaxed),
        secs,
        per_sec: completed as f64 / secs,
    }
}
