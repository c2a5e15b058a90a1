//! Entries of the durable log and their byte encoding.
//!
//! The same bytes are the body of a journal record (embedded mode) and of a JetStream message
//! (NATS mode). Layout: one kind byte, then for signals and product-org updates a little-endian
//! `u32` length, that many bytes of JSON metadata, and the raw payload as the rest. Keeping
//! the payload outside the JSON avoids escaping it on write and re-validating it on read.
//!
//! A signal is written with a fixed binary prefix before its length: its dedup key's 128
//! bits, its org and its receipt time (kind `K`). Reading a log for its dedup index and usage
//! counts (an offline backfill opens the whole log for those) then takes them from the prefix
//! instead of parsing every signal's metadata and hashing its message id again. Signals of
//! the earlier layout (kind `S`, no prefix) still read as before.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::crm::{CrmBatch, DeliveryEvent};
use crate::scoring::Evaluation;
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

/// A signal as [`LogEntry::peek`] reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignalSummary {
    /// [`SignalRecord::dedup_bits`].
    pub dedup: u128,
    pub org_id: OrgId,
    pub received_at: i64,
}

/// An entry as [`LogEntry::peek`] reads it.
#[derive(Clone, Debug, PartialEq)]
pub enum Peek {
    Signal(SignalSummary),
    /// Boxed: signals, the common case, stay small.
    Entry(Box<LogEntry>),
}

/// One fact on the log.
#[derive(Clone, Debug, PartialEq)]
pub enum LogEntry {
    Signal(SignalRecord),
    ProductOrgUpdate(ProductOrgRecord),
    Config(ConfigEvent),
    /// A lead's evaluation, appended by the evaluator (boxed: signals, the common case, stay
    /// small).
    Evaluation(Box<Evaluation>),
    /// A page of records pulled from a CRM.
    Crm(Box<CrmBatch>),
    /// Delivery progress of a destination.
    Delivery(Box<DeliveryEvent>),
}

const KIND_SIGNAL: u8 = b'S';
const KIND_SIGNAL_KEYED: u8 = b'K';
/// The keyed signal's prefix: dedup bits (16, big-endian), org (8), receipt time (8).
const KEYED_PREFIX: usize = 32;
const KIND_PRODUCT_ORG: u8 = b'P';
const KIND_CONFIG: u8 = b'C';
const KIND_EVALUATION: u8 = b'V';
const KIND_CRM: u8 = b'R';
const KIND_DELIVERY: u8 = b'D';

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
    #[error("log entry is invalid: {0}")]
    Invalid(&'static str),
}

impl LogEntry {
    pub fn org_id(&self) -> Option<OrgId> {
        match self {
            LogEntry::Signal(s) => Some(s.org_id),
            LogEntry::ProductOrgUpdate(p) => Some(p.org_id),
            LogEntry::Evaluation(e) => Some(e.org_id),
            LogEntry::Crm(b) => Some(b.org_id),
            LogEntry::Delivery(d) => Some(d.org_id()),
            LogEntry::Config(_) => None,
        }
    }

    /// Appends the encoding of this entry to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        fn with_payload<T: Serialize>(out: &mut Vec<u8>, meta: &T, payload: &str) {
            let len_at = out.len();
            out.extend_from_slice(&[0; 4]);
            serde_json::to_writer(&mut *out, meta).expect("metadata serializes");
            let meta_len = (out.len() - len_at - 4) as u32;
            out[len_at..len_at + 4].copy_from_slice(&meta_len.to_le_bytes());
            out.extend_from_slice(payload.as_bytes());
        }
        match self {
            LogEntry::Signal(s) => {
                out.push(KIND_SIGNAL_KEYED);
                out.extend_from_slice(&s.dedup_bits().to_be_bytes());
                out.extend_from_slice(&s.org_id.0.to_le_bytes());
                out.extend_from_slice(&s.received_at.to_le_bytes());
                with_payload(out, s, &s.payload);
            }
            LogEntry::ProductOrgUpdate(p) => {
                out.push(KIND_PRODUCT_ORG);
                with_payload(out, p, &p.payload);
            }
            LogEntry::Config(c) => {
                out.push(KIND_CONFIG);
                serde_json::to_writer(&mut *out, c).expect("config event serializes");
            }
            LogEntry::Evaluation(e) => {
                out.push(KIND_EVALUATION);
                serde_json::to_writer(&mut *out, e).expect("evaluation serializes");
            }
            LogEntry::Crm(b) => {
                out.push(KIND_CRM);
                serde_json::to_writer(&mut *out, b).expect("CRM records serialize");
            }
            LogEntry::Delivery(d) => {
                out.push(KIND_DELIVERY);
                serde_json::to_writer(&mut *out, d).expect("delivery events serialize");
            }
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        self.encode_into(&mut out);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<LogEntry, DecodeError> {
        LogEntry::decode_with(bytes, true)
    }

    /// [`LogEntry::decode`] leaving signals' and product-org updates' payloads empty: what
    /// reading the log for its registry and dedup index needs (an offline backfill opens the
    /// whole log for those; copying every payload was most of that read).
    fn decode_without_payload(bytes: &[u8]) -> Result<LogEntry, DecodeError> {
        LogEntry::decode_with(bytes, false)
    }

    /// What reading for the dedup index and the usage counts needs of an entry: a signal's
    /// summary (from the prefix when it has one), anything else whole without its payload.
    pub fn peek(bytes: &[u8]) -> Result<Peek, DecodeError> {
        match bytes.split_first() {
            Some((&KIND_SIGNAL_KEYED, rest)) => {
                let p = rest.get(..KEYED_PREFIX).ok_or(DecodeError::Truncated)?;
                Ok(Peek::Signal(SignalSummary {
                    dedup: u128::from_be_bytes(p[..16].try_into().unwrap()),
                    org_id: OrgId(u64::from_le_bytes(p[16..24].try_into().unwrap())),
                    received_at: i64::from_le_bytes(p[24..32].try_into().unwrap()),
                }))
            }
            _ => match LogEntry::decode_without_payload(bytes)? {
                LogEntry::Signal(s) => Ok(Peek::Signal(SignalSummary {
                    dedup: s.dedup_bits(),
                    org_id: s.org_id,
                    received_at: s.received_at,
                })),
                other => Ok(Peek::Entry(Box::new(other))),
            },
        }
    }

    fn decode_with(bytes: &[u8], payloads: bool) -> Result<LogEntry, DecodeError> {
        let (&kind, rest) = bytes.split_first().ok_or(DecodeError::Empty)?;
        match kind {
            KIND_SIGNAL | KIND_SIGNAL_KEYED => {
                let rest = if kind == KIND_SIGNAL_KEYED {
                    rest.get(KEYED_PREFIX..).ok_or(DecodeError::Truncated)?
                } else {
                    rest
                };
                let (meta, payload) = split_meta(rest, payloads)?;
                let mut s: SignalRecord = serde_json::from_slice(meta)?;
                // Dedup keys are read from the hash's hex: a record must carry a real one
                // (the journal's checksum guards its records, a stream's messages need this).
                let hash = s.content_hash.as_bytes();
                if hash.len() != 64 || !hash.iter().all(u8::is_ascii_hexdigit) {
                    return Err(DecodeError::Invalid("the content hash is not hex SHA-256"));
                }
                s.payload = payload;
                Ok(LogEntry::Signal(s))
            }
            KIND_PRODUCT_ORG => {
                let (meta, payload) = split_meta(rest, payloads)?;
                let mut p: ProductOrgRecord = serde_json::from_slice(meta)?;
                p.payload = payload;
                Ok(LogEntry::ProductOrgUpdate(p))
            }
            KIND_CONFIG => Ok(LogEntry::Config(serde_json::from_slice(rest)?)),
            KIND_EVALUATION => Ok(LogEntry::Evaluation(Box::new(serde_json::from_slice(
                rest,
            )?))),
            KIND_CRM => Ok(LogEntry::Crm(Box::new(serde_json::from_slice(rest)?))),
            KIND_DELIVERY => Ok(LogEntry::Delivery(Box::new(serde_json::from_slice(rest)?))),
            other => Err(DecodeError::UnknownKind(other)),
        }
    }
}

/// Splits `[u32 len][meta][payload]` into metadata bytes and the payload text (empty unless
/// `payload`).
fn split_meta(rest: &[u8], payload: bool) -> Result<(&[u8], String), DecodeError> {
    let len_bytes: [u8; 4] = rest
        .get(..4)
        .ok_or(DecodeError::Truncated)?
        .try_into()
        .unwrap();
    let len = u32::from_le_bytes(len_bytes) as usize;
    let meta = rest.get(4..4 + len).ok_or(DecodeError::Truncated)?;
    if !payload {
        return Ok((meta, String::new()));
    }
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
            let rec = normalize(&ctx, &payload, raw);
            let summary = SignalSummary { dedup: rec.dedup_bits(), org_id: rec.org_id, received_at: rec.received_at };
            let entry = LogEntry::Signal(rec);
            let bytes = entry.encode();
            prop_assert_eq!(LogEntry::decode(&bytes).unwrap(), entry.clone());
            prop_assert_eq!(LogEntry::peek(&bytes).unwrap(), Peek::Signal(summary));
            // The layout before the keyed prefix: kind `S`, then the length.
            let mut old = vec![KIND_SIGNAL];
            old.extend_from_slice(&bytes[1 + KEYED_PREFIX..]);
            prop_assert_eq!(LogEntry::decode(&old).unwrap(), entry);
            prop_assert_eq!(LogEntry::peek(&old).unwrap(), Peek::Signal(summary));
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
        let without = LogEntry::ProductOrgUpdate(ProductOrgRecord {
            payload: String::new(),
            ..match &p {
                LogEntry::ProductOrgUpdate(r) => r.clone(),
                _ => unreachable!(),
            }
        });
        assert_eq!(
            LogEntry::peek(&p.encode()).unwrap(),
            Peek::Entry(Box::new(without))
        );
        assert_eq!(
            LogEntry::peek(&c.encode()).unwrap(),
            Peek::Entry(Box::new(c.clone()))
        );
        let tick = LogEntry::Config(ConfigEvent::Scoring(crate::scoring::ScoringEvent::Tick {
            at: 7,
            org_id: Some(OrgId(2)),
        }));
        assert_eq!(LogEntry::decode(&tick.encode()).unwrap(), tick);
        let e = LogEntry::Evaluation(Box::new(crate::scoring::Evaluation {
            id: "ev_1".into(),
            org_id: OrgId(2),
            lead_id: "ld_1".into(),
            lead: crate::scoring::LeadKey {
                kind: "email".into(),
                value: "a@b.io".into(),
            },
            account_id: None,
            model_id: 1,
            model_version: 1,
            score: crate::scoring::Score::Cold,
            raw_score: crate::scoring::Score::Warm,
            confidence: 40,
            confidence_gate_applied: true,
            reasoning: "r".into(),
            contributions: vec![],
            propensity: None,
            trigger: crate::scoring::Trigger::Manual,
            evaluated_at: 9,
            cooldown_until: Some(10),
            basis_pos: 3,
            scorer: "deterministic".into(),
            dimensions: Default::default(),
        }));
        assert_eq!(LogEntry::decode(&e.encode()).unwrap(), e);
        assert!(LogEntry::peek(b"K\x01").is_err(), "a truncated prefix");
        assert!(LogEntry::decode(b"").is_err());
        assert!(LogEntry::decode(b"Zxx").is_err());
        assert!(LogEntry::decode(b"S\xff\xff\xff\x00{}").is_err());
    }
}
