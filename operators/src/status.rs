//! A signal's processing status: the decision that every output follows from.
//!
//! The decision is a plain function of what is known about a signal (its winning rule, its
//! lead, whether it may wait cold), shared by the dataflow, which takes it where the three
//! meet (see [`crate::graph`]), and by the sequential reference.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::ident::{IdKind, Ident};
use crate::identity::IdentityConfig;
use crate::rules::{Match, SignalType};
use crate::signal::Signal;

/// Processing status. `Pending` is a signal held cold: anonymous, not yet
/// attributable to a lead.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pending,
    Completed,
    Failed,
    Skipped,
}

impl Status {
    /// The status as the archive and the API spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Completed => "completed",
            Status::Failed => "failed",
            Status::Skipped => "skipped",
        }
    }
}

/// What processing made of one staged signal.
///
/// Its text is shared (`Arc<str>`) with the signal, the rule match and, for the two fixed
/// error messages, one copy per worker: there is one of these per signal in the status arrangement and in the read
/// models, and a `String` per field made each of them, and each clone, a heap copy.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Processed {
    pub status: Status,
    /// `No identifying field`, `Invalid path`, or `Rule not found`.
    pub error: Option<Arc<str>>,
    pub rule_id: Option<u64>,
    pub rule_name: Option<Arc<str>>,
    pub signal_type: Option<SignalType>,
    pub high_intent: bool,
    pub lead: Option<Ident>,
    pub source: Arc<str>,
    pub event_type: Arc<str>,
    pub received_at: i64,
    pub event_at: i64,
}

thread_local! {
    // Every unmapped signal is skipped with the same message: one shared copy per worker.
    static RULE_NOT_FOUND: Arc<str> = Arc::from("Rule not found");
    static NO_IDENTIFYING_FIELD: Arc<str> = Arc::from("No identifying field");
}

/// Whether `s` may wait cold for an identify: it carries an anonymous id that is an identifier
/// (not a blocked value).
pub fn cold(s: &Signal, cfg: &IdentityConfig) -> bool {
    s.ids
        .iter()
        .any(|(k, v)| *k == IdKind::AnonymousId && cfg.allows(v))
}

/// Decides a signal's status from what is known about it (see `Status`).
pub fn derive_status(
    signal: &Signal,
    cold: bool,
    winner: Option<&Match>,
    lead: Option<&Ident>,
) -> Processed {
    let (status, error) = match (winner, lead) {
        (Some(m), _) if m.error.is_some() => (Status::Failed, m.error.as_deref().map(Arc::from)),
        (Some(_), Some(_)) => (Status::Completed, None),
        (_, None) if cold => (Status::Pending, None),
        (Some(_), None) => (Status::Failed, Some(NO_IDENTIFYING_FIELD.with(Arc::clone))),
        (None, _) => (Status::Skipped, Some(RULE_NOT_FOUND.with(Arc::clone))),
    };
    Processed {
        status,
        error,
        rule_id: winner.map(|m| m.rule_id),
        rule_name: winner.map(|m| m.rule_name.clone()),
        signal_type: winner.map(|m| m.signal_type),
        high_intent: winner.is_some_and(|m| m.high_intent),
        lead: lead.cloned(),
        source: signal.source.clone(),
        event_type: signal.event_type.clone(),
        received_at: signal.received_at,
        event_at: signal.event_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::signal;
    use serde_json::json;

    #[test]
    fn statuses() {
        let s = signal(1, 1, 0, json!({"anonymousId": "a"}));
        let m = Match {
            priority: 0,
            created_at: 0,
            rule_id: 9,
            version: 1,
            rule_name: "R".into(),
            signal_type: SignalType::FormFill,
            high_intent: true,
            error: None,
            ids: vec![],
            fields: vec![],
        };
        let lead = Ident::new(1, IdKind::Email, "x@y.io");
        assert_eq!(
            derive_status(&s, true, Some(&m), None).status,
            Status::Pending
        );
        assert_eq!(
            derive_status(&s, true, Some(&m), Some(&lead)).status,
            Status::Completed
        );
        let failed = derive_status(&s, false, Some(&m), None);
        assert_eq!(
            (failed.status, failed.error.as_deref()),
            (Status::Failed, Some("No identifying field"))
        );
        let skipped = derive_status(&s, false, None, Some(&lead));
        assert_eq!(
            (skipped.status, skipped.error.as_deref()),
            (Status::Skipped, Some("Rule not found"))
        );
        let bad = Match {
            error: Some("Invalid path".into()),
            ..m
        };
        assert_eq!(
            derive_status(&s, true, Some(&bad), Some(&lead))
                .error
                .as_deref(),
            Some("Invalid path")
        );
    }
}
