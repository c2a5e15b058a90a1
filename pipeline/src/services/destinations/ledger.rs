//! Every destination's delivery state, derived from the log alone.
//!
//! The ledger follows the log from the replay on. A destination's queue holds, per lead,
//! the latest evaluation not yet settled there: an evaluation enters it (unless its values
//! equal what was last delivered for the lead), and a [`DeliveryEvent::Results`] naming that
//! evaluation takes it out, as delivered or failed. A restart replays both, so it resumes
//! with exactly the evaluations no result settled: at most the batches in flight at a crash
//! are sent again, and sending the same values twice leaves the CRM as it was.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use trailspark_core::crm::destination::fingerprint;
use trailspark_core::crm::{
    DeliveryEvent, DeliveryStatus, Destination, DestinationEvent, IntegrationEvent, RecordResult,
};
use trailspark_core::scoring::Evaluation;
use trailspark_core::tenancy::{ConfigEvent, OrgId};
use trailspark_core::LogEntry;

use crate::log::{Committed, Follower};

/// An evaluation waiting for a destination, with its log position.
#[derive(Clone, Debug)]
pub struct Queued {
    pub position: u64,
    pub evaluation: Arc<Evaluation>,
}

impl Queued {
    pub fn fingerprint(&self) -> u64 {
        let e = &self.evaluation;
        fingerprint(e.score, &e.reasoning, e.propensity)
    }
}

/// Counts of one destination, as its status shows them.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Counts {
    pub queued: usize,
    pub delivered: u64,
    /// Records whose latest result is a failure.
    pub failed: usize,
    /// Evaluations not sent because their values equal what the record already has.
    pub unchanged: u64,
    /// The greatest evaluation position settled.
    pub delivered_through: u64,
    pub last_result_at: Option<i64>,
}

#[derive(Default)]
struct DestState {
    org: OrgId,
    integration_id: u64,
    active: bool,
    config: Option<Destination>,
    pending: HashMap<String, Queued>,
    /// (position, lead): the queue in log order.
    order: BTreeSet<(u64, String)>,
    /// Lead → fingerprint of the values last delivered.
    last: HashMap<String, u64>,
    /// Lead → its latest result.
    results: HashMap<String, RecordResult>,
    failed: BTreeSet<String>,
    delivered: u64,
    unchanged: u64,
    through: u64,
    last_result_at: Option<i64>,
}

impl DestState {
    fn dequeue(&mut self, lead: &str) {
        if let Some(q) = self.pending.remove(lead) {
            self.order.remove(&(q.position, lead.to_string()));
        }
    }

    /// Queues `q` for `lead` unless the lead already has these values (`force` queues it
    /// regardless: a retry).
    fn enqueue(&mut self, lead: &str, q: &Queued, force: bool) -> bool {
        if !force && self.last.get(lead) == Some(&q.fingerprint()) {
            self.dequeue(lead);
            return false;
        }
        self.dequeue(lead);
        self.order.insert((q.position, lead.to_string()));
        self.pending.insert(lead.to_string(), q.clone());
        true
    }
}

#[derive(Default)]
struct State {
    dests: BTreeMap<u64, DestState>,
    /// Per org, each lead's latest evaluation: what a new destination starts from.
    latest: HashMap<OrgId, HashMap<String, Queued>>,
    applied: u64,
}

impl State {
    fn enqueue_all(&mut self, id: u64) {
        let Some(d) = self.dests.get_mut(&id) else {
            return;
        };
        if let Some(latest) = self.latest.get(&d.org) {
            for (lead, q) in latest {
                d.enqueue(lead, q, false);
            }
        }
    }

    fn set(&mut self, dest: &Destination) {
        let known = self.dests.contains_key(&dest.id);
        let d = self.dests.entry(dest.id).or_default();
        let was_active = known && d.active;
        let remapped = d.config.as_ref().is_some_and(|c| {
            c.field_mapping != dest.field_mapping || c.integration_id != dest.integration_id
        });
        d.org = dest.org_id;
        d.integration_id = dest.integration_id;
        d.active = dest.active();
        d.config = Some(dest.clone());
        if !d.active {
            // Send Evaluations off: nothing is queued.
            d.pending.clear();
            d.order.clear();
            return;
        }
        if remapped {
            // New fields hold nothing yet: every lead's latest result goes again.
            d.last.clear();
        }
        if !was_active || remapped {
            self.enqueue_all(dest.id);
        }
    }

    fn evaluation(&mut self, position: u64, e: &Evaluation) {
        let q = Queued {
            position,
            evaluation: Arc::new(e.clone()),
        };
        for d in self.dests.values_mut() {
            if d.org == e.org_id && d.active && !d.enqueue(&e.lead_id, &q, false) {
                d.unchanged += 1;
            }
        }
        self.latest
            .entry(e.org_id)
            .or_default()
            .insert(e.lead_id.clone(), q);
    }

    fn delivery(&mut self, event: &DeliveryEvent) {
        match event {
            DeliveryEvent::Results {
                destination_id,
                at,
                through,
                results,
                ..
            } => {
                let Some(d) = self.dests.get_mut(destination_id) else {
                    return;
                };
                for r in results {
                    if d.pending
                        .get(&r.lead_id)
                        .is_some_and(|q| q.evaluation.id == r.evaluation_id)
                    {
                        d.dequeue(&r.lead_id);
                    }
                    match r.status {
                        DeliveryStatus::Delivered => {
                            d.last.insert(r.lead_id.clone(), r.fingerprint);
                            d.failed.remove(&r.lead_id);
                            d.delivered += 1;
                        }
                        DeliveryStatus::Failed => {
                            d.failed.insert(r.lead_id.clone());
                        }
                    }
                    d.results.insert(r.lead_id.clone(), r.clone());
                }
                d.through = d.through.max(*through);
                d.last_result_at = Some(*at);
            }
            DeliveryEvent::Retry {
                org_id,
                destination_id,
                lead_ids,
                ..
            } => {
                let latest = self.latest.get(org_id);
                let Some(d) = self.dests.get_mut(destination_id) else {
                    return;
                };
                let leads: Vec<String> = if lead_ids.is_empty() {
                    d.failed.iter().cloned().collect()
                } else {
                    lead_ids.clone()
                };
                for lead in leads {
                    d.failed.remove(&lead);
                    if let Some(q) = latest.and_then(|l| l.get(&lead)) {
                        if !d.pending.contains_key(&lead) {
                            d.enqueue(&lead, q, true);
                        }
                    }
                }
            }
        }
    }
}

/// The ledger: follows the log, and answers the delivery service and the API.
#[derive(Default)]
pub struct Ledger {
    state: Mutex<State>,
    /// Woken when something may have been queued.
    pub wake: tokio::sync::Notify,
    applied: Mutex<Option<tokio::sync::watch::Sender<u64>>>,
}

impl Follower for Ledger {
    fn follow(&self, entries: &Committed) {
        let mut s = self.state.lock().unwrap();
        for (pos, e) in entries.iter() {
            match e {
                LogEntry::Config(ConfigEvent::Destination(DestinationEvent::Set {
                    destination,
                })) => s.set(destination),
                LogEntry::Config(ConfigEvent::Destination(DestinationEvent::Deleted {
                    id,
                    ..
                })) => {
                    s.dests.remove(id);
                }
                LogEntry::Config(ConfigEvent::Integration(IntegrationEvent::Deleted {
                    id,
                    ..
                })) => s.dests.retain(|_, d| d.integration_id != *id),
                LogEntry::Evaluation(e) => s.evaluation(*pos, e),
                LogEntry::Delivery(d) => s.delivery(d),
                _ => {}
            }
            s.applied = *pos;
        }
        let applied = s.applied;
        drop(s);
        if let Some(tx) = self.applied.lock().unwrap().as_ref() {
            tx.send_replace(applied);
        }
        self.wake.notify_one();
    }
}

impl Ledger {
    pub fn new() -> Arc<Ledger> {
        let (tx, _) = tokio::sync::watch::channel(0);
        Arc::new(Ledger {
            applied: Mutex::new(Some(tx)),
            ..Default::default()
        })
    }

    /// Waits until the ledger has applied the log up to `position`.
    pub async fn wait_applied(&self, position: u64) {
        let rx = self
            .applied
            .lock()
            .unwrap()
            .as_ref()
            .map(|tx| tx.subscribe());
        if let Some(mut rx) = rx {
            let _ = rx.wait_for(|p| *p >= position).await;
        }
    }

    /// The oldest `n` queued evaluations of destination `id`, in log order.
    pub fn take(&self, id: u64, n: usize) -> Vec<Queued> {
        let s = self.state.lock().unwrap();
        let Some(d) = s.dests.get(&id) else {
            return Vec::new();
        };
        d.order
            .iter()
            .take(n)
            .filter_map(|(_, lead)| d.pending.get(lead).cloned())
            .collect()
    }

    /// Active destinations with something queued.
    pub fn busy(&self) -> Vec<u64> {
        let s = self.state.lock().unwrap();
        s.dests
            .iter()
            .filter(|(_, d)| d.active && !d.pending.is_empty())
            .map(|(id, _)| *id)
            .collect()
    }

    pub fn counts(&self, id: u64) -> Counts {
        let s = self.state.lock().unwrap();
        let Some(d) = s.dests.get(&id) else {
            return Counts::default();
        };
        Counts {
            queued: d.pending.len(),
            delivered: d.delivered,
            failed: d.failed.len(),
            unchanged: d.unchanged,
            delivered_through: d.through,
            last_result_at: d.last_result_at,
        }
    }

    /// Latest results of destination `id` with `status` (all when `None`), newest first, at
    /// most `limit`, optionally of one lead.
    pub fn results(
        &self,
        id: u64,
        status: Option<DeliveryStatus>,
        lead: Option<&str>,
        limit: usize,
    ) -> Vec<RecordResult> {
        let s = self.state.lock().unwrap();
        let Some(d) = s.dests.get(&id) else {
            return Vec::new();
        };
        let mut v: Vec<RecordResult> = match status {
            Some(DeliveryStatus::Failed) => d
                .failed
                .iter()
                .filter_map(|l| d.results.get(l).cloned())
                .collect(),
            _ => d
                .results
                .values()
                .filter(|r| status.is_none_or(|s| r.status == s))
                .cloned()
                .collect(),
        };
        v.retain(|r| lead.is_none_or(|l| r.lead_id == l));
        v.sort_by(|a, b| b.position.cmp(&a.position).then(a.lead_id.cmp(&b.lead_id)));
        v.truncate(limit);
        v
    }

    /// Failed leads of destination `id` (what a retry of everything queues).
    pub fn failed_leads(&self, id: u64) -> Vec<String> {
        let s = self.state.lock().unwrap();
        s.dests
            .get(&id)
            .map(|d| d.failed.iter().cloned().collect())
            .unwrap_or_default()
    }
}
