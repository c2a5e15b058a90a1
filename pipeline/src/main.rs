//! `trailspark`: the server and its command-line tools.

/// jemalloc instead of the system allocator: the dataflow allocates and frees an epoch's
/// batches from several threads, and glibc's per-thread arenas keep much of that freed memory
/// resident (see bench/RESULTS.md, "allocator"). The `jemalloc` feature is on by default.
#[cfg(all(unix, not(target_env = "musl"), feature = "jemalloc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read when it starts (`_RJEM_MALLOC_CONF` in the environment still
/// overrides them). By default jemalloc returns freed pages to the system only from inside
/// later allocation calls, ten seconds after they were freed; the dataflow frees whole
/// merged batches at a time, so the peak held their dead pages as well as the live ones. A
/// background thread purging dirty pages after 1 s took the replay's peak resident memory of
/// signalmark's 1M data directory from 2.90 to 2.61 GB (0.90×) at the same replay time; after
/// 0 s it went to 2.28 GB, but the replay was 1.3× slower (bench/RESULTS.md, "Read models'
/// processed records and jemalloc purging").
#[cfg(all(unix, not(target_env = "musl"), feature = "jemalloc"))]
#[export_name = "_rjem_malloc_conf"]
pub static JEMALLOC_CONF: Option<&'static u8> =
    Some(&b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0"[0]);

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use serde_json::json;
use trailspark::admin::{key_json, rfc3339};
use trailspark::engine::{Engine, EngineConfig};
use trailspark::hot::HotConfig;
use trailspark::log::jetstream::StreamSettings;
use trailspark::open::{self, LogLocation};
use trailspark::retention::RetentionConfig;
use trailspark::server;
use trailspark::sql::ReadStamper;
use trailspark::state::{AppState, NewKey, Quota};
use trailspark_core::tenancy::{EndpointType, OrgId, ProductOrgTemplate, DEFAULT_ORG};
use trailspark_core::LogEntry;
use trailspark_operators::identity::IdentityConfig;
use trailspark_queries::{Limits, SqlEngine};
use trailspark_sinks::archive::{ArchiveConfig, Archiver, Location};

#[derive(Parser)]
#[command(
    name = "trailspark",
    version,
    about = "Self-hostable signal pipeline for B2B lead scoring"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the log is: the data directory's journal, or JetStream with `--nats`.
#[derive(Args, Clone)]
struct LogOpts {
    /// Data directory (journal, lock, archive).
    #[arg(long, env = "TRAILSPARK_DATA_DIR", default_value = "trailspark-data")]
    data_dir: PathBuf,
    /// NATS server URL; when set, the log is the JetStream stream TRAILSPARK_SIGNALS.
    #[arg(long = "nats", env = "TRAILSPARK_NATS_URL")]
    nats_url: Option<String>,
    /// JetStream stream replicas.
    #[arg(long, env = "TRAILSPARK_NATS_REPLICAS", default_value_t = 1)]
    nats_replicas: usize,
    /// JetStream stream max age in seconds (0 = keep forever).
    #[arg(long, env = "TRAILSPARK_NATS_MAX_AGE_SECS", default_value_t = 0)]
    nats_max_age_secs: u64,
    /// JetStream stream max bytes (-1 = unlimited).
    #[arg(long, env = "TRAILSPARK_NATS_MAX_BYTES", default_value_t = -1, allow_negative_numbers = true)]
    nats_max_bytes: i64,
    #[command(flatten)]
    auth: NatsAuthOpts,
}

/// Credentials and TLS for NATS.
#[derive(Args, Clone, Default)]
struct NatsAuthOpts {
    /// NATS user (with --nats-password).
    #[arg(long, env = "TRAILSPARK_NATS_USER")]
    nats_user: Option<String>,
    #[arg(long, env = "TRAILSPARK_NATS_PASSWORD", hide_env_values = true)]
    nats_password: Option<String>,
    /// NATS authentication token.
    #[arg(long, env = "TRAILSPARK_NATS_TOKEN", hide_env_values = true)]
    nats_token: Option<String>,
    /// NATS nkey seed (SU...).
    #[arg(long, env = "TRAILSPARK_NATS_NKEY", hide_env_values = true)]
    nats_nkey: Option<String>,
    /// NATS credentials file (.creds: user JWT and nkey seed).
    #[arg(long, env = "TRAILSPARK_NATS_CREDS")]
    nats_creds: Option<PathBuf>,
    /// CA certificate (PEM) to trust for NATS TLS.
    #[arg(long, env = "TRAILSPARK_NATS_TLS_CA")]
    nats_tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for NATS mutual TLS (with --nats-tls-key).
    #[arg(long, env = "TRAILSPARK_NATS_TLS_CERT")]
    nats_tls_cert: Option<PathBuf>,
    #[arg(long, env = "TRAILSPARK_NATS_TLS_KEY")]
    nats_tls_key: Option<PathBuf>,
    /// Refuse to talk to NATS without TLS.
    #[arg(long, env = "TRAILSPARK_NATS_REQUIRE_TLS")]
    nats_require_tls: bool,
}

impl NatsAuthOpts {
    fn auth(&self) -> trailspark::nats::NatsAuth {
        trailspark::nats::NatsAuth {
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
#[derive(Args, Clone)]
struct NatsServeOpts {
    /// Most producer messages delivered to the NATS source and not yet acked.
    #[arg(
        long,
        env = "TRAILSPARK_NATS_MAX_ACK_PENDING",
        default_value_t = 20_000
    )]
    nats_max_ack_pending: i64,
    /// Seconds before an unacked producer message is redelivered.
    #[arg(long, env = "TRAILSPARK_NATS_ACK_WAIT_SECS", default_value_t = 30)]
    nats_ack_wait_secs: u64,
    /// Producer messages handled per chunk (one log append).
    #[arg(long, env = "TRAILSPARK_NATS_BATCH", default_value_t = 1_000)]
    nats_batch: usize,
    /// Days dead letters are kept.
    #[arg(long, env = "TRAILSPARK_NATS_DEADLETTER_DAYS", default_value_t = 30)]
    nats_deadletter_days: u64,
    /// Publish change events on trailspark.events.<org>.<kind>.
    #[arg(long, env = "TRAILSPARK_NATS_EVENTS", default_value_t = true, action = clap::ArgAction::Set)]
    nats_events: bool,
    /// Days change events are kept in TRAILSPARK_EVENTS (0 = forever).
    #[arg(long, env = "TRAILSPARK_NATS_EVENTS_MAX_AGE_DAYS", default_value_t = 7)]
    nats_events_max_age_days: u64,
    /// TRAILSPARK_EVENTS max bytes (-1 = unlimited).
    #[arg(long, env = "TRAILSPARK_NATS_EVENTS_MAX_BYTES", default_value_t = -1, allow_negative_numbers = true)]
    nats_events_max_bytes: i64,
}

impl LogOpts {
    fn location(&self) -> LogLocation {
        LogLocation {
            data_dir: self.data_dir.clone(),
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
#[derive(Args, Clone)]
struct DataflowOpts {
    /// Dataflow worker threads.
    #[arg(long, env = "TRAILSPARK_WORKERS", default_value_t = 1)]
    workers: usize,
    /// Extra identifier values that never link people (comma-separated, case-insensitive),
    /// on top of the built-in ones (null, undefined, anonymous, -1, all zeros, ...).
    #[arg(long, env = "TRAILSPARK_BLOCKED_IDENTIFIERS", value_delimiter = ',')]
    blocked_identifiers: Vec<String>,
    /// Most distinct emails one identifier may link to before its email links are refused.
    #[arg(
        long,
        env = "TRAILSPARK_MAX_EMAILS_PER_IDENTIFIER",
        default_value_t = 5
    )]
    max_emails_per_identifier: usize,
    /// Most distinct user ids one identifier may link to before its user-id links are refused.
    #[arg(
        long,
        env = "TRAILSPARK_MAX_USER_IDS_PER_IDENTIFIER",
        default_value_t = 1
    )]
    max_user_ids_per_identifier: usize,
    /// Most log entries one dataflow epoch takes (bounds the transient memory of a replay or
    /// a burst; larger epochs amortize more per-epoch work).
    #[arg(long, env = "TRAILSPARK_EPOCH_ENTRIES", default_value_t = 20_000)]
    epoch_entries: usize,
    /// Days an anonymous signal stays in the dataflow waiting for an identify, by the log's
    /// clock (days as long as TRAILSPARK_RETENTION_DAY_SECS); older ones wait in the archive
    /// and an identify brings them back. 0 keeps them all in the dataflow.
    #[arg(long, env = "TRAILSPARK_HOT_WINDOW_DAYS", default_value_t = 7)]
    hot_window_days: u32,
    /// Merge work (records) each arrangement does per idle step until it is compact, so that
    /// retracted state (evictions, reprocessing) frees its memory without waiting for more
    /// traffic. 0 turns idle merging off.
    #[arg(long, env = "TRAILSPARK_IDLE_MERGE_EFFORT", default_value_t = 1_000)]
    idle_merge_effort: u32,
}

impl DataflowOpts {
    fn engine_config(&self) -> EngineConfig {
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
            ..Default::default()
        }
    }
}

/// Where and how signals are archived, and the bounds of SQL queries.
#[derive(Args, Clone)]
struct ArchiveOpts {
    /// Archive location: a directory, file:///dir, s3://bucket/prefix (AWS_* environment for
    /// credentials, region and endpoint) or memory://. Default: <data dir>/archive.
    #[arg(long, env = "TRAILSPARK_ARCHIVE")]
    archive: Option<String>,
    /// A buffered partition becomes a file after this many seconds.
    #[arg(long, env = "TRAILSPARK_ARCHIVE_MAX_AGE_SECS", default_value_t = 60)]
    archive_max_age_secs: u64,
    /// ... or at this many rows.
    #[arg(long, env = "TRAILSPARK_ARCHIVE_MAX_ROWS", default_value_t = 250_000)]
    archive_max_rows: usize,
    /// ... or at this many bytes.
    #[arg(long, env = "TRAILSPARK_ARCHIVE_MAX_BYTES", default_value_t = 64 << 20)]
    archive_max_bytes: usize,
    /// A SQL query is stopped after this many seconds.
    #[arg(long, env = "TRAILSPARK_SQL_TIMEOUT_SECS", default_value_t = 30)]
    sql_timeout_secs: u64,
    /// Most rows a SQL result may have.
    #[arg(long, env = "TRAILSPARK_SQL_MAX_ROWS", default_value_t = 100_000)]
    sql_max_rows: usize,
    /// Memory one SQL query's operators may hold, in bytes.
    #[arg(long, env = "TRAILSPARK_SQL_MEMORY_BYTES", default_value_t = 256 << 20)]
    sql_memory_bytes: usize,
    /// SQL queries one org may run at once (more answer 429).
    #[arg(long, env = "TRAILSPARK_SQL_PER_ORG", default_value_t = 2)]
    sql_per_org: usize,
    /// SQL queries the server runs at once, over all orgs (more answer 429).
    #[arg(long, env = "TRAILSPARK_SQL_CONCURRENT", default_value_t = 4)]
    sql_concurrent: usize,
    /// Threads that run SQL (at a lower priority than ingestion).
    #[arg(long, env = "TRAILSPARK_SQL_THREADS", default_value_t = 2)]
    sql_threads: usize,
    /// Seconds between retention passes.
    #[arg(long, env = "TRAILSPARK_RETENTION_INTERVAL_SECS", default_value_t = 60)]
    retention_interval_secs: u64,
    /// The length of a retention day in seconds (86400; shorter only for tests and demos).
    #[arg(long, env = "TRAILSPARK_RETENTION_DAY_SECS", default_value_t = 86_400)]
    retention_day_secs: u64,
    /// Archived signals are deleted after this many days (spec 13's PERMANENT_DELETE_DAYS).
    #[arg(long, env = "TRAILSPARK_PERMANENT_DELETE_DAYS", default_value_t = 365)]
    permanent_delete_days: u32,
}

impl ArchiveOpts {
    fn location(&self, data_dir: &std::path::Path) -> anyhow::Result<Location> {
        let url = match &self.archive {
            Some(u) => u.clone(),
            None => data_dir.join("archive").display().to_string(),
        };
        Ok(Location::parse(&url)?)
    }

    fn config(&self) -> ArchiveConfig {
        ArchiveConfig {
            max_rows: self.archive_max_rows.max(1),
            max_bytes: self.archive_max_bytes.max(1),
            max_age: Duration::from_secs(self.archive_max_age_secs),
            ..Default::default()
        }
    }

    fn retention(&self) -> RetentionConfig {
        RetentionConfig {
            interval: Duration::from_secs(self.retention_interval_secs.max(1)),
            day: Duration::from_secs(self.retention_day_secs.max(1)),
            permanent_delete_days: self.permanent_delete_days.max(1),
            ..Default::default()
        }
    }

    fn limits(&self) -> Limits {
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
#[derive(Args, Clone)]
struct HttpOpts {
    /// Most open HTTP connections; more are answered 503 and closed. Lowered at start to
    /// fit the open-files limit.
    #[arg(long, env = "TRAILSPARK_MAX_CONNECTIONS", default_value_t = 4096)]
    max_connections: usize,
    /// Seconds a client has to send a request's headers; also the longest a kept-alive
    /// connection may stay idle.
    #[arg(long, env = "TRAILSPARK_HEADER_TIMEOUT_SECS", default_value_t = 10)]
    header_timeout_secs: u64,
    /// Longest pause, in seconds, within a request body (408 after it).
    #[arg(long, env = "TRAILSPARK_BODY_IDLE_TIMEOUT_SECS", default_value_t = 30)]
    body_idle_timeout_secs: u64,
}

impl HttpOpts {
    fn limits(&self) -> trailspark::listener::HttpLimits {
        trailspark::listener::HttpLimits {
            max_connections: trailspark::listener::connection_budget(self.max_connections),
            header_timeout: Duration::from_secs(self.header_timeout_secs.max(1)),
            body_idle_timeout: Duration::from_secs(self.body_idle_timeout_secs.max(1)),
        }
    }
}

// Parsed once at start; the size of `Serve`'s options costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve {
        #[command(flatten)]
        log: LogOpts,
        /// Address to listen on (port 0 picks a free port, printed at start).
        #[arg(long, env = "TRAILSPARK_LISTEN", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// The server administrator's token (may create orgs; Owner of the default org).
        #[arg(long, env = "TRAILSPARK_ADMIN_TOKEN", hide_env_values = true)]
        admin_token: Option<String>,
        #[command(flatten)]
        http: HttpOpts,
        #[command(flatten)]
        dataflow: DataflowOpts,
        #[command(flatten)]
        archive: ArchiveOpts,
        #[command(flatten)]
        nats: NatsServeOpts,
    },
    /// Manage organizations.
    Orgs {
        #[command(subcommand)]
        cmd: OrgsCmd,
    },
    /// Recover credentials: mint an Owner token or a server administrator token.
    Admin {
        #[command(subcommand)]
        cmd: AdminCmd,
    },
    /// Manage API keys.
    Keys {
        #[command(subcommand)]
        cmd: KeysCmd,
    },
    /// Import historical events (NDJSON or JSON arrays, plain or gzip) through the same
    /// pipeline as live ingestion; prints `accepted=N duplicates=N rejected=N`.
    Backfill {
        /// A Signal Staging API key of the org to import into.
        #[arg(long)]
        key: String,
        /// A running server to send to (through the bulk endpoint).
        #[arg(long, conflicts_with = "data_dir")]
        server: Option<String>,
        /// A data directory to append to directly (the server must be stopped).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// With --data-dir: the log is on NATS JetStream instead.
        #[arg(long = "nats", env = "TRAILSPARK_NATS_URL")]
        nats_url: Option<String>,
        /// With --nats: the same credentials and TLS options as `serve`.
        #[command(flatten)]
        auth: NatsAuthOpts,
        /// Write refused events here, one JSON line each with file, line and reason.
        #[arg(long)]
        rejects: Option<PathBuf>,
        /// Files to import.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Inspect the log.
    Log {
        #[command(subcommand)]
        cmd: LogCmd,
    },
    /// Run one read-only SQL query for an org without a server and print the result as a table.
    ///
    /// Over a data directory (the default) it sees what the server would: the archive, the
    /// log's tail not yet archived, and the live tables rebuilt from the log (the server must
    /// be stopped: it holds the directory). With `--archive URL` and no data directory it reads
    /// the archive alone (`signals`, `anonymous_signals`; the live tables are empty).
    Sql {
        /// The query.
        sql: String,
        /// The org whose data the query sees.
        #[arg(long)]
        org: u64,
        /// Data directory to replay (default: TRAILSPARK_DATA_DIR or ./trailspark-data).
        #[arg(long, env = "TRAILSPARK_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// The archive to read (default: <data dir>/archive).
        #[arg(long, env = "TRAILSPARK_ARCHIVE")]
        archive: Option<String>,
        /// Output format: table, json, csv.
        #[arg(long, default_value = "table")]
        format: String,
        /// Most rows the result may have.
        #[arg(long, default_value_t = 100_000)]
        max_rows: usize,
    },
    /// Maintain the archive.
    Archive {
        #[command(subcommand)]
        cmd: ArchiveCmd,
    },
}

#[derive(Subcommand)]
enum ArchiveCmd {
    /// Merge the small files of each partition into one. Readers never see a row twice or
    /// miss one; a running server keeps its own file list, so compact a live server's archive
    /// with `POST /api/admin/archive/compact` instead.
    Compact {
        /// The archive (a directory, file:///dir, s3://bucket/prefix, ...).
        #[arg(long, env = "TRAILSPARK_ARCHIVE")]
        archive: Option<String>,
        /// Data directory whose archive to compact when --archive is not given.
        #[arg(long, env = "TRAILSPARK_DATA_DIR", default_value = "trailspark-data")]
        data_dir: PathBuf,
    },
    /// List the archive's files with their row counts and sizes, one JSON line each.
    Files {
        #[arg(long, env = "TRAILSPARK_ARCHIVE")]
        archive: Option<String>,
        #[arg(long, env = "TRAILSPARK_DATA_DIR", default_value = "trailspark-data")]
        data_dir: PathBuf,
    },
}

/// Recovery of credentials, offline (the server must be stopped) or on a NATS log.
#[derive(Subcommand)]
enum AdminCmd {
    /// Mint an Owner token for an org whose Owner tokens are lost; prints it (shown once).
    OwnerToken {
        #[command(flatten)]
        log: LogOpts,
        #[arg(long)]
        org: u64,
    },
    /// Mint a new server administrator token; prints it (shown once).
    ServerToken {
        #[command(flatten)]
        log: LogOpts,
    },
}

#[derive(Subcommand)]
enum OrgsCmd {
    /// Create an organization and print its Owner token (shown once).
    Create {
        #[command(flatten)]
        log: LogOpts,
        #[arg(long)]
        name: String,
    },
    /// List organizations.
    List {
        #[command(flatten)]
        log: LogOpts,
    },
}

#[derive(Subcommand)]
enum KeysCmd {
    /// Create an API key and print it (shown once).
    Create {
        #[command(flatten)]
        log: LogOpts,
        #[arg(long, default_value_t = DEFAULT_ORG.0)]
        org: u64,
        #[arg(long)]
        name: String,
        /// signal_staging or product_org.
        #[arg(long, default_value = "signal_staging")]
        endpoint_type: String,
        /// Generate a shared secret required in X-Api-Secret (or as the X-Signature HMAC key).
        #[arg(long)]
        secret: bool,
        /// Expiry, RFC 3339.
        #[arg(long)]
        expires_at: Option<String>,
        /// Product-org payload template, JSON (required for product_org keys).
        #[arg(long)]
        template: Option<String>,
    },
    /// List an org's keys (never the keys themselves).
    List {
        #[command(flatten)]
        log: LogOpts,
        #[arg(long, default_value_t = DEFAULT_ORG.0)]
        org: u64,
    },
    /// Revoke a key.
    Revoke {
        #[command(flatten)]
        log: LogOpts,
        #[arg(long, default_value_t = DEFAULT_ORG.0)]
        org: u64,
        id: u64,
    },
}

#[derive(Subcommand)]
enum LogCmd {
    /// Print every log entry as one JSON line: position, kind, and the entry.
    Dump {
        #[command(flatten)]
        log: LogOpts,
    },
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TRAILSPARK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_tracing();
    match Cli::parse().command {
        Command::Serve {
            log,
            listen,
            admin_token,
            http,
            dataflow,
            archive,
            nats,
        } => serve(log, listen, admin_token, http, dataflow, archive, nats).await,
        Command::Orgs { cmd } => orgs(cmd).await,
        Command::Admin { cmd } => admin_cli(cmd).await,
        Command::Backfill {
            key,
            server,
            data_dir,
            nats_url,
            auth,
            rejects,
            files,
        } => backfill(key, server, data_dir, nats_url, auth, rejects, files).await,
        Command::Keys { cmd } => keys(cmd).await,
        Command::Log {
            cmd: LogCmd::Dump { log },
        } => dump(log).await,
        Command::Sql {
            sql,
            org,
            data_dir,
            archive,
            format,
            max_rows,
        } => sql_cli(sql, org, data_dir, archive, format, max_rows).await,
        Command::Archive { cmd } => archive_cli(cmd).await,
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {},
        _ = term.recv() => {},
    }
    tracing::info!("Shutting down.");
}

async fn serve(
    log: LogOpts,
    listen: SocketAddr,
    admin_token: Option<String>,
    http: HttpOpts,
    dataflow: DataflowOpts,
    archive: ArchiveOpts,
    nats_opts: NatsServeOpts,
) -> anyhow::Result<()> {
    // First: it raises the open-files limit that the journal and the archive rely on too.
    let http_limits = http.limits();
    let loc = log.location();
    let engine = Engine::start(dataflow.engine_config());
    // With NATS: one connection for the log, the source and the change events (so that
    // health reports the connection appends use), and the event publisher, started before the replay so that it drains what the replay derives (skipping what
    // its checkpoint says was published before).
    let nats_status = Arc::new(trailspark::nats::NatsStatus::default());
    let state_cell: Arc<std::sync::OnceLock<Arc<AppState>>> = Default::default();
    let nats_client = match &loc.nats_url {
        Some(url) => {
            let client = trailspark::nats::connect(url, &loc.nats_auth).await?;
            *nats_status.client.lock().unwrap() = Some(client.clone());
            if nats_opts.nats_events {
                let js = async_nats::jetstream::new(client.clone());
                let settings = trailspark::nats::events::EventSettings {
                    replicas: log.nats_replicas,
                    max_age: Duration::from_secs(nats_opts.nats_events_max_age_days * 86_400),
                    max_bytes: nats_opts.nats_events_max_bytes,
                };
                let done = tokio::time::timeout(
                    Duration::from_secs(30),
                    trailspark::nats::events::prepare(&js, &settings),
                )
                .await
                .map_err(|_| anyhow::anyhow!("timed out preparing the events stream"))??;
                let (tx, rx) = tokio::sync::mpsc::channel(1024);
                engine.read.attach_changes(tx);
                tokio::spawn(trailspark::nats::events::run(
                    js,
                    rx,
                    done,
                    state_cell.clone(),
                    nats_status.clone(),
                ));
            }
            Some(client)
        }
        None => None,
    };
    let archive_loc = archive.location(&log.data_dir)?;
    let mut loc = loc;
    loc.archive = Some(archive_loc.clone());
    let archiver = Archiver::open(
        archive_loc.clone(),
        archive.config(),
        Arc::new(ReadStamper(engine.read.clone())),
    )
    .await
    .with_context(|| format!("opening the archive at {archive_loc:?}"))?;
    engine.attach_archiver(archiver.clone());
    let opened = match &nats_client {
        Some(c) => open::open_with_client(&loc, Some(engine.clone()), c.clone()).await?,
        None => open::open(&loc, Some(engine.clone())).await?,
    };
    let stats = opened.stats;
    engine.read.set_started_at_head(opened.log.head());
    tracing::info!(
        log = opened.log.kind(),
        entries = stats.entries,
        signals = stats.signals,
        config_events = stats.config_events,
        "Log replayed."
    );
    let first_start = opened.registry.is_empty();
    let quota = Quota::from_counts(stats.raw_signals.clone());
    let state = AppState::new(
        opened.registry,
        opened.log.clone(),
        admin_token.as_deref(),
        Some((engine, quota)),
    );
    let _ = state.archiver.set(archiver.clone());
    let _ = state_cell.set(state.clone());
    if let Some(client) = nats_client {
        use trailspark::nats::source;
        let _ = state.nats.set(nats_status.clone());
        let settings = source::ConsumerSettings {
            max_ack_pending: nats_opts.nats_max_ack_pending,
            ack_wait: Duration::from_secs(nats_opts.nats_ack_wait_secs.max(1)),
            batch: nats_opts.nats_batch.clamp(1, 10_000),
            deadletter_max_age: Duration::from_secs(nats_opts.nats_deadletter_days * 86_400),
        };
        let js = async_nats::jetstream::new(client.clone());
        source::ensure_deadletter_stream(&js, &settings).await?;
        tokio::spawn(source::run_consumer(
            state.clone(),
            js,
            settings,
            nats_status.clone(),
        ));
        tokio::spawn(source::run_requests(state.clone(), client));
    }
    let _ = state
        .sql
        .set(SqlEngine::new(Some(archiver.clone()), archive.limits())?);
    let archiving = tokio::spawn(archiver.clone().run());
    let retention = {
        let mut r = archive.retention();
        r.hot = HotConfig {
            window_ms: (dataflow.hot_window_days > 0)
                .then(|| i64::from(dataflow.hot_window_days) * r.day.as_millis().max(1) as i64),
            identity: dataflow.engine_config().identity,
        };
        r
    };
    let _ = state.retention.set(retention.clone());
    let retaining = state.engine.clone().map(|engine| {
        tokio::spawn(trailspark::hot::run_rehydrator(
            state.clone(),
            engine.clone(),
        ));
        tokio::spawn(trailspark::retention::run(
            state.clone(),
            engine,
            archiver.clone(),
            retention,
        ))
    });
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let addr = listener.local_addr()?;
    if first_start {
        let (org, owner) = state.create_org("Default").await?;
        // Without TRAILSPARK_ADMIN_TOKEN the administrator gets a token of its own, apart
        // from every org's: no org's Owner or Admin can revoke it.
        let server_token = match &admin_token {
            None => Some(state.create_server_token().await?),
            Some(_) => None,
        };
        let key = state
            .create_key(
                org.id,
                NewKey {
                    name: "Default key".into(),
                    endpoint_type: EndpointType::SignalStaging,
                    secret: false,
                    expires_at: None,
                    template: None,
                },
            )
            .await?;
        println!(
            "trailspark: first start; created organization {} (\"{}\").",
            org.id, org.name
        );
        println!("  Owner token, shown once: {owner}");
        match server_token {
            Some(t) => println!(
                "  Server administrator token (creates orgs; Owner of organization 1), shown once: {t}"
            ),
            None => println!("  TRAILSPARK_ADMIN_TOKEN is the server administrator's token."),
        }
        println!("  Signal Staging API key, shown once: {}", key.plaintext);
        println!("  Send a test signal:");
        println!(
            "    curl -X POST http://{addr}/api/signal-staging/webhook/{} -H 'Content-Type: application/json' \
             -d '{{\"email\":\"test@example.com\",\"event\":\"test\"}}'",
            key.plaintext
        );
        println!("  Manage keys with: curl -H 'Authorization: Bearer <owner token>' http://{addr}/api/admin/keys");
    }
    println!("trailspark: listening on http://{addr}");
    tracing::info!(%addr, log = state.log.kind(), "Serving.");
    server::serve(state, listener, http_limits, shutdown_signal()).await;
    archiving.abort();
    if let Some(r) = retaining {
        r.abort();
    }
    // What is buffered is in the log too; writing it now just saves the next start a replay,
    // so it gets a bounded time (the dataflow may be behind, and files wait for it).
    match tokio::time::timeout(Duration::from_secs(20), archiver.flush(true)).await {
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "Could not write the archive's buffers at shutdown.")
        }
        Err(_) => tracing::info!("Left the archive's buffers to the next start's replay."),
        Ok(Ok(())) => {}
    }
    Ok(())
}

async fn open_state(log: &LogOpts) -> anyhow::Result<(std::sync::Arc<AppState>, open::Opened)> {
    let opened = open::open(&log.location(), None).await?;
    let state = AppState::new(opened.registry.clone(), opened.log.clone(), None, None);
    Ok((state, opened))
}

async fn admin_cli(cmd: AdminCmd) -> anyhow::Result<()> {
    match cmd {
        AdminCmd::OwnerToken { log, org } => {
            let (state, _opened) = open_state(&log).await?;
            let (t, plaintext) = state.mint_owner_token(OrgId(org)).await?;
            println!(
                "{}",
                json!({"id": t.id, "org_id": t.org_id, "role": "owner", "token": plaintext})
            );
        }
        AdminCmd::ServerToken { log } => {
            let (state, _opened) = open_state(&log).await?;
            let plaintext = state.create_server_token().await?;
            println!("{}", json!({"server_admin": true, "token": plaintext}));
        }
    }
    Ok(())
}

async fn orgs(cmd: OrgsCmd) -> anyhow::Result<()> {
    match cmd {
        OrgsCmd::Create { log, name } => {
            let (state, _opened) = open_state(&log).await?;
            let (org, token) = state.create_org(&name).await?;
            println!(
                "{}",
                json!({"id": org.id, "name": org.name, "owner_token": token})
            );
        }
        OrgsCmd::List { log } => {
            let (state, _opened) = open_state(&log).await?;
            for o in state.registry.read().unwrap().orgs() {
                println!(
                    "{}",
                    json!({"id": o.id, "name": o.name, "created_at": rfc3339(o.created_at)})
                );
            }
        }
    }
    Ok(())
}

async fn keys(cmd: KeysCmd) -> anyhow::Result<()> {
    let now = chrono::Utc::now().timestamp_millis();
    match cmd {
        KeysCmd::Create {
            log,
            org,
            name,
            endpoint_type,
            secret,
            expires_at,
            template,
        } => {
            let endpoint_type = match endpoint_type.as_str() {
                "signal_staging" => EndpointType::SignalStaging,
                "product_org" => EndpointType::ProductOrg,
                other => {
                    bail!("--endpoint-type must be signal_staging or product_org, not {other}")
                }
            };
            let expires_at = expires_at
                .map(|s| chrono::DateTime::parse_from_rfc3339(&s).map(|t| t.timestamp_millis()))
                .transpose()
                .context("--expires-at must be RFC 3339")?;
            let template: Option<ProductOrgTemplate> = template
                .map(|t| serde_json::from_str(&t))
                .transpose()
                .context("--template must be a JSON template")?;
            let (state, _opened) = open_state(&log).await?;
            let created = state
                .create_key(
                    OrgId(org),
                    NewKey {
                        name,
                        endpoint_type,
                        secret,
                        expires_at,
                        template,
                    },
                )
                .await?;
            let mut v = key_json(&created.key, now);
            v["key"] = json!(created.plaintext);
            if let Some(s) = created.secret {
                v["secret"] = json!(s);
            }
            println!("{v}");
        }
        KeysCmd::List { log, org } => {
            let (state, _opened) = open_state(&log).await?;
            for k in state.registry.read().unwrap().keys_of(OrgId(org)) {
                println!("{}", key_json(k, now));
            }
        }
        KeysCmd::Revoke { log, org, id } => {
            let (state, _opened) = open_state(&log).await?;
            let k = state.revoke_key(OrgId(org), id).await?;
            println!("{}", key_json(&k, now));
        }
    }
    Ok(())
}

async fn dump(log: LogOpts) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::io::stdout());
    let mut write_err = None;
    open::read_all(&log.location(), &mut |pos, entry| {
        let line = match &entry {
            LogEntry::Signal(s) => {
                let mut v = serde_json::to_value(s).expect("records serialize");
                v["payload"] = serde_json::from_str(&s.payload).unwrap_or(json!(s.payload));
                json!({"position": pos, "kind": "signal", "signal": v})
            }
            LogEntry::ProductOrgUpdate(p) => {
                let mut v = serde_json::to_value(p).expect("records serialize");
                v["payload"] = serde_json::from_str(&p.payload).unwrap_or(json!(p.payload));
                json!({"position": pos, "kind": "product_org_update", "update": v})
            }
            LogEntry::Config(c) => json!({"position": pos, "kind": "config", "config": redact(c)}),
        };
        if let Err(e) = writeln!(out, "{line}") {
            write_err = Some(e);
        }
        Ok(())
    })
    .await?;
    if let Some(e) = write_err {
        return Err(e.into());
    }
    out.flush()?;
    Ok(())
}

/// Config events without key secrets (hashes are harmless; secrets are not).
fn redact(c: &trailspark_core::ConfigEvent) -> serde_json::Value {
    let mut v = serde_json::to_value(c).expect("config events serialize");
    if let Some(s) = v.get_mut("secret") {
        *s = json!("<redacted>");
    }
    v
}

async fn backfill(
    key: String,
    server: Option<String>,
    data_dir: Option<PathBuf>,
    nats_url: Option<String>,
    auth: NatsAuthOpts,
    rejects: Option<PathBuf>,
    files: Vec<PathBuf>,
) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    use trailspark::backfill::{offline_target, Backfill, Target};
    let progress = std::io::stderr().is_terminal();
    let mut _opened = None;
    let target = match (server, data_dir) {
        (Some(url), _) => Target::Server(url),
        (None, Some(dir)) => {
            let loc = LogLocation {
                data_dir: dir,
                nats_url,
                stream: StreamSettings::default(),
                nats_auth: auth.auth(),
                archive: None,
            };
            let opened = open::open_for_append(&loc).await?;
            let t = offline_target(opened.log.clone(), &opened.registry, &key)?;
            _opened = Some(opened);
            t
        }
        (None, None) => bail!("give --server URL or --data-dir DIR"),
    };
    let summary = Backfill {
        key,
        target,
        files,
        rejects,
        progress,
    }
    .run()
    .await?;
    println!(
        "accepted={} duplicates={} rejected={}",
        summary.accepted, summary.duplicates, summary.rejected
    );
    Ok(())
}

async fn sql_cli(
    sql: String,
    org: u64,
    data_dir: Option<PathBuf>,
    archive: Option<String>,
    format: String,
    max_rows: usize,
) -> anyhow::Result<()> {
    use trailspark_queries::output::{encode, to_table, Format};
    let limits = Limits {
        max_rows,
        ..Default::default()
    };
    // Archive alone: an archive URL and no data directory.
    // With a data directory, the replayed log and its engine, whose read models hold the live
    // tables.
    let (engine, replayed) = match (data_dir, &archive) {
        (None, Some(url)) => {
            let archiver = Archiver::open(
                Location::parse(url)?,
                ArchiveConfig::default(),
                Arc::new(trailspark_sinks::archive::NoStamps),
            )
            .await
            .with_context(|| format!("opening the archive at {url}"))?;
            (SqlEngine::new(Some(archiver), limits)?, None)
        }
        (dir, _) => {
            let dir = dir.unwrap_or_else(|| PathBuf::from("trailspark-data"));
            let url = archive.unwrap_or_else(|| dir.join("archive").display().to_string());
            let engine = Engine::start(EngineConfig::default());
            let archiver = Archiver::open(
                Location::parse(&url)?,
                ArchiveConfig::default(),
                Arc::new(ReadStamper(engine.read.clone())),
            )
            .await
            .with_context(|| format!("opening the archive at {url}"))?;
            engine.attach_archiver(archiver.clone());
            let loc = LogLocation {
                data_dir: dir,
                nats_url: None,
                stream: StreamSettings::default(),
                nats_auth: Default::default(),
                archive: None,
            };
            let opened = open::open(&loc, Some(engine.clone())).await?;
            let head = opened.log.head();
            if !engine.read.wait_for(head, Duration::from_secs(600)).await {
                bail!("the dataflow did not catch up with the log in 10 minutes");
            }
            (
                SqlEngine::new(Some(archiver), limits)?,
                Some((opened, engine)),
            )
        }
    };
    let out = engine
        .query_with(org, &sql, |reads| match &replayed {
            Some((opened, e)) => {
                trailspark::sql::live_tables(&e.read.read(), &opened.registry, org, reads)
            }
            None => Vec::new(),
        })
        .await?;
    let text = match format.as_str() {
        "table" => to_table(&out)?,
        "json" => String::from_utf8(encode(&out, Format::Json)?)?,
        "csv" => String::from_utf8(encode(&out, Format::Csv)?)?,
        other => bail!("--format must be table, json or csv, not {other}"),
    };
    println!("{}", text.trim_end());
    Ok(())
}

async fn archive_cli(cmd: ArchiveCmd) -> anyhow::Result<()> {
    let open_archive = |archive: Option<String>, data_dir: PathBuf| async move {
        let url = archive.unwrap_or_else(|| data_dir.join("archive").display().to_string());
        Archiver::open(
            Location::parse(&url)?,
            ArchiveConfig::default(),
            Arc::new(trailspark_sinks::archive::NoStamps),
        )
        .await
        .with_context(|| format!("opening the archive at {url}"))
    };
    match cmd {
        ArchiveCmd::Compact { archive, data_dir } => {
            let archiver = open_archive(archive, data_dir).await?;
            let (parts, files) = archiver.compact().await?;
            println!("partitions={parts} files_merged={files}");
        }
        ArchiveCmd::Files { archive, data_dir } => {
            let archiver = open_archive(archive, data_dir).await?;
            for f in archiver.files() {
                println!(
                    "{}",
                    json!({"path": f.path.to_string(), "first_id": f.first, "last_id": f.last, "bytes": f.size})
                );
            }
        }
    }
    Ok(())
}
