//! Read models: what the HTTP API and SQL read, kept current from the dataflow's output
//! changes. They are the dataflow's main sink.
//!
//! - [`epoch`]: how the workers hand changes over, and why they are applied per completed
//!   position as net changes;
//! - [`models`]: the models, keyed by org first;
//! - [`changes`]: the change events found while applying (published by the change-event
//!   sink);
//! - [`retention`]: retiring old signals and rehydrating archived ones;
//! - [`processed`]: the compact per-signal records;
//! - `stamp`: the outcome each archive row is written with;
//! - [`cold`]: the hot window's index of signals out of the dataflow;
//! - [`scoring`]: eligibility, evaluation candidates and evaluations per org.
//!
//! Readers see a consistent state: models change under one lock per completed position, and
//! a reader can wait until [`ReadModels::applied`] reaches the position of a write it made.

pub mod changes;
pub mod cold;
pub mod crm;
pub mod epoch;
pub mod models;
pub mod processed;
mod retention;
pub mod scoring;
mod stamp;
#[cfg(test)]
mod tests;

use std::sync::RwLock;
use std::time::Duration;

use tokio::sync::{watch, Notify};
use trailspark_operators::status::Processed;
use trailspark_operators::Org;

pub use self::changes::{coalesce, Change};
use self::epoch::{Batch, Held};
pub use self::epoch::{CrmChange, Marker, Update};
pub use self::models::{bump, lead_id, Models, OrgModels, Retention, Stats, Tab};
pub use self::stamp::ReadStamper;

/// Where the models send their [`Change`]s, tagged with the log position they reflect.
pub type ChangeSink = tokio::sync::mpsc::Sender<(u64, Vec<Change>)>;

/// Told how many epochs an apply covered, and when the log entries of those that held any
/// were committed ([`ReadModels::on_progress`]).
pub type Progress = Box<dyn Fn(u64, &[std::time::Instant]) + Send + Sync>;

/// The read models and their applied position.
pub struct ReadModels {
    models: RwLock<Models>,
    /// Anonymous and device ids that belong to a lead, kept beside the models under a lock of
    /// their own: ingestion asks about one per anonymous signal (a 202's `cold_storage`), and
    /// must not wait while the models apply an epoch under theirs.
    linked: RwLock<std::collections::HashSet<trailspark_operators::Ident>>,
    /// Woken when cold signals are wanted back (the hot window's rehydrator waits on it).
    pub wanted: Notify,
    applied: watch::Sender<u64>,
    /// Orgs with a reprocess still reaching back over history, each with the position of
    /// its earliest such edit: a read that waits for a position at or after it waits for
    /// the reprocess too ([`ReadModels::wait_settled`]).
    unsettled: std::sync::Mutex<std::collections::HashMap<Org, u64>>,
    changes: Option<ChangeSink>,
    /// Told how many epochs each apply covered (the engine paces reprocessing by it).
    progress: std::sync::OnceLock<Progress>,
    /// The log's head when the server opened it: the models are ready once past it.
    started_at_head: std::sync::atomic::AtomicU64,
}

/// Shown by the position they reflect (the models themselves are state, not identity).
impl std::fmt::Debug for ReadModels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadModels")
            .field("applied", &self.applied())
            .finish_non_exhaustive()
    }
}

impl Default for ReadModels {
    fn default() -> Self {
        ReadModels::new(None)
    }
}

impl ReadModels {
    /// Models that send their changes to `changes`, when given. The send blocks when the
    /// sink is full: a stalled consumer of changes (NATS down) holds the dataflow back rather
    /// than dropping changes or growing memory.
    pub fn new(changes: Option<ChangeSink>) -> ReadModels {
        ReadModels {
            models: RwLock::new(Models::default()),
            linked: RwLock::new(std::collections::HashSet::new()),
            wanted: Notify::new(),
            applied: watch::channel(0).0,
            unsettled: Default::default(),
            changes,
            progress: std::sync::OnceLock::new(),
            started_at_head: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// See [`Models::rehydrate`].
    pub fn rehydrate(&self, org: Org, signals: Vec<(u64, Processed)>, until: i64) -> usize {
        self.models.write().unwrap().rehydrate(org, signals, until)
    }

    /// See [`Models::retire`].
    pub fn retire(&self, org: Org, r: Retention) -> usize {
        self.models.write().unwrap().retire(org, r)
    }

    /// Applies changes from the workers until the channel closes: holds each worker's
    /// changes until an `Applied` marker says their position is complete, then applies the
    /// net change (see [`epoch`]).
    pub fn run(&self, rx: std::sync::mpsc::Receiver<Update>) {
        let mut held = Held::default();
        let mut pending: Vec<Change> = Vec::new();
        let mut ready: Vec<(u64, Vec<Change>)> = Vec::new();
        while let Ok(first) = rx.recv() {
            let mut settled: Vec<(u64, [Batch; 10])> = Vec::new();
            let mut sides = 0;
            let mut reprocessing = Vec::new();
            let mut committed = Vec::new();
            let mut next = Some(first);
            while let Some(u) = next {
                if let Some(marker) = held.hold(u) {
                    settled.push((marker.pos, held.settle(marker.time)));
                    sides = marker.sides;
                    reprocessing.extend(marker.reprocessing);
                    committed.extend(marker.committed);
                }
                next = rx.try_recv().ok();
            }
            let Some(&(applied, _)) = settled.last() else {
                continue;
            };
            let epochs = settled.len() as u64;
            let sink = self.changes.as_ref();
            let mut m = self.models.write().unwrap();
            let mut linked_changes = Vec::new();
            for (p, batches) in settled {
                for b in batches {
                    if let Batch::Membership(v) = &b {
                        linked_changes.extend(
                            v.iter()
                                .map(|((i, _), _)| i)
                                .filter(|i| !i.kind.persistent())
                                .cloned(),
                        );
                    }
                    m.apply_collect(b, sink.is_some().then_some(&mut pending));
                }
                if !pending.is_empty() {
                    ready.push((p, coalesce(std::mem::take(&mut pending))));
                }
            }
            m.cold.landed(sides);
            let wanted = m.cold.has_wanted();
            if !linked_changes.is_empty() {
                let mut linked = self.linked.write().unwrap();
                for i in linked_changes {
                    if m.org(i.org).lead_of.contains_key(&i) {
                        linked.insert(i);
                    } else {
                        linked.remove(&i);
                    }
                }
            }
            drop(m);
            if wanted {
                self.wanted.notify_one();
            }
            if let Some(sink) = sink {
                for batch in ready.drain(..) {
                    if sink.blocking_send(batch).is_err() {
                        tracing::warn!("The change-event publisher has stopped.");
                    }
                }
            }
            let unsettled_changed = !reprocessing.is_empty();
            if unsettled_changed {
                let mut u = self.unsettled.lock().unwrap();
                for (org, since) in reprocessing {
                    match since {
                        Some(p) => u.insert(org, p),
                        None => u.remove(&org),
                    };
                }
            }
            self.applied.send_if_modified(|cur| {
                let changed = applied > *cur;
                *cur = (*cur).max(applied);
                changed || unsettled_changed
            });
            if let Some(progress) = self.progress.get() {
                progress(epochs, &committed);
            }
        }
    }

    /// Sets what is told, after each apply, how many epochs (`Applied` markers) it covered
    /// and their commit times; only the first call counts.
    pub fn on_progress(&self, f: Progress) {
        let _ = self.progress.set(f);
    }

    /// Whether an anonymous or device id belongs to a lead, without waiting for the models'
    /// lock.
    pub fn is_linked(&self, ident: &trailspark_operators::Ident) -> bool {
        self.linked.read().unwrap().contains(ident)
    }

    pub fn read(&self) -> std::sync::RwLockReadGuard<'_, Models> {
        self.models.read().unwrap()
    }

    /// The models for a change made outside the dataflow's updates (the hot window's moves,
    /// which must happen under the lock that orders them).
    pub fn write(&self) -> std::sync::RwLockWriteGuard<'_, Models> {
        self.models.write().unwrap()
    }

    /// Records the log's head at open, which the replay must reach before readiness.
    pub fn set_started_at_head(&self, head: u64) {
        self.started_at_head
            .store(head, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn started_at_head(&self) -> u64 {
        self.started_at_head
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Changes of the applied position, for a service that reacts to new state.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }

    /// The log position the models reflect.
    pub fn applied(&self) -> u64 {
        *self.applied.borrow()
    }

    /// Waits until the models reflect log position `pos`, or `timeout` passes; returns whether
    /// they do. A reprocess asked for at or before `pos` may still be reaching back over
    /// history: [`ReadModels::wait_settled`] waits for that too.
    pub async fn wait_for(&self, pos: u64, timeout: Duration) -> bool {
        self.wait_until(timeout, |applied| applied >= pos).await
    }

    /// Waits until `done` holds of the applied position, checked at each change of it (or
    /// of the reprocessing state), or `timeout` passes; returns whether it holds.
    async fn wait_until(&self, timeout: Duration, done: impl Fn(u64) -> bool) -> bool {
        let mut rx = self.applied.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|p| done(*p)))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Whether every reprocess that `org` (or, with `None`, any org) asked for at or before
    /// log position `pos` has reached all of its history.
    pub fn settled(&self, org: Option<Org>, pos: u64) -> bool {
        let u = self.unsettled.lock().unwrap();
        match org {
            Some(o) => u.get(&o).is_none_or(|&since| since > pos),
            None => u.values().all(|&since| since > pos),
        }
    }

    /// Whether the models reflect `pos` with every reprocess asked for by then done (see
    /// [`ReadModels::settled`]).
    pub fn caught_up(&self, org: Option<Org>, pos: u64) -> bool {
        self.applied() >= pos && self.settled(org, pos)
    }

    /// [`ReadModels::wait_for`], and then until [`ReadModels::settled`]: what a reader of
    /// its own writes wants (a rule edit with reprocess reaches history a slice at a time,
    /// and other orgs do not wait for it, but the org that made it does).
    pub async fn wait_settled(&self, org: Option<Org>, pos: u64, timeout: Duration) -> bool {
        self.wait_until(timeout, |applied| applied >= pos && self.settled(org, pos))
            .await
    }
}
