//! The records that flow through the dataflow. They are compact on purpose: identifiers,
//! positions and the fields the operators read, not whole canonical records.

use std::cell::RefCell;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use trailspark_core::SignalRecord;

use crate::intern::Interner;

/// An organization id (the tenant). Every key in the dataflow starts with it, so that orgs
/// never mix and work spreads across workers by org.
pub type Org = u64;

/// Logical time: the log position at which an epoch closes.
pub type Time = u64;

/// Kinds of identifiers in the identity graph. The order matters: a lead's key is its
/// smallest persistent identifier, so email comes first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum IdKind {
    Email,
    UserId,
    ProductUserId,
    CrmId,
    MapId,
    AnonymousId,
    DeviceId,
}

impl IdKind {
    /// Persistent identifiers create and match leads (spec 7.1: email, productUserId, crmId,
    /// mapId; `userId` is the customer's own product user id, spec 5.1). Anonymous and device
    /// ids only link.
    pub fn persistent(self) -> bool {
        !matches!(self, IdKind::AnonymousId | IdKind::DeviceId)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            IdKind::Email => "email",
            IdKind::UserId => "user_id",
            IdKind::ProductUserId => "product_user_id",
            IdKind::CrmId => "crm_id",
            IdKind::MapId => "map_id",
            IdKind::AnonymousId => "anonymous_id",
            IdKind::DeviceId => "device_id",
        }
    }
}

/// A node of the identity graph.
///
/// The value is shared (`Arc<str>`): identity resolution keeps every identifier in about ten
/// arrangements (facts, co-occurrence, labels, anchors, memberships, lead keys), and each of
/// them clones it. A `String` made each clone a heap copy; sharing makes it a count bump, and
/// an identifier taken from a signal shares the signal's own text.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Ident {
    pub org: Org,
    pub kind: IdKind,
    pub value: Arc<str>,
}

impl Ident {
    pub fn new(org: Org, kind: IdKind, value: impl Into<Arc<str>>) -> Self {
        Ident {
            org,
            kind,
            value: value.into(),
        }
    }
}

/// A signal as the dataflow sees it. Fields are ordered so that, within one org, the natural
/// order is by log position (dedup keeps the first occurrence by taking the minimum).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Signal {
    pub org: Org,
    /// Log position: the signal's id.
    pub pos: u64,
    /// Dedup key (messageId-based or content hash, see `SignalRecord::dedup_key`), its first
    /// 128 bits: inline, where the hex string would be a heap copy in every arrangement.
    pub dedup: u128,
    /// Receipt time, Unix ms (usage is counted by receipt month).
    pub received_at: i64,
    /// Event time, Unix ms.
    pub event_at: i64,
    // Text fields are shared (`Arc<str>`): arrangements clone records, and a shared string
    // makes each clone a reference-count bump instead of a heap copy.
    pub source: Arc<str>,
    pub event_type: Arc<str>,
    pub event_name: Option<Arc<str>>,
    /// Identifiers carried by the signal, sorted, without duplicates.
    pub ids: Arc<[(IdKind, Arc<str>)]>,
    /// The product org the signal names (`productOrgId`, `groupId`), linking its lead to it.
    pub product_org: Option<Arc<str>>,
    /// The payload text, shared: arrangements clone records, and a shared string makes that a
    /// pointer copy. Rules read it (conditions and field mappings on payload paths).
    pub payload: Arc<str>,
}

impl Signal {
    /// The compact form of a canonical record at log position `pos`.
    pub fn from_record(pos: u64, r: &SignalRecord) -> Signal {
        Signal::from_record_keyed(pos, r, r.dedup_bits())
    }

    /// [`Signal::from_record`] with the record's `dedup_bits` already computed (they hash the
    /// message id, and the engine needs them before it decides to build the signal).
    ///
    /// Its text, except the payload, is interned per thread: a visitor's identifiers, the
    /// source and the event type repeat across many signals, and each signal held its own
    /// copies of them in the dataflow.
    pub fn from_record_keyed(pos: u64, r: &SignalRecord, dedup: u128) -> Signal {
        thread_local! {
            static TEXT: RefCell<Interner<str>> = RefCell::new(Interner::default());
        }
        TEXT.with(|t| Signal::build(pos, r, dedup, &mut t.borrow_mut()))
    }

    fn build(pos: u64, r: &SignalRecord, dedup: u128, text: &mut Interner<str>) -> Signal {
        let i = &r.ids;
        let mut ids: Vec<(IdKind, Arc<str>)> = [
            (IdKind::Email, &i.email),
            (IdKind::UserId, &i.user_id),
            (IdKind::ProductUserId, &i.product_user_id),
            (IdKind::CrmId, &i.crm_id),
            (IdKind::MapId, &i.map_id),
            (IdKind::AnonymousId, &i.anonymous_id),
            (IdKind::DeviceId, &i.device_id),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_deref().map(|v| (k, text.str(v))))
        .collect();
        ids.sort();
        ids.dedup();
        Signal {
            org: r.org_id.0,
            pos,
            dedup,
            received_at: r.received_at,
            event_at: r.event_at,
            source: text.str(&r.source),
            event_type: text.str(&r.event_type),
            event_name: r.event_name.as_deref().map(|n| text.str(n)),
            ids: Arc::from(ids),
            product_org: r.ids.product_org_id.as_deref().map(|p| text.str(p)),
            payload: Arc::from(r.payload.as_str()),
        }
    }

    /// The parsed payload (`Null` if it does not parse, which the edge never lets happen).
    pub fn payload_value(&self) -> serde_json::Value {
        serde_json::from_str(&self.payload).unwrap_or(serde_json::Value::Null)
    }

    /// Scalar traits the payload states about the person (`traits`, `context.traits`), as text.
    pub fn traits(&self, payload: &serde_json::Value) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for p in ["context.traits", "traits"] {
            if let Some(serde_json::Value::Object(m)) = trailspark_core::path::get(payload, p) {
                for (k, v) in m {
                    let text = match v {
                        serde_json::Value::String(s) => s.clone(),
                        serde_json::Value::Number(n) => n.to_string(),
                        serde_json::Value::Bool(b) => b.to_string(),
                        _ => continue,
                    };
                    out.retain(|(key, _): &(String, String)| key != k);
                    out.push((k.clone(), text));
                }
            }
        }
        out.sort();
        out
    }

    /// Unix ms to the calendar month `YYYYMM` (UTC), the unit of usage periods.
    pub fn month_of(ms: i64) -> u32 {
        use chrono::Datelike;
        let t = chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default();
        t.year() as u32 * 100 + t.month()
    }
}
