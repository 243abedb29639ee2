//! A parked request: how the gateway's warm pool gets a relay connection bonded *before* a LAN
//! connection needs it, with `braid server` as the relay.
//!
//! Why it exists: the relay's kernel accepts a subflow join (MP_JOIN) only on a connection that
//! is fully established on its side (`mptcp_can_accept_new_subflow()` requires
//! `mptcp_is_fully_established()`, net/mptcp/subflow.c), and a server-side MPTCP connection
//! becomes fully established only when data arrives from the client. An idle pooled connection
//! that has sent nothing rides one uplink until it is used. So a pooled connection sends a
//! request at once, to the reserved target [`PARK_HOST`]`:`[`PARK_PORT`]; the relay, instead of
//! connecting anywhere, waits for the *second stage*, and the other uplinks' subflows join
//! meanwhile. When a LAN connection takes the pooled connection, the gateway writes the real
//! target and the LAN client's first bytes in one chunk:
//!
//! ```text
//!  gateway (pool)  ─► SS2022 request header, target braid-park.invalid:1, padding only
//!  relay           ─  holds it as a pending handshake (same timeout, same caps)
//!  kernel          ─  the other uplinks' MP_JOINs are accepted now
//!  gateway (taken) ─► second stage: ATYP ADDR PORT, then the LAN client's bytes
//!  relay           ─► connects to that target and relays as for any request
//! ```
//!
//! The second stage must arrive within the relay's handshake timeout counted from the connect,
//! exactly as an unparked request must, so a parked connection costs the relay nothing an idle
//! one did not. Only a relay whose control report says it takes parked requests
//! (`HandshakeLimits::parks`) gets them: a stock server would try to resolve the name, fail and
//! close the stream. The port is the second stage's format version.

use crate::socks5::{self, Socks5Error, TargetAddr};

/// Host name that marks a parked request (`.invalid` never resolves).
pub const PARK_HOST: &str = "braid-park.invalid";
/// Port of a parked request: the version of the second stage's format.
pub const PARK_PORT: u16 = 1;
/// The longest second-stage address: a SOCKS5 domain address (type, length, 255 bytes, port).
pub const MAX_SECOND_STAGE: usize = 1 + 1 + 255 + 2;

/// Whether `target` is a parked request.
pub fn is_park(target: &TargetAddr) -> bool {
    matches!(target, TargetAddr::Domain(h, p) if h == PARK_HOST && *p == PARK_PORT)
}

/// The parked request's target.
pub fn park_target() -> TargetAddr {
    TargetAddr::Domain(PARK_HOST.into(), PARK_PORT)
}

/// Why a second stage was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecondStageError {
    /// Not a SOCKS5 address.
    #[error("the second stage of a parked request is not an address: {0}")]
    Address(#[from] Socks5Error),
    /// A second stage may not park again.
    #[error("the second stage of a parked request parks again")]
    ParkedTwice,
}

/// Reads the second stage from `buf`, the stream's bytes so far: the target and how many bytes
/// it took (the rest is the LAN client's payload), `None` while more bytes are needed. A caller
/// holding [`MAX_SECOND_STAGE`] bytes always gets an answer.
pub fn parse_second_stage(buf: &[u8]) -> Result<Option<(TargetAddr, usize)>, SecondStageError> {
    match socks5::parse_address(buf)? {
        Some((t, _)) if is_park(&t) => Err(SecondStageError::ParkedTwice),
        other => Ok(other),
    }
}

/// The second stage for `target`, followed by `payload`, ready to write in one chunk.
pub fn second_stage(target: &TargetAddr, payload: &[u8]) -> Result<Vec<u8>, Socks5Error> {
    let mut out = Vec::with_capacity(MAX_SECOND_STAGE + payload.len());
    socks5::emit_address(target, &mut out)?;
    out.extend_from_slice(payload);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_stage_round_trips_with_its_payload() {
        for t in [
            TargetAddr::Ip("10.30.0.2:80".parse().unwrap()),
            TargetAddr::Ip("[2001:db8::1]:443".parse().unwrap()),
            TargetAddr::Domain("example.org".into(), 8443),
        ] {
            let bytes = second_stage(&t, b"GET /").unwrap();
            let (back, used) = parse_second_stage(&bytes).unwrap().unwrap();
            assert_eq!(back, t);
            assert_eq!(&bytes[used..], b"GET /");
        }
    }

    #[test]
    fn second_stage_waits_for_every_byte_of_the_address() {
        let bytes = second_stage(&TargetAddr::Domain("example.org".into(), 80), b"").unwrap();
        for n in 0..bytes.len() {
            assert_eq!(parse_second_stage(&bytes[..n]).unwrap(), None, "{n} bytes");
        }
    }

    #[test]
    fn bad_or_nested_second_stage_is_refused() {
        assert!(matches!(
            parse_second_stage(&[9, 1, 2]),
            Err(SecondStageError::Address(Socks5Error::BadAddressType(9)))
        ));
        let again = second_stage(&park_target(), b"").unwrap();
        assert_eq!(
            parse_second_stage(&again),
            Err(SecondStageError::ParkedTwice)
        );
    }

    proptest::proptest! {
        /// Whatever a client sends, the parser answers without panicking, never claims more
        /// bytes than it got, and always answers once it holds the longest address.
        #[test]
        fn any_bytes_get_a_bounded_answer(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400)) {
            match parse_second_stage(&bytes) {
                Ok(Some((_, used))) => proptest::prop_assert!(used <= bytes.len()),
                Ok(None) => proptest::prop_assert!(bytes.len() < MAX_SECOND_STAGE),
                Err(_) => {}
            }
        }
    }

    #[test]
    fn longest_address_fits_the_bound() {
        let long = TargetAddr::Domain("a".repeat(255), 1);
        assert_eq!(second_stage(&long, b"").unwrap().len(), MAX_SECOND_STAGE);
    }
}
