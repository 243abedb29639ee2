//! Shadowsocks-2022 UDP interoperability, with the `shadowsocks` crate (the library inside
//! shadowsocks-rust) as the other side:
//! - a stock UDP client against `braid server`: datagrams relayed both ways, a session that
//!   moves to another uplink keeps its outbound socket (the far end sees the same source), a
//!   replayed packet id is dropped, and the relay's status shows the session; a session that
//!   only receives follows a move announcement (`braid_proto::udp::moved`);
//! - `braid gateway` against a stock UDP server: LAN datagrams through the TPROXY capture.
//!
//! Root-only; under CI=true a missing root fails instead of skipping.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use braid_lab::harness::{Harness, RELAY_PORT, TRAFFIC_PORT};
use braid_lab::{Lab, Role};
use braid_proto::udp::moved::{MOVED_HOST, MOVED_PORT};
use common::{in_netns, runtime as rt, unshaped_uplinks};
use shadowsocks::config::{ServerConfig, ServerType};
use shadowsocks::context::Context;
use shadowsocks::crypto::CipherKind;
use shadowsocks::relay::socks5::Address;
use shadowsocks::relay::udprelay::options::UdpSocketControlData;
use shadowsocks::relay::udprelay::proxy_socket::{ProxySocket, UdpSocketType};
use tokio::net::UdpSocket;

const METHOD: CipherKind = CipherKind::AEAD2022_BLAKE3_AES_256_GCM;

/// The crate's client socket.
type Stock = ProxySocket<shadowsocks::net::UdpSocket>;

fn relay() -> SocketAddr {
    SocketAddr::from((Lab::VPS_PUBLIC, RELAY_PORT))
}

fn echo_server() -> Address {
    Address::SocketAddress(SocketAddr::from((Lab::SRV, TRAFFIC_PORT)))
}

/// A stock client socket to the relay, leaving through uplink interface `iface` from `src`.
async fn stock_client(key: &str, src: std::net::IpAddr, iface: &str) -> Stock {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
    s.bind_device(Some(iface.as_bytes())).unwrap();
    s.bind(&SocketAddr::new(src, 0).into()).unwrap();
    s.set_nonblocking(true).unwrap();
    let s = UdpSocket::from_std(s.into()).unwrap();
    s.connect(relay()).await.unwrap();
    let cfg = ServerConfig::new(relay(), key, METHOD).expect("config");
    ProxySocket::from_socket(
        UdpSocketType::Client,
        Context::new_shared(ServerType::Local),
        &cfg,
        s.into(),
    )
}

fn control(session: u64, packet: u64) -> UdpSocketControlData {
    let mut c = UdpSocketControlData::default();
    c.client_session_id = session;
    c.packet_id = packet;
    c
}

/// Sends `payload` as packet `packet` of `session` and returns the first answer within 2 s.
async fn ask(p: &Stock, session: u64, packet: u64, payload: &[u8]) -> Option<Vec<u8>> {
    p.send_with_ctrl(&echo_server(), &control(session, packet), payload)
        .await
        .expect("send");
    let mut buf = vec![0u8; 65_536];
    match tokio::time::timeout(Duration::from_secs(2), p.recv_with_ctrl(&mut buf)).await {
        Ok(Ok((n, from, _, ctrl))) => {
            assert_eq!(from, echo_server(), "the answer names its source");
            let ctrl = ctrl.expect("a 2022 reply carries its session header");
            assert_eq!(ctrl.client_session_id, session);
            assert_ne!(
                ctrl.server_session_id, session,
                "SIP022: server id ≠ client id"
            );
            Some(buf[..n].to_vec())
        }
        Ok(Err(e)) => panic!("stock client recv: {e}"),
        Err(_) => None,
    }
}

#[test]
fn stock_udp_client_roams_between_uplinks_on_one_braid_session() {
    if !braid_lab::root_tests_enabled("interop_udp") {
        return;
    }
    let mut h = Harness::new("bln2", unshaped_uplinks(), common::exe()).expect("lab");
    h.start_server("").expect("server");
    let key = h.key().to_string();
    let (wifi, g5) = (h.lab.uplink_gw_addr("wifi"), h.lab.uplink_gw_addr("5g"));
    let (wifi_if, g5_if) = (h.lab.uplink_iface("wifi"), h.lab.uplink_iface("5g"));
    let mut relay_log = h.log_cursor("server.log");
    let outcome = in_netns(h.lab.ns_name(Role::Gw), move || {
        rt().block_on(async move {
            let a = stock_client(&key, wifi.into(), &wifi_if).await;
            let b = stock_client(&key, g5.into(), &g5_if).await;
            let session = 0x5eed_0001_u64;
            let first = ask(&a, session, 0, b"whoami")
                .await
                .expect("whoami over wifi");
            let mut packet = 1;
            for i in 0..200u32 {
                let payload = format!("datagram {i} {}", "x".repeat(i as usize * 5));
                let back = ask(&a, session, packet, payload.as_bytes()).await;
                assert_eq!(back.as_deref(), Some(payload.as_bytes()), "echo {i}");
                packet += 1;
            }
            // The same session from the other uplink.
            let moved = ask(&b, session, packet, b"whoami")
                .await
                .expect("whoami over 5g");
            packet += 1;
            let back = ask(&b, session, packet, b"after the move").await;
            assert_eq!(back.as_deref(), Some(&b"after the move"[..]));
            // A packet id seen before is dropped by the relay's replay window.
            let replay = ask(&b, session, 5, b"replayed id").await;
            (first, moved, replay)
        })
    })
    .join()
    .expect("client thread");
    let (first, moved, replay) = outcome;
    let (first, moved) = (
        String::from_utf8_lossy(&first),
        String::from_utf8_lossy(&moved),
    );
    assert_eq!(
        first, moved,
        "the far end saw another source after the move: the session's outbound socket changed"
    );
    assert_eq!(replay, None, "a replayed packet id was relayed");
    relay_log
        .wait_for("moved from", Duration::from_secs(3))
        .expect("the relay saying the session moved");

    // The relay's status shows the session, its bytes and its client's latest address.
    let status = common::relay_status(&h);
    let s = status
        .udp
        .list
        .iter()
        .find(|s| s.client.starts_with(&g5.to_string()))
        .unwrap_or_else(|| panic!("no session from {g5}: {:?}", status.udp));
    assert!(s.up_bytes > 20_000 && s.down_bytes > 20_000, "{s:?}");
    assert!(
        status.udp.dropped >= 1,
        "the replay was not counted: {:?}",
        status.udp
    );
}

/// Datagrams that reach `p` within `limit`, counted until `want` arrived.
async fn count_arrivals(p: &Stock, want: usize, limit: Duration) -> usize {
    let mut buf = vec![0u8; 65_536];
    let mut got = 0;
    let deadline = tokio::time::Instant::now() + limit;
    while got < want {
        match tokio::time::timeout_at(deadline, p.recv_with_ctrl(&mut buf)).await {
            Ok(Ok(_)) => got += 1,
            Ok(Err(e)) => panic!("stock client recv: {e}"),
            Err(_) => break,
        }
    }
    got
}

#[test]
fn a_move_announcement_sends_a_sessions_replies_to_its_new_address_and_makes_no_session() {
    if !braid_lab::root_tests_enabled("interop_udp_moved") {
        return;
    }
    let mut h = Harness::new("bln12", unshaped_uplinks(), common::exe()).expect("lab");
    h.start_server("").expect("server");
    let key = h.key().to_string();
    let (wifi, g5) = (h.lab.uplink_gw_addr("wifi"), h.lab.uplink_gw_addr("5g"));
    let (wifi_if, g5_if) = (h.lab.uplink_iface("wifi"), h.lab.uplink_iface("5g"));
    let mut relay_log = h.log_cursor("server.log");
    let (before, after) = in_netns(h.lab.ns_name(Role::Gw), move || {
        rt().block_on(async move {
            let a = stock_client(&key, wifi.into(), &wifi_if).await;
            let b = stock_client(&key, g5.into(), &g5_if).await;
            let session = 0x5eed_0002_u64;
            // The echo server streams 400 datagrams at 100 a second to the session; the client
            // sends nothing more of its own (`braid lab traffic`'s BRDL request).
            let mut download = b"BRDL".to_vec();
            download.extend_from_slice(&7u64.to_be_bytes());
            download.extend_from_slice(&400u32.to_be_bytes());
            download.extend_from_slice(&100u16.to_be_bytes());
            download.extend_from_slice(&100u32.to_be_bytes());
            a.send_with_ctrl(&echo_server(), &control(session, 0), &download)
                .await
                .expect("send");
            let before = count_arrivals(&a, 20, Duration::from_secs(3)).await;
            let moved = Address::DomainNameAddress(MOVED_HOST.into(), MOVED_PORT);
            // A move of a session the relay does not have: no session is made for it.
            b.send_with_ctrl(&moved, &control(0x5eed_0003, 0), &[])
                .await
                .expect("send");
            b.send_with_ctrl(&moved, &control(session, 1), &[])
                .await
                .expect("send");
            let after = count_arrivals(&b, 20, Duration::from_secs(3)).await;
            (before, after)
        })
    })
    .join()
    .expect("client thread");
    assert_eq!(before, 20, "the stream never reached the session over wifi");
    assert_eq!(
        after, 20,
        "the stream did not follow the session to 5g after the announcement"
    );
    relay_log
        .wait_for("moved from", Duration::from_secs(3))
        .expect("the relay saying the session moved");
    let status = common::relay_status(&h);
    assert_eq!(
        status.udp.sessions, 1,
        "a move announcement made a session: {:?}",
        status.udp
    );
}

/// A stock Shadowsocks-2022 UDP relay built from the crate's server socket, as ssserver's UDP
/// relay does it: sessions by client session id, one outbound socket each, replies to the
/// client's latest address. Runs until `stop`.
async fn stock_udp_server(
    key: String,
    ready: std::sync::mpsc::Sender<()>,
    stop: tokio::sync::oneshot::Receiver<()>,
) {
    use std::collections::HashMap;
    use std::sync::Arc;
    let cfg = ServerConfig::new(relay(), key.as_str(), METHOD).expect("config");
    let server = Arc::new(
        ProxySocket::bind(Context::new_shared(ServerType::Server), &cfg)
            .await
            .expect("stock UDP server bind"),
    );
    ready.send(()).expect("ready");
    let mut sessions: HashMap<u64, Arc<UdpSocket>> = HashMap::new();
    let serve = async {
        let mut buf = vec![0u8; 65_536];
        loop {
            let Ok((n, peer, target, _, ctrl)) = server.recv_from_with_ctrl(&mut buf).await else {
                continue;
            };
            let (Some(ctrl), Address::SocketAddress(target)) = (ctrl, target) else {
                continue;
            };
            let out = sessions.entry(ctrl.client_session_id).or_insert_with(|| {
                let std = std::net::UdpSocket::bind("0.0.0.0:0").expect("outbound socket");
                std.set_nonblocking(true).expect("non-blocking");
                let out = Arc::new(UdpSocket::from_std(std).expect("tokio socket"));
                let (out2, server2, client_id) =
                    (out.clone(), server.clone(), ctrl.client_session_id);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 65_536];
                    let mut reply = control(client_id, 0);
                    reply.server_session_id = client_id ^ 0x5555;
                    while let Ok((n, from)) = out2.recv_from(&mut buf).await {
                        let _ = server2
                            .send_to_with_ctrl(
                                peer,
                                &Address::SocketAddress(from),
                                &reply,
                                &buf[..n],
                            )
                            .await;
                        reply.packet_id += 1;
                    }
                });
                out
            });
            let _ = out.send_to(&buf[..n], target).await;
        }
    };
    tokio::select! { _ = serve => {}, _ = stop => {} }
}

#[test]
fn braid_gateway_captures_lan_udp_to_a_stock_udp_server() {
    if !braid_lab::root_tests_enabled("interop_udp_gateway") {
        return;
    }
    let mut h = Harness::new("bln7", unshaped_uplinks(), common::exe()).expect("lab");
    let key = h.key().to_string();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    let server = in_netns(h.lab.ns_name(Role::Vps), move || {
        rt().block_on(stock_udp_server(key, ready_tx, stop_rx))
    });
    ready_rx.recv().expect("stock server ready");
    h.start_gateway(&["wifi", "5g"], "").expect("gateway");
    let v = h
        .traffic(
            Role::Lan,
            &[
                "dgram",
                "--connect",
                &Harness::traffic_target(),
                "--count",
                "500",
                "--pps",
                "500",
            ],
        )
        .unwrap_or_else(|e| {
            panic!(
                "datagrams via the stock server: {e}\ngateway log:\n{}",
                h.log("gateway.log")
            )
        });
    assert_eq!(v["ok"], true, "{v}");
    h.stop_gateway().expect("stop gateway");
    let _ = stop_tx.send(());
    server.join().expect("stock server thread");
}
