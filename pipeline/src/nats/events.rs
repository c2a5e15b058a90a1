//! The change-event sink: what downstream consumers (a scorer, a CRM sync) need to follow,
//! published to JetStream on `trailspark.events.<org>.<kind>`:
//!
//! | kind | when | data |
//! |---|---|---|
//! | `lead_created` | a lead appears | `lead_id`, `lead` (key identifier), `profile` |
//! | `lead_updated` | its merged profile changes | same |
//! | `identity_merged` | an identifier joins another's lead | `identifier`, `lead_id`, `previous_lead_id` |
//! | `signal_mapped` | a rule maps a signal | `signal_id`, `rule_id`, `rule_name`, `signal_type`, `lead_id`, ... |
//! | `usage_threshold` | a meter crosses 80% or 100% of its plan limit | `meter`, `month`, `threshold_pct`, `used`, `limit` |
//!
//! Each event has a stable id derived from what it says (`ev_` + 32 hex digits), sent as
//! `Nats-Msg-Id` too, so JetStream drops re-publications within its duplicate window and a
//! consumer can dedupe beyond it. Events are published in log order and each batch is
//! retried until JetStream acknowledges all of it: a NATS outage delays events (and, through
//! the bounded channel from the read models, holds the dataflow back), never drops them.
//!
//! After a restart the dataflow replays the log and derives the same changes again. The
//! publisher skips batches at or below its checkpoint, the log position up to which every
//! event was acknowledged, kept as the last message on `trailspark.events_checkpoint` in the
//! same stream (written at most once a second, and when idle). Batches past it are published
//! again; their already-published events carry the same ids.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc::Receiver;
use trailspark_core::tenancy::OrgId;
use trailspark_operators::graph::Meter;

use super::NatsStatus;
use crate::engine::read::{lead_id, Change};
use crate::state::AppState;

pub const STREAM: &str = "TRAILSPARK_EVENTS";
pub const PREFIX: &str = "trailspark.events";
pub const CHECKPOINT_SUBJECT: &str = "trailspark.events_checkpoint";
pub const POSITION_HEADER: &str = "Trailspark-Log-Position";
/// Usage thresholds announced, in percent of the plan's limit.
pub const THRESHOLDS: [u64; 2] = [80, 100];

/// Settings of the events stream.
#[derive(Clone, Debug)]
pub struct EventSettings {
    pub replicas: usize,
    /// Zero keeps events forever.
    pub max_age: Duration,
    pub max_bytes: i64,
}

impl Default for EventSettings {
    fn default() -> Self {
        EventSettings {
            replicas: 1,
            max_age: Duration::from_secs(7 * 86_400),
            max_bytes: -1,
        }
    }
}

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

/// Makes sure the events stream exists and reads the checkpoint.
pub async fn prepare(js: &jetstream::Context, settings: &EventSettings) -> anyhow::Result<u64> {
    let stream = js
        .get_or_create_stream(stream::Config {
            name: STREAM.to_string(),
            subjects: vec![format!("{PREFIX}.>"), CHECKPOINT_SUBJECT.to_string()],
            storage: stream::StorageType::File,
            num_replicas: settings.replicas,
            max_age: settings.max_age,
            max_bytes: settings.max_bytes,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow::anyhow!("creating the stream {STREAM}: {e}"))?;
    Ok(
        match stream
            .get_last_raw_message_by_subject(CHECKPOINT_SUBJECT)
            .await
        {
            Ok(m) => std::str::from_utf8(&m.payload)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0),
            Err(_) => 0,
        },
    )
}

/// Publishes events until the channel closes. `state` is set once the log has been
/// replayed (plan limits come from its registry); batches past the checkpoint that arrive
/// before then wait in memory.
pub async fn run(
    js: jetstream::Context,
    mut rx: Receiver<(u64, Vec<Change>)>,
    done: u64,
    state: Arc<OnceLock<Arc<AppState>>>,
    status: Arc<NatsStatus>,
) {
    let mut deferred: VecDeque<(u64, Vec<Change>)> = VecDeque::new();
    let mut checkpoint = done;
    let mut published_upto = done;
    let mut last_checkpoint = Instant::now();
    loop {
        let next = if deferred.is_empty() || state.get().is_none() {
            let wait = if published_upto > checkpoint {
                Duration::from_millis(200)
            } else {
                Duration::from_secs(3600)
            };
            match tokio::time::timeout(wait, rx.recv()).await {
                Ok(Some(batch)) => Some(batch),
                Ok(None) => break,
                Err(_) => None,
            }
        } else {
            None
        };
        if let Some((pos, changes)) = next {
            if pos <= done {
                continue;
            }
            deferred.push_back((pos, changes));
        }
        let Some(state) = state.get() else { continue };
        while let Some((pos, changes)) = deferred.pop_front() {
            let limit = |org: u64, meter: Meter| {
                let plan = state.registry.read().unwrap().plan(OrgId(org));
                match meter {
                    Meter::RawSignals => plan.raw_signal_limit,
                    Meter::MappedSignals => plan.mapped_signal_limit,
                    _ => 0,
                }
            };
            let events = events_of(pos, &changes, &limit);
            status
                .events_backlog
                .fetch_add(events.len() as u64, Ordering::Relaxed);
            publish_until_acked(&js, pos, &events).await;
            status
                .events_backlog
                .fetch_sub(events.len() as u64, Ordering::Relaxed);
            status
                .events_published
                .fetch_add(events.len() as u64, Ordering::Relaxed);
            published_upto = pos;
        }
        // The checkpoint: at most once a second under load, and as soon as things are idle.
        if published_upto > checkpoint
            && (rx.is_empty() || last_checkpoint.elapsed() >= Duration::from_secs(1))
        {
            let payload = published_upto.to_string();
            let ok = match js.publish(CHECKPOINT_SUBJECT, payload.into()).await {
                Ok(ack) => ack.await.is_ok(),
                Err(_) => false,
            };
            if ok {
                checkpoint = published_upto;
                last_checkpoint = Instant::now();
            }
        }
    }
}

/// Publishes `events` (pipelined) and waits for every ack, retrying the whole batch with a
/// backoff until it goes through; the ids make retried copies duplicates JetStream drops.
async fn publish_until_acked(js: &jetstream::Context, pos: u64, events: &[Event]) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match publish(js, pos, events).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %e, events = events.len(), "Publishing change events failed; retrying.");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

async fn publish(js: &jetstream::Context, pos: u64, events: &[Event]) -> anyhow::Result<()> {
    for chunk in events.chunks(5_000) {
        let mut acks = Vec::with_capacity(chunk.len());
        for e in chunk {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", e.id.as_str());
            headers.insert(POSITION_HEADER, pos.to_string().as_str());
            let body = serde_json::to_vec(&e.body)?;
            acks.push(
                js.publish_with_headers(e.subject.clone(), headers, body.into())
                    .await?,
            );
        }
        for ack in acks {
            ack.await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use trailspark_operators::graph::{LeadProfile, Processed, Status};
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
