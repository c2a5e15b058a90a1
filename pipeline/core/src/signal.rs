//! The canonical signal record: what every accepted signal becomes, whatever edge it came in by.

use serde::{Deserialize, Serialize};

use crate::tenancy::OrgId;

/// Identifiers extracted from a payload. Email is trimmed and lowercased (the spec matches it
/// case-insensitively); the others are kept as sent, trimmed, numbers rendered as text.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Identifiers {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anonymous_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crm_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub map_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_org_id: Option<String>,
    /// Marketo's lead id; makes a signal identifiable (spec 7.1) but is not a lead key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mkt_lead_id: Option<String>,
    /// A phone number; makes a signal identifiable (spec 7.1) but is not a lead key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
}

impl Identifiers {
    /// Whether the signal carries anything that identifies a person (spec 7.1): everything
    /// except the anonymous id and the device id.
    pub fn is_identifiable(&self) -> bool {
        self.email.is_some()
            || self.user_id.is_some()
            || self.product_user_id.is_some()
            || self.crm_id.is_some()
            || self.map_id.is_some()
            || self.product_org_id.is_some()
            || self.mkt_lead_id.is_some()
            || self.phone.is_some()
    }
}

/// One accepted signal, normalized. Its id is its position in the log, assigned on append.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SignalRecord {
    pub org_id: OrgId,
    /// The API key it was authenticated with.
    pub api_key_id: u64,
    /// Receipt time, Unix milliseconds (UTC).
    pub received_at: i64,
    /// The payload's `timestamp` (or Segment's `originalTimestamp`), else the receipt time.
    pub event_at: i64,
    /// Resolved source: URL > `X-Source` > body `source` > detection > `generic`.
    pub source: String,
    /// Segment call type when Segment-shaped, else the `event` field, else `unknown`.
    pub event_type: String,
    /// `event` for track calls and generic payloads, `name` for page/screen calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_name: Option<String>,
    pub ids: Identifiers,
    /// Segment's `messageId`, when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// Hex SHA-256 over the org and the canonical payload (see [`crate::normalize`]).
    pub content_hash: String,
    /// Carries an anonymous id and nothing identifying: cold until identified (spec 7.2).
    pub anonymous: bool,
    /// The payload as received (for batch items: the item, with the batch context merged in).
    #[serde(skip)]
    pub payload: String,
}

impl SignalRecord {
    /// The first 128 bits of [`Self::dedup_key`] (a SHA-256), for compact exact indexes.
    ///
    /// Computed from the digest (or the content hash's hex prefix) without building the hex
    /// key: every log append and every replayed entry computes it.
    pub fn dedup_bits(&self) -> u128 {
        match &self.message_id {
            Some(mid) => {
                let d = crate::normalize::message_id_digest(self.org_id, mid);
                u128::from_be_bytes(d[..16].try_into().expect("16 bytes"))
            }
            None => u128::from_str_radix(&self.content_hash[..32], 16)
                .expect("content hashes are hex SHA-256"),
        }
    }

    /// The key under which retries of this signal are recognised: the Segment `messageId`
    /// when the producer set one (it is stable across the SDKs' retries even when transport
    /// fields change), else the content hash. Both are scoped to the org.
    pub fn dedup_key(&self) -> String {
        match &self.message_id {
            Some(mid) => crate::normalize::message_id_key(self.org_id, mid),
            None => self.content_hash.clone(),
        }
    }
}
