//! Liveness options for long-lived stream sockets, so that a peer that vanished (an uplink's
//! address changed, a host lost power) is noticed by the kernel in bounded time instead of
//! holding the connection, and its descriptor, forever.
//!
//! - TCP keepalive (`SO_KEEPALIVE`, `TCP_KEEPIDLE`, `TCP_KEEPINTVL`, `TCP_KEEPCNT`) probes an idle
//!   connection and resets it when `probes` probes go unanswered. MPTCP sockets take all four
//!   since the 2024 stable kernels (before that only `SO_KEEPALIVE`, with the system's timing).
//! - `TCP_USER_TIMEOUT` resets a connection whose sent data stays unacknowledged that long. MPTCP
//!   sockets refuse it (ENOPROTOOPT, still on 6.18); there the application's own deadlines and
//!   keepalive do the work, and [`Applied::user_timeout`] says so.

use std::io;
use std::os::fd::AsFd;
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};

/// How a socket notices a dead peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Liveness {
    /// Idle time before the first keepalive probe.
    pub idle: Duration,
    /// Time between probes.
    pub interval: Duration,
    /// Unanswered probes before the connection is reset.
    pub probes: u32,
    /// Longest time sent data may stay unacknowledged.
    pub user_timeout: Duration,
}

/// What [`apply`] could set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// Keepalive with braid's timing; false: keepalive on, with the system's timing.
    pub keepalive_timing: bool,
    /// `TCP_USER_TIMEOUT` set; false on MPTCP sockets, which refuse it.
    pub user_timeout: bool,
}

fn unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOPROTOOPT) | Some(libc::EOPNOTSUPP)
    )
}

/// Sets keepalive and `TCP_USER_TIMEOUT` on a stream socket. An option the socket's protocol
/// does not take (MPTCP) is left out and reported in [`Applied`]; any other failure is an error
/// with the kernel's errno.
pub fn apply<S: AsFd>(sock: &S, l: &Liveness) -> io::Result<Applied> {
    let s = SockRef::from(sock);
    let ka = TcpKeepalive::new()
        .with_time(l.idle)
        .with_interval(l.interval)
        .with_retries(l.probes);
    let keepalive_timing = match s.set_tcp_keepalive(&ka) {
        Ok(()) => true,
        Err(e) if unsupported(&e) => {
            s.set_keepalive(true)?;
            false
        }
        Err(e) => return Err(e),
    };
    let user_timeout = match s.set_tcp_user_timeout(Some(l.user_timeout)) {
        Ok(()) => true,
        Err(e) if unsupported(&e) => false,
        Err(e) => return Err(e),
    };
    Ok(Applied {
        keepalive_timing,
        user_timeout,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use socket2::{Domain, Protocol, Socket, Type};

    const L: Liveness = Liveness {
        idle: Duration::from_secs(30),
        interval: Duration::from_secs(10),
        probes: 3,
        user_timeout: Duration::from_secs(60),
    };

    #[test]
    fn tcp_socket_takes_everything() {
        let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
        let a = apply(&s, &L).unwrap();
        assert!(a.keepalive_timing && a.user_timeout);
        assert!(s.keepalive().unwrap());
        assert_eq!(s.tcp_keepalive_time().unwrap(), L.idle);
        assert_eq!(s.tcp_user_timeout().unwrap(), Some(L.user_timeout));
    }

    #[test]
    fn mptcp_socket_gets_keepalive_without_user_timeout() {
        let Ok(s) = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::MPTCP)) else {
            eprintln!("SKIP: no MPTCP in this kernel or namespace");
            return;
        };
        let a = apply(&s, &L).unwrap();
        assert!(s.keepalive().unwrap());
        assert!(
            !a.user_timeout,
            "MPTCP took TCP_USER_TIMEOUT: update the doc comment"
        );
    }
}
