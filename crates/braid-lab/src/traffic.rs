//! A tiny traffic tool for the lab: bulk download/upload, byte-exact echo and request/reply
//! timing, so the demo, tests and benchmarks need no iperf3 and can check every byte.
//!
//! Protocol (lab only, plain TCP): the client sends one op byte and a u64 argument (big endian).
//! - `SOURCE ms`: the server sends pseudo-random bytes for `ms` milliseconds, then closes.
//! - `SINK 0`: the server reads to EOF and answers the byte count (u64).
//! - `ECHO 0`: the server echoes everything, half-closing after the client does.
//! - `RR n`: the server reads `n` bytes and answers `n` bytes, then closes.
//! - `STREAM ms`: like `SOURCE`, but one continuous pseudo-random sequence the client can check
//!   byte by byte (a lost, repeated or corrupted chunk anywhere is caught).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Op codes.
pub mod op {
    /// Timed download.
    pub const SOURCE: u8 = 1;
    /// Upload, answered with the count.
    pub const SINK: u8 = 2;
    /// Byte-exact echo.
    pub const ECHO: u8 = 3;
    /// Request/reply of n bytes.
    pub const RR: u8 = 4;
    /// Timed download of one continuous, verifiable pseudo-random stream.
    pub const STREAM: u8 = 5;
}

/// Serves the protocol forever, and the UDP echo of [`crate::datagrams`] on the same address
/// and port.
pub async fn serve(listener: TcpListener) -> std::io::Result<()> {
    let udp =
        tokio::net::UdpSocket::from_std(braid_sys::socket::udp_bind(listener.local_addr()?)?)?;
    tokio::spawn(crate::datagrams::serve(udp));
    loop {
        let (s, _) = listener.accept().await?;
        tokio::spawn(async move {
            let _ = serve_one(s).await;
        });
    }
}

/// Seed of the `STREAM` sequence.
const STREAM_SEED: u64 = 0x2545_f491_4f6c_dd1d;

/// The `STREAM` sequence as a continuous byte source: any chunking gives the same bytes (the
/// QUIC transfer sends and checks it too).
pub struct Sequence {
    state: u64,
    block: [u8; 8],
    used: usize,
}

impl Default for Sequence {
    fn default() -> Self {
        Self::new()
    }
}

impl Sequence {
    /// The sequence from its start.
    pub fn new() -> Self {
        Sequence {
            state: STREAM_SEED,
            block: [0; 8],
            used: 8,
        }
    }

    /// The next `out.len()` bytes.
    pub fn fill(&mut self, out: &mut [u8]) {
        for b in out {
            if self.used == 8 {
                fill(&mut self.block, &mut self.state);
                self.used = 0;
            }
            *b = self.block[self.used];
            self.used += 1;
        }
    }
}

/// Goodput per fixed interval, for the checked downloads (TCP `STREAM` and QUIC).
pub(crate) struct Sampler {
    every: Duration,
    next: Instant,
    bytes: u64,
}

impl Sampler {
    /// Intervals of `every_ms` (at least 1 ms), the first starting now.
    pub(crate) fn new(every_ms: u64) -> Sampler {
        let every = Duration::from_millis(every_ms.max(1));
        Sampler {
            every,
            next: Instant::now() + every,
            bytes: 0,
        }
    }

    /// When the current interval ends: wait for data until then.
    pub(crate) fn deadline(&self) -> Instant {
        self.next
    }

    /// Closes every interval that ended by `now` into `out`, in Mbit/s.
    pub(crate) fn roll(&mut self, now: Instant, out: &mut Vec<f64>) {
        while now >= self.next {
            out.push(self.bytes as f64 * 8.0 / self.every.as_secs_f64() / 1e6);
            self.bytes = 0;
            self.next += self.every;
        }
    }

    /// `n` bytes arrived in the current interval.
    pub(crate) fn add(&mut self, n: usize) {
        self.bytes += n as u64;
    }
}

/// The `STREAM` sequence, byte by byte, for checking what arrives.
struct StreamCheck {
    seq: Sequence,
    want: Vec<u8>,
}

impl StreamCheck {
    fn new() -> Self {
        StreamCheck {
            seq: Sequence::new(),
            want: Vec::new(),
        }
    }

    /// True if `data` continues the sequence.
    fn check(&mut self, data: &[u8]) -> bool {
        self.want.resize(data.len(), 0);
        self.seq.fill(&mut self.want);
        self.want == data
    }
}

fn fill(buf: &mut [u8], state: &mut u64) {
    for chunk in buf.chunks_mut(8) {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        let b = state.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
}

async fn serve_one(mut s: TcpStream) -> std::io::Result<()> {
    s.set_nodelay(true)?;
    let code = s.read_u8().await?;
    let arg = s.read_u64().await?;
    match code {
        op::SOURCE => {
            let mut buf = vec![0u8; 128 * 1024];
            let mut st = 0x9e37_79b9_7f4a_7c15u64;
            fill(&mut buf, &mut st);
            let end = Instant::now() + Duration::from_millis(arg);
            while Instant::now() < end {
                s.write_all(&buf).await?;
            }
            s.shutdown().await?;
        }
        op::STREAM => {
            let mut buf = vec![0u8; 16 * 1024];
            let mut st = STREAM_SEED;
            let end = Instant::now() + Duration::from_millis(arg);
            while Instant::now() < end {
                fill(&mut buf, &mut st);
                s.write_all(&buf).await?;
            }
            s.shutdown().await?;
        }
        op::SINK => {
            let n = tokio::io::copy(&mut s, &mut tokio::io::sink()).await?;
            s.write_u64(n).await?;
            s.shutdown().await?;
        }
        op::ECHO => {
            let (mut r, mut w) = s.split();
            tokio::io::copy(&mut r, &mut w).await?;
            w.shutdown().await?;
        }
        op::RR => {
            let mut buf = vec![0u8; arg.min(1 << 20) as usize];
            s.read_exact(&mut buf).await?;
            s.write_all(&buf).await?;
            s.shutdown().await?;
        }
        _ => {}
    }
    Ok(())
}

/// How the client reaches the traffic server.
#[derive(Debug, Clone, Copy, Default)]
pub struct Route {
    /// The traffic server.
    pub target: Option<SocketAddr>,
    /// Go through this SOCKS5 proxy first.
    pub socks: Option<SocketAddr>,
    /// Bind the client socket to this source address (to pick an uplink by policy routing).
    pub bind: Option<std::net::IpAddr>,
    /// Use an MPTCP socket (raw kernel MPTCP baseline).
    pub mptcp: bool,
}

impl Route {
    /// Straight to `target`.
    pub fn to(target: SocketAddr) -> Route {
        Route {
            target: Some(target),
            ..Route::default()
        }
    }

    fn target(&self) -> std::io::Result<SocketAddr> {
        self.target
            .ok_or_else(|| std::io::Error::other("no target"))
    }
}

pub(crate) async fn connect_direct(addr: SocketAddr, route: Route) -> std::io::Result<TcpStream> {
    let (sock, _, why) = braid_sys::socket::stream_socket(&addr, route.mptcp)?;
    if let Some(why) = why {
        return Err(std::io::Error::other(format!(
            "MPTCP requested but unavailable: {why}"
        )));
    }
    if let Some(ip) = route.bind {
        sock.bind(&SocketAddr::new(ip, 0).into())?;
    }
    sock.set_tcp_nodelay(true)?;
    tokio::net::TcpSocket::from_std_stream(sock.into())
        .connect(addr)
        .await
}

/// Serves on an MPTCP listener (which also accepts plain TCP clients), or TCP without MPTCP.
pub fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let l = braid_sys::socket::listen(
        addr,
        braid_sys::socket::ListenOptions {
            mptcp: true,
            fastopen_qlen: None,
            backlog: 128,
        },
    )?;
    TcpListener::from_std(l.listener)
}

async fn connect(route: Route) -> std::io::Result<TcpStream> {
    let target = route.target()?;
    let Some(proxy) = route.socks else {
        return connect_direct(target, route).await;
    };
    let mut s = connect_direct(proxy, route).await?;
    s.write_all(&[5, 1, 0]).await?;
    let mut r = [0u8; 2];
    s.read_exact(&mut r).await?;
    let mut req = vec![5, 1, 0];
    match target {
        SocketAddr::V4(a) => {
            req.push(1);
            req.extend_from_slice(&a.ip().octets());
        }
        SocketAddr::V6(a) => {
            req.push(4);
            req.extend_from_slice(&a.ip().octets());
        }
    }
    req.extend_from_slice(&target.port().to_be_bytes());
    s.write_all(&req).await?;
    let mut rep = [0u8; 10];
    s.read_exact(&mut rep).await?;
    if rep[1] != 0 {
        return Err(std::io::Error::other(format!(
            "SOCKS5 reply code {}",
            rep[1]
        )));
    }
    Ok(s)
}

async fn request(route: Route, code: u8, arg: u64) -> std::io::Result<TcpStream> {
    let mut s = connect(route).await?;
    let mut hdr = vec![code];
    hdr.extend_from_slice(&arg.to_be_bytes());
    s.write_all(&hdr).await?;
    Ok(s)
}

/// A measured bulk transfer.
#[derive(Debug, Clone, Serialize)]
pub struct Rate {
    /// Bytes moved in all.
    pub bytes: u64,
    /// Wall time of the transfer.
    pub secs: f64,
    /// Rate over the steady part (after the first second, when slow start is over).
    pub mbit_per_s: f64,
}

/// Downloads for `secs` seconds and measures the steady rate.
pub async fn download(route: Route, secs: u64) -> std::io::Result<Rate> {
    let mut s = request(route, op::SOURCE, secs * 1000).await?;
    let start = Instant::now();
    let warm = Duration::from_secs(1).min(Duration::from_millis(secs * 1000 / 4));
    let mut buf = vec![0u8; 256 * 1024];
    let (mut total, mut at_warm) = (0u64, None);
    loop {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if at_warm.is_none() && start.elapsed() >= warm {
            at_warm = Some((total, start.elapsed()));
        }
    }
    let secs_all = start.elapsed().as_secs_f64();
    let (b0, t0) = at_warm.unwrap_or((0, Duration::ZERO));
    let span = (secs_all - t0.as_secs_f64()).max(1e-3);
    Ok(Rate {
        bytes: total,
        secs: secs_all,
        mbit_per_s: (total - b0) as f64 * 8.0 / span / 1e6,
    })
}

/// A checked, sampled download.
#[derive(Debug, Clone, Serialize)]
pub struct StreamRun {
    /// Bytes received.
    pub bytes: u64,
    /// Every byte continued the expected sequence and the stream ended cleanly.
    pub ok: bool,
    /// Why not, if not (a reset, a mismatch at some offset…).
    pub error: Option<String>,
    /// Goodput in each sampling interval, Mbit/s.
    pub samples_mbit: Vec<f64>,
    /// Length of a sampling interval, ms.
    pub sample_ms: u64,
}

/// Downloads the checked stream for `secs` seconds, sampling goodput every `sample_ms`.
pub async fn stream(route: Route, secs: u64, sample_ms: u64) -> StreamRun {
    let mut run = StreamRun {
        bytes: 0,
        ok: false,
        error: None,
        samples_mbit: Vec::new(),
        sample_ms,
    };
    let mut s = match request(route, op::STREAM, secs * 1000).await {
        Ok(s) => s,
        Err(e) => {
            run.error = Some(format!("connect: {e}"));
            return run;
        }
    };
    let mut check = StreamCheck::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut sampler = Sampler::new(sample_ms);
    loop {
        let r = tokio::time::timeout_at(sampler.deadline().into(), s.read(&mut buf)).await;
        sampler.roll(Instant::now(), &mut run.samples_mbit);
        match r {
            Err(_) => continue,
            Ok(Ok(0)) => {
                run.ok = true;
                break;
            }
            Ok(Ok(n)) => {
                if !check.check(&buf[..n]) {
                    run.error = Some(format!(
                        "byte mismatch within bytes {}..{}",
                        run.bytes,
                        run.bytes + n as u64
                    ));
                    break;
                }
                run.bytes += n as u64;
                sampler.add(n);
            }
            Ok(Err(e)) => {
                run.error = Some(format!("after {} bytes: {e}", run.bytes));
                break;
            }
        }
    }
    run
}

/// Uploads for `secs` seconds; the rate counts what the server received.
pub async fn upload(route: Route, secs: u64) -> std::io::Result<Rate> {
    let mut s = request(route, op::SINK, 0).await?;
    let mut buf = vec![0u8; 128 * 1024];
    let mut st = 7u64;
    fill(&mut buf, &mut st);
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    while Instant::now() < end {
        s.write_all(&buf).await?;
    }
    s.shutdown().await?;
    let got = s.read_u64().await?;
    let secs_all = start.elapsed().as_secs_f64();
    Ok(Rate {
        bytes: got,
        secs: secs_all,
        mbit_per_s: got as f64 * 8.0 / secs_all / 1e6,
    })
}

/// The result of an echo check.
#[derive(Debug, Clone, Serialize)]
pub struct EchoCheck {
    /// Bytes sent.
    pub bytes: u64,
    /// Bytes received back.
    pub received: u64,
    /// SHA-256 of what was sent.
    pub sent_sha256: String,
    /// SHA-256 of what came back.
    pub received_sha256: String,
    /// Both match and the lengths agree.
    pub ok: bool,
}

/// Sends `bytes` random bytes through the echo server while reading them back, and compares
/// SHA-256 of both directions.
pub async fn echo(route: Route, bytes: u64) -> std::io::Result<EchoCheck> {
    let s = request(route, op::ECHO, 0).await?;
    let (mut r, mut w) = s.into_split();
    let writer = tokio::spawn(async move {
        let mut h = Sha256::new();
        let mut left = bytes;
        let mut buf = vec![0u8; 64 * 1024];
        let mut st = u64::from(std::process::id()) | 1;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            fill(&mut buf[..n], &mut st);
            w.write_all(&buf[..n]).await?;
            h.update(&buf[..n]);
            left -= n as u64;
        }
        w.shutdown().await?;
        Ok::<_, std::io::Error>(hex(&h.finalize()))
    });
    let (rh, got) = read_hash(&mut r).await?;
    let sent = writer.await.map_err(std::io::Error::other)??;
    Ok(EchoCheck {
        bytes,
        received: got,
        ok: sent == rh && got == bytes,
        sent_sha256: sent,
        received_sha256: rh,
    })
}

async fn read_hash<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<(String, u64)> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut n_all = 0;
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return Ok((hex(&h.finalize()), n_all));
        }
        h.update(&buf[..n]);
        n_all += n as u64;
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Request/reply timings.
#[derive(Debug, Clone, Serialize)]
pub struct RrTimes {
    /// Each try's time to the first byte of the reply, in ms; `None` for a failure or timeout.
    pub ttfb_ms: Vec<Option<f64>>,
    /// Median of the successful tries.
    pub median_ms: Option<f64>,
    /// Tries that failed or timed out.
    pub failures: usize,
}

/// `count` fresh connections, each sending `size` bytes and timing the first byte of the reply.
pub async fn request_reply(route: Route, count: usize, size: u64, timeout: Duration) -> RrTimes {
    let mut out = Vec::new();
    for _ in 0..count {
        let t = tokio::time::timeout(timeout, async {
            let start = Instant::now();
            let mut s = connect(route).await?;
            let mut msg = vec![op::RR];
            msg.extend_from_slice(&size.to_be_bytes());
            msg.extend(std::iter::repeat_n(b'x', size as usize));
            s.write_all(&msg).await?;
            let mut first = [0u8; 1];
            s.read_exact(&mut first).await?;
            Ok::<_, std::io::Error>(start.elapsed().as_secs_f64() * 1000.0)
        })
        .await;
        out.push(match t {
            Ok(Ok(ms)) => Some(ms),
            _ => None,
        });
    }
    let mut ok: Vec<f64> = out.iter().flatten().copied().collect();
    ok.sort_by(|a, b| a.total_cmp(b));
    let median = (!ok.is_empty()).then(|| ok[ok.len() / 2]);
    RrTimes {
        failures: out.iter().filter(|x| x.is_none()).count(),
        ttfb_ms: out,
        median_ms: median,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_check_accepts_the_sequence_in_any_split_and_catches_a_gap() {
        let mut data = vec![0u8; 16 * 1024 * 3];
        let mut st = STREAM_SEED;
        for c in data.chunks_mut(16 * 1024) {
            fill(c, &mut st);
        }
        let mut ok = StreamCheck::new();
        for part in data.chunks(1000) {
            assert!(ok.check(part));
        }
        let mut gap = StreamCheck::new();
        assert!(gap.check(&data[..5000]));
        assert!(
            !gap.check(&data[5008..6000]),
            "a missing 8-byte run must be caught"
        );
    }
}
