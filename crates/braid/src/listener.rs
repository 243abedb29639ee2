//! The one accept loop, in the manner of mini-redis's `Listener`: the relay, the transparent
//! capture and the SOCKS5 listener all run on it.
//!
//! ```text
//!  accept ─► source in allow_from? ─► admission (handshake caps) ─► keepalive ─► spawn handler
//!    │          no: reset at once        full: reset at once (or the oldest pending is evicted)
//!    │ error (EMFILE, ENOBUFS, …): pause 50 ms … 1 s, say so at most every 10 s
//!  shutdown ─► stop accepting ─► connections finish within the grace ─► the rest are aborted
//! ```
//!
//! Listeners are bound by the caller and passed in, so tests can bind port 0 on loopback, and
//! the daemons' `run` can be driven without root. Connections turned away are reset (no FIN
//! handshake to wait on) and logged at most once per source per minute.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use braid_sys::keepalive::Liveness;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinError, JoinSet};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::admission::{Admission, Handshake};
use crate::allow_from::AllowFrom;
use crate::log_limit::PerSourceLog;
use crate::shutdown::Shutdown;

/// How long connections may go on after shutdown before they are aborted: long enough for a
/// request in flight to finish, short of the 10 s a service manager waits before SIGKILL.
pub const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// How accepted sockets notice a peer that vanished: keepalive after 30 s idle, 3 probes 10 s
/// apart, and sent data unacknowledged for 60 s (plain TCP only; MPTCP refuses that option and
/// relies on keepalive and braid's own deadlines).
pub const LIVENESS: Liveness = Liveness {
    idle: Duration::from_secs(30),
    interval: Duration::from_secs(10),
    probes: 3,
    user_timeout: Duration::from_secs(60),
};

/// How often one source's refused connections are logged.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(60);

/// What a listener does with each connection it accepts.
pub trait Handler: Send + Sync + 'static {
    /// Serves one connection until it ends. `handshake` holds the connection's place among the
    /// pending handshakes: the handler trades it for a connection slot once the peer has proved
    /// itself (`Handshake::establish`), and closes the connection if it is evicted first.
    /// `shutdown` fires when the listener starts to drain: a handler waiting for a request
    /// should return then; one moving bytes may go on until the grace period ends, when its task
    /// is aborted.
    fn handle(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        handshake: Handshake,
        shutdown: Shutdown,
    ) -> impl Future<Output = ()> + Send;
}

/// An accept loop over a bound listener, with its connections' tasks.
pub struct Listener<H> {
    what: &'static str,
    listener: TcpListener,
    handler: Arc<H>,
    admission: Arc<Admission>,
    allow_from: Option<AllowFrom>,
    grace: Duration,
    refusals: PerSourceLog,
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
    /// A listener called `what` in logs (e.g. "SOCKS5"), serving connections with `handler`
    /// within the caps of `admission` (shared by the daemon's listeners).
    pub fn new(
        what: &'static str,
        listener: TcpListener,
        handler: Arc<H>,
        admission: Arc<Admission>,
    ) -> Listener<H> {
        Listener {
            what,
            listener,
            handler,
            admission,
            allow_from: None,
            grace: DRAIN_GRACE,
            refusals: PerSourceLog::new(REFUSAL_LOG_EVERY),
        }
    }

    /// Replaces [`DRAIN_GRACE`].
    pub fn with_grace(mut self, grace: Duration) -> Listener<H> {
        self.grace = grace;
        self
    }

    /// Takes connections only from these sources (see [`crate::allow_from`]).
    pub fn allow_from(mut self, allow: AllowFrom) -> Listener<H> {
        self.allow_from = Some(allow);
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
                        let peer = braid_sys::socket::normalize(peer);
                        let Some(handshake) = self.admit(&stream, peer) else {
                            continue;
                        };
                        let handler = self.handler.clone();
                        let shutdown = shutdown.clone();
                        tasks.spawn(async move { handler.handle(stream, peer, handshake, shutdown).await });
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

    /// Decides whether an accepted connection is served; one that is not is reset. Served
    /// sockets get [`LIVENESS`].
    fn admit(&self, stream: &TcpStream, peer: SocketAddr) -> Option<Handshake> {
        let why = if self
            .allow_from
            .as_ref()
            .is_some_and(|a| !a.allows(peer.ip()))
        {
            "not an allowed source (see allow_from in the config)".to_string()
        } else {
            match self.admission.admit(peer.ip()) {
                Ok(handshake) => {
                    if let Err(e) = braid_sys::keepalive::apply(stream, &LIVENESS) {
                        debug!("{} listener: keepalive on {peer}: {e}", self.what);
                    }
                    return Some(handshake);
                }
                Err(e) => e.to_string(),
            }
        };
        reset(stream);
        self.report_refusal(peer, &why);
        None
    }

    fn report_refusal(&self, peer: SocketAddr, why: &str) {
        if let Some(held) = self.refusals.allow(peer.ip()) {
            info!(
                "{} listener: refused a connection from {}: {why}{held}",
                self.what,
                peer.ip()
            );
        }
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
            "; fix: raise the open-file limit (LimitNOFILE= in the service, or ulimit -n), or lower max_connections and max_handshakes"
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

/// Closes a connection with a reset: nothing to linger in FIN_WAIT for, and nothing said about
/// why (a probe learns no more than from a closed port).
pub fn reset(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
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
        async fn handle(
            &self,
            mut stream: TcpStream,
            _peer: SocketAddr,
            handshake: Handshake,
            mut shutdown: Shutdown,
        ) {
            let Ok(_slot) = handshake.establish() else {
                return;
            };
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
        let admission = Admission::new(crate::admission::Limits::sized_from(1024));
        let listener = Listener::new("test", l, Arc::new(Echo { stop_at_shutdown }), admission)
            .with_grace(grace);
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

    /// Holds every connection in its handshake until the peer closes.
    struct Silent;

    impl Handler for Silent {
        async fn handle(
            &self,
            mut stream: TcpStream,
            _peer: SocketAddr,
            handshake: Handshake,
            _shutdown: Shutdown,
        ) {
            let mut one = [0u8; 1];
            tokio::select! {
                _ = stream.read(&mut one) => {}
                _ = handshake.evicted() => reset(&stream),
            }
        }
    }

    /// Waits until the listener closed or reset `c` (or gave up after 5 s: not closed).
    async fn closed_by_listener(c: &mut TcpStream) -> bool {
        let mut one = [0u8; 1];
        matches!(
            tokio::time::timeout(Duration::from_secs(5), c.read(&mut one)).await,
            Ok(Ok(0) | Err(_))
        )
    }

    #[tokio::test]
    async fn handshakes_over_the_source_cap_are_reset_and_the_oldest_gives_way() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let admission = Admission::new(crate::admission::Limits {
            max_connections: 10,
            max_handshakes: 3,
            max_handshakes_per_source: 2,
        });
        let (trigger, shutdown) = crate::shutdown::channel();
        let run = tokio::spawn(
            Listener::new("test", l, Arc::new(Silent), admission.clone()).run(shutdown),
        );
        let mut first = TcpStream::connect(addr).await.unwrap();
        let mut second = TcpStream::connect(addr).await.unwrap();
        let mut third = TcpStream::connect(addr).await.unwrap();
        assert!(
            closed_by_listener(&mut third).await,
            "a third from one source was served"
        );
        // Another source (127.0.0.2 is loopback too) fills the last place, a fourth evicts the
        // oldest.
        let from = |ip: &str| {
            let s = tokio::net::TcpSocket::new_v4().unwrap();
            s.bind(format!("{ip}:0").parse().unwrap()).unwrap();
            s.connect(addr)
        };
        let _other = from("127.0.0.2").await.unwrap();
        let _fourth = from("127.0.0.3").await.unwrap();
        assert!(
            closed_by_listener(&mut first).await,
            "the oldest was not evicted"
        );
        let mut one = [0u8; 1];
        assert!(
            tokio::time::timeout(Duration::from_millis(200), second.read(&mut one))
                .await
                .is_err(),
            "a younger handshake was closed"
        );
        trigger.fire();
        run.await.unwrap();
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
