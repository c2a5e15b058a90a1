//! The signal record that flows through the dataflow. It is compact on purpose: identifiers,
//! positions and the fields the operators read, not the whole canonical record.

use std::cell::RefCell;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use trailspark_core::SignalRecord;

use crate::groups::key::{group_key, interned, GroupKey};
use crate::ident::{IdKind, Org};
use crate::intern::Interner;
use crate::nodes::Node;

/// A signal as the dataflow sees it: its key (org, log position) inline and everything else in
/// one shared body. Arrangements clone and drop records on every merge; with the body behind
/// one `Arc` that is one reference-count update per signal record instead of one per text
/// field. Fields are reached through `Deref` (`s.payload`, `s.ids`). Ordered by (org,
/// position) first, so within one org the natural order is the log's.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Signal {
    pub org: Org,
    /// Log position: the signal's id.
    pub pos: u64,
    body: Arc<SignalBody>,
}

impl std::ops::Deref for Signal {
    type Target = SignalBody;

    fn deref(&self) -> &SignalBody {
        &self.body
    }
}

/// What a signal carries besides its key: the fields it was built from (reached through
/// `Deref`, like the body itself from the signal), its identifiers, and what the dataflow
/// derives from its payload.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SignalBody {
    fields: SignalFields,
    /// Identifiers carried by the signal, sorted, without duplicates ...
    pub ids: Box<[(IdKind, Arc<str>)]>,
    /// ... and their numbers in the identity graph, in the same order.
    pub nodes: Box<[Node]>,
    /// Derived from the payload when the signal is built (by the thread that builds it, not
    /// the dataflow's workers, and once instead of in every operator that needs them):
    /// what it states about the person (`traits`, `context.traits`; shared with lead facts)
    /// ...
    pub traits: Arc<[(String, String)]>,
    /// ... and its signal group (interned: groups are few next to signals).
    pub group_key: Arc<GroupKey>,
}

impl std::ops::Deref for SignalBody {
    type Target = SignalFields;

    fn deref(&self) -> &SignalFields {
        &self.fields
    }
}

/// What a signal is built from besides its identifiers.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SignalFields {
    /// Dedup key (messageId-based or content hash, see `SignalRecord::dedup_key`), its first
    /// 128 bits: inline, where the hex string would be a heap copy in every arrangement.
    pub dedup: u128,
    /// Receipt time, Unix ms (usage is counted by receipt month).
    pub received_at: i64,
    /// Event time, Unix ms.
    pub event_at: i64,
    // Text that repeats across signals (identifiers, source, event names, product org) is
    // interned where the signal is built, so a visitor's signals share one copy.
    pub source: Arc<str>,
    pub event_type: Arc<str>,
    pub event_name: Option<Arc<str>>,
    /// The product org the signal names (`productOrgId`, `groupId`), linking its lead to it.
    pub product_org: Option<Arc<str>>,
    /// The payload text. Rules read it (conditions and field mappings on payload paths); a
    /// group's sample shares it.
    pub payload: Arc<str>,
}

impl Signal {
    /// A signal from its fields and identifiers: identifiers numbered, sorted and
    /// deduplicated, payload-derived fields computed.
    pub fn new<'a>(
        org: Org,
        pos: u64,
        f: SignalFields,
        ids: impl IntoIterator<Item = (IdKind, &'a str)>,
    ) -> Signal {
        let mut ids: Vec<(IdKind, Arc<str>, Node)> = ids
            .into_iter()
            .map(|(k, v)| {
                let (n, text) = Node::intern(org, k, v);
                (k, text, n)
            })
            .collect();
        ids.sort();
        ids.dedup();
        let payload: serde_json::Value =
            serde_json::from_str(&f.payload).unwrap_or(serde_json::Value::Null);
        let group_key = interned(group_key(
            &f.source,
            &f.event_type,
            f.event_name.as_deref(),
            &payload,
        ));
        Signal {
            org,
            pos,
            body: Arc::new(SignalBody {
                traits: Arc::from(traits_of(&payload)),
                group_key,
                nodes: ids.iter().map(|(_, _, n)| *n).collect(),
                ids: ids.into_iter().map(|(k, v, _)| (k, v)).collect(),
                fields: f,
            }),
        }
    }

    /// The compact form of a canonical record at log position `pos`.
    pub fn from_record(pos: u64, r: &SignalRecord) -> Signal {
        Signal::from_record_keyed(pos, r, r.dedup_bits())
    }

    /// [`Signal::from_record`] with the record's `dedup_bits` already computed (they hash the
    /// message id, and the engine needs them before it decides to build the signal).
    ///
    /// Its identifiers share the node table's text ([`Node`]), and its source and event names
    /// are interned per thread: they repeat across many signals, and each signal held its own
    /// copies of them in the dataflow.
    pub fn from_record_keyed(pos: u64, r: &SignalRecord, dedup: u128) -> Signal {
        thread_local! {
            static TEXT: RefCell<Interner<str>> = RefCell::new(Interner::default());
        }
        TEXT.with(|t| Signal::build(pos, r, dedup, &mut t.borrow_mut()))
    }

    fn build(pos: u64, r: &SignalRecord, dedup: u128, text: &mut Interner<str>) -> Signal {
        let i = &r.ids;
        let org = r.org_id.0;
        let ids = [
            (IdKind::Email, &i.email),
            (IdKind::UserId, &i.user_id),
            (IdKind::ProductUserId, &i.product_user_id),
            (IdKind::CrmId, &i.crm_id),
            (IdKind::MapId, &i.map_id),
            (IdKind::AnonymousId, &i.anonymous_id),
            (IdKind::DeviceId, &i.device_id),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_deref().map(|v| (k, v)));
        Signal::new(
            org,
            pos,
            SignalFields {
                dedup,
                received_at: r.received_at,
                event_at: r.event_at,
                source: text.str(&r.source),
                event_type: text.str(&r.event_type),
                event_name: r.event_name.as_deref().map(|n| text.str(n)),
                product_org: r.ids.product_org_id.as_deref().map(|p| text.str(p)),
                payload: Arc::from(r.payload.as_str()),
            },
            ids,
        )
    }

    /// Unix ms to the calendar month `YYYYMM` (UTC), the unit of usage periods.
    pub fn month_of(ms: i64) -> u32 {
        use chrono::Datelike;
        let t = chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default();
        t.year() as u32 * 100 + t.month()
    }
}

/// Scalar traits a payload states about the person (`context.traits`, then `traits`, which wins
/// on a key both have), as text, sorted by key.
fn traits_of(payload: &serde_json::Value) -> Vec<(String, String)> {
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
