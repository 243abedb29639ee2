//! A small client for the in-kernel MPTCP path manager's generic-netlink
//! family `mptcp_pm` (`ip mptcp …`).
//!
//! ```text
//!   MptcpPm ──► genetlink handle ──► NETLINK_GENERIC socket ──► mptcp_pm (version 1)
//!      ├─ endpoint.rs   ADD_ADDR, DEL_ADDR, GET_ADDR, FLUSH_ADDRS, SET_FLAGS
//!      ├─ limits.rs     SET_LIMITS, GET_LIMITS
//!      ├─ subflow.rs    SET_FLAGS and SUBFLOW_DESTROY on one connection (userspace PM)
//!      └─ events.rs     the "mptcp_pm_events" multicast group
//! ```
//!
//! Messages are one [`GenlFamily`] type, `PmMessage`, holding the command
//! and its pre-encoded attributes; this file has the few encoders and decoders
//! the commands need (layout from `include/uapi/linux/mptcp.h`).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::StreamExt;
use genetlink::GenetlinkError;
use netlink_packet_core::{
    DecodeError, Emitable, NetlinkMessage, NetlinkPayload, ParseableParametrized, NLA_F_NESTED,
    NLA_TYPE_MASK,
};
use netlink_packet_generic::{GenlFamily, GenlHeader, GenlMessage};
use netlink_sys::AsyncSocket;

use crate::netlink::{errno_hint, ext_ack_message};

/// `MPTCP_PM_NAME`.
const FAMILY_NAME: &str = "mptcp_pm";
/// `MPTCP_PM_VER`.
const FAMILY_VERSION: u8 = 1;

/// `MPTCP_PM_CMD_*`.
pub(crate) mod cmd {
    pub const ADD_ADDR: u8 = 1;
    pub const DEL_ADDR: u8 = 2;
    pub const GET_ADDR: u8 = 3;
    pub const FLUSH_ADDRS: u8 = 4;
    pub const SET_LIMITS: u8 = 5;
    pub const GET_LIMITS: u8 = 6;
    pub const SET_FLAGS: u8 = 7;
    pub const SUBFLOW_DESTROY: u8 = 11;
}

/// `MPTCP_PM_ATTR_*`.
pub(crate) mod attr {
    pub const ADDR: u16 = 1;
    pub const RCV_ADD_ADDRS: u16 = 2;
    pub const SUBFLOWS: u16 = 3;
    pub const TOKEN: u16 = 4;
    pub const ADDR_REMOTE: u16 = 6;
}

/// `MPTCP_PM_ADDR_ATTR_*`.
mod addr_attr {
    pub const FAMILY: u16 = 1;
    pub const ID: u16 = 2;
    pub const ADDR4: u16 = 3;
    pub const ADDR6: u16 = 4;
    pub const PORT: u16 = 5;
    pub const FLAGS: u16 = 6;
    pub const IF_IDX: u16 = 7;
}

/// Errors of the `mptcp_pm` operations (endpoints and limits).
///
/// [`PmError::Kernel`] keeps the kernel's errno; use [`PmError::errno`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PmError {
    /// The NETLINK_GENERIC socket could not be opened.
    #[error("cannot open a generic netlink socket: {0}")]
    Connect(#[source] io::Error),
    /// [`MptcpPm::connect`] was called outside a tokio runtime.
    #[error("MptcpPm::connect must be called from within a tokio runtime (the netlink connection runs as a task on it)")]
    NoRuntime,
    /// The kernel has no `mptcp_pm` family.
    #[error("the kernel has no `mptcp_pm` generic netlink family ({}): it was built without MPTCP (CONFIG_MPTCP=y is needed, Linux 5.6 or later)", io::Error::from_raw_os_error(*errno))]
    FamilyUnavailable {
        /// The errno of the family lookup (ENOENT when absent).
        errno: i32,
    },
    /// The background task that owns the socket is gone.
    #[error("the generic netlink connection task has stopped (was its tokio runtime shut down?): create a new MptcpPm")]
    ConnectionClosed,
    /// The kernel rejected a request.
    #[error("`{request}` failed: {}{}. {}", io::Error::from_raw_os_error(*errno), detail.as_ref().map(|d| format!(" ({d})")).unwrap_or_default(), errno_hint(*errno))]
    Kernel {
        /// The equivalent `ip mptcp …` command.
        request: String,
        /// The positive errno, e.g. `libc::EPERM`.
        errno: i32,
        /// The kernel's extended-ack message, if it sent one.
        detail: Option<String>,
    },
    /// A reply from the kernel that we could not decode.
    #[error("malformed mptcp_pm reply to `{request}`: {reason}")]
    Decode {
        /// The equivalent `ip mptcp …` command.
        request: String,
        /// What was wrong.
        reason: String,
    },
    /// An argument the kernel cannot take.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The kernel accepted an endpoint but does not list it.
    #[error("the kernel accepted `ip mptcp endpoint add {addr}` but `ip mptcp endpoint show` does not list it (removed concurrently?)")]
    EndpointMissing {
        /// The endpoint's address.
        addr: IpAddr,
    },
}

impl PmError {
    /// The kernel errno, if the kernel rejected the request.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Kernel { errno, .. } | Self::FamilyUnavailable { errno } => Some(*errno),
            Self::Connect(e) => e.raw_os_error(),
            _ => None,
        }
    }
}

/// A generic-netlink family braid speaks with pre-encoded attributes (`mptcp_pm`, and the
/// kernel's `wireguard`).
pub(crate) trait RawFamily: Clone + std::fmt::Debug + PartialEq + Eq + Default {
    /// The family's name (`CTRL_ATTR_FAMILY_NAME`).
    const NAME: &'static str;
    /// Its version.
    const VERSION: u8;
}

/// `mptcp_pm`, version 1.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct PmFamily;

impl RawFamily for PmFamily {
    const NAME: &'static str = FAMILY_NAME;
    const VERSION: u8 = FAMILY_VERSION;
}

/// One message of family `F`: a command and its encoded attributes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RawMessage<F> {
    pub cmd: u8,
    pub nlas: Vec<u8>,
    family: F,
}

/// One `mptcp_pm` message.
pub(crate) type PmMessage = RawMessage<PmFamily>;

impl<F: RawFamily> RawMessage<F> {
    pub fn new(cmd: u8, nlas: NlaWriter) -> Self {
        RawMessage {
            cmd,
            nlas: nlas.0,
            family: F::default(),
        }
    }
}

impl<F: RawFamily> GenlFamily for RawMessage<F> {
    fn family_name() -> &'static str {
        F::NAME
    }

    fn command(&self) -> u8 {
        self.cmd
    }

    fn version(&self) -> u8 {
        F::VERSION
    }
}

impl<F> Emitable for RawMessage<F> {
    fn buffer_len(&self) -> usize {
        self.nlas.len()
    }

    fn emit(&self, buffer: &mut [u8]) {
        buffer[..self.nlas.len()].copy_from_slice(&self.nlas);
    }
}

impl<F: RawFamily> ParseableParametrized<[u8], GenlHeader> for RawMessage<F> {
    fn parse_with_param(buf: &[u8], header: GenlHeader) -> Result<Self, DecodeError> {
        Ok(RawMessage {
            cmd: header.cmd,
            nlas: buf.to_vec(),
            family: F::default(),
        })
    }
}

/// Sends `msg` with `flags` on `handle` and collects the replies' attribute bytes; a kernel
/// error keeps its errno. `request` is the equivalent command line, used in errors.
pub(crate) async fn request_raw<F: RawFamily>(
    handle: &genetlink::GenetlinkHandle,
    msg: RawMessage<F>,
    flags: u16,
    request: impl Fn() -> String,
) -> Result<Vec<Vec<u8>>, PmError> {
    let mut nl = NetlinkMessage::from(GenlMessage::from_payload(msg));
    nl.header.flags = flags;
    let mut handle = handle.clone();
    let mut replies = handle.request(nl).await.map_err(|e| match e {
        GenetlinkError::NetlinkError(e) => PmError::FamilyUnavailable {
            errno: e.raw_os_error().unwrap_or(libc::ENOENT),
        },
        _ => PmError::ConnectionClosed,
    })?;
    let mut out = Vec::new();
    while let Some(reply) = replies.next().await {
        let reply = reply.map_err(|e| PmError::Decode {
            request: request(),
            reason: e.to_string(),
        })?;
        match reply.payload {
            NetlinkPayload::InnerMessage(genl) => out.push(genl.payload.nlas),
            NetlinkPayload::Error(err) => {
                if let Some(code) = err.code {
                    return Err(PmError::Kernel {
                        request: request(),
                        errno: code.get().saturating_abs(),
                        detail: ext_ack_message(reply.header.flags, &err),
                    });
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Appends netlink attributes (4-byte header, value, padding to 4).
#[derive(Default)]
pub(crate) struct NlaWriter(pub(crate) Vec<u8>);

impl NlaWriter {
    pub fn bytes(&mut self, kind: u16, value: &[u8]) -> &mut Self {
        // Values here are at most a few dozen bytes.
        let len = u16::try_from(4 + value.len()).unwrap_or(u16::MAX);
        self.0.extend_from_slice(&len.to_ne_bytes());
        self.0.extend_from_slice(&kind.to_ne_bytes());
        self.0.extend_from_slice(value);
        self.0.resize(self.0.len().next_multiple_of(4), 0);
        self
    }

    pub fn u32(&mut self, kind: u16, value: u32) -> &mut Self {
        self.bytes(kind, &value.to_ne_bytes())
    }

    pub fn nested(&mut self, kind: u16, inner: NlaWriter) -> &mut Self {
        self.bytes(kind | NLA_F_NESTED, &inner.0)
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }

    /// Appends attributes encoded elsewhere.
    pub fn raw(&mut self, encoded: &[u8]) -> &mut Self {
        self.0.extend_from_slice(encoded);
        self
    }
}

/// Splits `buf` into attributes `(kind, value)`; malformed lengths are errors.
pub(crate) fn parse_nlas(mut buf: &[u8]) -> Result<Vec<(u16, &[u8])>, String> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        if buf.len() < 4 {
            return Err(format!(
                "{} trailing bytes after the last attribute",
                buf.len()
            ));
        }
        let len = usize::from(u16::from_ne_bytes([buf[0], buf[1]]));
        let kind = u16::from_ne_bytes([buf[2], buf[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > buf.len() {
            return Err(format!(
                "attribute {kind} claims {len} bytes, {} are left",
                buf.len()
            ));
        }
        out.push((kind, &buf[4..len]));
        buf = buf.get(len.next_multiple_of(4)..).unwrap_or_default();
    }
    Ok(out)
}

pub(crate) fn parse_u32(value: &[u8]) -> Result<u32, String> {
    Ok(u32::from_ne_bytes(value.try_into().map_err(|_| {
        format!("expected a u32, got {} bytes", value.len())
    })?))
}

/// The nested `MPTCP_PM_ATTR_ADDR` (`struct mptcp_pm_addr_entry` on the wire).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct PmAddr {
    /// `AF_INET`/`AF_INET6`; sent with `addr` only, since DEL_ADDR by id
    /// fails with EINVAL when FAMILY is present without an address.
    pub addr: Option<IpAddr>,
    pub id: Option<u8>,
    pub port: Option<u16>,
    pub flags: Option<u32>,
    pub ifindex: Option<i32>,
}

impl PmAddr {
    pub fn encode(&self) -> NlaWriter {
        let mut w = NlaWriter::default();
        match self.addr {
            Some(IpAddr::V4(a)) => {
                w.bytes(addr_attr::FAMILY, &(libc::AF_INET as u16).to_ne_bytes());
                w.bytes(addr_attr::ADDR4, &a.octets());
            }
            Some(IpAddr::V6(a)) => {
                w.bytes(addr_attr::FAMILY, &(libc::AF_INET6 as u16).to_ne_bytes());
                w.bytes(addr_attr::ADDR6, &a.octets());
            }
            None => {}
        }
        if let Some(id) = self.id {
            w.bytes(addr_attr::ID, &[id]);
        }
        if let Some(port) = self.port {
            w.bytes(addr_attr::PORT, &port.to_ne_bytes());
        }
        if let Some(flags) = self.flags {
            w.u32(addr_attr::FLAGS, flags);
        }
        if let Some(ifindex) = self.ifindex {
            w.bytes(addr_attr::IF_IDX, &ifindex.to_ne_bytes());
        }
        w
    }

    pub fn decode(buf: &[u8]) -> Result<PmAddr, String> {
        let mut out = PmAddr::default();
        for (kind, value) in parse_nlas(buf)? {
            let bad = |what: &str| format!("bad {what} attribute ({} bytes)", value.len());
            match kind {
                addr_attr::ID => out.id = Some(*value.first().ok_or_else(|| bad("id"))?),
                addr_attr::ADDR4 => {
                    let octets: [u8; 4] = value.try_into().map_err(|_| bad("addr4"))?;
                    out.addr = Some(Ipv4Addr::from(octets).into());
                }
                addr_attr::ADDR6 => {
                    let octets: [u8; 16] = value.try_into().map_err(|_| bad("addr6"))?;
                    out.addr = Some(Ipv6Addr::from(octets).into());
                }
                addr_attr::PORT => {
                    let b: [u8; 2] = value.try_into().map_err(|_| bad("port"))?;
                    out.port = Some(u16::from_ne_bytes(b)).filter(|p| *p != 0);
                }
                addr_attr::FLAGS => out.flags = Some(parse_u32(value).map_err(|_| bad("flags"))?),
                addr_attr::IF_IDX => {
                    let b: [u8; 4] = value.try_into().map_err(|_| bad("if_idx"))?;
                    out.ifindex = Some(i32::from_ne_bytes(b)).filter(|i| *i > 0);
                }
                // FAMILY is implied by the address; newer kernels may add more.
                _ => {}
            }
        }
        Ok(out)
    }
}

/// A connection to the kernel's `mptcp_pm` family in the calling thread's
/// network namespace. Cheap to clone; all methods take `&self`.
///
/// The commands live in [`super::endpoint`] and [`super::limits`].
#[derive(Clone, Debug)]
pub struct MptcpPm {
    handle: genetlink::GenetlinkHandle,
}

impl MptcpPm {
    /// Opens a generic netlink socket, spawns its task on the current tokio
    /// runtime and resolves the `mptcp_pm` family, so a kernel without MPTCP
    /// is reported here as [`PmError::FamilyUnavailable`].
    pub async fn connect() -> Result<MptcpPm, PmError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| PmError::NoRuntime)?;
        let (mut conn, handle, _messages) =
            genetlink::new_connection().map_err(PmError::Connect)?;
        let socket = conn.socket_mut().socket_mut();
        // Best effort: error texts from the kernel are a bonus.
        let _ = socket.set_ext_ack(true);
        let _ = socket.set_cap_ack(true);
        runtime.spawn(conn);
        match handle.resolve_family::<PmMessage>().await {
            Ok(_) => Ok(MptcpPm { handle }),
            Err(GenetlinkError::NetlinkError(e)) => Err(PmError::FamilyUnavailable {
                errno: e.raw_os_error().unwrap_or(libc::ENOENT),
            }),
            Err(GenetlinkError::ProtocolError(_)) => Err(PmError::ConnectionClosed),
            Err(e) => Err(PmError::Decode {
                request: format!("resolve generic netlink family {FAMILY_NAME}"),
                reason: e.to_string(),
            }),
        }
    }

    /// Sends `msg` with `flags`, collects the replies' attribute bytes.
    ///
    /// `request` is the equivalent `ip mptcp …` command, used in errors.
    pub(crate) async fn request(
        &self,
        msg: PmMessage,
        flags: u16,
        request: impl Fn() -> String,
    ) -> Result<Vec<Vec<u8>>, PmError> {
        request_raw(&self.handle, msg, flags, request).await
    }

    pub(crate) fn handle(&self) -> &genetlink::GenetlinkHandle {
        &self.handle
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addr_round_trips() {
        for addr in [
            PmAddr {
                addr: Some("192.0.2.1".parse().unwrap()),
                id: Some(7),
                port: Some(8080),
                flags: Some(2 | 4),
                ifindex: Some(3),
            },
            PmAddr {
                addr: Some("2001:db8::1".parse().unwrap()),
                flags: Some(1),
                ..PmAddr::default()
            },
        ] {
            assert_eq!(PmAddr::decode(&addr.encode().0), Ok(addr));
        }
    }

    #[test]
    fn delete_by_id_leaves_family_out() {
        let by_id = PmAddr {
            id: Some(3),
            ..PmAddr::default()
        };
        let nlas = by_id.encode().0;
        let kinds: Vec<u16> = parse_nlas(&nlas).unwrap().iter().map(|(k, _)| *k).collect();
        assert_eq!(kinds, vec![addr_attr::ID]);
    }

    #[test]
    fn truncated_or_odd_attributes_are_errors_not_panics() {
        let mut w = NlaWriter::default();
        w.bytes(addr_attr::ADDR4, &[1, 2, 3]);
        assert!(PmAddr::decode(&w.0).is_err());
        assert!(PmAddr::decode(&[8, 0, 3]).is_err());
        let mut w = NlaWriter::default();
        w.bytes(addr_attr::ID, &[]);
        assert!(PmAddr::decode(&w.0).is_err());
        assert!(PmAddr::decode(&[]).is_ok());
    }
}
