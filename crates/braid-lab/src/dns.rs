//! A minimal DNS client for the lab: one `A` (or `AAAA`) query over UDP, timed, its answers
//! read back; so the tests and the benchmark need no `dig`. The server is a real one (dnsmasq
//! from Debian, started by [`crate::harness::Harness::start_dns`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::net::UdpSocket;

/// Record types braid asks for.
const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;

/// One query as bytes: id, recursion desired, one question for `name` of `qtype`, class IN.
fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut q = Vec::with_capacity(32 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&0x0100u16.to_be_bytes());
    q.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len().min(63) as u8);
        q.extend_from_slice(&label.as_bytes()[..label.len().min(63)]);
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    q
}

/// A parsed answer: the response code and the addresses in its answer section.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Answer {
    id: u16,
    rcode: u8,
    addrs: Vec<IpAddr>,
}

/// Skips a (possibly compressed) name at `pos`; returns the position after it.
fn skip_name(m: &[u8], mut pos: usize) -> Option<usize> {
    loop {
        let len = *m.get(pos)?;
        match len {
            0 => return Some(pos + 1),
            l if l & 0xc0 == 0xc0 => return Some(pos + 2),
            l => pos += 1 + l as usize,
        }
    }
}

fn u16_at(m: &[u8], pos: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*m.get(pos)?, *m.get(pos + 1)?]))
}

/// Reads a response; `None` for anything that is not a well-formed one.
fn parse(m: &[u8]) -> Option<Answer> {
    let id = u16_at(m, 0)?;
    let flags = u16_at(m, 2)?;
    if flags & 0x8000 == 0 {
        return None;
    }
    let (qd, an) = (u16_at(m, 4)?, u16_at(m, 6)?);
    let mut pos = 12;
    for _ in 0..qd {
        pos = skip_name(m, pos)? + 4;
    }
    let mut addrs = Vec::new();
    for _ in 0..an {
        pos = skip_name(m, pos)?;
        let (rtype, rdlen) = (u16_at(m, pos)?, u16_at(m, pos + 8)? as usize);
        let data = m.get(pos + 10..pos + 10 + rdlen)?;
        match (rtype, data.len()) {
            (TYPE_A, 4) => addrs.push(IpAddr::V4(Ipv4Addr::new(
                data[0], data[1], data[2], data[3],
            ))),
            (TYPE_AAAA, 16) => {
                let b: [u8; 16] = data.try_into().ok()?;
                addrs.push(IpAddr::V6(Ipv6Addr::from(b)));
            }
            _ => {}
        }
        pos += 10 + rdlen;
    }
    Some(Answer {
        id,
        rcode: (flags & 0x000f) as u8,
        addrs,
    })
}

/// What `count` lookups found.
#[derive(Debug, Clone, Serialize)]
pub struct Lookups {
    /// The addresses of the last answer.
    pub answers: Vec<IpAddr>,
    /// Each lookup's time in ms (`None`: no answer within the timeout).
    pub ms: Vec<Option<f64>>,
    /// Median of the answered ones.
    pub median_ms: Option<f64>,
    /// Lookups without an answer.
    pub failures: usize,
}

/// Looks `name` up `count` times at `server` (`AAAA` when `v6`), each from its own source port
/// as a stub resolver does, each waiting up to `timeout`.
pub async fn lookup(
    server: SocketAddr,
    name: &str,
    v6: bool,
    count: usize,
    timeout: Duration,
) -> std::io::Result<Lookups> {
    let qtype = if v6 { TYPE_AAAA } else { TYPE_A };
    let mut out = Lookups {
        answers: Vec::new(),
        ms: Vec::new(),
        median_ms: None,
        failures: 0,
    };
    let bind: SocketAddr = if server.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0))
    };
    let mut buf = vec![0u8; 4096];
    // Every socket stays open until the last lookup: a closed one's port may be handed out
    // again, and two lookups from one port are one session to the gateway (a CI run saw 19
    // sessions for 20 lookups).
    let mut held = Vec::with_capacity(count);
    for i in 0..count {
        let socket = UdpSocket::bind(bind).await?;
        socket.connect(server).await?;
        let id = (i as u16).wrapping_mul(7919).wrapping_add(1);
        let start = Instant::now();
        socket.send(&query(id, name, qtype)).await?;
        let got = tokio::time::timeout(timeout, async {
            loop {
                let n = socket.recv(&mut buf).await?;
                if let Some(a) = parse(&buf[..n]).filter(|a| a.id == id) {
                    return Ok::<_, std::io::Error>(a);
                }
            }
        })
        .await;
        match got {
            Ok(Ok(a)) if a.rcode == 0 => {
                out.ms.push(Some(start.elapsed().as_secs_f64() * 1000.0));
                out.answers = a.addrs;
            }
            Ok(Err(e)) => return Err(e),
            _ => {
                out.ms.push(None);
                out.failures += 1;
            }
        }
        held.push(socket);
    }
    drop(held);
    let mut ok: Vec<f64> = out.ms.iter().flatten().copied().collect();
    ok.sort_by(|a, b| a.total_cmp(b));
    out.median_ms = (!ok.is_empty()).then(|| ok[ok.len() / 2]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_is_well_formed_and_an_answer_with_compression_parses() {
        let q = query(0x1234, "braid.lab", TYPE_A);
        assert_eq!(&q[..4], &[0x12, 0x34, 0x01, 0x00]);
        assert_eq!(&q[12..], b"\x05braid\x03lab\x00\x00\x01\x00\x01");
        // The query turned into an answer: QR set, one A record via a pointer to the name.
        let mut a = q.clone();
        a[2] = 0x81;
        a[3] = 0x80;
        a[7] = 1;
        a.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 30, 0, 99]);
        assert_eq!(
            parse(&a),
            Some(Answer {
                id: 0x1234,
                rcode: 0,
                addrs: vec!["10.30.0.99".parse().unwrap()]
            })
        );
        assert_eq!(parse(&q), None, "a query is no answer");
        assert_eq!(parse(&a[..a.len() - 2]), None, "cut short");
    }
}
