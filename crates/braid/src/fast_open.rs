//! The local facts of the TCP Fast Open decisions, gathered on this machine: the sysctl and
//! what the kernel answers to the TFO socket option on a socket like the ones braid uses. The
//! rules that turn facts into a decision are in `braid_proto::tfo`; the daemons and
//! `braid doctor` gather through here and decide through there, so they cannot disagree.

use std::io;
use std::net::SocketAddr;

use braid_proto::tfo::{Facts, ListenerFacts, Sockopt};
use braid_sys::sysctl::Procfs;

/// What a TFO setsockopt's result means (ENOPROTOOPT: no TFO for this protocol).
pub fn sockopt(r: io::Result<()>) -> Sockopt {
    match r {
        Ok(()) => Sockopt::Accepted,
        Err(e) if e.raw_os_error() == Some(libc::ENOPROTOOPT) => Sockopt::Unsupported,
        Err(e) => Sockopt::Failed(e.raw_os_error().unwrap_or(-1)),
    }
}

fn sysctl(procfs: &Procfs) -> u32 {
    procfs.sysctl_u64("net.ipv4.tcp_fastopen").unwrap_or(0) as u32
}

fn transport(mptcp: bool) -> String {
    if mptcp { "MPTCP" } else { "TCP" }.into()
}

/// The gateway's facts that need no relay: the sysctl's client bit, and
/// `TCP_FASTOPEN_CONNECT` on a socket like the relay connections (MPTCP when `mptcp`).
pub fn client_facts(relay: SocketAddr, mptcp: bool, procfs: &Procfs, kernel: &str) -> Facts {
    let value = sysctl(procfs);
    let setsockopt = sockopt(
        braid_sys::socket::stream_socket(&relay, mptcp)
            .and_then(|(sock, _, _)| braid_sys::tfo::set_connect_fastopen(&sock)),
    );
    Facts {
        kernel: kernel.into(),
        transport: transport(mptcp),
        sysctl_client: braid_sys::tfo::FastopenSysctl(value).client(),
        sysctl_value: value,
        setsockopt,
        baseline: None,
        tfo: Vec::new(),
        relay_kernel: None,
    }
}

/// The relay's facts: the sysctl's server bit, and `TCP_FASTOPEN` on an unbound socket like
/// the listener of `listen` (MPTCP when `mptcp`).
pub fn listener_facts(
    listen: SocketAddr,
    mptcp: bool,
    procfs: &Procfs,
    kernel: &str,
) -> ListenerFacts {
    ListenerFacts {
        kernel: kernel.into(),
        transport: transport(mptcp),
        sysctl_value: sysctl(procfs),
        setsockopt: sockopt(
            braid_sys::socket::stream_socket(&listen, mptcp)
                .and_then(|(sock, _, _)| braid_sys::tfo::set_listener_fastopen(&sock, 1024)),
        ),
    }
}
