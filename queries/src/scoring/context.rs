//! What an evaluation of a lead sees: the scorer's input, and the evaluation context as JSON
//! (the product's shape: lead, account, signals with their rules' descriptions,
//! `productOrgInfo`, the ICP and the window), which an LLM scorer is given as is.

use std::collections::BTreeMap;

use serde_json::Value;
use trailspark_core::crm::StdField;
use trailspark_core::scoring::IcpModel;
use trailspark_core::tenancy::Registry;
use trailspark_core::time::rfc3339_text;
use trailspark_operators::scorer::{LeadInput, ProductOrgInput, SignalInput};
use trailspark_operators::status::Status;
use trailspark_operators::Ident;
use trailspark_sinks::read_models::{lead_id, Models};

use super::accounts::{account_of, account_view, email_of, Account};
use super::context_view::{
    ContextAccount, ContextIcp, ContextLead, ContextSignal, ContextWindow, EvaluationContext,
};
use crate::explorer::leads::{identifiers, product_org_infos};

/// A lead's context as of `now`, with a `lookback_days` window.
pub struct LeadContext {
    pub input: LeadInput,
    pub account: Option<Account>,
    /// The lead's CRM records.
    pub crm: super::crm::CrmView,
    pub json: Value,
}

fn text(v: &str) -> Option<Value> {
    serde_json::from_str::<Value>(v).ok()
}

fn product_orgs(m: &Models, lead: &Ident, ids: &[String]) -> Vec<ProductOrgInput> {
    ids.iter()
        .filter_map(|id| {
            let po = m.org(lead.org).product_orgs.get(id)?;
            let get = |k: &str| {
                po.fields
                    .iter()
                    .find(|(n, _)| n == k)
                    .and_then(|(_, v)| text(v))
            };
            let s = |k: &str| get(k).and_then(|v| v.as_str().map(str::to_string));
            let n = |k: &str| get(k).and_then(|v| v.as_u64().or(v.as_f64().map(|f| f as u64)));
            let at = s("last_active_at").and_then(|t| {
                chrono::DateTime::parse_from_rfc3339(&t)
                    .ok()
                    .map(|t| t.timestamp_millis())
            });
            Some(ProductOrgInput {
                product_org_id: id.clone(),
                plan_id: s("plan_id"),
                plan_name: s("plan_name"),
                user_count: n("user_count"),
                mrr: n("mrr"),
                trial_status: s("trial_status"),
                last_active_at: at,
            })
        })
        .collect()
}

/// The context of `lead` for an evaluation with `model` (when there is one) as of `now`.
pub fn lead_context(
    m: &Models,
    reg: &Registry,
    lead: &Ident,
    lookback_days: u32,
    model: Option<&IcpModel>,
    now: i64,
) -> LeadContext {
    let o = m.org(lead.org);
    let profile = o.leads.get(lead).cloned().unwrap_or_default();
    let since = now - i64::from(lookback_days) * 86_400_000;
    let mut signals = Vec::new();
    let mut signals_json = Vec::new();
    for pos in o.lead_signals.get(lead).into_iter().flatten() {
        let Some(p) = m.processed(lead.org, *pos) else {
            continue;
        };
        let (Status::Completed, Some(t)) = (p.status, p.signal_type) else {
            continue;
        };
        if p.event_at < since {
            continue;
        }
        let name = p.rule_name.as_deref().unwrap_or(&p.event_type).to_string();
        let description = p
            .rule_id
            .and_then(|id| reg.rule(id))
            .and_then(|r| r.def.description.clone());
        signals_json.push(ContextSignal {
            id: *pos,
            name: name.clone(),
            signal_type: t,
            description,
            source: p.source.to_string(),
            occurred_at: rfc3339_text(p.event_at),
            high_intent: p.high_intent,
        });
        signals.push(SignalInput {
            name,
            signal_type: t,
            high_intent: p.high_intent,
            event_at: p.event_at,
        });
    }
    let traits: BTreeMap<String, String> = profile.traits.iter().cloned().collect();
    let trait_of = |keys: &[&str]| keys.iter().find_map(|k| traits.get(*k).cloned());
    let title = trait_of(&["title", "job_title", "jobTitle"]);
    let email = email_of(m, lead);
    let account = account_of(m, lead);
    let crm = super::crm::crm_view(
        m,
        lead,
        email.as_deref(),
        account.as_ref().and_then(|a| a.fields.domain.as_deref()),
    );
    let crm_std = |f: StdField| {
        crm.person
            .as_ref()
            .and_then(|(_, _, r)| r.std.get(&f).cloned())
    };
    let title = title.or_else(|| crm_std(StdField::JobTitle));
    let input = LeadInput {
        email: email.clone(),
        title: title.clone(),
        account: account
            .as_ref()
            .map(|a| a.fields.clone())
            .unwrap_or_default(),
        product_orgs: product_orgs(m, lead, &profile.product_orgs),
        signals,
        now,
        lookback_days,
    };
    let icp = model.map(|m| ContextIcp {
        model_id: m.id,
        version: m.version,
        name: m.name.clone(),
        account_profile: m.account_profile.clone(),
        account_detractors: m.account_detractors.clone(),
        contact_personas: m.contact_personas.clone(),
        contact_detractors: m.contact_detractors.clone(),
        positive_signals: m.positive_signals.clone(),
        negative_signals: m.negative_signals.clone(),
        criteria: m.criteria.clone(),
    });
    let view = EvaluationContext {
        lead: ContextLead {
            id: lead_id(lead),
            email,
            first_name: trait_of(&["first_name", "firstName"])
                .or_else(|| crm_std(StdField::FirstName)),
            last_name: trait_of(&["last_name", "lastName"]).or_else(|| crm_std(StdField::LastName)),
            title,
            company: trait_of(&["company", "company_name"]).or_else(|| crm_std(StdField::Company)),
            identifiers: identifiers(m, lead),
            traits,
            crm: crm.person_view(),
        },
        account: account.as_ref().map(|a| ContextAccount {
            account: account_view(a, None),
            crm: crm.account_view(),
        }),
        signals: signals_json,
        product_org_info: product_org_infos(m, lead.org, &profile.product_orgs),
        icp,
        window: ContextWindow {
            lookback_days,
            as_of: rfc3339_text(now),
        },
    };
    let json = serde_json::to_value(view).expect("contexts serialize");
    LeadContext {
        input,
        account,
        crm,
        json,
    }
}
