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

    /// Appends a pulled page and then, when it has one, the cursor it reached. A crash
    /// between the two leaves the page without its cursor: the next sync takes the page
    /// again, and records replace themselves, so nothing is lost or doubled.
    pub async fn commit_crm_page(
        &self,
        batch: CrmBatch,
        object: CrmObject,
        cursor: Option<Cursor>,
    ) -> Result<u64, ConfigError> {
        let id = batch.integration_id;
        let mut entries = Vec::with_capacity(2);
        if !batch.records.is_empty() {
            entries.push(LogEntry::Crm(Box::new(batch)));
        }
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
