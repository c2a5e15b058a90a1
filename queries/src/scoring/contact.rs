//! What a destination needs to find or create a lead's CRM record: its email and name, its
//! account's name and domain, and the account's CRM record where a sync linked one.

use trailspark_core::crm::StdField;
use trailspark_operators::scorer::company_domain;
use trailspark_operators::Ident;
use trailspark_sinks::read_models::Models;

use super::accounts::{account_of, email_of};
use super::crm::crm_view;

/// A lead as a destination addresses it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LeadContact {
    pub email: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub company: Option<String>,
    pub domain: Option<String>,
    /// The account's CRM record: (integration, record id).
    pub crm_account: Option<(u64, String)>,
}

/// The lead's contact details, or `None` when it has no email.
pub fn contact_of(m: &Models, lead: &Ident) -> Option<LeadContact> {
    let email = email_of(m, lead)?;
    let traits = m.org(lead.org).leads.get(lead).map(|p| &p.traits);
    let trait_of = |keys: &[&str]| {
        traits?
            .iter()
            .find(|(k, _)| keys.contains(&k.as_str()))
            .map(|(_, v)| v.clone())
    };
    let account = account_of(m, lead);
    let domain = account
        .as_ref()
        .and_then(|a| a.fields.domain.clone())
        .or_else(|| company_domain(&email));
    let crm = crm_view(m, lead, Some(&email), domain.as_deref());
    let crm_std = |f: StdField| {
        crm.person
            .as_ref()
            .and_then(|(_, _, r)| r.std.get(&f).cloned())
    };
    Some(LeadContact {
        first_name: trait_of(&["first_name", "firstName"]).or_else(|| crm_std(StdField::FirstName)),
        last_name: trait_of(&["last_name", "lastName"]).or_else(|| crm_std(StdField::LastName)),
        company: account
            .as_ref()
            .and_then(|a| a.fields.name.clone())
            .or_else(|| trait_of(&["company", "company_name"])),
        crm_account: crm.account.as_ref().map(|(i, r)| (*i, r.id.clone())),
        domain,
        email,
    })
}
