//! Retention (spec 13): processed signals older than their org's retention period leave live
//! state and remain only in the archive; archived partitions older than the permanent-delete
//! period are deleted.
//!
//! Every signal is archived as it arrives (see the archive sink), so "archive, then delete
//! from the database" is here "once the signal is in an archive file, drop it from the live
//! models". A signal is retired only when both hold: received before the cutoff and below the
//! archive's checkpoint, so nothing leaves live state before it is safely in a file.

use std::sync::Arc;
use std::time::Duration;

use trailspark_sinks::archive::{ArchiveError, Archiver};

use crate::engine::read::Retention;
use crate::engine::Engine;
use crate::hot::{HotConfig, HotError};
use crate::state::AppState;

const DAY_MS: i64 = 86_400_000;

#[derive(Clone, Debug)]
pub struct RetentionConfig {
    /// How often a pass runs.
    pub interval: Duration,
    /// The length of a retention day. One day in production; tests and demos shorten it to
    /// watch signals age out.
    pub day: Duration,
    /// Archived partitions older than this many days are deleted (`PERMANENT_DELETE_DAYS`).
    pub permanent_delete_days: u32,
    /// The anonymous hot window, evicted from on each pass (see [`crate::hot`]).
    pub hot: HotConfig,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            interval: Duration::from_secs(60),
            day: Duration::from_secs(86_400),
            permanent_delete_days: 365,
            hot: HotConfig {
                window_ms: None,
                identity: Default::default(),
            },
        }
    }
}

/// What one pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PassStats {
    pub retired: usize,
    pub files_deleted: usize,
    /// Anonymous signals that left the dataflow (the hot window).
    pub evicted: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum PassError {
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error(transparent)]
    Hot(#[from] HotError),
}

/// One retention pass over every org.
pub async fn pass(
    state: &AppState,
    engine: &Engine,
    archiver: &Archiver,
    cfg: &RetentionConfig,
) -> Result<PassStats, PassError> {
    let now = chrono::Utc::now().timestamp_millis();
    let day_ms = cfg.day.as_millis().max(1) as i64;
    let below_pos = archiver.stats().checkpoint;
    let orgs: Vec<(u64, u32)> = {
        let reg = state.registry.read().unwrap();
        reg.orgs()
            .map(|o| (o.id.0, reg.plan(o.id).retention_days()))
            .collect()
    };
    let mut out = PassStats::default();
    for (org, days) in orgs {
        let cutoff_ms = now - i64::from(days) * day_ms;
        out.retired += engine.read.retire(
            org,
            Retention {
                now_ms: now,
                cutoff_ms,
                below_pos,
            },
        );
    }
    // Partitions are calendar days (UTC) of receipt.
    let delete_ms = now - i64::from(cfg.permanent_delete_days) * day_ms;
    out.files_deleted = archiver
        .delete_before(delete_ms.div_euclid(DAY_MS) as i32)
        .await?;
    if let Some(sql) = state.sql.get() {
        out.evicted = crate::hot::evict(engine, archiver, sql, &cfg.hot).await?;
    }
    if out.retired > 0 || out.files_deleted > 0 {
        tracing::info!(
            retired = out.retired,
            files_deleted = out.files_deleted,
            "Retention pass."
        );
    }
    Ok(out)
}

/// Runs a pass at once (after a restart the replay would otherwise bring retired signals
/// back until the first interval passed; the cutoffs set now keep them out as the replay's
/// changes arrive), then every `cfg.interval`, for as long as the server runs.
pub async fn run(
    state: Arc<AppState>,
    engine: Arc<Engine>,
    archiver: Arc<Archiver>,
    cfg: RetentionConfig,
) {
    loop {
        if let Err(e) = pass(&state, &engine, &archiver, &cfg).await {
            tracing::warn!(error = %e, "Retention pass failed; retrying at the next interval.");
        }
        tokio::time::sleep(cfg.interval).await;
    }
}
