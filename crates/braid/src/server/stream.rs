//! The relay's side of one Shadowsocks-2022 stream: the shadowsocks crate's `CryptoStream` does
//! the cryptography (salt, subkeys, AEAD chunks, timestamp and replay checks), braid reads the
//! request header itself, under SIP022's rules (`braid_proto::sip022`).
//!
//! ```text
//!  socket ─► CryptoStream (decrypt, replay filter) ─► first chunk ─► sip022::parse_first_chunk
//!                                                                    ├─ target
//!                                                                    └─ initial payload ─► read()
//! ```
//!
//! Why not the crate's `ProxyServerStream`: its handshake reads the header across as many chunks
//! as the client sends and takes any padding length, where SIP022 says to reject (see
//! `braid_proto::sip022`). The crate's reader returns bytes of one chunk at most per read, so a
//! first read that does not fill [`FIRST_READ`] bytes returned the first chunk whole, and one that
//! fills it holds more than the longest header can take ([`MAX_HEADER`]): either way the rules
//! are judged on what arrived, with 2 KiB per pending handshake rather than a 64 KiB chunk
//! buffer. The rest of a long first chunk is read through the crate as usual. One gap remains:
//! a first chunk of length 0 is skipped by the crate's reader before braid sees it; only a client
//! that holds the key can send one.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use braid_proto::park::{self, SecondStageError};
use braid_proto::sip022::{self, HeaderError};
use braid_proto::socks5::TargetAddr;
use shadowsocks::context::SharedContext;
use shadowsocks::crypto::CipherKind;
use shadowsocks::relay::tcprelay::crypto_io::{CryptoRead, CryptoStream, CryptoWrite, StreamType};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The longest request header: a SOCKS5 domain address (type, length, 255 bytes, port), the
/// padding length and the most padding SIP022 allows.
const MAX_HEADER: usize = 1 + 1 + 255 + 2 + 2 + sip022::MAX_PADDING;
/// Bytes asked for by the first read, more than [`MAX_HEADER`].
const FIRST_READ: usize = 2048;
const _: () = assert!(MAX_HEADER < FIRST_READ);

/// Why a stream's request could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// Decryption, timestamp, replay or the socket failed (the crate's checks).
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The client closed before its request arrived.
    #[error("the client closed the stream before its request")]
    Closed,
    /// The request breaks SIP022's header rules.
    #[error(transparent)]
    Header(#[from] HeaderError),
    /// A parked request's second stage is not a target.
    #[error(transparent)]
    SecondStage(#[from] SecondStageError),
}

/// An SS2022 stream accepted by the relay.
pub struct ServerStream<S> {
    inner: CryptoStream<S>,
    ctx: SharedContext,
    /// The initial payload that came in the first chunk, served before anything else.
    early: Vec<u8>,
    early_at: usize,
    handshaken: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> ServerStream<S> {
    /// A stream over an accepted socket; nothing is read until [`ServerStream::handshake`].
    pub fn new(ctx: SharedContext, stream: S, method: CipherKind, key: &[u8]) -> Self {
        let inner = CryptoStream::from_stream(&ctx, stream, StreamType::Server, method, key);
        ServerStream {
            inner,
            ctx,
            early: Vec::new(),
            early_at: 0,
            handshaken: false,
        }
    }

    /// Reads and checks the request; returns its target. Call once, before reading or writing.
    pub async fn handshake(&mut self) -> Result<TargetAddr, HandshakeError> {
        let mut chunk = [0u8; FIRST_READ];
        let (inner, ctx) = (&mut self.inner, &self.ctx);
        let n = std::future::poll_fn(|cx| {
            let mut buf = ReadBuf::new(&mut chunk);
            Pin::new(&mut *inner)
                .poll_read_decrypted(cx, ctx, &mut buf)
                .map_ok(|()| buf.filled().len())
                .map_err(io::Error::from)
        })
        .await?;
        if n == 0 {
            return Err(HandshakeError::Closed);
        }
        let header = sip022::parse_first_chunk(&chunk[..n])?;
        // The response header echoes the request's salt (SIP022's binding of the two directions).
        let salt = self.inner.received_nonce().map(<[u8]>::to_vec);
        if let Some(salt) = salt {
            self.inner.set_request_nonce(&salt);
        }
        self.early = chunk[header.payload_at..n].to_vec();
        self.handshaken = true;
        Ok(header.target)
    }

    /// Reads the second stage of a parked request (`braid_proto::park`), after
    /// [`ServerStream::handshake`] returned the park target: the real target. The bytes after it
    /// are served first by later reads. At most [`park::MAX_SECOND_STAGE`] bytes are read per
    /// step, so a stream that never completes its address holds twice that at most.
    pub async fn second_stage(&mut self) -> Result<TargetAddr, HandshakeError> {
        let mut got: Vec<u8> = Vec::with_capacity(park::MAX_SECOND_STAGE);
        let mut step = [0u8; park::MAX_SECOND_STAGE];
        loop {
            let n = std::future::poll_fn(|cx| {
                let mut buf = ReadBuf::new(&mut step);
                Pin::new(&mut *self)
                    .poll_read(cx, &mut buf)
                    .map_ok(|()| buf.filled().len())
            })
            .await?;
            if n == 0 {
                return Err(HandshakeError::Closed);
            }
            got.extend_from_slice(&step[..n]);
            if let Some((target, used)) = park::parse_second_stage(&got)? {
                // What followed the address comes first, then what `early` still held.
                got.drain(..used);
                got.extend_from_slice(&self.early[self.early_at..]);
                self.early = got;
                self.early_at = 0;
                return Ok(target);
            }
        }
    }

    /// The request's salt, once [`ServerStream::handshake`] read it: the relay keeps it across a
    /// restart (`salt_store`).
    pub fn salt(&self) -> Option<&[u8]> {
        self.inner.received_nonce()
    }

    /// The socket.
    pub fn get_ref(&self) -> &S {
        self.inner.get_ref()
    }
}

fn not_yet() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "the SS2022 request has not been read yet",
    )
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for ServerStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.handshaken {
            return Poll::Ready(Err(not_yet()));
        }
        if this.early_at < this.early.len() {
            let rest = &this.early[this.early_at..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.early_at += n;
            if this.early_at == this.early.len() {
                this.early = Vec::new();
                this.early_at = 0;
            }
            // The next read goes on with the rest of the first chunk, if it was long.
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner)
            .poll_read_decrypted(cx, &this.ctx, buf)
            .map_err(io::Error::from)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for ServerStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if !this.handshaken {
            return Poll::Ready(Err(not_yet()));
        }
        Pin::new(&mut this.inner)
            .poll_write_encrypted(cx, buf)
            .map_err(io::Error::from)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().inner.poll_flush(cx).map_err(io::Error::from)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut()
            .inner
            .poll_shutdown(cx)
            .map_err(io::Error::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shadowsocks::config::ServerType;
    use shadowsocks::context::Context as SsContext;
    use shadowsocks::relay::tcprelay::proxy_stream::ProxyServerStream;
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    const METHOD: CipherKind = CipherKind::AEAD2022_BLAKE3_AES_256_GCM;
    const KEY: [u8; 32] = [7; 32];

    fn server_ctx() -> SharedContext {
        Arc::new(SsContext::new(ServerType::Server))
    }

    /// A client that writes each of `chunks` as one SS2022 chunk (the first after the salt and
    /// fixed header), as a misbehaving or probing client could.
    async fn send_chunks(client: DuplexStream, chunks: Vec<Vec<u8>>) -> DuplexStream {
        let ctx = SsContext::new(ServerType::Local);
        let mut c = CryptoStream::from_stream(&ctx, client, StreamType::Client, METHOD, &KEY);
        for chunk in chunks {
            let mut at = 0;
            while at < chunk.len() {
                at += std::future::poll_fn(|cx| {
                    Pin::new(&mut c).poll_write_encrypted(cx, &chunk[at..])
                })
                .await
                .unwrap();
            }
        }
        c.into_inner()
    }

    /// ATYP 1 10.30.0.2:80, padding length, padding, payload.
    fn request(padding: u16, payload: &[u8]) -> Vec<u8> {
        let mut r = vec![1, 10, 30, 0, 2, 0, 80];
        r.extend_from_slice(&padding.to_be_bytes());
        r.extend(std::iter::repeat_n(0u8, usize::from(padding)));
        r.extend_from_slice(payload);
        r
    }

    /// A parked request's header (`braid_proto::park`) with `padding` bytes of padding.
    fn park_request(padding: u16) -> Vec<u8> {
        let mut r = vec![3, park::PARK_HOST.len() as u8];
        r.extend_from_slice(park::PARK_HOST.as_bytes());
        r.extend_from_slice(&park::PARK_PORT.to_be_bytes());
        r.extend_from_slice(&padding.to_be_bytes());
        r.extend(std::iter::repeat_n(0u8, usize::from(padding)));
        r
    }

    async fn braid_handshake(chunks: Vec<Vec<u8>>) -> Result<TargetAddr, HandshakeError> {
        let (client, server) = tokio::io::duplex(256 * 1024);
        let _client = send_chunks(client, chunks).await;
        ServerStream::new(server_ctx(), server, METHOD, &KEY)
            .handshake()
            .await
    }

    async fn crate_handshake(chunks: Vec<Vec<u8>>) -> io::Result<()> {
        let (client, server) = tokio::io::duplex(256 * 1024);
        let _client = send_chunks(client, chunks).await;
        let mut s = ProxyServerStream::from_stream(server_ctx(), server, METHOD, &KEY);
        s.handshake().await.map(drop)
    }

    #[tokio::test]
    async fn request_in_one_chunk_gives_target_then_payload_then_later_chunks() {
        let (client, server) = tokio::io::duplex(256 * 1024);
        let _client = send_chunks(
            client,
            vec![request(0, b"GET / HTTP/1.1\r\n"), b"more".to_vec()],
        )
        .await;
        let mut s = ServerStream::new(server_ctx(), server, METHOD, &KEY);
        let target = s.handshake().await.unwrap();
        assert_eq!(target, TargetAddr::Ip("10.30.0.2:80".parse().unwrap()));
        let mut got = vec![0u8; 20];
        s.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"GET / HTTP/1.1\r\nmore");
    }

    #[tokio::test]
    async fn long_first_chunk_and_the_next_arrive_whole_and_in_order() {
        let (client, server) = tokio::io::duplex(256 * 1024);
        let payload: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
        let _client = send_chunks(client, vec![request(900, &payload), b"next".to_vec()]).await;
        let mut s = ServerStream::new(server_ctx(), server, METHOD, &KEY);
        s.handshake().await.unwrap();
        let mut got = vec![0u8; payload.len() + 4];
        s.read_exact(&mut got).await.unwrap();
        assert_eq!(&got[..payload.len()], &payload[..]);
        assert_eq!(&got[payload.len()..], b"next");
    }

    #[tokio::test]
    async fn reply_reaches_a_stock_client() {
        let (client, server) = tokio::io::duplex(256 * 1024);
        let relay = tokio::spawn(async move {
            let mut s = ServerStream::new(server_ctx(), server, METHOD, &KEY);
            s.handshake().await.unwrap();
            s.write_all(b"pong").await.unwrap();
            s.flush().await.unwrap();
            s
        });
        let ctx = Arc::new(SsContext::new(ServerType::Local));
        let cfg = shadowsocks::config::ServerConfig::new(
            "10.200.0.1:8388".parse::<std::net::SocketAddr>().unwrap(),
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, KEY),
            METHOD,
        )
        .unwrap();
        let target =
            shadowsocks::relay::socks5::Address::SocketAddress("10.30.0.2:80".parse().unwrap());
        let mut c = shadowsocks::relay::tcprelay::proxy_stream::ProxyClientStream::from_stream(
            ctx, client, &cfg, target,
        );
        c.write_all(b"ping").await.unwrap();
        c.flush().await.unwrap();
        let mut back = [0u8; 4];
        c.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"pong");
        drop(relay.await.unwrap());
    }

    #[tokio::test]
    async fn parked_request_gives_its_second_stage_then_the_payload_in_order() {
        let (client, server) = tokio::io::duplex(256 * 1024);
        let park = park_request(16);
        let real = TargetAddr::Domain("example.org".into(), 443);
        let second = park::second_stage(&real, b"hello").unwrap();
        // The address split over two chunks, the payload's start in the second.
        let _client = send_chunks(
            client,
            vec![
                park,
                second[..4].to_vec(),
                second[4..].to_vec(),
                b" world".to_vec(),
            ],
        )
        .await;
        let mut s = ServerStream::new(server_ctx(), server, METHOD, &KEY);
        assert!(park::is_park(&s.handshake().await.unwrap()));
        assert_eq!(s.second_stage().await.unwrap(), real);
        let mut got = vec![0u8; 11];
        s.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello world");
    }

    #[tokio::test]
    async fn parked_request_closed_before_its_second_stage_is_closed_not_an_error() {
        let (client, server) = tokio::io::duplex(256 * 1024);
        drop(send_chunks(client, vec![park_request(1)]).await);
        let mut s = ServerStream::new(server_ctx(), server, METHOD, &KEY);
        s.handshake().await.unwrap();
        let e = s.second_stage().await.unwrap_err();
        assert!(matches!(e, HandshakeError::Closed), "{e}");
    }

    #[tokio::test]
    async fn header_split_across_chunks_is_refused_where_the_crate_accepts_it() {
        let whole = request(16, b"x");
        let split = || vec![whole[..4].to_vec(), whole[4..].to_vec()];
        let e = braid_handshake(split()).await.unwrap_err();
        assert!(
            matches!(e, HandshakeError::Header(HeaderError::Split("address"))),
            "{e}"
        );
        // Why this module exists: the crate's own server stream takes it.
        crate_handshake(split()).await.unwrap();
    }

    #[tokio::test]
    async fn padding_over_900_is_refused_where_the_crate_accepts_it() {
        let e = braid_handshake(vec![request(5000, b"x")])
            .await
            .unwrap_err();
        assert!(
            matches!(e, HandshakeError::Header(HeaderError::Padding(5000))),
            "{e}"
        );
        crate_handshake(vec![request(5000, b"x")]).await.unwrap();
    }

    #[tokio::test]
    async fn wrong_key_and_early_close_are_errors() {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let _client = send_chunks(client, vec![request(0, b"x")]).await;
        let e = ServerStream::new(server_ctx(), server, METHOD, &[8; 32])
            .handshake()
            .await
            .unwrap_err();
        assert!(matches!(e, HandshakeError::Io(_)), "{e}");
        let (client, server) = tokio::io::duplex(64);
        drop(client);
        let e = ServerStream::new(server_ctx(), server, METHOD, &KEY)
            .handshake()
            .await
            .unwrap_err();
        assert!(matches!(e, HandshakeError::Closed), "{e}");
    }
}
