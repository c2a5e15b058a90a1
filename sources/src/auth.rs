//! API-key authentication of ingestion requests.
//!
//! The key is in the URL path (webhooks) or the Basic-auth username / `writeKey` (Segment
//! tracking API). A key with a secret additionally needs either the secret itself in
//! `X-Api-Secret` or an `X-Signature` HMAC of the raw body under the secret:
//! `sha256=<hex HMAC-SHA256>`, or `<hex HMAC-SHA1>` bare or as `sha1=<hex>`, which is what
//! Segment's Webhooks (Actions) destination sends. Both are compared in constant time. A key
//! without a secret ignores both headers.

use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::Sha256;
use trailspark_core::secret;
use trailspark_core::tenancy::{ApiKey, EndpointType, KeyRejection};

use crate::error::IngestError;

/// Maps a registry rejection to the 401 it answers.
pub fn rejection(r: KeyRejection) -> IngestError {
    match r {
        KeyRejection::Unknown => IngestError::InvalidApiKey,
        KeyRejection::Revoked => IngestError::KeyInactive,
        KeyRejection::Expired => IngestError::KeyExpired,
    }
}

/// Checks that `key` may be used on an endpoint of type `wanted` (403 otherwise).
pub fn check_type(key: &ApiKey, wanted: EndpointType) -> Result<(), IngestError> {
    if key.endpoint_type == wanted {
        Ok(())
    } else {
        Err(IngestError::WrongEndpointType(key.endpoint_type.as_str()))
    }
}

/// Verifies the key's secret against the request, given the raw (undecoded) body.
pub fn check_secret(
    key: &ApiKey,
    api_secret: Option<&str>,
    signature: Option<&str>,
    raw_body: &[u8],
) -> Result<(), IngestError> {
    let Some(expected) = key.secret.as_deref() else {
        return Ok(());
    };
    if let Some(presented) = api_secret {
        return if secret::eq(presented.trim().as_bytes(), expected.as_bytes()) {
            Ok(())
        } else {
            Err(IngestError::InvalidSecret)
        };
    }
    if let Some(sig) = signature {
        return verify_signature(expected, sig, raw_body);
    }
    Err(IngestError::MissingSecret)
}

fn verify_signature(secret: &str, header: &str, body: &[u8]) -> Result<(), IngestError> {
    let header = header.trim();
    let key = secret.as_bytes();
    let verified = if let Some(hex_sig) = header.strip_prefix("sha256=") {
        let sig = hex::decode(hex_sig).map_err(|_| IngestError::InvalidSecret)?;
        let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
        mac.update(body);
        mac.verify_slice(&sig).is_ok()
    } else {
        // Segment signs with bare hex; `sha1=` is GitHub's spelling of the same thing. A
        // bare value must be SHA-1's 40 digits, so a SHA-256 digest without its prefix is
        // refused rather than guessed at.
        let hex_sig = header.strip_prefix("sha1=").unwrap_or(header);
        if hex_sig.len() != 40 {
            return Err(IngestError::InvalidSecret);
        }
        let sig = hex::decode(hex_sig).map_err(|_| IngestError::InvalidSecret)?;
        let mut mac = Hmac::<Sha1>::new_from_slice(key).expect("HMAC takes any key length");
        mac.update(body);
        mac.verify_slice(&sig).is_ok()
    };
    if verified {
        Ok(())
    } else {
        Err(IngestError::InvalidSecret)
    }
}

/// The `X-Signature` Segment's Webhooks destination sends: bare hex HMAC-SHA1.
pub fn sign_sha1(secret: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha1>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// The `X-Signature` value for `body` under `secret` (used by clients and tests).
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use trailspark_core::tenancy::OrgId;

    fn key(secret: Option<&str>) -> ApiKey {
        ApiKey {
            id: 1,
            org_id: OrgId(1),
            name: "k".into(),
            endpoint_type: EndpointType::SignalStaging,
            key_hash: String::new(),
            prefix: String::new(),
            secret: secret.map(str::to_string),
            expires_at: None,
            created_at: 0,
            revoked_at: None,
            template: None,
            allowed_origins: None,
        }
    }

    #[test]
    fn secrets_and_signatures() {
        let k = key(Some("s3cret"));
        assert!(check_secret(&k, Some("s3cret"), None, b"{}").is_ok());
        assert!(matches!(
            check_secret(&k, Some("nope"), None, b"{}"),
            Err(IngestError::InvalidSecret)
        ));
        assert!(matches!(
            check_secret(&k, None, None, b"{}"),
            Err(IngestError::MissingSecret)
        ));
        let sig = sign("s3cret", b"{\"a\":1}");
        assert!(check_secret(&k, None, Some(&sig), b"{\"a\":1}").is_ok());
        assert!(check_secret(&k, None, Some(&sig), b"{\"a\":2}").is_err());
        assert!(check_secret(&k, None, Some("sha256=zz"), b"{}").is_err());
        assert!(
            check_secret(&k, None, Some(&sig[7..]), b"{\"a\":1}").is_err(),
            "prefix required"
        );
        let sha1 = sign_sha1("s3cret", b"{\"a\":1}");
        assert_eq!(sha1.len(), 40);
        assert!(check_secret(&k, None, Some(&sha1), b"{\"a\":1}").is_ok());
        let prefixed = format!("sha1={sha1}");
        assert!(check_secret(&k, None, Some(&prefixed), b"{\"a\":1}").is_ok());
        assert!(check_secret(&k, None, Some(&sha1), b"{\"a\":2}").is_err());
        assert!(check_secret(&k, None, Some(&sign_sha1("other", b"{}")), b"{}").is_err());
        // A known vector: HMAC-SHA1("key", "The quick brown fox jumps over the lazy dog").
        assert_eq!(
            sign_sha1("key", b"The quick brown fox jumps over the lazy dog"),
            "de7c9b85b8b78aa6bc8a7a36f70a90701c9db4d9"
        );
        // A key without a secret ignores the headers.
        assert!(check_secret(&key(None), Some("anything"), None, b"{}").is_ok());
    }

    #[test]
    fn endpoint_type() {
        assert!(check_type(&key(None), EndpointType::SignalStaging).is_ok());
        assert!(matches!(
            check_type(&key(None), EndpointType::ProductOrg),
            Err(IngestError::WrongEndpointType("signal_staging"))
        ));
    }
}
