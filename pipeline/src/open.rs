//! Opening the log and rebuilding state from it, for the server and the CLI alike.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use trailspark_core::{LogEntry, Registry};

use crate::log::jetstream::StreamSettings;
use crate::log::{jetstream, JetStreamLog, Journal, JournalConfig, Log, LogError};

/// Where the log lives.
#[derive(Clone, Debug)]
pub struct LogLocation {
    pub data_dir: PathBuf,
    pub nats_url: Option<String>,
    pub stream: StreamSettings,
}

/// Counts of what a replay saw.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReplayStats {
    pub entries: u64,
    pub signals: u64,
    pub product_org_updates: u64,
    pub config_events: u64,
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
    stats.entries += 1;
    match entry {
        LogEntry::Config(e) => {
            stats.config_events += 1;
            registry.apply(e);
        }
        LogEntry::Signal(_) => stats.signals += 1,
        LogEntry::ProductOrgUpdate(_) => stats.product_org_updates += 1,
    }
}

pub async fn connect_nats(url: &str) -> anyhow::Result<async_nats::Client> {
    async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connect(url)
        .await
        .with_context(|| format!("connecting to NATS at {url}"))
}

/// Opens the log at `loc` and replays it.
pub async fn open(loc: &LogLocation) -> anyhow::Result<Opened> {
    let mut registry = Registry::default();
    let mut stats = ReplayStats::default();
    match &loc.nats_url {
        None => {
            let lock = lock_data_dir(&loc.data_dir)?;
            let cfg = JournalConfig::new(loc.data_dir.join("journal"));
            let journal = tokio::task::block_in_place(|| {
                Journal::open(cfg, &mut |_, e| {
                    fold(&mut registry, &mut stats, &e);
                    Ok(())
                })
            })?;
            Ok(Opened {
                log: Log::Journal(journal),
                registry,
                stats,
                _lock: Some(lock),
            })
        }
        Some(url) => {
            let client = connect_nats(url).await?;
            let js = tokio::time::timeout(
                Duration::from_secs(30),
                JetStreamLog::connect(client, &loc.stream),
            )
            .await
            .map_err(|_| anyhow::anyhow!("timed out waiting for JetStream at {url}"))??;
            js.read(Some(jetstream::CONFIG_SUBJECT), &mut |_, e| {
                fold(&mut registry, &mut stats, &e);
                Ok(())
            })
            .await?;
            Ok(Opened {
                log: Log::JetStream(Box::new(js)),
                registry,
                stats,
                _lock: None,
            })
        }
    }
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
            let client = connect_nats(url).await?;
            let js = JetStreamLog::connect(client, &loc.stream).await?;
            js.read(None, f).await?;
        }
    }
    Ok(())
}
