//! Interoperability with stock Shadowsocks-2022, using the `shadowsocks` crate (the library
//! inside shadowsocks-rust) as the other side: a stock client against `braid server`, and
//! `braid gateway` against a stock server that runs kernel MPTCP, as OpenMPTCPRouter users do.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use braid_lab::harness::{Harness, RELAY_PORT, TRAFFIC_PORT};
use braid_lab::{Lab, Role};
use common::{in_netns, runtime as rt, unshaped_uplinks};
use shadowsocks::config::{ServerConfig, ServerType};
use shadowsocks::context::Context;
use shadowsocks::crypto::CipherKind;
use shadowsocks::net::{AcceptOpts, TcpSocketOpts};
use shadowsocks::relay::socks5::Address;
use shadowsocks::relay::tcprelay::proxy_listener::ProxyListener;
use shadowsocks::relay::tcprelay::proxy_stream::ProxyClientStream;
use shadowsocks::relay::tcprelay::utils::copy_encrypted_bidirectional;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Echo `data` through a stock SS2022 client stream and return what came back.
async fn stock_client_echo(server: SocketAddr, key: &str, data: Vec<u8>) -> Vec<u8> {
    let ctx = Context::new_shared(ServerType::Local);
    let cfg =
        ServerConfig::new(server, key, CipherKind::AEAD2022_BLAKE3_AES_256_GCM).expect("config");
    let target = Address::SocketAddress(
        format!("{}:{TRAFFIC_PORT}", Lab::SRV)
            .parse()
            .expect("addr"),
    );
    let s = ProxyClientStream::connect(ctx, &cfg, target)
        .await
        .expect("stock client connect");
    let (mut r, mut w) = tokio::io::split(s);
    let writer = tokio::spawn(async move {
        let mut hdr = vec![3u8];
        hdr.extend_from_slice(&0u64.to_be_bytes());
        w.write_all(&hdr).await.expect("op");
        w.write_all(&data).await.expect("data");
        w.shutdown().await.expect("shutdown");
    });
    let mut back = Vec::new();
    r.read_to_end(&mut back).await.expect("read back");
    writer.await.expect("writer");
    back
}

#[test]
fn stock_client_to_braid_server_and_braid_gateway_to_stock_server() {
    if !braid_lab::root_tests_enabled("interop") {
        return;
    }
    let mut h = Harness::new("bte2", unshaped_uplinks(), common::exe()).expect("lab");
    h.start_server("").expect("server");
    let relay: SocketAddr = format!("{}:{RELAY_PORT}", Lab::VPS_PUBLIC)
        .parse()
        .expect("addr");

    // 1. A stock shadowsocks client (in gw) against braid server.
    let data: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let key = h.key().to_string();
    let sent = data.clone();
    let back = in_netns(h.lab.ns_name(Role::Gw), move || {
        rt().block_on(stock_client_echo(relay, &key, sent))
    })
    .join()
    .expect("client thread");
    assert_eq!(back.len(), data.len());
    assert!(back == data, "stock client: echoed bytes differ");
    h.stop_server().expect("stop server");

    // 2. braid gateway against a stock shadowsocks server with MPTCP (in vps).
    let key = h.key().to_string();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    let server = in_netns(h.lab.ns_name(Role::Vps), move || {
        rt().block_on(async move {
            let ctx = Context::new_shared(ServerType::Server);
            let cfg =
                ServerConfig::new(relay, key.as_str(), CipherKind::AEAD2022_BLAKE3_AES_256_GCM)
                    .expect("config");
            let opts = AcceptOpts {
                tcp: TcpSocketOpts {
                    mptcp: true,
                    ..Default::default()
                },
                ..Default::default()
            };
            let listener = Arc::new(
                ProxyListener::bind_with_opts(ctx, &cfg, opts)
                    .await
                    .expect("stock server bind"),
            );
            ready_tx.send(()).expect("ready");
            let accept = async move {
                loop {
                    let (mut s, _) = listener.accept().await.expect("accept");
                    tokio::spawn(async move {
                        let Ok(target) = s.handshake().await else {
                            return;
                        };
                        let Address::SocketAddress(a) = target else {
                            return;
                        };
                        let Ok(mut up) = tokio::net::TcpStream::connect(a).await else {
                            return;
                        };
                        // The copy ssserver itself uses: tokio's copy_bidirectional tops up
                        // its buffer while the crate's encrypting writer is pending, and the
                        // writer then drops the top-up (the reason for braid's `relay::Metered`);
                        // with it this stock server lost the last few KB now and then.
                        let _ = copy_encrypted_bidirectional(
                            CipherKind::AEAD2022_BLAKE3_AES_256_GCM,
                            &mut s,
                            &mut up,
                        )
                        .await;
                    });
                }
            };
            tokio::select! { _ = accept => {}, _ = stop_rx => {} }
        })
    });
    ready_rx.recv().expect("stock server ready");
    let mut run = h.log_cursor("gateway.log");
    h.start_gateway(&["wifi", "5g"], "").expect("gateway");
    let v = h
        .traffic(
            Role::Lan,
            &[
                "echo",
                "--connect",
                &Harness::traffic_target(),
                "--bytes",
                "10000000",
            ],
        )
        .expect("echo via stock server");
    assert_eq!(v["ok"], true, "{v}");
    let v = h
        .traffic(
            Role::Lan,
            &[
                "echo",
                "--connect",
                &Harness::traffic_target(),
                "--bytes",
                "2000000",
                "--socks",
                &Harness::socks_addr(),
            ],
        )
        .expect("socks via stock server");
    assert_eq!(v["ok"], true, "{v}");
    run.wait_for("TCP Fast Open o", Duration::from_secs(15))
        .expect("the TFO decision");
    assert!(
        h.log("gateway.log")
            .contains("did not answer braid's control request"),
        "{}",
        h.log("gateway.log")
    );
    h.stop_gateway().expect("stop gateway");
    let _ = stop_tx.send(());
    server.join().expect("stock server thread");
}
