//! Retention: processed signals older than their org's retention period leave live
//! state and remain only in the archive; archived partitions older than the permanent-delete
//! period are deleted.
//!
//! Every signal is archived as it arrives (see the archive sink), so "archive, then delete
//! from the database" is here "once the signal is in an archive file, drop it from the live
//! models". A signal is retired only when both hold: received before the cutoff and below the
//! archive's checkpoint, so nothing leaves live state before it is safely in a file.

use std::sync::Arc;
use std::time::Duration;

use trailspark_core::tenancy::SharedRegistry;
use trailspark_sinks::archive::{ArchiveError, Archiver};
use trailspark_sinks::read_models::{ReadModels, Retention};

use super::hot::{HotError, HotWindow};

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
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            interval: Duration::from_secs(60),
            day: Duration::from_secs(86_400),
            permanent_delete_days: 365,
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

/// Retention as a service: the plans it reads, the models and archive it trims, and the hot
/// window it evicts from on each pass.
pub struct RetentionService {
    pub registry: SharedRegistry,
    pub read: Arc<ReadModels>,
    pub archiver: Arc<Archiver>,
    pub hot: Option<Arc<HotWindow>>,
    pub cfg: RetentionConfig,
}

impl RetentionService {
    /// One retention pass over every org.
    pub async fn pass(&self) -> Result<PassStats, PassError> {
        let now = chrono::Utc::now().timestamp_millis();
        let day_ms = self.cfg.day.as_millis().max(1) as i64;
        let below_pos = self.archiver.stats().checkpoint;
        let orgs: Vec<(u64, u32)> = {
            let reg = self.registry.read().unwrap();
            reg.orgs()
                .map(|o| (o.id.0, reg.plan(o.id).retention_days()))
                .collect()
        };
        let mut out = PassStats::default();
        for (org, days) in orgs {
            let cutoff_ms = now - i64::from(days) * day_ms;
            out.retired += self.read.retire(
                org,
                Retention {
                    now_ms: now,
                    cutoff_ms,
                    below_pos,
                },
            );
        }
        // Partitions are calendar days (UTC) of receipt.
        let delete_ms = now - i64::from(self.cfg.permanent_delete_days) * day_ms;
        out.files_deleted = self
            .archiver
            .delete_before(delete_ms.div_euclid(DAY_MS) as i32)
            .await?;
        if let Some(hot) = &self.hot {
            out.evicted = hot.evict().await?;
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

    /// Runs a pass at once (after a restart the replay would otherwise bring retired
    /// signals back until the first interval passed; the cutoffs set now keep them out as
    /// the replay's changes arrive), then every `cfg.interval`, for as long as the server
    /// runs.
    pub async fn run(self: Arc<Self>) {
        loop {
            if let Err(e) = self.pass().await {
                tracing::warn!(error = %e, "Retention pass failed; retrying at the next interval.");
            }
            tokio::time::sleep(self.cfg.interval).await;
        }
    }
}
