//! TCP congestion control of one socket (`TCP_CONGESTION`), and the kernel's lists.
//!
//! On an MPTCP socket the option is the MPTCP socket's and the kernel applies it to every
//! subflow, including subflows that join later (`mptcp_setsockopt_sol_tcp_congestion()`,
//! `sync_socket_options()`). Two traps, both seen on Linux 6.18:
//! - On an MPTCP socket that has no subflow yet (before `connect()`), setsockopt succeeds for any
//!   name, even one the kernel does not have; the name is applied, or silently not, when the
//!   first subflow is made. Only a plain TCP socket gives the kernel's real answer ([`probe`]).
//!   (That later step, `sync_socket_options()`, also passes `cap_net_admin = true`, so an
//!   unprivileged process gets an algorithm outside `tcp_allowed_congestion_control` on an MPTCP
//!   socket that a TCP socket refuses with EPERM. braid goes by the TCP answer and does not rely
//!   on that.)
//! - Reading the option on an MPTCP socket returns the *first* subflow's algorithm. Tools see
//!   each subflow's (`ss -ti` lists the algorithm per `tcp-ulp-mptcp` socket).
//!
//! Which names a process may set: any built-in or loadable one with CAP_NET_ADMIN in the
//! socket's network namespace; without it, only those in `net.ipv4.tcp_allowed_congestion_control`.
//! (A non-initial namespace may only make an allowed one its *default*; a socket option with
//! CAP_NET_ADMIN is not limited by that.)

use std::io;
use std::os::fd::AsFd;

use socket2::{Domain, Protocol, SockRef, Socket, Type};

use crate::sysctl::Procfs;

/// Sets the algorithm of `sock`, e.g. `"bbr"`.
pub fn set<S: AsFd>(sock: &S, name: &str) -> io::Result<()> {
    SockRef::from(sock).set_tcp_congestion(name.as_bytes())
}

/// The algorithm of `sock` (of its first subflow, on an MPTCP socket).
pub fn get<S: AsFd>(sock: &S) -> io::Result<String> {
    let raw = SockRef::from(sock).tcp_congestion()?;
    let name = raw.split(|b| *b == 0).next().unwrap_or_default();
    Ok(String::from_utf8_lossy(name).into_owned())
}

/// Asks the kernel for `name` on a fresh plain TCP socket, which answers with the errno the
/// relay's subflows would meet: ENOENT when the kernel has no such algorithm (its module
/// `tcp_NAME` is loaded on the way, with CAP_NET_ADMIN), EPERM when it is not allowed.
pub fn probe(name: &str) -> io::Result<()> {
    let sock = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    set(&sock, name)?;
    let took = get(&sock)?;
    if took == name {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "the kernel kept {took} after being asked for {name}"
        )))
    }
}

/// The kernel's congestion-control sysctls in this network namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sysctls {
    /// `net.ipv4.tcp_congestion_control`: the default of new sockets.
    pub default: String,
    /// `net.ipv4.tcp_available_congestion_control`: built in or loaded.
    pub available: String,
    /// `net.ipv4.tcp_allowed_congestion_control`: usable without CAP_NET_ADMIN.
    pub allowed: String,
}

/// Reads [`Sysctls`]; a missing one is left empty.
pub fn sysctls(procfs: &Procfs) -> Sysctls {
    let read = |key: &str| {
        procfs
            .sysctl(key)
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    Sysctls {
        default: read("net.ipv4.tcp_congestion_control"),
        available: read("net.ipv4.tcp_available_congestion_control"),
        allowed: read("net.ipv4.tcp_allowed_congestion_control"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reno_is_always_there_and_an_unknown_name_is_enoent() {
        // reno is built into every kernel; a plain TCP socket refuses a name it does not know.
        assert!(probe("reno").is_ok());
        let e = probe("no_such_cc").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT), "{e}");
    }

    #[test]
    fn sysctls_are_read_from_procfs() {
        let dir = std::env::temp_dir().join(format!("braid-cc-{}", std::process::id()));
        let ipv4 = dir.join("sys/net/ipv4");
        std::fs::create_dir_all(&ipv4).unwrap();
        std::fs::write(ipv4.join("tcp_congestion_control"), "cubic\n").unwrap();
        std::fs::write(ipv4.join("tcp_allowed_congestion_control"), "reno cubic\n").unwrap();
        let s = sysctls(&Procfs::at(&dir));
        assert_eq!(s.default, "cubic");
        assert_eq!(s.allowed, "reno cubic");
        assert_eq!(s.available, "");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
