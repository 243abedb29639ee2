//! `braid speedtest`: how fast each uplink is alone, and how fast they are bonded.
//!
//! Every test is a braid control stream to the relay (so it is authenticated by the SS2022 key
//! and needs `braid server`), carrying a download (`Source`) and then an upload (`Sink`), as
//! described in `braid_proto::control`:
//! ```text
//!  uplink alone: plain TCP bound to the uplink's interface and address ─► relay   (one path)
//!  bonded:       MPTCP through the main route; the gateway's endpoints add a subflow per uplink
//! ```
//! Bonding needs the running gateway daemon: its MPTCP endpoints are what make the kernel open
//! the extra subflows. Without it the bonded test is skipped, and the report says why.
//!
//! For each test: the steady rate (the first second, slow start, is left out), the subflows
//! seen, and the bytes each uplink interface carried meanwhile (its kernel counters: received
//! for a download, sent for an upload — headers and other traffic included).

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use braid_proto::control::{
    self, ControlRequest, ControlResponse, SourceTail, SteadyRate, Transport, CONTROL_HOST,
    CONTROL_PORT,
};
use braid_sys::mptcp::info::mptcp_state;
use braid_sys::netlink::Rtnl;
use serde::Serialize;
use shadowsocks::relay::socks5::Address;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use braid_sys::link::{byte_counters, IfName};

use crate::config::gateway::GatewayConfig;
use crate::control::{Connection, ConnectionError};
use crate::gateway::dialer::{Dialer, RelayStream};
use crate::gateway::uplink::discover::observe;
use crate::gateway::{resolve, running};

/// How long the relay may take to answer a speed test request.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// A test whose stream moves no byte for this long is a failure.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the subflows of a test's stream are counted.
const SUBFLOW_SAMPLE: Duration = Duration::from_millis(100);
/// Bytes per read or write.
const CHUNK: usize = 64 * 1024;

/// The `path` of the bonded tests.
pub const BONDED: &str = "bonded";

/// Which way the bytes went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Relay to gateway (`Source`).
    Down,
    /// Gateway to relay (`Sink`).
    Up,
}

impl std::fmt::Display for Direction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Direction::Down => "down",
            Direction::Up => "up",
        })
    }
}

/// One measured test.
#[derive(Debug, Clone, Serialize)]
pub struct TestResult {
    /// An uplink's name, or [`BONDED`].
    pub path: String,
    /// Download or upload.
    pub direction: Direction,
    /// Steady rate (after the first second), Mbit/s of payload.
    pub mbit_per_s: f64,
    /// Most subflows seen on the stream (1 for an uplink alone).
    pub subflows: u32,
    /// Bytes each uplink interface carried during the test (received for down, sent for up).
    pub bytes_per_uplink: BTreeMap<String, u64>,
    /// Payload bytes moved in all.
    pub bytes: u64,
    /// Wall time of the transfer, seconds.
    pub secs: f64,
    /// MPTCP, plain TCP, or fallen back (an MPTCP socket that became plain TCP).
    pub transport: Transport,
}

/// A test that ran but broke.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    /// An uplink's name, or [`BONDED`].
    pub path: String,
    /// Download or upload.
    pub direction: Direction,
    /// What went wrong.
    pub error: String,
}

/// Everything `braid speedtest` measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The relay's address.
    pub relay: String,
    /// Seconds per test.
    pub secs: u32,
    /// Whether the gateway daemon runs (bonding needs it).
    pub gateway_running: bool,
    /// The measured tests, in order.
    pub results: Vec<TestResult>,
    /// Tests that broke.
    pub failures: Vec<Failure>,
    /// Tests skipped, and why.
    pub notes: Vec<String>,
}

/// Why `braid speedtest` could not run.
#[derive(Debug, thiserror::Error)]
pub enum SpeedtestError {
    /// `--secs` is 0.
    #[error("a speed test needs at least 1 second; fix: --secs 1 to 60")]
    NoTime,
    /// The relay's name does not resolve.
    #[error(transparent)]
    Resolve(crate::gateway::resolve::ResolveError),
    /// The uplinks' interfaces cannot be read.
    #[error("cannot read the uplinks' interfaces: {0}; fix: run braid speedtest on the gateway")]
    Netlink(#[from] braid_sys::netlink::NetlinkError),
    /// The relay closed the control stream without an answer.
    #[error("the relay does not support speedtest (a stock Shadowsocks-2022 server): braid speedtest needs braid server. If {relay} does run braid server, its key or method differs from gateway.toml, or the clocks differ by more than 30 s")]
    NotBraid {
        /// The relay's address.
        relay: SocketAddr,
    },
    /// The relay answered with an error (a test longer than it allows).
    #[error("the relay refused the speed test: {0}")]
    Refused(String),
    /// No test could be run, or every test broke.
    #[error("no speed test completed: {0}")]
    NothingMeasured(String),
}

/// Why one test broke.
#[derive(Debug, thiserror::Error)]
enum TestError {
    #[error("{0}")]
    Fatal(SpeedtestError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the relay did not answer within {} s", ANSWER_TIMEOUT.as_secs())]
    NoAnswer,
    #[error("the stream moved no byte for {} s", STALL_TIMEOUT.as_secs())]
    Stalled,
    #[error("{0}")]
    Cut(#[from] control::SourceCut),
    #[error("the relay received {got} of the {sent} bytes sent: the upload was cut short")]
    UploadCut { got: u64, sent: u64 },
    #[error("unexpected answer from the relay: {0}")]
    Unexpected(String),
    #[error("{0}")]
    Control(ConnectionError),
}

/// An uplink that can be tested: it has an address of the relay's family.
struct UplinkPath {
    name: String,
    iface: IfName,
    addr: IpAddr,
}

/// Runs every test: each usable uplink alone, then bonded; download, then upload.
pub async fn run(cfg: &GatewayConfig, secs: u32) -> Result<Report, SpeedtestError> {
    if secs == 0 {
        return Err(SpeedtestError::NoTime);
    }
    let relay = resolve::relay(&cfg.server)
        .await
        .map_err(SpeedtestError::Resolve)?;
    let rtnl = Rtnl::connect()?;
    let gateway_running = running::detect(cfg, Some(&rtnl)).await.is_running();
    let mut report = Report {
        relay: relay.to_string(),
        secs,
        gateway_running,
        results: Vec::new(),
        failures: Vec::new(),
        notes: Vec::new(),
    };
    let mut paths = Vec::new();
    for u in &cfg.uplinks {
        let why = match observe(&rtnl, &u.interface, relay.ip()).await? {
            None => format!("interface {} does not exist", u.interface),
            Some(o) => match (o.usable_addr(), o.unusable_because(&u.interface)) {
                (Some(addr), _) => {
                    paths.push(UplinkPath {
                        name: u.name.clone(),
                        iface: u.interface.clone(),
                        addr,
                    });
                    continue;
                }
                (None, why) => why.unwrap_or_default(),
            },
        };
        report
            .notes
            .push(format!("uplink {}: skipped, {why}", u.name));
    }
    let ifaces: Vec<(String, IfName)> = cfg
        .uplinks
        .iter()
        .map(|u| (u.name.clone(), u.interface.clone()))
        .collect();
    let mut plain = cfg.clone();
    plain.mptcp = false;
    let probe_dialer = dialer(&plain, relay);
    for p in &paths {
        for dir in [Direction::Down, Direction::Up] {
            let open = || probe_dialer.open_probe(p.addr, &p.iface, cfg.connect_timeout);
            let r = measure(open, dir, secs, &ifaces).await;
            record(&mut report, &p.name, dir, r)?;
        }
    }
    match bonded_skip(cfg, gateway_running, paths.len()) {
        Some(why) => report.notes.push(format!("bonded: skipped, {why}")),
        None => {
            let bond_dialer = dialer(cfg, relay);
            for dir in [Direction::Down, Direction::Up] {
                let open = || bond_dialer.open(control_target(), false);
                let r = measure(open, dir, secs, &ifaces).await;
                record(&mut report, BONDED, dir, r)?;
            }
        }
    }
    if report.results.is_empty() {
        let why = match report.failures.first() {
            Some(f) => format!("{} {}: {}", f.path, f.direction, f.error),
            None => report.notes.join("; "),
        };
        return Err(SpeedtestError::NothingMeasured(why));
    }
    Ok(report)
}

/// Why the bonded test cannot show bonding, if it cannot.
fn bonded_skip(cfg: &GatewayConfig, running: bool, usable: usize) -> Option<&'static str> {
    if !cfg.mptcp {
        Some("gateway.toml sets mptcp = false, so nothing is bonded")
    } else if !running {
        Some("the gateway is not running (its status API does not answer and no braid rules are in the kernel): bonding needs `braid gateway`, whose MPTCP endpoints make the kernel add a subflow per uplink; start it and run the speed test again")
    } else if usable == 0 {
        Some("no uplink has a usable address")
    } else {
        None
    }
}

/// Files a test's outcome; a relay that is not braid (or refuses) ends the whole run.
fn record(
    report: &mut Report,
    path: &str,
    direction: Direction,
    r: Result<TestResult, TestError>,
) -> Result<(), SpeedtestError> {
    match r {
        Ok(mut t) => {
            t.path = path.to_string();
            report.results.push(t);
            Ok(())
        }
        Err(TestError::Fatal(e)) => Err(e),
        Err(e) => {
            report.failures.push(Failure {
                path: path.to_string(),
                direction,
                error: e.to_string(),
            });
            Ok(())
        }
    }
}

fn dialer(cfg: &GatewayConfig, relay: SocketAddr) -> std::sync::Arc<Dialer> {
    Dialer::new(cfg, relay).expect("a config that parsed has a valid key")
}

fn control_target() -> Address {
    Address::DomainNameAddress(CONTROL_HOST.into(), CONTROL_PORT)
}

/// Per-uplink interface byte counters: received (for downloads) or sent (for uploads).
fn counters(ifaces: &[(String, IfName)], dir: Direction) -> BTreeMap<String, u64> {
    ifaces
        .iter()
        .filter_map(|(name, iface)| {
            let (rx, tx) = byte_counters(iface)?;
            Some((
                name.clone(),
                match dir {
                    Direction::Down => rx,
                    Direction::Up => tx,
                },
            ))
        })
        .collect()
}

/// One test on a fresh stream from `open`, with the uplinks' counters read around it.
async fn measure<F, Fut>(
    open: F,
    dir: Direction,
    secs: u32,
    ifaces: &[(String, IfName)],
) -> Result<TestResult, TestError>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = std::io::Result<RelayStream>>,
{
    let before = counters(ifaces, dir);
    let mut s = open().await?;
    let mut conn = Connection::new(&mut s);
    let req = match dir {
        Direction::Down => ControlRequest::Source { secs },
        Direction::Up => ControlRequest::Sink { secs },
    };
    conn.send(&req).await.map_err(TestError::Control)?;
    let accepted = answer(&mut conn).await?;
    if !matches!(accepted, ControlResponse::Accepted { .. }) {
        return Err(TestError::Unexpected(format!("{accepted:?}")));
    }
    // Raw bytes from here on; those that came with `Accepted` belong to the download.
    let (_, early) = conn.into_parts();
    let mut sub = Subflows::new(&s);
    let (bytes, elapsed, mbit) = match dir {
        Direction::Down => download(&mut s, secs, &early, &mut sub).await?,
        Direction::Up => upload(&mut s, secs, &mut sub).await?,
    };
    let after = counters(ifaces, dir);
    let bytes_per_uplink = after
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), v.saturating_sub(*before.get(k)?))))
        .collect();
    Ok(TestResult {
        path: String::new(),
        direction: dir,
        mbit_per_s: (mbit * 100.0).round() / 100.0,
        subflows: sub.most,
        bytes_per_uplink,
        bytes,
        secs: (elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
        transport: sub.transport,
    })
}

/// Reads the relay's answer frame. The relay closing the stream without a word (or resetting
/// it) means it is not braid; a frame that cannot be read fails the test at once.
async fn answer(conn: &mut Connection<&mut RelayStream>) -> Result<ControlResponse, TestError> {
    let relay = conn
        .get_ref()
        .get_ref()
        .peer_addr()
        .map_err(TestError::Io)?;
    let not_braid = || TestError::Fatal(SpeedtestError::NotBraid { relay });
    let work = async {
        match conn.recv::<ControlResponse>().await {
            Ok(Some(ControlResponse::Error { message })) => {
                Err(TestError::Fatal(SpeedtestError::Refused(message)))
            }
            Ok(Some(resp)) => Ok(resp),
            Ok(None) => Err(not_braid()),
            // A stock server drops the stream, which may reset it.
            Err(ConnectionError::Io(e)) if is_reset(&e) && conn.buffered().is_empty() => {
                Err(not_braid())
            }
            Err(e) => Err(TestError::Control(e)),
        }
    };
    tokio::time::timeout(ANSWER_TIMEOUT, work)
        .await
        .map_err(|_| TestError::NoAnswer)?
}

fn is_reset(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::BrokenPipe
            | std::io::ErrorKind::UnexpectedEof
    )
}

/// The most subflows seen on a stream, sampled while it moves bytes.
struct Subflows {
    most: u32,
    transport: Transport,
    last: Instant,
}

impl Subflows {
    fn new(s: &RelayStream) -> Subflows {
        let mut sub = Subflows {
            most: 0,
            transport: Transport::Tcp,
            last: Instant::now(),
        };
        sub.sample(s);
        sub
    }

    fn sample(&mut self, s: &RelayStream) {
        let state = mptcp_state(s.get_ref());
        self.transport = crate::server::transport_of(state);
        self.most = self.most.max(state.subflows());
        self.last = Instant::now();
    }

    fn maybe_sample(&mut self, s: &RelayStream) {
        if self.last.elapsed() >= SUBFLOW_SAMPLE {
            self.sample(s);
        }
    }
}

/// Reads the raw bytes to EOF; the download counts only if its end marker is intact.
async fn download(
    s: &mut RelayStream,
    secs: u32,
    early: &[u8],
    sub: &mut Subflows,
) -> Result<(u64, Duration, f64), TestError> {
    let start = Instant::now();
    let mut meter = SteadyRate::new(secs);
    let mut tail = SourceTail::default();
    tail.push(early);
    meter.record(early.len() as u64, Duration::ZERO);
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = tokio::time::timeout(STALL_TIMEOUT, s.read(&mut buf))
            .await
            .map_err(|_| TestError::Stalled)??;
        if n == 0 {
            break;
        }
        tail.push(&buf[..n]);
        meter.record(n as u64, start.elapsed());
        sub.maybe_sample(s);
    }
    let elapsed = start.elapsed();
    let bytes = tail.finish()?;
    Ok((bytes, elapsed, meter.finish(elapsed).mbit_per_s()))
}

/// Sends raw bytes for `secs`, half-closes, and takes the relay's count as the result.
async fn upload(
    s: &mut RelayStream,
    secs: u32,
    sub: &mut Subflows,
) -> Result<(u64, Duration, f64), TestError> {
    let start = Instant::now();
    let end = start + Duration::from_secs(u64::from(secs));
    let mut buf = vec![0u8; CHUNK];
    let mut state = u64::from(std::process::id()) | 1;
    let mut sent = 0u64;
    while Instant::now() < end {
        fill(&mut buf, &mut state);
        tokio::time::timeout(STALL_TIMEOUT, s.write_all(&buf))
            .await
            .map_err(|_| TestError::Stalled)??;
        sent += buf.len() as u64;
        sub.maybe_sample(s);
    }
    s.shutdown().await?;
    let resp = answer(&mut Connection::new(s)).await?;
    let ControlResponse::Received(got) = resp else {
        return Err(TestError::Unexpected(format!("{resp:?}")));
    };
    if got.bytes != sent {
        return Err(TestError::UploadCut {
            got: got.bytes,
            sent,
        });
    }
    Ok((got.bytes, start.elapsed(), got.mbit_per_s()))
}

/// xorshift64 filler: the tunnel encrypts it anyway, so nothing on the path can compress it.
fn fill(buf: &mut [u8], state: &mut u64) {
    for chunk in buf.chunks_mut(8) {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
}

impl Report {
    /// `{"results":[…],…}`.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// A table for people.
    pub fn to_text(&self) -> String {
        let mut names: Vec<&String> = Vec::new();
        for r in &self.results {
            for k in r.bytes_per_uplink.keys() {
                if !names.contains(&k) {
                    names.push(k);
                }
            }
        }
        let mut out = format!(
            "braid speedtest to {} ({} s per test; MB = bytes each uplink carried)\n",
            self.relay, self.secs
        );
        out += &format!(
            "{:<10} {:<5} {:>9} {:>9}",
            "path", "dir", "Mbit/s", "subflows"
        );
        for n in &names {
            out += &format!(" {:>10}", format!("{n} MB"));
        }
        out.push('\n');
        for r in &self.results {
            out += &format!(
                "{:<10} {:<5} {:>9.1} {:>9}",
                r.path, r.direction, r.mbit_per_s, r.subflows
            );
            for n in &names {
                let mb = r.bytes_per_uplink.get(*n).copied().unwrap_or(0) as f64 / 1e6;
                out += &format!(" {mb:>10.1}");
            }
            out.push('\n');
        }
        for f in &self.failures {
            out += &format!("FAILED {} {}: {}\n", f.path, f.direction, f.error);
        }
        for n in &self.notes {
            out += &format!("note: {n}\n");
        }
        out
    }
}

/// Entry point of the subcommand (on the CLI's runtime): exit 0 when every test completed, 1 on
/// any failure, 2 when the configuration cannot be loaded.
pub async fn main(config: &Path, json: bool, secs: u32) -> ExitCode {
    let cfg = match GatewayConfig::load(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("braid speedtest: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&cfg, secs).await {
        Ok(report) => {
            if json {
                println!("{}", report.to_json());
            } else {
                print!("{}", report.to_text());
            }
            for f in &report.failures {
                eprintln!(
                    "braid speedtest: {} {} failed: {}",
                    f.path, f.direction, f.error
                );
            }
            if report.failures.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("braid speedtest: {e}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_text_has_a_row_per_test_and_names_skips() {
        let r = Report {
            relay: "10.200.0.1:8388".into(),
            secs: 4,
            gateway_running: false,
            results: vec![TestResult {
                path: "wifi".into(),
                direction: Direction::Down,
                mbit_per_s: 38.2,
                subflows: 1,
                bytes_per_uplink: BTreeMap::from([("wifi".into(), 20_000_000), ("5g".into(), 0)]),
                bytes: 19_000_000,
                secs: 4.1,
                transport: Transport::Tcp,
            }],
            failures: vec![],
            notes: vec!["bonded: skipped, the gateway is not running".into()],
        };
        let text = r.to_text();
        let row = text.lines().find(|l| l.starts_with("wifi")).unwrap();
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            cells,
            ["wifi", "down", "38.2", "1", "0.0", "20.0"],
            "{text}"
        );
        assert!(text.contains("note: bonded: skipped"), "{text}");
        let json: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(json["results"][0]["direction"], "down");
        assert_eq!(json["results"][0]["bytes_per_uplink"]["wifi"], 20_000_000);
    }

    #[tokio::test]
    async fn stock_server_closing_the_stream_is_the_not_braid_error() {
        // A stock SS2022 server: accepts, reads the request, closes without a word.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let relay = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut c, _) = l.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let _ = c.read(&mut buf).await;
            // Read everything first, so closing sends FIN rather than RST.
            drop(c);
        });
        let toml = format!(
            "server = \"{relay}\"\nmethod = \"2022-blake3-aes-256-gcm\"\nkey = \"{}\"\nredirect = \"127.0.0.1:1100\"\nlan = []\n[[uplink]]\nname = \"lo\"\ninterface = \"lo\"\n",
            crate::keygen::generate(crate::config::Method::Aes256Gcm).unwrap()
        );
        let dir = std::env::temp_dir().join(format!("braid-speedtest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("gateway.toml");
        std::fs::write(&path, toml).unwrap();
        let cfg = GatewayConfig::load(&path).unwrap();
        let d = dialer(&cfg, relay);
        let open = || d.open(control_target(), false);
        let err = measure(open, Direction::Down, 1, &[]).await.unwrap_err();
        let _ = std::fs::remove_dir_all(&dir);
        let TestError::Fatal(e) = err else {
            panic!("expected the not-braid error, got {err}");
        };
        assert!(
            e.to_string().starts_with("the relay does not support speedtest (a stock Shadowsocks-2022 server): braid speedtest needs braid server"),
            "{e}"
        );
    }
}
