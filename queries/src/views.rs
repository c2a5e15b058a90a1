//! Shapes several API answers share: an identifier, an account, a product org in
//! `productOrgInfo`, a CRM record. They import nothing of the views that use them, so the
//! views can use each other's shapes without importing each other.

use serde::Serialize;
use serde_json::Value;
use trailspark_operators::Ident;
use utoipa::ToSchema;

/// An identifier: its kind (`email`, `user_id`, `anonymous_id`, …) and value.
#[derive(Serialize, ToSchema)]
pub struct IdentView {
    pub kind: &'static str,
    pub value: String,
}

impl IdentView {
    pub fn of(i: &Ident) -> IdentView {
        IdentView {
            kind: i.kind.as_str(),
            value: i.value.to_string(),
        }
    }
}

/// A product org in `productOrgInfo` (camelCase, as the product's evaluation context).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProductOrgInfo {
    pub product_org_id: String,
    #[schema(value_type = serde_json::Value)]
    pub name: Value,
    #[schema(value_type = serde_json::Value)]
    pub plan_id: Value,
    #[schema(value_type = serde_json::Value)]
    pub plan_name: Value,
    #[schema(value_type = serde_json::Value)]
    pub user_count: Value,
    #[schema(value_type = serde_json::Value)]
    pub mrr: Value,
    #[schema(value_type = serde_json::Value)]
    pub trial_status: Value,
    #[schema(value_type = serde_json::Value)]
    pub last_active_at: Value,
    #[schema(value_type = serde_json::Value)]
    pub feature_flags: Value,
    pub custom_fields: serde_json::Map<String, Value>,
}

/// An account as the API shows it (field names as the product's evaluation context has them).
#[derive(Serialize, ToSchema)]
pub struct AccountView {
    pub id: String,
    /// What the account was found by: `product_org` or `domain`.
    pub source: Option<&'static str>,
    pub name: Option<String>,
    #[serde(rename = "websiteDomain")]
    pub website_domain: Option<String>,
    pub industry: Option<String>,
    #[serde(rename = "marketSegment")]
    pub market_segment: Option<String>,
    #[serde(rename = "employeeCount")]
    pub employee_count: Option<u64>,
    pub region: Option<String>,
    #[serde(rename = "productOrgId")]
    pub product_org_id: Option<String>,
    pub lead_ids: Vec<String>,
    /// hot, warm or cold, rolled up from its leads' latest evaluations; null before any.
    pub propensity: Option<&'static str>,
}

/// A CRM record behind the lead or its account, with the fields the CRM sent.
#[derive(Serialize, ToSchema)]
pub struct CrmRecordView {
    pub integration_id: u64,
    /// `contact`, `lead` or `account`.
    #[schema(value_type = String)]
    pub object: Value,
    pub id: String,
    pub fields: serde_json::Map<String, Value>,
}
