//! One TCP/MPTCP socket held by two owners: the connection's task, which reads and writes it,
//! and the status registry, which only asks the kernel about it (`MPTCP_INFO`, subflow
//! addresses). One descriptor per relayed socket, where a `dup` for status made two.
//!
//! ```text
//!  connection task ── SharedStream (AsyncRead + AsyncWrite) ─┐
//!                                                           ├─ Arc<TcpStream> ── one fd
//!  status registry ── SocketHandle (AsFd, getsockopt only) ──┘
//! ```
//!
//! tokio's `TcpStream` does its I/O through `&self` (readiness, then `try_read`/`try_write`), so
//! the stream works through the `Arc` exactly as it would owned. The descriptor closes when the
//! last owner lets go: the registry entry goes with its guard, at the end of the connection.
//!
//! Reads ahead. The shadowsocks crate reads a Shadowsocks-2022 stream exactly: 18 bytes (the
//! sealed length), then the chunk (up to 65,551 bytes), each a `recv`. On an MPTCP socket every
//! `recv` takes the lock of each subflow (`mptcp_cleanup_rbuf`), contended by the softirq
//! filling them: in a perf profile of the unshaped benchmark that lock was 11 % of the gateway's
//! CPU. Once a connection streams (a read brought 16 KiB or more), a read smaller than
//! [`READ_AHEAD`] `recv`s up to [`READ_AHEAD`] bytes instead and serves the next reads from them;
//! a large read goes straight to the kernel. A connection that does not stream (a handshake, an
//! idle one) never allocates the buffer: with one per handshake, 8,300 connections opened at once
//! left the relay at 135 KiB of RSS each instead of 36.

use std::io;
use std::ops::Deref;
use std::os::fd::{AsFd, BorrowedFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// How much a small read asks the kernel for (see the module documentation): two of the
/// largest SS2022 chunks.
pub const READ_AHEAD: usize = 128 * 1024;
/// A read shorter than this is not streaming: small reads after it go straight to the kernel,
/// and a read-ahead buffer is freed once it empties.
const KEEP_AFTER: usize = 16 * 1024;

/// The connection's stream; see the module documentation.
#[derive(Debug)]
pub struct SharedStream {
    socket: Arc<TcpStream>,
    /// Bytes read ahead; `ahead[at..]` are not yet served.
    ahead: Vec<u8>,
    at: usize,
    /// The last read's length (from the kernel, direct or ahead).
    last_fill: usize,
}

/// A second owner of a [`SharedStream`]'s socket, for inspection only.
#[derive(Debug, Clone)]
pub struct SocketHandle(Arc<TcpStream>);

impl SharedStream {
    /// Takes over a connected stream.
    pub fn new(stream: TcpStream) -> SharedStream {
        SharedStream {
            socket: Arc::new(stream),
            ahead: Vec::new(),
            at: 0,
            last_fill: 0,
        }
    }

    /// A handle for the status registry.
    pub fn handle(&self) -> SocketHandle {
        SocketHandle(self.socket.clone())
    }

    /// Serves read-ahead bytes into `buf`; false when there are none.
    fn serve_ahead(&mut self, buf: &mut ReadBuf<'_>) -> bool {
        let rest = &self.ahead[self.at..];
        if rest.is_empty() {
            return false;
        }
        let n = rest.len().min(buf.remaining());
        buf.put_slice(&rest[..n]);
        self.at += n;
        if self.at == self.ahead.len() {
            self.at = 0;
            if self.last_fill < KEEP_AFTER {
                self.ahead = Vec::new();
            } else {
                self.ahead.clear();
            }
        }
        true
    }
}

impl From<TcpStream> for SharedStream {
    fn from(s: TcpStream) -> Self {
        SharedStream::new(s)
    }
}

/// Gives the `&self` methods of the stream (addresses, options).
impl Deref for SharedStream {
    type Target = TcpStream;
    fn deref(&self) -> &TcpStream {
        &self.socket
    }
}

impl AsFd for SharedStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

impl AsFd for SocketHandle {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl AsyncRead for SharedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.serve_ahead(buf) {
            return Poll::Ready(Ok(()));
        }
        loop {
            ready!(this.socket.poll_read_ready(cx))?;
            // A read that clears readiness when the socket has nothing after all, so the next
            // poll waits for new data.
            // Only a streaming connection (its last read brought at least KEEP_AFTER bytes)
            // reads ahead: a handshake or an idle connection never allocates the buffer.
            let r = if buf.remaining() >= READ_AHEAD || this.last_fill < KEEP_AFTER {
                braid_sys::recv::try_read_uninit(&this.socket, buf).map(|n| this.last_fill = n)
            } else {
                this.ahead.reserve(READ_AHEAD);
                this.socket.try_read_buf(&mut this.ahead).map(|n| {
                    this.last_fill = n;
                    this.serve_ahead(buf);
                })
            };
            match r {
                Ok(()) => return Poll::Ready(Ok(())),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Nothing came: a connection that is not streaming waits without a buffer
                    // (the load benchmark's held connections kept 128 KiB each).
                    if this.ahead.is_empty() && this.last_fill < KEEP_AFTER {
                        this.ahead = Vec::new();
                    }
                    continue;
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for SharedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.socket.poll_write_ready(cx))?;
            match self.socket.try_write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => return Poll::Ready(r),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// Half-close: FIN to the peer, reading goes on (as `TcpStream`'s own shutdown).
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = socket2::SockRef::from(&*self.socket).shutdown(std::net::Shutdown::Write);
        Poll::Ready(match r {
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
            r => r,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    async fn pair() -> (SharedStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (s, _) = l.accept().await.unwrap();
        (SharedStream::new(c), s)
    }

    #[tokio::test]
    async fn reads_writes_and_half_closes_through_the_arc() {
        let (mut shared, mut peer) = pair().await;
        let handle = shared.handle();
        let big = vec![5u8; 4 << 20];
        let writer = {
            let big = big.clone();
            tokio::spawn(async move {
                shared.write_all(&big).await.unwrap();
                shared.shutdown().await.unwrap();
                let mut back = Vec::new();
                shared.read_to_end(&mut back).await.unwrap();
                back
            })
        };
        let mut got = Vec::new();
        peer.read_to_end(&mut got).await.unwrap();
        assert_eq!(got.len(), big.len());
        // The handle sees the same socket while the task owns the stream.
        assert!(socket2::SockRef::from(&handle).peer_addr().is_ok());
        peer.write_all(b"after FIN").await.unwrap();
        drop(peer);
        assert_eq!(writer.await.unwrap(), b"after FIN");
    }

    #[tokio::test]
    async fn small_and_large_reads_in_any_order_get_every_byte_once_in_order() {
        let (mut shared, mut peer) = pair().await;
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            for piece in sent.chunks(70_001) {
                peer.write_all(piece).await.unwrap();
            }
        });
        // The crate's pattern (18, then a chunk) and some others, around READ_AHEAD.
        let sizes = [
            18,
            65_551,
            1,
            READ_AHEAD - 1,
            READ_AHEAD,
            READ_AHEAD + 3,
            7,
            100,
        ];
        let mut got = Vec::new();
        let mut i = 0;
        while got.len() < data.len() {
            let n = sizes[i % sizes.len()].min(data.len() - got.len());
            let mut part = vec![0u8; n];
            shared.read_exact(&mut part).await.unwrap();
            got.extend_from_slice(&part);
            i += 1;
        }
        writer.await.unwrap();
        assert!(got == data, "bytes differ");
        // A short fill does not keep its buffer once served.
        assert!(shared.ahead.capacity() == 0 || shared.last_fill >= KEEP_AFTER);
    }

    #[tokio::test]
    async fn idle_connection_after_a_small_request_holds_no_buffer() {
        let (mut shared, mut peer) = pair().await;
        peer.write_all(b"a short request").await.unwrap();
        let mut part = [0u8; 15];
        shared.read_exact(&mut part).await.unwrap();
        assert_eq!(&part, b"a short request");
        assert_eq!(shared.ahead.capacity(), 0);
        // Waiting for more: the readiness left from the request makes the next poll try a read
        // that finds nothing, and the wait must not keep the buffer that read reserved.
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut one = [0u8; 18];
        let mut buf = ReadBuf::new(&mut one);
        assert!(Pin::new(&mut shared)
            .poll_read(&mut cx, &mut buf)
            .is_pending());
        assert_eq!(shared.ahead.capacity(), 0, "an idle wait holds a buffer");
    }

    #[tokio::test]
    async fn descriptor_closes_with_the_last_owner() {
        let (shared, mut peer) = pair().await;
        let handle = shared.handle();
        drop(shared);
        let mut one = [0u8; 1];
        let pending =
            tokio::time::timeout(std::time::Duration::from_millis(100), peer.read(&mut one)).await;
        assert!(pending.is_err(), "closed while the handle still holds it");
        drop(handle);
        assert_eq!(peer.read(&mut one).await.unwrap(), 0);
    }
}
