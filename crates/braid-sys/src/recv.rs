//! `recv(2)` into memory nobody has initialised.
//!
//! tokio's `try_read` takes an initialised slice, so a `poll_read` built on it must zero the
//! caller's unfilled buffer first (`ReadBuf::initialize_unfilled`). The shadowsocks crate's
//! reader hands over a fresh uninitialised buffer for every chunk, so that zeroing cost a memset
//! of every byte the gateway received from the relay (2 % of its CPU in a perf profile of the
//! unshaped benchmark). Here the kernel writes straight into the unfilled part.
#![allow(unsafe_code)]

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::AsRawFd;

use tokio::io::{Interest, ReadBuf};
use tokio::net::TcpStream;

/// Reads what `stream` holds into the unfilled part of `buf` and marks it filled; returns how
/// many bytes (0 at EOF). Like tokio's `try_read`: `WouldBlock` when there is nothing, which
/// also clears the stream's read readiness, so the caller waits for new data.
pub fn try_read_uninit(stream: &TcpStream, buf: &mut ReadBuf<'_>) -> io::Result<usize> {
    stream.try_io(Interest::READABLE, || {
        // SAFETY: the slice is written only by recv below and read by nobody before
        // `assume_init` marks exactly the bytes recv wrote.
        let dst: &mut [MaybeUninit<u8>] = unsafe { buf.unfilled_mut() };
        // SAFETY: `dst` is valid for writes of `dst.len()` bytes for the whole call, and the
        // descriptor stays open while `stream` is borrowed.
        let n = unsafe { libc::recv(stream.as_raw_fd(), dst.as_mut_ptr().cast(), dst.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        // SAFETY: recv initialised the first `n` bytes of the unfilled part.
        unsafe { buf.assume_init(n) };
        buf.advance(n);
        Ok(n)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn reads_into_an_uninitialised_buffer_and_says_would_block_when_empty() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (mut s, _) = l.accept().await.unwrap();
        let mut storage = [MaybeUninit::<u8>::uninit(); 64];
        let mut buf = ReadBuf::uninit(&mut storage);
        let e = try_read_uninit(&c, &mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        s.write_all(b"hello").await.unwrap();
        c.readable().await.unwrap();
        assert_eq!(try_read_uninit(&c, &mut buf).unwrap(), 5);
        assert_eq!(buf.filled(), b"hello");
        drop(s);
        c.readable().await.unwrap();
        assert_eq!(try_read_uninit(&c, &mut buf).unwrap(), 0, "EOF");
    }
}
