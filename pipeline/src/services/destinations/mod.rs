//! The delivery service: writes every evaluation to each active destination.
//!
//! What is queued comes from the [`Ledger`], which derives it from the log. One worker per
//! destination with something queued takes the oldest evaluations (up to its CRM's batch
//! limit), looks the leads up in the read models, hands the batch to the destination's
//! [`Writer`], and appends each record's final result to the log while it writes the next
//! batch (at most one batch awaits its record). So a failing or paused destination holds
//! up nobody but itself, and a restart resumes from the log with at most the batches in
//! flight sent again (two: one being written, and one whose results are being appended).
//!
//! Transient failures back off per destination (spec §6.6: 1 min, 5 min, 30 min, 2 h, 12
//! h, scaled by [`DestinationConfig::retry_base`]); after the fifth a record is recorded as
//! failed with the last error, and `POST …/retry` queues it again. A daily rate limit
//! pauses the destination until it resets; refused credentials disconnect the integration.

mod ledger;
mod manage;
pub mod view;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use trailspark_core::crm::destination::{DeliveryError, RecordResult};
use trailspark_core::crm::seal::SealKey;
use trailspark_core::crm::{
    DeliveryEvent, DeliveryStatus, Destination, Integration, IntegrationKind, Status,
};
use trailspark_crm::client::CrmHttp;
use trailspark_crm::CrmError;
use trailspark_operators::{IdKind, Ident};
use trailspark_queries::scoring::contact::contact_of;
use trailspark_sinks::destinations::{writer, Delivery, Outcome, Writer, WriterConfig};
use trailspark_sinks::read_models::ReadModels;

use crate::control::{now_ms, Control};
use crate::services::crm::integration_config;
pub use ledger::{Counts, Ledger, Queued};
pub use manage::DestinationInput;

/// How deliveries run (the defaults are the server's options: `config/crm.rs`).
#[derive(Clone, Debug)]
pub struct DestinationConfig {
    /// The first retry's wait; later ones are 5×, 30×, 120× and 720× it.
    pub retry_base: Duration,
    /// Attempts per record before it is recorded as failed.
    pub max_attempts: u32,
    /// How long a Salesforce `REQUEST_LIMIT_EXCEEDED` pauses a destination (the org's
    /// allocation is a rolling 24 hours, with no reset time to wait for).
    pub limit_pause: Duration,
}

const BACKOFF: [u32; 5] = [1, 5, 30, 120, 720];

/// What a writer is built from: the destination's and the integration's versions, and the
/// sealed credentials (a rotation changes them without an edit).
type WriterKey = (i64, i64, String);
/// A batch's results on their way to the log.
type Recording = tokio::task::JoinHandle<Result<(), String>>;
/// A writer with what it was built from.
type Built = (WriterKey, Arc<dyn Writer>);

/// A destination's state in this process: pauses and backoff (not on the log: a restart
/// simply tries again).
#[derive(Clone, Debug, Default)]
pub struct Runtime {
    /// Paused until (ms), and why: a daily limit, a disconnected integration.
    pub paused_until: Option<i64>,
    pub reason: Option<String>,
    /// Backing off until (ms) after a transient failure.
    pub retry_at: Option<i64>,
    pub last_error: Option<String>,
    pub last_attempt_at: Option<i64>,
    /// Evaluations in the batch being written.
    pub in_flight: usize,
    /// Failed attempts per lead (a record's own, or its batch's).
    attempts: HashMap<String, u32>,
}

pub struct DestinationService {
    control: Arc<Control>,
    read: Arc<ReadModels>,
    pub ledger: Arc<Ledger>,
    seal: SealKey,
    http: CrmHttp,
    config: DestinationConfig,
    /// Per destination: the writer and what it was built from.
    writers: Mutex<HashMap<u64, Built>>,
    runtime: Mutex<HashMap<u64, Runtime>>,
    running: Mutex<HashSet<u64>>,
}

/// The next UTC midnight after `now` (ms): when HubSpot's daily limit is assumed to reset
/// (it resets at midnight in the account's time zone, which the API does not say).
fn next_midnight(now: i64) -> i64 {
    now - now.rem_euclid(86_400_000) + 86_400_000
}

impl DestinationService {
    pub fn new(
        control: Arc<Control>,
        read: Arc<ReadModels>,
        ledger: Arc<Ledger>,
        seal: SealKey,
        config: DestinationConfig,
        http: CrmHttp,
    ) -> Arc<DestinationService> {
        Arc::new(DestinationService {
            http,
            control,
            read,
            ledger,
            seal,
            config,
            writers: Mutex::default(),
            runtime: Mutex::default(),
            running: Mutex::default(),
        })
    }

    pub fn runtime(&self, id: u64) -> Runtime {
        self.runtime
            .lock()
            .unwrap()
            .get(&id)
            .cloned()
            .unwrap_or_default()
    }

    fn with_runtime(&self, id: u64, f: impl FnOnce(&mut Runtime)) {
        f(self.runtime.lock().unwrap().entry(id).or_default());
    }

    /// The destination and its integration, from the registry.
    fn lookup(&self, id: u64) -> Option<(Destination, Integration)> {
        let reg = self.control.registry.read().unwrap();
        let d = reg.destinations().get(id)?.clone();
        let i = reg.integrations().get(d.integration_id)?.clone();
        Some((d, i))
    }

    /// The writer for `d` on `i`, built again when either changed.
    fn writer(&self, d: &Destination, i: &Integration) -> Result<Arc<dyn Writer>, CrmError> {
        let key = (d.updated_at, i.updated_at, i.sealed.clone());
        if let Some((k, w)) = self.writers.lock().unwrap().get(&d.id) {
            if *k == key {
                return Ok(w.clone());
            }
        }
        let w: Arc<dyn Writer> = Arc::from(self.build_writer(d, i)?);
        self.writers.lock().unwrap().insert(d.id, (key, w.clone()));
        Ok(w)
    }

    fn build_writer(&self, d: &Destination, i: &Integration) -> Result<Box<dyn Writer>, CrmError> {
        let config = WriterConfig {
            integration: integration_config(&self.seal, i)?,
            fields: d.field_mapping.clone(),
        };
        writer(config, self.http.clone())
    }

    /// Runs deliveries until the server stops.
    pub async fn run(self: Arc<Self>) {
        loop {
            let now = now_ms();
            for id in self.ledger.busy() {
                let rt = self.runtime(id);
                let waiting = rt.paused_until.is_some_and(|t| t > now)
                    || rt.retry_at.is_some_and(|t| t > now);
                if waiting || !self.running.lock().unwrap().insert(id) {
                    continue;
                }
                let me = self.clone();
                tokio::spawn(async move {
                    me.deliver(id).await;
                    me.running.lock().unwrap().remove(&id);
                    me.ledger.wake.notify_one();
                });
            }
            let _ =
                tokio::time::timeout(Duration::from_millis(250), self.ledger.wake.notified()).await;
        }
    }

    /// Delivers destination `id`'s queue, a batch at a time, until it is empty or must wait.
    /// A batch's results are recorded while the next batch is written (so the log's
    /// append does not idle the CRM's rate), with at most one batch awaiting its record.
    async fn deliver(&self, id: u64) {
        let mut recording: Option<(HashSet<String>, Recording)> = None;
        loop {
            let next = {
                let none = HashSet::new();
                let skip = recording.as_ref().map_or(&none, |(ids, _)| ids);
                self.deliver_one(id, skip).await
            };
            if let Some((_, h)) = recording.take() {
                if !self.recorded(id, h).await {
                    return;
                }
            }
            let Some((ids, event)) = next else {
                return;
            };
            let (control, ledger) = (self.control.clone(), self.ledger.clone());
            let h = tokio::spawn(async move {
                let pos = control
                    .commit_delivery(event)
                    .await
                    .map_err(|e| e.to_string())?;
                ledger.wait_applied(pos).await;
                Ok(())
            });
            recording = Some((ids, h));
        }
    }

    /// Waits for a batch's results to be on the log (and applied); `false` when they could
    /// not be appended (the batch stays queued, after a backoff).
    async fn recorded(&self, id: u64, h: Recording) -> bool {
        match h.await.map_err(|e| e.to_string()).and_then(|r| r) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, destination = id, "Could not record deliveries.");
                self.backoff(id, 1, e);
                false
            }
        }
    }

    /// Writes one batch (skipping evaluations in `skip`, whose results are being recorded);
    /// answers its evaluations and the results to record, or `None` when there is nothing
    /// to do now.
    async fn deliver_one(
        &self,
        id: u64,
        skip: &HashSet<String>,
    ) -> Option<(HashSet<String>, DeliveryEvent)> {
        let (d, i) = self.lookup(id)?;
        if !d.active() {
            return None;
        }
        if i.status != Status::Connected {
            self.with_runtime(id, |r| {
                r.reason = Some(format!(
                    "the integration is disconnected: {}",
                    i.reason.as_deref().unwrap_or("reconnect it")
                ))
            });
            return None;
        }
        let now = now_ms();
        let rt = self.runtime(id);
        if rt.paused_until.is_some_and(|t| t > now) || rt.retry_at.is_some_and(|t| t > now) {
            return None;
        }
        let w = match self.writer(&d, &i) {
            Ok(w) => w,
            Err(e) => {
                self.with_runtime(id, |r| r.last_error = Some(e.to_string()));
                return None;
            }
        };
        let batch = self.ledger.take(id, w.batch_size(), skip);
        if batch.is_empty() {
            return None;
        }
        self.with_runtime(id, |r| {
            r.in_flight = batch.len();
            r.last_attempt_at = Some(now);
            r.paused_until = None;
            r.reason = None;
        });
        let results = self.attempt(&d, &i, &*w, &batch).await;
        if let Some(new) = w.rotated() {
            if let Err(e) = self
                .control
                .rotate_integration_credentials(i.id, self.seal.seal(&new))
                .await
            {
                tracing::warn!(error = %e, "Could not keep rotated CRM credentials.");
            }
        }
        self.with_runtime(id, |r| r.in_flight = 0);
        if results.is_empty() {
            // Nothing settled: the runtime says when to try again.
            return None;
        }
        let ids = results.iter().map(|r| r.evaluation_id.clone()).collect();
        let through = batch.iter().map(|q| q.position).max().unwrap_or(0);
        Some((
            ids,
            DeliveryEvent::Results {
                org_id: d.org_id,
                destination_id: id,
                at: now_ms(),
                through,
                results,
            },
        ))
    }

    fn backoff(&self, id: u64, attempt: u32, error: String) {
        let step = BACKOFF[(attempt.max(1) as usize - 1).min(BACKOFF.len() - 1)];
        let wait = self.config.retry_base * step;
        self.with_runtime(id, |r| {
            r.retry_at = Some(now_ms() + wait.as_millis() as i64);
            r.last_error = Some(error);
        });
    }

    /// The batch's deliveries (what the CRM needs of each lead), the evaluations they are
    /// for, and the results of those that cannot be delivered (a lead without an email).
    fn prepare<'q>(
        &self,
        d: &Destination,
        i: &Integration,
        batch: &'q [Queued],
    ) -> (Vec<Delivery>, Vec<&'q Queued>, Vec<RecordResult>) {
        let mut results = Vec::new();
        let mut deliveries = Vec::new();
        let mut queued = Vec::new();
        let models = self.read.read();
        for q in batch {
            let e = &q.evaluation;
            let contact = IdKind::parse(&e.lead.kind)
                .map(|k| Ident::new(e.org_id.0, k, e.lead.value.as_str()))
                .and_then(|lead| contact_of(&models, &lead));
            let Some(c) = contact else {
                results.push(result(
                    q,
                    1,
                    Outcome::failed(
                        "no_email",
                        "the lead has no email to find its CRM record by",
                    ),
                ));
                continue;
            };
            deliveries.push(Delivery {
                lead_id: e.lead_id.clone(),
                email: c.email,
                first_name: c.first_name,
                last_name: c.last_name,
                company: c.company,
                domain: c.domain,
                account_record: c
                    .crm_account
                    .filter(|(integration, _)| *integration == i.id)
                    .map(|(_, id)| id),
                score: e.score,
                reasoning: e.reasoning.clone(),
                evaluated_at: e.evaluated_at,
                propensity: e.propensity,
                create: d.create_records && d.create_for_scores.contains(&e.score),
            });
            queued.push(q);
        }
        (deliveries, queued, results)
    }

    /// Builds the batch's deliveries, writes them, and answers the results that settled;
    /// what did not stays queued with the runtime saying when to try again.
    async fn attempt(
        &self,
        d: &Destination,
        i: &Integration,
        w: &dyn Writer,
        batch: &[Queued],
    ) -> Vec<RecordResult> {
        let (mut deliveries, mut queued, mut results) = self.prepare(d, i, batch);
        // A lead the read models do not know yet is not a lead without an email: after a
        // restart the ledger may hold evaluations the models have not replayed to. Wait
        // for them to reach those evaluations, then look again.
        let unknown = results.iter().map(|r| r.position).max().unwrap_or(0);
        if unknown > self.read.applied() {
            self.read.wait_for(unknown, Duration::from_secs(30)).await;
            (deliveries, queued, results) = self.prepare(d, i, batch);
        }
        if deliveries.is_empty() {
            return results;
        }
        let id = d.id;
        let attempts_of = |lead: &str| {
            self.runtime
                .lock()
                .unwrap()
                .get(&id)
                .and_then(|r| r.attempts.get(lead).copied())
                .unwrap_or(0)
                + 1
        };
        match w.write(&deliveries).await {
            Ok(outcomes) => {
                let mut retried: Option<(u32, String)> = None;
                for (q, o) in queued.iter().zip(outcomes) {
                    let n = attempts_of(&q.evaluation.lead_id);
                    match o {
                        Outcome::Retry(e) if n < self.config.max_attempts => {
                            self.with_runtime(id, |r| {
                                r.attempts.insert(q.evaluation.lead_id.clone(), n);
                            });
                            let msg = format!("{}: {}", e.code, e.message);
                            retried =
                                Some(retried.map_or((n, msg.clone()), |(m, s)| (m.max(n), s)));
                        }
                        Outcome::Retry(e) => {
                            results.push(result(q, n, Outcome::Failed(exhausted(e, n))))
                        }
                        o => results.push(result(q, n, o)),
                    }
                }
                for r in &results {
                    self.with_runtime(id, |rt| {
                        rt.attempts.remove(&r.lead_id);
                    });
                }
                match retried {
                    Some((n, msg)) => self.backoff(id, n, msg),
                    None => self.with_runtime(id, |r| {
                        r.retry_at = None;
                        r.last_error = None;
                    }),
                }
            }
            Err(CrmError::RateLimited(m)) => {
                let until = match i.kind {
                    IntegrationKind::Hubspot => next_midnight(now_ms()),
                    _ => now_ms() + self.config.limit_pause.as_millis() as i64,
                };
                self.with_runtime(id, |r| {
                    r.paused_until = Some(until);
                    r.reason = Some(format!("the CRM's rate limit is used up: {m}"));
                });
            }
            Err(CrmError::Disconnected(m)) => {
                if let Err(e) = self
                    .control
                    .set_integration_status(i.id, Status::Disconnected, Some(m.clone()))
                    .await
                {
                    tracing::warn!(error = %e, "Could not record a disconnection.");
                }
                self.with_runtime(id, |r| {
                    r.reason = Some(format!("the integration is disconnected: {m}"))
                });
            }
            Err(CrmError::Unreachable(m)) => {
                let mut worst = 0;
                for q in &queued {
                    let n = attempts_of(&q.evaluation.lead_id);
                    worst = worst.max(n);
                    if n >= self.config.max_attempts {
                        let e = DeliveryError {
                            code: "unreachable".into(),
                            message: m.clone(),
                        };
                        results.push(result(q, n, Outcome::Failed(exhausted(e, n))));
                    } else {
                        self.with_runtime(id, |r| {
                            r.attempts.insert(q.evaluation.lead_id.clone(), n);
                        });
                    }
                }
                self.backoff(id, worst, format!("unreachable: {m}"));
            }
            Err(e @ (CrmError::Refused { .. } | CrmError::Invalid(_))) => {
                let code = match &e {
                    CrmError::Refused { status, .. } => format!("http_{status}"),
                    _ => "invalid".to_string(),
                };
                for q in &queued {
                    let n = attempts_of(&q.evaluation.lead_id);
                    results.push(result(q, n, Outcome::failed(&code, e.to_string())));
                }
                self.with_runtime(id, |r| r.last_error = Some(e.to_string()));
            }
        }
        results
    }
}

fn exhausted(e: DeliveryError, n: u32) -> DeliveryError {
    DeliveryError {
        code: e.code,
        message: format!("{} (gave up after {n} attempts)", e.message),
    }
}

/// A settled record's result (a `Retry` outcome is recorded as failed).
fn result(q: &Queued, attempts: u32, o: Outcome) -> RecordResult {
    let e = &q.evaluation;
    let mut r = RecordResult {
        lead_id: e.lead_id.clone(),
        evaluation_id: e.id.clone(),
        position: q.position,
        status: DeliveryStatus::Failed,
        object: None,
        record_id: None,
        created: false,
        propensity_written: false,
        error: None,
        attempts,
        fingerprint: q.fingerprint(),
    };
    match o {
        Outcome::Delivered {
            object,
            record_id,
            created,
            propensity_written,
        } => {
            r.status = DeliveryStatus::Delivered;
            r.object = Some(object);
            r.record_id = Some(record_id);
            r.created = created;
            r.propensity_written = propensity_written;
        }
        Outcome::Failed(err) | Outcome::Retry(err) => r.error = Some(err),
    }
    r
}
