//! The rtnetlink connection ([`Rtnl`]) shared by [`link`](crate::link),
//! [`address`](crate::address), [`route`](crate::route) and
//! [`rule`](crate::rule), its error type, and errno helpers that the
//! `mptcp_pm` client reuses.
//!
//! ```text
//!   Rtnl::connect() ──► rtnetlink::Handle ──► NETLINK_ROUTE socket (task on the current runtime)
//!        │
//!        ├─ link.rs     ip link show
//!        ├─ address.rs  ip addr show/add/del
//!        ├─ route.rs    ip route replace/del/show
//!        └─ rule.rs     ip rule add/del/show
//! ```
//!
//! Every kernel error keeps its errno (and the kernel's extended-ack text when
//! it sends one), and says which `ip …` request failed.

use std::io;

use futures::StreamExt;
use netlink_packet_core::{
    ErrorMessage, NetlinkMessage, NetlinkPayload, NLM_F_ACK_TLVS, NLM_F_CAPPED,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::AsyncSocket;

/// Errors of the rtnetlink operations (links, addresses, routes, rules).
///
/// [`NetlinkError::Kernel`] keeps the kernel's errno; use
/// [`NetlinkError::errno`] to branch on it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetlinkError {
    /// The NETLINK_ROUTE socket could not be opened.
    #[error("cannot open an rtnetlink socket: {0} (is this Linux, and is the process allowed to create netlink sockets?)")]
    Connect(#[source] io::Error),
    /// [`Rtnl::connect`] was called outside a tokio runtime.
    #[error("Rtnl::connect must be called from within a tokio runtime (the netlink connection runs as a task on it)")]
    NoRuntime,
    /// The background task that owns the socket is gone.
    #[error("the rtnetlink connection task has stopped (was its tokio runtime shut down?): create a new Rtnl")]
    ConnectionClosed,
    /// The kernel rejected a request.
    #[error("`{request}` failed: {}{}. {}", io::Error::from_raw_os_error(*errno), detail_suffix(detail), errno_hint(*errno))]
    Kernel {
        /// The equivalent `ip …` command.
        request: String,
        /// The positive errno, e.g. `libc::EPERM`.
        errno: i32,
        /// The kernel's extended-ack message, if it sent one.
        detail: Option<String>,
    },
    /// No interface has this index (it may have been removed).
    #[error("no network interface has index {ifindex} (was it removed?): check `ip link show`")]
    NoSuchLink {
        /// The missing interface index.
        ifindex: u32,
    },
    /// An interface name longer than the kernel's limit or empty.
    #[error("invalid interface name {name:?}: names are 1 to 15 bytes long")]
    InvalidLinkName {
        /// The rejected name.
        name: String,
    },
    /// A route or rule description that cannot be sent as given.
    #[error("invalid {what}: {reason}")]
    InvalidSpec {
        /// "route" or "rule".
        what: &'static str,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// The kernel answered with a message we did not expect.
    #[error("unexpected rtnetlink reply to `{request}`: {message}")]
    Unexpected {
        /// The equivalent `ip …` command.
        request: String,
        /// A short description of the reply.
        message: String,
    },
}

impl NetlinkError {
    /// The kernel errno, if the kernel rejected the request.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Kernel { errno, .. } => Some(*errno),
            Self::Connect(e) => e.raw_os_error(),
            _ => None,
        }
    }
}

fn detail_suffix(detail: &Option<String>) -> String {
    match detail {
        Some(d) => format!(" ({d})"),
        None => String::new(),
    }
}

/// What to do about a netlink errno, phrased as a fix.
pub fn errno_hint(errno: i32) -> &'static str {
    match errno {
        libc::EPERM | libc::EACCES => {
            "This needs CAP_NET_ADMIN in the network namespace: run as root or grant the capability"
        }
        libc::ENODEV => "The interface does not exist: check the name or index with `ip link show`",
        libc::EEXIST => "An identical object already exists",
        libc::ESRCH | libc::ENOENT => "No such object exists in the kernel",
        libc::ENETUNREACH => {
            "The gateway is not reachable through that interface: add an address whose subnet covers it first"
        }
        libc::EADDRNOTAVAIL => {
            "The address is not configured on this host: add it to an interface first"
        }
        libc::EAFNOSUPPORT => "The address family is not supported (is IPv6 disabled?)",
        libc::EOPNOTSUPP => "The kernel does not support this operation (check its version and configuration)",
        libc::EINVAL => "The kernel rejected an argument: check the values (and the kernel log / extended ack)",
        libc::ENOSPC | libc::E2BIG => "A kernel limit was reached",
        libc::EBUSY => "The object is in use; retry later",
        _ => "See the errno above",
    }
}

/// The extended-ack text (`NLMSGERR_ATTR_MSG`) of an error reply, if any.
///
/// `outer_flags` are the flags of the `NLMSG_ERROR` message: `NLM_F_ACK_TLVS`
/// says TLVs follow the echoed request, `NLM_F_CAPPED` that the echo is only
/// the 16-byte header.
pub(crate) fn ext_ack_message(outer_flags: u16, err: &ErrorMessage) -> Option<String> {
    const NLMSGHDR_LEN: usize = 16;
    const NLMSGERR_ATTR_MSG: u16 = 1;
    if outer_flags & NLM_F_ACK_TLVS == 0 {
        return None;
    }
    let buf = &err.header;
    let echoed = if outer_flags & NLM_F_CAPPED != 0 {
        NLMSGHDR_LEN
    } else {
        let len = u32::from_ne_bytes(buf.get(..4)?.try_into().ok()?) as usize;
        len.checked_add(3)? & !3
    };
    let mut tlvs = buf.get(echoed..)?;
    while tlvs.len() >= 4 {
        let len = u16::from_ne_bytes([tlvs[0], tlvs[1]]) as usize;
        let kind = u16::from_ne_bytes([tlvs[2], tlvs[3]]) & netlink_packet_core::NLA_TYPE_MASK;
        if len < 4 || len > tlvs.len() {
            return None;
        }
        if kind == NLMSGERR_ATTR_MSG {
            let text = &tlvs[4..len];
            let text = text.split(|b| *b == 0).next().unwrap_or_default();
            return Some(String::from_utf8_lossy(text).into_owned());
        }
        tlvs = tlvs.get((len + 3) & !3..).unwrap_or_default();
    }
    None
}

/// An rtnetlink connection: a handle to a NETLINK_ROUTE socket served by a
/// task on the current tokio runtime. Cheap to clone; all methods take `&self`.
///
/// The methods live next to the objects they manage: [`crate::link`],
/// [`crate::address`], [`crate::route`], [`crate::rule`].
#[derive(Clone, Debug)]
pub struct Rtnl {
    handle: rtnetlink::Handle,
}

impl Rtnl {
    /// Opens a NETLINK_ROUTE socket in the calling thread's network namespace
    /// and spawns its connection task on the current tokio runtime.
    pub fn connect() -> Result<Rtnl, NetlinkError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| NetlinkError::NoRuntime)?;
        let (mut conn, handle, _messages) =
            rtnetlink::new_connection().map_err(NetlinkError::Connect)?;
        let socket = conn.socket_mut().socket_mut();
        // Best effort: error texts from the kernel are a bonus, not a requirement.
        let _ = socket.set_ext_ack(true);
        let _ = socket.set_cap_ack(true);
        runtime.spawn(conn);
        Ok(Rtnl { handle })
    }

    /// The underlying rtnetlink handle, for requests this crate does not wrap
    /// (creating links in the lab and in tests, for instance).
    pub fn handle(&self) -> rtnetlink::Handle {
        self.handle.clone()
    }

    /// Sends `message` with `flags` and collects the replies.
    ///
    /// `request` is the equivalent `ip …` command, used in errors.
    pub(crate) async fn request(
        &self,
        message: RouteNetlinkMessage,
        flags: u16,
        request: impl FnOnce() -> String,
    ) -> Result<Vec<RouteNetlinkMessage>, NetlinkError> {
        let mut req = NetlinkMessage::from(message);
        req.header.flags = flags;
        let mut handle = self.handle.clone();
        let mut replies = handle
            .request(req)
            .map_err(|_| NetlinkError::ConnectionClosed)?;
        let mut out = Vec::new();
        while let Some(msg) = replies.next().await {
            match msg.payload {
                NetlinkPayload::InnerMessage(inner) => out.push(inner),
                NetlinkPayload::Error(err) => {
                    if let Some(code) = err.code {
                        return Err(NetlinkError::Kernel {
                            request: request(),
                            errno: code.get().saturating_abs(),
                            detail: ext_ack_message(msg.header.flags, &err),
                        });
                    }
                }
                NetlinkPayload::Done(_) | NetlinkPayload::Noop => {}
                NetlinkPayload::Overrun(_) => {
                    return Err(NetlinkError::Unexpected {
                        request: request(),
                        message: "netlink overrun: the socket buffer overflowed; retry".into(),
                    })
                }
                _ => {}
            }
        }
        Ok(out)
    }
}

/// True if `err` is a kernel error with one of `errnos`.
pub(crate) fn is_errno(err: &NetlinkError, errnos: &[i32]) -> bool {
    err.errno().is_some_and(|e| errnos.contains(&e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroI32;

    #[test]
    fn ext_ack_capped_message_is_extracted() {
        let mut header = vec![0u8; 16];
        header[..4].copy_from_slice(&36u32.to_ne_bytes());
        let text = b"missing address ID\0";
        let len = (4 + text.len()) as u16;
        header.extend_from_slice(&len.to_ne_bytes());
        header.extend_from_slice(&1u16.to_ne_bytes());
        header.extend_from_slice(text);
        header.resize(header.len().next_multiple_of(4), 0);
        let mut err = ErrorMessage::default();
        err.code = NonZeroI32::new(-22);
        err.header = header;
        assert_eq!(
            ext_ack_message(NLM_F_CAPPED | NLM_F_ACK_TLVS, &err).as_deref(),
            Some("missing address ID")
        );
        assert_eq!(ext_ack_message(0, &err), None);
    }

    #[test]
    fn ext_ack_truncated_input_is_none() {
        let mut err = ErrorMessage::default();
        err.code = NonZeroI32::new(-22);
        err.header = vec![1, 2, 3];
        assert_eq!(ext_ack_message(NLM_F_ACK_TLVS, &err), None);
        assert_eq!(ext_ack_message(NLM_F_ACK_TLVS | NLM_F_CAPPED, &err), None);
    }

    #[test]
    fn kernel_error_names_request_and_fix() {
        let e = NetlinkError::Kernel {
            request: "ip rule add from 10.0.0.1 table 101".into(),
            errno: libc::EPERM,
            detail: None,
        };
        let text = e.to_string();
        assert!(text.contains("ip rule add"), "{text}");
        assert!(text.contains("CAP_NET_ADMIN"), "{text}");
        assert_eq!(e.errno(), Some(libc::EPERM));
    }
}
