//! Integrations as config events, and their fold.
//!
//! Every change of an integration (created, edited, disconnected, its credentials rotated
//! by the CRM, a sync's progress) is appended to the log before it takes effect, so a
//! restart knows each integration's state and where each object's sync stopped.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{CrmObject, FieldMapping, IntegrationKind, Status};
use crate::tenancy::OrgId;

/// How far an object's sync got: the last record taken, in the CRM's last-modified order
/// (time, then id). `complete` when a sync ended there; otherwise a sync stopped inside a
/// query, and the next one takes records at `at` again, skipping those up to `id`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub at: i64,
    pub id: String,
    pub complete: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "crm", rename_all = "snake_case")]
pub enum IntegrationEvent {
    /// Created or edited: the whole integration as it now is. An edit that changes the
    /// credentials or the mapping also restarts its syncs from the beginning (`reset`).
    Set {
        integration: Box<Integration>,
        #[serde(default)]
        reset: bool,
    },
    StatusChanged {
        id: u64,
        status: Status,
        #[serde(default)]
        reason: Option<String>,
        at: i64,
    },
    /// The CRM rotated the refresh token: the new credentials, sealed.
    CredentialsRotated { id: u64, sealed: String, at: i64 },
    /// Records of `object` up to `cursor` are on the log.
    CursorCommitted {
        id: u64,
        object: CrmObject,
        cursor: Cursor,
        at: i64,
    },
    /// Deleted, with its org (so that readers can forget its records without a lookup).
    Deleted { id: u64, org_id: OrgId, at: i64 },
}

/// The fold of all integration events.
#[derive(Clone, Debug, Default)]
pub struct IntegrationState {
    integrations: BTreeMap<u64, Integration>,
    cursors: BTreeMap<(u64, CrmObject), Cursor>,
    last_sync: BTreeMap<u64, i64>,
    next_id: u64,
}

impl IntegrationState {
    pub fn apply(&mut self, event: &IntegrationEvent) {
        match event {
            IntegrationEvent::Set { integration, reset } => {
                self.next_id = self.next_id.max(integration.id);
                if *reset {
                    self.cursors.retain(|(id, _), _| *id != integration.id);
                    self.last_sync.remove(&integration.id);
                }
                self.integrations
                    .insert(integration.id, Integration::clone(integration));
            }
            IntegrationEvent::StatusChanged {
                id,
                status,
                reason,
                at,
            } => {
                if let Some(i) = self.integrations.get_mut(id) {
                    i.status = *status;
                    i.reason = reason.clone();
                    i.updated_at = *at;
                }
            }
            IntegrationEvent::CredentialsRotated { id, sealed, at } => {
                if let Some(i) = self.integrations.get_mut(id) {
                    i.sealed = sealed.clone();
                    i.updated_at = *at;
                }
            }
            IntegrationEvent::CursorCommitted {
                id,
                object,
                cursor,
                at,
            } => {
                if self.integrations.contains_key(id) {
                    self.cursors.insert((*id, *object), cursor.clone());
                    self.last_sync.insert(*id, *at);
                }
            }
            IntegrationEvent::Deleted { id, .. } => {
                self.integrations.remove(id);
                self.cursors.retain(|(i, _), _| i != id);
                self.last_sync.remove(id);
            }
        }
    }

    pub fn get(&self, id: u64) -> Option<&Integration> {
        self.integrations.get(&id)
    }

    pub fn of_org(&self, org: OrgId) -> impl Iterator<Item = &Integration> + '_ {
        self.integrations.values().filter(move |i| i.org_id == org)
    }

    pub fn all(&self) -> impl Iterator<Item = &Integration> + '_ {
        self.integrations.values()
    }

    pub fn cursor(&self, id: u64, object: CrmObject) -> Option<&Cursor> {
        self.cursors.get(&(id, object))
    }

    /// When a cursor of the integration last moved (ms).
    pub fn last_sync(&self, id: u64) -> Option<i64> {
        self.last_sync.get(&id).copied()
    }

    pub fn next_id(&self) -> u64 {
        self.next_id + 1
    }
}

/// An integration as the log records it and the API shows it (without `sealed`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Integration {
    pub id: u64,
    pub org_id: OrgId,
    pub kind: IntegrationKind,
    pub name: String,
    /// The API host (for Salesforce, the login host; the instance comes from the token).
    pub api_base_url: String,
    /// Salesforce's login host (production, sandbox or My Domain).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login_url: Option<String>,
    /// Settings that are not secret: Salesforce's `client_id`, Airtable's `base_id` and
    /// `tables`, each as text (tables as `tables.contacts` and so on).
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
    /// The credentials, sealed with the server's secret key.
    pub sealed: String,
    pub mapping: FieldMapping,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}
