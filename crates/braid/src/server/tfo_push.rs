//! Sends what Linux's MPTCP holds back on a TCP Fast Open connection.
//!
//! A TFO listener hands out a connection as soon as the SYN with data arrives, one round trip
//! before the handshake's third ACK. On an MPTCP socket (Linux 6.2 up to at least 6.18) a reply
//! written in that round trip is queued but not sent, and the third ACK does not send it: it
//! waits until the gateway sends again, which for a request/reply never happens
//! (docs/TFO-MPTCP.md has the kernel functions and a reproducer). So for every MPTCP connection
//! accepted in SYN_RECV, a small task waits for the first subflow to leave SYN_RECV and then
//! pushes the queue. A reply then leaves at the third ACK, as early as the kernel allows: an
//! immediate reply takes 2 round trips, as without TFO, while the request, and the relay's
//! connect to the destination, still start one round trip earlier.
//!
//! `BRAID_TFO_PUSH=off` in the server's environment turns this off, to show the kernel's
//! behaviour (a test checks that the gateway then finds TFO broken).

use std::io;
use std::os::fd::AsFd;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use braid_sys::mptcp::info::MptcpState;
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tracing::debug;

/// Longest wait for the third ACK; after that the handshake failed or the peer has sent again.
const GIVE_UP: Duration = Duration::from_secs(10);
/// Re-check the state this often even without a wake-up from the socket.
const RECHECK: Duration = Duration::from_millis(50);

/// The push task of one connection; dropping it stops the task (and closes its descriptor).
pub struct Pusher(JoinHandle<()>);

impl Drop for Pusher {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts the push task when `stream` is a live MPTCP connection whose SYN carried data
/// (`syn_data`) and whose first subflow is still in SYN_RECV. Keep the result for as long as the
/// connection lives.
pub fn start(stream: &TcpStream, state: MptcpState, syn_data: bool) -> Option<Pusher> {
    if !syn_data || !matches!(state, MptcpState::Mptcp { .. }) || disabled() {
        return None;
    }
    if !braid_sys::tfo::syn_recv(stream).unwrap_or(false) {
        return None;
    }
    // A second descriptor of the same socket, with its own readiness, so the relay keeps its own.
    let dup = stream.as_fd().try_clone_to_owned().ok()?;
    let dup = TcpStream::from_std(std::net::TcpStream::from(dup)).ok()?;
    Some(Pusher(tokio::spawn(push_once_established(dup))))
}

fn disabled() -> bool {
    static OFF: OnceLock<bool> = OnceLock::new();
    *OFF.get_or_init(|| std::env::var("BRAID_TFO_PUSH").as_deref() == Ok("off"))
}

/// Waits until the first subflow leaves SYN_RECV, then pushes. Its state change wakes the
/// socket's wait queue, so the wait ends with the third ACK; [`RECHECK`] bounds a missed wake-up.
async fn push_once_established(sock: TcpStream) {
    let started = Instant::now();
    let wait = async {
        loop {
            // Forget the readiness seen so far before looking, so a wake-up after the look
            // ends the next wait.
            let _ = sock.try_io(Interest::WRITABLE, || {
                Err::<(), _>(io::ErrorKind::WouldBlock.into())
            });
            match braid_sys::tfo::syn_recv(&sock) {
                Ok(true) => {}
                Ok(false) => return braid_sys::tfo::push_pending(&sock).is_ok(),
                Err(_) => return false,
            }
            if let Ok(Err(_)) = tokio::time::timeout(RECHECK, sock.writable()).await {
                return false;
            }
        }
    };
    let pushed = tokio::time::timeout(GIVE_UP, wait).await.unwrap_or(false);
    debug!(
        "TFO connection left SYN_RECV after {} ms; queued reply pushed: {pushed}",
        started.elapsed().as_millis()
    );
}
