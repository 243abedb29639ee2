//! The traffic tool's UDP side: an echo server on the traffic server's port, and a client that
//! sends a paced burst of numbered datagrams, each with its own hash, and checks every one that
//! comes back (lost, corrupted, duplicated, reordered), with the server's count telling the
//! losses of each direction apart.
//!
//! Datagrams (lab only):
//! - `BRDG run:u64 seq:u32 len:u16 payload[len] sha256(all before)[..16]`: counted per run if
//!   its hash is right, then echoed unchanged.
//! - `BRST run:u64`: answered with `BRST run:u64 count:u64`, the run's datagrams received.
//! - `BRDL run:u64 count:u32 size:u16 pps:u32`: answered with `count` data datagrams of that
//!   run, paced at `pps`, and nothing else: a session that only receives after its first
//!   datagram, as a QUIC download or a stream does (a repeated request for a run is ignored).
//! - `whoami`: answered with the source address as the server saw it (text).
//! - anything else: echoed unchanged.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::net::UdpSocket;

const DATA: &[u8; 4] = b"BRDG";
const STATS: &[u8; 4] = b"BRST";
const DOWNLOAD: &[u8; 4] = b"BRDL";
/// Magic, run, count, size, pps.
const DOWNLOAD_LEN: usize = 4 + 8 + 4 + 2 + 4;
/// Downloads the server sends at once, at most.
const DOWNLOADS_MAX: usize = 8;
/// The most datagrams and the highest rate one download may ask for.
const DOWNLOAD_COUNT_MAX: u32 = 1_000_000;
const DOWNLOAD_PPS_MAX: u32 = 100_000;
const WHOAMI: &[u8] = b"whoami";
/// Magic, run, seq, length.
const HEADER: usize = 4 + 8 + 4 + 2;
const HASH: usize = 16;
/// Runs whose counts the server keeps.
const RUNS_KEPT: usize = 64;

/// Serves echo, counts and `whoami` on `socket` forever.
pub async fn serve(socket: UdpSocket) -> std::io::Result<()> {
    let socket = Arc::new(socket);
    let mut buf = vec![0u8; 65_535];
    let mut counts: HashMap<u64, u64> = HashMap::new();
    let mut order: VecDeque<u64> = VecDeque::new();
    let mut downloads: VecDeque<u64> = VecDeque::new();
    let sending = Arc::new(AtomicUsize::new(0));
    loop {
        let (n, from) = socket.recv_from(&mut buf).await?;
        let d = &buf[..n];
        if n == DOWNLOAD_LEN && d.starts_with(DOWNLOAD) {
            let run = u64::from_be_bytes(d[4..12].try_into().unwrap_or_default());
            let count = u32::from_be_bytes(d[12..16].try_into().unwrap_or_default());
            let size = u16::from_be_bytes([d[16], d[17]]);
            let pps = u32::from_be_bytes(d[18..22].try_into().unwrap_or_default());
            let fits = count <= DOWNLOAD_COUNT_MAX && (1..=DOWNLOAD_PPS_MAX).contains(&pps);
            if fits && !downloads.contains(&run) && sending.load(Ordering::Relaxed) < DOWNLOADS_MAX
            {
                if downloads.len() == RUNS_KEPT {
                    downloads.pop_front();
                }
                downloads.push_back(run);
                sending.fetch_add(1, Ordering::Relaxed);
                let (socket, sending) = (socket.clone(), sending.clone());
                tokio::spawn(async move {
                    send_download(&socket, from, run, count, size, pps).await;
                    sending.fetch_sub(1, Ordering::Relaxed);
                });
            }
            continue;
        }
        let answer: Vec<u8> = if let Some((run, _)) = parse(d) {
            if !counts.contains_key(&run) {
                if order.len() == RUNS_KEPT {
                    if let Some(old) = order.pop_front() {
                        counts.remove(&old);
                    }
                }
                order.push_back(run);
            }
            *counts.entry(run).or_default() += 1;
            d.to_vec()
        } else if n == 12 && d.starts_with(STATS) {
            let run = u64::from_be_bytes(d[4..12].try_into().unwrap_or_default());
            let mut a = d.to_vec();
            a.extend_from_slice(&counts.get(&run).copied().unwrap_or(0).to_be_bytes());
            a
        } else if d == WHOAMI {
            from.to_string().into_bytes()
        } else {
            d.to_vec()
        };
        let _ = socket.send_to(&answer, from).await;
    }
}

/// Sends `count` datagrams of `run` to `to`, paced at `pps`.
async fn send_download(
    socket: &UdpSocket,
    to: SocketAddr,
    run: u64,
    count: u32,
    size: u16,
    pps: u32,
) {
    let interval = Duration::from_secs_f64(1.0 / f64::from(pps));
    let start = tokio::time::Instant::now();
    for seq in 0..count {
        tokio::time::sleep_until(start + interval * seq).await;
        // A full buffer or an unreachable client loses this one, as on any UDP path.
        let _ = socket.send_to(&datagram(run, seq, size), to).await;
    }
}

/// `(run, seq)` of a well-formed data datagram with a right hash.
fn parse(d: &[u8]) -> Option<(u64, u32)> {
    if d.len() < HEADER + HASH || !d.starts_with(DATA) {
        return None;
    }
    let len = u16::from_be_bytes([d[16], d[17]]) as usize;
    if d.len() != HEADER + len + HASH {
        return None;
    }
    let (body, hash) = d.split_at(HEADER + len);
    if Sha256::digest(body)[..HASH] != *hash {
        return None;
    }
    let run = u64::from_be_bytes(d[4..12].try_into().ok()?);
    let seq = u32::from_be_bytes(d[12..16].try_into().ok()?);
    Some((run, seq))
}

/// Datagram `seq` of `run` with `size` bytes of payload.
fn datagram(run: u64, seq: u32, size: u16) -> Vec<u8> {
    let mut d = Vec::with_capacity(HEADER + size as usize + HASH);
    d.extend_from_slice(DATA);
    d.extend_from_slice(&run.to_be_bytes());
    d.extend_from_slice(&seq.to_be_bytes());
    d.extend_from_slice(&size.to_be_bytes());
    let mut x = run ^ u64::from(seq).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    for _ in 0..size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        d.push(x as u8);
    }
    let hash = Sha256::digest(&d);
    d.extend_from_slice(&hash[..HASH]);
    d
}

/// What a run found.
#[derive(Debug, Clone, Serialize)]
pub struct DatagramRun {
    /// Datagrams sent.
    pub sent: u64,
    /// Distinct datagrams that came back intact.
    pub received: u64,
    /// Sent but never back.
    pub lost: u64,
    /// Came back with a wrong hash or length.
    pub corrupted: u64,
    /// Came back more than once.
    pub duplicates: u64,
    /// Came back after a later one.
    pub reordered: u64,
    /// What the server counted (`None` if it never answered the count request).
    pub server_received: Option<u64>,
    /// Lost on the way there (sent − server count).
    pub lost_up: Option<u64>,
    /// Lost on the way back (server count − received).
    pub lost_down: Option<u64>,
    /// Longest time without any echo while datagrams were due, ms (a failover's gap).
    pub longest_gap_ms: f64,
    /// Seconds the run took.
    pub secs: f64,
    /// Nothing lost, corrupted or duplicated.
    pub ok: bool,
}

/// How to send a run.
#[derive(Debug, Clone, Copy)]
pub struct RunSpec {
    /// Datagrams to send.
    pub count: u32,
    /// Payload bytes each.
    pub size: u16,
    /// Datagrams per second.
    pub pps: u32,
    /// How long to wait for stragglers after the last one.
    pub linger: Duration,
}

/// Sends `spec.count` numbered datagrams to the echo server at `target`, paced at `spec.pps`,
/// and checks what comes back.
pub async fn run(target: SocketAddr, spec: RunSpec) -> std::io::Result<DatagramRun> {
    let socket = client_socket(target).await?;
    let run = random_run()?;
    let interval = Duration::from_secs_f64(1.0 / f64::from(spec.pps.max(1)));
    let start = Instant::now();
    let mut tally = Tally::new(run, start);
    let mut buf = vec![0u8; 65_535];
    let mut next = 0u32;
    let mut done_at: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if next < spec.count && now >= start + interval * next {
            socket.send(&datagram(run, next, spec.size)).await?;
            next += 1;
            if next == spec.count {
                done_at = Some(Instant::now() + spec.linger);
            }
            continue;
        }
        if tally.seen.len() as u32 == spec.count || done_at.is_some_and(|d| now >= d) {
            break;
        }
        let wake = if next < spec.count {
            start + interval * next
        } else {
            done_at.unwrap_or(now)
        };
        let r = tokio::time::timeout_at(wake.into(), socket.recv(&mut buf)).await;
        let Ok(r) = r else { continue };
        let n = r?;
        tally.take(&buf[..n]);
    }
    let secs = start.elapsed().as_secs_f64();
    let server_received = server_count(&socket, run).await;
    Ok(tally.report(u64::from(spec.count), server_received, secs))
}

/// Asks the echo server at `target` for `spec.count` datagrams, paced at `spec.pps`, sends
/// nothing more once they flow, and checks what arrives (`sent` is what was asked for;
/// `longest_gap_ms` counts a stream that stopped for good up to when it should have ended).
pub async fn download(target: SocketAddr, spec: RunSpec) -> std::io::Result<DatagramRun> {
    let socket = client_socket(target).await?;
    let run = random_run()?;
    let mut ask = DOWNLOAD.to_vec();
    ask.extend_from_slice(&run.to_be_bytes());
    ask.extend_from_slice(&spec.count.to_be_bytes());
    ask.extend_from_slice(&spec.size.to_be_bytes());
    ask.extend_from_slice(&spec.pps.max(1).to_be_bytes());
    let length = Duration::from_secs_f64(f64::from(spec.count) / f64::from(spec.pps.max(1)));
    let start = Instant::now();
    let mut tally = Tally::new(run, start);
    let mut buf = vec![0u8; 65_535];
    // The request may be lost: asked again until the first datagram arrives (three tries).
    let mut asked = 0;
    let mut ask_again = start;
    let mut end = start + length + spec.linger;
    loop {
        let now = Instant::now();
        if tally.first.is_none() && now >= ask_again {
            if asked == 3 {
                break;
            }
            socket.send(&ask).await?;
            asked += 1;
            ask_again = now + Duration::from_secs(1);
            end = now + length + spec.linger;
        }
        if tally.seen.len() as u32 == spec.count || now >= end {
            break;
        }
        let wake = if tally.first.is_none() {
            ask_again.min(end)
        } else {
            end
        };
        let Ok(r) = tokio::time::timeout_at(wake.into(), socket.recv(&mut buf)).await else {
            continue;
        };
        let n = r?;
        tally.take(&buf[..n]);
    }
    if let Some(first) = tally.first {
        // A stream that stopped for good: its gap runs to when it should have ended.
        let due = (first + length).min(Instant::now());
        if (tally.seen.len() as u32) < spec.count && due > tally.last {
            tally.longest_gap = tally.longest_gap.max(due - tally.last);
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let mut r = tally.report(u64::from(spec.count), None, secs);
    r.lost_down = Some(r.lost);
    r.lost_up = Some(0);
    Ok(r)
}

/// A socket connected to `target`, with room for a burst that lands while this process waits
/// for the CPU.
async fn client_socket(target: SocketAddr) -> std::io::Result<UdpSocket> {
    let bind: SocketAddr = if target.is_ipv4() {
        "0.0.0.0:0".parse().map_err(std::io::Error::other)?
    } else {
        "[::]:0".parse().map_err(std::io::Error::other)?
    };
    let socket = UdpSocket::bind(bind).await?;
    braid_sys::socket::enlarge_udp_buffers(&socket);
    socket.connect(target).await?;
    Ok(socket)
}

/// A random run id, so runs never mix.
fn random_run() -> std::io::Result<u64> {
    let mut id = [0u8; 8];
    getrandom::fill(&mut id).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(u64::from_ne_bytes(id))
}

/// What arrived of one run.
struct Tally {
    run: u64,
    seen: BTreeSet<u32>,
    corrupted: u64,
    duplicates: u64,
    reordered: u64,
    highest: Option<u32>,
    /// When the first and the latest datagram of the run arrived.
    first: Option<Instant>,
    last: Instant,
    longest_gap: Duration,
}

impl Tally {
    fn new(run: u64, start: Instant) -> Tally {
        Tally {
            run,
            seen: BTreeSet::new(),
            corrupted: 0,
            duplicates: 0,
            reordered: 0,
            highest: None,
            first: None,
            last: start,
            longest_gap: Duration::ZERO,
        }
    }

    /// One datagram that arrived now.
    fn take(&mut self, d: &[u8]) {
        match parse(d) {
            Some((r, seq)) if r == self.run => {
                let now = Instant::now();
                if self.first.is_some() {
                    self.longest_gap = self.longest_gap.max(now - self.last);
                }
                self.first.get_or_insert(now);
                self.last = now;
                if !self.seen.insert(seq) {
                    self.duplicates += 1;
                } else if self.highest.is_some_and(|h| seq < h) {
                    self.reordered += 1;
                }
                self.highest = self.highest.max(Some(seq));
            }
            _ => self.corrupted += 1,
        }
    }

    fn report(&self, sent: u64, server_received: Option<u64>, secs: f64) -> DatagramRun {
        let received = self.seen.len() as u64;
        DatagramRun {
            sent,
            received,
            lost: sent.saturating_sub(received),
            corrupted: self.corrupted,
            duplicates: self.duplicates,
            reordered: self.reordered,
            server_received,
            lost_up: server_received.map(|s| sent.saturating_sub(s)),
            lost_down: server_received.map(|s| s.saturating_sub(received)),
            longest_gap_ms: self.longest_gap.as_secs_f64() * 1000.0,
            secs,
            ok: received == sent && self.corrupted == 0 && self.duplicates == 0,
        }
    }
}

/// Asks the server how many datagrams of `run` it received (three tries).
async fn server_count(socket: &UdpSocket, run: u64) -> Option<u64> {
    let mut ask = STATS.to_vec();
    ask.extend_from_slice(&run.to_be_bytes());
    let mut buf = vec![0u8; 65_535];
    for _ in 0..3 {
        socket.send(&ask).await.ok()?;
        let deadline = Instant::now() + Duration::from_millis(700);
        while let Ok(Ok(n)) = tokio::time::timeout_at(deadline.into(), socket.recv(&mut buf)).await
        {
            if n == 20 && buf[..12] == ask[..] {
                return Some(u64::from_be_bytes(buf[12..20].try_into().ok()?));
            }
        }
    }
    None
}

/// Sends `whoami` to the echo server and returns the source address it saw (several tries).
pub async fn whoami(socket: &UdpSocket, target: SocketAddr) -> std::io::Result<String> {
    let mut buf = vec![0u8; 512];
    for _ in 0..5 {
        socket.send_to(WHOAMI, target).await?;
        if let Ok(r) =
            tokio::time::timeout(Duration::from_millis(500), socket.recv_from(&mut buf)).await
        {
            let (n, _) = r?;
            return Ok(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "no answer to whoami",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_parse_back_and_any_change_is_caught() {
        let d = datagram(42, 7, 1200);
        assert_eq!(parse(&d), Some((42, 7)));
        for i in [0, 5, 13, 17, 600, d.len() - 1] {
            let mut bad = d.clone();
            bad[i] ^= 0x40;
            assert_eq!(parse(&bad), None, "flip at {i}");
        }
        assert_eq!(parse(&d[..d.len() - 1]), None);
        assert_eq!(parse(b"BRDG"), None);
    }

    #[tokio::test]
    async fn a_run_and_a_download_against_the_echo_server_on_loopback_are_clean() {
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap();
        tokio::spawn(serve(server));
        let r = run(
            addr,
            RunSpec {
                count: 200,
                size: 900,
                pps: 2000,
                linger: Duration::from_millis(300),
            },
        )
        .await
        .unwrap();
        assert!(r.ok, "{r:?}");
        assert_eq!((r.lost_up, r.lost_down), (Some(0), Some(0)));
        let d = download(
            addr,
            RunSpec {
                count: 300,
                size: 700,
                pps: 3000,
                linger: Duration::from_millis(300),
            },
        )
        .await
        .unwrap();
        assert!(d.ok, "{d:?}");
        assert_eq!((d.sent, d.received, d.lost_down), (300, 300, Some(0)));
        let probe = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let me = probe.local_addr().unwrap().to_string();
        assert_eq!(whoami(&probe, addr).await.unwrap(), me);
    }
}
