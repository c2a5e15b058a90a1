//! The durable log, the source of truth: an embedded journal by default, or a JetStream
//! stream with `--nats`. Everything else is derived from it: on open the log is replayed
//! ([`open`]), and from then on every committed entry is handed, in log order, to its
//! [`Followers`] (the dataflow engine and the archiver).

pub mod jetstream;
pub mod journal;
pub mod nats;
pub mod open;
pub mod reconcile;

use std::sync::Arc;

use thiserror::Error;
pub use trailspark_core::dedup::DedupIndex;
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
    /// Shared: one failed group write answers every append of the group.
    #[error("log I/O: {0}")]
    Io(#[source] Arc<std::io::Error>),
    #[error("log is damaged: {0}")]
    Corrupt(String),
    #[error("NATS: {0}")]
    Nats(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("{0}")]
    Replay(String),
}

impl From<std::io::Error> for LogError {
    fn from(e: std::io::Error) -> Self {
        LogError::Io(Arc::new(e))
    }
}

/// A NATS failure of the log, keeping its cause.
pub fn nats_err(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> LogError {
    LogError::Nats(e.into())
}

/// Entries the log has made durable, in log order, shared by every follower.
pub type Committed = Arc<Vec<(u64, LogEntry)>>;

/// Something that follows the log: it is handed every committed entry, in log order, from
/// the replay on. It may block (backpressure: the log's writer then stops taking appends).
pub trait Follower: Send + Sync {
    fn follow(&self, entries: &Committed);
}

/// Everything that follows the log. The log fans its tail out to each, in this order.
#[derive(Clone, Default)]
pub struct Followers(Vec<Arc<dyn Follower>>);

impl Followers {
    pub fn new(followers: Vec<Arc<dyn Follower>>) -> Followers {
        Followers(followers)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn follow(&self, entries: Vec<(u64, LogEntry)>) {
        if entries.is_empty() || self.0.is_empty() {
            return;
        }
        let entries = Arc::new(entries);
        for f in &self.0 {
            f.follow(&entries);
        }
    }
}

impl From<LogError> for IngestError {
    fn from(e: LogError) -> Self {
        match e {
            LogError::Overloaded => IngestError::Overloaded,
            LogError::Closed | LogError::Nats(_) | LogError::Io(_) => {
                IngestError::Unavailable(Arc::new(e))
            }
            other => IngestError::Internal(other.to_string()),
        }
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
