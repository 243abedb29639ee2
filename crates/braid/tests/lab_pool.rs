//! The warm pool in the lab: many short LAN connections through the capture, each with its own
//! random payload echoed back and compared byte for byte, while pool connections are retired
//! and an uplink flaps; a pool against a stock Shadowsocks-2022 server that closes idle
//! connections sooner than the gateway assumed; and a taken connection's receive buffers, grown
//! on both ends.
//!
//! What would show a broken pool: a relay connection handed to two LAN connections (echoes
//! mixed), one the relay already closed handed out (LAN connections fail), one held past the
//! relay's handshake timeout (the relay logs "a parked request named no target" for a connection
//! the gateway did not drop at an uplink's Down), or connections that never
//! get their second subflow (none ever counts as warm).
//! Root-only (skips without root unless CI=true, where it must run).

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use braid::status::model::Status;
use braid_lab::harness::{Harness, RELAY_PORT};
use braid_lab::{Lab, Role};
use braid_proto::health::LinkState;
use braid_proto::pool::TimeoutSource;
use common::{in_netns, runtime, shaped_uplinks, uplink, wait_status};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The lab traffic server's echo op (`braid_lab::traffic::op::ECHO`).
const ECHO: u8 = 3;
/// LAN connections allowed to fail across the flaps other than by a stranded reset (none may
/// hang): see where it is used.
const MAX_FLAP_FAILURES: usize = 8;
/// The longest a single echo may take, flapping included.
const ECHO_LIMIT: Duration = Duration::from_secs(30);
/// How long an echo may take before the sockets of both ends are dumped into its failure: while
/// it is still stuck, so the dump shows where its bytes wait.
const STALL_DUMP: Duration = Duration::from_secs(8);

/// The lab's namespaces whose sockets a stalled echo dumps: (label, namespace).
type DumpFrom = Arc<Vec<(&'static str, String)>>;

/// The kernel's view of every TCP and MPTCP socket in `ns`, with memory and TCP info.
fn socket_dump(dump_from: &DumpFrom) -> String {
    let mut out = String::new();
    for (label, ns) in dump_from.iter() {
        for argv in [
            &["ss", "-tnmoi", "state", "all"][..],
            &["ss", "-Mnmi", "state", "all"][..],
        ] {
            let text = braid_lab::cmd::run_in(ns, argv).unwrap_or_else(|e| e.to_string());
            out.push_str(&format!("--- {label}: {}\n{text}\n", argv.join(" ")));
        }
    }
    out
}

/// What a run of echo connections found.
#[derive(Debug, Default)]
struct Outcome {
    /// Echoes that came back byte for byte.
    ok: usize,
    /// Echoes that came back different: mixed, lost or duplicated bytes.
    wrong: Vec<String>,
    /// Connections that failed (reset, refused).
    failed: Vec<String>,
    /// Connections that got no echo and no error within [`ECHO_LIMIT`].
    hung: Vec<String>,
}

/// How one echo connection ended.
enum Echo {
    Ok,
    Wrong(String),
    Failed(String),
    Hung(String),
}

/// A payload of 1 B to 24 KiB that no other connection of the run has.
fn payload(run: u64, i: u64) -> Vec<u8> {
    let mut st = (run ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1;
    let mut next = || {
        st ^= st << 13;
        st ^= st >> 7;
        st ^= st << 17;
        st
    };
    let len = 1 + (next() % (24 * 1024)) as usize;
    (0..len).map(|_| next() as u8).collect()
}

/// One LAN connection to the echo server through the capture, checked byte for byte.
async fn echo_one(target: SocketAddr, run: u64, i: u64, dump_from: DumpFrom) -> Echo {
    let data = payload(run, i);
    let port = Arc::new(std::sync::Mutex::new(None::<u16>));
    let work = async {
        let mut s = tokio::net::TcpStream::connect(target)
            .await
            .map_err(|e| format!("#{i}: connect: {e}"))?;
        *port.lock().expect("port") = s.local_addr().ok().map(|a| a.port());
        let mut msg = vec![ECHO];
        msg.extend_from_slice(&0u64.to_be_bytes());
        msg.extend_from_slice(&data);
        let (mut r, mut w) = s.split();
        let send = async {
            w.write_all(&msg).await?;
            w.shutdown().await
        };
        let mut back = Vec::with_capacity(data.len());
        let (sent, got) = tokio::join!(send, r.read_to_end(&mut back));
        sent.map_err(|e| format!("#{i}: send: {e}"))?;
        got.map_err(|e| format!("#{i}: receive: {e}"))?;
        Ok::<_, String>(back)
    };
    tokio::pin!(work);
    let r = match tokio::time::timeout(STALL_DUMP, &mut work).await {
        Ok(r) => r,
        Err(_) => {
            let dump = tokio::task::spawn_blocking(move || socket_dump(&dump_from))
                .await
                .unwrap_or_else(|e| e.to_string());
            match tokio::time::timeout(ECHO_LIMIT - STALL_DUMP, &mut work).await {
                Ok(r) => r,
                Err(_) => {
                    let port = *port.lock().expect("port");
                    return Echo::Hung(format!(
                        "#{i}: no echo within {ECHO_LIMIT:?} (LAN port {port:?}); sockets after {STALL_DUMP:?}:\n{dump}"
                    ));
                }
            }
        }
    };
    let back = match r {
        Ok(back) => back,
        Err(e) => return Echo::Failed(e),
    };
    if back == data {
        Echo::Ok
    } else {
        Echo::Wrong(format!(
            "#{i}: sent {} bytes, got {} back, {}",
            data.len(),
            back.len(),
            if back.len() == data.len() {
                "with different bytes"
            } else {
                "a different length"
            }
        ))
    }
}

/// Runs echo connections from the LAN host in waves of `wave` at once, with gaps of up to
/// `max_gap` (longer than the pool's lifetime now and then, so idle connections retire), until
/// `done` is set and at least `min` have run.
fn echo_waves(
    h: &Harness,
    wave: u64,
    max_gap: Duration,
    min: u64,
    done: Arc<AtomicBool>,
) -> Outcome {
    let target: SocketAddr = Harness::traffic_target().parse().expect("target");
    let run = u64::from(std::process::id()) << 20;
    let dump_from: DumpFrom = Arc::new(vec![
        ("gateway", h.lab.ns_name(Role::Gw)),
        ("relay", h.lab.ns_name(Role::Vps)),
    ]);
    h.lab
        .in_netns(Role::Lan, move || {
            runtime().block_on(async move {
                let mut out = Outcome::default();
                let mut i = 0u64;
                let mut gap_seed = run | 7;
                while i < min || !done.load(Ordering::Relaxed) {
                    let mut set = tokio::task::JoinSet::new();
                    for _ in 0..wave {
                        set.spawn(echo_one(target, run, i, dump_from.clone()));
                        i += 1;
                    }
                    while let Some(r) = set.join_next().await {
                        match r.expect("echo task") {
                            Echo::Ok => out.ok += 1,
                            Echo::Wrong(w) => out.wrong.push(w),
                            Echo::Failed(f) => out.failed.push(f),
                            Echo::Hung(h) => out.hung.push(h),
                        }
                    }
                    gap_seed = gap_seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                    let gap = max_gap.mul_f64((gap_seed >> 11) as f64 / (1u64 << 53) as f64);
                    tokio::time::sleep(gap).await;
                }
                out
            })
        })
        .expect("entering lan")
}

/// The gateway's warm pool section (it must have one).
#[track_caller]
fn pool(s: &Status) -> &braid_proto::pool::PoolStats {
    s.warm_pool
        .as_ref()
        .expect("the gateway reports its warm pool")
}

/// The lab with braid's server and a gateway holding a pool of `size` (TFO off), once every
/// idle connection is warm: the harness and that status.
fn warm_pool_lab(prefix: &str, size: u32) -> (Harness, Status) {
    let mut h = Harness::new(prefix, shaped_uplinks(), common::exe()).expect("lab");
    h.start_server("").expect("server");
    h.start_gateway(
        &["wifi", "5g"],
        &format!("fast_open = \"off\"\nwarm_pool = {size}"),
    )
    .expect("gateway");
    h.wait_uplinks_up(&["wifi", "5g"], Duration::from_secs(10))
        .expect("uplinks up");
    let s = wait_status(&h, "a full, warm pool", Duration::from_secs(10), |s| {
        pool(s).warm >= size
    });
    (h, s)
}

/// Takes wifi down and up `times` times, each time waiting until the gateway has seen it.
fn flap_wifi(h: &Harness, times: usize) {
    for _ in 0..times {
        h.lab.set_uplink_link("wifi", false).expect("wifi down");
        wait_status(h, "wifi Down", Duration::from_secs(5), |s| {
            uplink(s, "wifi").state == LinkState::Down
        });
        std::thread::sleep(Duration::from_millis(700));
        h.lab.set_uplink_link("wifi", true).expect("wifi up");
        wait_status(h, "wifi Up", Duration::from_secs(10), |s| {
            uplink(s, "wifi").state == LinkState::Up
        });
        std::thread::sleep(Duration::from_millis(1200));
    }
}

#[test]
fn pool_many_short_connections_with_retiring_and_flapping_never_mix_lose_or_duplicate() {
    if !braid_lab::root_tests_enabled("lab_pool") {
        return;
    }
    let mut h = Harness::new("bpl1", shaped_uplinks(), common::exe()).expect("lab");
    // A short handshake timeout: idle connections retire after 4 s. Not shorter: a fresh
    // connection whose only subflow rides wifi when it goes down gets its request through only
    // at a retransmission in an up window, and with 3 s the relay sometimes gave up first, its
    // reset was lost in the next down window, and the LAN connection (pool or not: 1 of 5 runs
    // with warm_pool = "off") hung past the echo limit.
    h.start_server("handshake_timeout_secs = 6")
        .expect("server");
    h.start_gateway(&["wifi", "5g"], "fast_open = \"off\"\nwarm_pool = 6")
        .expect("gateway");
    h.wait_uplinks_up(&["wifi", "5g"], Duration::from_secs(10))
        .expect("uplinks up");
    // The relay's timeout is learnt over the control channel, and idle connections, parked on
    // the relay, get the other uplink's subflow.
    let s = wait_status(
        &h,
        "warm idle connections, with the relay's own timeout",
        Duration::from_secs(10),
        |s| {
            let p = pool(s);
            p.warm >= 2 && p.relay_timeout_source == Some(TimeoutSource::Relay)
        },
    );
    assert_eq!(pool(&s).lifetime_ms, Some(4000), "{:?}", pool(&s));

    let done = Arc::new(AtomicBool::new(false));
    let out = std::thread::scope(|scope| {
        let d = done.clone();
        let load = scope.spawn(|| echo_waves(&h, 24, Duration::from_millis(2600), 300, d));
        flap_wifi(&h, 3);
        done.store(true, Ordering::Relaxed);
        load.join().expect("load thread")
    });
    let s = common::status(&h);
    let p = pool(&s).clone();
    eprintln!(
        "lab_pool: {} echoes ok, {} wrong, {} failed, {} hung; {} reset with no subflow left; pool {p:?}",
        out.ok,
        out.wrong.len(),
        out.failed.len(),
        out.hung.len(),
        s.connections.stranded_total
    );
    assert!(
        out.wrong.is_empty(),
        "bytes mixed, lost or duplicated: {:?}\ngateway log:\n{}",
        out.wrong,
        h.log("gateway.log")
    );
    // No LAN connection may hang: one whose relay connection lost its only subflow is reset
    // by the gateway (`braid_proto::stranded`). Before that rule about one in 300 hung here,
    // its relay connection in FIN-WAIT-1 with no subflow and its request never acknowledged.
    assert!(
        out.hung.is_empty(),
        "LAN connections hung: {:?}\ngateway log:\n{}\nrelay log:\n{}",
        out.hung,
        h.log("gateway.log"),
        h.log("server.log"),
    );
    // A connection that started on wifi just before wifi went down may have only that subflow,
    // and the kernel's path manager adds no other to it: the gateway resets it once it has been
    // stranded for its grace (`braid_proto::stranded`), counted in status. How many depends on
    // where a wave of 24 falls against a flap: none in most runs, 11 of one wave in one of 15;
    // at most two waves of the 13 are allowed it (a pool handing out connections on a Down
    // uplink would strand dozens).
    // Every other failure is the pool's or the Down's doing: a connection taken just as its
    // uplink went down, or a pool handing out closed or dead connections (many more).
    let stranded = usize::try_from(s.connections.stranded_total).expect("count");
    assert!(
        stranded <= out.failed.len() && stranded <= 48,
        "{stranded} stranded resets for {} failed LAN connections",
        out.failed.len()
    );
    assert!(
        out.failed.len() - stranded <= MAX_FLAP_FAILURES,
        "LAN connections failed, {stranded} of them stranded: {:?}\ngateway log:\n{}",
        out.failed,
        h.log("gateway.log"),
    );
    assert!(
        out.ok + stranded >= 300 - MAX_FLAP_FAILURES,
        "{} ok, {stranded} stranded",
        out.ok
    );
    // Only connections with every Up uplink's subflow are handed out. Parked on the relay,
    // idle connections warm within a round trip, so each wave of 24 finds most of the 6 warm:
    // 78 of 312 (the most there can be) in a quiet run; unparked, 22–24.
    assert!(p.parked, "braid server takes parked requests: {p:?}");
    assert!(p.hits >= 45, "the pool served too few connections: {p:?}");
    assert!(
        p.dropped_uplink_down >= 1,
        "no idle connection was dropped when wifi went Down: {p:?}"
    );
    // With no LAN traffic, idle connections are retired at their lifetime, before the relay's
    // timeout: the relay sees the close, not its own timeout.
    let mut retirements = h.log_cursor("gateway.log");
    let mut relay_ends = h.log_cursor("server.log");
    let line = retirements
        .wait_for("(unused at its lifetime", Duration::from_secs(10))
        .expect("an idle connection retired");
    let source = line
        .split("closed an idle relay connection from ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .expect("the retired connection's address");
    // Its end on the relay: the close, or the relay's own timeout about 2 s later.
    let end = loop {
        let l = relay_ends
            .wait_for(source, Duration::from_secs(10))
            .expect("the relay logs the retired connection's end");
        if l.contains("closed its connection") || l.contains("rejected") {
            break l;
        }
    };
    assert!(
        end.contains("closed its connection before sending a request"),
        "the relay did not see the retired connection {source} closed: {end}"
    );
    // The pool may not hold a connection past the relay's handshake timeout. The relay still
    // times out some it was never told about: ones the gateway let go while their only
    // subflow's uplink was down (the close has no path), and ones a LAN connection took just
    // as that uplink went down (the target never arrived; that LAN connection failed above).
    // The gateway names both, by the relay's name for them, before the relay gave up; one held
    // too long is named later or never.
    let relay = h.log("server.log");
    let gateway = h.log("gateway.log");
    let held_too_long: Vec<&str> = relay
        .lines()
        .filter(|l| l.contains("a parked request named no target"))
        .filter(|l| {
            let Some(peer) = l
                .split("rejected ")
                .nth(1)
                .and_then(|r| r.split(": ").next())
            else {
                return true;
            };
            let at = timestamp(l);
            let idle = format!("closed an idle relay connection from {peer} (");
            let used = format!("relay connection from {peer})");
            !gateway
                .lines()
                .any(|g| (g.contains(&idle) || g.contains(&used)) && timestamp(g) < at)
        })
        .collect();
    assert!(
        held_too_long.is_empty(),
        "the pool held a connection past the relay's handshake timeout: {held_too_long:#?}\ngateway log:\n{gateway}"
    );
}

/// A log line's RFC 3339 timestamp (tracing's, UTC with microseconds: one width, so it orders
/// as text), or "" for a line without one.
fn timestamp(line: &str) -> &str {
    line.split_whitespace().next().unwrap_or("")
}

/// A stock Shadowsocks-2022 server (the `shadowsocks` crate, as ssserver runs it) in vps with
/// MPTCP, which closes a connection that sends no request within `handshake_timeout`.
fn stock_server(
    h: &Harness,
    handshake_timeout: Duration,
) -> (
    tokio::sync::oneshot::Sender<()>,
    std::thread::JoinHandle<()>,
) {
    use shadowsocks::config::{ServerConfig, ServerType};
    use shadowsocks::context::Context;
    use shadowsocks::crypto::CipherKind;
    use shadowsocks::relay::socks5::Address;
    use shadowsocks::relay::tcprelay::proxy_listener::ProxyListener;

    let relay: SocketAddr = format!("{}:{RELAY_PORT}", Lab::VPS_PUBLIC)
        .parse()
        .expect("addr");
    let key = h.key().to_string();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    let server = in_netns(h.lab.ns_name(Role::Vps), move || {
        runtime().block_on(async move {
            let ctx = Context::new_shared(ServerType::Server);
            let method = CipherKind::AEAD2022_BLAKE3_AES_256_GCM;
            let cfg = ServerConfig::new(relay, key.as_str(), method).expect("config");
            // An MPTCP listener with SO_REUSEADDR, so a restart finds the port free although
            // the server closed connections (TIME_WAIT).
            let opts = braid_sys::socket::ListenOptions {
                mptcp: true,
                fastopen_qlen: None,
                backlog: 1024,
            };
            let bound = braid_sys::socket::listen(relay, opts).expect("stock server bind");
            let std_listener = bound.listener;
            let listener = ProxyListener::from_listener(
                ctx,
                shadowsocks::net::TcpListener::from_listener(
                    tokio::net::TcpListener::from_std(std_listener).expect("tokio listener"),
                    Default::default(),
                )
                .expect("listener"),
                &cfg,
            );
            ready_tx.send(()).expect("ready");
            let accept = async move {
                loop {
                    let (mut s, _) = listener.accept().await.expect("accept");
                    tokio::spawn(async move {
                        let Ok(Ok(Address::SocketAddress(a))) =
                            tokio::time::timeout(handshake_timeout, s.handshake()).await
                        else {
                            return;
                        };
                        let Ok(mut up) = tokio::net::TcpStream::connect(a).await else {
                            return;
                        };
                        let _ = braid::relay::relay(&mut s, &mut up, Duration::from_secs(60)).await;
                    });
                }
            };
            tokio::select! { _ = accept => {}, _ = stop_rx => {} }
        })
    });
    ready_rx.recv().expect("stock server ready");
    (stop_tx, server)
}

/// Waits until `n` LAN connections wait in the gateway's redirect listener's accept queue
/// (the gateway is frozen: the kernel completed their handshakes).
#[track_caller]
fn wait_queued(h: &Harness, n: usize) {
    common::wait_until(
        &format!("{n} LAN connections queued at the frozen gateway"),
        Duration::from_secs(10),
        || {
            let out = h
                .lab
                .run(Role::Gw, &["ss", "-Hltn", "sport = :1100"])
                .map_err(|e| e.to_string())?;
            let queued: usize = out
                .split_whitespace()
                .nth(1)
                .and_then(|q| q.parse().ok())
                .unwrap_or(0);
            if queued >= n {
                Ok(())
            } else {
                Err(format!("ss: {out}"))
            }
        },
    );
}

#[test]
fn pool_against_a_stock_server_learns_its_timeout_and_carries_exact_bytes() {
    if !braid_lab::root_tests_enabled("lab_pool") {
        return;
    }
    let mut h = Harness::new("bpl2", shaped_uplinks(), common::exe()).expect("lab");
    let (stop, server) = stock_server(&h, Duration::from_secs(3));
    // The gateway assumes 10 s: the stock server's 3 s must be learnt from its closes.
    let mut learnt = h.log_cursor("gateway.log");
    h.start_gateway(
        &["wifi", "5g"],
        "fast_open = \"off\"\nwarm_pool = 3\nrelay_handshake_timeout_secs = 10",
    )
    .expect("gateway");
    learnt
        .wait_for(
            "the relay closed an idle connection after",
            Duration::from_secs(15),
        )
        .expect("the pool to notice the stock server's timeout");
    let s = wait_status(
        &h,
        "a pool kept within the learnt timeout",
        Duration::from_secs(5),
        |s| {
            let p = pool(s);
            p.relay_timeout_source == Some(TimeoutSource::Learned) && p.idle >= 1
        },
    );
    let learnt_ms = pool(&s).relay_timeout_ms;
    assert!((3000..=3600).contains(&learnt_ms), "{:?}", pool(&s));
    // Against a stock server too, idle connections get the other uplink's subflow.
    wait_status(&h, "a warm idle connection", Duration::from_secs(5), |s| {
        pool(s).warm >= 1
    });

    // LAN connections over the pool's life, against the stock server.
    let done = Arc::new(AtomicBool::new(true));
    let out = echo_waves(&h, 3, Duration::from_millis(700), 150, done.clone());
    let p = pool(&common::status(&h)).clone();
    eprintln!(
        "lab_pool stock: {} ok, {} wrong, {} failed, {} hung; pool {p:?}",
        out.ok,
        out.wrong.len(),
        out.failed.len(),
        out.hung.len()
    );
    assert!(
        out.wrong.is_empty() && out.failed.is_empty() && out.hung.is_empty(),
        "wrong: {:?}\nfailed: {:?}\nhung: {:?}\ngateway log:\n{}",
        out.wrong,
        out.failed,
        out.hung,
        h.log("gateway.log")
    );
    assert!(p.hits >= 20, "{p:?}");

    h.stop_gateway().expect("stop gateway");
    let _ = stop.send(());
    server.join().expect("stock server thread");
}

#[test]
fn pool_connections_the_relay_closed_while_the_gateway_was_frozen_are_never_used() {
    if !braid_lab::root_tests_enabled("lab_pool") {
        return;
    }
    let (mut h, s) = warm_pool_lab("bpl3", 4);
    let closed_before = pool(&s).closed_by_relay;
    // The relay restarts while the gateway cannot look: every idle connection is closed by the
    // relay, and LAN connections are already waiting when the gateway resumes. Each must get a
    // fresh relay connection, never a closed one.
    h.freeze_gateway(true);
    h.stop_server().expect("stop server");
    h.start_server("").expect("server again");
    let done = Arc::new(AtomicBool::new(true));
    let out = std::thread::scope(|scope| {
        let load = scope.spawn(|| echo_waves(&h, 8, Duration::ZERO, 8, done));
        wait_queued(&h, 8);
        h.freeze_gateway(false);
        load.join().expect("load thread")
    });
    let p = pool(&common::status(&h)).clone();
    assert!(
        out.wrong.is_empty() && out.failed.is_empty() && out.hung.is_empty() && out.ok == 8,
        "after the relay restarted: wrong {:?}, failed {:?}, hung {:?}; pool {p:?}\ngateway log:\n{}",
        out.wrong,
        out.failed,
        out.hung,
        h.log("gateway.log")
    );
    assert!(
        p.closed_by_relay >= closed_before + 4,
        "the idle connections the relay closed were not seen as closed: {p:?}"
    );
}

#[test]
fn pool_connections_that_lost_a_subflow_for_good_are_dropped_and_replaced() {
    if !braid_lab::root_tests_enabled("lab_pool") {
        return;
    }
    let (h, s) = warm_pool_lab("bpl5", 2);
    let before = pool(&s).clone();
    assert_eq!(before.dropped_lost_join, 0, "{before:?}");
    // The relay's kernel aborts every subflow from the gateway's 5g address; 5g stays up. The
    // in-kernel path manager never joins 5g to those connections again: none can be warm, so
    // each is dropped and replaced by one that bonds.
    let addr_5g = uplink(&s, "5g").address.clone().expect("5g's address");
    h.lab
        .run(Role::Vps, &["ss", "-K", "-tn", "dst", &addr_5g])
        .expect("ss -K");
    let s = wait_status(
        &h,
        "the idle connections without their 5g subflow dropped",
        Duration::from_secs(5),
        |s| pool(s).dropped_lost_join >= 2,
    );
    assert_eq!(uplink(&s, "5g").state, LinkState::Up);
    wait_status(&h, "replacements, warm", Duration::from_secs(10), |s| {
        pool(s).warm >= 2 && pool(s).opened >= before.opened + 2
    });
    assert!(
        h.log("gateway.log")
            .contains("lost the subflow of an uplink that is up"),
        "the discards were not logged with their reason"
    );
}

/// `net.ipv4.tcp_rmem`'s maximum in `role`'s namespace.
fn rmem_max(h: &Harness, role: Role) -> u64 {
    let text = h
        .lab
        .run(role, &["cat", "/proc/sys/net/ipv4/tcp_rmem"])
        .expect("tcp_rmem");
    text.split_whitespace()
        .nth(2)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("tcp_rmem reads {text:?}"))
}

/// The receive buffer (`skmem` `rb`) of every established MPTCP socket in `role`'s namespace.
fn mptcp_rcvbufs(h: &Harness, role: Role) -> Vec<u64> {
    let text = h
        .lab
        .run(role, &["ss", "-Mnm", "state", "established"])
        .expect("ss");
    text.split("skmem:(")
        .skip(1)
        .filter_map(|t| {
            t.split([',', ')'])
                .find_map(|f| f.strip_prefix("rb"))
                .and_then(|v| v.parse().ok())
        })
        .collect()
}

/// The kernel does not autotune the receive buffer of a connection that sat idle after its
/// first bytes, and a pooled one's bulk transfers ran slower than a fresh one's until both ends
/// grew it to the kernel's cap when it is used (`relay::IDLED_RCVBUF`, docs/BENCHMARKS.md "The
/// warm pool's receive buffer"). Checked on the sockets themselves: a LAN connection that moved
/// a few bytes on a pooled connection finds the relay's socket and the gateway's at the cap
/// (half of `tcp_rmem`'s maximum as a window, about twice that as a buffer), where idle ones and
/// autotuning on a few bytes stay at the default.
#[test]
fn a_taken_pool_connection_gets_the_largest_receive_buffer_on_both_ends() {
    if !braid_lab::root_tests_enabled("lab_pool") {
        return;
    }
    let (h, s) = warm_pool_lab("bpl4", 1);
    let hits = pool(&s).hits;
    // The cap of each end's namespace: half of its tcp_rmem maximum.
    let ceilings = [Role::Vps, Role::Gw].map(|role| (role, rmem_max(&h, role) / 2));
    for (role, ceiling) in ceilings {
        let bufs = mptcp_rcvbufs(&h, role);
        assert!(
            bufs.iter().all(|&rb| rb < ceiling),
            "{role:?}: an idle connection's buffer is already at the cap {ceiling}: {bufs:?}"
        );
    }

    // One LAN connection that echoes a few bytes and stays open while the sockets are read.
    let target: SocketAddr = Harness::traffic_target().parse().expect("target");
    let (close_tx, close_rx) = std::sync::mpsc::channel::<()>();
    let (echoed_tx, echoed_rx) = std::sync::mpsc::channel::<Result<(), String>>();
    let lan = in_netns(h.lab.ns_name(Role::Lan), move || {
        runtime().block_on(async move {
            let work = async {
                let mut s = tokio::net::TcpStream::connect(target)
                    .await
                    .map_err(|e| format!("connect: {e}"))?;
                let mut msg = vec![ECHO];
                msg.extend_from_slice(&0u64.to_be_bytes());
                msg.extend_from_slice(b"pooled");
                s.write_all(&msg).await.map_err(|e| format!("send: {e}"))?;
                let mut back = [0u8; 6];
                s.read_exact(&mut back)
                    .await
                    .map_err(|e| format!("receive: {e}"))?;
                if &back != b"pooled" {
                    return Err(format!("echoed {back:?}"));
                }
                Ok(s)
            };
            match tokio::time::timeout(ECHO_LIMIT, work).await {
                Ok(Ok(s)) => {
                    let _ = echoed_tx.send(Ok(()));
                    let _ = close_rx.recv();
                    drop(s);
                }
                Ok(Err(e)) => drop(echoed_tx.send(Err(e))),
                Err(_) => drop(echoed_tx.send(Err(format!("no echo within {ECHO_LIMIT:?}")))),
            }
        })
    });
    echoed_rx
        .recv()
        .expect("the LAN thread answers")
        .expect("the echo through a pooled connection");
    let s = common::status(&h);
    assert!(
        pool(&s).hits > hits,
        "the LAN connection did not take a pooled connection: {:?}",
        pool(&s)
    );
    for (role, ceiling) in ceilings {
        let bufs = mptcp_rcvbufs(&h, role);
        assert!(
            bufs.iter().any(|&rb| rb >= ceiling),
            "{role:?}: no MPTCP socket's receive buffer reached the cap {ceiling} after a pooled connection was taken: {bufs:?}\n{}",
            h.log(if role == Role::Vps { "server.log" } else { "gateway.log" })
        );
    }
    close_tx.send(()).expect("the LAN thread waits");
    lan.join().expect("LAN thread");
}
