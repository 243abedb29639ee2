//! The tunnel's keys.
//!
//! Each end makes its own X25519 key pair at start (never written anywhere); the gateway sends
//! its public key to the relay inside an authenticated SS2022 control stream, and the relay
//! answers with its own (see `braid_proto::control::ControlRequest::Tunnel`), so pairing needs
//! nothing beyond the pre-shared key. WireGuard's optional pre-shared key is derived from the
//! SS2022 key as well, binding every tunnel handshake to it: a relay key learnt some other way is
//! not enough to complete one.

use base64::Engine as _;
use boringtun::x25519::{PublicKey, StaticSecret};
use sha2::{Digest, Sha256};

use crate::config::SsKey;

/// A fresh key pair from the system's random source.
pub fn generate() -> std::io::Result<(StaticSecret, PublicKey)> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| std::io::Error::other(e.to_string()))?;
    let secret = StaticSecret::from(bytes);
    let public = PublicKey::from(&secret);
    Ok((secret, public))
}

/// A public key as it travels in control messages.
pub fn encode(key: &PublicKey) -> String {
    base64::engine::general_purpose::STANDARD.encode(key.as_bytes())
}

/// A public key from a control message; `None` unless it is base64 of exactly 32 bytes.
pub fn decode(text: &str) -> Option<PublicKey> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .ok()?;
    let arr: [u8; 32] = bytes.try_into().ok()?;
    Some(PublicKey::from(arr))
}

/// WireGuard's pre-shared key for every tunnel of this SS2022 key:
/// SHA-256("braid tunnel psk v1" ‖ key).
pub fn preshared(key: &SsKey) -> [u8; 32] {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(key.as_base64())
        .unwrap_or_default();
    let mut h = Sha256::new();
    h.update(b"braid tunnel psk v1");
    h.update(&raw);
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_keys_round_trip_and_bad_ones_are_refused() {
        let (_, public) = generate().unwrap();
        assert_eq!(
            decode(&encode(&public)).map(|k| *k.as_bytes()),
            Some(*public.as_bytes())
        );
        assert!(decode("AAAA").is_none());
        assert!(decode("not base64!").is_none());
    }

    #[test]
    fn two_pairs_differ() {
        assert_ne!(
            generate().unwrap().1.as_bytes(),
            generate().unwrap().1.as_bytes()
        );
    }
}
