//! The server, built in one place, in order, from its [`ServeConfig`]:
//!
//! 1. **read models** (with the change-event sink, on NATS) and the **engine** that applies
//!    the dataflow's output to them;
//! 2. the **archiver**, which stamps rows from the read models;
//! 3. the **log**, opened and replayed into the tenancy registry and its followers (the
//!    archiver and the engine: the log's tail fans out to both);
//! 4. the handles: the **control plane** (admin), the **ingest handle** (admission + log),
//!    **SQL** and its archive lookups;
//! 5. the **services** (hot window, retention, the evaluator) and the **sources** (HTTP,
//!    NATS).
//!
//! Each part receives, when it is made, the narrow handles it needs; nothing is filled in
//! later. [`Server::run`] serves until shutdown.

use std::sync::Arc;
use std::time::Duration;

use trailspark_core::admission::Quota;
use trailspark_core::tenancy::{OrgId, SharedRegistry};
use trailspark_crm::client::CrmHttp;
use trailspark_operators::usage::Meter;
use trailspark_queries::lookup::LookupLimits;
use trailspark_queries::{Live, SqlEngine, SqlError};
use trailspark_sinks::archive::evaluations::EvaluationArchive;
use trailspark_sinks::archive::{ArchiveError, Archiver};
use trailspark_sinks::nats_events::{self, EventSettings, EventsError, EventsStatus};
use trailspark_sinks::read_models::{ReadModels, ReadStamper};
use trailspark_sources::nats::consumer::{self, ConsumerError, ConsumerSettings, SourceStatus};
use trailspark_sources::nats::reply;

use crate::config::ServeConfig;
use crate::control::Control;
use crate::engine::Engine;
use crate::http::listener::HttpLimits;
use crate::http::{Api, NatsHealth};
use crate::ingest::IngestHandle;
use crate::log::nats::{connect, ConnectError};
use crate::log::open::{open, OpenError, Opened};
use crate::log::{Follower, Followers};
use crate::services::crm::{CrmConfig, CrmService};
use crate::services::destinations::{DestinationService, Ledger};
use crate::services::evaluator::Evaluator;
use crate::services::hot::{HotConfig, HotWindow};
use crate::services::retention::RetentionService;

/// Why the server could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Nats(#[from] ConnectError),
    #[error("preparing the change events: {0}")]
    Events(#[from] EventsError),
    #[error("timed out preparing the change events' stream")]
    EventsTimeout,
    #[error("preparing the NATS source: {0}")]
    Source(#[from] ConsumerError),
    #[error("opening the archive: {0}")]
    Archive(#[from] ArchiveError),
    #[error(transparent)]
    Log(#[from] OpenError),
    #[error("starting SQL: {0}")]
    Sql(#[from] SqlError),
    #[error("the key sealing CRM credentials: {0}")]
    SecretKey(String),
}

/// The built server: its API handles, and the tasks and settings it runs with.
pub struct Server {
    pub api: Arc<Api>,
    pub engine: Arc<Engine>,
    /// Counts of the log's replay at start.
    pub replayed: crate::log::open::ReplayStats,
    /// Whether the log held no org: the first start, which creates the default one.
    pub first_start: bool,
    pub http: HttpLimits,
    hot: Option<Arc<HotWindow>>,
    /// Whether the delivery service writes to destinations.
    deliver: bool,
    evaluation_archive: Arc<EvaluationArchive>,
    /// Holds the data directory's lock for as long as the server runs.
    _opened: Opened,
}

/// The evaluations' archive follows the log too.
pub struct EvaluationArchiveFollower(pub Arc<EvaluationArchive>);

impl Follower for EvaluationArchiveFollower {
    fn follow(&self, entries: &crate::log::Committed) {
        self.0.offer(entries);
    }
}

/// The archiver follows the log: it is handed every committed entry, in log order.
pub struct ArchiveFollower(pub Arc<Archiver>);

impl Follower for ArchiveFollower {
    fn follow(&self, entries: &crate::log::Committed) {
        self.0.offer(entries);
    }
}

/// Builds the server from `cfg` (see the module docs for the order).
pub async fn build(cfg: &ServeConfig) -> Result<Server, BuildError> {
    // First: it raises the open-files limit that the journal and the archive rely on too.
    let http = cfg.http.limits();
    let registry = SharedRegistry::default();
    let mut loc = cfg.log.location();
    loc.create = true;

    // NATS: one connection for the log, the source and the change events.
    let client = match &loc.nats_url {
        Some(url) => Some(connect(url, &loc.nats_auth).await?),
        None => None,
    };

    // 1. The read models, publishing their changes when there is NATS, and the engine. The
    // publisher starts before the replay so that it drains what the replay derives
    // (skipping what its checkpoint says was published before).
    let mut events_status = None;
    let read = match (&client, cfg.nats.nats_events) {
        (Some(client), true) => {
            let js = async_nats::jetstream::new(client.clone());
            let settings = EventSettings {
                replicas: cfg.log.nats_replicas,
                max_age: Duration::from_secs(cfg.nats.nats_events_max_age_days * 86_400),
                max_bytes: cfg.nats.nats_events_max_bytes,
            };
            let prepared = tokio::time::timeout(
                Duration::from_secs(30),
                nats_events::prepare(&js, &settings),
            )
            .await
            .map_err(|_| BuildError::EventsTimeout)??;
            let (tx, rx) = tokio::sync::mpsc::channel(1024);
            let status = Arc::new(EventsStatus::default());
            let reg = registry.clone();
            let limits: nats_events::PlanLimits = Arc::new(move |org, meter| {
                let plan = reg.read().unwrap().plan(OrgId(org));
                match meter {
                    Meter::RawSignals => plan.raw_signal_limit,
                    Meter::MappedSignals => plan.mapped_signal_limit,
                    _ => 0,
                }
            });
            tokio::spawn(nats_events::run(js, rx, prepared, limits, status.clone()));
            events_status = Some(status);
            Arc::new(ReadModels::new(Some(tx)))
        }
        _ => Arc::new(ReadModels::default()),
    };
    let mut engine_cfg = cfg.dataflow.engine_config();
    engine_cfg.eligibility = cfg.evaluation.evaluation;
    let engine = Engine::with_models(engine_cfg, read.clone());

    // 2. The archiver.
    let archive_loc = cfg.archive.location(&cfg.log.data_dir)?;
    loc.archive = Some(archive_loc.clone());
    let archiver = Archiver::open(
        archive_loc.clone(),
        cfg.archive.config(),
        Arc::new(ReadStamper(read.clone())),
    )
    .await?;
    let evaluation_archive =
        EvaluationArchive::open(archive_loc, cfg.archive.config().max_age).await?;

    // 3. The log, replayed into the registry, the archiver and the engine, which then
    // follow its tail.
    let ledger = Ledger::new();
    let followers = Followers::new(vec![
        Arc::new(ArchiveFollower(archiver.clone())) as Arc<dyn Follower>,
        Arc::new(EvaluationArchiveFollower(evaluation_archive.clone())),
        engine.clone(),
        ledger.clone(),
    ]);
    let opened = open(&loc, &registry, followers, client.clone()).await?;
    let log = opened.log.clone();
    read.set_started_at_head(log.head());
    let replayed = opened.stats.clone();
    tracing::info!(
        log = log.kind(),
        entries = replayed.entries,
        signals = replayed.signals,
        config_events = replayed.config_events,
        "Log replayed."
    );
    let first_start = registry.read().unwrap().is_empty();

    // 4. The handles.
    let control = Control::new(registry.clone(), log.clone(), cfg.admin_token.as_deref());
    let quota = Arc::new(Quota::from_counts(replayed.raw_signals.clone()));
    let ingest = IngestHandle::new(
        registry.clone(),
        quota,
        log.clone(),
        read.clone(),
        cfg.http.public_url.clone(),
    );
    let live = Live {
        models: read.clone(),
        registry: registry.clone(),
    };
    let sql = Arc::new(SqlEngine::new(
        Some(archiver.clone()),
        Some(live),
        cfg.archive.limits(),
    )?);

    // 5. The services and the sources.
    let retention_cfg = cfg.archive.retention();
    let hot = sql.lookup(LookupLimits::default()).map(|lookup| {
        Arc::new(HotWindow {
            engine: engine.clone(),
            archiver: archiver.clone(),
            lookup,
            cfg: HotConfig {
                window_ms: (cfg.dataflow.hot_window_days > 0).then(|| {
                    i64::from(cfg.dataflow.hot_window_days)
                        * retention_cfg.day.as_millis().max(1) as i64
                }),
                identity: cfg.dataflow.engine_config().identity,
            },
        })
    });
    let retention = Arc::new(RetentionService {
        registry: registry.clone(),
        read: read.clone(),
        archiver: archiver.clone(),
        hot: hot.clone(),
        cfg: retention_cfg,
    });
    let nats = match client {
        Some(client) => {
            let source = Arc::new(SourceStatus::default());
            let settings = ConsumerSettings {
                max_ack_pending: cfg.nats.nats_max_ack_pending,
                ack_wait: Duration::from_secs(cfg.nats.nats_ack_wait_secs.max(1)),
                batch: cfg.nats.nats_batch.clamp(1, 10_000),
                deadletter_max_age: Duration::from_secs(cfg.nats.nats_deadletter_days * 86_400),
            };
            let js = async_nats::jetstream::new(client.clone());
            consumer::ensure_deadletter_stream(&js, &settings).await?;
            tokio::spawn(consumer::run_consumer(
                ingest.clone(),
                js,
                settings,
                source.clone(),
            ));
            tokio::spawn(reply::run_requests(ingest.clone(), client.clone()));
            Some(NatsHealth {
                client,
                source: Some(source),
                events: events_status,
            })
        }
        None => None,
    };
    let evaluator = cfg.evaluation.evaluation.then(|| {
        Evaluator::new(
            control.clone(),
            registry.clone(),
            read.clone(),
            cfg.evaluation.evaluator_config(),
        )
    });
    let seal = cfg
        .crm
        .seal_key(&cfg.log.data_dir)
        .map_err(BuildError::SecretKey)?;
    // One client for reading and writing CRMs: its pacing is per CRM scope.
    let crm_http = CrmHttp::new(Duration::from_secs(cfg.crm.crm_timeout_secs.max(1)));
    let destinations = Some(DestinationService::new(
        control.clone(),
        read.clone(),
        ledger,
        seal.clone(),
        cfg.crm.destination_config(),
        crm_http.clone(),
    ));
    let crm = Some(CrmService::new(
        control.clone(),
        seal,
        CrmConfig {
            scheduled: cfg.crm.crm_sync,
            interval: cfg.crm.crm_sync_interval.0,
            public_url: cfg.http.public_url.clone(),
        },
        crm_http,
    ));
    let lookup = sql.lookup(LookupLimits::default());
    let api = Arc::new(Api {
        control,
        ingest,
        log,
        read,
        sql,
        lookup,
        archiver,
        retention,
        nats,
        evaluator,
        crm,
        destinations,
        cors_origins: cfg.http.cors_origin.clone(),
        metrics: cfg.http.metrics,
        metrics_apart: cfg.http.metrics_listen.is_some(),
    });
    Ok(Server {
        api,
        engine,
        replayed,
        first_start,
        http,
        hot,
        deliver: cfg.crm.destination_delivery,
        evaluation_archive,
        _opened: opened,
    })
}

impl Server {
    /// Serves on `listener` until `shutdown` resolves, with the archiver, retention and the
    /// hot window's rehydrator running; then writes what the archive has buffered.
    /// Serves the API on `listener` (and `/metrics` on `metrics`, when given) until
    /// `shutdown`, then flushes.
    pub async fn run(
        self,
        listener: tokio::net::TcpListener,
        metrics: Option<tokio::net::TcpListener>,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        let archiver = self.api.archiver.clone();
        let mut tasks = vec![
            tokio::spawn(archiver.clone().run()),
            tokio::spawn(self.api.retention.clone().run()),
            tokio::spawn(self.evaluation_archive.clone().run()),
        ];
        if let Some(m) = metrics {
            let serving =
                crate::http::serve_metrics(self.api.clone(), m, self.http, std::future::pending());
            tasks.push(tokio::spawn(serving));
        }
        if let Some(hot) = &self.hot {
            tasks.push(tokio::spawn(hot.clone().run_rehydrator()));
        }
        if let Some(evaluator) = &self.api.evaluator {
            tasks.push(tokio::spawn(evaluator.clone().run()));
        }
        if let Some(crm) = &self.api.crm {
            tasks.push(tokio::spawn(crm.clone().run()));
        }
        if let (Some(d), true) = (&self.api.destinations, self.deliver) {
            tasks.push(tokio::spawn(d.clone().run()));
        }
        crate::http::serve(self.api.clone(), listener, self.http, shutdown).await;
        for t in tasks {
            t.abort();
        }
        // What is buffered is in the log too; writing it now just saves the next start a
        // replay, so it gets a bounded time (the dataflow may be behind, and files wait for
        // it).
        if let Err(e) = self.evaluation_archive.flush(true).await {
            tracing::warn!(error = %e, "Could not write the evaluations' buffers at shutdown.");
        }
        match tokio::time::timeout(Duration::from_secs(20), archiver.flush(true)).await {
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "Could not write the archive's buffers at shutdown.")
            }
            Err(_) => tracing::info!("Left the archive's buffers to the next start's replay."),
            Ok(Ok(())) => {}
        }
    }
}
