//! The dataflow engine: timely workers on their own threads running
//! [`trailspark_operators::graph::build`], fed with log entries in log order.
//!
//! Logical time follows the log: every entry of an epoch enters at the epoch's time, and after
//! it the inputs advance to `2u + 1` for the epoch's last position `u`. A side epoch of the
//! hot window (see [`crate::hot`]), which takes anonymous signals that waited too long out of
//! the dataflow and puts them back when an identify names them, enters at the next time:
//! changes that come from no log entry need times of their own that are still in log order.
//! An epoch is one time, not one time per position: a reduce computes each key once for each
//! time its input changed at, so times per position made every group, lead profile and status
//! recomputed once per signal of the epoch that touched it (measured on a replay: the
//! groups' reduce took 2.2 s of 40 with a time per position, under 0.4 s with one per epoch;
//! rules keep their position ranges in the rule versions, so nothing needs the finer times).
//! Worker 0 watches a probe on all outputs and reports to the
//! read models the time up to which every output change has been sent, with the log position
//! that covers (timely state stays on its workers; the rest of the server reaches them only
//! through channels, STYLE.md rule 7). Feeding blocks when the workers fall behind, which
//! pushes back on the log writer and, through its bounded queue, makes ingestion answer 503
//! instead of growing memory.

pub mod cold;
pub mod processed;
pub mod read;
mod stats;

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use differential_dataflow::input::Input;
use timely::dataflow::ProbeHandle;
use trailspark_core::tenancy::ConfigEvent;
use trailspark_core::LogEntry;
use trailspark_operators::dedup::FirstSeen;
use trailspark_operators::graph::{build, Meter};
use trailspark_operators::identity::IdentityConfig;
use trailspark_operators::product_orgs::{product_orgs, ProductOrgUpdate};
use trailspark_operators::rules::{RuleBook, RuleChange, RuleVersion};
use trailspark_operators::{Org, Signal};

use self::read::{ReadModels, Update};

/// Engine settings.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Timely worker threads.
    pub workers: usize,
    pub identity: IdentityConfig,
    /// Epochs that may wait for the workers before the feeder blocks.
    pub queue: usize,
    /// Entries that may wait for the feeder before `feed` blocks.
    pub queue_entries: usize,
    /// The most entries one epoch takes. Larger epochs amortize the dataflow's per-epoch
    /// work, but every operator holds an epoch's changes at once while it sorts them, and the
    /// read models hold an epoch's output until it completes: without a cap, a replay or a
    /// burst becomes one epoch as large as the queue, and its transient peak stays in the
    /// process's resident memory after it is freed.
    pub epoch_entries: usize,
    /// Merge work (in records) an arrangement does each time the worker is idle, until it
    /// is one compact batch. Without it differential merges only as new updates arrive, so
    /// what was retracted last (hot-window evictions, a reprocessed backlog) keeps its
    /// memory until enough later traffic pushes the merges along (measured: evicting 74% of
    /// a replay's signals grew the held updates by 37% without it, and halved them with
    /// it). Every idle step does this much work in each arrangement before new input is
    /// read, so it is kept small: at 100,000 an identify took 449 ms to show instead of 3.
    /// `None`: no idle merging.
    pub idle_merge_effort: Option<isize>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            workers: 1,
            identity: IdentityConfig::default(),
            queue: 4,
            queue_entries: 1_000_000,
            epoch_entries: 20_000,
            idle_merge_effort: Some(1_000),
        }
    }
}

/// One epoch for a worker: its share of the inputs (worker 0 gets them all; operators
/// exchange by key) and the log position the epoch closes at.
#[derive(Default)]
struct Epoch {
    /// First copies only (see `Inputs::seen`), entering; or, in a side epoch, hot-window
    /// evictions (-1) and rehydrations (+1).
    signals: Vec<(Signal, isize)>,
    /// The meters counted where the log is read: raw signals (copies included) and staged
    /// signals (first copies), per (org, receipt month).
    counted: Vec<((Org, u32, Meter), isize)>,
    rules: Vec<(RuleVersion, isize)>,
    product_orgs: Vec<ProductOrgUpdate>,
    /// The last log position fed, this epoch included.
    upto: u64,
    /// A side epoch: changes from the hot window, not from the log (see the module doc).
    side: bool,
    /// Side epochs sent so far, this one included: the read models learn from it which of
    /// the hot window's moves have landed (see [`cold::ColdIndex::landed`]).
    sides: u64,
}

enum Feed {
    Batch(Epoch),
}

/// Changes to the hot set that come from no log entry (see [`crate::hot`]).
pub enum Side {
    /// Signals leaving the dataflow: each must be, value for value, a signal in it.
    Evict(Vec<Signal>),
    /// Evicted signals coming back.
    Rehydrate(Vec<Signal>),
}

/// What waits for the feeder thread: log entries (bounded, so that a dataflow that falls
/// behind pushes back on the log instead of growing memory), side changes, and whether the
/// engine is closing.
#[derive(Default)]
struct Waiting {
    /// As fed: one chunk per call, never concatenated (copying a replay's hundreds of
    /// thousands of waiting entries into one growing vector cost the reading thread more
    /// than reading them).
    chunks: Vec<Vec<(u64, LogEntry)>>,
    /// Entries in `chunks`.
    queued: usize,
    sides: Vec<Side>,
    /// Side changes queued so far (each one's ticket is its number).
    queued_sides: u64,
    closed: bool,
}

/// The feeder thread's queue.
struct FeedQueue {
    state: Mutex<Waiting>,
    not_empty: Condvar,
    not_full: Condvar,
    capacity: usize,
}

/// The dataflow's inputs, owned by the feeder thread.
struct Inputs {
    feeds: Vec<SyncSender<Feed>>,
    book: RuleBook,
    /// Dedup keys already staged: entries arrive in log order, so the first copy of a key is
    /// the first one read, and retries never enter the dataflow.
    seen: FirstSeen,
    /// The last log position fed.
    upto: u64,
    /// Side epochs sent.
    sides: u64,
    /// The latest receipt time fed (see [`Engine::log_clock`]).
    clock: Arc<AtomicI64>,
}

/// A handle to the running engine. Entries must be fed in log order (one feeding thread:
/// the journal writer, the replay, or the JetStream tail). Dropping the handle stops the
/// feeder and the workers.
pub struct Engine {
    queue: Arc<FeedQueue>,
    pub read: Arc<ReadModels>,
    /// Sees every entry the engine is fed, in the same order (see [`Engine::attach_archiver`]).
    archiver: std::sync::OnceLock<Arc<trailspark_sinks::archive::Archiver>>,
    clock: Arc<AtomicI64>,
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.queue.state.lock().unwrap().closed = true;
        self.queue.not_empty.notify_all();
    }
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

impl Engine {
    /// Starts the workers and the read-model thread.
    pub fn start(cfg: EngineConfig) -> Arc<Engine> {
        let read = Arc::new(ReadModels::default());
        let (update_tx, update_rx) = mpsc::channel::<Update>();
        {
            let read = read.clone();
            std::thread::Builder::new()
                .name("read-models".into())
                .spawn(move || read.run(update_rx))
                .expect("spawning the read-model thread");
        }
        let workers = cfg.workers.max(1);
        let mut feeds = Vec::with_capacity(workers);
        let mut receivers = Vec::with_capacity(workers);
        for _ in 0..workers {
            let (tx, rx) = mpsc::sync_channel(cfg.queue);
            feeds.push(tx);
            receivers.push(Some(rx));
        }
        let receivers = Arc::new(Mutex::new(receivers));
        let update_tx = Arc::new(Mutex::new(update_tx));
        let identity = cfg.identity.clone();
        let idle_merge = cfg.idle_merge_effort;
        std::thread::Builder::new()
            .name("timely".into())
            .spawn(move || {
                let mut config = timely::Config::process(workers);
                differential_dataflow::configure(
                    &mut config.worker,
                    &differential_dataflow::Config::default().idle_merge_effort(idle_merge),
                );
                let guards = timely::execute(config, move |worker| {
                    let rx = receivers.lock().unwrap()[worker.index()]
                        .take()
                        .expect("one receiver per worker");
                    let tx = update_tx.lock().unwrap().clone();
                    run_worker(worker, rx, tx, &identity);
                });
                match guards {
                    Ok(g) => drop(g),
                    Err(e) => tracing::error!(error = %e, "Timely did not start."),
                }
            })
            .expect("spawning the timely thread");
        let queue = Arc::new(FeedQueue {
            state: Mutex::new(Waiting::default()),
            not_empty: Condvar::new(),
            not_full: Condvar::new(),
            capacity: cfg.queue_entries,
        });
        let clock = Arc::new(AtomicI64::new(i64::MIN));
        let mut inputs = Inputs {
            feeds,
            book: RuleBook::default(),
            seen: FirstSeen::default(),
            upto: 0,
            sides: 0,
            clock: clock.clone(),
        };
        let q = queue.clone();
        let epoch_entries = cfg.epoch_entries.max(1);
        std::thread::Builder::new()
            .name("dataflow-feeder".into())
            .spawn(move || {
                // Takes everything that accumulated, as epochs of up to `epoch_entries`: under
                // load epochs grow, which is what keeps the dataflow's throughput up (adaptive
                // batching), up to the cap that bounds their transient memory.
                loop {
                    let (batch, sides) = {
                        let mut st = q.state.lock().unwrap();
                        while st.chunks.is_empty() && st.sides.is_empty() && !st.closed {
                            st = q.not_empty.wait(st).unwrap();
                        }
                        if st.chunks.is_empty() && st.sides.is_empty() {
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
                    q.not_full.notify_all();
                    let mut epoch =
                        Vec::with_capacity(epoch_entries.min(batch.iter().map(Vec::len).sum()));
                    for entry in batch.iter().flatten() {
                        epoch.push(entry);
                        if epoch.len() == epoch_entries {
                            inputs.feed(&epoch);
                            epoch.clear();
                        }
                    }
                    inputs.feed(&epoch);
                    // After the entries that were waiting with them: a side change was decided
                    // on state no later than those entries, and the hot window keeps each
                    // signal's evictions and rehydrations alternating in the order it queued
                    // them, which this keeps.
                    for side in sides {
                        inputs.feed_side(side);
                    }
                }
            })
            .expect("spawning the feeder thread");
        Arc::new(Engine {
            queue,
            read,
            archiver: std::sync::OnceLock::new(),
            clock,
        })
    }

    /// The log's clock: the latest receipt time (Unix ms) of the signals fed so far, or
    /// `None` before the first. The hot window is measured on it rather than on the wall
    /// clock, so that a backfill of old events or a replay ages signals as the log did.
    pub fn log_clock(&self) -> Option<i64> {
        let t = self.clock.load(Ordering::Relaxed);
        (t != i64::MIN).then_some(t)
    }

    /// Queues a change of the hot set; it enters after the log entries already queued.
    /// Never blocks (side changes are few, and their caller holds the read models' lock to
    /// keep them in order). Returns its ticket: the read models have applied its outcome
    /// once [`cold::ColdIndex::landed`] reaches it.
    pub fn feed_side(&self, side: Side) -> u64 {
        let mut st = self.queue.state.lock().unwrap();
        st.sides.push(side);
        st.queued_sides += 1;
        let ticket = st.queued_sides;
        drop(st);
        self.queue.not_empty.notify_one();
        ticket
    }

    /// Makes the archiver receive every entry fed from now on. The engine is the one place
    /// every committed entry passes through in log order (replay, journal commits, the
    /// JetStream tail), so the archive follows the log exactly as the dataflow does.
    pub fn attach_archiver(&self, a: Arc<trailspark_sinks::archive::Archiver>) {
        let _ = self.archiver.set(a);
    }

    /// Feeds log entries, in log order. Returns at once unless the queue is full.
    pub fn feed(&self, entries: Vec<(u64, LogEntry)>) {
        if entries.is_empty() {
            return;
        }
        if let Some(a) = self.archiver.get() {
            a.offer(&entries);
        }
        let mut st = self.queue.state.lock().unwrap();
        while st.queued >= self.queue.capacity && !st.closed {
            st = self.queue.not_full.wait(st).unwrap();
        }
        st.queued += entries.len();
        st.chunks.push(entries);
        drop(st);
        self.queue.not_empty.notify_one();
    }
}

impl Inputs {
    /// Sends one epoch to the workers. Blocks while they are behind.
    fn feed(&mut self, entries: &[&(u64, LogEntry)]) {
        let Some(upto) = entries.last().map(|(p, _)| *p) else {
            return;
        };
        let mut epoch = Epoch {
            upto,
            sides: self.sides,
            ..Default::default()
        };
        let mut counted: BTreeMap<(Org, u32, Meter), isize> = BTreeMap::new();
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
                        epoch
                            .signals
                            .push((Signal::from_record_keyed(*pos, s, key), 1));
                    }
                }
                LogEntry::Config(e) => {
                    if let Some(change) = rule_change(e) {
                        epoch.rules.extend(self.book.apply(*pos, change));
                    }
                }
                LogEntry::ProductOrgUpdate(p) if !p.product_org_id.is_empty() => epoch
                    .product_orgs
                    .push(ProductOrgUpdate::from_record(*pos, p)),
                LogEntry::ProductOrgUpdate(_) => {}
            }
        }
        epoch.counted = counted.into_iter().collect();
        self.clock.store(clock, Ordering::Relaxed);
        self.upto = upto;
        self.send(epoch);
    }

    /// Sends one side epoch (see [`Side`]) to the workers.
    fn feed_side(&mut self, side: Side) {
        let signals = match side {
            Side::Evict(v) => v.into_iter().map(|s| (s, -1)).collect(),
            Side::Rehydrate(v) => v.into_iter().map(|s| (s, 1)).collect(),
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

    fn send(&mut self, epoch: Epoch) {
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

fn run_worker(
    worker: &mut timely::worker::Worker,
    rx: Receiver<Feed>,
    tx: Sender<Update>,
    identity: &IdentityConfig,
) {
    let index = worker.index();
    let stats = stats::ArrangementStats::enable(worker);
    let probe = ProbeHandle::new();
    let (mut signals_in, mut counted_in, mut rules_in, mut orgs_in) =
        worker.dataflow::<u64, _, _>(|scope| {
            let (signals_in, signals) = scope.new_collection::<Signal, isize>();
            let (counted_in, counted) = scope.new_collection::<(Org, u32, Meter), isize>();
            let (rules_in, rules) = scope.new_collection::<RuleVersion, isize>();
            let (orgs_in, updates) = scope.new_collection::<ProductOrgUpdate, isize>();
            let out = build(signals, counted, rules, identity);
            macro_rules! sink {
                ($coll:expr, $variant:ident) => {{
                    let tx = tx.clone();
                    $coll
                        .inspect_batch(move |_t, updates| {
                            let v = updates
                                .iter()
                                .map(|(d, t, r)| (d.clone(), *t, *r))
                                .collect();
                            let _ = tx.send(Update::$variant(v));
                        })
                        .probe_with(&probe);
                }};
            }
            sink!(out.processed, Processed);
            sink!(out.membership, Membership);
            sink!(out.conflicts, Conflicts);
            sink!(out.groups, Groups);
            sink!(out.usage, Usage);
            sink!(out.leads, Leads);
            sink!(product_orgs(updates), ProductOrgs);
            (signals_in, counted_in, rules_in, orgs_in)
        });
    // (time the epoch closes at, log position and side epochs it covers)
    let mut closing: VecDeque<(u64, u64, u64)> = VecDeque::new();
    let mut completed = 0u64;
    loop {
        // Wait for input only when nothing is left to do: no epoch closing and no operator
        // activated (idle merging keeps arrangements scheduled until they are compact).
        let activated = worker.activations().borrow().empty_for() == Some(Duration::ZERO);
        let wait = if closing.is_empty() && !activated {
            Duration::from_millis(50)
        } else {
            Duration::ZERO
        };
        match rx.recv_timeout(wait) {
            Ok(Feed::Batch(Epoch {
                signals,
                counted,
                rules,
                product_orgs,
                upto,
                side,
                sides,
            })) => {
                // Everything enters at the epoch's time (see the module doc).
                let now = *signals_in.time();
                for (s, d) in signals {
                    signals_in.update_at(s, now, d);
                }
                for (m, n) in counted {
                    counted_in.update_at(m, now, n);
                }
                for (r, d) in rules {
                    rules_in.update_at(r, now, d);
                }
                for u in product_orgs {
                    orgs_in.update_at(u, now, 1);
                }
                let next = if side {
                    now + 1
                } else {
                    (2 * upto + 1).max(now + 1)
                };
                signals_in.advance_to(next);
                counted_in.advance_to(next);
                rules_in.advance_to(next);
                orgs_in.advance_to(next);
                signals_in.flush();
                counted_in.flush();
                rules_in.flush();
                orgs_in.flush();
                closing.push_back((next - 1, upto, sides));
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        worker.step();
        while let Some(&(time, pos, sides)) = closing.front() {
            if probe.less_than(&(time + 1)) {
                break;
            }
            closing.pop_front();
            completed = pos;
            if index == 0 {
                let _ = tx.send(Update::Applied { time, pos, sides });
            }
        }
        if let Some(s) = &stats {
            s.borrow_mut().report(index, completed);
        }
    }
}
