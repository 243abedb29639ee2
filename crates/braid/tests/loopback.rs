//! SOCKS5 → gateway → relay → destination on loopback, in one process, without root.
//!
//! ```text
//!  SOCKS5 client ─► braid gateway (SOCKS5 on 127.0.0.1:0) ══ SS2022 ══► braid server ─► echo
//! ```
//! Both daemons run from the library on listeners bound to port 0, with their own shutdown
//! triggers. The gateway has no uplinks: a config file must name one, so the test clears the
//! list after parsing. Without uplinks the gateway touches no routing or MPTCP state, which is
//! what lets this test run as an unprivileged user (and beside a real gateway).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use braid::config::gateway::GatewayConfig;
use braid::config::server::ServerConfig;
use braid::config::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// How long any one step may take before the test fails instead of hanging.
const STEP: Duration = Duration::from_secs(30);

/// An echo destination: every connection gets its bytes back, then EOF after the client's.
async fn echo_destination() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind echo");
    let addr = l.local_addr().expect("echo address");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

/// The relay, allowed to reach loopback, on 127.0.0.1:0.
async fn start_server(key: &str) -> (SocketAddr, braid::shutdown::Trigger, JoinHandle<()>) {
    // Its salt file goes to a folder of this test's own, not /run/braid.
    let state_dir = std::env::temp_dir().join(format!("braid-loopback-{}", std::process::id()));
    let toml = format!(
        "listen = \"127.0.0.1:0\"\nmethod = \"2022-blake3-aes-256-gcm\"\nkey = \"{key}\"\nallow_destinations = [\"127.0.0.1/32\"]\ncontrol = \"off\"\nbond_after_kib = 0\nstate_dir = \"{}\"\n",
        state_dir.display()
    );
    let cfg = ServerConfig::from_toml(Path::new("server.toml"), &toml).expect("server.toml");
    let listeners = braid::server::Listeners::bind(&cfg)
        .await
        .expect("bind the relay");
    let server = braid::server::Server::new(cfg, listeners);
    let addr = server.local_addr().expect("relay address");
    let (trigger, shutdown) = braid::shutdown::channel();
    (addr, trigger, tokio::spawn(server.run(shutdown)))
}

struct Gateway {
    socks: SocketAddr,
    status_http: SocketAddr,
    trigger: braid::shutdown::Trigger,
    run: JoinHandle<Result<(), braid::gateway::GatewayError>>,
}

/// The gateway, without uplinks or LAN capture, SOCKS5 and the status API on 127.0.0.1:0.
async fn start_gateway(key: &str, relay: SocketAddr) -> Gateway {
    let toml = format!(
        "server = \"{relay}\"\nmethod = \"2022-blake3-aes-256-gcm\"\nkey = \"{key}\"\nredirect = \"127.0.0.1:1100\"\nsocks = \"127.0.0.1:0\"\ncontrol = \"127.0.0.1:0\"\nlan = []\n[[uplink]]\nname = \"unused\"\ninterface = \"lo\"\n"
    );
    let mut cfg = GatewayConfig::from_toml(Path::new("gateway.toml"), &toml).expect("gateway.toml");
    // The documented way to run without uplinks: only the library allows it.
    cfg.uplinks.clear();
    // A config file needs a fixed redirect port (nftables redirects to it); without `lan` there
    // is no capture table, so any free port does.
    cfg.redirect = "127.0.0.1:0".parse().unwrap();
    let listeners = braid::gateway::Listeners::bind(&cfg)
        .await
        .expect("bind the gateway's listeners");
    let local = |l: &Option<TcpListener>| l.as_ref().and_then(|l| l.local_addr().ok());
    let socks = local(&listeners.socks).expect("SOCKS5 listener");
    let status_http = local(&listeners.status_http).expect("status listener");
    let (trigger, shutdown) = braid::shutdown::channel();
    let run = tokio::spawn(braid::gateway::run(cfg, listeners, shutdown));
    Gateway {
        socks,
        status_http,
        trigger,
        run,
    }
}

/// A SOCKS5 CONNECT to `dst` (IPv4, no authentication).
async fn socks_connect(socks: SocketAddr, dst: SocketAddr) -> TcpStream {
    let SocketAddr::V4(dst) = dst else {
        panic!("IPv4 destination expected")
    };
    let mut s = TcpStream::connect(socks).await.expect("connect to SOCKS5");
    s.write_all(&[5, 1, 0]).await.unwrap();
    let mut choice = [0u8; 2];
    s.read_exact(&mut choice).await.unwrap();
    assert_eq!(choice, [5, 0], "no-auth method accepted");
    let mut req = vec![5, 1, 0, 1];
    req.extend_from_slice(&dst.ip().octets());
    req.extend_from_slice(&dst.port().to_be_bytes());
    s.write_all(&req).await.unwrap();
    let mut reply = [0u8; 10];
    s.read_exact(&mut reply).await.unwrap();
    assert_eq!(reply[..2], [5, 0], "CONNECT succeeded: {reply:?}");
    s
}

/// `n` pseudo-random bytes from `seed` (xorshift64).
fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(n);
    out
}

/// Sends `data` through the tunnel to the echo, half-closes, and checks every byte that comes
/// back.
async fn echo_through(socks: SocketAddr, dst: SocketAddr, data: Vec<u8>) {
    let s = socks_connect(socks, dst).await;
    let (mut r, mut w) = s.into_split();
    let len = data.len();
    let writer = tokio::spawn(async move {
        for chunk in data.chunks(64 * 1024) {
            w.write_all(chunk).await.expect("write through the tunnel");
        }
        w.shutdown().await.expect("half-close");
        data
    });
    let mut back = Vec::with_capacity(len);
    r.read_to_end(&mut back).await.expect("read the echo");
    let sent = writer.await.unwrap();
    assert_eq!(back.len(), sent.len(), "every byte came back");
    let first_difference = back.iter().zip(&sent).position(|(a, b)| a != b);
    assert_eq!(first_difference, None, "the echo is byte for byte");
}

async fn round_trip(s: &mut TcpStream, msg: &[u8]) {
    s.write_all(msg).await.unwrap();
    let mut back = vec![0u8; msg.len()];
    s.read_exact(&mut back).await.unwrap();
    assert_eq!(back, msg);
}

/// `GET path` over HTTP/1.0; the status line and the body.
async fn http_get(addr: SocketAddr, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr)
        .await
        .expect("connect to the status API");
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: braid\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).await.unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    (
        head.lines().next().unwrap_or_default().to_string(),
        body.to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socks_client_echo_through_gateway_and_relay_is_byte_exact_and_shutdown_drains() {
    let key = braid::keygen::generate(Method::Aes256Gcm).expect("key");
    let dst = echo_destination().await;
    let (relay, server_stop, server) = start_server(&key).await;
    let gw = start_gateway(&key, relay).await;

    // A few connections at once, a few MB in all, each checked byte for byte.
    let sizes = [3_000_000, 2_000_000, 1_000_000, 300_001];
    let clients: Vec<_> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| tokio::spawn(echo_through(gw.socks, dst, random_bytes(n, i as u64 + 1))))
        .collect();
    for c in clients {
        tokio::time::timeout(STEP, c)
            .await
            .expect("echo within the time limit")
            .expect("echo client");
    }

    // The status API was injected too, and answers.
    let (status_line, body) = tokio::time::timeout(STEP, http_get(gw.status_http, "/api/status"))
        .await
        .expect("status within the time limit");
    assert!(status_line.contains("200"), "{status_line}");
    let status: serde_json::Value = serde_json::from_str(&body).expect("status JSON");
    assert_eq!(status["role"], "gateway", "{body}");

    // A connection open at shutdown may finish while the gateway drains.
    let mut open = socks_connect(gw.socks, dst).await;
    round_trip(&mut open, b"before shutdown").await;
    gw.trigger.fire();
    round_trip(&mut open, b"while draining").await;
    drop(open);
    let stopped = tokio::time::timeout(Duration::from_secs(10), gw.run)
        .await
        .expect("the gateway returns once its connections are done")
        .expect("gateway task");
    stopped.expect("the gateway ran and stopped cleanly");
    assert!(
        TcpStream::connect(gw.socks).await.is_err(),
        "the SOCKS5 listener is closed after run returns"
    );

    server_stop.fire();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the relay returns once drained")
        .expect("server task");
}
