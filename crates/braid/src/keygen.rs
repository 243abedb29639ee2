//! `braid keygen`: a fresh pre-shared key.

use base64::Engine;

use crate::config::Method;

/// A random key of the method's length, base64 encoded, from the OS CSPRNG.
pub fn generate(method: Method) -> Result<String, getrandom::Error> {
    let mut key = vec![0u8; method.key_len()];
    getrandom::fill(&mut key)?;
    Ok(base64::engine::general_purpose::STANDARD.encode(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_the_method_length_and_differ() {
        let a = generate(Method::Aes256Gcm).unwrap();
        let b = generate(Method::Aes256Gcm).unwrap();
        assert_ne!(a, b);
        assert_eq!(
            base64::engine::general_purpose::STANDARD
                .decode(&a)
                .unwrap()
                .len(),
            32
        );
        assert_eq!(
            base64::engine::general_purpose::STANDARD
                .decode(generate(Method::Aes128Gcm).unwrap())
                .unwrap()
                .len(),
            16
        );
    }
}
