//! Entries of the durable log and their byte encoding.
//!
//! The same bytes are the body of a journal record (embedded mode) and of a JetStream message
//! (NATS mode). Layout: one kind byte, then for signals and product-org updates a little-endian
//! `u32` length, that many bytes of JSON metadata, and the raw payload as the rest. Keeping
//! the payload outside the JSON avoids escaping it on write and re-validating it on read.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::signal::SignalRecord;
use crate::tenancy::{ConfigEvent, OrgId};

/// A product-org update: the payload as received, and what the key's template extracted from
/// it when it arrived (see [`crate::product_org`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProductOrgRecord {
    pub org_id: OrgId,
    pub api_key_id: u64,
    pub received_at: i64,
    #[serde(default)]
    pub product_org_id: String,
    /// Event time: the latest update wins per field.
    #[serde(default)]
    pub event_at: i64,
    /// Extracted fields: name → JSON text.
    #[serde(default)]
    pub fields: Vec<(String, String)>,
    #[serde(skip)]
    pub payload: String,
}

/// One fact on the log.
#[derive(Clone, Debug, PartialEq)]
pub enum LogEntry {
    Signal(SignalRecord),
    ProductOrgUpdate(ProductOrgRecord),
    Config(ConfigEvent),
}

const KIND_SIGNAL: u8 = b'S';
const KIND_PRODUCT_ORG: u8 = b'P';
const KIND_CONFIG: u8 = b'C';

#[derive(Debug, Error)]
pub enum DecodeError {
    #[error("empty log entry")]
    Empty,
    #[error("unknown log entry kind {0:#04x}")]
    UnknownKind(u8),
    #[error("truncated log entry")]
    Truncated,
    #[error("log entry metadata: {0}")]
    Meta(#[from] serde_json::Error),
    #[error("log entry payload is not UTF-8")]
    Utf8,
}

impl LogEntry {
    pub fn org_id(&self) -> Option<OrgId> {
        match self {
            LogEntry::Signal(s) => Some(s.org_id),
            LogEntry::ProductOrgUpdate(p) => Some(p.org_id),
            LogEntry::Config(_) => None,
        }
    }

    /// Appends the encoding of this entry to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        fn with_payload<T: Serialize>(out: &mut Vec<u8>, kind: u8, meta: &T, payload: &str) {
            out.push(kind);
            let len_at = out.len();
            out.extend_from_slice(&[0; 4]);
            serde_json::to_writer(&mut *out, meta).expect("metadata serializes");
            let meta_len = (out.len() - len_at - 4) as u32;
            out[len_at..len_at + 4].copy_from_slice(&meta_len.to_le_bytes());
            out.extend_from_slice(payload.as_bytes());
        }
        match self {
            LogEntry::Signal(s) => with_payload(out, KIND_SIGNAL, s, &s.payload),
            LogEntry::ProductOrgUpdate(p) => with_payload(out, KIND_PRODUCT_ORG, p, &p.payload),
            LogEntry::Config(c) => {
                out.push(KIND_CONFIG);
                serde_json::to_writer(&mut *out, c).expect("config event serializes");
            }
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        self.encode_into(&mut out);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<LogEntry, DecodeError> {
        let (&kind, rest) = bytes.split_first().ok_or(DecodeError::Empty)?;
        match kind {
            KIND_SIGNAL => {
                let (meta, payload) = split_meta(rest)?;
                let mut s: SignalRecord = serde_json::from_slice(meta)?;
                s.payload = payload;
                Ok(LogEntry::Signal(s))
            }
            KIND_PRODUCT_ORG => {
                let (meta, payload) = split_meta(rest)?;
                let mut p: ProductOrgRecord = serde_json::from_slice(meta)?;
                p.payload = payload;
                Ok(LogEntry::ProductOrgUpdate(p))
            }
            KIND_CONFIG => Ok(LogEntry::Config(serde_json::from_slice(rest)?)),
            other => Err(DecodeError::UnknownKind(other)),
        }
    }
}

/// Splits `[u32 len][meta][payload]` into metadata bytes and the payload text.
fn split_meta(rest: &[u8]) -> Result<(&[u8], String), DecodeError> {
    let len_bytes: [u8; 4] = rest
        .get(..4)
        .ok_or(DecodeError::Truncated)?
        .try_into()
        .unwrap();
    let len = u32::from_le_bytes(len_bytes) as usize;
    let meta = rest.get(4..4 + len).ok_or(DecodeError::Truncated)?;
    let payload = std::str::from_utf8(&rest[4 + len..]).map_err(|_| DecodeError::Utf8)?;
    Ok((meta, payload.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::normalize::{normalize, Context};
    use crate::tenancy::{Org, OrgId};
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn signals_round_trip(email in "[a-z]{1,8}@[a-z]{1,6}\\.io", ev in "\\PC{0,20}", n in any::<i64>()) {
            let payload = serde_json::json!({"email": email, "event": ev, "properties": {"n": n}});
            let raw = serde_json::to_string(&payload).unwrap();
            let ctx = Context { org_id: OrgId(3), api_key_id: 4, received_at: 5, ..Default::default() };
            let entry = LogEntry::Signal(normalize(&ctx, &payload, raw));
            prop_assert_eq!(LogEntry::decode(&entry.encode()).unwrap(), entry);
        }
    }

    #[test]
    fn other_kinds_round_trip_and_garbage_is_an_error() {
        let c = LogEntry::Config(ConfigEvent::OrgCreated(Org {
            id: OrgId(2),
            name: "x".into(),
            created_at: 1,
        }));
        assert_eq!(LogEntry::decode(&c.encode()).unwrap(), c);
        let p = LogEntry::ProductOrgUpdate(ProductOrgRecord {
            org_id: OrgId(2),
            api_key_id: 1,
            received_at: 3,
            product_org_id: "ws_1".into(),
            event_at: 3,
            fields: vec![("name".into(), "\"Acme\"".into())],
            payload: r#"{"groupId":"ws_1"}"#.into(),
        });
        assert_eq!(LogEntry::decode(&p.encode()).unwrap(), p);
        assert!(LogEntry::decode(b"").is_err());
        assert!(LogEntry::decode(b"Zxx").is_err());
        assert!(LogEntry::decode(b"S\xff\xff\xff\x00{}").is_err());
    }
}
