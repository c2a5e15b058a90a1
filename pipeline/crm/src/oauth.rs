//! OAuth 2.0 authorization-code pieces the connect flows share: the PKCE verifier and its
//! S256 challenge (RFC 7636), the `state` that ties a browser's return to the request that
//! sent it, and the code exchange at a CRM's token endpoint.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::client::{CrmHttp, Verdict};
use crate::CrmError;

/// A random URL-safe text of `bytes` random bytes (a PKCE verifier, a state).
pub fn random_token(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand_bytes(&mut b);
    URL_SAFE_NO_PAD.encode(b)
}

fn rand_bytes(b: &mut [u8]) {
    use rand::RngCore;
    rand::rng().fill_bytes(b);
}

/// The S256 challenge of a PKCE verifier.
pub fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// POSTs a form to an OAuth token endpoint; answers the token response. A refusal becomes
/// `refused(text)`, where the text names the CRM's error (`error` / `error_description`, or
/// HubSpot's `status` / `message`); server errors are retried.
pub async fn token_request(
    http: &CrmHttp,
    token_url: &str,
    form: &[(&str, &str)],
    refused: impl Fn(String) -> CrmError,
) -> Result<Value, CrmError> {
    let a = http
        .call(
            None,
            |_| http.send(http.client().post(token_url).form(form)),
            |a| match a.status {
                200 => Verdict::Done,
                500..=599 => Verdict::Retry(std::time::Duration::from_millis(500)),
                _ => {
                    let v: Value = serde_json::from_slice(&a.body).unwrap_or(Value::Null);
                    let text = |keys: [&str; 2]| {
                        keys.iter()
                            .find_map(|k| v.get(*k).and_then(Value::as_str))
                            .unwrap_or("")
                            .to_string()
                    };
                    let err = text(["error", "status"]);
                    let err = if err.is_empty() {
                        format!("HTTP {}", a.status)
                    } else {
                        err
                    };
                    let desc = text(["error_description", "message"]);
                    Verdict::Fail(refused(format!("{err} ({desc})")))
                }
            },
        )
        .await?;
    a.json()
}

/// Exchanges an authorization code at `token_url` (form-encoded `params` plus the grant).
pub async fn exchange_code(
    http: &CrmHttp,
    token_url: &str,
    params: &[(&str, &str)],
) -> Result<Value, CrmError> {
    let mut form: Vec<(&str, &str)> = vec![("grant_type", "authorization_code")];
    form.extend_from_slice(params);
    token_request(http, token_url, &form, |e| {
        CrmError::Invalid(format!("the CRM refused the authorization code: {e}"))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s256_matches_rfc_7636() {
        // Appendix B of RFC 7636.
        assert_eq!(
            challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        let v = random_token(32);
        assert_eq!(v.len(), 43);
        assert_ne!(v, random_token(32));
    }
}
