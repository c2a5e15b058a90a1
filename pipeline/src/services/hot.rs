//! The anonymous hot window .
//!
//! An anonymous signal waits cold (pending) until an identify links one of its identifiers to
//! a lead. Kept in the dataflow, it holds its identity facts, labels, status and group member
//! for as long as it waits, and most anonymous visitors never identify. So a signal that has
//! waited longer than the hot window, measured on the log's clock (the latest receipt time
//! fed, so a replay or a backfill of old events ages signals as the log did), and that the
//! archive already holds, leaves the dataflow: the engine retracts it in a side epoch (see
//! [`crate::engine`]), value for value as it entered, rebuilt from its archive row.
//!
//! Rehydration: when one of its identifiers joins a lead (the read models see the membership
//! change; `trailspark_sinks::read_models::cold`), the rehydrator looks its signals up in the
//! archive ([`ArchiveLookup`]: `anonymous_signals` by the identifier's own column) and the
//! engine puts them back. From there the dataflow does what it would have done had they stayed:
//! they join the lead, rules map them, their identifiers link whatever else they carry (which
//! can bring further cold signals back). While out, a signal counts as pending in the
//! explorer's statistics and stays in the usage meters (counted where the log is read); a
//! pending signal is in no signal group either way, so leaving changes no output but
//! its own processed record.
//!
//! What is not the same as staying hot: a rule edit with reprocessing does not reach cold
//! signals until they come back (in the hosted product, cold storage is not processed against
//! rules before an identify either), and after a restart the replay brings
//! every signal in hot until the first pass.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use trailspark_operators::identity::{signal_idents, IdentityConfig, SignalKey};
use trailspark_operators::status::Status;
use trailspark_operators::{Ident, Signal};
use trailspark_queries::{ArchiveLookup, LookupFilter, SqlError};
use trailspark_sinks::archive::{Archiver, Kind};
use trailspark_sinks::read_models::cold::Taken;
use trailspark_sinks::read_models::{Models, Tab};

use crate::engine::{Engine, Side};

/// Hot-window settings.
#[derive(Clone, Debug)]
pub struct HotConfig {
    /// How long an anonymous signal stays in the dataflow while it waits for an identify
    /// (milliseconds of the log's clock). `None`: for ever.
    pub window_ms: Option<i64>,
    /// The identity settings the engine runs with (which identifiers a signal carries).
    pub identity: IdentityConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum HotError {
    #[error("archive lookup failed: {0}")]
    Lookup(#[from] SqlError),
}

/// Signals looked up per archive query.
const CHUNK: usize = 1_000;

fn date_of(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .format("%Y-%m-%d")
        .to_string()
}

/// Archived anonymous signals of `org`: those at `positions` (received between `from_ms`
/// and `to_ms`), and, with `idents`, only those carrying one of them (which lets the reader
/// skip row groups by their identifier columns' statistics and bloom filters).
async fn lookup(
    archive: &ArchiveLookup,
    org: u64,
    idents: &[Ident],
    positions: &[u64],
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<Signal>, HotError> {
    let filter = LookupFilter {
        ids: Some(positions.to_vec()),
        dates: Some((date_of(from_ms), date_of(to_ms))),
        identifiers: idents
            .iter()
            .map(|i| (i.kind.as_str(), i.value.to_string()))
            .collect(),
        ..Default::default()
    };
    let mut signals: BTreeMap<u64, Signal> = BTreeMap::new();
    for row in archive.rows(org, &[Kind::Anonymous], &filter).await? {
        signals
            .entry(row.id)
            .or_insert_with(|| Signal::from_record(row.id, &row.record));
    }
    Ok(signals.into_values().collect())
}

/// Takes `signals` out of the dataflow: records them cold and queues their eviction. Each
/// must be, value for value, a signal the dataflow holds and the models show, not busy.
/// `m` is the models' write lock, held across both steps so that no rehydration of these
/// can be queued before their eviction, and the ticket is recorded before the models can
/// apply the move (see `trailspark_sinks::read_models::cold`). Returns how many were queued.
pub fn queue_eviction(
    engine: &Engine,
    m: &mut Models,
    signals: Vec<Signal>,
    identity: &IdentityConfig,
) -> usize {
    if signals.is_empty() {
        return 0;
    }
    let keys: Vec<SignalKey> = signals.iter().map(|s| (s.org, s.pos)).collect();
    for (key, s) in keys.iter().zip(&signals) {
        let idents: Arc<[Ident]> = signal_idents(s, identity)
            .into_iter()
            .map(|(_, i)| i)
            .collect();
        m.cold.evict(*key, s.received_at, idents);
    }
    let ticket = engine.feed_side(Side::Evict(signals));
    m.cold.queued(ticket, keys.iter().copied());
    crate::metrics::METRICS
        .hot_evictions
        .inc_by(keys.len() as u64);
    keys.len()
}

/// Puts back `signals`, taken for rehydration (the cold index's `take_wanted`),
/// under the models' write lock `m` (see [`queue_eviction`]). Returns how many were queued.
pub fn queue_rehydration(engine: &Engine, m: &mut Models, signals: Vec<Signal>) -> usize {
    let keys: Vec<SignalKey> = signals.iter().map(|s| (s.org, s.pos)).collect();
    if !signals.is_empty() {
        let ticket = engine.feed_side(Side::Rehydrate(signals));
        m.cold.queued(ticket, keys.iter().copied());
        crate::metrics::METRICS
            .hot_rehydrations
            .inc_by(keys.len() as u64);
    }
    m.cold.finish(keys.iter().copied());
    keys.len()
}

/// The hot window as a service: what it needs of the engine and the archive.
pub struct HotWindow {
    pub engine: Arc<Engine>,
    pub archiver: Arc<Archiver>,
    pub lookup: ArchiveLookup,
    pub cfg: HotConfig,
}

impl HotWindow {
    /// One eviction pass (see [`evict`]).
    pub async fn evict(&self) -> Result<usize, HotError> {
        evict(&self.engine, &self.archiver, &self.lookup, &self.cfg).await
    }

    /// Brings back the cold signals whose identifiers joined a lead, for as long as the
    /// server runs.
    pub async fn run_rehydrator(self: Arc<Self>) {
        let engine = &self.engine;
        loop {
            engine.read.wanted.notified().await;
            // A failed lookup puts its signals back as wanted, but nothing would notify
            // again until the models next change (maybe never on a quiet server), so retry
            // here, with a growing pause while the archive stays unreachable.
            let mut pause = Duration::from_secs(1);
            while let Err(e) = rehydrate_wanted(engine, &self.lookup).await {
                tracing::warn!(error = %e, retry_in = ?pause, "Hot window: rehydration failed.");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(60));
            }
        }
    }
}

/// One eviction pass: every org's pending signals older than the window and below the
/// archive's checkpoint leave the dataflow. Returns how many were queued to leave.
pub async fn evict(
    engine: &Engine,
    archiver: &Archiver,
    archive: &ArchiveLookup,
    cfg: &HotConfig,
) -> Result<usize, HotError> {
    let (Some(window), Some(clock)) = (cfg.window_ms, engine.log_clock()) else {
        return Ok(0);
    };
    let cutoff = clock.saturating_sub(window);
    let below = archiver.stats().checkpoint;
    let candidates: Vec<(u64, Vec<(u64, i64)>)> = {
        let m = engine.read.read();
        let mut orgs: Vec<u64> = m.orgs().collect();
        orgs.sort_unstable();
        orgs.into_iter()
            .map(|org| {
                let c = m
                    .org(org)
                    .tabs
                    .range((Tab::Pending, 0)..(Tab::Pending, below))
                    .filter_map(|&(_, pos)| {
                        let p = m.processed(org, pos)?;
                        (p.status == Status::Pending
                            && p.received_at < cutoff
                            && !m.cold.busy(&(org, pos)))
                        .then_some((pos, p.received_at))
                    })
                    .collect();
                (org, c)
            })
            .collect()
    };
    let mut n = 0;
    for (org, c) in candidates {
        for chunk in c.chunks(CHUNK) {
            let positions: Vec<u64> = chunk.iter().map(|c| c.0).collect();
            let from = chunk.iter().map(|c| c.1).min().unwrap_or(0);
            let to = chunk.iter().map(|c| c.1).max().unwrap_or(0);
            let signals = lookup(archive, org, &[], &positions, from, to).await?;
            let mut m = engine.read.write();
            let mut leaving = Vec::with_capacity(signals.len());
            for s in signals {
                let key = (org, s.pos);
                // Still waiting, and the row is the signal the dataflow holds (a row that did
                // not rebuild to it would retract something the dataflow does not have).
                let same = m.processed(org, s.pos).is_some_and(|p| {
                    p.status == Status::Pending
                        && p.received_at == s.received_at
                        && p.event_type == s.event_type
                        && p.source == s.source
                });
                if !same || m.cold.busy(&key) {
                    continue;
                }
                leaving.push(s);
            }
            n += queue_eviction(engine, &mut m, leaving, &cfg.identity);
        }
    }
    if n > 0 {
        tracing::info!(
            evicted = n,
            "Hot window: anonymous signals left the dataflow."
        );
    }
    Ok(n)
}

/// Rehydrates what is wanted now, with one archive lookup per org and chunk of signals (an
/// identify burst wants many identifiers at once). Returns how many signals were queued back.
pub async fn rehydrate_wanted(engine: &Engine, archive: &ArchiveLookup) -> Result<usize, HotError> {
    let mut n = 0;
    loop {
        let wanted = engine.read.write().cold.take_wanted();
        if wanted.is_empty() {
            return Ok(n);
        }
        let mut by_org: BTreeMap<u64, Vec<(Ident, Vec<Taken>)>> = BTreeMap::new();
        for (ident, taken) in wanted {
            by_org.entry(ident.org).or_default().push((ident, taken));
        }
        let mut failed = None;
        for (org, wanted) in by_org {
            if failed.is_none() {
                match rehydrate_org(engine, archive, org, &wanted).await {
                    Ok(k) => {
                        n += k;
                        continue;
                    }
                    Err(e) => failed = Some(e),
                }
            }
            // What was not queued is cold again, and wanted again.
            let mut m = engine.read.write();
            for (ident, taken) in wanted {
                m.cold.put_back(Some(ident), taken.iter().map(|t| t.key));
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
    }
}

async fn rehydrate_org(
    engine: &Engine,
    archive: &ArchiveLookup,
    org: u64,
    wanted: &[(Ident, Vec<Taken>)],
) -> Result<usize, HotError> {
    let mut taken: Vec<Taken> = wanted.iter().flat_map(|(_, t)| t.iter().copied()).collect();
    taken.sort_by_key(|t| t.key);
    let idents: Vec<Ident> = wanted.iter().map(|(i, _)| i.clone()).collect();
    let mut n = 0;
    for chunk in taken.chunks(CHUNK) {
        let positions: Vec<u64> = chunk.iter().map(|t| t.key.1).collect();
        let from = chunk.iter().map(|t| t.received_at).min().unwrap_or(0);
        let to = chunk.iter().map(|t| t.received_at).max().unwrap_or(0);
        let signals = lookup(archive, org, &idents, &positions, from, to).await?;
        let mut m = engine.read.write();
        let found: std::collections::HashSet<u64> = signals.iter().map(|s| s.pos).collect();
        let missing: Vec<_> = chunk
            .iter()
            .map(|t| t.key)
            .filter(|k| !found.contains(&k.1))
            .collect();
        if !missing.is_empty() {
            // Not in the archive (deleted after PERMANENT_DELETE_DAYS): they stay cold.
            tracing::warn!(
                org,
                missing = missing.len(),
                "Hot window: cold signals not found in the archive."
            );
            m.cold.put_back(None, missing);
        }
        n += queue_rehydration(engine, &mut m, signals);
    }
    if n > 0 {
        tracing::debug!(org, n, "Hot window: cold signals rehydrated.");
    }
    Ok(n)
}
