//! Reading CRMs: Salesforce, HubSpot and Airtable, each in its own folder, over one HTTP
//! client ([`client`]) that paces requests under the CRM's documented limit, retries what
//! the CRM says is transient, and refreshes tokens.
//!
//! A [`Connector`] answers two questions: are the credentials and the mapped fields good
//! ([`Connector::check`]), and what changed since a cursor ([`Connector::next_page`]). It
//! never writes anywhere: the sync service appends what it answers to the log.

pub mod airtable;
pub mod hubspot;
pub mod salesforce;

pub(crate) use trailspark_crm::name_types;
pub use trailspark_crm::{client, oauth, CrmError, FieldProblem};

use std::collections::BTreeMap;

use trailspark_core::crm::{
    CrmObject, CrmRecord, Cursor, FieldMapping, FieldRef, IntegrationKind, StdField,
};

/// One page of changed records, in the CRM's last-modified order where it has one.
#[derive(Debug, Default)]
pub struct Page {
    pub records: Vec<CrmRecord>,
    /// Where the sync stands after this page (committed with the page).
    pub cursor: Option<Cursor>,
    /// No page follows.
    pub done: bool,
}

/// Where a pull of one object stands between pages.
#[derive(Clone, Debug)]
pub struct Pull {
    pub object: CrmObject,
    /// The committed cursor the pull started from.
    pub since: Option<Cursor>,
    /// The CRM's own paging token (Salesforce `nextRecordsUrl`, HubSpot `after`, Airtable
    /// `offset`); `None` before the first page.
    pub next: Option<String>,
    pub started: bool,
    /// The greatest record seen so far, as a cursor (what a completed pull commits).
    pub high: Option<Cursor>,
}

impl Pull {
    pub fn new(object: CrmObject, since: Option<Cursor>) -> Pull {
        Pull {
            object,
            since,
            next: None,
            started: false,
            high: None,
        }
    }

    /// Whether a record at `(at, id)` is past the starting cursor: a completed cursor
    /// takes only later times; one inside a query takes its time again after its id.
    pub fn wants(&self, at: i64, id: &str) -> bool {
        match &self.since {
            None => true,
            Some(c) if c.complete => at > c.at,
            Some(c) => at > c.at || (at == c.at && id > c.id.as_str()),
        }
    }

    fn note(&mut self, r: &CrmRecord) {
        let newer = match &self.high {
            None => true,
            Some(h) => (r.modified_at, r.id.as_str()) > (h.at, h.id.as_str()),
        };
        if newer {
            self.high = Some(Cursor {
                at: r.modified_at,
                id: r.id.clone(),
                complete: false,
            });
        }
    }

    /// Ends a page: keeps the records past the cursor, and says where the sync stands.
    /// `ordered` when the CRM returns records in (time, id) order, so that a cursor inside
    /// the query is safe to resume from; otherwise only a finished pull moves the cursor.
    pub fn finish(&mut self, records: Vec<CrmRecord>, next: Option<String>, ordered: bool) -> Page {
        let records: Vec<CrmRecord> = records
            .into_iter()
            .filter(|r| self.wants(r.modified_at, &r.id))
            .collect();
        for r in &records {
            self.note(r);
        }
        self.started = true;
        let done = next.is_none();
        self.next = next;
        let cursor = match (&self.high, done) {
            (Some(h), true) => Some(Cursor {
                complete: true,
                ..h.clone()
            }),
            (Some(h), false) if ordered => Some(h.clone()),
            _ => None,
        };
        Page {
            records,
            cursor,
            done,
        }
    }
}

/// What every CRM connector does.
#[async_trait::async_trait]
pub trait Connector: Send + Sync {
    /// Checks the credentials, and every mapped field against the CRM's describe endpoint.
    async fn check(&self) -> Result<Vec<FieldProblem>, CrmError>;
    /// The next page of `pull`'s object; a page with `done` ends it.
    async fn next_page(&self, pull: &mut Pull) -> Result<Page, CrmError>;
    /// New credentials to store, when the CRM rotated them during a call (taken once).
    fn rotated(&self) -> Option<String> {
        None
    }
}

/// What a connector is built from: the integration's settings and its opened credentials.
pub type ConnectorConfig = trailspark_crm::IntegrationConfig;

/// Fields per object as the CRM's describe endpoint answers them (name → type); `None`
/// when the object itself is missing (an Airtable table).
pub type Described = BTreeMap<CrmObject, Option<BTreeMap<String, String>>>;

/// The objects `refs` name, each once.
pub(crate) fn objects_of(refs: &[(FieldRef, Option<StdField>)]) -> Vec<CrmObject> {
    let mut v: Vec<CrmObject> = refs.iter().map(|(r, _)| r.object).collect();
    v.sort();
    v.dedup();
    v
}

/// What is wrong with `refs` given what the CRM describes: missing objects and fields, and
/// numeric standard fields on fields whose type is none of `numeric`.
pub(crate) fn field_problems(
    refs: &[(FieldRef, Option<StdField>)],
    described: &Described,
    numeric: &[&str],
    object_name: impl Fn(CrmObject) -> String,
) -> Vec<FieldProblem> {
    let mut problems: Vec<FieldProblem> = Vec::new();
    for (r, std) in refs {
        let object = object_name(r.object);
        let problem = match described.get(&r.object) {
            None | Some(None) => FieldProblem {
                object,
                field: String::new(),
                problem: "missing",
                expected: Some("object"),
                found: None,
            },
            Some(Some(fields)) => match fields.get(&r.field) {
                None => FieldProblem {
                    object,
                    field: r.field.clone(),
                    problem: "missing",
                    expected: None,
                    found: None,
                },
                Some(t) if std.is_some_and(StdField::numeric) && !numeric.contains(&t.as_str()) => {
                    FieldProblem {
                        object,
                        field: r.field.clone(),
                        problem: "wrong_type",
                        expected: Some("number"),
                        found: Some(t.clone()),
                    }
                }
                Some(_) => continue,
            },
        };
        if !problems.contains(&problem) {
            problems.push(problem);
        }
    }
    problems
}

/// Builds the connector for `config`'s CRM.
pub fn connector(
    config: ConnectorConfig,
    http: client::CrmHttp,
) -> Result<Box<dyn Connector>, CrmError> {
    Ok(match config.kind {
        IntegrationKind::Salesforce => Box::new(salesforce::Salesforce::new(config, http)?),
        IntegrationKind::Hubspot => Box::new(hubspot::Hubspot::new(config, http)?),
        IntegrationKind::Airtable => Box::new(airtable::Airtable::new(config, http)?),
    })
}

/// Text of a JSON value as a standard field holds it (numbers as their text).
pub(crate) fn text_of(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Fills a record's standard fields from its pulled fields.
pub(crate) fn standard(
    mapping: &FieldMapping,
    object: CrmObject,
    fields: &serde_json::Map<String, serde_json::Value>,
) -> BTreeMap<trailspark_core::crm::StdField, String> {
    mapping
        .std_fields_of(object)
        .into_iter()
        .filter_map(|(f, name)| fields.get(name).and_then(text_of).map(|v| (f, v)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, at: i64) -> CrmRecord {
        CrmRecord {
            id: id.into(),
            modified_at: at,
            std: Default::default(),
            account_id: None,
            fields: Default::default(),
        }
    }

    #[test]
    fn cursors_resume_exactly() {
        // An ordered pull commits inside the query; the last page completes the cursor.
        let mut p = Pull::new(CrmObject::Contact, None);
        let page = p.finish(vec![rec("a", 10), rec("b", 20)], Some("n".into()), true);
        let inside = page.cursor.unwrap();
        assert_eq!(
            (inside.at, inside.id.as_str(), inside.complete),
            (20, "b", false)
        );
        let page = p.finish(vec![rec("c", 20), rec("d", 30)], None, true);
        let done = page.cursor.unwrap();
        assert!(page.done && done.complete && done.at == 30);

        // Resuming inside a query takes its time again, after its id.
        let resumed = Pull::new(CrmObject::Contact, Some(inside));
        assert!(!resumed.wants(20, "b") && resumed.wants(20, "c") && resumed.wants(21, "a"));
        assert!(!resumed.wants(19, "z"));
        // After a completed pull, only later times.
        let next = Pull::new(CrmObject::Contact, Some(done));
        assert!(!next.wants(30, "e") && next.wants(31, "a"));

        // An unordered listing moves the cursor only when it ends, to its greatest record.
        let mut u = Pull::new(CrmObject::Account, None);
        let page = u.finish(vec![rec("x", 50), rec("y", 5)], Some("o".into()), false);
        assert!(page.cursor.is_none());
        let page = u.finish(vec![rec("z", 7)], None, false);
        assert_eq!(page.cursor.unwrap().at, 50);
        // Records at or before the starting cursor are dropped from a page.
        let mut again = Pull::new(
            CrmObject::Account,
            Some(Cursor {
                at: 50,
                id: "x".into(),
                complete: true,
            }),
        );
        assert_eq!(
            again
                .finish(vec![rec("x", 50), rec("w", 51)], None, false)
                .records
                .len(),
            1
        );
    }
}
