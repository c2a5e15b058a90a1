//! A lead's CRM records: its person record (a contact, else a Salesforce lead) by e-mail,
//! and its account record, the person's own account in the CRM or else the one whose
//! website is the lead's company domain.

use std::sync::Arc;

use serde_json::{json, Value};
use trailspark_core::crm::{CrmObject, CrmRecord, StdField};
use trailspark_operators::Ident;
use trailspark_sinks::read_models::Models;

use crate::views::CrmRecordView;

/// The CRM's view of one lead.
#[derive(Clone, Debug, Default)]
pub struct CrmView {
    /// The integration and object of the person record, and the record.
    pub person: Option<(u64, CrmObject, Arc<CrmRecord>)>,
    pub account: Option<(u64, Arc<CrmRecord>)>,
}

/// The lead's CRM records (`email` is the lead's, `domain` its account's).
pub fn crm_view(m: &Models, lead: &Ident, email: Option<&str>, domain: Option<&str>) -> CrmView {
    let crm = &m.org(lead.org).crm;
    let mut view = CrmView::default();
    if let Some((k, r)) = email.and_then(|e| crm.people(e).into_iter().next()) {
        if let Some(a) = crm.account_of(k, r) {
            view.account = Some((k.0, a.clone()));
        }
        view.person = Some((k.0, k.1, r.clone()));
    }
    if view.account.is_none() {
        if let Some((k, r)) = domain.and_then(|d| crm.accounts(d).into_iter().next()) {
            view.account = Some((k.0, r.clone()));
        }
    }
    view
}

/// A record's standard fields under the names accounts are filled from.
pub fn std_get(r: &CrmRecord) -> impl Fn(&str) -> Option<String> + '_ {
    move |k: &str| {
        let f = match k {
            "company" | "name" => StdField::AccountName,
            "domain" | "website" => StdField::WebsiteDomain,
            "industry" => StdField::Industry,
            "market_segment" => StdField::MarketSegment,
            "employee_count" => StdField::EmployeeCount,
            "region" => StdField::Region,
            _ => return None,
        };
        r.std.get(&f).cloned()
    }
}

impl CrmView {
    /// The record that describes the account: the account record, or (Salesforce's read
    /// rule for unconverted people) the person record's fallback fields.
    pub fn account_source(&self) -> Option<&CrmRecord> {
        self.account
            .as_ref()
            .map(|(_, r)| r.as_ref())
            .or_else(|| self.person.as_ref().map(|(_, _, r)| r.as_ref()))
    }

    /// `lead.crm` of the evaluation context: the lead's CRM person (contact or lead).
    pub fn person_view(&self) -> Option<CrmRecordView> {
        self.person
            .as_ref()
            .map(|(integration, object, r)| CrmRecordView {
                integration_id: *integration,
                object: json!(object),
                id: r.id.clone(),
                fields: r.fields.clone(),
            })
    }

    /// `account.crm` of the evaluation context.
    pub fn account_view(&self) -> Option<CrmRecordView> {
        self.account.as_ref().map(|(integration, r)| CrmRecordView {
            integration_id: *integration,
            object: json!("account"),
            id: r.id.clone(),
            fields: r.fields.clone(),
        })
    }

    /// A raw CRM field for evaluation rules: `contact.X`, `lead.X` or `account.X`.
    pub fn field(&self, path: &str) -> Option<Value> {
        let (object, field) = path.split_once('.')?;
        let r = match object {
            "account" | "company" => self.account.as_ref().map(|(_, r)| r)?,
            "contact" | "lead" | "person" => {
                let (_, o, r) = self.person.as_ref()?;
                let wanted = match object {
                    "contact" => Some(CrmObject::Contact),
                    "lead" => Some(CrmObject::Lead),
                    _ => None,
                };
                if wanted.is_some_and(|w| w != *o) {
                    return None;
                }
                r
            }
            _ => return None,
        };
        r.fields.get(field).filter(|v| !v.is_null()).cloned()
    }
}
