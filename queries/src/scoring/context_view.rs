//! The evaluation context as the API shows it (`GET /api/leads/{id}/evaluation-context`) and
//! as the LLM scorer reads it: field names in the product's camelCase where it has them.
//! [`super::context::lead_context`] fills these structs; the OpenAPI document takes their
//! schemas.

use std::collections::BTreeMap;

use serde::Serialize;
use trailspark_core::rules::SignalType;
use trailspark_core::scoring::Criteria;
use utoipa::ToSchema;

use crate::views::{AccountView, CrmRecordView, IdentView, ProductOrgInfo};

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContextLead {
    pub id: String,
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub title: Option<String>,
    pub company: Option<String>,
    pub identifiers: Vec<IdentView>,
    pub traits: BTreeMap<String, String>,
    pub crm: Option<CrmRecordView>,
}

/// The lead's account, with its CRM record.
#[derive(Serialize, ToSchema)]
pub struct ContextAccount {
    #[serde(flatten)]
    pub account: AccountView,
    pub crm: Option<CrmRecordView>,
}

/// A mapped signal in the lookback window.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContextSignal {
    pub id: u64,
    /// The rule's name (or the event type).
    pub name: String,
    #[serde(rename = "type")]
    pub signal_type: SignalType,
    /// The rule's description.
    pub description: Option<String>,
    pub source: String,
    pub occurred_at: Option<String>,
    pub high_intent: bool,
}

/// The active ICP model.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContextIcp {
    pub model_id: u64,
    pub version: u32,
    pub name: String,
    pub account_profile: String,
    pub account_detractors: String,
    pub contact_personas: String,
    pub contact_detractors: String,
    pub positive_signals: String,
    pub negative_signals: String,
    /// Not renamed: the criteria are the model's as the API takes them.
    pub criteria: Criteria,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContextWindow {
    pub lookback_days: u32,
    pub as_of: Option<String>,
}

/// Everything an evaluation of the lead reads.
#[derive(Serialize, ToSchema)]
pub struct EvaluationContext {
    pub lead: ContextLead,
    pub account: Option<ContextAccount>,
    pub signals: Vec<ContextSignal>,
    #[serde(rename = "productOrgInfo")]
    pub product_org_info: Vec<ProductOrgInfo>,
    /// Null without an active model.
    pub icp: Option<ContextIcp>,
    pub window: ContextWindow,
}
