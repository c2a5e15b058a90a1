//! Leads as the API shows them: a lead with its identifiers, profile and recent signals, its
//! product orgs, and the context an evaluation of it would see.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use trailspark_core::time::rfc3339;
use trailspark_operators::product_orgs::ProductOrg;
use trailspark_operators::Ident;
use trailspark_sinks::read_models::{lead_id, Models};

pub fn ident_json(i: &Ident) -> Value {
    json!({"kind": i.kind.as_str(), "value": i.value})
}

/// A lead's identifiers, as the API shows them.
pub fn identifiers_json(m: &Models, lead: &Ident) -> Vec<Value> {
    m.org(lead.org)
        .members
        .get(lead)
        .into_iter()
        .flatten()
        .map(ident_json)
        .collect()
}

pub fn lead_json(m: &Models, lead: &Ident) -> Value {
    let o = m.org(lead.org);
    let profile = o.leads.get(lead).cloned().unwrap_or_default();
    let identifiers = identifiers_json(m, lead);
    let mut recent: Vec<Value> = o
        .lead_signals
        .get(lead)
        .into_iter()
        .flatten()
        .rev()
        .take(50)
        .filter_map(|pos| m.processed(lead.org, *pos).map(|p| (pos, p)))
        .map(|(pos, p)| {
            json!({
                "id": pos,
                "status": p.status,
                "rule_id": p.rule_id,
                "signal_name": p.rule_name.clone().unwrap_or_else(|| p.event_type.clone()),
                "signal_type": p.signal_type,
                "source": p.source,
                "event_type": p.event_type,
                "event_at": rfc3339(p.event_at),
            })
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
    let crm_ref = crm.person.as_ref().map(|(integration, object, r)| {
        json!({"integration_id": integration, "object": object, "id": r.id})
    });
    json!({
        "id": lead_id(lead),
        "key": ident_json(lead),
        "crm_id": crm_ref.as_ref().map(|c| c["id"].clone()),
        "crm": crm_ref,
        "identifiers": identifiers,
        "signals": profile.signals,
        "first_activity": rfc3339(profile.first_activity),
        "last_activity": rfc3339(profile.last_activity),
        "signal_types": by_type,
        "traits": traits,
        "product_org_id": profile.product_org,
        "product_org_ids": profile.product_orgs,
        "productOrgInfo": product_org_info(m, lead.org, &profile.product_orgs),
        "recent_signals": recent,
    })
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

pub fn product_org_json(id: &str, po: &ProductOrg) -> Value {
    let (core, custom) = product_org_fields(po);
    let f = |k: &str| core.get(k).cloned().unwrap_or(Value::Null);
    json!({
        "product_org_id": id,
        "name": f("name"),
        "plan_id": f("plan_id"),
        "plan_name": f("plan_name"),
        "user_count": f("user_count"),
        "mrr": f("mrr"),
        "trial_status": f("trial_status"),
        "last_active_at": f("last_active_at"),
        "feature_flags": f("feature_flags"),
        "custom_fields": custom,
        "last_updated_at": rfc3339(po.last_updated_at),
        "updates": po.updates,
    })
}

/// `productOrgInfo` in the evaluation-context shape: one entry per product org the lead's
/// signals name that has had an update (a JSON array, as the product shows it; empty when
/// there is none).
pub fn product_org_info(m: &Models, org: u64, ids: &[String]) -> Value {
    let infos: Vec<Value> = ids
        .iter()
        .filter_map(|id| {
            let po = m.org(org).product_orgs.get(id)?;
            let (core, custom) = product_org_fields(po);
            let f = |k: &str| core.get(k).cloned().unwrap_or(Value::Null);
            Some(json!({
                "productOrgId": id,
                "name": f("name"),
                "planId": f("plan_id"),
                "planName": f("plan_name"),
                "userCount": f("user_count"),
                "mrr": f("mrr"),
                "trialStatus": f("trial_status"),
                "lastActiveAt": f("last_active_at"),
                "featureFlags": f("feature_flags"),
                "customFields": custom,
            }))
        })
        .collect();
    Value::Array(infos)
}
