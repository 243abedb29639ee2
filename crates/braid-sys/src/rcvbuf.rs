//! Growing a socket's receive buffer without locking it (`SO_RCVLOWAT`).
//!
//! `SO_RCVBUF` fixes the buffer: the kernel stops autotuning it (`SOCK_RCVBUF_LOCK`). Raising
//! `SO_RCVLOWAT` instead grows `sk_rcvbuf` to hold that many bytes and leaves autotuning on
//! (`tcp_set_rcvlowat()`, `mptcp_set_rcvlowat()`, which also widens every current subflow's
//! window clamp); setting the low-water mark back to 1 right after keeps the larger buffer,
//! since neither path ever shrinks it. Both cap the request at half of `net.ipv4.tcp_rmem`'s
//! maximum, so asking for `usize::MAX` gives a socket what autotuning could give it.

use std::io;
use std::os::fd::AsFd;

use crate::sockopt::{get_int, set_int};

/// Grows the receive buffer of `sock` to hold at least `bytes` (capped by the kernel at half of
/// `net.ipv4.tcp_rmem`'s maximum), autotuning left on; returns the buffer size now.
pub fn grow<S: AsFd>(sock: &S, bytes: usize) -> io::Result<usize> {
    let want = i32::try_from(bytes).unwrap_or(i32::MAX);
    set_int(sock, libc::SOL_SOCKET, libc::SO_RCVLOWAT, want)?;
    set_int(sock, libc::SOL_SOCKET, libc::SO_RCVLOWAT, 1)?;
    Ok(get_int(sock, libc::SOL_SOCKET, libc::SO_RCVBUF)?.max(0) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use socket2::{Domain, Protocol, Socket, Type};

    fn rcvbuf(s: &Socket) -> usize {
        s.recv_buffer_size().unwrap()
    }

    /// Grows the buffer of a fresh socket of `proto` and checks that the low-water mark is back
    /// at 1 (a larger one would hold back every read) and that the buffer was not locked:
    /// a later, smaller `SO_RCVLOWAT` may not shrink it, and the kernel answers with the size.
    fn grows(proto: Protocol) {
        let s = match Socket::new(Domain::IPV4, Type::STREAM, Some(proto)) {
            Ok(s) => s,
            // No MPTCP in this kernel: the TCP case still runs (CI's kernel has it).
            Err(e) if proto != Protocol::TCP && std::env::var("CI").as_deref() != Ok("true") => {
                eprintln!("skipping {proto:?}: {e}");
                return;
            }
            Err(e) => panic!("{e}"),
        };
        let before = rcvbuf(&s);
        let want = 1 << 20;
        assert!(before < want, "the default buffer is already {before}");
        let now = grow(&s, want).unwrap();
        assert_eq!(now, rcvbuf(&s));
        assert!(now >= want, "{proto:?}: {before} → {now}, wanted ≥ {want}");
        assert_eq!(get_int(&s, libc::SOL_SOCKET, libc::SO_RCVLOWAT).unwrap(), 1);
        assert_eq!(grow(&s, 4096).unwrap(), now, "a smaller request shrank it");
    }

    #[test]
    fn grows_a_tcp_socket_and_restores_the_low_water_mark() {
        grows(Protocol::TCP);
    }

    #[test]
    fn grows_an_mptcp_socket_and_restores_the_low_water_mark() {
        grows(Protocol::MPTCP);
    }

    /// The most one may ask for is what autotuning could reach: the kernel's cap (half of
    /// `tcp_rmem`'s maximum as the window, about twice that as the buffer), not less. braid's
    /// pooled connections rely on it (`relay::IDLED_RCVBUF`).
    #[test]
    fn asking_for_the_most_reaches_the_autotuning_ceiling() {
        let rmem_max: usize = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_rmem")
            .unwrap()
            .split_whitespace()
            .nth(2)
            .unwrap()
            .parse()
            .unwrap();
        for proto in [Protocol::TCP, Protocol::MPTCP] {
            let s = match Socket::new(Domain::IPV4, Type::STREAM, Some(proto)) {
                Ok(s) => s,
                Err(e)
                    if proto != Protocol::TCP && std::env::var("CI").as_deref() != Ok("true") =>
                {
                    eprintln!("skipping {proto:?}: {e}");
                    continue;
                }
                Err(e) => panic!("{e}"),
            };
            let now = grow(&s, usize::MAX).unwrap();
            assert!(
                now >= rmem_max / 2,
                "{proto:?}: grew to {now}, the ceiling is {rmem_max} / 2"
            );
            assert!(now <= 2 * rmem_max, "{proto:?}: {now} is over the cap");
        }
    }
}
