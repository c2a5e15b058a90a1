//! Airtable: a personal access token and a base whose tables hold contacts and companies.
//! Changes are listed with a `filterByFormula` on `LAST_MODIFIED_TIME()`, paged by
//! `offset`, under the documented 5 requests a second per base; a `429` holds the base for
//! the documented 30 s. Fields are checked against `GET /v0/meta/bases/{baseId}/tables`.
//!
//! Listing has no last-modified order, so a cursor moves only when a pull completes: a
//! sync stopped inside a listing takes it again from the last completed one (records are
//! upserts, so taking one twice changes nothing).

use serde_json::Value;
use trailspark_core::crm::{CrmObject, CrmRecord, FieldRef, StdField};

use trailspark_crm::airtable::classify;

use super::client::CrmHttp;
use super::{
    field_problems, name_types, objects_of, standard, Connector, ConnectorConfig, CrmError,
    Described, FieldProblem, Page, Pull,
};

pub use trailspark_crm::airtable::{PENALTY, PER_BASE_PER_SEC};

/// The field holding a record's last-modified time, unless `tables.modified_field` names
/// another.
pub const MODIFIED_FIELD: &str = "Last Modified";

pub struct Airtable {
    config: ConnectorConfig,
    http: CrmHttp,
    token: String,
    base: String,
    scope: String,
    modified_field: String,
}

fn time_of(v: &Value) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(v.as_str()?)
        .ok()
        .map(|d| d.timestamp_millis())
}

fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

impl Airtable {
    pub fn new(config: ConnectorConfig, http: CrmHttp) -> Result<Airtable, CrmError> {
        let (token, base) = trailspark_crm::airtable::token_and_base(&config)?;
        let modified_field = config
            .settings
            .get("tables.modified_field")
            .cloned()
            .unwrap_or_else(|| MODIFIED_FIELD.to_string());
        Ok(Airtable {
            scope: trailspark_crm::airtable::scope(&base),
            config,
            http,
            token,
            base,
            modified_field,
        })
    }

    fn table(&self, object: CrmObject) -> &str {
        let role = object.native(self.config.kind);
        self.config.settings[&format!("tables.{role}")].as_str()
    }

    async fn get(&self, path: &str) -> Result<Value, CrmError> {
        let url = format!("{}{path}", self.config.api_base_url.trim_end_matches('/'));
        let a = self
            .http
            .call(
                Some((&self.scope, PER_BASE_PER_SEC)),
                |_| {
                    self.http
                        .send(self.http.client().get(&url).bearer_auth(&self.token))
                },
                classify,
            )
            .await?;
        a.json()
    }
}

#[async_trait::async_trait]
impl Connector for Airtable {
    async fn check(&self) -> Result<Vec<FieldProblem>, CrmError> {
        let v = self
            .get(&format!("/v0/meta/bases/{}/tables", self.base))
            .await?;
        let tables = v
            .get("tables")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut refs = self.config.mapping.all_refs();
        for o in self.config.kind.objects() {
            refs.push((
                FieldRef {
                    object: *o,
                    field: self.modified_field.clone(),
                },
                None,
            ));
        }
        let mut described = Described::new();
        for object in objects_of(&refs) {
            let name = self.table(object);
            let table = tables.iter().find(|t| {
                t.get("name").and_then(Value::as_str) == Some(name)
                    || t.get("id").and_then(Value::as_str) == Some(name)
            });
            described.insert(object, table.map(|t| name_types(t.get("fields"))));
        }
        let numeric = ["number", "count", "rollup", "formula", "autoNumber"];
        Ok(field_problems(&refs, &described, &numeric, |o| {
            self.table(o).to_string()
        }))
    }

    async fn next_page(&self, pull: &mut Pull) -> Result<Page, CrmError> {
        let mut q = vec![("pageSize".to_string(), "100".to_string())];
        for f in self.config.mapping.fields_of(pull.object) {
            q.push(("fields[]".into(), f));
        }
        q.push(("fields[]".into(), self.modified_field.clone()));
        if let Some(c) = &pull.since {
            let at = chrono::DateTime::from_timestamp_millis(c.at)
                .unwrap_or_default()
                .format("%Y-%m-%dT%H:%M:%S%.3fZ");
            q.push((
                "filterByFormula".into(),
                format!("IS_AFTER(LAST_MODIFIED_TIME(), '{at}')"),
            ));
        }
        if let Some(offset) = &pull.next {
            q.push(("offset".into(), offset.clone()));
        }
        let query: Vec<String> = q
            .iter()
            .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
            .collect();
        let v = self
            .get(&format!(
                "/v0/{}/{}?{}",
                self.base,
                enc(self.table(pull.object)),
                query.join("&")
            ))
            .await?;
        let records: Vec<CrmRecord> = v
            .get("records")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|r| {
                let id = r.get("id")?.as_str()?.to_string();
                let fields = r.get("fields")?.as_object()?.clone();
                let modified_at = fields
                    .get(&self.modified_field)
                    .and_then(time_of)
                    .or_else(|| r.get("createdTime").and_then(time_of))?;
                // A contact's company as a linked record names the account directly.
                let account_id = self
                    .config
                    .mapping
                    .fields
                    .get(&StdField::Company)
                    .filter(|m| m.primary.object == CrmObject::Contact)
                    .and_then(|m| fields.get(&m.primary.field))
                    .and_then(|v| v.as_array())
                    .and_then(|a| a.first())
                    .and_then(Value::as_str)
                    .filter(|s| s.starts_with("rec"))
                    .map(str::to_string);
                Some(CrmRecord {
                    std: standard(&self.config.mapping, pull.object, &fields),
                    id,
                    modified_at,
                    account_id,
                    fields,
                })
            })
            .collect();
        let next = v.get("offset").and_then(Value::as_str).map(str::to_string);
        Ok(pull.finish(records, next, false))
    }
}
