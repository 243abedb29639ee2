//! Property tests of the kernel-answer parsers: addresses and attributes built by generators
//! (decode of encode is identity, a cut message is an error or reads less, never more), and
//! arbitrary bytes through the same checks the fuzz targets run ([`super`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use proptest::collection::vec;
use proptest::prelude::*;

use crate::mptcp::info::parse_subflow_addrs;
use crate::mptcp::pm::{parse_nlas, PmAddr};

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|a| Ipv4Addr::from(a).into()),
        any::<[u8; 16]>().prop_map(|a| Ipv6Addr::from(a).into()),
    ]
}

/// An endpoint as the kernel lists it: a port of 0 and an interface index of 0 or less mean
/// "none", so they are generated as `None`.
fn pm_addr() -> impl Strategy<Value = PmAddr> {
    (
        proptest::option::of(ip()),
        proptest::option::of(any::<u8>()),
        proptest::option::of(1..=u16::MAX),
        proptest::option::of(any::<u32>()),
        proptest::option::of(1..=i32::MAX),
    )
        .prop_map(|(addr, id, port, flags, ifindex)| PmAddr {
            addr,
            id,
            port,
            flags,
            ifindex,
        })
}

proptest! {
    #[test]
    fn pm_addr_decode_of_encode_is_identity(a in pm_addr()) {
        let bytes = a.encode().0;
        prop_assert_eq!(PmAddr::decode(&bytes), Ok(a));
    }

    #[test]
    fn pm_addr_cut_inside_an_attribute_is_an_error(a in pm_addr(), cut in any::<usize>()) {
        let bytes = a.encode().0;
        prop_assume!(!bytes.is_empty());
        let cut = cut % bytes.len();
        // A cut between attributes, or in the padding after one (the kernel does not pad the
        // last), is a shorter valid list; a cut inside a header or value is an error.
        let mut whole_up_to = vec![0..=0];
        let mut at = 0;
        for (_, value) in parse_nlas(&bytes).unwrap() {
            let end = at + 4 + value.len();
            at = end.next_multiple_of(4);
            whole_up_to.push(end..=at);
        }
        let r = parse_nlas(&bytes[..cut]);
        let valid = whole_up_to.iter().any(|r| r.contains(&cut));
        prop_assert_eq!(r.is_ok(), valid, "cut {}: {:?}", cut, r);
    }

    #[test]
    fn pm_addr_any_bytes_keep_the_invariants(a in pm_addr(), data in vec(any::<u8>(), 0..200)) {
        super::pm_addr(&data);
        let mut valid = a.encode().0;
        valid.extend(&data);
        super::pm_addr(&valid);
    }

    #[test]
    fn subflow_addrs_read_back_what_was_written(
        pairs in vec((ip(), any::<u16>(), ip(), any::<u16>()), 0..6),
    ) {
        let pairs: Vec<(SocketAddr, SocketAddr)> = pairs
            .into_iter()
            .map(|(l, lp, r, rp)| (SocketAddr::new(l, lp), SocketAddr::new(r, rp)))
            .collect();
        let bytes = super::subflow_addrs(&pairs);
        prop_assert_eq!(parse_subflow_addrs(&bytes), pairs.clone());
        // A buffer the kernel cut short reads the whole records only.
        let whole = (bytes.len() - 16) / 256;
        prop_assert_eq!(parse_subflow_addrs(&bytes[..bytes.len() - 1]).len(), whole.saturating_sub(1));
    }

    #[test]
    fn mptcp_info_any_bytes_keep_the_invariants(data in vec(any::<u8>(), 0..700)) {
        super::mptcp_info(&data);
    }
}
