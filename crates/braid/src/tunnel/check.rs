//! The direct-path check: does MPTCP pass this uplink's path to the relay?
//!
//! One MPTCP connection to the relay whose first subflow is on the uplink (bound to its address
//! and device), then a control `Hello`, whose answer says how the relay received it. A path that
//! strips MPTCP options shows up as a fallback to plain TCP on either end; one that resets them
//! as a reset, while plain TCP over the same uplink works (the health probe's). The same check
//! covers joins and first subflows: a middlebox that removes MP_JOIN removes MP_CAPABLE too.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use braid_proto::control::{ControlResponse, Transport};
use braid_proto::tunnel::Checked;
use braid_sys::link::IfName;
use braid_sys::mptcp::info::{mptcp_state, MptcpState};
use braid_sys::sysctl::Procfs;

use crate::gateway::dialer::Dialer;

/// How long the connection and the answer may take.
const LIMIT: Duration = Duration::from_secs(3);

/// Checks the direct path of the uplink on `iface` with address `src`.
pub async fn direct(dialer: &Dialer, src: IpAddr, iface: &IfName) -> Checked {
    let relay = dialer.relay();
    let disabled = || {
        Procfs::default()
            .net_counter("MPTcpExtMPCapableSYNTXDisabled")
            .unwrap_or(0)
    };
    let disabled_before = disabled();
    let stream = match connect(relay, src, iface).await {
        Ok(s) => s,
        Err(e) if e.raw_os_error() == Some(libc::ECONNRESET) => {
            return Checked::Reset(format!(
                "an MPTCP connection from {src} over {iface} was reset while connecting, though plain TCP connects"
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
            return Checked::Reset(format!(
                "MPTCP SYNs from {src} over {iface} get no answer within {} s, though plain TCP connects",
                LIMIT.as_secs()
            ))
        }
        Err(e) => return Checked::Inconclusive(format!("connecting over {iface}: {e}")),
    };
    let local = mptcp_state(&stream);
    if local == MptcpState::Tcp {
        return Checked::Inconclusive("this gateway's kernel has no MPTCP".into());
    }
    let mut relay_stream = dialer.control_stream(stream);
    let asked = tokio::time::timeout(LIMIT, async {
        let mut c = crate::control::Connection::new(&mut relay_stream);
        c.request::<_, ControlResponse>(&crate::control::hello())
            .await
    })
    .await;
    let seen = match asked {
        // A relay without MPTCP falls back on every path: no tunnel would help. (A stripped
        // SYN reaches an MPTCP listener as plain TCP, so the transport alone cannot tell.)
        Ok(Ok(ControlResponse::Report(r)))
            if r.sysctls.get("net.mptcp.enabled").map(String::as_str) == Some("0") =>
        {
            return Checked::Inconclusive(
                "the relay does not speak MPTCP (net.mptcp.enabled = 0 there)".into(),
            )
        }
        Ok(Ok(ControlResponse::Report(r))) => r.connection.transport,
        Ok(Err(crate::control::ConnectionError::Io(e)))
            if e.kind() == std::io::ErrorKind::ConnectionReset =>
        {
            return Checked::Reset(format!(
                "an MPTCP connection from {src} over {iface} was reset once it carried data"
            ))
        }
        Ok(Ok(_)) | Ok(Err(_)) | Err(_) => Transport::Unknown,
    };
    if disabled() > disabled_before {
        return Checked::Inconclusive(
            "the kernel's MPTCP blackhole state sent the check as plain TCP".into(),
        );
    }
    match (local, seen) {
        (MptcpState::Mptcp { .. }, Transport::Mptcp) => Checked::Works,
        (MptcpState::Mptcp { .. }, Transport::Unknown) => Checked::Inconclusive(
            "the relay did not say how it received the check (not a braid relay?)".into(),
        ),
        (_, seen) => Checked::Stripped(format!(
            "an MPTCP connection from {src} over {iface} reached the relay as {} and came back as {}: the MPTCP option was removed on the way",
            if seen == Transport::Unknown { "unknown".to_string() } else { seen.to_string() },
            if local == MptcpState::Fallback { "plain TCP" } else { "MPTCP" },
        )),
    }
}

async fn connect(
    relay: SocketAddr,
    src: IpAddr,
    iface: &IfName,
) -> std::io::Result<tokio::net::TcpStream> {
    let (sock, _, _) = braid_sys::socket::stream_socket(&relay, true)?;
    sock.bind_device(Some(iface.as_str().as_bytes()))?;
    sock.bind(&SocketAddr::new(src, 0).into())?;
    sock.set_tcp_nodelay(true)?;
    let s = tokio::net::TcpSocket::from_std_stream(sock.into());
    match tokio::time::timeout(LIMIT, s.connect(relay)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "timed out",
        )),
    }
}
