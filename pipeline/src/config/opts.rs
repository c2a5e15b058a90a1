//! The serve command's settings, in groups, each with the conversion into the settings of the
//! part it configures.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use serde::{Deserialize, Serialize};
use trailspark_operators::identity::IdentityConfig;
use trailspark_queries::Limits;
use trailspark_sinks::archive::{ArchiveConfig, ArchiveError, Location};

use crate::engine::EngineConfig;
use crate::http::listener::{connection_budget, HttpLimits};
use crate::log::jetstream::StreamSettings;
use crate::log::nats::NatsAuth;
use crate::log::open::LogLocation;
use crate::services::retention::RetentionConfig;

/// Where the log is: the data directory's journal, or JetStream with `--nats`.
#[derive(Args, Clone, Debug, Serialize, Deserialize)]
pub struct LogOpts {
    /// Data directory (journal, lock, archive).
    #[arg(long, env = "TRAILSPARK_DATA_DIR", default_value = "trailspark-data")]
    pub data_dir: PathBuf,
    /// NATS server URL; when set, the log is the JetStream stream TRAILSPARK_SIGNALS.
    #[arg(long = "nats", env = "TRAILSPARK_NATS_URL")]
    pub nats_url: Option<String>,
    /// JetStream stream replicas.
    #[arg(long, env = "TRAILSPARK_NATS_REPLICAS", default_value_t = 1)]
    pub nats_replicas: usize,
    /// JetStream stream max age in seconds (0 = keep forever).
    #[arg(long, env = "TRAILSPARK_NATS_MAX_AGE_SECS", default_value_t = 0)]
    pub nats_max_age_secs: u64,
    /// JetStream stream max bytes (-1 = unlimited).
    #[arg(long, env = "TRAILSPARK_NATS_MAX_BYTES", default_value_t = -1, allow_negative_numbers = true)]
    pub nats_max_bytes: i64,
    #[command(flatten)]
    #[serde(flatten)]
    pub auth: NatsAuthOpts,
}

/// Credentials and TLS for NATS.
#[derive(Args, Clone, Debug, Default, Serialize, Deserialize)]
pub struct NatsAuthOpts {
    /// NATS user (with --nats-password).
    #[arg(long, env = "TRAILSPARK_NATS_USER")]
    pub nats_user: Option<String>,
    #[arg(long, env = "TRAILSPARK_NATS_PASSWORD", hide_env_values = true)]
    pub nats_password: Option<String>,
    /// NATS authentication token.
    #[arg(long, env = "TRAILSPARK_NATS_TOKEN", hide_env_values = true)]
    pub nats_token: Option<String>,
    /// NATS nkey seed (SU...).
    #[arg(long, env = "TRAILSPARK_NATS_NKEY", hide_env_values = true)]
    pub nats_nkey: Option<String>,
    /// NATS credentials file (.creds: user JWT and nkey seed).
    #[arg(long, env = "TRAILSPARK_NATS_CREDS")]
    pub nats_creds: Option<PathBuf>,
    /// CA certificate (PEM) to trust for NATS TLS.
    #[arg(long, env = "TRAILSPARK_NATS_TLS_CA")]
    pub nats_tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for NATS mutual TLS (with --nats-tls-key).
    #[arg(long, env = "TRAILSPARK_NATS_TLS_CERT")]
    pub nats_tls_cert: Option<PathBuf>,
    #[arg(long, env = "TRAILSPARK_NATS_TLS_KEY")]
    pub nats_tls_key: Option<PathBuf>,
    /// Refuse to talk to NATS without TLS.
    #[arg(long, env = "TRAILSPARK_NATS_REQUIRE_TLS")]
    pub nats_require_tls: bool,
}

impl NatsAuthOpts {
    pub fn auth(&self) -> NatsAuth {
        NatsAuth {
            user: self.nats_user.clone(),
            password: self.nats_password.clone(),
            token: self.nats_token.clone(),
            nkey_seed: self.nats_nkey.clone(),
            creds_file: self.nats_creds.clone(),
            tls_ca: self.nats_tls_ca.clone(),
            tls_cert: self.nats_tls_cert.clone(),
            tls_key: self.nats_tls_key.clone(),
            require_tls: self.nats_require_tls,
        }
    }
}

/// The NATS source's consumer and the change-event stream (with `--nats`).
#[derive(Args, Clone, Debug, Serialize, Deserialize)]
pub struct NatsServeOpts {
    /// Most producer messages delivered to the NATS source and not yet acked.
    #[arg(
        long,
        env = "TRAILSPARK_NATS_MAX_ACK_PENDING",
        default_value_t = 20_000
    )]
    pub nats_max_ack_pending: i64,
    /// Seconds before an unacked producer message is redelivered.
    #[arg(long, env = "TRAILSPARK_NATS_ACK_WAIT_SECS", default_value_t = 30)]
    pub nats_ack_wait_secs: u64,
    /// Producer messages handled per chunk (one log append).
    #[arg(long, env = "TRAILSPARK_NATS_BATCH", default_value_t = 1_000)]
    pub nats_batch: usize,
    /// Days dead letters are kept.
    #[arg(long, env = "TRAILSPARK_NATS_DEADLETTER_DAYS", default_value_t = 30)]
    pub nats_deadletter_days: u64,
    /// Publish change events on trailspark.events.<org>.<kind>.
    #[arg(long, env = "TRAILSPARK_NATS_EVENTS", default_value_t = true, action = clap::ArgAction::Set)]
    pub nats_events: bool,
    /// Days change events are kept in TRAILSPARK_EVENTS (0 = forever).
    #[arg(long, env = "TRAILSPARK_NATS_EVENTS_MAX_AGE_DAYS", default_value_t = 7)]
    pub nats_events_max_age_days: u64,
    /// TRAILSPARK_EVENTS max bytes (-1 = unlimited).
    #[arg(long, env = "TRAILSPARK_NATS_EVENTS_MAX_BYTES", default_value_t = -1, allow_negative_numbers = true)]
    pub nats_events_max_bytes: i64,
}

impl LogOpts {
    pub fn location(&self) -> LogLocation {
        LogLocation {
            data_dir: self.data_dir.clone(),
            create: false,
            nats_url: self.nats_url.clone(),
            stream: StreamSettings {
                replicas: self.nats_replicas,
                max_age: Duration::from_secs(self.nats_max_age_secs),
                max_bytes: self.nats_max_bytes,
                ..Default::default()
            },
            nats_auth: self.auth.auth(),
            archive: None,
        }
    }
}

/// Settings of the dataflow.
#[derive(Args, Clone, Debug, Serialize, Deserialize)]
pub struct DataflowOpts {
    /// Dataflow worker threads.
    #[arg(long, env = "TRAILSPARK_WORKERS", default_value_t = 1)]
    pub workers: usize,
    /// Extra identifier values that never link people (comma-separated, case-insensitive),
    /// on top of the built-in ones (null, undefined, anonymous, -1, all zeros, ...).
    #[arg(long, env = "TRAILSPARK_BLOCKED_IDENTIFIERS", value_delimiter = ',')]
    pub blocked_identifiers: Vec<String>,
    /// Most distinct emails one identifier may link to before its email links are refused.
    #[arg(
        long,
        env = "TRAILSPARK_MAX_EMAILS_PER_IDENTIFIER",
        default_value_t = 5
    )]
    pub max_emails_per_identifier: usize,
    /// Most distinct user ids one identifier may link to before its user-id links are refused.
    #[arg(
        long,
        env = "TRAILSPARK_MAX_USER_IDS_PER_IDENTIFIER",
        default_value_t = 1
    )]
    pub max_user_ids_per_identifier: usize,
    /// Most log entries one dataflow epoch takes (bounds the transient memory of a replay or
    /// a burst; larger epochs amortize more per-epoch work).
    #[arg(long, env = "TRAILSPARK_EPOCH_ENTRIES", default_value_t = 20_000)]
    pub epoch_entries: usize,
    /// Days an anonymous signal stays in the dataflow waiting for an identify, by the log's
    /// clock (days as long as TRAILSPARK_RETENTION_DAY_SECS); older ones wait in the archive
    /// and an identify brings them back. 0 keeps them all in the dataflow.
    #[arg(long, env = "TRAILSPARK_HOT_WINDOW_DAYS", default_value_t = 7)]
    pub hot_window_days: u32,
    /// Merge work (records) each arrangement does per idle step until it is compact, so that
    /// retracted state (evictions, reprocessing) frees its memory without waiting for more
    /// traffic; done only while the worker has no epoch in flight. 0 turns idle merging off.
    #[arg(long, env = "TRAILSPARK_IDLE_MERGE_EFFORT", default_value_t = 1_000)]
    pub idle_merge_effort: u32,
    /// Epochs of log entries in the dataflow at once; entries committed meanwhile wait and
    /// go together as the next epoch, so epochs grow with the load. 0: no bound.
    #[arg(long, env = "TRAILSPARK_EPOCHS_IN_FLIGHT", default_value_t = 1)]
    pub epochs_in_flight: usize,
}

impl DataflowOpts {
    pub fn engine_config(&self) -> EngineConfig {
        EngineConfig {
            workers: self.workers,
            identity: IdentityConfig {
                blocked: self
                    .blocked_identifiers
                    .iter()
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect(),
                max_emails: self.max_emails_per_identifier,
                max_user_ids: self.max_user_ids_per_identifier,
            },
            epoch_entries: self.epoch_entries,
            idle_merge_effort: (self.idle_merge_effort > 0)
                .then_some(self.idle_merge_effort as isize),
            epochs_in_flight: self.epochs_in_flight,
            ..Default::default()
        }
    }
}

/// Where and how signals are archived, and the bounds of SQL queries.
#[derive(Args, Clone, Debug, Serialize, Deserialize)]
pub struct ArchiveOpts {
    /// Archive location: a directory, file:///dir, s3://bucket/prefix (AWS_* environment for
    /// credentials, region and endpoint) or memory://. Default: <data dir>/archive.
    #[arg(long, env = "TRAILSPARK_ARCHIVE")]
    pub archive: Option<String>,
    /// A buffered partition becomes a file after this many seconds.
    #[arg(long, env = "TRAILSPARK_ARCHIVE_MAX_AGE_SECS", default_value_t = 60)]
    pub archive_max_age_secs: u64,
    /// ... or at this many rows.
    #[arg(long, env = "TRAILSPARK_ARCHIVE_MAX_ROWS", default_value_t = 250_000)]
    pub archive_max_rows: usize,
    /// ... or at this many bytes.
    #[arg(long, env = "TRAILSPARK_ARCHIVE_MAX_BYTES", default_value_t = 64 << 20)]
    pub archive_max_bytes: usize,
    /// A SQL query is stopped after this many seconds.
    #[arg(long, env = "TRAILSPARK_SQL_TIMEOUT_SECS", default_value_t = 30)]
    pub sql_timeout_secs: u64,
    /// Most rows a SQL result may have.
    #[arg(long, env = "TRAILSPARK_SQL_MAX_ROWS", default_value_t = 100_000)]
    pub sql_max_rows: usize,
    /// Memory one SQL query's operators may hold, in bytes.
    #[arg(long, env = "TRAILSPARK_SQL_MEMORY_BYTES", default_value_t = 256 << 20)]
    pub sql_memory_bytes: usize,
    /// SQL queries one org may run at once (more answer 429).
    #[arg(long, env = "TRAILSPARK_SQL_PER_ORG", default_value_t = 2)]
    pub sql_per_org: usize,
    /// SQL queries the server runs at once, over all orgs (more answer 429).
    #[arg(long, env = "TRAILSPARK_SQL_CONCURRENT", default_value_t = 4)]
    pub sql_concurrent: usize,
    /// Threads that run SQL (at a lower priority than ingestion).
    #[arg(long, env = "TRAILSPARK_SQL_THREADS", default_value_t = 2)]
    pub sql_threads: usize,
    /// Seconds between retention passes.
    #[arg(long, env = "TRAILSPARK_RETENTION_INTERVAL_SECS", default_value_t = 60)]
    pub retention_interval_secs: u64,
    /// The length of a retention day in seconds (86400; shorter only for tests and demos).
    #[arg(long, env = "TRAILSPARK_RETENTION_DAY_SECS", default_value_t = 86_400)]
    pub retention_day_secs: u64,
    /// Archived signals are deleted after this many days (PERMANENT_DELETE_DAYS).
    #[arg(long, env = "TRAILSPARK_PERMANENT_DELETE_DAYS", default_value_t = 365)]
    pub permanent_delete_days: u32,
}

impl ArchiveOpts {
    pub fn location(&self, data_dir: &std::path::Path) -> Result<Location, ArchiveError> {
        let url = match &self.archive {
            Some(u) => u.clone(),
            None => data_dir.join("archive").display().to_string(),
        };
        Location::parse(&url)
    }

    pub fn config(&self) -> ArchiveConfig {
        ArchiveConfig {
            max_rows: self.archive_max_rows.max(1),
            max_bytes: self.archive_max_bytes.max(1),
            max_age: Duration::from_secs(self.archive_max_age_secs),
            ..Default::default()
        }
    }

    pub fn retention(&self) -> RetentionConfig {
        RetentionConfig {
            interval: Duration::from_secs(self.retention_interval_secs.max(1)),
            day: Duration::from_secs(self.retention_day_secs.max(1)),
            permanent_delete_days: self.permanent_delete_days.max(1),
        }
    }

    pub fn limits(&self) -> Limits {
        Limits {
            timeout: Duration::from_secs(self.sql_timeout_secs.max(1)),
            max_rows: self.sql_max_rows,
            memory: self.sql_memory_bytes.max(1 << 20),
            per_org: self.sql_per_org.max(1),
            concurrent: self.sql_concurrent.max(1),
            threads: self.sql_threads.max(1),
            ..Default::default()
        }
    }
}

/// Bounds on HTTP connections.
#[derive(Args, Clone, Debug, Serialize, Deserialize)]
pub struct HttpOpts {
    /// Most open HTTP connections; more are answered 503 and closed. Lowered at start to
    /// fit the open-files limit.
    #[arg(long, env = "TRAILSPARK_MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: usize,
    /// Seconds a client has to send a request's headers; also the longest a kept-alive
    /// connection may stay idle.
    #[arg(long, env = "TRAILSPARK_HEADER_TIMEOUT_SECS", default_value_t = 10)]
    pub header_timeout_secs: u64,
    /// Longest pause, in seconds, within a request body (408 after it).
    #[arg(long, env = "TRAILSPARK_BODY_IDLE_TIMEOUT_SECS", default_value_t = 30)]
    pub body_idle_timeout_secs: u64,
    /// Browser origins allowed to call the admin and org APIs (CORS), comma-separated, or
    /// `*`. None by default: those APIs take bearer tokens, which belong on servers and in
    /// the operator's own tools. The ingestion endpoints follow each key's allowed origins
    /// instead.
    #[arg(long, env = "TRAILSPARK_CORS_ORIGIN", value_delimiter = ',')]
    #[serde(default)]
    pub cors_origin: Vec<String>,
    /// The URL browsers reach this server at (e.g. `https://t.example.com`): CRMs send
    /// browsers back to `<url>/api/oauth/callback/<crm>` after consent, and analytics.js is
    /// told to send to `<url>/v1`. Without it, the request's host tells.
    #[arg(long, env = "TRAILSPARK_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Serve `GET /metrics` and count each request for it; `false` turns both off.
    #[arg(long, env = "TRAILSPARK_METRICS", default_value_t = true, action = clap::ArgAction::Set)]
    pub metrics: bool,
    /// Serve `GET /metrics` on this address instead of the main one (e.g. `127.0.0.1:9464`),
    /// so that it can stay on a private interface while the API is public.
    #[arg(long, env = "TRAILSPARK_METRICS_LISTEN")]
    pub metrics_listen: Option<std::net::SocketAddr>,
}

impl HttpOpts {
    pub fn limits(&self) -> HttpLimits {
        HttpLimits {
            max_connections: connection_budget(self.max_connections),
            header_timeout: Duration::from_secs(self.header_timeout_secs.max(1)),
            body_idle_timeout: Duration::from_secs(self.body_idle_timeout_secs.max(1)),
        }
    }
}
