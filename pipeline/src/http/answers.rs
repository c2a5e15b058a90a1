//! The answers of actions and operator endpoints (processing now, rehydrating, compacting,
//! evaluator and archive state, ownership transfer, identity conflicts). Each handler builds
//! its struct and serializes it, and the OpenAPI document takes the struct's schema, so an
//! answer and its documentation have one definition.

use serde::Serialize;
use utoipa::ToSchema;

use super::admin::TokenView;
pub use crate::services::evaluator::EvaluatorState;

/// `POST /api/explorer/process`: the org's signals run against its rules now.
#[derive(Serialize, ToSchema)]
pub struct Processed {
    /// Signals with an outcome: successful, failed and skipped.
    pub processed: i64,
    pub successful: i64,
    pub failed: i64,
    pub skipped: i64,
    /// Anonymous signals still waiting for an identify.
    pub pending: i64,
    /// The org's rules.
    pub rules: usize,
    pub duration_ms: u64,
    pub log_position: u64,
}

/// `POST /api/signals/rehydrate`.
#[derive(Serialize, ToSchema)]
pub struct Rehydrated {
    /// Archived signals in the range.
    pub matched: usize,
    /// Brought back into live state.
    pub rehydrated: usize,
    /// Already live, so left alone.
    pub already_live: usize,
    /// When they leave live state again (RFC 3339).
    pub until: Option<String>,
    pub log_position: u64,
}

/// `POST /api/admin/tokens/{id}/transfer-ownership`.
#[derive(Serialize, ToSchema)]
pub struct OwnershipTransferred {
    pub owner: TokenView,
    /// The token that was Owner, now an Admin; null when there was none.
    pub previous_owner: Option<TokenView>,
}

/// `POST /api/admin/archive/compact`.
#[derive(Serialize, ToSchema)]
pub struct Compacted {
    /// Partitions whose small files were merged.
    pub partitions: usize,
    pub files_merged: usize,
    pub duration_ms: u64,
}

/// `GET /api/admin/archive`.
#[derive(Serialize, ToSchema)]
pub struct ArchiveState {
    /// Parquet files written.
    pub files: u64,
    /// Rows waiting for the next file.
    pub buffered_rows: u64,
    /// The log position every signal below is in a file.
    pub checkpoint: u64,
}

/// `POST /api/admin/evaluation/run`.
#[derive(Serialize, ToSchema)]
pub struct EvaluationRun {
    /// Leads evaluated by this batch.
    pub evaluated: usize,
    pub duration_ms: u64,
    pub log_position: u64,
}

/// `POST /api/admin/retention/run`.
#[derive(Serialize, ToSchema)]
pub struct RetentionRun {
    /// Signals retired from live state.
    pub retired: usize,
    pub files_deleted: usize,
    /// Anonymous signals that left the dataflow (the hot window).
    pub evicted: usize,
}

/// An identifier the identity limits refused to link.
#[derive(Serialize, ToSchema)]
pub struct Conflict {
    pub identifier: trailspark_queries::explorer::leads::IdentView,
    /// The kind of identifier it would have linked to past its limit.
    pub refused_links_to: &'static str,
}

/// A deletion (of an integration or a destination).
#[derive(Serialize, ToSchema)]
pub struct Deleted {
    pub deleted: bool,
    pub log_position: u64,
}

/// `POST /api/integrations/{id}/sync`.
#[derive(Serialize, ToSchema)]
pub struct SyncRequested {
    /// `requested`.
    pub sync: &'static str,
    pub integration: crate::services::crm::view::IntegrationView,
}

/// `POST /api/integrations/oauth/{kind}`: where to send the user to authorize.
#[derive(Serialize, ToSchema)]
pub struct OAuthStarted {
    pub authorize_url: String,
    /// Ties the CRM's redirect to this start.
    pub state: String,
    pub redirect_uri: String,
    /// Seconds the start stays valid.
    pub expires_in: u64,
}

/// Serializes an answer (these structs always do).
pub fn json<T: Serialize>(answer: T) -> serde_json::Value {
    serde_json::to_value(answer).expect("answers serialize")
}
