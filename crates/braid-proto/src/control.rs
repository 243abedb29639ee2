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

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Host name that selects the control channel.
pub const CONTROL_HOST: &str = "braid-control.invalid";
/// Port that selects the control channel.
pub const CONTROL_PORT: u16 = 9;
/// Largest frame body accepted.
pub const MAX_FRAME: usize = 64 * 1024;

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
}

/// How one connection reached the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionReport {
    /// The client address as the server saw it.
    pub peer: String,
    /// "mptcp", "fallback" (MPTCP socket, plain TCP on the wire) or "tcp" (client asked for TCP).
    pub transport: String,
    /// Subflows in use, the initial one included.
    pub subflows: u32,
    /// The SYN carried data (TCP Fast Open) that the server accepted.
    pub tfo: bool,
    /// Each subflow's client address as the server saw it (empty for plain TCP).
    #[serde(default)]
    pub subflow_peers: Vec<String>,
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
    fn report_round_trips() {
        let r = ControlResponse::Report(ServerReport {
            version: "0.1.0".into(),
            kernel: "6.18".into(),
            connection: ConnectionReport {
                peer: "10.1.0.1:5".into(),
                transport: "mptcp".into(),
                subflows: 2,
                tfo: false,
                subflow_peers: vec!["10.2.0.1:4000".into()],
            },
            sysctls: BTreeMap::from([("net.mptcp.enabled".to_string(), "1".to_string())]),
            time_unix_ms: 1_700_000_000_000,
        });
        let (back, _): (ControlResponse, usize) = decode(&encode(&r)).unwrap().unwrap();
        assert_eq!(back, r);
    }
}
