//! Stamping archive rows with their processing outcome: the archive's [`Stamper`], read from
//! the models once they have caught up with a file's last position.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use trailspark_operators::status::Processed;

use super::{lead_id, ReadModels};
use crate::archive::{ArchiveRow, Processing, Stamper};

/// How long the archiver waits for the dataflow before writing what it knows. Long: under a
/// backlog (a large backfill) the dataflow may be minutes behind, and a file written early
/// would carry no statuses. Waiting costs only buffer memory, which the dataflow's bounded
/// feed queue bounds (the archive cannot get further ahead than the dataflow's backlog).
const STAMP_WAIT: Duration = Duration::from_secs(600);

fn processing(p: &Processed) -> Processing {
    Processing {
        status: Some(p.status.as_str().to_string()),
        rule_id: p.rule_id,
        rule_name: p.rule_name.as_deref().map(str::to_string),
        lead_id: p.lead.as_ref().map(lead_id),
        error: p.error.as_deref().map(str::to_string),
    }
}

/// Stamps archive rows from the read models.
pub struct ReadStamper(pub Arc<ReadModels>);

impl Stamper for ReadStamper {
    fn ready(&self, pos: u64) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            if !self.0.wait_for(pos, STAMP_WAIT).await {
                tracing::warn!(
                    pos,
                    "Archiving before the dataflow caught up; statuses may be missing."
                );
            }
        })
    }

    fn stamp(&self, org: u64, rows: &mut [ArchiveRow]) {
        let m = self.0.read();
        for r in rows {
            // A signal the dataflow dropped as a duplicate has no outcome of its own.
            r.processing = m
                .processed(org, r.id)
                .as_ref()
                .map(processing)
                .unwrap_or_default();
        }
    }
}
