//! The command line: `serve` and the offline tools, one module per subcommand.

mod admin;
mod archive;
mod backfill;
mod keys;
mod log;
mod orgs;
mod serve;
mod sql;

use std::path::PathBuf;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use trailspark::config::{LogOpts, NatsAuthOpts, ServeConfig};
use trailspark_core::tenancy::DEFAULT_ORG;

#[derive(Parser)]
#[command(
    name = "trailspark",
    version,
    about = "Self-hostable signal pipeline for B2B lead scoring"
)]
pub struct Cli {
    /// How logs are written to stderr: `text` (coloured on a terminal only) or `json` (one
    /// object per line).
    #[arg(long, global = true, env = "TRAILSPARK_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// The log format of `--log-format`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve(Box<ServeConfig>),
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
pub enum ArchiveCmd {
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
pub enum AdminCmd {
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
pub enum OrgsCmd {
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
pub enum KeysCmd {
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
        /// Browser origins allowed to send with the key (CORS), comma-separated, or `*`.
        /// Default: any for signal_staging keys, none for product_org keys.
        #[arg(long, value_delimiter = ',')]
        allowed_origins: Option<Vec<String>>,
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
pub enum LogCmd {
    /// Print every log entry as one JSON line: position, kind, and the entry.
    Dump {
        #[command(flatten)]
        log: LogOpts,
    },
}

/// Opens the log at `log` offline (the server must be stopped) for a config change.
async fn open_control(
    log: &LogOpts,
) -> anyhow::Result<(
    std::sync::Arc<trailspark::control::Control>,
    trailspark::log::open::Opened,
)> {
    let registry = trailspark_core::tenancy::SharedRegistry::default();
    let opened = trailspark::log::open::open(
        &log.location(),
        &registry,
        trailspark::log::Followers::default(),
        None,
    )
    .await?;
    let control = trailspark::control::Control::new(registry, opened.log.clone(), None);
    Ok((control, opened))
}

/// Parses the command line and runs the command.
pub async fn run() -> anyhow::Result<()> {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches)?;
    // Held until the command ends, so that its last log lines are written.
    let _logs = crate::init_tracing(cli.log_format);
    match cli.command {
        Command::Serve(cfg) => {
            let serve_matches = matches
                .subcommand_matches("serve")
                .expect("the serve command was parsed");
            serve::run(cfg.resolve(serve_matches)?).await
        }
        Command::Orgs { cmd } => orgs::run(cmd).await,
        Command::Admin { cmd } => admin::run(cmd).await,
        Command::Backfill {
            key,
            server,
            data_dir,
            nats_url,
            auth,
            rejects,
            files,
        } => backfill::run(key, server, data_dir, nats_url, auth, rejects, files).await,
        Command::Keys { cmd } => keys::run(cmd).await,
        Command::Log {
            cmd: LogCmd::Dump { log },
        } => log::dump(log).await,
        Command::Sql {
            sql,
            org,
            data_dir,
            archive,
            format,
            max_rows,
        } => sql::run(sql, org, data_dir, archive, format, max_rows).await,
        Command::Archive { cmd } => archive::run(cmd).await,
    }
}
