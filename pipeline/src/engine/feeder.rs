//! The feeder thread: turns what the log hands the engine into epochs for the workers.
//!
//! It takes everything that accumulated, as epochs of up to `epoch_entries` entries: under
//! load epochs grow, which is what keeps the dataflow's throughput up (adaptive batching),
//! up to the cap that bounds their transient memory. Dedup happens here: entries arrive in
//! log order, so the first copy of a key is the first one read, and retries never enter the
//! dataflow (see `trailspark_core::dedup`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use trailspark_core::crm::{CrmBatch, IntegrationEvent};
use trailspark_core::dedup::FirstSeen;
use trailspark_core::scoring::Evaluation;
use trailspark_core::tenancy::ConfigEvent;
use trailspark_core::LogEntry;
use trailspark_operators::eligibility::{Env, EvalMark};
use trailspark_operators::product_orgs::ProductOrgUpdate;
use trailspark_operators::rules::{RuleBook, RuleChange, RuleVersion};
use trailspark_operators::usage::Meter;
use trailspark_operators::{Ident, Org, Signal};
use trailspark_sinks::read_models::CrmChange;

use super::channel::FeedTx;
use super::scoring::ScoringFeed;
use super::slices::Slicer;
use super::{FeedQueue, Side};

/// One epoch for a worker: its share of the inputs (worker 0 gets them all; operators
/// exchange by key) and the log position the epoch closes at.
#[derive(Default)]
pub(super) struct Epoch {
    /// First copies only (see `Inputs::seen`), entering; or, in a side epoch, hot-window
    /// evictions (-1) and rehydrations (+1); each with its rule segment
    /// ([`RuleBook::segment`]).
    pub signals: Vec<((u64, Signal), isize)>,
    /// The meters counted where the log is read: raw signals (copies included) and staged
    /// signals (first copies), per (org, receipt month).
    pub counted: Vec<((Org, u32, Meter), isize)>,
    pub rules: Vec<(RuleVersion, isize)>,
    pub product_orgs: Vec<ProductOrgUpdate>,
    /// Evaluations read (worker 0 hands them to the read models) and the marks they leave
    /// on their leads.
    pub evaluations: Vec<Arc<Evaluation>>,
    /// Pages of CRM records read and integrations deleted (worker 0 hands them to the read
    /// models).
    pub crm: Vec<CrmChange>,
    pub marks: Vec<(Ident, EvalMark)>,
    /// Changes of the orgs' scoring environments.
    pub env: Vec<((Org, Env), isize)>,
    /// Orgs with rule changes or a slice in this epoch, each with the position of its
    /// earliest edit still reaching back over history (see [`RuleBook::unsettled`]).
    pub reprocessing: Vec<(Org, Option<u64>)>,
    /// The last log position fed, this epoch included.
    pub upto: u64,
    /// A side epoch: changes from the hot window or a slice of reprocessing, not from the
    /// log (see the module doc).
    pub side: bool,
    /// Side epochs sent so far, this one included: the read models learn from it which of
    /// the hot window's moves have landed (the cold index's `landed`).
    pub sides: u64,
    /// When the epoch's oldest log entry was handed to the engine, just after its commit
    /// (`None` for a side epoch): the start of the freshness metrics' stages.
    pub committed: Option<Instant>,
}

pub(super) enum Feed {
    Batch(Epoch),
}

/// The dataflow's inputs, owned by the feeder thread.
pub(super) struct Inputs {
    pub feeds: Vec<FeedTx<Feed>>,
    pub book: RuleBook,
    /// Dedup keys already staged: entries arrive in log order, so the first copy of a key is
    /// the first one read, and retries never enter the dataflow.
    pub seen: FirstSeen,
    /// The last log position fed.
    pub upto: u64,
    /// Side epochs sent.
    pub sides: u64,
    /// The latest receipt time fed (see [`super::Engine::log_clock`]).
    pub clock: Arc<AtomicI64>,
    pub scoring: ScoringFeed,
    /// Epochs sent so far (the read models count those applied in [`super::Waiting`]).
    pub sent: u64,
    pub slices: Slicer,
}

/// Converts a rule config event into a rule-book change (public for tests that compute the
/// dataflow's sequential reference from the same log).
pub fn rule_change(e: &ConfigEvent) -> Option<RuleChange> {
    match e {
        ConfigEvent::RuleCreated {
            org_id,
            rule_id,
            created_at,
            def,
            reprocess,
        } => Some(RuleChange::Create {
            org: org_id.0,
            rule_id: *rule_id,
            created_at: *created_at,
            def: def.clone(),
            reprocess: *reprocess,
        }),
        ConfigEvent::RuleUpdated {
            rule_id,
            def,
            reprocess,
            ..
        } => Some(RuleChange::Update {
            rule_id: *rule_id,
            def: def.clone(),
            reprocess: *reprocess,
        }),
        ConfigEvent::RuleDeleted { rule_id, .. } => Some(RuleChange::Delete { rule_id: *rule_id }),
        ConfigEvent::SignalsProcessed { org_id, .. } => {
            Some(RuleChange::ProcessAll { org: org_id.0 })
        }
        _ => None,
    }
}

/// How the feeder cuts what waits into epochs.
#[derive(Clone, Copy, Debug)]
pub(super) struct Pace {
    /// The most entries one epoch takes.
    pub epoch_entries: usize,
    /// Epochs sent and not yet complete before log entries wait (`0`: no bound).
    pub in_flight: usize,
}

/// The feeder thread's loop, until the engine closes.
///
/// Log entries wait while `pace.in_flight` epochs are in the dataflow, and then go as one
/// epoch (a side change or a slice that is due takes them along at once: the bound only
/// ever delays entries, so it never changes what the dataflow computes). Sending each
/// journal group as its own epoch cost freshness under a steady load: a small epoch costs
/// the dataflow nearly what a larger one does (every arrangement it touches builds and
/// merges a batch, every reduce runs once per time), so at a few thousand signals a second,
/// in epochs of a dozen, the worker fell behind and each epoch queued behind the ones
/// before it (commit to complete: p50 up to 51 ms, p99 up to 102 ms, of which the worker's
/// own work for it was a couple of milliseconds). Waiting for the dataflow lets epochs
/// grow exactly as much as the load needs.
///
/// While a reprocess reaches back over history (see `trailspark_operators::rules::book`),
/// a slice of it follows a round of log epochs, or goes when the log is quiet, once the
/// read models have applied the slice before it: another org's signals never wait behind
/// more than one slice.
pub(super) fn run(queue: &FeedQueue, inputs: &mut Inputs, pace: Pace) {
    let epoch_entries = pace.epoch_entries;
    loop {
        let (batch, sides) = {
            let mut st = queue.state.lock().unwrap();
            loop {
                let room =
                    pace.in_flight == 0 || inputs.sent - st.completed < pace.in_flight as u64;
                if (room && !st.chunks.is_empty()) || !st.sides.is_empty() || st.closed {
                    break;
                }
                if inputs.slice_due(st.applied) {
                    break;
                }
                st = queue.not_empty.wait(st).unwrap();
            }
            if st.closed && st.chunks.is_empty() && st.sides.is_empty() {
                break;
            }
            (
                {
                    st.queued = 0;
                    std::mem::take(&mut st.chunks)
                },
                std::mem::take(&mut st.sides),
            )
        };
        queue.not_full.notify_all();
        let total = batch.iter().map(|(c, _)| c.len()).sum();
        let mut epoch = Vec::with_capacity(epoch_entries.min(total));
        // When the oldest entry of the epoch being filled was handed over.
        let mut oldest = None;
        if let Some((_, at)) = batch.first() {
            crate::metrics::since(&crate::metrics::METRICS.freshness.taken, *at);
        }
        for (chunk, at) in &batch {
            for entry in chunk.iter() {
                oldest.get_or_insert(*at);
                epoch.push(entry);
                if epoch.len() == epoch_entries {
                    inputs.feed(&epoch, oldest.take());
                    epoch.clear();
                }
            }
        }
        inputs.feed(&epoch, oldest);
        // After the entries that were waiting with them: a side change was decided
        // on state no later than those entries, and the hot window keeps each
        // signal's evictions and rehydrations alternating in the order it queued
        // them, which this keeps.
        for side in sides {
            inputs.feed_side(side);
        }
        // Checked before taking the queue's lock, which a round without reprocessing skips.
        if inputs.book.reprocessing() {
            let applied = queue.state.lock().unwrap().applied;
            if inputs.slice_due(applied) {
                inputs.feed_slice();
            }
        }
    }
}

impl Inputs {
    /// Sends one epoch to the workers, its oldest entry handed over at `committed`. Blocks
    /// while they are behind.
    fn feed(&mut self, entries: &[&(u64, LogEntry)], committed: Option<Instant>) {
        let Some(upto) = entries.last().map(|(p, _)| *p) else {
            return;
        };
        crate::metrics::METRICS
            .epoch_entries
            .observe(entries.len() as f64);
        let mut epoch = Epoch {
            upto,
            sides: self.sides,
            committed,
            ..Default::default()
        };
        let mut counted: BTreeMap<(Org, u32, Meter), isize> = BTreeMap::new();
        let mut reprocessing = BTreeSet::new();
        let mut clock = self.clock.load(Ordering::Relaxed);
        for (pos, entry) in entries.iter().copied() {
            match entry {
                LogEntry::Signal(s) => {
                    let month = Signal::month_of(s.received_at);
                    clock = clock.max(s.received_at);
                    *counted
                        .entry((s.org_id.0, month, Meter::RawSignals))
                        .or_default() += 1;
                    let key = s.dedup_bits();
                    if self.seen.insert(s.org_id.0, key) {
                        *counted
                            .entry((s.org_id.0, month, Meter::StagedSignals))
                            .or_default() += 1;
                        let seg = self.book.stage(s.org_id.0, *pos);
                        epoch
                            .signals
                            .push(((seg, Signal::from_record_keyed(*pos, s, key)), 1));
                    }
                }
                LogEntry::Config(e) => {
                    if let ConfigEvent::Integration(IntegrationEvent::Deleted {
                        id, org_id, ..
                    }) = e
                    {
                        epoch.crm.push(CrmChange::Forget(org_id.0, *id));
                    }
                    if let Some(change) = rule_change(e) {
                        let diffs = self.book.apply(*pos, change);
                        if let Some((v, _)) = diffs.first() {
                            reprocessing.insert(v.org);
                        }
                        epoch.rules.extend(diffs);
                    }
                    self.scoring.config(e, &mut epoch.env);
                }
                LogEntry::Evaluation(e) => {
                    let e = Arc::new(Evaluation::clone(e));
                    if let Some(mark) = self.scoring.evaluation(&e) {
                        epoch.marks.push(mark);
                        epoch.evaluations.push(e);
                    }
                }
                LogEntry::ProductOrgUpdate(p) if !p.product_org_id.is_empty() => epoch
                    .product_orgs
                    .push(ProductOrgUpdate::from_record(*pos, p)),
                LogEntry::ProductOrgUpdate(_) => {}
                LogEntry::Crm(b) => epoch
                    .crm
                    .push(CrmChange::Page(Arc::new(CrmBatch::clone(b)))),
                // Delivery progress is the destinations' own state (their ledger follows
                // the log); nothing in the dataflow depends on it.
                LogEntry::Delivery(_) => {}
            }
        }
        epoch.counted = counted.into_iter().collect();
        epoch.reprocessing = reprocessing
            .into_iter()
            .map(|org| (org, self.book.unsettled(org)))
            .collect();
        self.clock.store(clock, Ordering::Relaxed);
        self.upto = upto;
        self.send(epoch);
        if let Some(at) = committed {
            crate::metrics::since(&crate::metrics::METRICS.freshness.fed, at);
        }
    }

    /// Sends one side epoch (see [`Side`]) to the workers.
    fn feed_side(&mut self, side: Side) {
        // A signal's segment is the same as when it was first fed (see RuleBook::segment),
        // so an eviction retracts exactly what went in.
        let book = &self.book;
        let segmented = |s: Signal| (book.segment(s.org, s.pos), s);
        let signals = match side {
            Side::Evict(v) => v.into_iter().map(|s| (segmented(s), -1)).collect(),
            Side::Rehydrate(v) => v.into_iter().map(|s| (segmented(s), 1)).collect(),
        };
        self.sides += 1;
        self.send(Epoch {
            signals,
            upto: self.upto,
            side: true,
            sides: self.sides,
            ..Default::default()
        });
    }

    /// Whether a slice of reprocessing should go now: a reprocess is reaching back, and the
    /// read models (having applied `applied` epochs) have applied the slice before.
    fn slice_due(&mut self, applied: u64) -> bool {
        self.book.reprocessing() && self.slices.ready(applied)
    }

    /// Sends one slice of reprocessing as a side epoch: at the time after the last, it
    /// changes only rule versions.
    fn feed_slice(&mut self) {
        let Some((org, rules)) = self.book.advance(self.slices.size()) else {
            return;
        };
        let reprocessing = vec![(org, self.book.unsettled(org))];
        self.send(Epoch {
            rules,
            reprocessing,
            upto: self.upto,
            side: true,
            sides: self.sides,
            ..Default::default()
        });
        self.slices.sent(self.sent);
        let metrics = &crate::metrics::METRICS;
        metrics.reprocess_slices.inc();
        metrics
            .reprocessing_orgs
            .set(self.book.reprocessing_orgs() as i64);
    }

    fn send(&mut self, epoch: Epoch) {
        self.sent += 1;
        let (upto, side, sides) = (epoch.upto, epoch.side, epoch.sides);
        let mut first = Some(epoch);
        for tx in &self.feeds {
            let e = first.take().unwrap_or(Epoch {
                upto,
                side,
                sides,
                ..Default::default()
            });
            if tx.send(Feed::Batch(e)).is_err() {
                tracing::error!("The dataflow workers have stopped.");
            }
        }
    }
}
