//! The in-tunnel control channel as a framed connection: braid's requests to the relay and its
//! answers, carried inside an SS2022 stream to `braid-control.invalid:9`.
//!
//! The wire format is `braid_proto::control` (a `u32` length, then a JSON body); this module
//! only moves frames over a stream, in the manner of mini-redis's `Connection`:
//! ```text
//!  send(&msg) ─► encode ─► write_all + flush
//!  recv()     ◄─ decode ◄─ kept read buffer ◄─ read
//! ```
//! Every user of the channel (the relay's answers, the gateway's health probes and TFO probe,
//! `braid doctor`, `braid speedtest`) goes through here, so a broken frame is reported the same
//! way everywhere, and at once: a peer that sends garbage is not waited on until EOF or a
//! timeout.
//!
//! Speed tests switch the stream to raw bytes after the `Accepted` frame; bytes that arrived
//! with that frame are kept in the buffer, and [`Connection::into_parts`] hands them over with
//! the stream. The health probe writes pings on one task and reads pongs on another:
//! [`Connection::split`] gives a [`FrameReader`] and a [`FrameWriter`] for that.

use std::io;

use braid_proto::control::{self, ControlRequest, FrameError};
use bytes::{Buf, BytesMut};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};

/// Spare room the read buffer keeps before each read: a whole typical frame fits in one read.
const READ_RESERVE: usize = 4 * 1024;

/// Why a control frame could not be read or sent.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// The stream itself failed (reset, timeout, …).
    #[error("the control stream failed: {0}")]
    Io(#[from] io::Error),
    /// The peer closed the stream part-way through a frame.
    #[error("the peer closed the control stream in the middle of a frame ({buffered} bytes of it arrived); fix: check the peer's log, the stream was cut")]
    Truncated {
        /// Bytes of the unfinished frame that did arrive.
        buffered: usize,
    },
    /// The peer closed the stream instead of answering a request.
    #[error("the peer closed the control stream without answering (a stock Shadowsocks-2022 server does that; braid server answers)")]
    Closed,
    /// The bytes are not a control frame (too large, or not the expected JSON).
    #[error(transparent)]
    Frame(#[from] FrameError),
}

/// The request that asks a braid relay who it is and what it saw of this connection.
pub fn hello() -> ControlRequest {
    ControlRequest::Hello {
        client_version: env!("CARGO_PKG_VERSION").into(),
    }
}

/// Reads frames from a stream over a kept buffer. Cancel-safe: a `recv` dropped half-way (in a
/// `select!`) loses nothing, because bytes only ever move from the stream into the buffer.
#[derive(Debug)]
pub struct FrameReader<R> {
    reader: R,
    buf: BytesMut,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// A reader with an empty buffer.
    pub fn new(reader: R) -> FrameReader<R> {
        FrameReader {
            reader,
            buf: BytesMut::with_capacity(READ_RESERVE),
        }
    }

    /// The next frame, decoded as `T`. `Ok(None)` only when the peer closed the stream cleanly
    /// between frames; EOF inside a frame and undecodable bytes are errors as soon as they are
    /// seen.
    pub async fn recv<T: DeserializeOwned>(&mut self) -> Result<Option<T>, ConnectionError> {
        loop {
            if let Some((msg, used)) = control::decode::<T>(&self.buf)? {
                self.buf.advance(used);
                return Ok(Some(msg));
            }
            self.buf.reserve(READ_RESERVE);
            if self.reader.read_buf(&mut self.buf).await? == 0 {
                return match self.buf.len() {
                    0 => Ok(None),
                    buffered => Err(ConnectionError::Truncated { buffered }),
                };
            }
        }
    }

    /// Bytes read from the stream but not yet consumed as frames.
    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }

    /// The stream.
    pub fn get_ref(&self) -> &R {
        &self.reader
    }

    /// The stream and the bytes that arrived after the last frame (a speed test's first raw
    /// bytes, for instance).
    pub fn into_parts(self) -> (R, BytesMut) {
        (self.reader, self.buf)
    }
}

/// Writes whole frames to a stream.
#[derive(Debug)]
pub struct FrameWriter<W> {
    writer: W,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    /// A writer over `writer`.
    pub fn new(writer: W) -> FrameWriter<W> {
        FrameWriter { writer }
    }

    /// Encodes `msg` as one frame, writes it and flushes, so it leaves now.
    pub async fn send<T: Serialize>(&mut self, msg: &T) -> Result<(), ConnectionError> {
        self.writer.write_all(&control::encode(msg)).await?;
        self.writer.flush().await?;
        Ok(())
    }
}

/// A control connection: frames both ways over one stream.
#[derive(Debug)]
pub struct Connection<S> {
    reader: FrameReader<S>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// A connection over `stream`, nothing read yet.
    pub fn new(stream: S) -> Connection<S> {
        Connection {
            reader: FrameReader::new(stream),
        }
    }

    /// Sends one frame (written and flushed).
    pub async fn send<T: Serialize>(&mut self, msg: &T) -> Result<(), ConnectionError> {
        FrameWriter::new(&mut self.reader.reader).send(msg).await
    }

    /// Receives one frame; see [`FrameReader::recv`].
    pub async fn recv<T: DeserializeOwned>(&mut self) -> Result<Option<T>, ConnectionError> {
        self.reader.recv().await
    }

    /// Sends `req` and waits for one answer; the peer closing instead is
    /// [`ConnectionError::Closed`].
    pub async fn request<Q: Serialize, A: DeserializeOwned>(
        &mut self,
        req: &Q,
    ) -> Result<A, ConnectionError> {
        self.send(req).await?;
        self.recv().await?.ok_or(ConnectionError::Closed)
    }

    /// Bytes read but not yet consumed as frames.
    pub fn buffered(&self) -> &[u8] {
        self.reader.buffered()
    }

    /// The stream (to read its socket's state; reading or writing it directly would bypass
    /// the buffer).
    pub fn get_ref(&self) -> &S {
        self.reader.get_ref()
    }

    /// The stream and the bytes that arrived after the last frame, for a switch to raw bytes.
    pub fn into_parts(self) -> (S, BytesMut) {
        self.reader.into_parts()
    }

    /// A reader and a writer that can live on different tasks; bytes already buffered stay with
    /// the reader.
    pub fn split(self) -> (FrameReader<ReadHalf<S>>, FrameWriter<WriteHalf<S>>) {
        let FrameReader { reader, buf } = self.reader;
        let (r, w) = tokio::io::split(reader);
        (FrameReader { reader: r, buf }, FrameWriter::new(w))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use braid_proto::control::{ControlResponse, MAX_FRAME};
    use tokio::io::{duplex, DuplexStream};

    fn ping(seq: u64) -> Vec<u8> {
        control::encode(&ControlRequest::Ping { seq })
    }

    fn pair() -> (DuplexStream, Connection<DuplexStream>) {
        let (peer, ours) = duplex(64 * 1024);
        (peer, Connection::new(ours))
    }

    #[tokio::test]
    async fn frame_split_across_reads_is_received_whole() {
        let (mut peer, mut conn) = pair();
        let frame = ping(7);
        let writer = tokio::spawn(async move {
            for b in frame {
                peer.write_all(&[b]).await.unwrap();
                peer.flush().await.unwrap();
                tokio::task::yield_now().await;
            }
            peer
        });
        let got: Option<ControlRequest> = conn.recv().await.unwrap();
        assert_eq!(got, Some(ControlRequest::Ping { seq: 7 }));
        drop(writer.await.unwrap());
        assert!(conn.recv::<ControlRequest>().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn two_frames_in_one_read_are_two_messages() {
        let (mut peer, mut conn) = pair();
        let mut both = ping(1);
        both.extend_from_slice(&ping(2));
        peer.write_all(&both).await.unwrap();
        drop(peer);
        for seq in [1, 2] {
            let got: Option<ControlRequest> = conn.recv().await.unwrap();
            assert_eq!(got, Some(ControlRequest::Ping { seq }));
        }
        assert!(conn.recv::<ControlRequest>().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn garbage_is_an_error_at_once_without_eof() {
        let (mut peer, mut conn) = pair();
        let mut g = 3u32.to_be_bytes().to_vec();
        g.extend_from_slice(b"{{{");
        peer.write_all(&g).await.unwrap();
        // `peer` stays open: the error must not wait for EOF.
        let err = conn.recv::<ControlRequest>().await.unwrap_err();
        assert!(
            matches!(err, ConnectionError::Frame(FrameError::Json(_))),
            "{err}"
        );
        let (mut peer, mut conn) = pair();
        peer.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        let err = conn.recv::<ControlRequest>().await.unwrap_err();
        assert!(matches!(err, ConnectionError::Frame(FrameError::TooLarge(n)) if n > MAX_FRAME));
        drop(peer);
    }

    #[tokio::test]
    async fn eof_mid_frame_is_truncated() {
        let (mut peer, mut conn) = pair();
        let frame = ping(3);
        peer.write_all(&frame[..frame.len() - 2]).await.unwrap();
        drop(peer);
        let err = conn.recv::<ControlRequest>().await.unwrap_err();
        assert!(
            matches!(err, ConnectionError::Truncated { buffered } if buffered == frame.len() - 2),
            "{err}"
        );
        assert!(
            err.to_string().contains("in the middle of a frame"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn clean_eof_between_frames_is_none() {
        let (peer, mut conn) = pair();
        drop(peer);
        assert!(conn.recv::<ControlRequest>().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn bytes_after_a_frame_are_kept_for_the_raw_phase() {
        let (mut peer, mut conn) = pair();
        let mut wire = control::encode(&ControlResponse::Accepted { secs: 1 });
        wire.extend_from_slice(b"raw bytes");
        peer.write_all(&wire).await.unwrap();
        let got: Option<ControlResponse> = conn.recv().await.unwrap();
        assert_eq!(got, Some(ControlResponse::Accepted { secs: 1 }));
        assert_eq!(conn.buffered(), b"raw bytes");
        let (mut stream, early) = conn.into_parts();
        assert_eq!(&early[..], b"raw bytes");
        peer.write_all(b" and more").await.unwrap();
        drop(peer);
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b" and more");
    }

    #[tokio::test]
    async fn request_sends_and_a_silent_close_is_closed() {
        let (peer, mut conn) = pair();
        let relay = tokio::spawn(async move {
            let mut peer = Connection::new(peer);
            let req: Option<ControlRequest> = peer.recv().await.unwrap();
            assert_eq!(req, Some(hello()));
        });
        let err = conn
            .request::<_, ControlResponse>(&hello())
            .await
            .unwrap_err();
        assert!(matches!(err, ConnectionError::Closed), "{err}");
        relay.await.unwrap();
    }

    #[tokio::test]
    async fn split_halves_keep_the_buffer_and_work_apart() {
        let (peer, mut conn) = pair();
        let mut peer = Connection::new(peer);
        let mut both = control::encode(&ControlResponse::Pong { seq: 1 });
        both.extend_from_slice(&control::encode(&ControlResponse::Pong { seq: 2 }));
        // One pong is read through the connection, the second is left in its buffer.
        peer.reader.reader.write_all(&both).await.unwrap();
        let first: Option<ControlResponse> = conn.recv().await.unwrap();
        assert_eq!(first, Some(ControlResponse::Pong { seq: 1 }));
        let (mut r, mut w) = conn.split();
        let reader = tokio::spawn(async move { r.recv::<ControlResponse>().await.unwrap() });
        assert_eq!(
            reader.await.unwrap(),
            Some(ControlResponse::Pong { seq: 2 })
        );
        w.send(&ControlRequest::Ping { seq: 9 }).await.unwrap();
        let got: Option<ControlRequest> = peer.recv().await.unwrap();
        assert_eq!(got, Some(ControlRequest::Ping { seq: 9 }));
    }
}
