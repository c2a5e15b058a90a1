//! HubSpot: contacts written by email with `POST /crm/v3/objects/contacts/batch/update`
//! (`idProperty: email`, at most 100 inputs), or `batch/upsert` when records may be
//! created; propensity on companies by domain the same way. A `207` is a partial failure:
//! its errors are tied back to their inputs by `objectWriteTraceId` (or the ids they name).
//!
//! The evaluation date goes to a `datetime` property as epoch milliseconds, and to a `date`
//! property as the UTC midnight of its day (HubSpot refuses other values there). Property
//! types are read once from `GET /crm/v3/properties/contacts`.

use std::collections::{BTreeMap, HashMap};

use reqwest::Method;
use serde_json::{json, Value};
use tokio::sync::OnceCell;
use trailspark_crm::client::CrmHttp;
use trailspark_crm::hubspot::{classify, HubspotAuth};
use trailspark_crm::{name_types, CrmError, FieldProblem};

use super::{missing_fields, propensity_text, Delivery, Outcome, Writer, WriterConfig};

/// Batch inputs per request.
pub const BATCH: usize = 100;

pub struct HubspotWriter {
    config: WriterConfig,
    auth: HubspotAuth,
    /// Contact property name → type, read once.
    types: OnceCell<BTreeMap<String, String>>,
}

/// The evaluation time as a `date` property takes it: its UTC day's midnight.
pub fn midnight(ms: i64) -> i64 {
    ms - ms.rem_euclid(86_400_000)
}

impl HubspotWriter {
    pub fn new(config: WriterConfig, http: CrmHttp) -> Result<HubspotWriter, CrmError> {
        Ok(HubspotWriter {
            auth: HubspotAuth::new(
                http,
                &config.integration.api_base_url,
                &config.integration.credentials,
            )?,
            config,
            types: OnceCell::new(),
        })
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, CrmError> {
        let oauth = self.auth.oauth();
        self.auth
            .request(method, path, body, None, |a| classify(a, oauth))
            .await?
            .json()
    }

    async fn properties(&self, object: &str) -> Result<BTreeMap<String, String>, CrmError> {
        let v = self
            .call(Method::GET, &format!("/crm/v3/properties/{object}"), None)
            .await?;
        Ok(name_types(v.get("results")))
    }

    /// Contact property types, read once: a failed read is not kept (it would send dates
    /// as datetimes for good), the write fails with it and the next one reads again.
    async fn types(&self) -> Result<&BTreeMap<String, String>, CrmError> {
        self.types
            .get_or_try_init(|| self.properties("contacts"))
            .await
    }

    /// Sends a batch request; answers, per input index, `Ok(record id)` or its outcome.
    async fn batch(
        &self,
        path: &str,
        inputs: Vec<(usize, Value)>,
    ) -> Result<HashMap<usize, Result<String, Outcome>>, CrmError> {
        let mut out = HashMap::new();
        if inputs.is_empty() {
            return Ok(out);
        }
        let keys: HashMap<String, usize> = inputs
            .iter()
            .map(|(i, v)| (v["id"].as_str().unwrap_or("").to_ascii_lowercase(), *i))
            .collect();
        let body = json!({"inputs": inputs.iter().map(|(_, v)| v.clone()).collect::<Vec<_>>()});
        let v = self.call(Method::POST, path, Some(&body)).await?;
        let index_of = |trace: Option<&str>, id: Option<&str>| {
            trace
                .and_then(|t| t.parse::<usize>().ok())
                .filter(|i| inputs.iter().any(|(j, _)| j == i))
                .or_else(|| id.and_then(|id| keys.get(&id.to_ascii_lowercase()).copied()))
        };
        for e in v["errors"].as_array().into_iter().flatten() {
            let category = e["category"].as_str().unwrap_or("error");
            let message = e["message"].as_str().unwrap_or("").to_string();
            let outcome = match (category, e["status"].as_str()) {
                ("OBJECT_NOT_FOUND", _) => Outcome::failed("not_found", message),
                ("RATE_LIMITS", _) => Outcome::retry(category, message),
                (_, Some(s)) if s.starts_with('5') => Outcome::retry(category, message),
                _ => Outcome::failed(category, message),
            };
            let mut traces: Vec<Option<&str>> = vec![e["objectWriteTraceId"].as_str()];
            traces.extend(
                e.pointer("/context/objectWriteTraceId")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .map(Value::as_str),
            );
            let ids: Vec<&str> = e
                .pointer("/context/ids")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            for t in traces.into_iter().flatten() {
                if let Some(i) = index_of(Some(t), None) {
                    out.insert(i, Err(outcome.clone()));
                }
            }
            for id in ids {
                if let Some(i) = index_of(None, Some(id)) {
                    out.insert(i, Err(outcome.clone()));
                }
            }
        }
        for r in v["results"].as_array().into_iter().flatten() {
            let id = r["id"].as_str().unwrap_or("").to_string();
            let email = r.pointer("/properties/email").and_then(Value::as_str);
            let domain = r.pointer("/properties/domain").and_then(Value::as_str);
            if let Some(i) = index_of(r["objectWriteTraceId"].as_str(), email.or(domain)) {
                out.entry(i).or_insert(Ok(id));
            }
        }
        // Inputs the answer names in neither list were written (a 200 need not echo them).
        for (i, _) in &inputs {
            out.entry(*i).or_insert(Ok(String::new()));
        }
        Ok(out)
    }
}

#[async_trait::async_trait]
impl Writer for HubspotWriter {
    fn batch_size(&self) -> usize {
        BATCH
    }

    async fn check(&self) -> Result<Vec<FieldProblem>, CrmError> {
        let contacts = self.properties("contacts").await?;
        let companies = match &self.config.fields.propensity {
            Some(_) => Some(self.properties("companies").await?),
            None => None,
        };
        Ok(missing_fields(
            &self.config.fields,
            "contacts",
            &contacts,
            "companies",
            companies.as_ref(),
        ))
    }

    async fn create_fields(&self) -> Result<Vec<String>, CrmError> {
        let f = &self.config.fields;
        let mut wanted = vec![
            ("contacts", &f.score, "TrailSpark Score", "string", "text"),
            (
                "contacts",
                &f.reasoning,
                "TrailSpark Reasoning",
                "string",
                "textarea",
            ),
            (
                "contacts",
                &f.evaluated_at,
                "TrailSpark Evaluation Date",
                "datetime",
                "date",
            ),
        ];
        if let Some(p) = &f.propensity {
            wanted.push(("companies", p, "TrailSpark Propensity", "string", "text"));
        }
        let mut created = Vec::new();
        for (object, name, label, ty, field_type) in wanted {
            let body = json!({"name": name, "label": label, "type": ty, "fieldType": field_type,
                              "groupName": format!("{}information", &object[..object.len() - 1]),
                              "description": "Written by trailspark's destination."});
            let oauth = self.auth.oauth();
            let a = self
                .auth
                .request(
                    Method::POST,
                    &format!("/crm/v3/properties/{object}"),
                    Some(&body),
                    None,
                    |a| match a.status {
                        409 => trailspark_crm::client::Verdict::Done,
                        _ => classify(a, oauth),
                    },
                )
                .await?;
            if a.status != 409 {
                created.push(format!("{object}.{name}"));
            }
        }
        Ok(created)
    }

    async fn write(&self, batch: &[Delivery]) -> Result<Vec<Outcome>, CrmError> {
        let f = &self.config.fields;
        let date_ty = self.types().await?.get(&f.evaluated_at).cloned();
        let mut update = Vec::new();
        let mut upsert = Vec::new();
        for (i, d) in batch.iter().enumerate() {
            let when = match date_ty.as_deref() {
                Some("date") => midnight(d.evaluated_at),
                _ => d.evaluated_at,
            };
            let mut props = json!({
                &f.score: d.score.as_str(),
                &f.reasoning: d.reasoning,
                &f.evaluated_at: when.to_string(),
            });
            if d.create {
                props["email"] = json!(d.email);
                if let Some(n) = &d.first_name {
                    props["firstname"] = json!(n);
                }
                if let Some(n) = &d.last_name {
                    props["lastname"] = json!(n);
                }
            }
            let input = json!({"id": d.email, "idProperty": "email",
                               "objectWriteTraceId": i.to_string(), "properties": props});
            if d.create {
                upsert.push((i, input));
            } else {
                update.push((i, input));
            }
        }
        let mut results = self
            .batch("/crm/v3/objects/contacts/batch/update", update)
            .await?;
        results.extend(
            self.batch("/crm/v3/objects/contacts/batch/upsert", upsert)
                .await?,
        );
        // Propensity on the companies of the contacts written, by domain.
        let mut written: HashMap<usize, bool> = HashMap::new();
        if let Some(field) = &f.propensity {
            let mut by_domain: BTreeMap<String, (String, Vec<usize>)> = BTreeMap::new();
            for (i, d) in batch.iter().enumerate() {
                if !matches!(results.get(&i), Some(Ok(_))) {
                    continue;
                }
                if let (Some(domain), Some(p)) =
                    (&d.domain, propensity_text(self.config.integration.kind, d))
                {
                    let e = by_domain.entry(domain.to_ascii_lowercase()).or_default();
                    e.0 = p;
                    e.1.push(i);
                }
            }
            let inputs: Vec<(usize, Value)> = by_domain
                .iter()
                .enumerate()
                .map(|(n, (domain, (p, _)))| {
                    (
                        n,
                        json!({"id": domain, "idProperty": "domain",
                               "objectWriteTraceId": n.to_string(), "properties": {field: p}}),
                    )
                })
                .collect();
            let companies = self
                .batch("/crm/v3/objects/companies/batch/update", inputs)
                .await?;
            for (n, (_, (_, members))) in by_domain.iter().enumerate() {
                let ok = matches!(companies.get(&n), Some(Ok(_)));
                for i in members {
                    written.insert(*i, ok);
                }
            }
        }
        Ok((0..batch.len())
            .map(|i| match results.remove(&i) {
                Some(Ok(id)) => Outcome::Delivered {
                    object: "contacts".into(),
                    record_id: id,
                    created: batch[i].create,
                    propensity_written: written.get(&i).copied().unwrap_or(false),
                },
                Some(Err(o)) => o,
                None => Outcome::retry("no_result", "the CRM answered no result"),
            })
            .collect())
    }

    fn rotated(&self) -> Option<String> {
        self.auth.rotated()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn midnight_is_the_utc_day() {
        assert_eq!(super::midnight(86_400_000 * 3 + 5), 86_400_000 * 3);
        assert_eq!(super::midnight(86_400_000 * 3), 86_400_000 * 3);
    }
}
