//! A real QUIC transfer for the lab (quinn, TLS 1.3 with aws-lc-rs): a server that sends each
//! stream the bytes it asks for, and a client that checks every byte and samples goodput, so a
//! test can blackhole an uplink under a running QUIC connection and see it carry on.
//!
//! Protocol (lab only, ALPN `braid-lab`): the client opens a bidirectional stream, writes the
//! byte count it wants (u64 big endian) and finishes; the server answers with that many bytes of
//! the traffic tool's pseudo-random sequence and finishes. The certificate is self-signed and
//! the client does not check it (there is nothing to protect in a lab transfer).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde::Serialize;

const ALPN: &[u8] = b"braid-lab";

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn io(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

/// Serves transfers on `addr` forever.
pub async fn serve(addr: SocketAddr) -> std::io::Result<()> {
    let cert = rcgen::generate_simple_self_signed(vec!["braid.lab".into()]).map_err(io)?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der()));
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(io)?
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .map_err(io)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let config =
        quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(tls).map_err(io)?));
    let endpoint = quinn::Endpoint::server(config, addr)?;
    while let Some(incoming) = endpoint.accept().await {
        tokio::spawn(async move {
            let Ok(conn) = incoming.await else { return };
            while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                tokio::spawn(async move {
                    let Ok(req) = recv.read_to_end(16).await else {
                        return;
                    };
                    let Ok(n) = <[u8; 8]>::try_from(req.as_slice()) else {
                        return;
                    };
                    let mut left = u64::from_be_bytes(n);
                    let mut seq = crate::traffic::Sequence::new();
                    let mut buf = vec![0u8; 32 * 1024];
                    while left > 0 {
                        let k = left.min(buf.len() as u64) as usize;
                        seq.fill(&mut buf[..k]);
                        if send.write_all(&buf[..k]).await.is_err() {
                            return;
                        }
                        left -= k as u64;
                    }
                    let _ = send.finish();
                    let _ = send.stopped().await;
                });
            }
        });
    }
    Ok(())
}

/// What a transfer found.
#[derive(Debug, Clone, Serialize)]
pub struct QuicRun {
    /// Bytes asked for.
    pub asked: u64,
    /// Bytes received.
    pub bytes: u64,
    /// Every byte was right, all arrived, and the connection ended without error.
    pub ok: bool,
    /// Why not, if not (the QUIC error, a byte mismatch…).
    pub error: Option<String>,
    /// Goodput in each sampling interval, Mbit/s.
    pub samples_mbit: Vec<f64>,
    /// Length of a sampling interval, ms.
    pub sample_ms: u64,
    /// Longest time without any byte during the transfer, ms.
    pub longest_gap_ms: f64,
    /// Seconds the transfer took.
    pub secs: f64,
}

/// Downloads `bytes` from the server at `target` over QUIC, checking each byte.
pub async fn get(target: SocketAddr, bytes: u64, sample_ms: u64) -> QuicRun {
    let mut run = QuicRun {
        asked: bytes,
        bytes: 0,
        ok: false,
        error: None,
        samples_mbit: Vec::new(),
        sample_ms,
        longest_gap_ms: 0.0,
        secs: 0.0,
    };
    let start = Instant::now();
    if let Err(e) = transfer(target, &mut run).await {
        run.error = Some(e);
    }
    run.secs = start.elapsed().as_secs_f64();
    run.ok = run.error.is_none() && run.bytes == bytes;
    run
}

async fn transfer(target: SocketAddr, run: &mut QuicRun) -> Result<(), String> {
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider())))
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let config = quinn::ClientConfig::new(Arc::new(
        QuicClientConfig::try_from(tls).map_err(|e| e.to_string())?,
    ));
    let bind: SocketAddr = if target.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0))
    };
    let mut endpoint = quinn::Endpoint::client(bind).map_err(|e| e.to_string())?;
    endpoint.set_default_client_config(config);
    let conn = endpoint
        .connect(target, "braid.lab")
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| format!("QUIC handshake: {e}"))?;
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    send.write_all(&run.asked.to_be_bytes())
        .await
        .map_err(|e| e.to_string())?;
    send.finish().map_err(|e| e.to_string())?;
    let mut sampler = crate::traffic::Sampler::new(run.sample_ms);
    let mut seq = crate::traffic::Sequence::new();
    let mut want = vec![0u8; 64 * 1024];
    let mut buf = vec![0u8; 64 * 1024];
    let mut last = Instant::now();
    loop {
        let r = tokio::time::timeout_at(sampler.deadline().into(), recv.read(&mut buf)).await;
        let now = Instant::now();
        sampler.roll(now, &mut run.samples_mbit);
        match r {
            Err(_) => continue,
            Ok(Ok(None)) => break,
            Ok(Ok(Some(n))) => {
                seq.fill(&mut want[..n]);
                if want[..n] != buf[..n] {
                    return Err(format!(
                        "byte mismatch within bytes {}..{}",
                        run.bytes,
                        run.bytes + n as u64
                    ));
                }
                run.longest_gap_ms = run.longest_gap_ms.max((now - last).as_secs_f64() * 1000.0);
                last = now;
                run.bytes += n as u64;
                sampler.add(n);
            }
            Ok(Err(e)) => return Err(format!("after {} bytes: {e}", run.bytes)),
        }
    }
    conn.close(0u32.into(), b"done");
    endpoint.wait_idle().await;
    Ok(())
}

/// Accepts any certificate (the lab's server is self-signed), still checking the handshake's
/// signatures with the provider's algorithms.
#[derive(Debug)]
struct AnyCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_transfer_on_loopback_is_byte_exact() {
        let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = probe.local_addr().unwrap();
        drop(probe);
        tokio::spawn(serve(addr));
        let mut run = get(addr, 2_000_000, 100).await;
        for _ in 0..20 {
            if run.ok {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            run = get(addr, 2_000_000, 100).await;
        }
        assert!(run.ok, "{run:?}");
        assert_eq!(run.bytes, 2_000_000);
    }
}
