//! Live MPTCP connection and subflow events from the kernel (`ip mptcp monitor`).
//!
//! ```text
//!   kernel ──multicast "mptcp_pm_events"──► NETLINK_GENERIC socket (own task) ──► PmEvents::next()
//!                                                                                 └─► PmEvent
//! ```
//!
//! A socket subscribed to this group is also what makes the kernel's *userspace* path manager
//! "active" in its network namespace: only then does it accept MP_JOINs for connections it
//! manages (`mptcp_userspace_pm_active()` in `net/mptcp/pm.c`). So the relay's subflow manager
//! must hold a [`PmEvents`] for as long as it wants joins accepted.
//!
//! Events are never lost silently: an overrun of the socket's queue is returned as
//! [`PmEvent::Overrun`], after re-subscribing on a fresh socket. As with the rtnetlink monitor,
//! the connection task drains the socket into an unbounded queue whenever the runtime polls
//! it, so the queue grows while the caller does not call [`PmEvents::next`]: the caller must
//! keep up (the relay's path manager does a table update and at most one netlink command per
//! event). The kernel sends nothing
//! while no socket listens, so events from before [`PmEvents::subscribe`] are not replayed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use futures::channel::mpsc::UnboundedReceiver;
use futures::StreamExt;
use genetlink::message::RawGenlMessage;
use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_sys::AsyncSocket;

use super::pm::{parse_nlas, parse_u32, MptcpPm, PmError, PmMessage};

/// `MPTCP_PM_EV_GRP_NAME`.
const GROUP: &str = "mptcp_pm_events";
/// Receive queue asked for; a burst of new connections produces several events each.
const RCVBUF_BYTES: usize = 1 << 20;

/// `enum mptcp_event_type`.
mod event {
    pub const CREATED: u8 = 1;
    pub const ESTABLISHED: u8 = 2;
    pub const CLOSED: u8 = 3;
    pub const SUB_ESTABLISHED: u8 = 10;
    pub const SUB_CLOSED: u8 = 11;
    pub const SUB_PRIORITY: u8 = 13;
}

/// `enum mptcp_event_attr`.
mod attr {
    pub const TOKEN: u16 = 1;
    pub const SADDR4: u16 = 5;
    pub const SADDR6: u16 = 6;
    pub const DADDR4: u16 = 7;
    pub const DADDR6: u16 = 8;
    pub const SPORT: u16 = 9;
    pub const DPORT: u16 = 10;
    pub const BACKUP: u16 = 11;
    pub const SERVER_SIDE: u16 = 18;
}

/// What happened to a connection or one of its subflows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PmEventKind {
    /// The first subflow's handshake began (`MPTCP_EVENT_CREATED`).
    Created,
    /// The connection is fully established (`MPTCP_EVENT_ESTABLISHED`); its addresses are
    /// those of the first subflow.
    Established,
    /// The connection is gone (`MPTCP_EVENT_CLOSED`).
    Closed,
    /// A joined subflow is up (`MPTCP_EVENT_SUB_ESTABLISHED`). The first subflow is reported
    /// by `Established` instead.
    SubEstablished,
    /// A subflow closed (`MPTCP_EVENT_SUB_CLOSED`), the first one included.
    SubClosed,
    /// A subflow's backup flag changed (`MPTCP_EVENT_SUB_PRIORITY`).
    SubPriority,
}

/// One event about connection `token`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionEvent {
    /// What happened.
    pub kind: PmEventKind,
    /// The connection's local token, the key of every userspace path-manager command.
    pub token: u32,
    /// The subflow's local address (absent for `Closed`).
    pub local: Option<SocketAddr>,
    /// The subflow's remote address (absent for `Closed`).
    pub remote: Option<SocketAddr>,
    /// The subflow's backup flag, for subflow events.
    pub backup: Option<bool>,
    /// Whether this end accepted the connection (sent with `Created` and `Established`).
    pub server_side: Option<bool>,
}

/// What [`PmEvents::next`] yields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PmEvent {
    /// A connection or subflow event.
    Connection(ConnectionEvent),
    /// The kernel dropped events because the queue was full; the subscription is renewed.
    /// State built from earlier events may be stale.
    Overrun,
}

/// A subscription to the `mptcp_pm_events` multicast group of the calling thread's network
/// namespace. Dropping it ends the subscription.
#[derive(Debug)]
pub struct PmEvents {
    runtime: tokio::runtime::Handle,
    group: u32,
    connection: Connection,
}

#[derive(Debug)]
struct Connection {
    messages: UnboundedReceiver<(NetlinkMessage<RawGenlMessage>, netlink_sys::SocketAddr)>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Connection {
    fn open(runtime: &tokio::runtime::Handle, group: u32) -> Result<Connection, PmError> {
        let (mut conn, _handle, messages) =
            genetlink::new_connection().map_err(PmError::Connect)?;
        let socket = conn.socket_mut().socket_mut();
        // An unbound socket has port id 0, the kernel's own, and the kernel skips it when it
        // broadcasts (`do_one_broadcast`): bind first.
        socket.bind_auto().map_err(PmError::Connect)?;
        socket.add_membership(group).map_err(PmError::Connect)?;
        if let Err(e) = socket.set_rx_buf_sz(RCVBUF_BYTES) {
            tracing::debug!("cannot enlarge the MPTCP event socket's receive buffer: {e}");
        }
        let task = runtime.spawn(conn);
        Ok(Connection { messages, task })
    }
}

impl PmEvents {
    /// Subscribes to the kernel's MPTCP events on the current tokio runtime. Like
    /// `ip mptcp monitor`.
    pub async fn subscribe(pm: &MptcpPm) -> Result<PmEvents, PmError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| PmError::NoRuntime)?;
        let family = pm.family().await?;
        let group = *family
            .multicast_groups
            .get(GROUP)
            .ok_or_else(|| PmError::Decode {
                request: "ip mptcp monitor".into(),
                reason: format!(
                    "the mptcp_pm family has no {GROUP:?} multicast group (it has {:?}): this kernel cannot report MPTCP events (Linux 5.12 or later can)",
                    family.multicast_groups.keys().collect::<Vec<_>>()
                ),
            })?;
        let connection = Connection::open(&runtime, group)?;
        Ok(PmEvents {
            runtime,
            group,
            connection,
        })
    }

    /// The next event, or `None` once the connection task has ended (its runtime shut down).
    pub async fn next(&mut self) -> Option<PmEvent> {
        loop {
            let (message, _) = self.connection.messages.next().await?;
            match message.payload {
                NetlinkPayload::Overrun(_) => {
                    match Connection::open(&self.runtime, self.group) {
                        Ok(fresh) => self.connection = fresh,
                        Err(e) => tracing::warn!(
                            "MPTCP event socket overrun and cannot open a fresh one ({e}); keeping the old one"
                        ),
                    }
                    return Some(PmEvent::Overrun);
                }
                NetlinkPayload::InnerMessage(raw) => match decode(raw.header.cmd, &raw.payload) {
                    Ok(Some(event)) => return Some(PmEvent::Connection(event)),
                    Ok(None) => {}
                    Err(reason) => {
                        tracing::debug!("skipped an MPTCP event the kernel sent: {reason}")
                    }
                },
                _ => {}
            }
        }
    }
}

/// Decodes one event (`cmd` is the event type). `Ok(None)` for events braid does not act on
/// (address announcements, listeners).
pub fn decode(cmd: u8, nlas: &[u8]) -> Result<Option<ConnectionEvent>, String> {
    let kind = match cmd {
        event::CREATED => PmEventKind::Created,
        event::ESTABLISHED => PmEventKind::Established,
        event::CLOSED => PmEventKind::Closed,
        event::SUB_ESTABLISHED => PmEventKind::SubEstablished,
        event::SUB_CLOSED => PmEventKind::SubClosed,
        event::SUB_PRIORITY => PmEventKind::SubPriority,
        _ => return Ok(None),
    };
    let mut token = None;
    let (mut saddr, mut daddr, mut sport, mut dport) = (None, None, None, None);
    let mut backup = None;
    let mut server_side = None;
    for (kind, value) in parse_nlas(nlas)? {
        let bad = |what: &str| format!("bad {what} attribute ({} bytes)", value.len());
        match kind {
            attr::TOKEN => token = Some(parse_u32(value).map_err(|_| bad("token"))?),
            attr::SADDR4 | attr::DADDR4 => {
                let o: [u8; 4] = value.try_into().map_err(|_| bad("IPv4 address"))?;
                let a = IpAddr::V4(Ipv4Addr::from(o));
                *(if kind == attr::SADDR4 {
                    &mut saddr
                } else {
                    &mut daddr
                }) = Some(a);
            }
            attr::SADDR6 | attr::DADDR6 => {
                let o: [u8; 16] = value.try_into().map_err(|_| bad("IPv6 address"))?;
                let a = IpAddr::V6(Ipv6Addr::from(o));
                *(if kind == attr::SADDR6 {
                    &mut saddr
                } else {
                    &mut daddr
                }) = Some(a);
            }
            // Ports are in network byte order (`nla_put_be16`).
            attr::SPORT | attr::DPORT => {
                let b: [u8; 2] = value.try_into().map_err(|_| bad("port"))?;
                *(if kind == attr::SPORT {
                    &mut sport
                } else {
                    &mut dport
                }) = Some(u16::from_be_bytes(b));
            }
            attr::BACKUP => backup = Some(*value.first().ok_or_else(|| bad("backup"))? != 0),
            attr::SERVER_SIDE => {
                server_side = Some(*value.first().ok_or_else(|| bad("server side"))? != 0)
            }
            _ => {}
        }
    }
    let token = token.ok_or("an event without a token")?;
    let addr = |ip: Option<IpAddr>, port: Option<u16>| Some(SocketAddr::new(ip?, port?));
    Ok(Some(ConnectionEvent {
        kind,
        token,
        local: addr(saddr, sport),
        remote: addr(daddr, dport),
        backup,
        server_side,
    }))
}

impl MptcpPm {
    /// The `mptcp_pm` family as the kernel describes it (its id and multicast groups).
    pub(crate) async fn family(&self) -> Result<genetlink::resolver::Family, PmError> {
        self.handle()
            .resolve_family::<PmMessage>()
            .await
            .map_err(|e| PmError::Decode {
                request: "resolve generic netlink family mptcp_pm".into(),
                reason: e.to_string(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mptcp::pm::NlaWriter;

    #[test]
    fn sub_established_decodes_addresses_ports_and_backup() {
        let mut w = NlaWriter::default();
        w.u32(attr::TOKEN, 0xdead_beef)
            .bytes(2, &(libc::AF_INET as u16).to_ne_bytes())
            .bytes(attr::SADDR4, &[10, 9, 0, 2])
            .bytes(attr::DADDR4, &[10, 2, 0, 1])
            .bytes(attr::SPORT, &8388u16.to_be_bytes())
            .bytes(attr::DPORT, &40000u16.to_be_bytes())
            .bytes(attr::BACKUP, &[1]);
        let e = decode(event::SUB_ESTABLISHED, &w.into_bytes())
            .unwrap()
            .unwrap();
        assert_eq!(e.kind, PmEventKind::SubEstablished);
        assert_eq!(e.token, 0xdead_beef);
        assert_eq!(e.local, Some("10.9.0.2:8388".parse().unwrap()));
        assert_eq!(e.remote, Some("10.2.0.1:40000".parse().unwrap()));
        assert_eq!(e.backup, Some(true));
    }

    #[test]
    fn closed_has_no_addresses_and_unknown_events_are_skipped() {
        let mut w = NlaWriter::default();
        w.u32(attr::TOKEN, 7);
        let e = decode(event::CLOSED, &w.into_bytes()).unwrap().unwrap();
        assert_eq!(
            (e.kind, e.local, e.remote),
            (PmEventKind::Closed, None, None)
        );
        assert_eq!(decode(15, &[]), Ok(None));
    }

    #[test]
    fn malformed_events_are_errors_not_panics() {
        assert!(decode(event::CREATED, &[]).is_err());
        let mut w = NlaWriter::default();
        w.u32(attr::TOKEN, 7).bytes(attr::SADDR4, &[1, 2]);
        assert!(decode(event::CREATED, &w.into_bytes()).is_err());
        assert!(decode(event::CREATED, &[9, 0, 1]).is_err());
    }
}
