//! The rules of SIP022 (Shadowsocks 2022) for a TCP request's variable-length header, which the
//! relay enforces itself.
//!
//! ```text
//!  salt │ AEAD(type 0, timestamp, length L) │ AEAD(first chunk, L bytes) │ AEAD(len) │ AEAD(data) …
//!                                               ├─ SOCKS5 address (ATYP, address, port)
//!                                               ├─ padding length (u16, 0..=900)
//!                                               ├─ padding
//!                                               └─ initial payload (the rest of the chunk)
//! ```
//!
//! SIP022 requires the whole variable-length header in that first chunk, padding of at most 900
//! bytes, and either a payload or non-zero padding in it. The shadowsocks crate (1.25) reads the
//! header across chunks and takes up to 65535 bytes of padding, so a server built on it waits
//! for more data where the spec says to reject, and behaves differently from every other
//! implementation: a fingerprint for active probes. This parser takes the first chunk's bytes,
//! decrypted, and answers the rules.

use crate::socks5::{self, Socks5Error, TargetAddr};

/// Most padding SIP022 allows.
pub const MAX_PADDING: usize = 900;

/// The variable-length header of a request, parsed from the first chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHeader {
    /// Where the client wants to go.
    pub target: TargetAddr,
    /// Bytes of padding (already skipped).
    pub padding: usize,
    /// Where the initial payload starts in the chunk (it runs to the chunk's end).
    pub payload_at: usize,
}

/// Why a request's first chunk breaks SIP022.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// The chunk ends inside the header: the client split it across chunks.
    #[error("the request header is split across chunks (the first chunk ends inside the {0}); SIP022 requires it whole in the first chunk")]
    Split(&'static str),
    /// Padding longer than [`MAX_PADDING`].
    #[error("the request declares {0} bytes of padding; SIP022 allows at most {MAX_PADDING}")]
    Padding(usize),
    /// Neither padding nor payload.
    #[error("the request has neither payload nor padding in its first chunk; SIP022 requires one of them")]
    Bare,
    /// The address is not a SOCKS5 address.
    #[error("the request's address is invalid: {0}")]
    Address(#[from] Socks5Error),
}

/// Parses the decrypted first chunk of a request.
pub fn parse_first_chunk(chunk: &[u8]) -> Result<RequestHeader, HeaderError> {
    let (target, used) = socks5::parse_address(chunk)?.ok_or(HeaderError::Split("address"))?;
    let len = chunk
        .get(used..used + 2)
        .ok_or(HeaderError::Split("padding length"))?;
    let padding = usize::from(u16::from_be_bytes([len[0], len[1]]));
    if padding > MAX_PADDING {
        return Err(HeaderError::Padding(padding));
    }
    let payload_at = used + 2 + padding;
    if payload_at > chunk.len() {
        return Err(HeaderError::Split("padding"));
    }
    if padding == 0 && payload_at == chunk.len() {
        return Err(HeaderError::Bare);
    }
    Ok(RequestHeader {
        target,
        padding,
        payload_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ATYP 1, 10.30.0.2:80, then `padding` and `payload`.
    fn chunk(padding: u16, pad_bytes: usize, payload: &[u8]) -> Vec<u8> {
        let mut c = vec![1, 10, 30, 0, 2, 0, 80];
        c.extend_from_slice(&padding.to_be_bytes());
        c.extend(std::iter::repeat_n(0u8, pad_bytes));
        c.extend_from_slice(payload);
        c
    }

    #[test]
    fn whole_header_with_payload_or_padding_is_accepted() {
        let h = parse_first_chunk(&chunk(0, 0, b"GET /")).unwrap();
        assert_eq!(h.target, TargetAddr::Ip("10.30.0.2:80".parse().unwrap()));
        assert_eq!(h.payload_at, 9);
        let h = parse_first_chunk(&chunk(900, 900, b"")).unwrap();
        assert_eq!((h.padding, h.payload_at), (900, 909));
    }

    #[test]
    fn header_cut_anywhere_is_split() {
        let whole = chunk(16, 16, b"x");
        for cut in 0..whole.len() - 1 {
            let e = parse_first_chunk(&whole[..cut]).unwrap_err();
            assert!(matches!(e, HeaderError::Split(_)), "cut at {cut}: {e}");
        }
    }

    #[test]
    fn padding_over_900_is_refused_before_it_is_read() {
        assert_eq!(
            parse_first_chunk(&chunk(901, 901, b"x")),
            Err(HeaderError::Padding(901))
        );
        assert_eq!(
            parse_first_chunk(&chunk(5000, 0, b"")),
            Err(HeaderError::Padding(5000))
        );
    }

    #[test]
    fn no_padding_and_no_payload_is_bare() {
        assert_eq!(parse_first_chunk(&chunk(0, 0, b"")), Err(HeaderError::Bare));
    }

    #[test]
    fn bad_address_type_is_an_address_error() {
        assert!(matches!(
            parse_first_chunk(&[9, 1, 2, 3]),
            Err(HeaderError::Address(Socks5Error::BadAddressType(9)))
        ));
    }
}
