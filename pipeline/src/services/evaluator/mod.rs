//! The evaluator: scores the leads the dataflow finds eligible, and appends each evaluation
//! to the log.
//!
//! - **Batch** (every `--evaluation-interval`, and once at start): it appends a tick of the
//!   clock, waits until the dataflow has derived eligibility as of that tick, and evaluates
//!   every eligible lead, orgs interleaved so that a large org does not hold the others back.
//! - **High intent**: whenever the read models move, leads a high-intent signal made eligible
//!   are evaluated at once, cooldown or not.
//! - **Manual** (`POST /api/leads/{id}/evaluate`): a tick for that org only, then the lead,
//!   cooldown or not, no matter whether anything changed.
//!
//! Every run holds one lock and waits until its evaluations are applied before it ends, so a
//! lead is never evaluated twice for the same signals; the evaluations on the log are what
//! marks a lead evaluated, so a restart replays them and asks no scorer again, and a crash
//! mid-batch leaves the rest eligible for the next batch. A scorer that fails (an LLM's
//! timeout, 429 or invalid answer) stores nothing: the lead is retried with backoff.

mod decide;
pub mod llm;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use trailspark_core::scoring::{Evaluation, SkipReason, Trigger};
use trailspark_core::tenancy::{OrgId, SharedRegistry};
use trailspark_operators::Ident;
use trailspark_sinks::read_models::scoring::Skip;
use trailspark_sinks::read_models::ReadModels;

use self::decide::{deterministic, prepare, record, Answer, Prepared, Skipped};
use self::llm::{LlmError, LlmScorer};
use crate::control::{now_ms, ConfigError, Control};

pub use self::llm::LlmConfig;

/// How the evaluator runs.
#[derive(Clone, Debug)]
pub struct EvaluatorConfig {
    pub interval: Duration,
    pub llm: Option<LlmConfig>,
}

/// Most evaluations per log append ...
const CHUNK: usize = 100;
/// ... and the longest scored evaluations wait for one.
const FLUSH: Duration = Duration::from_secs(1);
/// The longest a scorer failure waits before its retry.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Why a manual evaluation did not produce one.
#[derive(Debug, thiserror::Error)]
pub enum EvaluateError {
    #[error("not evaluated: {}", .0.reason.as_str())]
    Skipped(Skipped),
    #[error("{0}")]
    Scorer(LlmError),
    #[error("the lead's evaluation was not applied in time")]
    Timeout,
    #[error(transparent)]
    Config(#[from] ConfigError),
}

struct Retry {
    attempts: u32,
    due: Instant,
}

pub struct Evaluator {
    control: Arc<Control>,
    registry: SharedRegistry,
    read: Arc<ReadModels>,
    cfg: EvaluatorConfig,
    llm: Option<LlmScorer>,
    /// One run at a time (batch, high intent, manual).
    lock: tokio::sync::Mutex<()>,
    retries: Mutex<BTreeMap<Ident, Retry>>,
    /// Wakes the run loop when a retry is scheduled (its next wake-up may be earlier).
    wake: tokio::sync::Notify,
    /// Scorer calls made by this process (the deterministic scorer's included).
    pub calls: AtomicU64,
}

impl Evaluator {
    pub fn new(
        control: Arc<Control>,
        registry: SharedRegistry,
        read: Arc<ReadModels>,
        cfg: EvaluatorConfig,
    ) -> Arc<Evaluator> {
        let llm = cfg.llm.clone().map(LlmScorer::new);
        Arc::new(Evaluator {
            control,
            registry,
            read,
            cfg,
            llm,
            lock: tokio::sync::Mutex::new(()),
            retries: Mutex::new(BTreeMap::new()),
            wake: tokio::sync::Notify::new(),
            calls: AtomicU64::new(0),
        })
    }

    /// Runs batches on the interval and high-intent evaluations as the models move, after the
    /// replay has caught up.
    pub async fn run(self: Arc<Self>) {
        let mut applied = self.read.subscribe();
        while self.read.applied() < self.read.started_at_head() {
            if applied.changed().await.is_err() {
                return;
            }
        }
        let mut next_batch = Instant::now();
        loop {
            let retry_due = self
                .retries
                .lock()
                .unwrap()
                .values()
                .map(|r| r.due)
                .min()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                _ = tokio::time::sleep_until(next_batch) => {
                    self.batch().await;
                    next_batch = Instant::now() + self.cfg.interval;
                }
                _ = tokio::time::sleep_until(retry_due) => self.retry_due().await,
                _ = self.wake.notified() => {}
                r = applied.changed() => {
                    if r.is_err() {
                        return;
                    }
                    self.high_intent().await;
                }
            }
        }
    }

    /// A batch: tick, then every eligible lead, orgs interleaved; answers how many it
    /// evaluated.
    pub async fn batch(&self) -> usize {
        let _g = self.lock.lock().await;
        let now = now_ms();
        let pos = match self.control.tick(None, now).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "Could not append the evaluation tick.");
                return 0;
            }
        };
        if !self.read.wait_for(pos, Duration::from_secs(60)).await {
            tracing::warn!("The dataflow did not reach the evaluation tick in time.");
            return 0;
        }
        let leads = {
            let m = self.read.read();
            let per_org: Vec<Vec<Ident>> = m
                .orgs()
                .map(|o| m.org(o).scoring.candidates.keys().cloned().collect())
                .collect();
            interleave(per_org)
        };
        self.evaluate_all(leads).await
    }

    /// What the evaluator has done, for operators (`GET /api/admin/evaluation`).
    /// The evaluator's state, as `GET /api/admin/evaluation` shows it.
    pub fn status(&self) -> EvaluatorState {
        EvaluatorState {
            enabled: true,
            scorer: Some(
                self.llm
                    .as_ref()
                    .map_or_else(|| "deterministic".to_string(), |l| l.name()),
            ),
            interval_secs: Some(self.cfg.interval.as_secs()),
            scorer_calls: Some(self.calls.load(Ordering::Relaxed)),
            retrying: Some(self.retries.lock().unwrap().len()),
        }
    }

    async fn high_intent(&self) {
        let leads = {
            let m = self.read.read();
            let per_org: Vec<Vec<Ident>> = m
                .orgs()
                .map(|o| m.org(o).scoring.high_intent.iter().cloned().collect())
                .collect();
            interleave(per_org)
        };
        if leads.is_empty() {
            return;
        }
        let _g = self.lock.lock().await;
        self.evaluate_all(leads).await;
    }

    async fn retry_due(&self) {
        let now = Instant::now();
        let due: Vec<Ident> = {
            let r = self.retries.lock().unwrap();
            r.iter()
                .filter(|(_, x)| x.due <= now)
                .map(|(l, _)| l.clone())
                .collect()
        };
        let _g = self.lock.lock().await;
        self.evaluate_all(due).await;
    }

    /// Evaluates `leads` (each under the trigger the dataflow found), appending in chunks
    /// and waiting for each chunk to be applied; answers how many it evaluated.
    async fn evaluate_all(&self, leads: Vec<Ident>) -> usize {
        let mut n = 0;
        let mut evals = Vec::new();
        let mut since = Instant::now();
        let last = leads.len();
        for (i, lead) in leads.iter().enumerate() {
            match self.evaluate(lead, Trigger::Batch).await {
                Ok(Some(e)) => evals.push(e),
                Ok(None) | Err(EvaluateError::Skipped(_)) => {}
                Err(e) => tracing::debug!(error = %e, "Evaluation failed."),
            }
            // Append what is scored every CHUNK leads or every FLUSH (a slow scorer's work is
            // durable as it goes), and at the end.
            let due = evals.len() >= CHUNK || since.elapsed() >= FLUSH || i + 1 == last;
            if due && !evals.is_empty() {
                let k = evals.len();
                if let Err(e) = self.append(std::mem::take(&mut evals)).await {
                    tracing::warn!(error = %e, "Could not append evaluations; the next batch retries.");
                    return n;
                }
                n += k;
                since = Instant::now();
            }
        }
        n
    }

    async fn append(&self, evals: Vec<Evaluation>) -> Result<(), EvaluateError> {
        let positions = self.control.append_evaluations(evals).await?;
        let last = positions.last().copied().unwrap_or(0);
        if self.read.wait_for(last, Duration::from_secs(60)).await {
            Ok(())
        } else {
            Err(EvaluateError::Timeout)
        }
    }

    fn note_skip(
        &self,
        lead: &Ident,
        reason: &str,
        detail: Option<String>,
        rule: Option<u64>,
        basis: u64,
    ) {
        let mut m = self.read.write();
        m.scoring_mut(lead.org).skips.insert(
            lead.clone(),
            Skip {
                reason: reason.into(),
                detail,
                rule_id: rule,
                at: now_ms(),
                basis_pos: basis,
            },
        );
    }

    /// Checks and scores one lead; `Ok(None)` when there is nothing new to evaluate.
    async fn evaluate(
        &self,
        lead: &Ident,
        trigger: Trigger,
    ) -> Result<Option<Evaluation>, EvaluateError> {
        let now = now_ms();
        let prepared = {
            let m = self.read.read();
            let reg = self.registry.read().unwrap();
            prepare(&m, &reg, lead, trigger, now)
        };
        let p: Prepared = match prepared {
            Ok(Some(p)) => p,
            Ok(None) => return Ok(None),
            Err(s) => {
                // The dataflow's own reasons show from its state; record the evaluator's.
                if matches!(
                    s.reason,
                    SkipReason::ExcludedByRule
                        | SkipReason::EvaluationLimitReached
                        | SkipReason::NoActiveModel
                ) {
                    let detail = s
                        .rule
                        .as_ref()
                        .map(|(_, name)| format!("excluded by rule \"{name}\""));
                    self.note_skip(
                        lead,
                        s.reason.as_str(),
                        detail,
                        s.rule.as_ref().map(|r| r.0),
                        s.basis_pos,
                    );
                }
                self.retries.lock().unwrap().remove(lead);
                return Err(EvaluateError::Skipped(s));
            }
        };
        self.calls.fetch_add(1, Ordering::Relaxed);
        let answer = match &self.llm {
            None => deterministic(&p),
            Some(llm) => match llm.score(&p.context.json, &p.scored.contributions).await {
                Ok(a) => Answer {
                    score: a.score,
                    confidence: a.confidence,
                    reasoning: Some(a.reasoning),
                    propensity: a.propensity,
                    scorer: llm.name(),
                },
                Err(e) => {
                    self.failed(lead, &e, p.basis_pos);
                    return Err(EvaluateError::Scorer(e));
                }
            },
        };
        self.retries.lock().unwrap().remove(lead);
        Ok(Some(record(&p, answer, now)))
    }

    /// A scorer failure: recorded on the lead, retried with backoff (at least what a 429's
    /// `Retry-After` asks).
    fn failed(&self, lead: &Ident, e: &LlmError, basis: u64) {
        tracing::warn!(lead = %lead.value, error = %e, "The scorer failed; retrying later.");
        self.note_skip(lead, "evaluation_error", Some(e.to_string()), None, basis);
        let mut r = self.retries.lock().unwrap();
        let attempts = r.get(lead).map_or(0, |x| x.attempts) + 1;
        let mut wait = Duration::from_secs(1 << attempts.min(8)).min(MAX_BACKOFF);
        if let LlmError::RateLimited {
            retry_after: Some(after),
        } = e
        {
            wait = wait.max(*after).min(MAX_BACKOFF);
        }
        r.insert(
            lead.clone(),
            Retry {
                attempts,
                due: Instant::now() + wait,
            },
        );
        self.wake.notify_one();
    }

    /// `POST /api/leads/{id}/evaluate`: evaluates the lead now, bypassing its cooldown; the
    /// evaluation as applied.
    pub async fn evaluate_now(&self, lead: &Ident) -> Result<Evaluation, EvaluateError> {
        let _g = self.lock.lock().await;
        let pos = self.control.tick(Some(OrgId(lead.org)), now_ms()).await?;
        if !self.read.wait_for(pos, Duration::from_secs(30)).await {
            return Err(EvaluateError::Timeout);
        }
        let e = match self.evaluate(lead, Trigger::Manual).await? {
            Some(e) => e,
            None => unreachable!("a manual evaluation always prepares or skips"),
        };
        self.append(vec![e.clone()]).await?;
        Ok(e)
    }
}

/// Round-robin over the orgs' lists.
fn interleave(per_org: Vec<Vec<Ident>>) -> Vec<Ident> {
    let mut iters: Vec<_> = per_org.into_iter().map(|v| v.into_iter()).collect();
    let mut out = Vec::new();
    loop {
        let before = out.len();
        for it in &mut iters {
            if let Some(x) = it.next() {
                out.push(x);
            }
        }
        if out.len() == before {
            return out;
        }
    }
}

/// `GET /api/admin/evaluation`: the evaluator's state (only `enabled` when it is off).
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct EvaluatorState {
    pub enabled: bool,
    /// `deterministic`, or `llm:<model>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scorer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval_secs: Option<u64>,
    /// Calls made to the scorer since the start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scorer_calls: Option<u64>,
    /// Leads waiting to be retried after a scorer error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retrying: Option<usize>,
}
