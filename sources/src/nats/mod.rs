//! Signals published straight to NATS (no HTTP): what a message on
//! `trailspark.signals.<org>.<source>` (JetStream) or `trailspark.ingest.<org>.<source>` (core
//! NATS request/reply) means, checked by the same rules as the webhooks.
//!
//! The API key travels in the `Trailspark-Api-Key` header; a key with a secret also needs
//! `Trailspark-Api-Secret` (or `X-Api-Secret`), or an HMAC of the payload in `X-Signature`.
//! The payload is one JSON object (as E2) or an array of them (as E3, per-item results). The
//! org in the subject must be the key's: a key cannot write into another org by naming it.
//! The source token is the source label, as in E2's URL; `auto` detects it from the payload.
//!
//! The rules here are transport-free, so they are unit-tested here; [`consumer`] (JetStream)
//! and [`reply`] (request/reply) run them against NATS.

pub mod consumer;
pub mod reply;

use trailspark_core::normalize::Context;
use trailspark_core::tenancy::EndpointType;

use crate::auth;
use crate::error::IngestError;
use crate::http::{BATCH_LIMIT, BATCH_MAX_ITEMS};
use crate::ingest::{Ingest, ItemOutcome};
use crate::items::{batch_items, item_record};

/// The header holding the API key.
pub const KEY_HEADER: &str = "Trailspark-Api-Key";
/// The header holding a key's secret.
pub const SECRET_HEADER: &str = "Trailspark-Api-Secret";
/// The source token that asks for detection from the payload.
pub const AUTO_SOURCE: &str = "auto";

/// The org and source named by a subject `<prefix>.<org>.<source>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub org: u64,
    pub source: Option<String>,
}

/// Parses the subject's last two tokens after `prefix` (e.g. `trailspark.signals`).
pub fn parse_subject(prefix: &str, subject: &str) -> Result<Target, IngestError> {
    let rest = subject
        .strip_prefix(prefix)
        .and_then(|r| r.strip_prefix('.'))
        .ok_or_else(|| IngestError::BadRequest(format!("subject must start with {prefix}.")))?;
    let mut parts = rest.split('.');
    let (Some(org), Some(source), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(IngestError::BadRequest(format!(
            "subject must be {prefix}.<org id>.<source>"
        )));
    };
    let org = org.parse::<u64>().map_err(|_| {
        IngestError::BadRequest(format!(
            "the org in subject {subject} must be a number (the org id)"
        ))
    })?;
    let source = (source != AUTO_SOURCE).then(|| source.to_string());
    Ok(Target { org, source })
}

/// The headers of a message, as far as ingestion needs them.
pub struct Credentials<'a> {
    pub key: Option<&'a str>,
    pub secret: Option<&'a str>,
    pub signature: Option<&'a str>,
}

/// The credentials a message carries in its headers.
pub fn credentials(headers: Option<&async_nats::HeaderMap>) -> Credentials<'_> {
    Credentials {
        key: header(headers, KEY_HEADER),
        secret: header(headers, SECRET_HEADER).or_else(|| header(headers, "X-Api-Secret")),
        signature: header(headers, "X-Signature"),
    }
}

/// The value of header `name` (compared case-insensitively: HTTP-minded producers lowercase).
pub fn header<'a>(headers: Option<&'a async_nats::HeaderMap>, name: &str) -> Option<&'a str> {
    let h = headers?;
    if let Some(v) = h.get(name) {
        return Some(v.as_str());
    }
    h.iter()
        .find(|(k, _)| AsRef::<str>::as_ref(*k).eq_ignore_ascii_case(name))
        .and_then(|(_, v)| v.first())
        .map(|v| v.as_str())
}

/// Checks a message's key against its subject's org and turns its payload into per-item
/// records, received at `received_at` (Unix ms). A whole-message error (bad key, wrong org,
/// invalid JSON) is `Err`; per-item errors of an array are in the items.
pub fn records(
    ingest: &dyn Ingest,
    target: &Target,
    creds: &Credentials<'_>,
    payload: &[u8],
    received_at: i64,
) -> Result<Vec<ItemOutcome>, IngestError> {
    let presented = creds.key.map(str::trim).unwrap_or("");
    if presented.is_empty() {
        return Err(IngestError::BadRequest(format!(
            "missing API key: put it in the {KEY_HEADER} header"
        )));
    }
    let key = ingest
        .check_key(presented, received_at)
        .map_err(auth::rejection)?;
    auth::check_type(&key, EndpointType::SignalStaging)?;
    if key.org_id.0 != target.org {
        return Err(IngestError::WrongOrg {
            subject_org: target.org,
        });
    }
    auth::check_secret(&key, creds.secret, creds.signature, payload)?;
    let ctx = Context {
        org_id: key.org_id,
        api_key_id: key.id,
        received_at,
        url_source: target.source.as_deref(),
        header_source: None,
    };
    if is_batch(payload) {
        if payload.len() > BATCH_LIMIT {
            return Err(IngestError::TooLarge(BATCH_LIMIT));
        }
        batch_items(&ctx, payload, |n| {
            format!("a message holds at most {BATCH_MAX_ITEMS} signals, got {n}")
        })
    } else {
        // One object: its errors are the whole message's.
        Ok(vec![ItemOutcome {
            index: 0,
            line: None,
            record: Ok(item_record(&ctx, payload)?),
        }])
    }
}

/// Whether a payload is an array of signals rather than one.
pub fn is_batch(payload: &[u8]) -> bool {
    payload.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::SubmitFuture;
    use trailspark_core::tenancy::{ApiKey, KeyRejection, OrgId};

    struct Keys;

    impl Ingest for Keys {
        fn check_key(&self, presented: &str, _now: i64) -> Result<ApiKey, KeyRejection> {
            let (org, secret) = match presented {
                "k1" => (1, None),
                "k2" => (2, None),
                "ks" => (1, Some("s".to_string())),
                _ => return Err(KeyRejection::Unknown),
            };
            Ok(ApiKey {
                id: 7,
                org_id: OrgId(org),
                name: "k".into(),
                endpoint_type: EndpointType::SignalStaging,
                key_hash: String::new(),
                prefix: String::new(),
                secret,
                expires_at: None,
                created_at: 0,
                revoked_at: None,
                template: None,
                allowed_origins: None,
            })
        }

        fn submit(&self, _entries: Vec<trailspark_core::LogEntry>) -> SubmitFuture {
            unreachable!("records() never submits")
        }
    }

    fn creds(key: &str) -> Credentials<'_> {
        Credentials {
            key: Some(key),
            secret: None,
            signature: None,
        }
    }

    #[test]
    fn subjects() {
        assert_eq!(
            parse_subject("trailspark.signals", "trailspark.signals.12.segment").unwrap(),
            Target {
                org: 12,
                source: Some("segment".into())
            }
        );
        assert_eq!(
            parse_subject("trailspark.signals", "trailspark.signals.3.auto")
                .unwrap()
                .source,
            None
        );
        for bad in [
            "trailspark.signals.x.segment",
            "trailspark.signals.1",
            "trailspark.signals.1.a.b",
            "trailspark.other.1.a",
        ] {
            assert!(parse_subject("trailspark.signals", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keys_orgs_and_payloads() {
        let t1 = parse_subject("trailspark.signals", "trailspark.signals.1.web").unwrap();
        let one = records(&Keys, &t1, &creds("k1"), br#"{"event":"a"}"#, 5).unwrap();
        let rec = one[0].record.as_ref().unwrap();
        assert_eq!((rec.org_id, rec.received_at), (OrgId(1), 5));
        assert_eq!(rec.source, "web");
        let many = records(&Keys, &t1, &creds("k1"), br#"[{"event":"a"}, 3]"#, 5).unwrap();
        assert!(many[0].record.is_ok() && many[1].record.is_err());
        let err = |k: &str, p: &[u8]| records(&Keys, &t1, &creds(k), p, 5).err().unwrap();
        assert_eq!(err("nope", b"{}").code(), "invalid_api_key");
        assert_eq!(err("k2", b"{}").code(), "wrong_org");
        assert_eq!(err("ks", b"{}").code(), "missing_secret");
        assert_eq!(err("k1", b"{nope").code(), "invalid_json");
        assert_eq!(err("k1", b"42").code(), "not_an_object");
        let none = Credentials {
            key: None,
            secret: None,
            signature: None,
        };
        assert_eq!(
            records(&Keys, &t1, &none, b"{}", 5).err().unwrap().code(),
            "bad_request"
        );
        let sig = auth::sign("s", br#"{"event":"a"}"#);
        let signed = Credentials {
            key: Some("ks"),
            secret: None,
            signature: Some(&sig),
        };
        assert!(records(&Keys, &t1, &signed, br#"{"event":"a"}"#, 5).is_ok());
    }
}
