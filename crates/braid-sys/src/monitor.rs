//! Live kernel events for uplink management (`ip monitor link address route`).
//!
//! ```text
//!   kernel ──multicast──► NETLINK_ROUTE socket (own connection task) ──► Monitor::next()
//!          RTMGRP_LINK, RTMGRP_IPV{4,6}_IFADDR,                          └─► KernelEvent
//!          RTMGRP_IPV{4,6}_ROUTE
//! ```
//!
//! The gateway reconciles each uplink's routes, rules and MPTCP endpoints from
//! a full dump whenever something relevant changes, so a [`KernelEvent`] only
//! says *what kind of thing changed on which interface*; it is a trigger, not a
//! replica of kernel state.
//!
//! Messages are never lost silently: when the kernel drops notifications
//! because the socket's receive queue is full (`ENOBUFS`), [`Monitor::next`]
//! returns [`KernelEvent::Overrun`] (after re-subscribing on a fresh socket)
//! and the caller must resync from a dump. The connection task drains the
//! socket into an unbounded queue whenever the runtime polls it, so an overrun
//! means the runtime was starved or a burst exceeded the 1 MiB receive buffer;
//! the queue itself grows while the caller does not call [`Monitor::next`].
//!
//! The kernel does not announce everything: IPv4 routes it flushes because
//! their interface went down or lost the address they depend on produce no
//! `RTM_DELROUTE` (IPv6 ones do). Treat every [`KernelEvent::Link`] and
//! [`KernelEvent::Address`] event as possibly having changed routes too.

use std::net::IpAddr;

use futures::channel::mpsc::UnboundedReceiver;
use futures::StreamExt;
use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::{
    address::{AddressAttribute, AddressMessage},
    link::{LinkAttribute, LinkFlags, LinkMessage, State},
    route::{RouteAttribute, RouteMessage},
    AddressFamily, RouteNetlinkMessage,
};
use netlink_sys::{AsyncSocket, SocketAddr};

use crate::link::{Link, OperState};
use crate::netlink::NetlinkError;

/// The receive buffer asked for, like iproute2's `ip monitor` (the kernel caps
/// it at `net.core.rmem_max`).
const RCVBUF_BYTES: usize = 1024 * 1024;

/// The multicast groups of `ip monitor link address route`.
const GROUPS: u32 = (libc::RTMGRP_LINK
    | libc::RTMGRP_IPV4_IFADDR
    | libc::RTMGRP_IPV4_ROUTE
    | libc::RTMGRP_IPV6_IFADDR
    | libc::RTMGRP_IPV6_ROUTE) as u32;

/// One change the kernel announced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KernelEvent {
    /// An interface appeared, changed (flags, carrier, name) or was removed
    /// (`RTM_NEWLINK` / `RTM_DELLINK`).
    Link {
        /// Interface index.
        ifindex: u32,
        /// Interface name, if the message carried it.
        name: Option<String>,
        /// Administratively up with carrier and an operational state of `UP`
        /// or `UNKNOWN` (see [`Link::is_up`]); always false when `removed`.
        up: bool,
        /// The interface is gone.
        removed: bool,
    },
    /// An address was added, changed or removed (`RTM_NEWADDR` /
    /// `RTM_DELADDR`). IPv6 link-local addresses are reported too.
    Address {
        /// Interface index.
        ifindex: u32,
        /// The local address (`IFA_LOCAL`, else `IFA_ADDRESS`).
        addr: IpAddr,
        /// Prefix length of the subnet.
        prefix_len: u8,
        /// The address is gone.
        removed: bool,
    },
    /// A route was added, replaced or removed in `table` (`RTM_NEWROUTE` /
    /// `RTM_DELROUTE`). IPv4 routes the kernel flushes itself (interface down,
    /// address gone) are not announced: see the module docs.
    Route {
        /// Routing table (254 is `main`, 255 `local`).
        table: u32,
        /// Output interface, if the route has a single one.
        oif: Option<u32>,
        /// The route is gone.
        removed: bool,
    },
    /// The socket lost notifications (`ENOBUFS`): the caller must resync
    /// everything from a full dump. The monitor has already re-subscribed, so
    /// changes after that dump are reported.
    Overrun,
}

/// A subscription to link, address and route changes in the calling thread's
/// network namespace. Dropping it closes the socket.
#[derive(Debug)]
pub struct Monitor {
    runtime: tokio::runtime::Handle,
    connection: Connection,
}

/// One multicast NETLINK_ROUTE socket and the task that reads it.
#[derive(Debug)]
struct Connection {
    messages: UnboundedReceiver<(NetlinkMessage<RouteNetlinkMessage>, SocketAddr)>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Connection {
    fn open(runtime: &tokio::runtime::Handle) -> Result<Connection, NetlinkError> {
        let (mut conn, _handle, messages) =
            rtnetlink::new_connection().map_err(NetlinkError::Connect)?;
        let socket = conn.socket_mut().socket_mut();
        socket
            .bind(&SocketAddr::new(0, GROUPS))
            .map_err(NetlinkError::Connect)?;
        // Best effort: a bigger queue makes overruns rarer, not impossible.
        if let Err(e) = socket.set_rx_buf_sz(RCVBUF_BYTES) {
            tracing::debug!("cannot enlarge the rtnetlink monitor's receive buffer: {e}");
        }
        let task = runtime.spawn(conn);
        Ok(Connection { messages, task })
    }
}

impl Monitor {
    /// Opens a NETLINK_ROUTE socket bound to the link, IPv4/IPv6 address and
    /// IPv4/IPv6 route multicast groups and spawns its connection task on the
    /// current tokio runtime. Like `ip monitor link address route`.
    pub fn subscribe() -> Result<Monitor, NetlinkError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| NetlinkError::NoRuntime)?;
        let connection = Connection::open(&runtime)?;
        Ok(Monitor {
            runtime,
            connection,
        })
    }

    /// The next relevant change, or `None` when the connection has ended (its
    /// runtime shut down or the socket failed): subscribe again and resync.
    /// Like reading one line of `ip monitor link address route`.
    ///
    /// After an [`KernelEvent::Overrun`] the monitor is already subscribed
    /// on a fresh socket, so every change after the caller's resync dump is
    /// reported. (The kernel silently drops notifications to an overrun socket
    /// until its queue is empty; reusing it would lose changes that race the
    /// resync.)
    pub async fn next(&mut self) -> Option<KernelEvent> {
        loop {
            let (message, _) = self.connection.messages.next().await?;
            match decode(&message) {
                Some(KernelEvent::Overrun) => {
                    self.resubscribe();
                    return Some(KernelEvent::Overrun);
                }
                Some(event) => return Some(event),
                None => {}
            }
        }
    }

    /// Replaces the overrun socket with a fresh one; the notifications still
    /// queued on the old one are dropped (the caller's resync covers them).
    fn resubscribe(&mut self) {
        match Connection::open(&self.runtime) {
            Ok(fresh) => self.connection = fresh,
            Err(e) => tracing::warn!(
                "rtnetlink monitor overrun and cannot open a fresh socket ({e}); \
                 keeping the old one, which drops changes until its queue is drained"
            ),
        }
    }
}

/// The event a notification stands for, or `None` for messages braid does not
/// act on (neighbours, rules, bridge ports, acks).
fn decode(message: &NetlinkMessage<RouteNetlinkMessage>) -> Option<KernelEvent> {
    match &message.payload {
        NetlinkPayload::Overrun(_) => Some(KernelEvent::Overrun),
        NetlinkPayload::InnerMessage(inner) => match inner {
            RouteNetlinkMessage::NewLink(m) => link_event(m, false),
            RouteNetlinkMessage::DelLink(m) => link_event(m, true),
            RouteNetlinkMessage::NewAddress(m) => address_event(m, false),
            RouteNetlinkMessage::DelAddress(m) => address_event(m, true),
            RouteNetlinkMessage::NewRoute(m) => Some(route_event(m, false)),
            RouteNetlinkMessage::DelRoute(m) => Some(route_event(m, true)),
            _ => None,
        },
        _ => None,
    }
}

fn link_event(msg: &LinkMessage, removed: bool) -> Option<KernelEvent> {
    // AF_BRIDGE messages describe bridge *ports*: their RTM_DELLINK means
    // "left the bridge", not "interface removed".
    if msg.header.interface_family == AddressFamily::Bridge {
        return None;
    }
    let mut name = None;
    let mut oper_state = OperState::Unknown;
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => name = Some(n.clone()),
            LinkAttribute::OperState(s) => {
                oper_state = match s {
                    State::Up => OperState::Up,
                    State::Unknown => OperState::Unknown,
                    _ => OperState::Down,
                }
            }
            _ => {}
        }
    }
    let link = Link {
        index: msg.header.index,
        name: name.clone().unwrap_or_default(),
        admin_up: msg.header.flags.contains(LinkFlags::Up),
        carrier: msg.header.flags.contains(LinkFlags::LowerUp),
        oper_state,
    };
    Some(KernelEvent::Link {
        ifindex: link.index,
        name,
        up: !removed && link.is_up(),
        removed,
    })
}

fn address_event(msg: &AddressMessage, removed: bool) -> Option<KernelEvent> {
    // IFA_LOCAL is the local side of a point-to-point link (IFA_ADDRESS is
    // then the peer); IPv6 sends only IFA_ADDRESS.
    let local = msg.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(ip) => Some(*ip),
        _ => None,
    });
    let address = msg.attributes.iter().find_map(|a| match a {
        AddressAttribute::Address(ip) => Some(*ip),
        _ => None,
    });
    Some(KernelEvent::Address {
        ifindex: msg.header.index,
        addr: local.or(address)?,
        prefix_len: msg.header.prefix_len,
        removed,
    })
}

fn route_event(msg: &RouteMessage, removed: bool) -> KernelEvent {
    let mut table = u32::from(msg.header.table);
    let mut oif = None;
    for attr in &msg.attributes {
        match attr {
            // RTA_TABLE carries ids above 255; the header's u8 is then 252.
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Oif(i) => oif = Some(*i),
            _ => {}
        }
    }
    KernelEvent::Route {
        table,
        oif,
        removed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::NetlinkHeader;
    use netlink_packet_route::route::RouteAddress;

    fn wrap(inner: RouteNetlinkMessage) -> NetlinkMessage<RouteNetlinkMessage> {
        NetlinkMessage::new(
            NetlinkHeader::default(),
            NetlinkPayload::InnerMessage(inner),
        )
    }

    fn link(flags: LinkFlags, state: State) -> LinkMessage {
        let mut m = LinkMessage::default();
        m.header.index = 7;
        m.header.flags = flags;
        m.attributes.push(LinkAttribute::IfName("wan0".into()));
        m.attributes.push(LinkAttribute::OperState(state));
        m
    }

    #[test]
    fn newlink_up_with_carrier_is_up() {
        let m = link(LinkFlags::Up | LinkFlags::LowerUp, State::Up);
        assert_eq!(
            decode(&wrap(RouteNetlinkMessage::NewLink(m))),
            Some(KernelEvent::Link {
                ifindex: 7,
                name: Some("wan0".into()),
                up: true,
                removed: false
            })
        );
    }

    #[test]
    fn newlink_without_carrier_is_down() {
        for (flags, state) in [
            (LinkFlags::Up, State::LowerLayerDown),
            (LinkFlags::Up, State::Unknown),
            (LinkFlags::LowerUp, State::Down),
            (LinkFlags::Up | LinkFlags::LowerUp, State::Dormant),
        ] {
            let m = link(flags, state);
            let event = decode(&wrap(RouteNetlinkMessage::NewLink(m)));
            assert!(
                matches!(
                    event,
                    Some(KernelEvent::Link {
                        up: false,
                        removed: false,
                        ..
                    })
                ),
                "{event:?}"
            );
        }
    }

    #[test]
    fn newlink_unknown_operstate_with_carrier_is_up() {
        let m = link(LinkFlags::Up | LinkFlags::LowerUp, State::Unknown);
        let event = decode(&wrap(RouteNetlinkMessage::NewLink(m)));
        assert!(
            matches!(event, Some(KernelEvent::Link { up: true, .. })),
            "{event:?}"
        );
    }

    #[test]
    fn dellink_is_removed_and_not_up() {
        let m = link(LinkFlags::Up | LinkFlags::LowerUp, State::Up);
        let event = decode(&wrap(RouteNetlinkMessage::DelLink(m)));
        assert!(
            matches!(
                event,
                Some(KernelEvent::Link {
                    ifindex: 7,
                    up: false,
                    removed: true,
                    ..
                })
            ),
            "{event:?}"
        );
    }

    #[test]
    fn bridge_port_dellink_is_ignored() {
        let mut m = link(LinkFlags::Up, State::Up);
        m.header.interface_family = AddressFamily::Bridge;
        assert_eq!(decode(&wrap(RouteNetlinkMessage::DelLink(m))), None);
    }

    #[test]
    fn address_prefers_local_over_peer() {
        let mut m = AddressMessage::default();
        m.header.index = 3;
        m.header.prefix_len = 32;
        m.attributes
            .push(AddressAttribute::Address("10.0.0.2".parse().unwrap()));
        m.attributes
            .push(AddressAttribute::Local("10.0.0.1".parse().unwrap()));
        assert_eq!(
            decode(&wrap(RouteNetlinkMessage::DelAddress(m))),
            Some(KernelEvent::Address {
                ifindex: 3,
                addr: "10.0.0.1".parse().unwrap(),
                prefix_len: 32,
                removed: true
            })
        );
    }

    #[test]
    fn address_without_ip_is_ignored() {
        let m = AddressMessage::default();
        assert_eq!(decode(&wrap(RouteNetlinkMessage::NewAddress(m))), None);
    }

    #[test]
    fn route_table_attribute_overrides_header() {
        let mut m = RouteMessage::default();
        m.header.table = 252;
        m.attributes.push(RouteAttribute::Table(1000));
        m.attributes.push(RouteAttribute::Oif(4));
        m.attributes
            .push(RouteAttribute::Destination(RouteAddress::Inet(
                "192.0.2.0".parse().unwrap(),
            )));
        assert_eq!(
            decode(&wrap(RouteNetlinkMessage::NewRoute(m))),
            Some(KernelEvent::Route {
                table: 1000,
                oif: Some(4),
                removed: false
            })
        );
    }

    #[test]
    fn route_without_oif_has_none() {
        let mut m = RouteMessage::default();
        m.header.table = 101;
        assert_eq!(
            decode(&wrap(RouteNetlinkMessage::DelRoute(m))),
            Some(KernelEvent::Route {
                table: 101,
                oif: None,
                removed: true
            })
        );
    }

    #[test]
    fn overrun_is_reported_and_other_payloads_ignored() {
        let overrun = NetlinkMessage::<RouteNetlinkMessage>::new(
            NetlinkHeader::default(),
            NetlinkPayload::Overrun(Vec::new()),
        );
        assert_eq!(decode(&overrun), Some(KernelEvent::Overrun));
        let noop = NetlinkMessage::<RouteNetlinkMessage>::new(
            NetlinkHeader::default(),
            NetlinkPayload::Noop,
        );
        assert_eq!(decode(&noop), None);
        let rule = RouteNetlinkMessage::NewRule(Default::default());
        assert_eq!(decode(&wrap(rule)), None);
    }
}
