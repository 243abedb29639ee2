//! Checks of this crate's parsers of untrusted input, shared by the fuzz targets in `fuzz/` and
//! the unit suite's property tests. Each takes arbitrary bytes, runs a parser on them and panics
//! when an invariant breaks: a parser must never panic, never claim more bytes than it was
//! given, ask for more on every prefix of a message it accepts, and give back what its encoder
//! wrote. Compiled for tests and with the `fuzz` feature only; not part of the API.

pub mod destination_reference;
#[cfg(test)]
mod props;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use ipnet::IpNet;

use crate::control::{self, ControlRequest, ControlResponse, SourceEnd, SourceTail};
use crate::destination::DestinationPolicy;
use crate::socks5::{self, TargetAddr};
use crate::{logsafe, sip022};

/// Reads fuzz input front to back; past the end every read gives zeros / `None`.
pub struct Bytes<'a>(pub &'a [u8]);

impl<'a> Bytes<'a> {
    /// The next byte (0 past the end).
    pub fn u8(&mut self) -> u8 {
        self.take(1).map_or(0, |b| b[0])
    }

    /// The next `n` bytes, if there are that many.
    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }

    /// An IPv4 or IPv6 address (a byte picks the family).
    pub fn ip(&mut self) -> Option<IpAddr> {
        if self.u8() & 1 == 0 {
            let b: [u8; 4] = self.take(4)?.try_into().ok()?;
            Some(Ipv4Addr::from(b).into())
        } else {
            let b: [u8; 16] = self.take(16)?.try_into().ok()?;
            Some(Ipv6Addr::from(b).into())
        }
    }

    /// A network: an address and a prefix length that fits it.
    pub fn net(&mut self) -> Option<IpNet> {
        let len = self.u8();
        let ip = self.ip()?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        IpNet::new(ip, len % (max + 1)).ok()
    }

    /// What is left.
    pub fn rest(&self) -> &'a [u8] {
        self.0
    }
}

/// SOCKS5 greeting, request and address (and a parked request's second stage, which is one):
/// consumed bytes fit, prefixes ask for more, and an address read back from
/// [`socks5::emit_address`] is the bytes it was read from.
pub fn socks5(data: &[u8]) {
    if let Ok(Some(n)) = socks5::parse_greeting(data) {
        assert!(n <= data.len() && n == 2 + usize::from(data[1]));
        for cut in 0..n {
            assert_eq!(socks5::parse_greeting(&data[..cut]), Ok(None), "cut {cut}");
        }
    }
    if let Ok(Some((target, n))) = socks5::parse_request(data) {
        assert!(n <= data.len());
        assert_eq!(emitted(&target), data[3..n]);
        for cut in 0..n {
            assert_eq!(socks5::parse_request(&data[..cut]), Ok(None), "cut {cut}");
        }
    }
    if let Ok(Some((target, n))) = socks5::parse_address(data) {
        assert_eq!(emitted(&target), data[..n]);
        for cut in 0..n {
            assert_eq!(socks5::parse_address(&data[..cut]), Ok(None), "cut {cut}");
        }
    }
    // A parked request's second stage is the same address format, never parking again, and
    // what follows it is the payload, byte for byte.
    if let Ok(Some((target, n))) = crate::park::parse_second_stage(data) {
        assert!(!crate::park::is_park(&target));
        let again = crate::park::second_stage(&target, &data[n..]).expect("a parsed target");
        assert_eq!(again, data);
    }
}

fn emitted(target: &TargetAddr) -> Vec<u8> {
    let mut out = Vec::new();
    socks5::emit_address(target, &mut out).expect("a parsed address can be emitted");
    out
}

/// Control frames: a decoded message encodes and decodes to itself, a frame's prefixes ask for
/// more, and the download trailer reads the same however the stream is split.
pub fn control(data: &[u8]) {
    control_frame::<ControlRequest>(data);
    control_frame::<ControlResponse>(data);
    if let Some(end) = SourceEnd::parse(data) {
        assert_eq!(end.emit()[..], data[..]);
    }
    // The same bytes, whole and cut where the first byte says, give one verdict.
    let mut whole = SourceTail::default();
    whole.push(data);
    let mut parts = SourceTail::default();
    let step = usize::from(data.first().copied().unwrap_or(1).max(1));
    for part in data.chunks(step) {
        parts.push(part);
    }
    assert_eq!(whole.finish(), parts.finish());
}

fn control_frame<T>(data: &[u8])
where
    T: serde::Serialize + for<'de> serde::Deserialize<'de> + PartialEq + std::fmt::Debug,
{
    let Ok(Some((msg, n))) = control::decode::<T>(data) else {
        return;
    };
    assert!(n <= data.len() && n <= 4 + control::MAX_FRAME);
    let frame = control::encode(&msg);
    let again = control::decode::<T>(&frame).expect("an encoded frame decodes");
    assert_eq!(again, Some((msg, frame.len())));
    for cut in (0..n.min(64)).chain([n - 1]) {
        assert!(
            matches!(control::decode::<T>(&data[..cut]), Ok(None)),
            "cut {cut}"
        );
    }
}

/// SIP022's first chunk: what is accepted is in bounds and agrees with the SOCKS5 address
/// parser, and every shorter cut of an accepted header is a split.
pub fn sip022(data: &[u8]) {
    let Ok(h) = sip022::parse_first_chunk(data) else {
        return;
    };
    assert!(h.padding <= sip022::MAX_PADDING && h.payload_at <= data.len());
    assert!(h.padding > 0 || h.payload_at < data.len());
    let (target, used) = socks5::parse_address(data).unwrap().unwrap();
    assert_eq!(target, h.target);
    assert_eq!(h.payload_at, used + 2 + h.padding);
    for cut in 0..h.payload_at {
        assert!(
            matches!(
                sip022::parse_first_chunk(&data[..cut]),
                Err(sip022::HeaderError::Split(_))
            ),
            "cut {cut}"
        );
    }
}

/// The destination policy against [`destination_reference`]: an address, up to three allowed
/// ranges, the host's own addresses, and whether the host can tell.
pub fn destination_policy(data: &[u8]) {
    let mut b = Bytes(data);
    let Some(ip) = b.ip() else {
        return;
    };
    let allow: Vec<IpNet> = (0..b.u8() % 4).filter_map(|_| b.net()).collect();
    let can_tell = b.u8() != 0xff;
    let own: Vec<IpAddr> = std::iter::from_fn(|| b.ip()).take(4).collect();
    let is_own = |a: IpAddr| can_tell.then(|| own.contains(&a));
    let policy = DestinationPolicy {
        allow: allow.clone(),
    };
    let got = policy.check(ip, is_own).map_err(|r| (r.reason, r.inside));
    let want = destination_reference::check(ip, &allow, is_own);
    assert_eq!(
        got, want,
        "{ip} allow {allow:?} own {own:?} can tell {can_tell}"
    );
}

/// Bidirectional-text controls: shown raw they reorder what a log reader sees.
const BIDI: &[char] = &[
    '\u{061c}', '\u{200e}', '\u{200f}', '\u{202a}', '\u{202b}', '\u{202c}', '\u{202d}', '\u{202e}',
    '\u{2066}', '\u{2067}', '\u{2068}', '\u{2069}',
];

/// A peer's string in a log line: one line, no raw control or bidi characters, bounded length.
pub fn logsafe(data: &[u8]) {
    let s = String::from_utf8_lossy(data);
    let shown = logsafe::escaped(&s).to_string();
    assert!(
        !shown.chars().any(|c| c.is_control() || BIDI.contains(&c)),
        "{shown:?}"
    );
    // `\u{10ffff}` is the longest escape: ten characters for one.
    assert!(shown.chars().count() <= logsafe::MAX_SHOWN * 10 + 32);
    let mut limiter = logsafe::LogLimiter::new(Duration::from_secs(60), 4, 8);
    for (i, key) in data.iter().enumerate() {
        let _ = limiter.allow(&(key % 16), Duration::from_millis(i as u64 * 700));
    }
}
