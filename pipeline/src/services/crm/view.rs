//! Integrations as the API shows them: no credential, the settings that are not secret, the
//! mapping, and how their syncs stand. The handlers serialize these structs and the OpenAPI
//! document takes their schemas.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

/// An integration.
#[derive(Serialize, ToSchema)]
pub struct IntegrationView {
    pub id: u64,
    /// salesforce, hubspot or airtable.
    #[schema(value_type = String)]
    pub kind: Value,
    pub name: String,
    /// connected or disconnected.
    #[schema(value_type = String)]
    pub status: Value,
    /// Why it is disconnected.
    pub reason: Option<String>,
    pub api_base_url: String,
    /// Salesforce's login host.
    pub login_url: Option<String>,
    /// Settings that are not secret (Salesforce's `client_id`, Airtable's `base_id`, …).
    pub settings: BTreeMap<String, String>,
    /// The field mapping, as `GET /api/integrations/{id}/mapping` shows it.
    #[schema(value_type = Object)]
    pub mapping: Value,
    /// Unix milliseconds.
    pub created_at: i64,
    pub updated_at: i64,
    pub sync: SyncState,
    /// Records its syncs brought in, per object (absent where the answer is about a sync).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub records: Option<BTreeMap<&'static str, u64>>,
}

/// How an integration's syncs stand.
#[derive(Serialize, ToSchema)]
pub struct SyncState {
    pub running: bool,
    /// Unix milliseconds of the last page committed.
    pub last_committed_at: Option<i64>,
    /// Per CRM object: how far the incremental sync has read.
    pub cursors: BTreeMap<String, SyncCursor>,
    /// The last sync's report: `state` (running, done, rate_limited, failed), times, records
    /// per object, error, `log_position`. Null before the first since the start.
    #[schema(value_type = Option<Object>)]
    pub last: Option<super::SyncReport>,
}

#[derive(Serialize, ToSchema)]
pub struct SyncCursor {
    /// The CRM's last-modified time read up to (RFC 3339).
    pub modified_at: Option<String>,
    /// Whether the first full read is done.
    pub complete: bool,
}

/// `POST /api/integrations/{id}/test`.
#[derive(Serialize, ToSchema)]
pub struct ConnectionTest {
    /// Connected, with every mapped field present.
    pub ok: bool,
    pub connected: bool,
    /// The mapped fields the CRM lacks.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    pub fields: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}
