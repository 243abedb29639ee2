//! Copying bytes both ways between two streams, with half-close, bounded buffers and an idle
//! timeout.
//!
//! `tokio::io::copy_bidirectional_with_sizes` already does the hard part right: when one side
//! reads EOF it shuts down the write half of the other and keeps the opposite direction running
//! (half-close), with one fixed buffer per direction. What it lacks is an idle timeout that looks
//! at *both* directions, so each stream is wrapped in [`Metered`], which stamps every successful
//! read, and a watchdog ends the relay when neither side moved for `idle`.
//!
//! [`Metered`] also keeps writes stable across `Pending`. tokio's copy tops its buffer up while a
//! write is pending and retries with a longer slice; the shadowsocks crate's encrypting writer,
//! once pending, finishes the chunk it already sealed and then reports the *new* slice's length
//! as written, so the top-up bytes were silently lost. Retrying with exactly the length of the
//! pending call makes every writer's answer true.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// Buffer per direction: exactly the most payload one SS2022 chunk holds (0xFFFF). With 64 KiB
/// every full read became a chunk of 65535 bytes and one of a single byte: two AEAD seals, two
/// writes and a tiny packet per 64 KiB.
pub const BUFFER: usize = 0xFFFF;
/// The first read of each direction; each read after it may be twice as long, up to
/// [`BUFFER`]. What is read from the plain side becomes one AEAD chunk, and the receiver can
/// open (and pass on) a chunk only once all of it has arrived: a 64 KiB first chunk needs three
/// round trips of a fresh congestion window (in the lab the first byte of a 100 kB answer came
/// after 37 ms, of a 100-byte one after 11 ms). Small first chunks fit the first flights.
pub const FIRST_READ: usize = 8 * 1024;

/// The receive buffer asked for a relay connection that sat idle after its first bytes (a warm
/// pool's, on both ends), where the kernel's autotuning stands still for about as long as the
/// connection was idle (docs/MPTCP-AUTOTUNE-AFTER-IDLE.md): as much as autotuning could give a
/// fresh connection. The kernel caps the request at half of
/// `net.ipv4.tcp_rmem`'s maximum (16 MiB of this lab's 32 MiB, 3 MiB of Debian's 6 MiB), and
/// the buffer is a ceiling, charged only for bytes the reader has not taken yet. 2 MiB was not
/// enough: in the unshaped lab pooled uploads stayed at a median 0.82× a fresh connection's,
/// with bursts of connection-level re-sends (a closed window the sender waited out); at the cap
/// they ran at 0.94–1.13× (docs/BENCHMARKS.md, "The warm pool's receive buffer").
pub const IDLED_RCVBUF: usize = i32::MAX as usize;

/// Grows the receive buffer of `sock`, `what` in the debug line if the kernel refuses, to
/// [`IDLED_RCVBUF`] without locking it, so autotuning goes on (`braid_sys::rcvbuf`).
pub fn grow_idled_rcvbuf<S: std::os::fd::AsFd>(sock: &S, what: &str) {
    if let Err(e) = braid_sys::rcvbuf::grow(sock, IDLED_RCVBUF) {
        tracing::debug!("{what}: growing the receive buffer: {e}");
    }
}

/// Bytes moved by a finished relay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Moved {
    /// From the first stream to the second.
    pub up: u64,
    /// From the second stream to the first.
    pub down: u64,
}

/// How a relay ended.
#[derive(Debug)]
pub enum End {
    /// Both directions reached EOF.
    Done,
    /// Neither direction moved for the idle timeout.
    Idle,
    /// A read or write failed (reset, broken pipe…).
    Error(io::Error),
}

struct Activity {
    start: Instant,
    last_ms: AtomicU64,
    bulk: Option<BulkWatch>,
}

/// Calls its action once either direction of a relay has read `after` bytes: the relay's path
/// manager lets a connection bond only then (`braid_proto::subflow_priority`).
pub struct BulkWatch {
    after: u64,
    fired: std::sync::atomic::AtomicBool,
    action: Box<dyn Fn() + Send + Sync>,
}

impl BulkWatch {
    /// A watch that runs `action` (which must not block: it runs inside a read) once after
    /// `after` bytes in one direction.
    pub fn new(after: u64, action: impl Fn() + Send + Sync + 'static) -> BulkWatch {
        BulkWatch {
            after,
            fired: std::sync::atomic::AtomicBool::new(false),
            action: Box::new(action),
        }
    }

    fn moved(&self, total: u64) {
        if total >= self.after && !self.fired.swap(true, Ordering::Relaxed) {
            (self.action)();
        }
    }
}

impl Activity {
    fn touch(&self) {
        self.last_ms
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
    fn idle_for(&self) -> Duration {
        self.start
            .elapsed()
            .saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// A stream that counts what it reads, stamps the shared activity clock, grows its reads from
/// [`FIRST_READ`] to [`BUFFER`], and retries a pending write with the same length.
struct Metered<S> {
    inner: S,
    read: Arc<AtomicU64>,
    activity: Arc<Activity>,
    pending_write: Option<usize>,
    read_limit: usize,
}

impl<S> Metered<S> {
    fn new(inner: S, read: Arc<AtomicU64>, activity: Arc<Activity>) -> Self {
        Metered {
            inner,
            read,
            activity,
            pending_write: None,
            read_limit: FIRST_READ,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Metered<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let limit = self.read_limit.min(buf.remaining());
        // The copy's buffer is initialised once, so this costs nothing after the first read.
        let mut part = ReadBuf::new(buf.initialize_unfilled_to(limit));
        let r = Pin::new(&mut self.inner).poll_read(cx, &mut part);
        let n = part.filled().len();
        if n > 0 {
            buf.advance(n);
            let total = self.read.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
            self.activity.touch();
            if let Some(b) = &self.activity.bulk {
                b.moved(total);
            }
            self.read_limit = (self.read_limit * 2).min(BUFFER);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Metered<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let len = self.pending_write.map_or(buf.len(), |p| p.min(buf.len()));
        match Pin::new(&mut self.inner).poll_write(cx, &buf[..len]) {
            Poll::Pending => {
                self.pending_write = Some(len);
                Poll::Pending
            }
            done => {
                self.pending_write = None;
                done
            }
        }
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Relays between `a` and `b` until both directions end, one fails, or both are idle for `idle`.
/// The byte counts are exact even when the relay ends early.
pub async fn relay<A, B>(a: &mut A, b: &mut B, idle: Duration) -> (Moved, End)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    relay_until(a, b, idle, std::future::pending()).await
}

/// [`relay`], also ended by `stop` (as [`End::Error`] with its error): for a relay that
/// something outside the two streams can tell is dead, such as a connection the kernel left
/// without a subflow.
pub async fn relay_until<A, B, F>(a: &mut A, b: &mut B, idle: Duration, stop: F) -> (Moved, End)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
    F: std::future::Future<Output = io::Error>,
{
    relay_watched(a, b, idle, stop, None).await
}

/// [`relay_until`], also firing `bulk` when either direction has read its bytes.
pub async fn relay_watched<A, B, F>(
    a: &mut A,
    b: &mut B,
    idle: Duration,
    stop: F,
    bulk: Option<BulkWatch>,
) -> (Moved, End)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
    F: std::future::Future<Output = io::Error>,
{
    let activity = Arc::new(Activity {
        start: Instant::now(),
        last_ms: AtomicU64::new(0),
        bulk,
    });
    let (up, down) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut ma = Metered::new(a, up.clone(), activity.clone());
    let mut mb = Metered::new(b, down.clone(), activity.clone());
    let copy = tokio::io::copy_bidirectional_with_sizes(&mut ma, &mut mb, BUFFER, BUFFER);
    tokio::pin!(copy);
    tokio::pin!(stop);
    let tick = (idle / 4).max(Duration::from_millis(50));
    let end = loop {
        tokio::select! {
            r = &mut copy => break match r { Ok(_) => End::Done, Err(e) => End::Error(e) },
            e = &mut stop => break End::Error(e),
            _ = tokio::time::sleep(tick) => {
                if activity.idle_for() >= idle {
                    break End::Idle;
                }
            }
        }
    };
    (
        Moved {
            up: up.load(Ordering::Relaxed),
            down: down.load(Ordering::Relaxed),
        },
        end,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::time::Instant;

    /// Behaves like the shadowsocks crate's encrypting writer: a pending write keeps what it was
    /// first given, and its completion reports the length of whatever slice the retry passed.
    struct SealingWriter {
        sealed: Option<Vec<u8>>,
        out: Vec<u8>,
        ready: bool,
    }

    impl AsyncWrite for SealingWriter {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            if self.sealed.is_none() {
                self.sealed = Some(buf.to_vec());
            }
            if !self.ready {
                self.ready = true;
                return Poll::Pending;
            }
            self.ready = false;
            let sealed = self.sealed.take().unwrap_or_default();
            self.out.extend_from_slice(&sealed);
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn metered_write_retried_with_a_longer_slice_reports_only_what_was_written() {
        let activity = Arc::new(Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            bulk: None,
        });
        let inner = SealingWriter {
            sealed: None,
            out: Vec::new(),
            ready: false,
        };
        let mut m = Metered::new(inner, Arc::new(AtomicU64::new(0)), activity);
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut m)
            .poll_write(&mut cx, b"0123456789")
            .is_pending());
        // The caller topped its buffer up while the write was pending.
        match Pin::new(&mut m).poll_write(&mut cx, b"0123456789abcdefghij") {
            Poll::Ready(Ok(n)) => assert_eq!(n, 10, "claimed bytes that were never written"),
            other => panic!("{other:?}"),
        }
        assert_eq!(m.inner.out, b"0123456789");
    }

    /// Ends at once when read, and records the length of every write (one AEAD chunk each on an
    /// SS2022 stream).
    #[derive(Default)]
    struct Chunks(Vec<usize>);

    impl AsyncRead for Chunks {
        fn poll_read(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            _buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncWrite for Chunks {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.0.push(buf.len());
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn relay_first_chunks_are_small_and_grow_to_the_largest_ss2022_chunk() {
        let (mut client, mut a) = tokio::io::duplex(1 << 20);
        client.write_all(&vec![1u8; 300_000]).await.unwrap();
        client.shutdown().await.unwrap();
        let mut b = Chunks::default();
        let (moved, _) = relay(&mut a, &mut b, Duration::from_secs(5)).await;
        assert_eq!(moved.up, 300_000);
        assert_eq!(&b.0[..5], &[8192, 16384, 32768, 65535, 65535]);
        assert!(b.0.iter().all(|&n| n <= 0xFFFF), "{:?}", b.0);
    }

    #[tokio::test]
    async fn relay_half_close_delivers_reply_after_request_eof() {
        let (mut client, mut a) = tokio::io::duplex(1024);
        let (mut b, mut server) = tokio::io::duplex(1024);
        let task = tokio::spawn(async move { relay(&mut a, &mut b, Duration::from_secs(5)).await });
        client.write_all(b"request").await.unwrap();
        client.shutdown().await.unwrap();
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"request");
        server.write_all(b"reply after EOF").await.unwrap();
        server.shutdown().await.unwrap();
        let mut back = Vec::new();
        client.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"reply after EOF");
        let (moved, end) = task.await.unwrap();
        assert_eq!(moved, Moved { up: 7, down: 15 });
        assert!(matches!(end, End::Done));
    }

    #[tokio::test(start_paused = true)]
    async fn relay_idle_in_both_directions_ends() {
        let (_client, mut a) = tokio::io::duplex(1024);
        let (mut b, _server) = tokio::io::duplex(1024);
        let (moved, end) = relay(&mut a, &mut b, Duration::from_secs(30)).await;
        assert!(matches!(end, End::Idle));
        assert_eq!(moved, Moved::default());
    }

    #[tokio::test]
    async fn relay_until_ends_at_stop_with_its_error_and_exact_counts() {
        let (mut client, mut a) = tokio::io::duplex(1024);
        let (mut b, mut server) = tokio::io::duplex(1024);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let stop = async move {
            let _ = rx.await;
            io::Error::other("no subflow left")
        };
        let task = tokio::spawn(async move {
            relay_until(&mut a, &mut b, Duration::from_secs(60), stop).await
        });
        client.write_all(b"abc").await.unwrap();
        let mut got = [0u8; 3];
        server.read_exact(&mut got).await.unwrap();
        // Both streams are open and quiet: only the stop can end it.
        tx.send(()).unwrap();
        let (moved, end) = task.await.unwrap();
        assert_eq!(moved, Moved { up: 3, down: 0 });
        match end {
            End::Error(e) => assert_eq!(e.to_string(), "no subflow left"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn relay_one_way_traffic_keeps_it_alive() {
        let (mut client, mut a) = tokio::io::duplex(1 << 20);
        let (mut b, mut server) = tokio::io::duplex(1 << 20);
        let task =
            tokio::spawn(async move { relay(&mut a, &mut b, Duration::from_secs(10)).await });
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_secs(6)).await;
            client.write_all(b"x").await.unwrap();
            let mut one = [0u8; 1];
            server.read_exact(&mut one).await.unwrap();
        }
        assert!(!task.is_finished());
        drop(client);
        drop(server);
        let (moved, _) = task.await.unwrap();
        assert_eq!(moved.up, 5);
    }
}
