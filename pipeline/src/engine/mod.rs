//! The dataflow engine: timely workers on their own threads running
//! [`trailspark_operators::graph::build`], fed with log entries in log order.
//!
//! Logical time is the log position: an entry at position `p` enters at time `p`, and after
//! each batch every worker's inputs advance past the batch's last position. Worker 0 watches a
//! probe on all outputs and reports to the read models the position up to which every
//! output change has been sent (timely state stays on its workers; the rest of the server
//! reaches them only through channels, STYLE.md rule 7). Feeding blocks when the workers fall
//! behind, which pushes back on the log writer and, through its bounded queue, makes
//! ingestion answer 503 instead of growing memory.

pub mod read;
mod stats;

use std::collections::{BTreeMap, VecDeque};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use differential_dataflow::input::Input;
use timely::dataflow::ProbeHandle;
use trailspark_core::tenancy::ConfigEvent;
use trailspark_core::LogEntry;
use trailspark_operators::dedup::FirstSeen;
use trailspark_operators::graph::build;
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
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            workers: 1,
            identity: IdentityConfig::default(),
            queue: 4,
            queue_entries: 1_000_000,
            epoch_entries: 20_000,
        }
    }
}

/// One epoch for a worker: its share of the inputs (worker 0 gets them all; operators
/// exchange by key) and the log position the epoch closes at.
#[derive(Default)]
struct Epoch {
    /// First copies only (see `Inputs::seen`).
    signals: Vec<Signal>,
    /// Signals read per (org, receipt month), copies included: the raw-signal meter.
    raw: Vec<((Org, u32), isize)>,
    rules: Vec<(RuleVersion, isize)>,
    product_orgs: Vec<ProductOrgUpdate>,
    upto: u64,
}

enum Feed {
    Batch(Epoch),
}

/// Entries waiting for the feeder thread, bounded so that a dataflow that falls behind
/// pushes back on the log instead of growing memory.
struct FeedQueue {
    state: Mutex<(Vec<(u64, LogEntry)>, bool)>,
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
}

/// A handle to the running engine. Entries must be fed in log order (one feeding thread:
/// the journal writer, the replay, or the JetStream tail). Dropping the handle stops the
/// feeder and the workers.
pub struct Engine {
    queue: Arc<FeedQueue>,
    pub read: Arc<ReadModels>,
    /// Sees every entry the engine is fed, in the same order (see [`Engine::attach_archiver`]).
    archiver: std::sync::OnceLock<Arc<trailspark_sinks::archive::Archiver>>,
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.queue.state.lock().unwrap().1 = true;
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
        std::thread::Builder::new()
            .name("timely".into())
            .spawn(move || {
                let guards = timely::execute(timely::Config::process(workers), move |worker| {
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
            state: Mutex::new((Vec::new(), false)),
            not_empty: Condvar::new(),
            not_full: Condvar::new(),
            capacity: cfg.queue_entries,
        });
        let mut inputs = Inputs {
            feeds,
            book: RuleBook::default(),
            seen: FirstSeen::default(),
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
                    let batch = {
                        let mut st = q.state.lock().unwrap();
                        while st.0.is_empty() && !st.1 {
                            st = q.not_empty.wait(st).unwrap();
                        }
                        if st.0.is_empty() {
                            break;
                        }
                        std::mem::take(&mut st.0)
                    };
                    q.not_full.notify_all();
                    for epoch in batch.chunks(epoch_entries) {
                        inputs.feed(epoch);
                    }
                }
            })
            .expect("spawning the feeder thread");
        Arc::new(Engine {
            queue,
            read,
            archiver: std::sync::OnceLock::new(),
        })
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
        while st.0.len() >= self.queue.capacity && !st.1 {
            st = self.queue.not_full.wait(st).unwrap();
        }
        if st.0.is_empty() {
            st.0 = entries;
        } else {
            st.0.extend(entries);
        }
        drop(st);
        self.queue.not_empty.notify_one();
    }
}

impl Inputs {
    /// Sends one epoch to the workers. Blocks while they are behind.
    fn feed(&mut self, entries: &[(u64, LogEntry)]) {
        let Some(upto) = entries.last().map(|(p, _)| *p) else {
            return;
        };
        let mut epoch = Epoch {
            upto,
            ..Default::default()
        };
        let mut raw: BTreeMap<(Org, u32), isize> = BTreeMap::new();
        for (pos, entry) in entries {
            match entry {
                LogEntry::Signal(s) => {
                    *raw.entry((s.org_id.0, Signal::month_of(s.received_at)))
                        .or_default() += 1;
                    let key = s.dedup_bits();
                    if self.seen.insert(s.org_id.0, key) {
                        epoch.signals.push(Signal::from_record_keyed(*pos, s, key));
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
        epoch.raw = raw.into_iter().collect();
        let mut first = Some(epoch);
        for tx in &self.feeds {
            let e = first.take().unwrap_or(Epoch {
                upto,
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
    let (mut signals_in, mut raw_in, mut rules_in, mut orgs_in) =
        worker.dataflow::<u64, _, _>(|scope| {
            let (signals_in, signals) = scope.new_collection::<Signal, isize>();
            let (raw_in, raw) = scope.new_collection::<(Org, u32), isize>();
            let (rules_in, rules) = scope.new_collection::<RuleVersion, isize>();
            let (orgs_in, updates) = scope.new_collection::<ProductOrgUpdate, isize>();
            let out = build(signals, raw, rules, identity);
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
            (signals_in, raw_in, rules_in, orgs_in)
        });
    let mut closing: VecDeque<u64> = VecDeque::new();
    let mut completed = 0u64;
    loop {
        let wait = if closing.is_empty() {
            Duration::from_millis(50)
        } else {
            Duration::ZERO
        };
        match rx.recv_timeout(wait) {
            Ok(Feed::Batch(Epoch {
                signals,
                raw,
                rules,
                product_orgs,
                upto,
            })) => {
                // Signals enter at their log position; config and product-org updates at the
                // epoch's time (rules carry their own position ranges).
                let now = *signals_in.time();
                for s in signals {
                    let t = s.pos.max(now);
                    signals_in.update_at(s, t, 1);
                }
                for (m, n) in raw {
                    raw_in.update_at(m, now, n);
                }
                for (r, d) in rules {
                    rules_in.update_at(r, now, d);
                }
                for u in product_orgs {
                    orgs_in.update_at(u, now, 1);
                }
                let next = (upto + 1).max(now);
                signals_in.advance_to(next);
                raw_in.advance_to(next);
                rules_in.advance_to(next);
                orgs_in.advance_to(next);
                signals_in.flush();
                raw_in.flush();
                rules_in.flush();
                orgs_in.flush();
                closing.push_back(upto);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        worker.step();
        while let Some(&t) = closing.front() {
            if probe.less_than(&(t + 1)) {
                break;
            }
            closing.pop_front();
            completed = t;
            if index == 0 {
                let _ = tx.send(Update::Applied(t));
            }
        }
        if let Some(s) = &stats {
            s.borrow_mut().report(index, completed);
        }
    }
}
