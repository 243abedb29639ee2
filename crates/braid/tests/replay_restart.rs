//! A request replayed after the relay restarts is refused: the salts of the last minute are
//! kept in `state_dir` and put back into the replay filter at start. In one process, on
//! loopback, without root.
//!
//! ```text
//!  recorded SS2022 request ─► relay A (accepted, echoed) ─► A stops or dies
//!                          └► relay B, same state_dir  ─► reset, nothing relayed
//! ```

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use braid::config::server::ServerConfig;
use shadowsocks::config::ServerType;
use shadowsocks::crypto::CipherKind;
use shadowsocks::relay::socks5::Address;
use shadowsocks::relay::tcprelay::proxy_stream::ProxyClientStream;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// How long any one step may take before the test fails instead of hanging.
const STEP: Duration = Duration::from_secs(30);

/// A relay on 127.0.0.1:0 that may reach loopback and keeps its salts in `state_dir`.
struct Relay {
    addr: SocketAddr,
    stop: braid::shutdown::Trigger,
    run: JoinHandle<()>,
}

async fn start_relay(key: &str, state_dir: &Path) -> Relay {
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
    let (stop, shutdown) = braid::shutdown::channel();
    Relay {
        addr,
        stop,
        run: tokio::spawn(server.run(shutdown)),
    }
}

/// An echo destination on loopback.
async fn echo_destination() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind echo");
    let addr = l.local_addr().expect("echo address");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// A stream that keeps what is written to it and never has anything to read: the client side
/// of a request, recorded to be sent (and replayed) later.
#[derive(Default)]
struct Recorder(Vec<u8>);

impl AsyncRead for Recorder {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        _: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Poll::Pending
    }
}

impl AsyncWrite for Recorder {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().0.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// The bytes a stock client sends for a request to `dst` carrying `payload`: salt, header and
/// first chunk (a fresh salt each call).
async fn recorded_request(key: &str, dst: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let cfg = shadowsocks::config::ServerConfig::new(
        "127.0.0.1:8388".parse::<SocketAddr>().unwrap(),
        key,
        CipherKind::AEAD2022_BLAKE3_AES_256_GCM,
    )
    .expect("client config");
    let ctx = Arc::new(shadowsocks::context::Context::new(ServerType::Local));
    let mut c =
        ProxyClientStream::from_stream(ctx, Recorder::default(), &cfg, Address::SocketAddress(dst));
    c.write_all(payload).await.expect("record the request");
    c.flush().await.expect("record the request");
    c.into_inner().0
}

/// Sends `request` to the relay; the bytes that came back before it closed (at most a few: the
/// reply to an accepted request is the relay's response header and the echoed payload).
async fn send(relay: SocketAddr, request: &[u8]) -> usize {
    let mut s = TcpStream::connect(relay)
        .await
        .expect("connect to the relay");
    s.write_all(request).await.expect("send the request");
    let mut buf = [0u8; 256];
    match tokio::time::timeout(STEP, s.read(&mut buf)).await {
        Ok(Ok(n)) => n,
        // Reset: refused.
        Ok(Err(_)) => 0,
        Err(_) => panic!("the relay neither answered nor closed within {STEP:?}"),
    }
}

fn state_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("braid-replay-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// Waits until the relay has written `salts` salts to its file (its periodic write).
async fn wait_for_salt_file(dir: &Path, at_least: usize) {
    let file = dir.join("server-0.salts");
    let deadline = Instant::now() + STEP;
    loop {
        let n = std::fs::read(&file).map_or(0, |b| b.len().saturating_sub(8) / 41);
        if n >= at_least {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} holds no salt after {STEP:?}",
            file.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A key, a state folder, an echo destination, a recorded request, and relay A, which has
/// relayed that request once.
struct FirstRun {
    key: String,
    dir: PathBuf,
    dst: SocketAddr,
    request: Vec<u8>,
    a: Relay,
}

async fn first_run(name: &str) -> FirstRun {
    let key = braid::keygen::generate(braid::config::Method::Aes256Gcm).expect("key");
    let dir = state_dir(name);
    let dst = echo_destination().await;
    let request = recorded_request(&key, dst, b"ping").await;
    let a = start_relay(&key, &dir).await;
    assert!(
        send(a.addr, &request).await > 0,
        "the first time, the request is relayed"
    );
    FirstRun {
        key,
        dir,
        dst,
        request,
        a,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_restarted_replayed_request_is_refused() {
    let FirstRun {
        key,
        dir,
        dst,
        request,
        a,
    } = first_run("restart").await;
    assert_eq!(
        send(a.addr, &request).await,
        0,
        "a replay to the same run is refused"
    );
    a.stop.fire();
    tokio::time::timeout(STEP, a.run)
        .await
        .expect("relay A stops")
        .expect("relay A");

    let b = start_relay(&key, &dir).await;
    assert_eq!(
        send(b.addr, &request).await,
        0,
        "a replay after the restart is refused"
    );
    let fresh = recorded_request(&key, dst, b"ping").await;
    assert!(send(b.addr, &fresh).await > 0, "a new request is relayed");
    b.stop.fire();
    let _ = tokio::time::timeout(STEP, b.run).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_killed_after_its_periodic_write_replayed_request_is_refused() {
    let FirstRun {
        key,
        dir,
        request,
        a,
        ..
    } = first_run("killed").await;
    wait_for_salt_file(&dir, 1).await;
    // No shutdown: as after a SIGKILL, only the periodic write is there.
    a.run.abort();

    let b = start_relay(&key, &dir).await;
    assert_eq!(
        send(b.addr, &request).await,
        0,
        "a replay after the crash is refused"
    );
    b.stop.fire();
    let _ = tokio::time::timeout(STEP, b.run).await;
    let _ = std::fs::remove_dir_all(&dir);
}
