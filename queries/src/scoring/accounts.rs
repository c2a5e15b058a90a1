//! Accounts (the product's "target organization"): the company a lead belongs to.
//!
//! A lead belongs to the account of its latest product org, or else to the account of its
//! email's company domain (free-mail domains name no company). A product-org update therefore
//! creates or updates an account at once, with no lead needed. An account's firmographics
//! come from what is known without a CRM: its product org's fields (custom fields such as
//! `industry` or `employees` included) and its leads' traits (`company`, `industry`,
//! `employees`, `region`, `country`, …); the CRM integration enriches them later.

use std::collections::BTreeMap;

use serde_json::Value;
use sha2::{Digest, Sha256};
use trailspark_operators::product_orgs::ProductOrg;
use trailspark_operators::scorer::{account_propensity, company_domain, AccountInput};
use trailspark_operators::{IdKind, Ident, Org};
use trailspark_sinks::read_models::{lead_id, Models};

pub use crate::views::AccountView;

/// Where an account comes from.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum AccountKey {
    ProductOrg(String),
    Domain(String),
}

impl AccountKey {
    pub fn id(&self, org: Org) -> String {
        let (kind, key) = match self {
            AccountKey::ProductOrg(p) => ("product_org", p.as_str()),
            AccountKey::Domain(d) => ("domain", d.as_str()),
        };
        let mut h = Sha256::new();
        h.update(org.to_le_bytes());
        h.update(kind.as_bytes());
        h.update([0]);
        h.update(key.as_bytes());
        format!("acct_{}", &hex::encode(h.finalize())[..20])
    }

    fn source(&self) -> &'static str {
        match self {
            AccountKey::ProductOrg(_) => "product_org",
            AccountKey::Domain(_) => "domain",
        }
    }
}

/// An account with what is known of it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Account {
    pub id: String,
    pub key: Option<AccountKey>,
    pub fields: AccountInput,
    pub product_org_id: Option<String>,
    pub leads: Vec<Ident>,
}

/// The lead's email.
pub fn email_of(m: &Models, lead: &Ident) -> Option<String> {
    if lead.kind == IdKind::Email {
        return Some(lead.value.to_string());
    }
    m.org(lead.org)
        .members
        .get(lead)
        .into_iter()
        .flatten()
        .find(|i| i.kind == IdKind::Email)
        .map(|i| i.value.to_string())
}

/// The account key of a lead.
pub fn key_of(m: &Models, lead: &Ident) -> Option<AccountKey> {
    let profile = m.org(lead.org).leads.get(lead)?;
    if let Some(po) = &profile.product_org {
        return Some(AccountKey::ProductOrg(po.clone()));
    }
    email_of(m, lead)
        .and_then(|e| company_domain(&e))
        .map(AccountKey::Domain)
}

/// The first of `keys` that `get` knows, trimmed and not empty.
fn first(get: &dyn Fn(&str) -> Option<String>, keys: &[&str]) -> Option<String> {
    keys.iter()
        .filter_map(|k| get(k))
        .map(|v| v.trim().to_string())
        .find(|v| !v.is_empty())
}

/// Fills what `fields` lacks from a source of named values.
fn fill(fields: &mut AccountInput, get: &dyn Fn(&str) -> Option<String>) {
    let f = fields;
    if f.name.is_none() {
        f.name = first(get, &["company", "company_name", "organization", "name"]);
    }
    if f.domain.is_none() {
        f.domain = first(get, &["domain", "website", "company_domain"]).map(|d| {
            d.trim_start_matches("https://")
                .trim_start_matches("http://")
                .trim_start_matches("www.")
                .trim_end_matches('/')
                .to_ascii_lowercase()
        });
    }
    if f.industry.is_none() {
        f.industry = first(get, &["industry", "company_industry", "sector"]);
    }
    if f.market_segment.is_none() {
        f.market_segment = first(get, &["market_segment", "segment"]);
    }
    if f.employee_count.is_none() {
        f.employee_count = first(
            get,
            &["employee_count", "employees", "company_size", "size"],
        )
        .and_then(|v| v.replace(',', "").parse::<f64>().ok())
        .filter(|n| *n >= 0.0)
        .map(|n| n as u64);
    }
    if f.region.is_none() {
        f.region = first(get, &["region", "country", "location"]);
    }
}

/// A product org's fields as named text values (custom fields by their own name).
fn product_org_get(po: &ProductOrg) -> impl Fn(&str) -> Option<String> + '_ {
    move |k: &str| {
        po.fields
            .iter()
            .find(|(name, _)| name == k || name.strip_prefix("custom.") == Some(k))
            .and_then(|(_, v)| match serde_json::from_str::<Value>(v).ok()? {
                Value::String(s) => Some(s),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
    }
}

fn traits_get<'a>(m: &'a Models, lead: &Ident) -> impl Fn(&str) -> Option<String> + 'a {
    let traits = m.org(lead.org).leads.get(lead).map(|p| &p.traits);
    move |k: &str| {
        traits?
            .iter()
            .find(|(name, _)| name == k)
            .map(|(_, v)| v.clone())
    }
}

/// The account of one lead: its CRM account's fields, then its product org's, then its
/// own traits.
pub fn account_of(m: &Models, lead: &Ident) -> Option<Account> {
    let key = key_of(m, lead)?;
    let mut fields = AccountInput::default();
    // The CRM's firmographics first: they are what the customer keeps up to date.
    let email = email_of(m, lead);
    let domain = match &key {
        AccountKey::Domain(d) => Some(d.clone()),
        AccountKey::ProductOrg(_) => email.as_deref().and_then(company_domain),
    };
    let crm = super::crm::crm_view(m, lead, email.as_deref(), domain.as_deref());
    if let Some(r) = crm.account_source() {
        fill(&mut fields, &super::crm::std_get(r));
    }
    let product_org_id = match &key {
        AccountKey::ProductOrg(id) => {
            if let Some(po) = m.org(lead.org).product_orgs.get(id) {
                fill(&mut fields, &product_org_get(po));
            }
            Some(id.clone())
        }
        AccountKey::Domain(d) => {
            fields.domain = Some(d.clone());
            None
        }
    };
    fill(&mut fields, &traits_get(m, lead));
    Some(Account {
        id: key.id(lead.org),
        key: Some(key),
        fields,
        product_org_id,
        leads: vec![lead.clone()],
    })
}

/// Every account of `org`: one per product org (with or without leads) and one per company
/// domain of a lead without a product org, with the fields its product org and leads give.
pub fn accounts(m: &Models, org: Org) -> Vec<Account> {
    let o = m.org(org);
    let mut by_key: BTreeMap<AccountKey, Account> = BTreeMap::new();
    for (id, po) in &o.product_orgs {
        let key = AccountKey::ProductOrg(id.clone());
        let mut fields = AccountInput::default();
        fill(&mut fields, &product_org_get(po));
        by_key.insert(
            key.clone(),
            Account {
                id: key.id(org),
                key: Some(key),
                fields,
                product_org_id: Some(id.clone()),
                leads: Vec::new(),
            },
        );
    }
    let mut leads: Vec<&Ident> = o.leads.keys().collect();
    leads.sort();
    for lead in leads {
        let Some(key) = key_of(m, lead) else { continue };
        let a = by_key.entry(key.clone()).or_insert_with(|| Account {
            id: key.id(org),
            fields: AccountInput {
                domain: match &key {
                    AccountKey::Domain(d) => Some(d.clone()),
                    _ => None,
                },
                ..AccountInput::default()
            },
            key: Some(key),
            product_org_id: None,
            leads: Vec::new(),
        });
        // The CRM's account (or an unconverted lead's fields) before the lead's traits.
        let email = email_of(m, lead);
        let domain = a
            .fields
            .domain
            .clone()
            .or_else(|| email.as_deref().and_then(company_domain));
        let crm = super::crm::crm_view(m, lead, email.as_deref(), domain.as_deref());
        if let Some(r) = crm.account_source() {
            fill(&mut a.fields, &super::crm::std_get(r));
        }
        fill(&mut a.fields, &traits_get(m, lead));
        a.leads.push(lead.clone());
    }
    by_key.into_values().collect()
}

pub fn account_json(a: &Account, propensity: Option<&'static str>) -> Value {
    serde_json::to_value(account_view(a, propensity)).expect("accounts serialize")
}

pub fn account_view(a: &Account, propensity: Option<&'static str>) -> AccountView {
    let f = &a.fields;
    AccountView {
        id: a.id.clone(),
        source: a.key.as_ref().map(AccountKey::source),
        name: f
            .name
            .clone()
            .or_else(|| f.domain.clone())
            .or_else(|| a.product_org_id.clone()),
        website_domain: f.domain.clone(),
        industry: f.industry.clone(),
        market_segment: f.market_segment.clone(),
        employee_count: f.employee_count,
        region: f.region.clone(),
        product_org_id: a.product_org_id.clone(),
        lead_ids: a.leads.iter().map(lead_id).collect(),
        propensity,
    }
}

/// An account's propensity, rolled up from its leads' latest evaluations (`None` before any).
pub fn propensity(m: &Models, a: &Account) -> Option<&'static str> {
    let org = a.leads.first()?.org;
    let s = &m.org(org).scoring;
    let dims: Vec<(u32, u32)> = a
        .leads
        .iter()
        .filter_map(|l| s.latest(&lead_id(l)))
        .map(|e| {
            let intent = e.dimensions.intent.unwrap_or(0);
            let engagement = match e.dimensions.usage {
                Some(u) => (0.7 * f64::from(intent) + 0.3 * f64::from(u)).round() as u32,
                None => intent,
            };
            (e.dimensions.fit.unwrap_or(0), engagement)
        })
        .collect();
    account_propensity(&dims).map(|p| p.as_str())
}
