//! Property tests of this crate's parsers: valid messages built by generators (decode of encode
//! is identity, every prefix asks for more), and arbitrary bytes through the same checks the
//! fuzz targets run ([`super`]).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use proptest::collection::{btree_map, vec};
use proptest::prelude::*;

use crate::control::{self, ControlRequest, ControlResponse, SourceEnd, SourceTail};
use crate::control::{ConnectionReport, HandshakeLimits, ServerReport, SinkReport, Transport};
use crate::destination::DestinationPolicy;
use crate::sip022::{self, HeaderError};
use crate::socks5::{self, TargetAddr};

fn target() -> impl Strategy<Value = TargetAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>())
            .prop_map(|(a, p)| TargetAddr::Ip(SocketAddr::new(Ipv4Addr::from(a).into(), p))),
        (any::<[u8; 16]>(), any::<u16>())
            .prop_map(|(a, p)| TargetAddr::Ip(SocketAddr::new(Ipv6Addr::from(a).into(), p))),
        // Any text of 1 to 255 bytes: names are not checked for DNS syntax here.
        ("\\PC{1,80}", any::<u16>())
            .prop_filter("fits the length byte", |(n, _)| n.len() <= 255)
            .prop_map(|(n, p)| TargetAddr::Domain(n, p)),
    ]
}

fn emit(t: &TargetAddr) -> Vec<u8> {
    let mut out = Vec::new();
    socks5::emit_address(t, &mut out).unwrap();
    out
}

fn request() -> impl Strategy<Value = ControlRequest> {
    prop_oneof![
        ".*".prop_map(|client_version| ControlRequest::Hello { client_version }),
        any::<u64>().prop_map(|seq| ControlRequest::Ping { seq }),
        any::<u32>().prop_map(|secs| ControlRequest::Source { secs }),
        any::<u32>().prop_map(|secs| ControlRequest::Sink { secs }),
    ]
}

fn transport() -> impl Strategy<Value = Transport> {
    prop_oneof![
        Just(Transport::Mptcp),
        Just(Transport::Fallback),
        Just(Transport::Tcp),
        Just(Transport::Unknown),
    ]
}

fn report() -> impl Strategy<Value = ServerReport> {
    let connection = (
        ".*",
        transport(),
        any::<u32>(),
        any::<bool>(),
        vec(".*", 0..3),
    )
        .prop_map(
            |(peer, transport, subflows, tfo, subflow_peers)| ConnectionReport {
                peer,
                transport,
                subflows,
                tfo,
                subflow_peers,
            },
        );
    let sysctls: BoxedStrategy<BTreeMap<String, String>> = btree_map(".*", ".*", 0..4).boxed();
    let handshake = proptest::option::of(any::<(u64, u64, bool)>().prop_map(
        |(timeout_ms, max_per_source, parks)| HandshakeLimits {
            timeout_ms,
            max_per_source,
            parks,
        },
    ));
    let joins = proptest::option::of(any::<u32>());
    (
        ".*",
        ".*",
        connection,
        sysctls,
        any::<u64>(),
        handshake,
        joins,
    )
        .prop_map(
            |(version, kernel, connection, sysctls, time_unix_ms, handshake, joins)| ServerReport {
                version,
                kernel,
                connection,
                sysctls,
                time_unix_ms,
                handshake,
                joins,
            },
        )
}

fn response() -> impl Strategy<Value = ControlResponse> {
    prop_oneof![
        report().prop_map(ControlResponse::Report),
        any::<u64>().prop_map(|seq| ControlResponse::Pong { seq }),
        any::<u32>().prop_map(|secs| ControlResponse::Accepted { secs }),
        any::<[u64; 4]>().prop_map(|[bytes, elapsed_ms, steady_bytes, steady_ms]| {
            ControlResponse::Received(SinkReport {
                bytes,
                elapsed_ms,
                steady_bytes,
                steady_ms,
            })
        }),
        ".*".prop_map(|message| ControlResponse::Error { message }),
    ]
}

/// Prefixes at the policy's borders.
const PREFIXES: &[&str] = &[
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/11",
    "100.64.0.0/9",
    "224.0.0.0/3",
    "0.0.0.0/7",
    "198.51.100.0/24",
    "::/96",
    "::/120",
    "::ffff:0:0/96",
    "64:ff9b::/96",
    "64:ff9b:1::/47",
    "2002::/16",
    "2001::/31",
    "fc00::/6",
    "fe80::/9",
    "ff00::/8",
];

/// An address in one of [`PREFIXES`], the rest of its bits random.
fn in_prefix() -> impl Strategy<Value = IpAddr> {
    (0..PREFIXES.len(), any::<u128>()).prop_map(|(i, r)| {
        let net: ipnet::IpNet = PREFIXES[i].parse().unwrap();
        let host = |bits: u32| if bits == 0 { 0 } else { r >> (128 - bits) };
        match net {
            ipnet::IpNet::V4(n) => {
                let h = host(32 - u32::from(n.prefix_len())) as u32;
                IpAddr::V4((u32::from(n.network()) | h).into())
            }
            ipnet::IpNet::V6(n) => {
                let h = host(128 - u32::from(n.prefix_len()));
                IpAddr::V6((u128::from(n.network()) | h).into())
            }
        }
    })
}

/// An IPv6 address that carries `v4` (stored as is or inverted) where one of the IPv4-carrying
/// forms puts it, with random bits elsewhere; and the IPv4 address it carries.
fn carrying() -> impl Strategy<Value = (IpAddr, Ipv4Addr)> {
    const FORMS: &[(u128, u32, u32)] = &[
        // (prefix, prefix length, bit where the IPv4 address starts)
        (0, 96, 96),
        (0x0064_ff9b << 96, 96, 96),
        (0x2002 << 112, 16, 16),
        (0x2001 << 112, 32, 96),
    ];
    (0..FORMS.len(), in_prefix(), any::<bool>(), any::<u128>()).prop_map(|(i, v4, invert, r)| {
        let (prefix, len, at) = FORMS[i];
        let v4 = match v4 {
            IpAddr::V4(a) => a,
            IpAddr::V6(a) => Ipv4Addr::from(u128::from(a) as u32),
        };
        let bits = if invert {
            !u32::from(v4)
        } else {
            u32::from(v4)
        };
        let shift = 96 - at;
        let field = u128::from(u32::MAX) << shift;
        let rest = (r >> len) & !field;
        let ip = Ipv6Addr::from(prefix | rest | (u128::from(bits) << shift));
        (ip.into(), v4)
    })
}

/// Addresses near the policy's borders, IPv4 addresses carried inside IPv6 ones, or any
/// address at all; with an IPv4 address that may be inside it.
fn interesting_ip() -> impl Strategy<Value = (IpAddr, Option<Ipv4Addr>)> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|a| (IpAddr::from(a), None)),
        any::<[u8; 16]>().prop_map(|a| (IpAddr::from(a), None)),
        in_prefix().prop_map(|a| (a, None)),
        carrying().prop_map(|(a, v4)| (a, Some(v4))),
    ]
}

proptest! {
    #[test]
    fn socks5_address_emitted_then_parsed_is_itself(t in target()) {
        let bytes = emit(&t);
        prop_assert_eq!(socks5::parse_address(&bytes), Ok(Some((t, bytes.len()))));
    }

    #[test]
    fn socks5_request_every_prefix_asks_for_more(t in target(), tail in vec(any::<u8>(), 0..8)) {
        let mut req = vec![5, 1, 0];
        req.extend(emit(&t));
        let n = req.len();
        for cut in 0..n {
            prop_assert_eq!(socks5::parse_request(&req[..cut]), Ok(None));
        }
        req.extend(tail);
        prop_assert_eq!(socks5::parse_request(&req), Ok(Some((t, n))));
    }

    #[test]
    fn socks5_greeting_every_prefix_asks_for_more(mut methods in vec(any::<u8>(), 0..20), at in any::<usize>()) {
        methods.insert(at % (methods.len() + 1), socks5::METHOD_NO_AUTH);
        let mut g = vec![5, methods.len() as u8];
        g.extend(&methods);
        for cut in 0..g.len() {
            prop_assert_eq!(socks5::parse_greeting(&g[..cut]), Ok(None));
        }
        prop_assert_eq!(socks5::parse_greeting(&g), Ok(Some(g.len())));
    }

    #[test]
    fn socks5_any_bytes_keep_the_invariants(head in target(), data in vec(any::<u8>(), 0..300)) {
        super::socks5(&data);
        let mut valid = vec![5, 1, 0];
        valid.extend(emit(&head));
        valid.extend(&data);
        super::socks5(&valid);
    }

    #[test]
    fn control_request_decode_of_encode_is_identity(m in request(), junk in vec(any::<u8>(), 0..16)) {
        let mut f = control::encode(&m);
        let n = f.len();
        for cut in 0..n {
            prop_assert!(control::decode::<ControlRequest>(&f[..cut]).unwrap().is_none());
        }
        f.extend(junk);
        prop_assert_eq!(control::decode::<ControlRequest>(&f).unwrap(), Some((m, n)));
    }

    #[test]
    fn control_response_decode_of_encode_is_identity(m in response()) {
        let f = control::encode(&m);
        for cut in 0..f.len() {
            prop_assert!(control::decode::<ControlResponse>(&f[..cut]).unwrap().is_none());
        }
        prop_assert_eq!(control::decode::<ControlResponse>(&f).unwrap(), Some((m, f.len())));
    }

    #[test]
    fn control_any_bytes_keep_the_invariants(m in request(), data in vec(any::<u8>(), 0..200)) {
        super::control(&data);
        let mut f = control::encode(&m);
        f.extend(&data);
        super::control(&f);
    }

    #[test]
    fn source_tail_split_anywhere_counts_the_payload(
        payload in vec(any::<u8>(), 0..300),
        cuts in vec(any::<usize>(), 0..6),
    ) {
        let mut all = payload.clone();
        all.extend(SourceEnd { bytes: payload.len() as u64 }.emit());
        let mut at: Vec<usize> = cuts.iter().map(|c| c % (all.len() + 1)).collect();
        at.extend([0, all.len()]);
        at.sort_unstable();
        let mut t = SourceTail::default();
        for w in at.windows(2) {
            t.push(&all[w[0]..w[1]]);
        }
        prop_assert_eq!(t.finish(), Ok(payload.len() as u64));
    }

    #[test]
    fn sip022_whole_header_parses_and_every_cut_is_split(
        t in target(),
        padding in 0usize..=sip022::MAX_PADDING,
        payload in vec(any::<u8>(), 0..40),
    ) {
        prop_assume!(padding > 0 || !payload.is_empty());
        let mut chunk = emit(&t);
        chunk.extend((padding as u16).to_be_bytes());
        chunk.extend(std::iter::repeat_n(0u8, padding));
        let payload_at = chunk.len();
        chunk.extend(&payload);
        let h = sip022::parse_first_chunk(&chunk).unwrap();
        prop_assert_eq!((h.target, h.padding, h.payload_at), (t, padding, payload_at));
        for cut in 0..payload_at {
            prop_assert!(matches!(sip022::parse_first_chunk(&chunk[..cut]), Err(HeaderError::Split(_))));
        }
        super::sip022(&chunk);
    }

    #[test]
    fn sip022_any_bytes_keep_the_invariants(data in vec(any::<u8>(), 0..1000)) {
        super::sip022(&data);
    }

    #[test]
    fn destination_policy_agrees_with_the_reference(
        (ip, inside) in interesting_ip(),
        allow in vec((interesting_ip(), 0u8..=128), 0..3),
        own in 0u8..4,
    ) {
        let allow: Vec<ipnet::IpNet> = allow
            .into_iter()
            .filter_map(|((a, _), len)| ipnet::IpNet::new(a, if a.is_ipv4() { len % 33 } else { len }).ok())
            .collect();
        // The host cannot tell, owns nothing of it, owns the address, or the IPv4 one inside.
        let own: Option<Vec<IpAddr>> = match own {
            0 => None,
            1 => Some(vec![]),
            2 => Some(vec![ip]),
            _ => Some(inside.map(IpAddr::V4).into_iter().collect()),
        };
        let is_own = |a: IpAddr| own.as_ref().map(|o| o.contains(&a));
        let got = DestinationPolicy { allow: allow.clone() }
            .check(ip, is_own)
            .map_err(|r| (r.reason, r.inside));
        prop_assert_eq!(got, super::destination_reference::check(ip, &allow, is_own));
    }

    #[test]
    fn destination_policy_any_bytes_agree_with_the_reference(data in vec(any::<u8>(), 0..80)) {
        super::destination_policy(&data);
    }

    #[test]
    fn logsafe_any_text_is_one_safe_line(s in "\\PC*|.*", bytes in vec(any::<u8>(), 0..600)) {
        super::logsafe(s.as_bytes());
        super::logsafe(&bytes);
    }
}
