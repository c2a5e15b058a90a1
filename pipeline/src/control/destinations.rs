//! Destinations' changes on the log: a destination set (created or edited) or deleted, and
//! its delivery progress.

use trailspark_core::crm::{DeliveryEvent, Destination, DestinationEvent};
use trailspark_core::tenancy::{ConfigEvent, OrgId};
use trailspark_core::LogEntry;

use super::{now_ms, ConfigError, Control};

impl Control {
    /// The org's destination `id`.
    pub fn destination(&self, org: OrgId, id: u64) -> Result<Destination, ConfigError> {
        let reg = self.registry.read().unwrap();
        match reg.destinations().get(id) {
            Some(d) if d.org_id == org => Ok(d.clone()),
            _ => Err(ConfigError::NotFound(format!("destination {id}"))),
        }
    }

    /// Creates a destination: `make` builds it from its new id.
    pub async fn create_destination(
        &self,
        make: impl FnOnce(u64) -> Destination,
    ) -> Result<(Destination, u64), ConfigError> {
        let _g = self.config_lock.lock().await;
        let id = self.registry.read().unwrap().destinations().next_id();
        let d = make(id);
        let pos = self
            .commit(vec![ConfigEvent::Destination(DestinationEvent::Set {
                destination: Box::new(d.clone()),
            })])
            .await?;
        Ok((d, pos))
    }

    /// Replaces a destination.
    pub async fn update_destination(
        &self,
        d: Destination,
    ) -> Result<(Destination, u64), ConfigError> {
        let _g = self.config_lock.lock().await;
        self.destination(d.org_id, d.id)?;
        let pos = self
            .commit(vec![ConfigEvent::Destination(DestinationEvent::Set {
                destination: Box::new(d.clone()),
            })])
            .await?;
        Ok((d, pos))
    }

    pub async fn delete_destination(&self, org: OrgId, id: u64) -> Result<u64, ConfigError> {
        let _g = self.config_lock.lock().await;
        self.destination(org, id)?;
        self.commit(vec![ConfigEvent::Destination(DestinationEvent::Deleted {
            id,
            org_id: org,
            at: now_ms(),
        })])
        .await
    }

    /// Appends delivery progress; answers its log position.
    pub async fn commit_delivery(&self, event: DeliveryEvent) -> Result<u64, ConfigError> {
        let receipts = self
            .log
            .append(vec![LogEntry::Delivery(Box::new(event))])
            .await?;
        Ok(receipts.last().map_or(0, |r| r.position))
    }
}
