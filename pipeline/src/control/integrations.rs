//! CRM integrations' changes on the log: an integration set (created or edited), its status,
//! its rotated credentials, and each page a sync pulls committed with its cursor.

use trailspark_core::crm::{CrmBatch, CrmObject, Cursor, Integration, IntegrationEvent, Status};
use trailspark_core::tenancy::{ConfigEvent, OrgId};
use trailspark_core::LogEntry;

use super::{now_ms, ConfigError, Control};

impl Control {
    /// The org's integration `id`.
    pub fn integration(&self, org: OrgId, id: u64) -> Result<Integration, ConfigError> {
        let reg = self.registry.read().unwrap();
        match reg.integrations().get(id) {
            Some(i) if i.org_id == org => Ok(i.clone()),
            _ => Err(ConfigError::NotFound(format!("integration {id}"))),
        }
    }

    /// Creates an integration: `make` builds it from its new id.
    pub async fn create_integration(
        &self,
        make: impl FnOnce(u64) -> Integration,
    ) -> Result<(Integration, u64), ConfigError> {
        let _g = self.config_lock.lock().await;
        let id = self.registry.read().unwrap().integrations().next_id();
        let integration = make(id);
        let pos = self
            .commit(vec![ConfigEvent::Integration(IntegrationEvent::Set {
                integration: Box::new(integration.clone()),
                reset: true,
            })])
            .await?;
        Ok((integration, pos))
    }

    /// Replaces an integration; `reset` restarts its syncs from the beginning.
    pub async fn update_integration(
        &self,
        integration: Integration,
        reset: bool,
    ) -> Result<(Integration, u64), ConfigError> {
        let _g = self.config_lock.lock().await;
        let pos = self
            .commit(vec![ConfigEvent::Integration(IntegrationEvent::Set {
                integration: Box::new(integration.clone()),
                reset,
            })])
            .await?;
        Ok((integration, pos))
    }

    pub async fn delete_integration(&self, org: OrgId, id: u64) -> Result<u64, ConfigError> {
        let _g = self.config_lock.lock().await;
        self.integration(org, id)?;
        self.commit(vec![ConfigEvent::Integration(IntegrationEvent::Deleted {
            id,
            org_id: org,
            at: now_ms(),
        })])
        .await
    }

    /// Marks an integration connected or disconnected (with the reason).
    pub async fn set_integration_status(
        &self,
        id: u64,
        status: Status,
        reason: Option<String>,
    ) -> Result<u64, ConfigError> {
        self.commit(vec![ConfigEvent::Integration(
            IntegrationEvent::StatusChanged {
                id,
                status,
                reason,
                at: now_ms(),
            },
        )])
        .await
    }

    /// Keeps credentials the CRM rotated (sealed).
    pub async fn rotate_integration_credentials(
        &self,
        id: u64,
        sealed: String,
    ) -> Result<u64, ConfigError> {
        self.commit(vec![ConfigEvent::Integration(
            IntegrationEvent::CredentialsRotated {
                id,
                sealed,
                at: now_ms(),
            },
        )])
        .await
    }

    /// Appends a pulled page (as entries of at most [`ENTRY_BYTES`]) and then, when it has
    /// one, the cursor it reached. A crash
    /// between the two leaves the page without its cursor: the next sync takes the page
    /// again, and records replace themselves, so nothing is lost or doubled.
    pub async fn commit_crm_page(
        &self,
        batch: CrmBatch,
        object: CrmObject,
        cursor: Option<Cursor>,
    ) -> Result<u64, ConfigError> {
        let id = batch.integration_id;
        let mut entries: Vec<LogEntry> = split(batch)
            .into_iter()
            .map(|b| LogEntry::Crm(Box::new(b)))
            .collect();
        let event = cursor.map(|cursor| {
            ConfigEvent::Integration(IntegrationEvent::CursorCommitted {
                id,
                object,
                cursor,
                at: now_ms(),
            })
        });
        entries.extend(event.clone().map(LogEntry::Config));
        if entries.is_empty() {
            return Ok(0);
        }
        let receipts = self.log.append(entries).await?;
        if let Some(e) = event {
            self.registry.write().unwrap().apply(&e);
        }
        Ok(receipts.last().map_or(0, |r| r.position))
    }
}

/// The most record bytes one log entry carries: a Salesforce page holds 2,000 records, and
/// JetStream refuses messages over its `max_payload` (1 MiB by default).
pub const ENTRY_BYTES: usize = 256 * 1024;

/// Splits a page into batches of at most [`ENTRY_BYTES`] of records (a single larger record
/// goes alone); an empty page gives none.
fn split(mut batch: CrmBatch) -> Vec<CrmBatch> {
    let records = std::mem::take(&mut batch.records);
    let mut out: Vec<CrmBatch> = Vec::new();
    let mut size = 0;
    for r in records {
        let n = serde_json::to_vec(&r).map_or(0, |v| v.len());
        match out.last_mut() {
            Some(b) if size + n <= ENTRY_BYTES => b.records.push(r),
            _ => {
                out.push(CrmBatch {
                    records: vec![r],
                    ..batch.clone_empty()
                });
                size = 0;
            }
        }
        size += n;
    }
    out
}

#[cfg(test)]
mod tests {
    use trailspark_core::crm::{CrmBatch, CrmObject, CrmRecord};
    use trailspark_core::tenancy::OrgId;

    #[test]
    fn pages_split_by_size_in_order() {
        let big = "x".repeat(100 * 1024);
        let rec = |i: usize| CrmRecord {
            id: format!("r{i}"),
            modified_at: i as i64,
            std: Default::default(),
            account_id: None,
            fields: serde_json::json!({"Notes": big})
                .as_object()
                .unwrap()
                .clone(),
        };
        let batch = CrmBatch {
            org_id: OrgId(3),
            integration_id: 9,
            object: CrmObject::Contact,
            at: 5,
            records: (0..7).map(rec).collect(),
        };
        let parts = super::split(batch);
        assert_eq!(
            parts.iter().map(|b| b.records.len()).collect::<Vec<_>>(),
            [2, 2, 2, 1]
        );
        let ids: Vec<_> = parts
            .iter()
            .flat_map(|b| b.records.iter().map(|r| r.id.clone()))
            .collect();
        assert_eq!(ids, (0..7).map(|i| format!("r{i}")).collect::<Vec<_>>());
        assert!(parts
            .iter()
            .all(|b| b.org_id == OrgId(3) && b.integration_id == 9 && b.at == 5));
        let empty = CrmBatch {
            records: vec![],
            ..parts[0].clone()
        };
        assert!(super::split(empty).is_empty());
    }
}
