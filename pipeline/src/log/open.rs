//! Opening the log and replaying it, for the server and the CLI alike: config events fold
//! into the tenancy registry, and every entry goes to the log's [`Followers`].

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::time::Duration;

use trailspark_core::log::Peek;
use trailspark_core::subjects::CONFIG_SUBJECT;
use trailspark_core::tenancy::SharedRegistry;
use trailspark_core::{LogEntry, OrgId};

use super::jetstream::StreamSettings;
use super::nats::{connect, ConnectError, NatsAuth};
use super::reconcile::{reconcile, ReconcileError};
use super::{Followers, JetStreamLog, Journal, JournalConfig, Log, LogError};

/// Where the log lives.
#[derive(Clone, Debug, Default)]
pub struct LogLocation {
    pub data_dir: PathBuf,
    /// Whether a missing data directory may be created (only the server does; a tool given a
    /// mistyped directory must say so rather than work on a new empty one).
    pub create: bool,
    pub nats_url: Option<String>,
    pub nats_auth: NatsAuth,
    pub stream: StreamSettings,
    /// The archive a journal reconciles with on open (see [`reconcile`]); `None`: the
    /// data directory's `archive/`, when there is one.
    pub archive: Option<trailspark_sinks::archive::Location>,
}

/// Why the log could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("the data directory {0} does not exist (only `serve` creates one)")]
    Missing(PathBuf),
    #[error("{what} {}: {source}", dir.display())]
    Dir {
        what: &'static str,
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the data directory {0} is in use by another trailspark process (a running server?); \
         stop it, or use the HTTP admin API"
    )]
    InUse(PathBuf),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Nats(#[from] ConnectError),
    #[error("timed out waiting for JetStream at {0}")]
    JetStreamTimeout(String),
    #[error("the archive at {0}: {1}")]
    Archive(String, #[source] trailspark_sinks::archive::ArchiveError),
    #[error(transparent)]
    Reconcile(#[from] ReconcileError),
}

/// Counts of what a replay saw.
#[derive(Clone, Debug, Default)]
pub struct ReplayStats {
    pub entries: u64,
    pub signals: u64,
    pub product_org_updates: u64,
    pub config_events: u64,
    /// Raw signals per (org, month `YYYYMM`): the quota's starting point.
    pub raw_signals: std::collections::HashMap<(OrgId, u32), u64>,
}

/// An open log. Holding it holds the data directory's lock.
pub struct Opened {
    pub log: Log,
    pub stats: ReplayStats,
    _lock: Option<File>,
}

/// Takes the data directory's exclusive lock: one process writes a journal at a time.
fn lock_data_dir(dir: &Path, create: bool) -> Result<File, OpenError> {
    if !dir.exists() && !create {
        return Err(OpenError::Missing(dir.to_path_buf()));
    }
    let err = |what| {
        let dir = dir.to_path_buf();
        move |source| OpenError::Dir { what, dir, source }
    };
    fs::create_dir_all(dir).map_err(err("creating data directory"))?;
    let f = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("LOCK"))
        .map_err(err("locking data directory"))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(_) => Err(OpenError::InUse(dir.to_path_buf())),
    }
}

fn month_of(received_at: i64) -> u32 {
    trailspark_operators::Signal::month_of(received_at)
}

fn fold_signal(stats: &mut ReplayStats, org: OrgId, received_at: i64) {
    stats.entries += 1;
    stats.signals += 1;
    *stats
        .raw_signals
        .entry((org, month_of(received_at)))
        .or_default() += 1;
}

/// Folds an entry: its counts, and a config event into the registry (locked only for
/// those: a replay folds millions of signals).
fn fold(registry: &SharedRegistry, stats: &mut ReplayStats, entry: &LogEntry) {
    if let LogEntry::Signal(s) = entry {
        return fold_signal(stats, s.org_id, s.received_at);
    }
    stats.entries += 1;
    match entry {
        LogEntry::Config(e) => {
            stats.config_events += 1;
            registry.write().unwrap().apply(e);
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
        LogEntry::ProductOrgUpdate(_) => stats.product_org_updates += 1,
        LogEntry::Evaluation(_) | LogEntry::Crm(_) | LogEntry::Delivery(_) => {}
        LogEntry::Signal(_) => unreachable!("signals are folded above"),
    }
}

/// Replayed entries are handed to the followers in batches of this many.
const REPLAY_BATCH: usize = 50_000;

/// Opens the log at `loc` and replays it: config into `registry`, every entry to
/// `followers`, which then also receive every later commit, in log order. On NATS, `client`
/// is the connection to use (the server shares one between the log, the NATS source and the
/// change events); without it one is made.
pub async fn open(
    loc: &LogLocation,
    registry: &SharedRegistry,
    followers: Followers,
    client: Option<async_nats::Client>,
) -> Result<Opened, OpenError> {
    let index_all = !followers.is_empty();
    open_inner(loc, registry, followers, index_all, client).await
}

/// Opens the log to append signals without followers (offline backfill): on JetStream the
/// whole stream is read so the dedup index knows every signal, not only what JetStream's
/// duplicate window remembers.
pub async fn open_for_append(
    loc: &LogLocation,
    registry: &SharedRegistry,
) -> Result<Opened, OpenError> {
    open_inner(loc, registry, Followers::default(), true, None).await
}

async fn open_inner(
    loc: &LogLocation,
    registry: &SharedRegistry,
    followers: Followers,
    index_all: bool,
    client: Option<async_nats::Client>,
) -> Result<Opened, OpenError> {
    let mut stats = ReplayStats::default();
    let mut buf: Vec<(u64, LogEntry)> = Vec::new();
    let feeding = !followers.is_empty();
    // Folds one replayed entry into the registry and, in batches, into the followers.
    let mut replay = |pos: u64, e: LogEntry, buf: &mut Vec<(u64, LogEntry)>| {
        fold(registry, &mut stats, &e);
        if feeding {
            buf.push((pos, e));
            if buf.len() >= REPLAY_BATCH {
                let full = std::mem::replace(buf, Vec::with_capacity(REPLAY_BATCH));
                tokio::task::block_in_place(|| followers.follow(full));
            }
        }
    };
    let (log, lock) = match &loc.nats_url {
        None => {
            let lock = lock_data_dir(&loc.data_dir, loc.create)?;
            let mut cfg = JournalConfig::new(loc.data_dir.join("journal"));
            let journal = if feeding {
                let tail = followers.clone();
                cfg.on_commit = Some(std::sync::Arc::new(move |entries| tail.follow(entries)));
                tokio::task::block_in_place(|| {
                    Journal::open(cfg, &mut |pos, e| {
                        replay(pos, e, &mut buf);
                        Ok(())
                    })
                })?
            } else {
                // Without followers nothing reads the signals themselves.
                tokio::task::block_in_place(|| {
                    Journal::open_peeking(cfg, &mut |_, p| {
                        match p {
                            Peek::Signal(s) => fold_signal(&mut stats, s.org_id, s.received_at),
                            Peek::Entry(e) => fold(registry, &mut stats, &e),
                        }
                        Ok(())
                    })
                })?
            };
            (Log::Journal(journal), Some(lock))
        }
        Some(url) => {
            let client = match client {
                Some(c) => c,
                None => connect(url, &loc.nats_auth).await?,
            };
            let js = tokio::time::timeout(
                Duration::from_secs(30),
                JetStreamLog::connect(client, &loc.stream),
            )
            .await
            .map_err(|_| OpenError::JetStreamTimeout(url.clone()))??;
            // Without followers only config matters (and, to append signals, every signal's
            // dedup key); with them, everything is replayed and then followed.
            let filter = (!index_all).then_some(CONFIG_SUBJECT);
            let mut last = 0;
            let indexer = js.clone();
            js.read(filter, &mut |pos, e| {
                last = pos;
                indexer.note(pos, &e);
                replay(pos, e, &mut buf);
                Ok(())
            })
            .await?;
            if feeding {
                let tailer = js.clone();
                let start = last.max(js.head()) + 1;
                let tail = followers.clone();
                tokio::spawn(async move {
                    let noter = tailer.clone();
                    let feed = move |pos, e: LogEntry| {
                        noter.note(pos, &e);
                        tokio::task::block_in_place(|| tail.follow(vec![(pos, e)]))
                    };
                    if let Err(e) = tailer.tail(start, feed).await {
                        tracing::error!(error = %e, "Following the JetStream log stopped.");
                    }
                });
            }
            (Log::JetStream(Box::new(js)), None)
        }
    };
    tokio::task::block_in_place(|| followers.follow(std::mem::take(&mut buf)));
    if let Log::Journal(j) = &log {
        let archive = match &loc.archive {
            Some(a) => Some(a.clone()),
            None => {
                let dir = loc.data_dir.join("archive");
                let url = dir.display().to_string();
                dir.exists()
                    .then(|| trailspark_sinks::archive::Location::parse(&url))
                    .transpose()
                    .map_err(|e| OpenError::Archive(url, e))?
            }
        };
        if let Some(archive) = archive {
            reconcile(j, &archive).await?;
        }
    }
    Ok(Opened {
        log,
        stats,
        _lock: lock,
    })
}

/// Reads every entry of the log without taking the lock (for `log dump`).
pub async fn read_all(
    loc: &LogLocation,
    f: &mut (dyn FnMut(u64, LogEntry) -> Result<(), LogError> + Send),
) -> Result<(), OpenError> {
    match &loc.nats_url {
        None => {
            if !loc.data_dir.exists() {
                return Err(OpenError::Missing(loc.data_dir.clone()));
            }
            super::journal::read(&loc.data_dir.join("journal"), f)?;
        }
        Some(url) => {
            let client = connect(url, &loc.nats_auth).await?;
            let js = JetStreamLog::connect(client, &loc.stream).await?;
            js.read(None, f).await?;
        }
    }
    Ok(())
}
