//! The durable log, the source of truth (DESIGN.md §3): an embedded journal by default, or a
//! JetStream stream with `--nats`. Everything else is derived from it by replay.

pub mod jetstream;
pub mod journal;

use thiserror::Error;
use trailspark_core::LogEntry;
use trailspark_sources::{IngestError, Receipt};

pub use self::jetstream::JetStreamLog;
pub use self::journal::{Journal, JournalConfig, JournalHealth};

#[derive(Debug, Error)]
pub enum LogError {
    #[error("log queue is full")]
    Overloaded,
    #[error("log writer has stopped")]
    Closed,
    #[error("log I/O: {0}")]
    Io(String),
    #[error("log is damaged: {0}")]
    Corrupt(String),
    #[error("NATS: {0}")]
    Nats(String),
    #[error("{0}")]
    Replay(String),
}

impl From<std::io::Error> for LogError {
    fn from(e: std::io::Error) -> Self {
        LogError::Io(e.to_string())
    }
}

impl From<LogError> for IngestError {
    fn from(e: LogError) -> Self {
        match e {
            LogError::Overloaded => IngestError::Overloaded,
            LogError::Closed | LogError::Nats(_) | LogError::Io(_) => {
                IngestError::Unavailable(e.to_string())
            }
            other => IngestError::Internal(other.to_string()),
        }
    }
}

/// Every signal's dedup key (128 bits) with the log position of its first occurrence. Exact
/// and never forgotten: at about 30 bytes a signal it is small next to the dataflow's state,
/// and it lets a retry (or a re-run backfill) hours later still be answered with the
/// original id instead of being appended again. The keys are SHA-256 bits, so a fast
/// unkeyed hash spreads them as well as a keyed one (every append and every replayed entry
/// looks one up).
#[derive(Default)]
pub struct DedupIndex {
    first: rustc_hash::FxHashMap<u128, u64>,
}

impl DedupIndex {
    /// The position of the signal with this key, if it is on the log.
    pub fn get(&self, key: u128) -> Option<u64> {
        self.first.get(&key).copied()
    }

    /// Records a signal's position; keeps the first one.
    pub fn insert(&mut self, key: u128, pos: u64) {
        self.first.entry(key).or_insert(pos);
    }

    pub fn remove(&mut self, key: u128) {
        self.first.remove(&key);
    }

    pub fn len(&self) -> usize {
        self.first.len()
    }

    pub fn is_empty(&self) -> bool {
        self.first.is_empty()
    }
}

/// An append on its way to the log: resolves once the entries are durable.
pub type Appending = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Vec<Receipt>, LogError>> + Send + 'static>,
>;

/// The log in use.
#[derive(Clone)]
pub enum Log {
    Journal(Journal),
    JetStream(Box<JetStreamLog>),
}

impl Log {
    /// Appends entries and resolves once they are durable (fsync or JetStream ack).
    pub fn append(&self, entries: Vec<LogEntry>) -> Appending {
        match self {
            Log::Journal(j) => Box::pin(j.append(entries)),
            Log::JetStream(js) => {
                let js = js.clone();
                Box::pin(async move { js.append(entries).await })
            }
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Log::Journal(_) => "journal",
            Log::JetStream(_) => "jetstream",
        }
    }

    /// The embedded journal's writer health; JetStream reports through the NATS status.
    pub fn health(&self) -> JournalHealth {
        match self {
            Log::Journal(j) => j.health(),
            Log::JetStream(_) => JournalHealth::default(),
        }
    }

    /// Position of the last durable entry known to this process.
    pub fn head(&self) -> u64 {
        match self {
            Log::Journal(j) => j.head(),
            Log::JetStream(js) => js.head(),
        }
    }
}
