//! One sync of one integration: each object in turn, page by page from its cursor.

use std::collections::BTreeMap;

use trailspark_core::crm::{CrmBatch, Status};
use trailspark_sources::crm::{CrmError, Pull};

use super::{CrmService, SyncReport};
use crate::control::now_ms;

impl CrmService {
    pub(super) async fn sync(&self, id: u64) {
        let Some(i) = self
            .control
            .registry
            .read()
            .unwrap()
            .integrations()
            .get(id)
            .cloned()
        else {
            return;
        };
        let mut report = SyncReport {
            state: "running",
            started_at: now_ms(),
            finished_at: None,
            records: BTreeMap::new(),
            error: None,
            log_position: 0,
        };
        self.reports.lock().unwrap().insert(id, report.clone());
        let result = self.pull_all(&i, &mut report).await;
        report.finished_at = Some(now_ms());
        match result {
            Ok(()) => report.state = "done",
            Err(CrmError::RateLimited(m)) => {
                report.state = "rate_limited";
                report.error = Some(m);
            }
            Err(e) => {
                report.state = "failed";
                report.error = Some(e.to_string());
                if let CrmError::Disconnected(reason) = &e {
                    if let Err(e) = self
                        .control
                        .set_integration_status(id, Status::Disconnected, Some(reason.clone()))
                        .await
                    {
                        tracing::warn!(integration = id, error = %e, "could not record a disconnection");
                    }
                }
            }
        }
        tracing::info!(
            integration = id,
            kind = i.kind.as_str(),
            state = report.state,
            records = report.records.values().sum::<u64>(),
            error = report.error.as_deref().unwrap_or(""),
            "CRM sync ended"
        );
        self.reports.lock().unwrap().insert(id, report);
    }

    async fn pull_all(
        &self,
        i: &trailspark_core::crm::Integration,
        report: &mut SyncReport,
    ) -> Result<(), CrmError> {
        let connector = self.connector(i)?;
        for &object in i.kind.objects() {
            let since = self
                .control
                .registry
                .read()
                .unwrap()
                .integrations()
                .cursor(i.id, object)
                .cloned();
            let mut pull = Pull::new(object, since);
            loop {
                let page = connector.next_page(&mut pull).await;
                if let Some(new) = connector.rotated() {
                    self.control
                        .rotate_integration_credentials(i.id, self.seal.seal(&new))
                        .await
                        .map_err(|e| CrmError::Unreachable(format!("the log: {e}")))?;
                }
                let page = page?;
                *report.records.entry(object.as_str()).or_default() += page.records.len() as u64;
                let batch = CrmBatch {
                    org_id: i.org_id,
                    integration_id: i.id,
                    object,
                    at: now_ms(),
                    records: page.records,
                };
                let pos = self
                    .control
                    .commit_crm_page(batch, object, page.cursor)
                    .await
                    .map_err(|e| CrmError::Unreachable(format!("the log: {e}")))?;
                report.log_position = report.log_position.max(pos);
                self.reports.lock().unwrap().insert(i.id, report.clone());
                if page.done {
                    break;
                }
            }
        }
        Ok(())
    }
}
