//! The canonical signal record: what every accepted signal becomes, whatever edge it came in by.

use serde::{Deserialize, Serialize};

use crate::tenancy::OrgId;

/// Identifiers extracted from a payload. Email is trimmed and lowercased (the product matches it
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
    /// Marketo's lead id; makes a signal identifiable but is not a lead key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mkt_lead_id: Option<String>,
    /// A phone number; makes a signal identifiable but is not a lead key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
}

impl Identifiers {
    /// Whether the signal carries anything that identifies a person: everything
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
    /// Hex SHA-256 over the org and the canonical payload (see [`crate::dedup`]).
    pub content_hash: String,
    /// Carries an anonymous id and nothing identifying: cold until identified.
    pub anonymous: bool,
    /// The payload as received (for batch items: the item, with the batch context merged in).
    #[serde(skip)]
    pub payload: String,
}
