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

use std::io;
use std::ops::Deref;
use std::os::fd::{AsFd, BorrowedFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The connection's stream; see the module documentation.
#[derive(Debug)]
pub struct SharedStream(Arc<TcpStream>);

/// A second owner of a [`SharedStream`]'s socket, for inspection only.
#[derive(Debug, Clone)]
pub struct SocketHandle(Arc<TcpStream>);

impl SharedStream {
    /// Takes over a connected stream.
    pub fn new(stream: TcpStream) -> SharedStream {
        SharedStream(Arc::new(stream))
    }

    /// A handle for the status registry.
    pub fn handle(&self) -> SocketHandle {
        SocketHandle(self.0.clone())
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
        &self.0
    }
}

impl AsFd for SharedStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
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
        loop {
            ready!(self.0.poll_read_ready(cx))?;
            // `try_read` clears the readiness it used up when the socket has nothing after all,
            // so the next poll waits for new data.
            match self.0.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
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
            ready!(self.0.poll_write_ready(cx))?;
            match self.0.try_write(buf) {
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
        let r = socket2::SockRef::from(&*self.0).shutdown(std::net::Shutdown::Write);
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
