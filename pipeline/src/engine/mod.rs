//! The dataflow engine: timely workers on their own threads running
//! [`trailspark_operators::graph::build`], fed with log entries in log order (the engine is
//! one of the log's followers), their output applied to the read models.
//!
//! Logical time follows the log: every entry of an epoch enters at the epoch's time, and after
//! it the inputs advance to `2u + 1` for the epoch's last position `u`. A side epoch of the
//! hot window (see [`crate::services::hot`]), which takes anonymous signals that waited too long out of
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
//! through channels). Feeding blocks when the workers fall behind, which
//! pushes back on the log writer and, through its bounded queue, makes ingestion answer 503
//! instead of growing memory.

mod channel;
mod feeder;
mod merging;
mod scoring;
mod slices;
mod stats;
mod worker;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use trailspark_core::dedup::FirstSeen;
use trailspark_core::LogEntry;
use trailspark_operators::identity::IdentityConfig;
use trailspark_operators::rules::RuleBook;
use trailspark_operators::Signal;
use trailspark_sinks::read_models::{ReadModels, Update};

pub use self::feeder::rule_change;
use self::feeder::Inputs;
use crate::log::{Committed, Follower};

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
    /// It is done only while the worker has no epoch in flight (see `merging`).
    /// `None`: no idle merging.
    pub idle_merge_effort: Option<isize>,
    /// Whether the dataflow derives leads' eligibility for evaluation.
    pub eligibility: bool,
    /// Staged signals after which an org's rule segment ends: the finest slice a rule edit
    /// with reprocess is cut into (see `trailspark_operators::rules::book`).
    pub segment_signals: u32,
    /// Epochs of log entries the feeder lets into the dataflow before the first of them is
    /// complete; entries committed meanwhile wait and go together as the next epoch. `0`:
    /// no bound (every wake of the feeder sends what it found). See [`feeder::run`].
    pub epochs_in_flight: usize,
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
            eligibility: true,
            segment_signals: trailspark_operators::rules::SEGMENT_SIGNALS,
            epochs_in_flight: 1,
        }
    }
}

/// Changes to the hot set that come from no log entry (see [`crate::services::hot`]).
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
    /// than reading them). Each with when it was handed over, just after its commit (for
    /// the freshness metrics).
    chunks: Vec<(Committed, Instant)>,
    /// Entries in `chunks`.
    queued: usize,
    sides: Vec<Side>,
    /// Side changes queued so far (each one's ticket is its number).
    queued_sides: u64,
    /// Epochs the read models have applied (the feeder paces reprocessing slices by it).
    applied: u64,
    /// Epochs complete in the dataflow, as worker 0 sees them (the feeder bounds the epochs
    /// in flight by it).
    completed: u64,
    closed: bool,
}

/// The feeder thread's queue.
struct FeedQueue {
    state: Mutex<Waiting>,
    not_empty: Condvar,
    not_full: Condvar,
    capacity: usize,
}

/// A handle to the running engine. Entries must be fed in log order (one feeding thread:
/// the journal writer, the replay, or the JetStream tail). Dropping the handle stops the
/// feeder and the workers.
pub struct Engine {
    queue: Arc<FeedQueue>,
    pub read: Arc<ReadModels>,
    clock: Arc<AtomicI64>,
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.queue.state.lock().unwrap().closed = true;
        self.queue.not_empty.notify_all();
    }
}

impl Engine {
    /// Starts the workers and the read-model thread, with read models of their own.
    pub fn start(cfg: EngineConfig) -> Arc<Engine> {
        Engine::with_models(cfg, Arc::new(ReadModels::default()))
    }

    /// Starts the workers and the thread that applies their output to `read`.
    pub fn with_models(cfg: EngineConfig, read: Arc<ReadModels>) -> Arc<Engine> {
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
            let (tx, rx) = channel::feed_channel(cfg.queue);
            feeds.push(tx);
            receivers.push(Some(rx));
        }
        let receivers = Arc::new(Mutex::new(receivers));
        let queue = Arc::new(FeedQueue {
            state: Mutex::new(Waiting::default()),
            not_empty: Condvar::new(),
            not_full: Condvar::new(),
            capacity: cfg.queue_entries,
        });
        {
            // The read models count the epochs they apply, for the feeder's slices.
            let queue = queue.clone();
            read.on_progress(Box::new(move |epochs, committed| {
                for at in committed {
                    crate::metrics::since(&crate::metrics::METRICS.freshness.applied, *at);
                }
                queue.state.lock().unwrap().applied += epochs;
                queue.not_empty.notify_one();
            }));
        }
        let completed: worker::OnComplete = {
            let queue = queue.clone();
            Arc::new(move || {
                queue.state.lock().unwrap().completed += 1;
                queue.not_empty.notify_one();
            })
        };
        let update_tx = Arc::new(Mutex::new(update_tx));
        let identity = cfg.identity.clone();
        let eligibility = cfg.eligibility;
        let idle_merge = cfg.idle_merge_effort;
        std::thread::Builder::new()
            .name("timely".into())
            .spawn(move || {
                let mut config = timely::Config::process(workers);
                merging::configure(&mut config.worker, idle_merge);
                let guards = timely::execute(config, move |worker| {
                    let rx = receivers.lock().unwrap()[worker.index()]
                        .take()
                        .expect("one receiver per worker");
                    let tx = update_tx.lock().unwrap().clone();
                    let completed = (worker.index() == 0).then(|| completed.clone());
                    worker::run(worker, rx, tx, completed, &identity, eligibility);
                });
                match guards {
                    Ok(g) => drop(g),
                    Err(e) => tracing::error!(error = %e, "Timely did not start."),
                }
            })
            .expect("spawning the timely thread");
        let clock = Arc::new(AtomicI64::new(i64::MIN));
        let mut inputs = Inputs {
            feeds,
            book: RuleBook::with_segment_signals(cfg.segment_signals),
            seen: FirstSeen::default(),
            upto: 0,
            sides: 0,
            clock: clock.clone(),
            scoring: Default::default(),
            sent: 0,
            slices: self::slices::Slicer::new(cfg.segment_signals),
        };
        let q = queue.clone();
        let pace = feeder::Pace {
            epoch_entries: cfg.epoch_entries.max(1),
            in_flight: cfg.epochs_in_flight,
        };
        std::thread::Builder::new()
            .name("dataflow-feeder".into())
            .spawn(move || feeder::run(&q, &mut inputs, pace))
            .expect("spawning the feeder thread");
        Arc::new(Engine { queue, read, clock })
    }

    /// The log's clock: the latest receipt time (Unix ms) of the signals fed so far, or
    /// `None` before the first. The hot window is measured on it rather than on the wall
    /// clock, so that a backfill of old events or a replay ages signals as the log did.
    pub fn log_clock(&self) -> Option<i64> {
        let t = self.clock.load(Ordering::Relaxed);
        (t != i64::MIN).then_some(t)
    }

    /// Epochs complete in the dataflow so far (log epochs, side epochs and slices alike).
    pub fn epochs_complete(&self) -> u64 {
        self.queue.state.lock().unwrap().completed
    }

    /// Queues a change of the hot set; it enters after the log entries already queued.
    /// Never blocks (side changes are few, and their caller holds the read models' lock to
    /// keep them in order). Returns its ticket: the read models have applied its outcome
    /// once the models' cold index has landed it (see
    /// `trailspark_sinks::read_models::cold::ColdIndex::landed`).
    pub fn feed_side(&self, side: Side) -> u64 {
        let mut st = self.queue.state.lock().unwrap();
        st.sides.push(side);
        st.queued_sides += 1;
        let ticket = st.queued_sides;
        drop(st);
        self.queue.not_empty.notify_one();
        ticket
    }

    /// Feeds log entries, in log order. Returns at once unless the queue is full.
    pub fn feed(&self, entries: Vec<(u64, LogEntry)>) {
        if !entries.is_empty() {
            self.feed_shared(Arc::new(entries));
        }
    }

    /// [`Self::feed`] of entries shared with the log's other followers.
    pub fn feed_shared(&self, entries: Committed) {
        if entries.is_empty() {
            return;
        }
        let mut st = self.queue.state.lock().unwrap();
        while st.queued >= self.queue.capacity && !st.closed {
            st = self.queue.not_full.wait(st).unwrap();
        }
        st.queued += entries.len();
        st.chunks.push((entries, Instant::now()));
        drop(st);
        self.queue.not_empty.notify_one();
    }
}

/// The engine follows the log: it is handed every committed entry, in log order.
impl Follower for Engine {
    fn follow(&self, entries: &Committed) {
        self.feed_shared(entries.clone());
    }
}
