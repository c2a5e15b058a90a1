//! Salesforce: a refresh token exchanged at the login host (production, sandbox or My
//! Domain) for an access token and the `instance_url` every call then goes to; SOQL pulls
//! in `SystemModstamp` order, paged through `nextRecordsUrl`; fields checked against
//! `sobjects/{Object}/describe`.
//!
//! Errors are a JSON array of `{message, errorCode, fields}`. `401 INVALID_SESSION_ID`
//! refreshes the token once per request; `403 REQUEST_LIMIT_EXCEEDED` (the org's daily
//! allocation) stops the sync until the next one; `invalid_grant` disconnects.

use serde_json::Value;
use trailspark_core::crm::{CrmObject, CrmRecord};
pub use trailspark_crm::salesforce::API_VERSION;
use trailspark_crm::salesforce::{soql_text, SalesforceAuth};

use super::client::CrmHttp;
use super::{
    field_problems, name_types, objects_of, standard, text_of, Connector, ConnectorConfig,
    CrmError, Described, FieldProblem, Page, Pull,
};

pub struct Salesforce {
    config: ConnectorConfig,
    auth: SalesforceAuth,
}

/// `SystemModstamp` (`2024-01-15T14:30:00.000+0000`) as ms.
fn modstamp(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z")
        .or_else(|_| chrono::DateTime::parse_from_rfc3339(s))
        .ok()
        .map(|d| d.timestamp_millis())
}

/// A time as a SOQL datetime literal.
fn soql_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

impl Salesforce {
    pub fn new(config: ConnectorConfig, http: CrmHttp) -> Result<Salesforce, CrmError> {
        Ok(Salesforce {
            auth: SalesforceAuth::new(http, config.login_host(), &config.credentials)?,
            config,
        })
    }

    async fn get(&self, path: &str) -> Result<Value, CrmError> {
        self.auth.get(path).await
    }

    fn soql(&self, pull: &Pull) -> String {
        let object = pull.object.native(self.config.kind);
        let mut fields = vec!["Id".to_string(), "SystemModstamp".to_string()];
        if pull.object == CrmObject::Contact {
            fields.push("AccountId".into());
        }
        fields.extend(self.config.mapping.fields_of(pull.object));
        fields.dedup();
        let mut seen = std::collections::BTreeSet::new();
        fields.retain(|f| seen.insert(f.clone()));
        let filter = match &pull.since {
            None => String::new(),
            Some(c) if c.complete => format!(" WHERE SystemModstamp > {}", soql_time(c.at)),
            Some(c) => {
                let t = soql_time(c.at);
                format!(
                    " WHERE (SystemModstamp > {t} OR (SystemModstamp = {t} AND Id > '{}'))",
                    soql_text(&c.id)
                )
            }
        };
        format!(
            "SELECT {} FROM {object}{filter} ORDER BY SystemModstamp ASC, Id ASC",
            fields.join(", ")
        )
    }

    fn record(&self, object: CrmObject, r: &Value) -> Option<CrmRecord> {
        let id = r.get("Id")?.as_str()?.to_string();
        let modified_at = modstamp(r.get("SystemModstamp")?.as_str()?)?;
        let mut fields = r.as_object()?.clone();
        fields.remove("attributes");
        let account_id = fields.get("AccountId").and_then(text_of);
        Some(CrmRecord {
            std: standard(&self.config.mapping, object, &fields),
            id,
            modified_at,
            account_id,
            fields,
        })
    }
}

#[async_trait::async_trait]
impl Connector for Salesforce {
    async fn check(&self) -> Result<Vec<FieldProblem>, CrmError> {
        self.auth.session(true).await?;
        let kind = self.config.kind;
        let refs = self.config.mapping.all_refs();
        let mut described = Described::new();
        for object in objects_of(&refs) {
            let name = object.native(kind);
            let v = self
                .get(&format!(
                    "/services/data/{API_VERSION}/sobjects/{name}/describe"
                ))
                .await?;
            described.insert(object, Some(name_types(v.get("fields"))));
        }
        let numeric = ["int", "double", "currency", "percent", "long"];
        Ok(field_problems(&refs, &described, &numeric, |o| {
            o.native(kind).to_string()
        }))
    }

    async fn next_page(&self, pull: &mut Pull) -> Result<Page, CrmError> {
        let v = match pull.next.clone() {
            Some(next) => self.get(&next).await?,
            None => {
                let q: String =
                    form_urlencoded::byte_serialize(self.soql(pull).as_bytes()).collect();
                self.get(&format!("/services/data/{API_VERSION}/query?q={q}"))
                    .await?
            }
        };
        let records: Vec<CrmRecord> = v
            .get("records")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|r| self.record(pull.object, r))
            .collect();
        let done = v.get("done").and_then(Value::as_bool).unwrap_or(true);
        let next = if done {
            None
        } else {
            v.get("nextRecordsUrl")
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        Ok(pull.finish(records, next, true))
    }

    fn rotated(&self) -> Option<String> {
        self.auth.rotated()
    }
}
