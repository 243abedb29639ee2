//! A bare relay: accepts a stream and passes it both ways to one fixed target, and nothing
//! else: no request header, no AEAD, no framing, no idle watch, no limits. Two of them, one in
//! gw behind a capture and one in vps, make the same three TCP hops as braid and
//! shadowsocks-rust (the LAN, the MPTCP uplinks, the relay's server side) with the least work a
//! proxy can do per byte, so the throughput bench can say how much of a proxy's cost is its own
//! and how much is the hops'. Only for the lab: it trusts whoever connects.
//!
//! Two ways to move the bytes:
//! - [`Mode::Copy`]: tokio's `copy_bidirectional_with_sizes` with 64 KiB buffers on a
//!   multi-threaded runtime, the model braid and shadowsocks-rust use (readiness, then a read
//!   into user space and a write out of it), without the AEAD and the framing.
//! - [`Mode::Splice`]: one blocking thread per direction moving the bytes socket → pipe →
//!   socket with splice(2), which never copies them into user space: what is left is the
//!   kernel's own work for the three hops.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;

use tokio::io::AsyncWriteExt;

/// Bytes per read (copy) or per splice: one SS2022 chunk's worth, as braid reads.
const CHUNK: usize = 64 * 1024;

/// How the bytes are moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Read into a 64 KiB buffer and write it out (tokio, as the proxies do).
    Copy,
    /// splice(2) through a pipe, in the kernel only.
    Splice,
}

/// Serves on `listen` (MPTCP when `mptcp_in`, which also accepts plain TCP), relaying every
/// accepted stream to `connect` (over MPTCP when `mptcp_out`). Prints "listening on ADDR" on
/// stdout once it accepts, for whoever waits on it.
pub async fn run(
    listen: SocketAddr,
    connect: SocketAddr,
    mptcp_in: bool,
    mptcp_out: bool,
    mode: Mode,
) -> io::Result<()> {
    let l = braid_sys::socket::listen(
        listen,
        braid_sys::socket::ListenOptions {
            mptcp: mptcp_in,
            fastopen_qlen: None,
            backlog: 128,
        },
    )?;
    let l = tokio::net::TcpListener::from_std(l.listener)?;
    let mut out = tokio::io::stdout();
    out.write_all(format!("listening on {}\n", l.local_addr()?).as_bytes())
        .await?;
    out.flush().await?;
    serve(l, connect, mptcp_out, mode).await
}

/// Relays every stream accepted on `l` to `connect`.
async fn serve(
    l: tokio::net::TcpListener,
    connect: SocketAddr,
    mptcp_out: bool,
    mode: Mode,
) -> io::Result<()> {
    loop {
        let (s, _) = l.accept().await?;
        tokio::spawn(async move {
            if let Err(e) = relay_one(s, connect, mptcp_out, mode).await {
                eprintln!("bare relay: {e}");
            }
        });
    }
}

/// Connects to `to` (as the traffic tool does) and moves the bytes both ways until both
/// directions end.
async fn relay_one(
    mut s: tokio::net::TcpStream,
    to: SocketAddr,
    mptcp: bool,
    mode: Mode,
) -> io::Result<()> {
    let route = crate::traffic::Route {
        mptcp,
        ..crate::traffic::Route::to(to)
    };
    let mut t = crate::traffic::connect_direct(to, route).await?;
    match mode {
        Mode::Copy => {
            tokio::io::copy_bidirectional_with_sizes(&mut s, &mut t, CHUNK, CHUNK).await?;
            Ok(())
        }
        Mode::Splice => {
            let (s, t) = (s.into_std()?, t.into_std()?);
            tokio::task::spawn_blocking(move || splice_both(s, t))
                .await
                .map_err(io::Error::other)?
        }
    }
}

/// Both directions, each on its own blocking thread.
fn splice_both(s: std::net::TcpStream, t: std::net::TcpStream) -> io::Result<()> {
    s.set_nonblocking(false)?;
    t.set_nonblocking(false)?;
    let (s2, t2) = (s.try_clone()?, t.try_clone()?);
    let back = std::thread::spawn(move || splice_one(&t2, &s2));
    let there = splice_one(&s, &t);
    let back = back
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("splice thread panicked")));
    there.and(back)
}

/// Moves `from` → `to` until EOF, then shuts `to`'s write half (half-close, as a proxy must).
fn splice_one(from: &std::net::TcpStream, to: &std::net::TcpStream) -> io::Result<()> {
    use rustix::pipe::{splice, SpliceFlags};
    let (r, w) = rustix::pipe::pipe()?;
    loop {
        let n = splice(from.as_fd(), None, &w, None, CHUNK, SpliceFlags::MOVE)?;
        if n == 0 {
            break;
        }
        let mut left = n;
        while left > 0 {
            let m = splice(&r, None, to.as_fd(), None, left, SpliceFlags::MOVE)?;
            if m == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "splice wrote nothing",
                ));
            }
            left -= m;
        }
    }
    to.shutdown(std::net::Shutdown::Write)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// The target echoes what it reads and, once the client's side ended, writes "END" and
    /// closes: the client sees all of it only if the relay passed both directions and both
    /// half-closes.
    async fn target() -> SocketAddr {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let (mut r, mut w) = s.split();
            tokio::io::copy(&mut r, &mut w).await.unwrap();
            w.write_all(b"END").await.unwrap();
            w.shutdown().await.unwrap();
        });
        addr
    }

    async fn through(mode: Mode) {
        let to = target().await;
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let relay = l.local_addr().unwrap();
        tokio::spawn(serve(l, to, false, mode));
        let mut sent = vec![0u8; 3 << 20];
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for b in sent.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        let c = tokio::net::TcpStream::connect(relay).await.unwrap();
        let (mut r, mut w) = c.into_split();
        let data = sent.clone();
        let writer = tokio::spawn(async move {
            w.write_all(&data).await.unwrap();
            w.shutdown().await.unwrap();
        });
        let mut got = Vec::new();
        // A relay that lost a half-close never ends the stream: fail, don't hang.
        tokio::time::timeout(std::time::Duration::from_secs(20), r.read_to_end(&mut got))
            .await
            .unwrap_or_else(|_| panic!("{mode:?}: no EOF after {} bytes", got.len()))
            .unwrap();
        writer.await.unwrap();
        sent.extend_from_slice(b"END");
        assert_eq!(got.len(), sent.len(), "{mode:?}: length");
        assert!(got == sent, "{mode:?}: bytes differ");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn copy_passes_both_directions_and_half_closes() {
        through(Mode::Copy).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn splice_passes_both_directions_and_half_closes() {
        through(Mode::Splice).await;
    }
}
