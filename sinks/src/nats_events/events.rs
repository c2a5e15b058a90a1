//! The events of a batch of read-model changes: their subjects, stable ids and bodies.

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use trailspark_operators::usage::Meter;

use super::{PREFIX, THRESHOLDS};
use crate::read_models::{lead_id, Change};

/// One event, ready to publish.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub subject: String,
    pub id: String,
    pub body: Value,
}

fn event_id(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    format!("ev_{}", &hex::encode(h.finalize())[..32])
}

fn meter_name(m: Meter) -> &'static str {
    match m {
        Meter::RawSignals => "raw_signals",
        Meter::StagedSignals => "staged_signals",
        Meter::MappedSignals => "mapped_signals",
        Meter::Leads => "leads",
    }
}

fn event(org: u64, kind: &str, id: String, pos: u64, data: Value) -> Event {
    let body = json!({
        "id": id,
        "type": kind.replace('_', "."),
        "org_id": org,
        "log_position": pos,
        "emitted_at": chrono::Utc::now().timestamp_millis(),
        "data": data,
    });
    Event {
        subject: format!("{PREFIX}.{org}.{kind}"),
        id,
        body,
    }
}

/// The events of a batch of changes at log position `pos`. `limit` gives a meter's plan
/// limit for an org (0: none).
pub fn events_of(pos: u64, changes: &[Change], limit: &dyn Fn(u64, Meter) -> u64) -> Vec<Event> {
    let mut out = Vec::new();
    for c in changes {
        match c {
            Change::Lead {
                lead,
                created,
                profile,
            } => {
                let lid = lead_id(lead);
                let data = json!({
                    "lead_id": lid,
                    "lead": {"kind": lead.kind.as_str(), "value": lead.value},
                    "profile": profile,
                });
                if *created {
                    out.push(event(
                        lead.org,
                        "lead_created",
                        event_id(&["lead.created", &lid]),
                        pos,
                        data.clone(),
                    ));
                }
                let profile_text = serde_json::to_string(profile).unwrap_or_default();
                out.push(event(
                    lead.org,
                    "lead_updated",
                    event_id(&["lead.updated", &lid, &profile_text]),
                    pos,
                    data,
                ));
            }
            Change::IdentityMerged {
                ident,
                lead,
                previous,
            } => {
                let lid = lead_id(lead);
                let prev = previous.as_ref().map(lead_id);
                out.push(event(
                    ident.org,
                    "identity_merged",
                    event_id(&[
                        "identity.merged",
                        ident.kind.as_str(),
                        &ident.value,
                        &lid,
                        prev.as_deref().unwrap_or(""),
                    ]),
                    pos,
                    json!({
                        "identifier": {"kind": ident.kind.as_str(), "value": ident.value},
                        "lead_id": lid,
                        "previous_lead_id": prev,
                    }),
                ));
            }
            Change::SignalMapped { key, processed: p } => {
                let lid = p.lead.as_ref().map(lead_id);
                let rule = p.rule_id.unwrap_or(0).to_string();
                out.push(event(
                    key.0,
                    "signal_mapped",
                    event_id(&[
                        "signal.mapped",
                        &key.0.to_string(),
                        &key.1.to_string(),
                        &rule,
                        lid.as_deref().unwrap_or(""),
                    ]),
                    pos,
                    json!({
                        "signal_id": key.1,
                        "rule_id": p.rule_id,
                        "rule_name": p.rule_name,
                        "signal_type": p.signal_type,
                        "high_intent": p.high_intent,
                        "lead_id": lid,
                        "source": p.source,
                        "event_type": p.event_type,
                        "received_at": p.received_at,
                    }),
                ));
            }
            Change::LeadEvaluated(e) => out.push(event(
                e.org_id.0,
                "lead_evaluated",
                event_id(&["lead.evaluated", &e.id]),
                pos,
                crate::read_models::scoring::evaluation_json(e),
            )),
            Change::Usage {
                org,
                month,
                meter,
                old,
                new,
            } => {
                let lim = limit(*org, *meter);
                if lim == 0 {
                    continue;
                }
                for pct in THRESHOLDS {
                    let crossed = |n: i64| n.max(0) as u128 * 100 >= pct as u128 * lim as u128;
                    if crossed(*new) && !crossed(*old) {
                        out.push(event(
                            *org,
                            "usage_threshold",
                            event_id(&[
                                "usage.threshold",
                                &org.to_string(),
                                &month.to_string(),
                                meter_name(*meter),
                                &pct.to_string(),
                            ]),
                            pos,
                            json!({
                                "meter": meter_name(*meter),
                                "month": month,
                                "threshold_pct": pct,
                                "used": new,
                                "limit": lim,
                            }),
                        ));
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use trailspark_operators::leads::LeadProfile;
    use trailspark_operators::status::{Processed, Status};
    use trailspark_operators::{IdKind, Ident};

    fn ident(kind: IdKind, v: &str) -> Ident {
        Ident {
            org: 3,
            kind,
            value: v.into(),
        }
    }

    #[test]
    fn events_have_stable_ids_and_thresholds_fire_once() {
        let lead = ident(IdKind::Email, "a@b.io");
        let profile = LeadProfile {
            signals: 1,
            first_activity: 1,
            last_activity: 1,
            by_type: vec![],
            traits: vec![],
            product_org: None,
            product_orgs: vec![],
        };
        let changes = vec![
            Change::Lead {
                lead: lead.clone(),
                created: true,
                profile: profile.clone(),
            },
            Change::IdentityMerged {
                ident: ident(IdKind::AnonymousId, "anon"),
                lead: lead.clone(),
                previous: None,
            },
            Change::SignalMapped {
                key: (3, 17),
                processed: Processed {
                    status: Status::Completed,
                    error: None,
                    rule_id: Some(5),
                    rule_name: Some("r".into()),
                    signal_type: None,
                    high_intent: false,
                    lead: Some(lead.clone()),
                    source: "web".into(),
                    event_type: "page".into(),
                    received_at: 1,
                    event_at: 1,
                },
            },
            Change::Usage {
                org: 3,
                month: 202611,
                meter: Meter::RawSignals,
                old: 7,
                new: 10,
            },
            Change::Usage {
                org: 3,
                month: 202611,
                meter: Meter::Leads,
                old: 0,
                new: 100,
            },
        ];
        let limit = |_org: u64, m: Meter| if m == Meter::RawSignals { 10 } else { 0 };
        let a = events_of(9, &changes, &limit);
        let kinds: Vec<&str> = a.iter().map(|e| e.body["type"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "lead.created",
                "lead.updated",
                "identity.merged",
                "signal.mapped",
                "usage.threshold",
                "usage.threshold"
            ]
        );
        assert_eq!(a[0].subject, "trailspark.events.3.lead_created");
        assert_eq!(a[3].body["data"]["signal_id"], 17);
        assert_eq!(a[3].body["data"]["lead_id"], lead_id(&lead));
        let pcts: Vec<u64> = a[4..]
            .iter()
            .map(|e| e.body["data"]["threshold_pct"].as_u64().unwrap())
            .collect();
        assert_eq!(pcts, [80, 100]);
        // The same changes at another position (a replay) give the same ids.
        let b = events_of(12, &changes, &limit);
        let ids = |v: &[Event]| v.iter().map(|e| e.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&a), ids(&b));
        // A meter already past a threshold does not announce it again.
        let again = events_of(
            13,
            &[Change::Usage {
                org: 3,
                month: 202611,
                meter: Meter::RawSignals,
                old: 10,
                new: 11,
            }],
            &limit,
        );
        assert!(again.is_empty());
    }
}
