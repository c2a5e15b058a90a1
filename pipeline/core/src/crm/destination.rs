//! Destinations: where evaluations are written back to a CRM, as config events, and the
//! delivery progress that the log records for them.
//!
//! A destination belongs to one connected integration and says which CRM fields take an
//! evaluation's score, reasoning, date and (on the account) propensity. What has been
//! delivered is not kept anywhere but the log: each batch's per-record results are a
//! [`DeliveryEvent`], so a restart derives every destination's queue and failures by
//! replaying evaluations and results in log order.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::IntegrationKind;
use crate::scoring::{Propensity, Score};
use crate::tenancy::OrgId;

/// The CRM fields an evaluation is written to (the CRM's own field names).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationFields {
    pub score: String,
    pub reasoning: String,
    pub evaluated_at: String,
    /// On the account (Salesforce Account, HubSpot company, Airtable Companies table).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub propensity: Option<String>,
}

/// A destination as the log records it and the API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Destination {
    pub id: u64,
    pub org_id: OrgId,
    pub integration_id: u64,
    pub kind: IntegrationKind,
    pub send_evaluations: bool,
    pub field_mapping: DestinationFields,
    /// Create a person record when none matches the lead's email.
    pub create_records: bool,
    /// The scores for which records are created (all by default).
    pub create_for_scores: Vec<Score>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl Destination {
    /// Whether evaluations go out now (the integration's status is checked by the sender).
    pub fn active(&self) -> bool {
        self.send_evaluations
    }
}

/// A propensity as a destination writes it (spec §6.5): `high_propensity` and so on for
/// Salesforce and HubSpot, the bare level for Airtable's single-select options.
pub fn propensity_value(kind: IntegrationKind, p: Propensity) -> String {
    match kind {
        IntegrationKind::Airtable => p.as_str().to_string(),
        _ => format!("{}_propensity", p.as_str()),
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum DestinationEvent {
    /// Created or edited: the whole destination as it now is.
    Set {
        destination: Box<Destination>,
    },
    Deleted {
        id: u64,
        org_id: OrgId,
        at: i64,
    },
}

/// The fold of all destination events.
#[derive(Clone, Debug, Default)]
pub struct DestinationState {
    destinations: BTreeMap<u64, Destination>,
    next_id: u64,
}

impl DestinationState {
    pub fn apply(&mut self, event: &DestinationEvent) {
        match event {
            DestinationEvent::Set { destination } => {
                self.next_id = self.next_id.max(destination.id);
                self.destinations
                    .insert(destination.id, Destination::clone(destination));
            }
            DestinationEvent::Deleted { id, .. } => {
                self.destinations.remove(id);
            }
        }
    }

    /// A deleted integration takes its destinations with it.
    pub fn forget_integration(&mut self, integration: u64) {
        self.destinations
            .retain(|_, d| d.integration_id != integration);
    }

    pub fn get(&self, id: u64) -> Option<&Destination> {
        self.destinations.get(&id)
    }

    pub fn of_org(&self, org: OrgId) -> impl Iterator<Item = &Destination> + '_ {
        self.destinations.values().filter(move |d| d.org_id == org)
    }

    pub fn all(&self) -> impl Iterator<Item = &Destination> + '_ {
        self.destinations.values()
    }

    pub fn next_id(&self) -> u64 {
        self.next_id + 1
    }
}

/// What became of one evaluation at one destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Written (or created) in the CRM.
    Delivered,
    /// Refused for good (an unknown field, no record while creation is off, retries used
    /// up): kept with the CRM's message until retried.
    Failed,
}

/// The CRM's reason for a failed record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryError {
    /// The CRM's error code (`INVALID_FIELD`, `OBJECT_NOT_FOUND`) or ours (`not_found`,
    /// `no_email`, `retries_exhausted`).
    pub code: String,
    pub message: String,
}

/// One record's final result at a destination.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordResult {
    pub lead_id: String,
    pub evaluation_id: String,
    /// The evaluation's log position.
    pub position: u64,
    pub status: DeliveryStatus,
    /// The CRM object and record written (`Contact`/`003…`, `contacts`/`512`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_id: Option<String>,
    #[serde(default)]
    pub created: bool,
    /// Whether the account's propensity was written too.
    #[serde(default)]
    pub propensity_written: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<DeliveryError>,
    /// Attempts it took (1 when the first write settled it).
    pub attempts: u32,
    /// The values written, as a fingerprint: an evaluation with the same one is not sent
    /// again.
    #[serde(default)]
    pub fingerprint: u64,
}

/// Delivery progress, on the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "delivery", rename_all = "snake_case")]
pub enum DeliveryEvent {
    /// A batch settled: each record's final result. `through` is the greatest evaluation
    /// position settled so far at this destination.
    Results {
        org_id: OrgId,
        destination_id: u64,
        at: i64,
        through: u64,
        results: Vec<RecordResult>,
    },
    /// `POST …/retry`: the failed records of these leads (all failed ones when empty) are
    /// queued again.
    Retry {
        org_id: OrgId,
        destination_id: u64,
        at: i64,
        lead_ids: Vec<String>,
    },
}

impl DeliveryEvent {
    pub fn org_id(&self) -> OrgId {
        match self {
            DeliveryEvent::Results { org_id, .. } | DeliveryEvent::Retry { org_id, .. } => *org_id,
        }
    }
}

/// The fingerprint of what a destination writes for an evaluation: its score, reasoning and
/// propensity (not its time: an unchanged result is not written again).
pub fn fingerprint(score: Score, reasoning: &str, propensity: Option<Propensity>) -> u64 {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(score.as_str().as_bytes());
    h.update([0]);
    h.update(reasoning.as_bytes());
    h.update([0]);
    h.update(propensity.map(Propensity::as_str).unwrap_or("").as_bytes());
    u64::from_le_bytes(h.finalize()[..8].try_into().unwrap())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_and_fold() {
        let d = Destination {
            id: 3,
            org_id: OrgId(1),
            integration_id: 2,
            kind: IntegrationKind::Hubspot,
            send_evaluations: true,
            field_mapping: DestinationFields {
                score: "trailspark_score".into(),
                reasoning: "trailspark_reasoning".into(),
                evaluated_at: "trailspark_evaluation_date".into(),
                propensity: None,
            },
            create_records: false,
            create_for_scores: vec![Score::Hot],
            created_at: 1,
            updated_at: 1,
        };
        let e = DestinationEvent::Set {
            destination: Box::new(d.clone()),
        };
        let back: DestinationEvent =
            serde_json::from_str(&serde_json::to_string(&e).unwrap()).unwrap();
        assert_eq!(back, e);
        let mut s = DestinationState::default();
        s.apply(&e);
        assert_eq!(s.next_id(), 4);
        assert_eq!(s.get(3), Some(&d));
        s.forget_integration(2);
        assert!(s.get(3).is_none());
        assert_eq!(
            propensity_value(IntegrationKind::Salesforce, Propensity::High),
            "high_propensity"
        );
        assert_eq!(
            propensity_value(IntegrationKind::Airtable, Propensity::Low),
            "low"
        );
        assert_ne!(
            fingerprint(Score::Hot, "a", None),
            fingerprint(Score::Warm, "a", None)
        );
    }
}
