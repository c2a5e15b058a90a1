//! Every destination's delivery state, derived from the log alone.
//!
//! The ledger follows the log from the replay on. A destination's queue holds, per lead,
//! the latest evaluation not yet settled there: an evaluation enters it (unless its values
//! equal what was last delivered for the lead), and a [`DeliveryEvent::Results`] naming that
//! evaluation takes it out, as delivered or failed. A restart replays both, so it resumes
//! with exactly the evaluations no result settled: at most the batches in flight at a crash
//! are sent again, and sending the same values twice leaves the CRM as it was.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
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
pub struct Ledger {
    state: Mutex<State>,
    /// Woken when something may have been queued.
    pub wake: tokio::sync::Notify,
    /// The log position applied.
    applied: tokio::sync::watch::Sender<u64>,
}

impl Follower for Ledger {
    fn follow(&self, entries: &Committed) {
        let Some(last) = entries.last().map(|(p, _)| *p) else {
            return;
        };
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
        }
        drop(s);
        self.applied.send_replace(last);
        self.wake.notify_one();
    }
}

impl Ledger {
    pub fn new() -> Arc<Ledger> {
        Arc::new(Ledger {
            state: Mutex::default(),
            wake: tokio::sync::Notify::new(),
            applied: tokio::sync::watch::channel(0).0,
        })
    }

    /// Waits until the ledger has applied the log up to `position`.
    pub async fn wait_applied(&self, position: u64) {
        let _ = self.applied.subscribe().wait_for(|p| *p >= position).await;
    }

    /// The oldest `n` queued evaluations of destination `id`, in log order, but those in
    /// `skip` (evaluation ids).
    pub fn take(&self, id: u64, n: usize, skip: &HashSet<String>) -> Vec<Queued> {
        let s = self.state.lock().unwrap();
        let Some(d) = s.dests.get(&id) else {
            return Vec::new();
        };
        d.order
            .iter()
            .filter_map(|(_, lead)| d.pending.get(lead))
            .filter(|q| !skip.contains(&q.evaluation.id))
            .take(n)
            .cloned()
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

    /// Every destination's counts added up (the metrics: per destination they would be as
    /// many series as orgs create destinations).
    pub fn totals(&self) -> Counts {
        let s = self.state.lock().unwrap();
        let mut t = Counts::default();
        for d in s.dests.values() {
            t.queued += d.pending.len();
            t.delivered += d.delivered;
            t.failed += d.failed.len();
            t.unchanged += d.unchanged;
        }
        t
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

#[cfg(test)]
mod tests {
    use super::*;
    use trailspark_core::crm::{DestinationFields, IntegrationKind};
    use trailspark_core::scoring::{Dimensions, LeadKey, Score, Trigger};

    fn evaluation(n: u64, lead: u64, score: Score) -> Evaluation {
        Evaluation {
            id: format!("ev_{n}"),
            org_id: OrgId(1),
            lead_id: format!("ld_{lead}"),
            lead: LeadKey {
                kind: "email".into(),
                value: format!("l{lead}@x.io"),
            },
            account_id: None,
            model_id: 1,
            model_version: 1,
            score,
            raw_score: score,
            confidence: 80,
            confidence_gate_applied: false,
            reasoning: format!("because {}", score.as_str()),
            contributions: vec![],
            propensity: None,
            trigger: Trigger::Manual,
            evaluated_at: n as i64,
            cooldown_until: None,
            basis_pos: 0,
            scorer: "deterministic".into(),
            dimensions: Dimensions::default(),
        }
    }

    fn destination(active: bool) -> LogEntry {
        LogEntry::Config(ConfigEvent::Destination(DestinationEvent::Set {
            destination: Box::new(Destination {
                id: 7,
                org_id: OrgId(1),
                integration_id: 3,
                kind: IntegrationKind::Hubspot,
                send_evaluations: active,
                field_mapping: DestinationFields {
                    score: "s".into(),
                    reasoning: "r".into(),
                    evaluated_at: "d".into(),
                    propensity: None,
                },
                create_records: false,
                create_for_scores: vec![Score::Hot],
                created_at: 0,
                updated_at: 0,
            }),
        }))
    }

    fn settle(q: &Queued, status: DeliveryStatus) -> RecordResult {
        RecordResult {
            lead_id: q.evaluation.lead_id.clone(),
            evaluation_id: q.evaluation.id.clone(),
            position: q.position,
            status,
            object: None,
            record_id: None,
            created: false,
            propensity_written: false,
            error: None,
            attempts: 1,
            fingerprint: q.fingerprint(),
        }
    }

    fn results(rs: Vec<RecordResult>) -> LogEntry {
        LogEntry::Delivery(Box::new(DeliveryEvent::Results {
            org_id: OrgId(1),
            destination_id: 7,
            at: 0,
            through: rs.iter().map(|r| r.position).max().unwrap_or(0),
            results: rs,
        }))
    }

    /// What a ledger shows: counts, and the queue as (lead, evaluation id).
    fn shown(l: &Ledger) -> (String, Vec<(String, String)>) {
        let c = l.counts(7);
        let q = l
            .take(7, usize::MAX, &HashSet::new())
            .into_iter()
            .map(|q| (q.evaluation.lead_id.clone(), q.evaluation.id.clone()))
            .collect();
        (format!("{c:?}"), q)
    }

    #[test]
    fn queues_settles_skips_unchanged_and_replays_to_the_same_state() {
        // A pseudo-random run: evaluations of 12 leads, with results for some of what is
        // queued; the same entries replayed in other chunkings give the same ledger.
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = |m: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % m
        };
        let live = Ledger::new();
        let mut log: Vec<(u64, LogEntry)> = vec![(1, destination(true))];
        live.follow(&Arc::new(log.clone()));
        let mut delivered = 0;
        for pos in 2..400u64 {
            let entry = if next(3) == 0 {
                let queued = live.take(7, 5, &HashSet::new());
                let picked: Vec<RecordResult> = queued
                    .iter()
                    .filter(|_| next(2) == 0)
                    .map(|q| settle(q, DeliveryStatus::Delivered))
                    .collect();
                delivered += picked.len() as u64;
                results(picked)
            } else {
                let score = [Score::Hot, Score::Warm, Score::Cold][next(3) as usize];
                LogEntry::Evaluation(Box::new(evaluation(pos, next(12), score)))
            };
            live.follow(&Arc::new(vec![(pos, entry.clone())]));
            log.push((pos, entry));
        }
        assert_eq!(live.counts(7).delivered, delivered);
        assert!(
            live.counts(7).unchanged > 0,
            "some results repeated what was delivered"
        );
        for chunk in [1, 7, 64, log.len()] {
            let replayed = Ledger::new();
            for part in log.chunks(chunk) {
                replayed.follow(&Arc::new(part.to_vec()));
            }
            assert_eq!(shown(&replayed), shown(&live), "chunks of {chunk}");
        }
        // Every queued lead's entry is its latest evaluation, and nothing delivered is queued.
        let mut latest: BTreeMap<String, String> = BTreeMap::new();
        for (_, e) in &log {
            if let LogEntry::Evaluation(e) = e {
                latest.insert(e.lead_id.clone(), e.id.clone());
            }
        }
        for (lead, id) in shown(&live).1 {
            assert_eq!(latest[&lead], id);
        }
    }

    #[test]
    fn turned_on_it_queues_each_leads_latest_and_a_retry_requeues_failures() {
        let l = Ledger::new();
        let e = |n, lead, s| LogEntry::Evaluation(Box::new(evaluation(n, lead, s)));
        l.follow(&Arc::new(vec![
            (1, destination(false)),
            (2, e(2, 1, Score::Cold)),
            (3, e(3, 1, Score::Hot)),
            (4, e(4, 2, Score::Warm)),
        ]));
        assert_eq!(l.counts(7).queued, 0, "off: nothing is queued");
        l.follow(&Arc::new(vec![(5, destination(true))]));
        let q = l.take(7, 10, &HashSet::new());
        assert_eq!(
            q.iter()
                .map(|q| q.evaluation.id.as_str())
                .collect::<Vec<_>>(),
            ["ev_3", "ev_4"]
        );
        l.follow(&Arc::new(vec![(
            6,
            results(vec![
                settle(&q[0], DeliveryStatus::Delivered),
                settle(&q[1], DeliveryStatus::Failed),
            ]),
        )]));
        assert_eq!((l.counts(7).queued, l.counts(7).failed), (0, 1));
        assert_eq!(l.failed_leads(7), ["ld_2"]);
        l.follow(&Arc::new(vec![(
            7,
            LogEntry::Delivery(Box::new(DeliveryEvent::Retry {
                org_id: OrgId(1),
                destination_id: 7,
                at: 0,
                lead_ids: vec![],
            })),
        )]));
        assert_eq!(l.take(7, 10, &HashSet::new())[0].evaluation.id, "ev_4");
        assert_eq!(l.counts(7).failed, 0);
        // The same hot result again is not queued; a new one is.
        l.follow(&Arc::new(vec![
            (8, e(8, 1, Score::Hot)),
            (9, e(9, 1, Score::Warm)),
        ]));
        assert_eq!(l.counts(7).unchanged, 1);
        assert_eq!(l.counts(7).queued, 2);
    }
}
