//! Answers braid's control requests, which arrive inside an authenticated SS2022 stream.

use std::collections::BTreeMap;

use braid_proto::control::{self, ConnectionReport, ControlRequest, ControlResponse, ServerReport};
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
        };
        stream.write_all(&control::encode(&resp)).await?;
        stream.flush().await?;
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
