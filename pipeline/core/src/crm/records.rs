//! Records pulled from a CRM, as they enter the log: one entry per page, so a replay
//! rebuilds the CRM's view exactly and a page is either wholly on the log or not at all.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{CrmObject, StdField};
use crate::tenancy::OrgId;

/// One CRM record: its id, when the CRM last changed it, the standard fields the mapping
/// gives it, and every pulled field as the CRM answered it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CrmRecord {
    pub id: String,
    /// The CRM's last-modified time (ms).
    pub modified_at: i64,
    #[serde(default)]
    pub std: BTreeMap<StdField, String>,
    /// The account this person belongs to in the CRM (Salesforce `AccountId`, HubSpot
    /// `associatedcompanyid`, Airtable's linked company record).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
    #[serde(default)]
    pub fields: serde_json::Map<String, serde_json::Value>,
}

/// A page of records of one object from one integration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CrmBatch {
    pub org_id: OrgId,
    pub integration_id: u64,
    pub object: CrmObject,
    /// When the page was pulled (ms).
    pub at: i64,
    pub records: Vec<CrmRecord>,
}

impl CrmBatch {
    /// The same batch without records (for splitting one into several).
    pub fn clone_empty(&self) -> CrmBatch {
        CrmBatch {
            org_id: self.org_id,
            integration_id: self.integration_id,
            object: self.object,
            at: self.at,
            records: Vec::new(),
        }
    }
}

/// A website or e-mail domain as accounts are matched by: lowercase, without scheme, path,
/// port or a leading `www.`.
pub fn domain_of(text: &str) -> Option<String> {
    let t = text.trim().to_ascii_lowercase();
    let t = t.rsplit('@').next().unwrap_or(&t);
    let t = t
        .strip_prefix("https://")
        .or_else(|| t.strip_prefix("http://"))
        .unwrap_or(t);
    let host = t.split(['/', '?', '#']).next().unwrap_or("");
    let host = host.split(':').next().unwrap_or("");
    let host = host
        .strip_prefix("www.")
        .unwrap_or(host)
        .trim_end_matches('.');
    (host.contains('.') && !host.starts_with('.')).then(|| host.to_string())
}

#[cfg(test)]
mod tests {
    use super::domain_of;

    #[test]
    fn domains_are_normalized() {
        assert_eq!(
            domain_of("https://www.Acme.com/about").as_deref(),
            Some("acme.com")
        );
        assert_eq!(domain_of("acme.io:8080").as_deref(), Some("acme.io"));
        assert_eq!(domain_of("ana@Acme.com").as_deref(), Some("acme.com"));
        assert_eq!(domain_of("localhost"), None);
        assert_eq!(domain_of(""), None);
    }
}
