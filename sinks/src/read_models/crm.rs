//! What the CRMs hold, per org, as their pulled records last said: each record by its id,
//! people by e-mail and accounts by website domain, so that a lead finds its CRM contact
//! and an account its CRM account with one lookup.
//!
//! Records only arrive (a CRM page on the log); a newer version of a record replaces the
//! older one and moves it in the indexes.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use trailspark_core::crm::records::domain_of;
use trailspark_core::crm::{CrmBatch, CrmObject, CrmRecord, StdField};

/// A record's key: integration, object and the CRM's id.
pub type RecordKey = (u64, CrmObject, String);

#[derive(Default)]
pub struct CrmModels {
    pub records: HashMap<RecordKey, Arc<CrmRecord>>,
    /// Lowercase e-mail → people (contacts and Salesforce leads) with it.
    by_email: HashMap<String, BTreeSet<RecordKey>>,
    /// Website domain → accounts with it.
    by_domain: HashMap<String, BTreeSet<RecordKey>>,
    /// Records held per (integration, object): what the API shows without scanning them.
    counts: HashMap<(u64, CrmObject), u64>,
}

fn email_of(r: &CrmRecord) -> Option<String> {
    r.std
        .get(&StdField::Email)
        .map(|e| e.trim().to_ascii_lowercase())
        .filter(|e| e.contains('@'))
}

impl CrmModels {
    fn index(&mut self, key: &RecordKey, r: &CrmRecord, add: bool) {
        let slot = match key.1 {
            CrmObject::Account => r
                .std
                .get(&StdField::WebsiteDomain)
                .and_then(|d| domain_of(d))
                .map(|d| (true, d)),
            _ => email_of(r).map(|e| (false, e)),
        };
        let Some((account, k)) = slot else { return };
        let map = if account {
            &mut self.by_domain
        } else {
            &mut self.by_email
        };
        if add {
            map.entry(k).or_default().insert(key.clone());
        } else if let Some(set) = map.get_mut(&k) {
            set.remove(key);
            if set.is_empty() {
                map.remove(&k);
            }
        }
    }

    /// Applies a page; a record older than the one held is ignored.
    pub fn apply(&mut self, batch: &CrmBatch) {
        for r in &batch.records {
            let key: RecordKey = (batch.integration_id, batch.object, r.id.clone());
            if let Some(old) = self.records.get(&key).cloned() {
                if old.modified_at > r.modified_at {
                    continue;
                }
                self.index(&key, &old, false);
            } else {
                *self.counts.entry((key.0, key.1)).or_default() += 1;
            }
            self.index(&key, r, true);
            self.records.insert(key, Arc::new(r.clone()));
        }
    }

    /// Forgets an integration's records (it was deleted, or its sync restarts).
    pub fn forget(&mut self, integration: u64) {
        let keys: Vec<RecordKey> = self
            .records
            .keys()
            .filter(|k| k.0 == integration)
            .cloned()
            .collect();
        for k in keys {
            if let Some(r) = self.records.remove(&k) {
                self.index(&k, &r, false);
            }
        }
        self.counts.retain(|(i, _), _| *i != integration);
    }

    /// The records held of `integration`, per object.
    pub fn counts(&self, integration: u64) -> std::collections::BTreeMap<&'static str, u64> {
        self.counts
            .iter()
            .filter(|((i, _), _)| *i == integration)
            .map(|((_, o), n)| (o.as_str(), *n))
            .collect()
    }

    /// The person records with e-mail `email`: contacts before Salesforce leads, then the
    /// most recently modified.
    pub fn people(&self, email: &str) -> Vec<(&RecordKey, &Arc<CrmRecord>)> {
        let mut v: Vec<_> = self
            .by_email
            .get(&email.trim().to_ascii_lowercase())
            .into_iter()
            .flatten()
            .filter_map(|k| self.records.get(k).map(|r| (k, r)))
            .collect();
        v.sort_by_key(|(k, r)| (k.1 != CrmObject::Contact, -r.modified_at));
        v
    }

    /// The account records with website domain `domain`, most recently modified first.
    pub fn accounts(&self, domain: &str) -> Vec<(&RecordKey, &Arc<CrmRecord>)> {
        let mut v: Vec<_> = self
            .by_domain
            .get(domain)
            .into_iter()
            .flatten()
            .filter_map(|k| self.records.get(k).map(|r| (k, r)))
            .collect();
        v.sort_by_key(|(_, r)| -r.modified_at);
        v
    }

    /// The account a person record belongs to in its CRM.
    pub fn account_of(&self, person: &RecordKey, r: &CrmRecord) -> Option<&Arc<CrmRecord>> {
        let id = r.account_id.as_ref()?;
        self.records
            .get(&(person.0, CrmObject::Account, id.clone()))
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trailspark_core::tenancy::OrgId;

    fn rec(id: &str, at: i64, std: &[(StdField, &str)]) -> CrmRecord {
        CrmRecord {
            id: id.into(),
            modified_at: at,
            std: std.iter().map(|(f, v)| (*f, v.to_string())).collect(),
            account_id: None,
            fields: Default::default(),
        }
    }

    fn batch(object: CrmObject, records: Vec<CrmRecord>) -> CrmBatch {
        CrmBatch {
            org_id: OrgId(1),
            integration_id: 7,
            object,
            at: 0,
            records,
        }
    }

    #[test]
    fn newer_versions_move_in_the_indexes() {
        let mut m = CrmModels::default();
        m.apply(&batch(
            CrmObject::Account,
            vec![rec(
                "a1",
                10,
                &[(StdField::WebsiteDomain, "https://www.acme.com")],
            )],
        ));
        m.apply(&batch(
            CrmObject::Contact,
            vec![rec("c1", 10, &[(StdField::Email, "Ana@Acme.com")])],
        ));
        m.apply(&batch(
            CrmObject::Lead,
            vec![rec("l1", 20, &[(StdField::Email, "ana@acme.com")])],
        ));
        assert_eq!(m.accounts("acme.com").len(), 1);
        let people = m.people("ANA@acme.com");
        assert_eq!(people[0].0 .2, "c1", "a contact comes before a lead");
        assert_eq!(people.len(), 2);
        assert_eq!(
            m.counts(7).into_iter().collect::<Vec<_>>(),
            [("account", 1), ("contact", 1), ("lead", 1)]
        );
        // The account moves to another domain; an older version arriving late changes nothing.
        m.apply(&batch(
            CrmObject::Account,
            vec![rec("a1", 30, &[(StdField::WebsiteDomain, "acme.io")])],
        ));
        m.apply(&batch(
            CrmObject::Account,
            vec![rec("a1", 5, &[(StdField::WebsiteDomain, "acme.com")])],
        ));
        assert!(m.accounts("acme.com").is_empty());
        assert_eq!(m.accounts("acme.io").len(), 1);
        assert_eq!(
            m.counts(7)["account"],
            1,
            "a new version is not a new record"
        );
        m.forget(7);
        assert!(m.counts(7).is_empty());
        assert!(m.is_empty() && m.people("ana@acme.com").is_empty());
    }
}
