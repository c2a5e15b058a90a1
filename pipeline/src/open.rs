//! Opening the log and rebuilding state from it, for the server and the CLI alike.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use trailspark_core::log::Peek;
use trailspark_core::{LogEntry, Registry};

use crate::engine::Engine;
use crate::log::jetstream::StreamSettings;
use crate::log::{jetstream, JetStreamLog, Journal, JournalConfig, Log, LogError};

/// Where the log lives.
#[derive(Clone, Debug, Default)]
pub struct LogLocation {
    pub data_dir: PathBuf,
    pub nats_url: Option<String>,
    pub nats_auth: crate::nats::NatsAuth,
    pub stream: StreamSettings,
    /// The archive a journal reconciles with on open (see [`reconcile`]); `None`: the
    /// data directory's `archive/`, when there is one.
    pub archive: Option<trailspark_sinks::archive::Location>,
}

/// Counts of what a replay saw.
#[derive(Clone, Debug, Default)]
pub struct ReplayStats {
    pub entries: u64,
    pub signals: u64,
    pub product_org_updates: u64,
    pub config_events: u64,
    /// Raw signals per (org, month `YYYYMM`): the quota's starting point.
    pub raw_signals: std::collections::HashMap<(trailspark_core::OrgId, u32), u64>,
}

/// An open log with the state rebuilt from it. Holding it holds the data directory's lock.
pub struct Opened {
    pub log: Log,
    pub registry: Registry,
    pub stats: ReplayStats,
    _lock: Option<File>,
}

/// Takes the data directory's exclusive lock: one process writes a journal at a time.
fn lock_data_dir(dir: &Path) -> anyhow::Result<File> {
    fs::create_dir_all(dir)
        .with_context(|| format!("creating data directory {}", dir.display()))?;
    let path = dir.join("LOCK");
    let f = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(_) => bail!(
            "the data directory {} is in use by another trailspark process (a running server?); \
             stop it, or use the HTTP admin API",
            dir.display()
        ),
    }
}

fn fold(registry: &mut Registry, stats: &mut ReplayStats, entry: &LogEntry) {
    match entry {
        LogEntry::Signal(s) => fold_signal(stats, s.org_id, s.received_at),
        other => fold_other(registry, stats, other),
    }
}

/// [`fold`] of what an offline open reads of an entry.
fn fold_peek(registry: &mut Registry, stats: &mut ReplayStats, peek: &Peek) {
    match peek {
        Peek::Signal(s) => fold_signal(stats, s.org_id, s.received_at),
        Peek::Entry(e) => fold_other(registry, stats, e),
    }
}

fn fold_signal(stats: &mut ReplayStats, org: trailspark_core::OrgId, received_at: i64) {
    stats.entries += 1;
    stats.signals += 1;
    let month = trailspark_operators::Signal::month_of(received_at);
    *stats.raw_signals.entry((org, month)).or_default() += 1;
}

/// Folds a config event or a product-org update.
fn fold_other(registry: &mut Registry, stats: &mut ReplayStats, entry: &LogEntry) {
    stats.entries += 1;
    match entry {
        LogEntry::Config(e) => {
            stats.config_events += 1;
            registry.apply(e);
            if let trailspark_core::ConfigEvent::SignalsRehydrated {
                org_id,
                month,
                count,
                ..
            } = e
            {
                *stats.raw_signals.entry((*org_id, *month)).or_default() += count;
            }
        }
        LogEntry::Signal(_) => unreachable!("signals fold through fold_peek"),
        LogEntry::ProductOrgUpdate(_) => stats.product_org_updates += 1,
    }
}

/// Replayed entries are handed to the engine in batches of this many.
const REPLAY_BATCH: usize = 50_000;

/// Opens the log at `loc` and replays it: into the registry, and into `engine` when given
/// (which then also receives every later commit, in log order).
pub async fn open(loc: &LogLocation, engine: Option<Arc<Engine>>) -> anyhow::Result<Opened> {
    let index_all = engine.is_some();
    open_inner(loc, engine, index_all, None).await
}

/// [`open`] over a NATS connection the caller already has (the server shares one
/// connection between the log, the NATS source and the change events).
pub async fn open_with_client(
    loc: &LogLocation,
    engine: Option<Arc<Engine>>,
    client: async_nats::Client,
) -> anyhow::Result<Opened> {
    let index_all = engine.is_some();
    open_inner(loc, engine, index_all, Some(client)).await
}

/// Opens the log to append signals without an engine (offline backfill): on JetStream the
/// whole stream is read so the dedup index knows every signal, not only what JetStream's
/// duplicate window remembers.
pub async fn open_for_append(loc: &LogLocation) -> anyhow::Result<Opened> {
    open_inner(loc, None, true, None).await
}

async fn open_inner(
    loc: &LogLocation,
    engine: Option<Arc<Engine>>,
    index_all: bool,
    client: Option<async_nats::Client>,
) -> anyhow::Result<Opened> {
    let mut registry = Registry::default();
    let mut stats = ReplayStats::default();
    let mut buf: Vec<(u64, LogEntry)> = Vec::new();
    // Folds one replayed entry into the registry and, in batches, into the engine.
    let mut replay = |pos: u64, e: LogEntry, buf: &mut Vec<(u64, LogEntry)>| {
        fold(&mut registry, &mut stats, &e);
        if let Some(engine) = &engine {
            buf.push((pos, e));
            if buf.len() >= REPLAY_BATCH {
                let full = std::mem::replace(buf, Vec::with_capacity(REPLAY_BATCH));
                tokio::task::block_in_place(|| engine.feed(full));
            }
        }
    };
    let log = match &loc.nats_url {
        None => {
            let lock = lock_data_dir(&loc.data_dir)?;
            let mut cfg = JournalConfig::new(loc.data_dir.join("journal"));
            let journal = match engine.clone() {
                Some(engine) => {
                    cfg.on_commit = Some(Arc::new(move |entries: Vec<(u64, LogEntry)>| {
                        engine.feed(entries)
                    }));
                    tokio::task::block_in_place(|| {
                        Journal::open(cfg, &mut |pos, e| {
                            replay(pos, e, &mut buf);
                            Ok(())
                        })
                    })?
                }
                // Without an engine nothing reads the signals themselves.
                None => tokio::task::block_in_place(|| {
                    Journal::open_peeking(cfg, &mut |_, p| {
                        fold_peek(&mut registry, &mut stats, &p);
                        Ok(())
                    })
                })?,
            };
            (Log::Journal(journal), Some(lock))
        }
        Some(url) => {
            let client = match client {
                Some(c) => c,
                None => crate::nats::connect(url, &loc.nats_auth).await?,
            };
            let js = tokio::time::timeout(
                Duration::from_secs(30),
                JetStreamLog::connect(client, &loc.stream),
            )
            .await
            .map_err(|_| anyhow::anyhow!("timed out waiting for JetStream at {url}"))??;
            // Without an engine only config matters (and, to append signals, every signal's
            // dedup key); with one, everything is replayed and then followed.
            let filter = if index_all {
                None
            } else {
                Some(jetstream::CONFIG_SUBJECT)
            };
            let mut last = 0;
            let indexer = js.clone();
            js.read(filter, &mut |pos, e| {
                last = pos;
                indexer.note(pos, &e);
                replay(pos, e, &mut buf);
                Ok(())
            })
            .await?;
            if let Some(engine) = engine.clone() {
                let tailer = js.clone();
                let start = last.max(js.head()) + 1;
                tokio::spawn(async move {
                    let noter = tailer.clone();
                    let feed = move |pos, e: LogEntry| {
                        noter.note(pos, &e);
                        tokio::task::block_in_place(|| engine.feed(vec![(pos, e)]))
                    };
                    if let Err(e) = tailer.tail(start, feed).await {
                        tracing::error!(error = %e, "Following the JetStream log stopped.");
                    }
                });
            }
            (Log::JetStream(Box::new(js)), None)
        }
    };
    if let Some(engine) = &engine {
        tokio::task::block_in_place(|| engine.feed(std::mem::take(&mut buf)));
    }
    if let Log::Journal(j) = &log.0 {
        let archive = match &loc.archive {
            Some(a) => Some(a.clone()),
            None => {
                let dir = loc.data_dir.join("archive");
                dir.exists()
                    .then(|| trailspark_sinks::archive::Location::parse(&dir.display().to_string()))
                    .transpose()?
            }
        };
        if let Some(archive) = archive {
            reconcile(j, &archive).await?;
        }
    }
    Ok(Opened {
        log: log.0,
        registry,
        stats,
        _lock: log.1,
    })
}

/// What [`reconcile`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Positions whose entries came back from the archive.
    pub restored: Vec<u64>,
    /// Positions the archive could not restore (config events, product-org updates,
    /// signals not yet in a file): marked lost, never reused.
    pub lost: Vec<u64>,
}

/// `1-4, 7, 9-12`: positions as ranges, for the log.
fn ranges(positions: &[u64]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut iter = positions.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end = iter.next().unwrap();
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    out.join(", ")
}

/// Makes the journal agree with the archive after its tail was lost.
///
/// A crash cuts at most a torn record, which was never acknowledged. But a disk fault or a
/// snapshot restore can lose acknowledged entries the archive already holds; the next
/// append then reused their positions as ids, so SQL showed the lost payload under the new
/// signal's id, the new signal was never archived (its id was "already archived"), and the
/// explorer and SQL disagreed. Here every position the archive has used past the journal's
/// head is appended again, in order: the archived signal when a file holds it, else an
/// [`EntryLost`](trailspark_core::ConfigEvent::EntryLost) marker. The journal then holds
/// what the archive holds, and new entries get positions past it.
pub async fn reconcile(
    journal: &Journal,
    archive: &trailspark_sinks::archive::Location,
) -> anyhow::Result<Reconciled> {
    use trailspark_sinks::archive::{positions_used, read_file};
    let head = journal.head();
    let (used, files) = positions_used(archive)
        .await
        .context("reading the archive's positions")?;
    if used <= head {
        return Ok(Reconciled::default());
    }
    let mut found = std::collections::BTreeMap::new();
    for f in files.iter().filter(|f| f.last > head && f.first <= used) {
        for row in read_file(archive, f).await? {
            if row.id > head && row.id <= used {
                found.insert(row.id, row.record);
            }
        }
    }
    let at = chrono::Utc::now().timestamp_millis();
    let mut done = Reconciled::default();
    let mut entries = Vec::with_capacity((used - head) as usize);
    for position in head + 1..=used {
        match found.remove(&position) {
            Some(record) => {
                done.restored.push(position);
                entries.push(LogEntry::Signal((*record).clone()));
            }
            None => {
                done.lost.push(position);
                entries.push(LogEntry::Config(trailspark_core::ConfigEvent::EntryLost {
                    position,
                    at,
                }));
            }
        }
    }
    tracing::warn!(
        journal_head = head,
        archive_used_through = used,
        restored = %ranges(&done.restored),
        lost = %ranges(&done.lost),
        "The journal ended before positions the archive holds; restored what the archive has and marked the rest lost, so no id is reused."
    );
    let mut next = head + 1;
    for chunk in entries.chunks(10_000) {
        let receipts = journal.append(chunk.to_vec()).await?;
        for r in receipts {
            if r.duplicate || r.position != next {
                bail!(
                    "reconciling with the archive: position {next} was appended at {} \
                     (duplicate: {})",
                    r.position,
                    r.duplicate
                );
            }
            next += 1;
        }
    }
    Ok(done)
}

/// Reads every entry of the log without taking the lock (for `log dump`).
pub async fn read_all(
    loc: &LogLocation,
    f: &mut (dyn FnMut(u64, LogEntry) -> Result<(), LogError> + Send),
) -> anyhow::Result<()> {
    match &loc.nats_url {
        None => {
            crate::log::journal::read(&loc.data_dir.join("journal"), f)?;
        }
        Some(url) => {
            let client = crate::nats::connect(url, &loc.nats_auth).await?;
            let js = JetStreamLog::connect(client, &loc.stream).await?;
            js.read(None, f).await?;
        }
    }
    Ok(())
}
