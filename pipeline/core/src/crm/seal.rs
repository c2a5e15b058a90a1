//! Credentials at rest: sealed with XChaCha20-Poly1305 under the server's secret key, so
//! the log, its replicas and the archive never hold a CRM token in the clear.
//!
//! A sealed value is base64 of a random 24-byte nonce followed by the ciphertext and its
//! tag; the nonce is large enough to be drawn at random for every seal.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum SealError {
    #[error("the secret key must be 32 bytes, as 64 hex digits or base64")]
    BadKey,
    #[error("a sealed value is not valid base64 or is too short")]
    Malformed,
    #[error("a sealed value does not open with this secret key")]
    WrongKey,
}

/// The server's key for sealing credentials.
#[derive(Clone)]
pub struct SealKey([u8; 32]);

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealKey(..)")
    }
}

impl SealKey {
    /// A new random key.
    pub fn generate() -> SealKey {
        let mut k = [0u8; 32];
        rand::rng().fill_bytes(&mut k);
        SealKey(k)
    }

    /// Reads a key written as 64 hex digits or as base64 of 32 bytes.
    pub fn parse(text: &str) -> Result<SealKey, SealError> {
        let t = text.trim();
        let bytes = if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode(t).map_err(|_| SealError::BadKey)?
        } else {
            STANDARD.decode(t).map_err(|_| SealError::BadKey)?
        };
        let k: [u8; 32] = bytes.try_into().map_err(|_| SealError::BadKey)?;
        Ok(SealKey(k))
    }

    /// The key as 64 hex digits (what a key file holds).
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn seal(&self, plain: &str) -> String {
        let cipher = XChaCha20Poly1305::new((&self.0).into());
        let mut nonce = [0u8; 24];
        rand::rng().fill_bytes(&mut nonce);
        let ct = cipher
            .encrypt(XNonce::from_slice(&nonce), plain.as_bytes())
            .expect("sealing in memory cannot fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        STANDARD.encode(out)
    }

    pub fn open(&self, sealed: &str) -> Result<String, SealError> {
        let raw = STANDARD.decode(sealed).map_err(|_| SealError::Malformed)?;
        if raw.len() < 24 + 16 {
            return Err(SealError::Malformed);
        }
        let (nonce, ct) = raw.split_at(24);
        let cipher = XChaCha20Poly1305::new((&self.0).into());
        let plain = cipher
            .decrypt(XNonce::from_slice(nonce), ct)
            .map_err(|_| SealError::WrongKey)?;
        String::from_utf8(plain).map_err(|_| SealError::Malformed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_open_only_with_their_key() {
        let k = SealKey::generate();
        let s = k.seal("pat.secret-value");
        assert!(!s.contains("secret"));
        assert_eq!(k.open(&s).unwrap(), "pat.secret-value");
        assert_ne!(k.seal("x"), k.seal("x"), "every seal draws its own nonce");
        assert_eq!(SealKey::generate().open(&s), Err(SealError::WrongKey));
        assert_eq!(k.open("AAAA"), Err(SealError::Malformed));
        let again = SealKey::parse(&k.to_hex()).unwrap();
        assert_eq!(again.open(&s).unwrap(), "pat.secret-value");
        assert_eq!(SealKey::parse("short").unwrap_err(), SealError::BadKey);
    }
}
