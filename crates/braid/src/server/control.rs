//! Answers braid's control requests, which arrive inside an authenticated SS2022 stream.
//!
//! Speed tests (`Source`, `Sink`) take the stream over: after the `Accepted` frame the bytes are
//! raw, and the stream ends with the test (see `braid_proto::control`).
//!
//! A stream that stops sending requests is given up ([`Silence`]): a gateway's health probe
//! pings at a steady interval, and when its uplink changes address (routine for 5G and DHCP) the
//! old stream simply goes quiet, with no FIN ever coming. Without a deadline each such stream
//! stayed established on the relay for good.

use std::collections::BTreeMap;
use std::io;
use std::time::{Duration, Instant};

use braid_proto::control::{
    ConnectionReport, ControlRequest, ControlResponse, HandshakeLimits, ServerReport, SourceEnd,
    SteadyRate, MAX_SPEEDTEST_SECS,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::control::{Connection, ConnectionError, FrameWriter};
use crate::shutdown::Shutdown;

/// sysctls reported to gateways (and to `braid doctor`).
const SYSCTLS: &[&str] = &[
    "net.mptcp.enabled",
    "net.mptcp.path_manager",
    "net.mptcp.blackhole_timeout",
    "net.mptcp.checksum_enabled",
    "net.ipv4.tcp_fastopen",
    "net.ipv4.tcp_congestion_control",
];

/// Serves requests until the client closes the stream, or `shutdown` fires while it waits for
/// the next request (health probes keep their streams open for good). `conn` samples the
/// connection's state at the moment of each request; `handshake` is reported with it, for the
/// gateway's warm pool, and `joins` (the joins per connection the relay takes), and `tunnels`
/// grants tunnels for hostile paths. A frame that cannot be
/// decoded gets an `Error` answer that says why, and ends the stream.
pub async fn serve<S, F>(
    stream: S,
    conn: F,
    handshake: HandshakeLimits,
    joins: Option<u32>,
    tunnels: Option<&crate::tunnel::relay::Tunnels>,
    mut shutdown: Shutdown,
) -> Result<(), ConnectionError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: Fn() -> ConnectionReport,
{
    let mut ctl = Connection::new(stream);
    let mut silence = Silence::default();
    loop {
        let limit = silence.limit();
        let req = tokio::select! {
            r = tokio::time::timeout(limit, ctl.recv::<ControlRequest>()) => match r {
                Ok(r) => r,
                Err(_) => return Err(ConnectionError::Io(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no request for {limit:?}: the client is gone (its address changed, or it lost its path)"),
                ))),
            },
            _ = shutdown.wait() => return Ok(()),
        };
        silence.on_request(tokio::time::Instant::now());
        let req = match req {
            Ok(Some(req)) => req,
            Ok(None) => return Ok(()),
            Err(ConnectionError::Frame(e)) => {
                let message = e.to_string();
                ctl.send(&ControlResponse::Error { message }).await?;
                return Err(e.into());
            }
            Err(e) => return Err(e),
        };
        let resp = match req {
            ControlRequest::Hello { .. } => {
                ControlResponse::Report(report(conn(), handshake, joins))
            }
            ControlRequest::Ping { seq } => ControlResponse::Pong { seq },
            ControlRequest::Source { secs } => return source(ctl, secs).await,
            ControlRequest::Sink { secs } => return sink(ctl, secs).await,
            ControlRequest::Tunnel {
                uplink,
                public_key,
                relay,
            } => match tunnels {
                Some(t) => t.grant(&uplink, &public_key, &relay).await,
                None => ControlResponse::Error {
                    message: "this relay has no tunnel for hostile paths (tunnel_port = 0 in server.toml); fix: remove `tunnel_port = 0` there, or set tunnel = \"never\" on the gateway's uplinks".into(),
                },
            },
        };
        ctl.send(&resp).await?;
    }
}

/// Requests a steady client may miss before its stream is given up.
const MISSED_REQUESTS: u32 = 3;
/// The shortest silence that ends a stream (a 200 ms probe interval would give 600 ms).
const SILENCE_MIN: Duration = Duration::from_secs(2);
/// The longest: three of the longest probe interval (10 s), and the limit before a stream's
/// second request, when its pace is not known yet.
const SILENCE_MAX: Duration = Duration::from_secs(30);

/// How long a control stream may stay silent: [`MISSED_REQUESTS`] times the gap between its
/// last two requests (its pace), within [`SILENCE_MIN`] and [`SILENCE_MAX`].
#[derive(Debug, Default)]
struct Silence {
    last: Option<tokio::time::Instant>,
    gap: Option<Duration>,
}

impl Silence {
    fn on_request(&mut self, now: tokio::time::Instant) {
        if let Some(last) = self.last {
            self.gap = Some(now.saturating_duration_since(last));
        }
        self.last = Some(now);
    }

    fn limit(&self) -> Duration {
        self.gap.map_or(SILENCE_MAX, |g| {
            g.saturating_mul(MISSED_REQUESTS)
                .clamp(SILENCE_MIN, SILENCE_MAX)
        })
    }
}

/// How long the client may keep sending after an upload's `secs` ran out, before the relay
/// gives up on it.
const SINK_GRACE: Duration = Duration::from_secs(10);
/// A download whose stream takes no byte for this long is abandoned.
const SOURCE_STALL: Duration = Duration::from_secs(10);
/// Bytes per write (and read) of a speed test.
const BULK_CHUNK: usize = 64 * 1024;

/// `Error` for a speed test longer than [`MAX_SPEEDTEST_SECS`].
fn refuse(secs: u32) -> Option<ControlResponse> {
    (secs > MAX_SPEEDTEST_SECS).then(|| ControlResponse::Error {
        message: format!(
            "a speed test of {secs} s is refused: the relay runs at most {MAX_SPEEDTEST_SECS} s; fix: use --secs {MAX_SPEEDTEST_SECS} or less"
        ),
    })
}

/// Sends the last frame of a stream, then EOF.
async fn answer_and_close<W>(stream: &mut W, last: &ControlResponse) -> Result<(), ConnectionError>
where
    W: AsyncWrite + Unpin,
{
    FrameWriter::new(&mut *stream).send(last).await?;
    stream.shutdown().await?;
    Ok(())
}

/// Sends raw pseudo-random bytes for `secs` seconds, then the [`SourceEnd`] trailer and EOF.
async fn source<S>(mut ctl: Connection<S>, secs: u32) -> Result<(), ConnectionError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if let Some(no) = refuse(secs) {
        return answer_and_close(&mut ctl.into_parts().0, &no).await;
    }
    ctl.send(&ControlResponse::Accepted { secs }).await?;
    let (mut stream, _) = ctl.into_parts();
    let mut block = vec![0u8; BULK_CHUNK];
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let end = Instant::now() + Duration::from_secs(u64::from(secs));
    let mut sent = 0u64;
    while Instant::now() < end {
        fill(&mut block, &mut state);
        tokio::time::timeout(SOURCE_STALL, stream.write_all(&block))
            .await
            .map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "speed test download stalled: the client stopped reading",
                )
            })??;
        sent += block.len() as u64;
    }
    stream.write_all(&SourceEnd { bytes: sent }.emit()).await?;
    stream.shutdown().await?;
    Ok(())
}

/// Counts raw bytes until the client's EOF (bytes that came with the request count too) and
/// answers what arrived, timed from the first byte.
async fn sink<S>(mut ctl: Connection<S>, secs: u32) -> Result<(), ConnectionError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if let Some(no) = refuse(secs) {
        return answer_and_close(&mut ctl.into_parts().0, &no).await;
    }
    ctl.send(&ControlResponse::Accepted { secs }).await?;
    let (mut stream, early) = ctl.into_parts();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(u64::from(secs)) + SINK_GRACE;
    let mut meter = SteadyRate::new(secs);
    let mut first: Option<Instant> = None;
    if !early.is_empty() {
        first = Some(Instant::now());
        meter.record(early.len() as u64, Duration::ZERO);
    }
    let mut buf = vec![0u8; BULK_CHUNK];
    loop {
        let Ok(n) = tokio::time::timeout_at(deadline, stream.read(&mut buf)).await else {
            let late = ControlResponse::Error {
                message: format!(
                    "the upload ran past its {secs} s plus {} s of grace; the relay stopped counting",
                    SINK_GRACE.as_secs()
                ),
            };
            return answer_and_close(&mut stream, &late).await;
        };
        let n = n?;
        if n == 0 {
            break;
        }
        let t0 = *first.get_or_insert_with(Instant::now);
        meter.record(n as u64, t0.elapsed());
    }
    let got = meter.finish(first.map(|t| t.elapsed()).unwrap_or_default());
    answer_and_close(&mut stream, &ControlResponse::Received(got)).await
}

/// xorshift64: cheap pseudo-random filler (the tunnel encrypts it anyway).
fn fill(buf: &mut [u8], state: &mut u64) {
    for chunk in buf.chunks_mut(8) {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
}

fn report(
    connection: ConnectionReport,
    handshake: HandshakeLimits,
    joins: Option<u32>,
) -> ServerReport {
    let procfs = braid_sys::sysctl::Procfs::default();
    let sysctls: BTreeMap<String, String> = SYSCTLS
        .iter()
        .filter_map(|k| procfs.sysctl(k).ok().map(|v| (k.to_string(), v)))
        .collect();
    ServerReport {
        version: env!("CARGO_PKG_VERSION").to_string(),
        kernel: braid_sys::kernel::KernelRelease::running().release,
        connection,
        sysctls,
        time_unix_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
        handshake: Some(handshake),
        joins,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use braid_proto::control::{SinkReport, SourceTail};

    const LIMITS: HandshakeLimits = HandshakeLimits {
        timeout_ms: 15_000,
        max_per_source: 16,
        parks: true,
    };

    fn conn() -> ConnectionReport {
        ConnectionReport {
            peer: "10.1.0.1:5".into(),
            transport: braid_proto::control::Transport::Tcp,
            subflows: 1,
            tfo: false,
            subflow_peers: vec![],
        }
    }

    /// A relay serving `relay` until the test fires the trigger (kept alive by the task).
    fn spawn_serve(
        relay: tokio::io::DuplexStream,
    ) -> tokio::task::JoinHandle<Result<(), ConnectionError>> {
        let (trigger, shutdown) = crate::shutdown::channel();
        tokio::spawn(async move {
            let r = serve(relay, conn, LIMITS, Some(8), None, shutdown).await;
            drop(trigger);
            r
        })
    }

    #[tokio::test]
    async fn source_request_sends_accepted_raw_bytes_and_a_valid_end() {
        let (client, relay) = tokio::io::duplex(256 * 1024);
        let server = spawn_serve(relay);
        let mut client = Connection::new(client);
        let resp: ControlResponse = client
            .request(&ControlRequest::Source { secs: 0 })
            .await
            .unwrap();
        assert_eq!(resp, ControlResponse::Accepted { secs: 0 });
        let (mut client, rest) = client.into_parts();
        let mut tail = SourceTail::default();
        tail.push(&rest);
        let mut more = Vec::new();
        client.read_to_end(&mut more).await.unwrap();
        tail.push(&more);
        assert_eq!(tail.finish(), Ok(0));
        server.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn sink_request_counts_every_byte_until_eof() {
        let (client, relay) = tokio::io::duplex(256 * 1024);
        let server = spawn_serve(relay);
        let mut client = Connection::new(client);
        let resp: ControlResponse = client
            .request(&ControlRequest::Sink { secs: 1 })
            .await
            .unwrap();
        assert_eq!(resp, ControlResponse::Accepted { secs: 1 });
        let (mut raw, _) = client.into_parts();
        for _ in 0..10 {
            raw.write_all(&[7u8; 100_000]).await.unwrap();
        }
        raw.shutdown().await.unwrap();
        let resp = Connection::new(raw)
            .recv::<ControlResponse>()
            .await
            .unwrap();
        let Some(ControlResponse::Received(SinkReport { bytes, .. })) = resp else {
            panic!("expected Received, got {resp:?}");
        };
        assert_eq!(bytes, 1_000_000);
        server.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn speedtest_over_the_cap_is_refused() {
        for req in [
            ControlRequest::Source {
                secs: MAX_SPEEDTEST_SECS + 1,
            },
            ControlRequest::Sink { secs: 3600 },
        ] {
            let (client, relay) = tokio::io::duplex(64 * 1024);
            let server = spawn_serve(relay);
            let resp: ControlResponse = Connection::new(client).request(&req).await.unwrap();
            assert!(
                matches!(&resp, ControlResponse::Error { message } if message.contains("at most 60 s")),
                "{resp:?}"
            );
            server.await.unwrap().unwrap();
        }
    }

    #[tokio::test]
    async fn garbage_request_gets_an_error_answer_at_once() {
        let (mut client, relay) = tokio::io::duplex(64 * 1024);
        let server = spawn_serve(relay);
        let mut g = 3u32.to_be_bytes().to_vec();
        g.extend_from_slice(b"{{{");
        client.write_all(&g).await.unwrap();
        // The client keeps the stream open: the answer must not wait for EOF.
        let resp = Connection::new(&mut client)
            .recv::<ControlResponse>()
            .await
            .unwrap();
        assert!(
            matches!(&resp, Some(ControlResponse::Error { message }) if message.contains("not valid")),
            "{resp:?}"
        );
        assert!(server.await.unwrap().is_err());
    }

    #[test]
    fn silence_limit_follows_the_pace_within_bounds() {
        let t = tokio::time::Instant::now();
        let mut s = Silence::default();
        assert_eq!(s.limit(), SILENCE_MAX);
        s.on_request(t);
        assert_eq!(s.limit(), SILENCE_MAX);
        s.on_request(t + Duration::from_millis(200));
        assert_eq!(s.limit(), SILENCE_MIN);
        s.on_request(t + Duration::from_millis(200) + Duration::from_secs(5));
        assert_eq!(s.limit(), Duration::from_secs(15));
        s.on_request(t + Duration::from_secs(100));
        assert_eq!(s.limit(), SILENCE_MAX);
    }

    #[tokio::test(start_paused = true)]
    async fn stream_that_stops_pinging_is_given_up() {
        let (client, relay) = tokio::io::duplex(64 * 1024);
        let server = spawn_serve(relay);
        let mut client = Connection::new(client);
        for seq in 0..5 {
            let pong: ControlResponse =
                client.request(&ControlRequest::Ping { seq }).await.unwrap();
            assert_eq!(pong, ControlResponse::Pong { seq });
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // The client goes quiet but keeps the stream open, as a vanished peer does.
        let quiet = tokio::time::Instant::now();
        let e = server.await.unwrap().unwrap_err();
        assert!(e.to_string().contains("no request for"), "{e}");
        let after = quiet.elapsed();
        assert!(
            after <= SILENCE_MIN + Duration::from_millis(300),
            "{after:?}"
        );
        drop(client);
    }

    #[tokio::test]
    async fn waiting_for_a_request_ends_at_shutdown() {
        let (client, relay) = tokio::io::duplex(64 * 1024);
        let (trigger, shutdown) = crate::shutdown::channel();
        let server = tokio::spawn(serve(relay, conn, LIMITS, Some(8), None, shutdown));
        let mut client = Connection::new(client);
        let pong: ControlResponse = client
            .request(&ControlRequest::Ping { seq: 4 })
            .await
            .unwrap();
        assert_eq!(pong, ControlResponse::Pong { seq: 4 });
        trigger.fire();
        server.await.unwrap().unwrap();
        assert!(client.recv::<ControlResponse>().await.unwrap().is_none());
    }
}
