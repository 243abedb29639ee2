//! A tiny HTTP/1.1 server and client for the fetch benchmark, so it needs no web server or curl:
//! `GET /N` is answered with N bytes and a `Content-Length`, header and body in one write; the
//! client times the first byte of the answer and the last byte of the body from before its
//! connect, as a browser's fetch would see them. Also reads a daemon's `/api/status`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The largest body served.
pub const MAX_BODY: usize = 16 << 20;

/// A server answering `GET /N` on its own thread until dropped.
pub struct HttpServer {
    listener: Arc<TcpListener>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Serves `listener` (made inside the lab's srv namespace), one thread per connection.
    pub fn start(listener: TcpListener) -> HttpServer {
        let listener = Arc::new(listener);
        let stop = Arc::new(AtomicBool::new(false));
        let (l, s) = (listener.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let body: Arc<Vec<u8>> = Arc::new((0..MAX_BODY).map(|i| (i % 251) as u8).collect());
            while !s.load(Ordering::Relaxed) {
                let Ok((c, _)) = l.accept() else { continue };
                let body = body.clone();
                std::thread::spawn(move || {
                    let _ = answer(c, &body);
                });
            }
        });
        HttpServer {
            listener,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Shutting the listening socket's read side ends a blocked accept() (EINVAL).
        let _ =
            nix::sys::socket::shutdown(self.listener.as_raw_fd(), nix::sys::socket::Shutdown::Read);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads one request and answers it.
fn answer(mut c: TcpStream, body: &[u8]) -> std::io::Result<()> {
    c.set_nodelay(true)?;
    c.set_read_timeout(Some(Duration::from_secs(30)))?;
    let head = read_head(&mut c)?;
    let n = std::str::from_utf8(&head)
        .ok()
        .and_then(|h| h.strip_prefix("GET /"))
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|n| *n <= MAX_BODY);
    let mut out = Vec::new();
    match n {
        Some(n) => {
            write!(
                out,
                "HTTP/1.1 200 OK\r\nContent-Length: {n}\r\nConnection: close\r\n\r\n"
            )?;
            out.extend_from_slice(&body[..n]);
        }
        None => out.extend_from_slice(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"),
    }
    c.write_all(&out)?;
    c.shutdown(std::net::Shutdown::Write)
}

/// Reads until the end of the request head (a blank line).
fn read_head(c: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::new();
    let mut buf = [0u8; 2048];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = c.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.extend_from_slice(&buf[..n]);
    }
    Ok(head)
}

/// One fetch's times, from before the connect.
#[derive(Debug, Clone, Copy)]
pub struct Fetched {
    /// The answer's first byte.
    pub first_byte_ms: f64,
    /// The body's last byte.
    pub total_ms: f64,
}

/// `GET /size` from `target` on a fresh connection (MPTCP with `mptcp`). Fails on a wrong
/// length or after `limit`.
pub fn fetch(
    target: SocketAddr,
    size: usize,
    limit: Duration,
    mptcp: bool,
) -> Result<Fetched, String> {
    let start = Instant::now();
    let mut c = connect(target, limit, mptcp).map_err(|e| format!("connect: {e}"))?;
    c.set_nodelay(true).map_err(|e| e.to_string())?;
    c.set_read_timeout(Some(limit)).map_err(|e| e.to_string())?;
    write!(
        c,
        "GET /{size} HTTP/1.1\r\nHost: srv\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("request: {e}"))?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = Vec::new();
    let mut first = None;
    let mut body_at = None;
    loop {
        let n = c.read(&mut buf).map_err(|e| format!("answer: {e}"))?;
        if n == 0 {
            return Err(format!("closed after {} bytes", got.len()));
        }
        first.get_or_insert_with(|| start.elapsed());
        got.extend_from_slice(&buf[..n]);
        if body_at.is_none() {
            body_at = got.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4);
        }
        if let Some(at) = body_at {
            if got.len() - at >= size {
                if got.len() - at > size {
                    return Err(format!("{} bytes of body, {size} asked", got.len() - at));
                }
                break;
            }
        }
        if start.elapsed() > limit {
            return Err(format!("not done within {limit:?}"));
        }
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    Ok(Fetched {
        first_byte_ms: ms(first.unwrap_or_default()),
        total_ms: ms(start.elapsed()),
    })
}

fn connect(target: SocketAddr, limit: Duration, mptcp: bool) -> std::io::Result<TcpStream> {
    let (sock, _, why) = braid_sys::socket::stream_socket(&target, mptcp)?;
    if let Some(why) = why {
        return Err(std::io::Error::other(format!("no MPTCP: {why}")));
    }
    sock.set_nonblocking(false)?;
    sock.connect_timeout(&target.into(), limit)?;
    Ok(sock.into())
}

/// `GET /api/status` from a daemon's status API (in the caller's namespace), as JSON.
pub fn status(addr: SocketAddr) -> Result<serde_json::Value, String> {
    let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("status API {addr}: {e}"))?;
    c.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    write!(
        c,
        "GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut all = Vec::new();
    c.read_to_end(&mut all).map_err(|e| e.to_string())?;
    let at = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no HTTP head in the status answer")?;
    serde_json::from_slice(&all[at + 4..]).map_err(|e| format!("status JSON: {e}"))
}
