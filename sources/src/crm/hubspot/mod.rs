//! HubSpot: a private-app token, or OAuth (a refresh token exchanged for access tokens that
//! live 30 minutes, refreshed before `expires_in` runs out, and once more on a 401); changes
//! pulled through the CRM search API on the object's
//! last-modified property, ascending, paged by `after`, under the search limit of 4
//! requests a second per token; fields checked against `GET /crm/v3/properties/{type}`.
//!
//! A `429` names its policy: `TEN_SECONDLY_ROLLING` waits out the window the
//! `X-HubSpot-RateLimit-Interval-Milliseconds` header gives (10 s without it), the search
//! API's secondly limit waits a second, and `DAILY` stops the sync until the next one.

use serde_json::{json, Value};
use trailspark_core::crm::{CrmObject, CrmRecord};
pub use trailspark_crm::hubspot::CALLS_PER_SEC;
use trailspark_crm::hubspot::{classify, HubspotAuth};

use super::client::CrmHttp;
use super::{
    field_problems, name_types, objects_of, standard, text_of, Connector, ConnectorConfig,
    CrmError, Described, FieldProblem, Page, Pull,
};

/// 90% of CRM search's documented 4 requests a second per token: requests sent exactly
/// 250 ms apart can arrive closer, and the limit counts arrivals.
pub const SEARCH_PER_SEC: f64 = 3.6;
/// Records per search page (the API's maximum is 200).
pub const PAGE: usize = 100;
/// How many results one search can page through.
pub const SEARCH_CAP: usize = 10_000;

pub struct Hubspot {
    config: ConnectorConfig,
    auth: HubspotAuth,
}

/// The last-modified property HubSpot keeps on each object.
fn modified_property(object: CrmObject) -> &'static str {
    match object {
        CrmObject::Account => "hs_lastmodifieddate",
        _ => "lastmodifieddate",
    }
}

fn time_of(v: &Value) -> Option<i64> {
    let s = v.as_str()?;
    s.parse::<i64>().ok().or_else(|| {
        chrono::DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|d| d.timestamp_millis())
    })
}

impl Hubspot {
    pub fn new(config: ConnectorConfig, http: CrmHttp) -> Result<Hubspot, CrmError> {
        Ok(Hubspot {
            auth: HubspotAuth::new(http, &config.api_base_url, &config.credentials)?,
            config,
        })
    }

    async fn get(&self, path: &str) -> Result<Value, CrmError> {
        let oauth = self.auth.oauth();
        self.auth
            .request(reqwest::Method::GET, path, None, None, |a| {
                classify(a, oauth)
            })
            .await?
            .json()
    }

    fn search_body(&self, pull: &Pull) -> Value {
        let prop = modified_property(pull.object);
        let groups = match &pull.since {
            None => json!([]),
            Some(c) if c.complete => json!([
                {"filters": [{"propertyName": prop, "operator": "GT", "value": c.at.to_string()}]}
            ]),
            Some(c) => json!([
                {"filters": [{"propertyName": prop, "operator": "GT", "value": c.at.to_string()}]},
                {"filters": [
                    {"propertyName": prop, "operator": "EQ", "value": c.at.to_string()},
                    {"propertyName": "hs_object_id", "operator": "GT", "value": c.id}
                ]}
            ]),
        };
        let mut properties = self.config.mapping.fields_of(pull.object);
        properties.push(prop.to_string());
        if pull.object == CrmObject::Contact {
            properties.push("associatedcompanyid".into());
        }
        properties.sort();
        properties.dedup();
        let mut body = json!({
            "filterGroups": groups,
            "sorts": [{"propertyName": prop, "direction": "ASCENDING"}],
            "properties": properties,
            "limit": PAGE,
        });
        if let Some(after) = &pull.next {
            body["after"] = json!(after);
        }
        body
    }
}

#[async_trait::async_trait]
impl Connector for Hubspot {
    fn rotated(&self) -> Option<String> {
        self.auth.rotated()
    }

    async fn check(&self) -> Result<Vec<FieldProblem>, CrmError> {
        let kind = self.config.kind;
        let refs = self.config.mapping.all_refs();
        let mut described = Described::new();
        for object in objects_of(&refs) {
            let v = self
                .get(&format!("/crm/v3/properties/{}", object.native(kind)))
                .await?;
            described.insert(object, Some(name_types(v.get("results"))));
        }
        Ok(field_problems(&refs, &described, &["number"], |o| {
            o.native(kind).to_string()
        }))
    }

    async fn next_page(&self, pull: &mut Pull) -> Result<Page, CrmError> {
        let path = format!(
            "/crm/v3/objects/{}/search",
            pull.object.native(self.config.kind)
        );
        let body = self.search_body(pull);
        let search_scope = format!("{}:search", self.auth.scope());
        let oauth = self.auth.oauth();
        let a = self
            .auth
            .request(
                reqwest::Method::POST,
                &path,
                Some(&body),
                Some((&search_scope, SEARCH_PER_SEC)),
                |a| classify(a, oauth),
            )
            .await?;
        let v = a.json()?;
        let prop = modified_property(pull.object);
        let records: Vec<CrmRecord> = v
            .get("results")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|r| {
                let id = text_of(r.get("id")?)?;
                let fields = r.get("properties")?.as_object()?.clone();
                let modified_at = fields
                    .get(prop)
                    .and_then(time_of)
                    .or_else(|| r.get("updatedAt").and_then(time_of))?;
                Some(CrmRecord {
                    std: standard(&self.config.mapping, pull.object, &fields),
                    account_id: fields.get("associatedcompanyid").and_then(text_of),
                    id,
                    modified_at,
                    fields,
                })
            })
            .collect();
        let next = v.pointer("/paging/next/after").and_then(text_of);
        // Search pages no further than 10,000 results: past that, the same search starts
        // again after the last record taken (the results are in last-modified order).
        let capped = next
            .as_deref()
            .and_then(|a| a.parse::<usize>().ok())
            .is_some_and(|a| a + PAGE > SEARCH_CAP);
        let page = pull.finish(records, next, true);
        if capped {
            pull.next = None;
            pull.since = pull.high.clone();
        }
        Ok(page)
    }
}
