//! Leads as the API shows them: a lead with its identifiers, profile and recent signals, its
//! product orgs, and the context an evaluation of it would see.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{json, Value};
use trailspark_core::time::rfc3339_text;
use trailspark_operators::product_orgs::ProductOrg;
use trailspark_operators::Ident;
use trailspark_sinks::read_models::{lead_id, Models};
use utoipa::ToSchema;

pub use crate::views::{IdentView, ProductOrgInfo};

/// A lead's identifiers, as the API shows them.
pub fn identifiers(m: &Models, lead: &Ident) -> Vec<IdentView> {
    m.org(lead.org)
        .members
        .get(lead)
        .into_iter()
        .flatten()
        .map(IdentView::of)
        .collect()
}

/// The CRM record a lead is.
#[derive(Serialize, ToSchema)]
pub struct CrmRef {
    pub integration_id: u64,
    /// `contact` or `lead`.
    #[schema(value_type = String)]
    pub object: Value,
    pub id: String,
}

/// One of a lead's recent signals.
#[derive(Serialize, ToSchema)]
pub struct RecentSignal {
    pub id: u64,
    #[schema(value_type = String)]
    pub status: Value,
    pub rule_id: Option<u64>,
    pub signal_name: String,
    #[schema(value_type = Option<String>)]
    pub signal_type: Value,
    pub source: String,
    pub event_type: String,
    pub event_at: Option<String>,
}

/// A lead as the API shows it: who it is, what it did lately, its product orgs.
#[derive(Serialize, ToSchema)]
pub struct LeadView {
    pub id: String,
    /// The identifier that names the lead (its smallest persistent one).
    pub key: IdentView,
    pub crm_id: Option<String>,
    pub crm: Option<CrmRef>,
    pub identifiers: Vec<IdentView>,
    /// Signals the lead has sent.
    pub signals: u64,
    pub first_activity: Option<String>,
    pub last_activity: Option<String>,
    /// Signals by signal type.
    pub signal_types: BTreeMap<String, u64>,
    pub traits: BTreeMap<String, String>,
    pub product_org_id: Option<String>,
    pub product_org_ids: Vec<String>,
    #[serde(rename = "productOrgInfo")]
    pub product_org_info: Vec<ProductOrgInfo>,
    /// Up to 50, oldest first.
    pub recent_signals: Vec<RecentSignal>,
}

pub fn lead_view(m: &Models, lead: &Ident) -> LeadView {
    let o = m.org(lead.org);
    let profile = o.leads.get(lead).cloned().unwrap_or_default();
    let mut recent: Vec<RecentSignal> = o
        .lead_signals
        .get(lead)
        .into_iter()
        .flatten()
        .rev()
        .take(50)
        .filter_map(|pos| m.processed(lead.org, *pos).map(|p| (pos, p)))
        .map(|(pos, p)| RecentSignal {
            id: *pos,
            status: json!(p.status),
            rule_id: p.rule_id,
            signal_name: p
                .rule_name
                .clone()
                .unwrap_or_else(|| p.event_type.clone())
                .to_string(),
            signal_type: json!(p.signal_type),
            source: p.source.to_string(),
            event_type: p.event_type.to_string(),
            event_at: rfc3339_text(p.event_at),
        })
        .collect();
    recent.reverse();
    let traits: BTreeMap<String, String> = profile.traits.iter().cloned().collect();
    let by_type: BTreeMap<String, u64> = profile
        .by_type
        .iter()
        .map(|(t, n)| {
            (
                serde_json::to_value(t)
                    .unwrap()
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                *n,
            )
        })
        .collect();
    // The CRM person this lead is (contacts first), matched by e-mail.
    let email = crate::scoring::accounts::email_of(m, lead);
    let crm = crate::scoring::crm::crm_view(m, lead, email.as_deref(), None);
    let crm_ref = crm.person.as_ref().map(|(integration, object, r)| CrmRef {
        integration_id: *integration,
        object: json!(object),
        id: r.id.to_string(),
    });
    LeadView {
        id: lead_id(lead),
        key: IdentView::of(lead),
        crm_id: crm_ref.as_ref().map(|c| c.id.clone()),
        crm: crm_ref,
        identifiers: identifiers(m, lead),
        signals: profile.signals,
        first_activity: rfc3339_text(profile.first_activity),
        last_activity: rfc3339_text(profile.last_activity),
        signal_types: by_type,
        traits,
        product_org_id: profile.product_org.clone(),
        product_org_ids: profile.product_orgs.clone(),
        product_org_info: product_org_infos(m, lead.org, &profile.product_orgs),
        recent_signals: recent,
    }
}

/// A product org's fields, parsed back from their JSON text.
fn product_org_fields(po: &ProductOrg) -> (BTreeMap<&str, Value>, serde_json::Map<String, Value>) {
    let mut core = BTreeMap::new();
    let mut custom = serde_json::Map::new();
    for (k, v) in &po.fields {
        let v: Value = serde_json::from_str(v).unwrap_or(Value::Null);
        match k.strip_prefix("custom.") {
            Some(name) => {
                custom.insert(name.to_string(), v);
            }
            None => {
                core.insert(k.as_str(), v);
            }
        }
    }
    (core, custom)
}

/// A product org as the API shows it. Its fields hold what the updates sent, as JSON.
#[derive(Serialize, ToSchema)]
pub struct ProductOrgView {
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
    pub last_updated_at: Option<String>,
    /// Updates received.
    pub updates: u64,
}

pub fn product_org_json(id: &str, po: &ProductOrg) -> Value {
    let (core, custom) = product_org_fields(po);
    let f = |k: &str| core.get(k).cloned().unwrap_or(Value::Null);
    let view = ProductOrgView {
        product_org_id: id.to_string(),
        name: f("name"),
        plan_id: f("plan_id"),
        plan_name: f("plan_name"),
        user_count: f("user_count"),
        mrr: f("mrr"),
        trial_status: f("trial_status"),
        last_active_at: f("last_active_at"),
        feature_flags: f("feature_flags"),
        custom_fields: custom,
        last_updated_at: rfc3339_text(po.last_updated_at),
        updates: po.updates,
    };
    serde_json::to_value(view).expect("product orgs serialize")
}

/// `productOrgInfo` in the evaluation-context shape: one entry per product org the lead's
/// signals name that has had an update (an array, as the product shows it; empty when there
/// is none).
pub fn product_org_infos(m: &Models, org: u64, ids: &[String]) -> Vec<ProductOrgInfo> {
    ids.iter()
        .filter_map(|id| {
            let po = m.org(org).product_orgs.get(id)?;
            let (core, custom) = product_org_fields(po);
            let f = |k: &str| core.get(k).cloned().unwrap_or(Value::Null);
            Some(ProductOrgInfo {
                product_org_id: id.clone(),
                name: f("name"),
                plan_id: f("plan_id"),
                plan_name: f("plan_name"),
                user_count: f("user_count"),
                mrr: f("mrr"),
                trial_status: f("trial_status"),
                last_active_at: f("last_active_at"),
                feature_flags: f("feature_flags"),
                custom_fields: custom,
            })
        })
        .collect()
}
