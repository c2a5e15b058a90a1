//! The identifiers of the identity graph, and the org every key starts with.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

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
    /// Persistent identifiers create and match leads (email, productUserId, crmId,
    /// mapId; `userId` is the customer's own product user id). Anonymous and device
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

    pub fn parse(s: &str) -> Option<IdKind> {
        [
            IdKind::Email,
            IdKind::UserId,
            IdKind::ProductUserId,
            IdKind::CrmId,
            IdKind::MapId,
            IdKind::AnonymousId,
            IdKind::DeviceId,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
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
