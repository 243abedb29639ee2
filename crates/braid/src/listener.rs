//! The one accept loop, in the manner of mini-redis's `Listener`: the relay, the transparent
//! capture and the SOCKS5 listener all run on it.
//!
//! ```text
//!  accept ─► spawn handler(stream, peer, shutdown) into a JoinSet   (one task per connection)
//!    │ error (EMFILE, ENOBUFS, …): pause 50 ms … 1 s, say so at most every 10 s
//!  shutdown ─► stop accepting ─► connections finish within the grace ─► the rest are aborted
//! ```
//!
//! Listeners are bound by the caller and passed in, so tests can bind port 0 on loopback, and
//! the daemons' `run` can be driven without root.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinError, JoinSet};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::shutdown::Shutdown;

/// How long connections may go on after shutdown before they are aborted: long enough for a
/// request in flight to finish, short of the 10 s a service manager waits before SIGKILL.
pub const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// What a listener does with each connection it accepts.
pub trait Handler: Send + Sync + 'static {
    /// Serves one connection until it ends. `shutdown` fires when the listener starts to drain:
    /// a handler waiting for a request should return then; one moving bytes may go on until
    /// the grace period ends, when its task is aborted.
    fn handle(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        shutdown: Shutdown,
    ) -> impl Future<Output = ()> + Send;
}

/// An accept loop over a bound listener, with its connections' tasks.
pub struct Listener<H> {
    what: &'static str,
    listener: TcpListener,
    handler: Arc<H>,
    grace: Duration,
}

/// What a listener did, once it has drained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drained {
    /// Connections accepted in all.
    pub accepted: u64,
    /// Connections still open when the grace period ended, and aborted.
    pub aborted: usize,
}

impl<H: Handler> Listener<H> {
    /// A listener called `what` in logs (e.g. "SOCKS5"), serving connections with `handler`.
    pub fn new(what: &'static str, listener: TcpListener, handler: Arc<H>) -> Listener<H> {
        Listener {
            what,
            listener,
            handler,
            grace: DRAIN_GRACE,
        }
    }

    /// Replaces [`DRAIN_GRACE`].
    pub fn with_grace(mut self, grace: Duration) -> Listener<H> {
        self.grace = grace;
        self
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts until `shutdown`, then drains: returns once every connection has finished or
    /// been aborted.
    pub async fn run(self, mut shutdown: Shutdown) -> Drained {
        let mut tasks = JoinSet::new();
        let mut backoff = AcceptBackoff::default();
        let mut accepted = 0u64;
        loop {
            tokio::select! {
                _ = shutdown.wait() => break,
                Some(done) = tasks.join_next(), if !tasks.is_empty() => self.reap(done),
                r = self.listener.accept() => match r {
                    Ok((stream, peer)) => {
                        backoff.on_success();
                        accepted += 1;
                        let handler = self.handler.clone();
                        let peer = braid_sys::socket::normalize(peer);
                        let shutdown = shutdown.clone();
                        tasks.spawn(async move { handler.handle(stream, peer, shutdown).await });
                    }
                    Err(e) => {
                        let (pause, say) = backoff.on_error(Instant::now());
                        if let Some(unsaid) = say {
                            self.report_accept_error(&e, pause, unsaid);
                        }
                        tokio::select! {
                            _ = tokio::time::sleep(pause) => {}
                            _ = shutdown.wait() => break,
                        }
                    }
                }
            }
        }
        let aborted = self.drain(tasks).await;
        Drained { accepted, aborted }
    }

    /// Lets the open connections finish within the grace period, then aborts the rest.
    async fn drain(&self, mut tasks: JoinSet<()>) -> usize {
        if tasks.is_empty() {
            return 0;
        }
        info!(
            "{} listener: stopped accepting; waiting up to {:?} for {} connection(s)",
            self.what,
            self.grace,
            tasks.len()
        );
        let finished = tokio::time::timeout(self.grace, async {
            while let Some(done) = tasks.join_next().await {
                self.reap(done);
            }
        })
        .await;
        if finished.is_ok() {
            return 0;
        }
        let left = tasks.len();
        tasks.shutdown().await;
        info!(
            "{} listener: aborted {left} connection(s) still open after {:?}",
            self.what, self.grace
        );
        left
    }

    fn report_accept_error(&self, e: &io::Error, pause: Duration, unsaid: u64) {
        let since = if unsaid > 0 {
            format!(" (and {unsaid} more times since the last report)")
        } else {
            String::new()
        };
        let fix = if e.raw_os_error() == Some(libc::EMFILE) {
            "; fix: raise the open-file limit (LimitNOFILE= in the service, or ulimit -n)"
        } else {
            ""
        };
        warn!(
            "{} listener: accept failed: {e}{since}; retrying in {pause:?}{fix}",
            self.what
        );
    }

    fn reap(&self, done: Result<(), JoinError>) {
        if let Err(e) = done {
            if e.is_panic() {
                warn!("{} listener: a connection's task panicked: {e}", self.what);
            }
        }
    }
}

/// Paces retries after failed accepts. Errors such as EMFILE clear only when connections
/// close, so an immediate retry would spin; the pause doubles from [`AcceptBackoff::MIN`] to
/// [`AcceptBackoff::MAX`] and one success resets it. At most one failure per
/// [`AcceptBackoff::REPORT_EVERY`] is reported, with the count of those that were not.
#[derive(Debug, Default)]
struct AcceptBackoff {
    failures: u32,
    unreported: u64,
    reported_at: Option<Instant>,
}

impl AcceptBackoff {
    const MIN: Duration = Duration::from_millis(50);
    const MAX: Duration = Duration::from_secs(1);
    const REPORT_EVERY: Duration = Duration::from_secs(10);

    /// An accept failed at `now`: the pause before the next try, and, if this failure is to be
    /// reported, how many went unreported before it.
    fn on_error(&mut self, now: Instant) -> (Duration, Option<u64>) {
        let pause = Self::MIN
            .saturating_mul(1u32 << self.failures.min(10))
            .min(Self::MAX);
        self.failures = self.failures.saturating_add(1);
        let due = self
            .reported_at
            .is_none_or(|t| now.saturating_duration_since(t) >= Self::REPORT_EVERY);
        if due {
            self.reported_at = Some(now);
            (pause, Some(std::mem::take(&mut self.unreported)))
        } else {
            self.unreported += 1;
            (pause, None)
        }
    }

    /// An accept succeeded: the next failure starts again from the shortest pause.
    fn on_success(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn backoff_errors_double_the_pause_up_to_a_second() {
        let mut b = AcceptBackoff::default();
        let t = Instant::now();
        let pauses: Vec<u64> = (0..8).map(|_| b.on_error(t).0.as_millis() as u64).collect();
        assert_eq!(pauses, [50, 100, 200, 400, 800, 1000, 1000, 1000]);
        b.on_success();
        assert_eq!(b.on_error(t).0, AcceptBackoff::MIN);
    }

    #[test]
    fn backoff_errors_are_reported_once_per_interval_with_the_count() {
        let mut b = AcceptBackoff::default();
        let t = Instant::now();
        assert_eq!(b.on_error(t).1, Some(0));
        for i in 1..=5 {
            assert_eq!(b.on_error(t + Duration::from_secs(i)).1, None);
        }
        assert_eq!(b.on_error(t + Duration::from_secs(10)).1, Some(5));
        assert_eq!(b.on_error(t + Duration::from_secs(11)).1, None);
    }

    /// Echoes until EOF, or returns at shutdown when `stop_at_shutdown`.
    struct Echo {
        stop_at_shutdown: bool,
    }

    impl Handler for Echo {
        async fn handle(&self, mut stream: TcpStream, _peer: SocketAddr, mut shutdown: Shutdown) {
            let mut buf = [0u8; 1024];
            loop {
                let n = tokio::select! {
                    r = stream.read(&mut buf) => r.unwrap_or(0),
                    _ = shutdown.wait(), if self.stop_at_shutdown => return,
                };
                if n == 0 || stream.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }

    async fn start(
        stop_at_shutdown: bool,
        grace: Duration,
    ) -> (
        SocketAddr,
        crate::shutdown::Trigger,
        tokio::task::JoinHandle<Drained>,
    ) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let listener =
            Listener::new("test", l, Arc::new(Echo { stop_at_shutdown })).with_grace(grace);
        let addr = listener.local_addr().unwrap();
        let (trigger, shutdown) = crate::shutdown::channel();
        (addr, trigger, tokio::spawn(listener.run(shutdown)))
    }

    async fn echo_once(c: &mut TcpStream) {
        c.write_all(b"ping").await.unwrap();
        let mut back = [0u8; 4];
        c.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"ping");
    }

    /// A listener with one connection that has echoed once, and shutdown fired.
    async fn one_connection_then_shutdown(
        stop_at_shutdown: bool,
        grace: Duration,
    ) -> (TcpStream, tokio::task::JoinHandle<Drained>) {
        let (addr, trigger, run) = start(stop_at_shutdown, grace).await;
        let mut c = TcpStream::connect(addr).await.unwrap();
        echo_once(&mut c).await;
        trigger.fire();
        (c, run)
    }

    fn drained(accepted: u64, aborted: usize) -> Drained {
        Drained { accepted, aborted }
    }

    #[tokio::test]
    async fn idle_listener_shutdown_returns_at_once() {
        let (_, trigger, run) = start(false, Duration::from_secs(60)).await;
        trigger.fire();
        let d = tokio::time::timeout(Duration::from_secs(5), run)
            .await
            .expect("returns without waiting for the grace")
            .unwrap();
        assert_eq!(d, drained(0, 0));
    }

    #[tokio::test]
    async fn open_connection_at_shutdown_may_finish_within_the_grace() {
        let (mut c, run) = one_connection_then_shutdown(false, Duration::from_secs(60)).await;
        // Let the listener see the shutdown: the open connection is still served while it drains.
        tokio::time::sleep(Duration::from_millis(50)).await;
        echo_once(&mut c).await;
        drop(c);
        let d = tokio::time::timeout(Duration::from_secs(5), run)
            .await
            .expect("returns once the connection ends")
            .unwrap();
        assert_eq!(d, drained(1, 0));
    }

    #[tokio::test]
    async fn handler_sees_shutdown_and_returns() {
        let (mut c, run) = one_connection_then_shutdown(true, Duration::from_secs(60)).await;
        let mut rest = Vec::new();
        c.read_to_end(&mut rest).await.unwrap();
        assert_eq!(run.await.unwrap(), drained(1, 0));
    }

    #[tokio::test]
    async fn connection_open_past_the_grace_is_aborted() {
        let (mut c, run) = one_connection_then_shutdown(false, Duration::from_millis(100)).await;
        assert_eq!(run.await.unwrap(), drained(1, 1));
        // The aborted task dropped its stream: the client sees EOF (or a reset).
        let mut rest = Vec::new();
        let _ = c.read_to_end(&mut rest).await;
        assert!(rest.is_empty());
    }
}
