//! Answers braid's control requests, which arrive inside an authenticated SS2022 stream.
//!
//! Speed tests (`Source`, `Sink`) take the stream over: after the `Accepted` frame the bytes are
//! raw, and the stream ends with the test (see `braid_proto::control`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use braid_proto::control::{
    self, ConnectionReport, ControlRequest, ControlResponse, ServerReport, SourceEnd, SteadyRate,
    MAX_SPEEDTEST_SECS,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// sysctls reported to gateways (and to `braid doctor`).
const SYSCTLS: &[&str] = &[
    "net.mptcp.enabled",
    "net.mptcp.path_manager",
    "net.mptcp.blackhole_timeout",
    "net.mptcp.checksum_enabled",
    "net.ipv4.tcp_fastopen",
    "net.ipv4.tcp_congestion_control",
];

/// Serves requests until the client closes the stream. `conn` samples the connection's state at
/// the moment of each request.
pub async fn serve<S, F>(stream: &mut S, conn: F) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: Fn() -> ConnectionReport,
{
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let req = loop {
            match control::decode::<ControlRequest>(&buf) {
                Ok(Some((req, used))) => {
                    buf.drain(..used);
                    break req;
                }
                Ok(None) => {}
                Err(e) => {
                    let resp = ControlResponse::Error {
                        message: e.to_string(),
                    };
                    stream.write_all(&control::encode(&resp)).await?;
                    return Ok(());
                }
            }
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let resp = match req {
            ControlRequest::Hello { .. } => ControlResponse::Report(report(conn())),
            ControlRequest::Ping { seq } => ControlResponse::Pong { seq },
            ControlRequest::Source { secs } => return source(stream, secs).await,
            ControlRequest::Sink { secs } => return sink(stream, secs, buf).await,
        };
        stream.write_all(&control::encode(&resp)).await?;
        stream.flush().await?;
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

/// Sends raw pseudo-random bytes for `secs` seconds, then the [`SourceEnd`] trailer and EOF.
async fn source<S>(stream: &mut S, secs: u32) -> std::io::Result<()>
where
    S: AsyncWrite + Unpin,
{
    if let Some(no) = refuse(secs) {
        stream.write_all(&control::encode(&no)).await?;
        return stream.shutdown().await;
    }
    let accepted = control::encode(&ControlResponse::Accepted { secs });
    stream.write_all(&accepted).await?;
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
    stream.shutdown().await
}

/// Counts raw bytes until the client's EOF (`early` are bytes that came with the request) and
/// answers what arrived, timed from the first byte.
async fn sink<S>(stream: &mut S, secs: u32, early: Vec<u8>) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if let Some(no) = refuse(secs) {
        stream.write_all(&control::encode(&no)).await?;
        return stream.shutdown().await;
    }
    stream
        .write_all(&control::encode(&ControlResponse::Accepted { secs }))
        .await?;
    stream.flush().await?;
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
            stream.write_all(&control::encode(&late)).await?;
            return stream.shutdown().await;
        };
        let n = n?;
        if n == 0 {
            break;
        }
        let t0 = *first.get_or_insert_with(Instant::now);
        meter.record(n as u64, t0.elapsed());
    }
    let got = meter.finish(first.map(|t| t.elapsed()).unwrap_or_default());
    stream
        .write_all(&control::encode(&ControlResponse::Received(got)))
        .await?;
    stream.shutdown().await
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

fn report(connection: ConnectionReport) -> ServerReport {
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use braid_proto::control::{SinkReport, SourceTail};

    fn conn() -> ConnectionReport {
        ConnectionReport {
            peer: "10.1.0.1:5".into(),
            transport: "tcp".into(),
            subflows: 1,
            tfo: false,
            subflow_peers: vec![],
        }
    }

    /// Reads one response frame; returns it and the bytes after it.
    async fn frame<R: AsyncRead + Unpin>(r: &mut R) -> (ControlResponse, Vec<u8>) {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some((resp, used)) = control::decode::<ControlResponse>(&buf).unwrap() {
                return (resp, buf[used..].to_vec());
            }
            let n = r.read(&mut chunk).await.unwrap();
            assert!(n > 0, "EOF before a frame");
            buf.extend_from_slice(&chunk[..n]);
        }
    }

    #[tokio::test]
    async fn source_request_sends_accepted_raw_bytes_and_a_valid_end() {
        let (mut client, mut relay) = tokio::io::duplex(256 * 1024);
        let server = tokio::spawn(async move { serve(&mut relay, conn).await });
        client
            .write_all(&control::encode(&ControlRequest::Source { secs: 0 }))
            .await
            .unwrap();
        let (resp, rest) = frame(&mut client).await;
        assert_eq!(resp, ControlResponse::Accepted { secs: 0 });
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
        let (mut client, mut relay) = tokio::io::duplex(256 * 1024);
        let server = tokio::spawn(async move { serve(&mut relay, conn).await });
        client
            .write_all(&control::encode(&ControlRequest::Sink { secs: 1 }))
            .await
            .unwrap();
        let (resp, _) = frame(&mut client).await;
        assert_eq!(resp, ControlResponse::Accepted { secs: 1 });
        for _ in 0..10 {
            client.write_all(&[7u8; 100_000]).await.unwrap();
        }
        client.shutdown().await.unwrap();
        let (resp, _) = frame(&mut client).await;
        let ControlResponse::Received(SinkReport { bytes, .. }) = resp else {
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
            let (mut client, mut relay) = tokio::io::duplex(64 * 1024);
            let server = tokio::spawn(async move { serve(&mut relay, conn).await });
            client.write_all(&control::encode(&req)).await.unwrap();
            let (resp, _) = frame(&mut client).await;
            assert!(
                matches!(&resp, ControlResponse::Error { message } if message.contains("at most 60 s")),
                "{resp:?}"
            );
            server.await.unwrap().unwrap();
        }
    }
}
