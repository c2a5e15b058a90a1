//! Destinations as the API shows them: the configuration, and how delivery stands. The
//! handlers serialize these structs and the OpenAPI document takes their schemas.

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

/// A destination's configuration.
#[derive(Serialize, ToSchema)]
pub struct DestinationView {
    pub id: u64,
    pub integration_id: u64,
    /// The CRM: salesforce, hubspot or airtable.
    #[schema(value_type = String)]
    pub kind: Value,
    pub send_evaluations: bool,
    /// The CRM fields an evaluation is written to: `score`, `reasoning`, `evaluated_at` and
    /// optionally `propensity`.
    #[schema(value_type = std::collections::BTreeMap<String, String>)]
    pub field_mapping: Value,
    /// Create a person record when none matches the lead's email.
    pub create_records: bool,
    /// hot, warm, cold: the scores records are created for.
    #[schema(value_type = Vec<String>)]
    pub create_for_scores: Value,
    /// Unix milliseconds.
    pub created_at: i64,
    pub updated_at: i64,
}

/// `GET /api/destinations/{id}/status`.
#[derive(Serialize, ToSchema)]
pub struct DestinationStatus {
    pub id: u64,
    pub integration_id: u64,
    #[schema(value_type = String)]
    pub kind: Value,
    pub send_evaluations: bool,
    /// disabled, paused, retrying, delivering or idle.
    pub state: &'static str,
    pub paused: bool,
    /// Why it is paused, disabled or retrying.
    pub reason: Option<String>,
    /// RFC 3339.
    pub paused_until: Option<String>,
    pub next_attempt_at: Option<String>,
    /// Evaluations waiting to go out.
    pub queued: usize,
    pub in_flight: usize,
    pub delivered: u64,
    pub failed: usize,
    /// Evaluations whose fields the CRM already held.
    pub unchanged: u64,
    /// The log position every evaluation below has been delivered (or given up on).
    pub delivered_through: u64,
    pub last_result_at: Option<String>,
    pub last_attempt_at: Option<String>,
    pub last_error: Option<String>,
}

/// `GET /api/destinations/{id}/deliveries`: results, newest first.
#[derive(Serialize, ToSchema)]
pub struct Deliveries {
    /// Each: `lead_id`, `evaluation_id`, `status`, the record written, `attempts`, `error`.
    #[schema(value_type = Vec<Object>)]
    pub deliveries: Vec<trailspark_core::crm::destination::RecordResult>,
    pub count: usize,
}

/// `POST /api/destinations/{id}/retry`.
#[derive(Serialize, ToSchema)]
pub struct Retried {
    /// Failed deliveries queued again.
    pub queued: usize,
    pub log_position: u64,
}
