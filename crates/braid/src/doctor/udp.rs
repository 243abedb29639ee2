//! `uplink.NAME.udp`: does UDP reach the relay over this uplink? A Shadowsocks-2022 UDP probe to
//! the relay's control target, sent from the uplink's address, is answered by braid's relay over
//! the same path. Where it is dropped (hotel and corporate WiFi, a provider's security group),
//! the gateway carries UDP inside TCP while every uplink drops it; this check says which uplink
//! drops it and why that matters.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use braid_proto::control::{CONTROL_HOST, CONTROL_PORT};
use bytes::BytesMut;
use shadowsocks::relay::socks5::Address;

use super::check::Check;
use crate::config::gateway::{GatewayConfig, Uplink};
use crate::datagram::{Codec, MAX_DATAGRAM};

/// Probes sent, and how long to wait for each.
const TRIES: u32 = 3;
const WAIT: Duration = Duration::from_millis(400);

/// The check for uplink `u` with address `addr`; `relay_is_braid`: the relay answered braid's
/// control request (a stock server answers no probe, so silence would prove nothing).
pub async fn check(
    cfg: &GatewayConfig,
    u: &Uplink,
    addr: IpAddr,
    relay: SocketAddr,
    relay_is_braid: bool,
) -> Check {
    let id = format!("uplink.{}.udp", u.name);
    if cfg.udp.is_none() {
        return Check::skip(id, "udp = false in gateway.toml: LAN UDP is not relayed");
    }
    if !relay_is_braid {
        return Check::skip(
            id,
            "the relay is not braid (or not reachable), and only braid's relay answers the UDP probe",
        );
    }
    match probe(cfg, u, addr, relay).await {
        Ok(Some(ms)) => Check::ok(
            id,
            format!("UDP to {relay} over {} is answered in {ms} ms", u.interface),
        )
        .with("rtt_ms", ms),
        Ok(None) => Check::warn(
            id,
            format!("UDP to the relay {relay} is dropped on {}", u.interface),
            format!("a firewall drops UDP to port {}: the network this uplink is on (hotel or corporate WiFi), or the VPS provider's security group or the VPS's own firewall", relay.port()),
            format!("allow UDP port {} in the VPS provider's firewall and on the VPS (ufw allow {}/udp); on a network you do not control nothing needs doing: while every uplink drops UDP, braid carries it inside the bonded TCP connection (UDP over TCP)", relay.port(), relay.port()),
        )
        .with("probes", TRIES),
        Err(e) => Check::warn(
            id,
            format!("cannot send a UDP probe over {}: {e}", u.interface),
            "the uplink's address or interface cannot take a UDP socket right now",
            "check the uplink (see uplink.*.address) and run braid doctor as root",
        ),
    }
}

/// The round trip of the first answered probe, in ms; `None` when none was answered.
async fn probe(
    cfg: &GatewayConfig,
    u: &Uplink,
    addr: IpAddr,
    relay: SocketAddr,
) -> std::io::Result<Option<u64>> {
    let socket = crate::gateway::udp::uplink_socket(&u.interface, addr)?;
    let codec = Codec::new(cfg.method, &cfg.key);
    let mut id = [0u8; 8];
    let _ = getrandom::fill(&mut id);
    let session = u64::from_ne_bytes(id);
    let target = Address::DomainNameAddress(CONTROL_HOST.into(), CONTROL_PORT);
    let (mut out, mut buf) = (BytesMut::new(), vec![0u8; MAX_DATAGRAM]);
    for packet in 0..u64::from(TRIES) {
        let started = Instant::now();
        codec.seal_request(session, packet, &target, &packet.to_be_bytes(), &mut out);
        socket.send_to(&out, relay).await?;
        let deadline = started + WAIT;
        while let Ok(Ok((n, from))) =
            tokio::time::timeout_at(deadline.into(), socket.recv_from(&mut buf)).await
        {
            let answered = braid_sys::socket::normalize(from) == relay
                && codec
                    .open_reply(&mut buf[..n])
                    .is_ok_and(|o| o.client_session == session);
            if answered {
                return Ok(Some(started.elapsed().as_millis() as u64));
            }
        }
    }
    Ok(None)
}
