//! Generation and verification of bearer secrets (API keys, admin tokens, key secrets).
//!
//! API keys and admin tokens are 192-bit random values, so an unsalted SHA-256 is a safe
//! at-rest form: nothing about them can be guessed from the hash, and a lookup by hash is a
//! plain map access. Comparisons of presented secrets are constant-time.

use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A new random secret: `prefix` followed by 48 lowercase hex digits.
pub fn generate(prefix: &str) -> String {
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", hex::encode(bytes))
}

/// Hex SHA-256 of a secret, the only form in which keys and tokens are stored.
pub fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Constant-time equality of two byte strings (length may leak, content does not).
pub fn eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// The leading characters shown in listings so people can tell keys apart.
pub fn display_prefix(secret: &str) -> String {
    secret.chars().take(10).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_are_distinct_and_prefixed() {
        let a = generate("sk_");
        let b = generate("sk_");
        assert!(a.starts_with("sk_") && a.len() == 51);
        assert_ne!(a, b);
        assert_eq!(hash(&a).len(), 64);
        assert_ne!(hash(&a), hash(&b));
    }

    #[test]
    fn eq_is_exact() {
        assert!(eq(b"abc", b"abc"));
        assert!(!eq(b"abc", b"abd"));
        assert!(!eq(b"abc", b"ab"));
    }
}
