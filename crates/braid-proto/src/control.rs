//! braid's control channel, carried inside the tunnel.
//!
//! A stock Shadowsocks-2022 relay cannot tell a gateway what it saw, but `braid server` can. The
//! gateway opens an ordinary SS2022 stream whose target is the reserved name
//! [`CONTROL_HOST`]`:`[`CONTROL_PORT`] (`.invalid` can never resolve, so a stock server just closes
//! the stream), then sends length-prefixed JSON frames. Because it rides the tunnel it is
//! authenticated by the SS2022 key, needs no extra port, and travels the same path as user
//! traffic — so it doubles as an end-to-end probe (TFO timing, MPTCP state).
//!
//! Frame: `u32` big-endian body length, then a JSON body of at most [`MAX_FRAME`] bytes.
//!
//! ## Speed tests: raw bytes after a frame
//! [`ControlRequest::Source`] and [`ControlRequest::Sink`] are the last request on their
//! stream, and the bulk bytes they move are raw stream bytes, not frames:
//! ```text
//! Source  gateway ─► Source{secs}
//!         relay   ─► Accepted{secs} frame, raw bytes for `secs` seconds, SOURCE_END trailer, EOF
//! Sink    gateway ─► Sink{secs}
//!         relay   ─► Accepted{secs} frame
//!         gateway ─► raw bytes for `secs` seconds, then EOF (half-close)
//!         relay   ─► Received{..} frame, EOF
//! ```
//! The [`SourceEnd`] trailer (a magic and the count of raw bytes before it) tells a complete
//! download from one cut short: SS2022 does not authenticate EOF, so EOF alone proves nothing.
//! An upload is complete when [`ControlResponse::Received`] counts every byte sent. A refused
//! request gets [`ControlResponse::Error`] instead of `Accepted`; a stock Shadowsocks-2022
//! server closes the stream without any answer.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Host name that selects the control channel.
pub const CONTROL_HOST: &str = "braid-control.invalid";
/// Port that selects the control channel.
pub const CONTROL_PORT: u16 = 9;
/// Largest frame body accepted.
pub const MAX_FRAME: usize = 64 * 1024;
/// Longest speed test the relay runs ([`ControlRequest::Source`], [`ControlRequest::Sink`]).
pub const MAX_SPEEDTEST_SECS: u32 = 60;

/// What the gateway asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ControlRequest {
    /// "Who are you, and what did you see of this connection?"
    Hello {
        /// The asking braid's version.
        client_version: String,
    },
    /// A health probe: the relay answers [`ControlResponse::Pong`] at once. Carried on a plain
    /// TCP stream bound to one uplink, it measures that uplink's path to the relay itself, and
    /// the SS2022 key authenticates it, so a captive portal or DNS hijack cannot fake health.
    Ping {
        /// Echoed in the pong.
        seq: u64,
    },
    /// Download test: the relay answers [`ControlResponse::Accepted`], then sends raw
    /// pseudo-random bytes as fast as the stream takes them for `secs` seconds, then the
    /// [`SourceEnd`] trailer, then EOF. At most [`MAX_SPEEDTEST_SECS`].
    Source {
        /// Duration of the download.
        secs: u32,
    },
    /// Upload test: the relay answers [`ControlResponse::Accepted`], reads raw bytes until the
    /// client half-closes, then answers [`ControlResponse::Received`]. At most
    /// [`MAX_SPEEDTEST_SECS`].
    Sink {
        /// Duration of the upload the client intends.
        secs: u32,
    },
    /// "Admit my WireGuard key for uplink X": the relay answers [`ControlResponse::Tunnel`] with
    /// its own key, the tunnel address it leases to this key and its UDP port. Carried inside
    /// the SS2022 stream, so the pre-shared key authenticates it and pairing stays one URI.
    /// Asking again with the same key renews the lease and returns the same address.
    Tunnel {
        /// The uplink, for the relay's log.
        uplink: String,
        /// The gateway's WireGuard public key (base64, 32 bytes).
        public_key: String,
        /// The relay address the gateway dials (`IP:PORT`): the only destination the tunnel
        /// lets through.
        relay: String,
    },
}

/// What the server answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ControlResponse {
    /// The server's view of itself and of the connection the request came on.
    Report(ServerReport),
    /// The answer to [`ControlRequest::Ping`].
    Pong {
        /// The ping's sequence number.
        seq: u64,
    },
    /// A [`ControlRequest::Source`] or [`ControlRequest::Sink`] is accepted: raw bytes follow
    /// this frame.
    Accepted {
        /// The test's duration, as granted.
        secs: u32,
    },
    /// The end of a [`ControlRequest::Sink`]: what the relay received.
    Received(SinkReport),
    /// The answer to [`ControlRequest::Tunnel`].
    Tunnel(TunnelGrant),
    /// The request was understood but refused.
    Error {
        /// Human-readable reason.
        message: String,
    },
}

/// The server's own facts and its view of one connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerReport {
    /// braid version of the server.
    pub version: String,
    /// `uname -r` of the server.
    pub kernel: String,
    /// The connection this request arrived on.
    pub connection: ConnectionReport,
    /// The server's `net.mptcp.*` and related sysctls (missing ones are left out).
    pub sysctls: BTreeMap<String, String>,
    /// The server's clock (Unix time, ms), so a client can tell how far the clocks differ.
    #[serde(default)]
    pub time_unix_ms: u64,
    /// The relay's limits on connections that have not sent their request yet, so that a
    /// gateway's warm pool retires idle connections in time and stays well under the cap per
    /// source. Relays older than the warm pool leave it out.
    #[serde(default)]
    pub handshake: Option<HandshakeLimits>,
    /// Joined subflows the relay takes per connection (its `max_joins`, or the kernel's limit
    /// when the in-kernel path manager decides), so that a gateway with more uplinks than that
    /// can say why some never carry traffic. Relays older than `max_joins`, or without MPTCP,
    /// leave it out.
    #[serde(default)]
    pub joins: Option<u32>,
}

/// How long the relay waits for a request, and how many such connections it takes per source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandshakeLimits {
    /// `handshake_timeout_secs`, in ms.
    pub timeout_ms: u64,
    /// `max_handshakes_per_source` as resolved.
    pub max_per_source: u64,
    /// The relay takes parked requests (`crate::park`): a warm connection can be bonded before
    /// it is used. Relays older than parking leave it out.
    #[serde(default)]
    pub parks: bool,
}

/// What a relay connection really is on the wire.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// Live MPTCP: it can have a subflow per uplink.
    Mptcp,
    /// An MPTCP socket that fell back to plain TCP (a middlebox stripped the option, or the
    /// peer has no MPTCP): it cannot bond.
    Fallback,
    /// Plain TCP: MPTCP was not asked for.
    Tcp,
    /// Not known (the socket could not be read).
    #[default]
    Unknown,
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Transport::Mptcp => "mptcp",
            Transport::Fallback => "fallback",
            Transport::Tcp => "tcp",
            Transport::Unknown => "unknown",
        })
    }
}

/// How one connection reached the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionReport {
    /// The client address as the server saw it.
    pub peer: String,
    /// MPTCP, fallen back, or plain TCP.
    pub transport: Transport,
    /// Subflows in use, the initial one included.
    pub subflows: u32,
    /// The SYN carried data (TCP Fast Open) that the server accepted.
    pub tfo: bool,
    /// Each subflow's client address as the server saw it (empty for plain TCP).
    #[serde(default)]
    pub subflow_peers: Vec<String>,
}

/// A tunnel lease: everything a gateway needs to bring up its end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelGrant {
    /// The relay's WireGuard public key (base64).
    pub server_key: String,
    /// The gateway's address inside the tunnel (IPv4).
    pub address: String,
    /// The relay's UDP port for tunnels.
    pub port: u16,
    /// Seconds until the lease expires unless renewed (a renewal, or traffic, extends it).
    pub lease_secs: u32,
}

/// What the relay received in an upload test, timed by the relay (the receiver) from the first
/// raw byte to the client's EOF.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkReport {
    /// Raw bytes received in all.
    pub bytes: u64,
    /// Milliseconds from the first raw byte to EOF.
    pub elapsed_ms: u64,
    /// Bytes received in the steady part (after the warm-up, see [`SteadyRate`]).
    pub steady_bytes: u64,
    /// Milliseconds of the steady part.
    pub steady_ms: u64,
}

impl SinkReport {
    /// Steady rate in Mbit/s.
    pub fn mbit_per_s(&self) -> f64 {
        mbit_per_s(self.steady_bytes, self.steady_ms)
    }
}

/// `bytes` in `ms` milliseconds as Mbit/s (0 for an empty span).
pub fn mbit_per_s(bytes: u64, ms: u64) -> f64 {
    if ms == 0 {
        return 0.0;
    }
    bytes as f64 * 8.0 / (ms as f64 / 1000.0) / 1e6
}

/// Measures a bulk transfer's steady rate: bytes before the warm-up ends (slow start) are left
/// out. Time is passed in as the span since the transfer started.
#[derive(Debug, Clone, Copy)]
pub struct SteadyRate {
    warm: std::time::Duration,
    bytes: u64,
    at_warm: Option<(u64, std::time::Duration)>,
}

impl SteadyRate {
    /// A meter that skips the first second, or a quarter of a shorter test.
    pub fn new(secs: u32) -> SteadyRate {
        let test = std::time::Duration::from_secs(u64::from(secs));
        SteadyRate {
            warm: std::time::Duration::from_secs(1).min(test / 4),
            bytes: 0,
            at_warm: None,
        }
    }

    /// `n` more bytes arrived `since_start` into the transfer.
    pub fn record(&mut self, n: u64, since_start: std::time::Duration) {
        self.bytes += n;
        if self.at_warm.is_none() && since_start >= self.warm {
            self.at_warm = Some((self.bytes, since_start));
        }
    }

    /// Bytes recorded so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The report for a transfer that ended `since_start` into it.
    pub fn finish(&self, since_start: std::time::Duration) -> SinkReport {
        let (b0, t0) = self.at_warm.unwrap_or((0, std::time::Duration::ZERO));
        SinkReport {
            bytes: self.bytes,
            elapsed_ms: since_start.as_millis() as u64,
            steady_bytes: self.bytes - b0,
            steady_ms: since_start.saturating_sub(t0).as_millis() as u64,
        }
    }
}

/// The trailer that ends a [`ControlRequest::Source`] download: [`SourceEnd::MAGIC`], then the
/// count of raw bytes before the trailer (`u64` big-endian).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceEnd {
    /// Raw bytes sent before the trailer.
    pub bytes: u64,
}

impl SourceEnd {
    /// The trailer's first eight bytes.
    pub const MAGIC: [u8; 8] = *b"BRAIDEND";
    /// The trailer's length.
    pub const LEN: usize = 16;

    /// The trailer's bytes.
    pub fn emit(&self) -> [u8; SourceEnd::LEN] {
        let mut out = [0u8; SourceEnd::LEN];
        out[..8].copy_from_slice(&SourceEnd::MAGIC);
        out[8..].copy_from_slice(&self.bytes.to_be_bytes());
        out
    }

    /// Parses the last [`SourceEnd::LEN`] bytes of a download.
    pub fn parse(tail: &[u8]) -> Option<SourceEnd> {
        let tail: &[u8; SourceEnd::LEN] = tail.try_into().ok()?;
        if tail[..8] != SourceEnd::MAGIC {
            return None;
        }
        let mut n = [0u8; 8];
        n.copy_from_slice(&tail[8..]);
        Some(SourceEnd {
            bytes: u64::from_be_bytes(n),
        })
    }
}

/// Follows a download's raw bytes and tells, at EOF, whether it ended with a [`SourceEnd`]
/// that counts every byte before it.
#[derive(Debug, Clone, Default)]
pub struct SourceTail {
    seen: u64,
    tail: Vec<u8>,
}

/// A download that ended without its [`SourceEnd`] trailer, or with a wrong count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the download was cut short after {received} bytes (no valid end marker); fix: retry, and check the relay's log and the uplink")]
pub struct SourceCut {
    /// Bytes that arrived.
    pub received: u64,
}

impl SourceTail {
    /// More raw bytes arrived.
    pub fn push(&mut self, data: &[u8]) {
        self.seen += data.len() as u64;
        if data.len() >= SourceEnd::LEN {
            self.tail.clear();
            self.tail
                .extend_from_slice(&data[data.len() - SourceEnd::LEN..]);
        } else {
            self.tail.extend_from_slice(data);
            let extra = self.tail.len().saturating_sub(SourceEnd::LEN);
            self.tail.drain(..extra);
        }
    }

    /// At EOF: the raw byte count (trailer excluded) if the download is complete.
    pub fn finish(&self) -> Result<u64, SourceCut> {
        let cut = SourceCut {
            received: self.seen,
        };
        let payload = self.seen.checked_sub(SourceEnd::LEN as u64).ok_or(cut)?;
        match SourceEnd::parse(&self.tail) {
            Some(end) if end.bytes == payload => Ok(payload),
            _ => Err(cut),
        }
    }
}

/// A frame that cannot be decoded.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The length prefix exceeds [`MAX_FRAME`].
    #[error("control frame of {0} bytes exceeds the {MAX_FRAME}-byte limit; fix: peer is not a braid control client or server of a compatible version")]
    TooLarge(usize),
    /// The body is not the expected JSON.
    #[error("control frame is not valid: {0}; fix: upgrade both ends to the same braid version")]
    Json(#[from] serde_json::Error),
}

/// Encodes one message as a frame.
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    let body = serde_json::to_vec(msg).unwrap_or_default();
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// Decodes one frame from the start of `buf`: `Ok(None)` while incomplete, else the message and
/// the bytes consumed.
pub fn decode<T: for<'de> Deserialize<'de>>(buf: &[u8]) -> Result<Option<(T, usize)>, FrameError> {
    let Some(len) = buf.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    let Some(body) = buf.get(4..4 + len) else {
        return Ok(None);
    };
    Ok(Some((serde_json::from_slice(body)?, 4 + len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_round_trips_and_is_tagged_by_op() {
        let req = ControlRequest::Hello {
            client_version: "0.1.0".into(),
        };
        let f = encode(&req);
        assert!(std::str::from_utf8(&f[4..])
            .unwrap()
            .contains("\"op\":\"hello\""));
        let (back, used): (ControlRequest, usize) = decode(&f).unwrap().unwrap();
        assert_eq!((back, used), (req, f.len()));
    }

    #[test]
    fn ping_and_pong_round_trip() {
        let (p, _): (ControlRequest, usize) = decode(&encode(&ControlRequest::Ping { seq: 7 }))
            .unwrap()
            .unwrap();
        assert_eq!(p, ControlRequest::Ping { seq: 7 });
        let (q, _): (ControlResponse, usize) = decode(&encode(&ControlResponse::Pong { seq: 7 }))
            .unwrap()
            .unwrap();
        assert_eq!(q, ControlResponse::Pong { seq: 7 });
    }

    #[test]
    fn partial_frames_ask_for_more() {
        let f = encode(&ControlRequest::Hello {
            client_version: "x".into(),
        });
        for n in 0..f.len() {
            assert!(decode::<ControlRequest>(&f[..n]).unwrap().is_none());
        }
    }

    #[test]
    fn oversized_and_garbage_frames_are_errors() {
        assert!(matches!(
            decode::<ControlRequest>(&[0xff, 0xff, 0xff, 0xff]),
            Err(FrameError::TooLarge(_))
        ));
        let mut g = 3u32.to_be_bytes().to_vec();
        g.extend_from_slice(b"{{{");
        assert!(matches!(
            decode::<ControlRequest>(&g),
            Err(FrameError::Json(_))
        ));
    }

    #[test]
    fn speedtest_requests_and_answers_round_trip() {
        let msgs = [
            ControlRequest::Source { secs: 5 },
            ControlRequest::Sink { secs: 60 },
        ];
        for m in msgs {
            let (back, _): (ControlRequest, usize) = decode(&encode(&m)).unwrap().unwrap();
            assert_eq!(back, m);
        }
        let f = encode(&ControlRequest::Source { secs: 5 });
        assert!(std::str::from_utf8(&f[4..])
            .unwrap()
            .contains("\"op\":\"source\""));
        let answers = [
            ControlResponse::Accepted { secs: 5 },
            ControlResponse::Received(SinkReport {
                bytes: 10_000_000,
                elapsed_ms: 4_000,
                steady_bytes: 7_500_000,
                steady_ms: 3_000,
            }),
        ];
        for a in answers {
            let (back, _): (ControlResponse, usize) = decode(&encode(&a)).unwrap().unwrap();
            assert_eq!(back, a);
        }
    }

    #[test]
    fn source_tail_complete_download_counts_payload() {
        let payload = vec![0x5au8; 100_003];
        let mut t = SourceTail::default();
        for part in payload.chunks(4096) {
            t.push(part);
        }
        let end = SourceEnd { bytes: 100_003 }.emit();
        // The trailer split across reads, down to single bytes.
        for b in end {
            t.push(&[b]);
        }
        assert_eq!(t.finish(), Ok(100_003));
    }

    #[test]
    fn source_tail_cut_download_is_an_error() {
        let mut t = SourceTail::default();
        t.push(&[1u8; 50_000]);
        assert_eq!(t.finish(), Err(SourceCut { received: 50_000 }));
        // A trailer whose count disagrees (bytes lost before it) is a cut too.
        let mut t = SourceTail::default();
        t.push(&[1u8; 500]);
        t.push(&SourceEnd { bytes: 600 }.emit());
        assert!(t.finish().is_err());
        // Nothing at all.
        assert!(SourceTail::default().finish().is_err());
    }

    #[test]
    fn source_tail_empty_download_is_complete() {
        let mut t = SourceTail::default();
        t.push(&SourceEnd { bytes: 0 }.emit());
        assert_eq!(t.finish(), Ok(0));
    }

    #[test]
    fn rate_meter_skips_the_warm_up() {
        let ms = std::time::Duration::from_millis;
        let mut m = SteadyRate::new(4);
        m.record(5_000_000, ms(500));
        m.record(1_000_000, ms(1_000));
        // 3 s after the warm-up mark: 3_750_000 bytes = 10 Mbit/s.
        m.record(3_750_000, ms(4_000));
        let r = m.finish(ms(4_000));
        assert_eq!(r.bytes, 9_750_000);
        assert_eq!((r.steady_bytes, r.steady_ms), (3_750_000, 3_000));
        assert!((r.mbit_per_s() - 10.0).abs() < 1e-9);
        // A 1-second test warms up for a quarter of it.
        let mut short = SteadyRate::new(1);
        short.record(1, ms(250));
        assert_eq!(short.finish(ms(1_000)).steady_ms, 750);
    }

    #[test]
    fn tunnel_request_and_grant_round_trip() {
        let req = ControlRequest::Tunnel {
            uplink: "5g".into(),
            public_key: "AAAA".into(),
            relay: "10.200.0.1:8388".into(),
        };
        let (back, _): (ControlRequest, usize) = decode(&encode(&req)).unwrap().unwrap();
        assert_eq!(back, req);
        let g = ControlResponse::Tunnel(TunnelGrant {
            server_key: "BBBB".into(),
            address: "10.255.0.2".into(),
            port: 8389,
            lease_secs: 600,
        });
        let (back, _): (ControlResponse, usize) = decode(&encode(&g)).unwrap().unwrap();
        assert_eq!(back, g);
    }

    #[test]
    fn report_round_trips() {
        let r = ControlResponse::Report(ServerReport {
            version: "0.1.0".into(),
            kernel: "6.18".into(),
            connection: ConnectionReport {
                peer: "10.1.0.1:5".into(),
                transport: Transport::Mptcp,
                subflows: 2,
                tfo: false,
                subflow_peers: vec!["10.2.0.1:4000".into()],
            },
            sysctls: BTreeMap::from([("net.mptcp.enabled".to_string(), "1".to_string())]),
            time_unix_ms: 1_700_000_000_000,
            handshake: Some(HandshakeLimits {
                timeout_ms: 15_000,
                max_per_source: 16,
                parks: true,
            }),
            joins: Some(8),
        });
        let (back, _): (ControlResponse, usize) = decode(&encode(&r)).unwrap().unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn report_from_a_relay_without_handshake_limits_still_parses() {
        let old = r#"{"kind":"report","version":"0.1.0","kernel":"6.18","connection":{"peer":"10.1.0.1:5","transport":"mptcp","subflows":1,"tfo":false},"sysctls":{}}"#;
        let r: ControlResponse = serde_json::from_str(old).unwrap();
        let ControlResponse::Report(r) = r else {
            panic!("not a report: {r:?}");
        };
        assert_eq!(r.handshake, None);
    }
}
