//! Health probes: one plain-TCP control stream per uplink to the relay, bound to that uplink,
//! with a ping every interval.
//!
//! The probe measures the path that matters — this uplink to the relay — not a public resolver,
//! and the pongs are authenticated by the Shadowsocks-2022 key, so a captive portal or a DNS
//! hijack cannot fake health. Every interval produces a `Sent` event whether or not a stream is
//! connected, so a path that cannot even connect accumulates losses like one that drops pings.
//! A stream that stays silent for a second is replaced by a fresh one: after a silent blackhole
//! the old connection sits in retransmission backoff, and a new SYN finds the path as soon as it
//! is back.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use braid_proto::control::{ControlRequest, ControlResponse};
use tokio::io::{ReadHalf, WriteHalf};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::control::{Connection, FrameReader, FrameWriter};
use crate::gateway::dialer::{Dialer, RelayStream};

/// Where to probe from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeSource {
    /// Uplink address.
    pub addr: IpAddr,
    /// Uplink interface.
    pub iface: braid_sys::link::IfName,
}

/// What a probe reports to the uplink manager.
#[derive(Debug, Clone, Copy)]
pub enum ProbeEvent {
    /// Ping `seq` went out (or would have, had a stream been up).
    Sent {
        uplink: usize,
        seq: u64,
        at: Instant,
    },
    /// The relay answered ping `seq`.
    Pong {
        uplink: usize,
        seq: u64,
        at: Instant,
    },
    /// The relay closes control streams without answering: it is not a braid relay.
    Unsupported { uplink: usize },
}

/// Replace a connected stream that has not answered for this long.
const SILENCE_LIMIT: Duration = Duration::from_secs(1);
/// Spacing of the first pings on a fresh stream.
const FAST_INTERVAL: Duration = Duration::from_millis(50);
/// How many pings go out at that spacing.
const FAST_START_PINGS: u32 = 4;
/// How long one connect attempt may take (several run in parallel).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Connect attempts in flight at most.
const MAX_CONNECTING: usize = 4;
/// Streams that the relay closed without a single pong before we conclude it is not braid.
const STOCK_AFTER: u32 = 3;

/// A connected probe stream: its write half, and the task reading pongs from the read half,
/// which is stopped when the stream is dropped so that a stale connection does not linger.
struct Conn {
    writer: FrameWriter<WriteHalf<RelayStream>>,
    reader: tokio::task::JoinHandle<()>,
    generation: u64,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Runs the probe of uplink `uplink` until the manager drops its channels.
pub async fn run(
    uplink: usize,
    dialer: Arc<Dialer>,
    mut source: watch::Receiver<Option<ProbeSource>>,
    tx: mpsc::Sender<ProbeEvent>,
    interval: Duration,
) {
    let mut next_ping = Instant::now();
    // Pings left to send at FAST_INTERVAL: a fresh stream proves itself quickly, so a repaired
    // uplink is back in a few hundred milliseconds instead of `recover_after × interval`.
    let mut fast_left = 0u32;
    let mut seq = 0u64;
    let mut conn: Option<Conn> = None;
    let mut generation = 0u64;
    // When the current stream last answered, in ms since `epoch`, written by its reader task.
    let epoch = Instant::now();
    let last_pong = Arc::new(AtomicU64::new(0));
    // Connect attempts in flight. While no stream answers, a fresh attempt starts every interval
    // (up to MAX_CONNECTING): a SYN lost to a dead path is retried by the kernel only after 1 s,
    // but a new SYN finds a repaired path within one interval.
    let mut connecting: Vec<tokio::task::JoinHandle<()>> = Vec::new();
    let (conn_tx, mut conn_rx) = mpsc::channel::<std::io::Result<RelayStream>>(MAX_CONNECTING);
    let (ended_tx, mut ended_rx) = mpsc::channel::<(u64, bool)>(4);
    let mut closed_without_pong = 0u32;
    let mut connect_failed = false;
    loop {
        tokio::select! {
            changed = source.changed() => {
                if changed.is_err() {
                    return;
                }
                // New address or interface, or the link just came back: start over on a fresh
                // stream, at once.
                conn = None;
                for c in connecting.drain(..) {
                    c.abort();
                }
                if let Some(src) = source.borrow().clone() {
                    connecting.push(attempt(&dialer, src, &conn_tx));
                }
            }
            Some(result) = conn_rx.recv() => {
                connecting.retain(|c| !c.is_finished());
                match result {
                    Ok(stream) if conn.is_none() => {
                        for c in connecting.drain(..) {
                            c.abort();
                        }
                        connect_failed = false;
                        let (r, writer) = Connection::new(stream).split();
                        generation += 1;
                        last_pong.store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
                        let reader = tokio::spawn(read_pongs(uplink, r, tx.clone(), ended_tx.clone(), generation, epoch, last_pong.clone()));
                        conn = Some(Conn { writer, reader, generation });
                        fast_left = FAST_START_PINGS;
                        next_ping = Instant::now();
                    }
                    Ok(_) => {}
                    Err(_) => connect_failed = true,
                }
            }
            Some((gen, answered)) = ended_rx.recv() => {
                if conn.as_ref().is_some_and(|c| c.generation == gen) {
                    conn = None;
                }
                if answered {
                    closed_without_pong = 0;
                } else {
                    closed_without_pong += 1;
                    if closed_without_pong >= STOCK_AFTER {
                        let _ = tx.send(ProbeEvent::Unsupported { uplink }).await;
                        return;
                    }
                }
            }
            _ = tokio::time::sleep_until(next_ping) => {
                let now = Instant::now();
                next_ping = now + if fast_left > 0 {
                    fast_left -= 1;
                    FAST_INTERVAL
                } else {
                    interval
                };
                // A ping counts once a stream exists or a connect has failed; not while the very
                // first connect is still in progress (that is start-up, not loss).
                if conn.is_some() || connect_failed {
                    seq += 1;
                    if tx.send(ProbeEvent::Sent { uplink, seq, at: now }).await.is_err() {
                        return;
                    }
                }
                let answered_at = epoch + Duration::from_millis(last_pong.load(Ordering::Relaxed));
                if conn.is_some() && now.saturating_duration_since(answered_at) > SILENCE_LIMIT {
                    conn = None;
                }
                if let Some(c) = conn.as_mut() {
                    if c.writer.send(&ControlRequest::Ping { seq }).await.is_err() {
                        conn = None;
                    }
                    continue;
                }
                connecting.retain(|c| !c.is_finished());
                if connecting.len() < MAX_CONNECTING {
                    let Some(src) = source.borrow().clone() else { continue };
                    connecting.push(attempt(&dialer, src, &conn_tx));
                }
            }
        }
    }
}

/// Starts one connect attempt that reports into `done`.
fn attempt(
    dialer: &Arc<Dialer>,
    src: ProbeSource,
    done: &mpsc::Sender<std::io::Result<RelayStream>>,
) -> tokio::task::JoinHandle<()> {
    let d = dialer.clone();
    let done = done.clone();
    tokio::spawn(async move {
        let r = d.open_probe(src.addr, &src.iface, CONNECT_TIMEOUT).await;
        let _ = done.send(r).await;
    })
}

/// Reads pongs until the stream ends. A frame that cannot be read ends the stream at once (the
/// relay speaks another protocol, or the stream is corrupt): the probe then reconnects.
async fn read_pongs(
    uplink: usize,
    mut r: FrameReader<ReadHalf<RelayStream>>,
    tx: mpsc::Sender<ProbeEvent>,
    ended: mpsc::Sender<(u64, bool)>,
    generation: u64,
    epoch: Instant,
    last_pong: Arc<AtomicU64>,
) {
    let mut answered = false;
    loop {
        match r.recv::<ControlResponse>().await {
            Ok(Some(ControlResponse::Pong { seq })) => {
                answered = true;
                last_pong.store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
                let _ = tx
                    .send(ProbeEvent::Pong {
                        uplink,
                        seq,
                        at: Instant::now(),
                    })
                    .await;
            }
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(e) => {
                tracing::debug!("probe of uplink #{uplink}: stream ended: {e}");
                break;
            }
        }
    }
    let _ = ended.send((generation, answered)).await;
}
