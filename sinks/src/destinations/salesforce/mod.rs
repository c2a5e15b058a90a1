//! Salesforce: people found by email with SOQL (Contacts before Leads, as the product
//! prefers a Contact when both match), cached per email; written with sObject Collections
//! (`PATCH composite/sobjects`, at most 200 records, `allOrNone: false`), whose 200 answer
//! carries one `SaveResult` per record, in order. Missing people become Leads when creation
//! is on (`POST composite/sobjects`). Propensity goes on the Contact's Account.
//!
//! Per record, `UNABLE_TO_LOCK_ROW` and `SERVER_UNAVAILABLE` are tried again; a record that
//! vanished (`ENTITY_IS_DELETED`) is looked up again next time; anything else is final.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use reqwest::Method;
use serde_json::{json, Value};
use trailspark_crm::client::CrmHttp;
use trailspark_crm::salesforce::{classify, retryable, soql_text, SalesforceAuth, API_VERSION};
use trailspark_crm::{name_types, CrmError, FieldProblem};

use super::{iso_time, missing_fields, propensity_text, Delivery, Outcome, Writer, WriterConfig};

/// sObject Collections' limit.
pub const BATCH: usize = 200;

#[derive(Clone, Debug)]
struct Found {
    object: &'static str,
    id: String,
    account_id: Option<String>,
}

pub struct SalesforceWriter {
    config: WriterConfig,
    auth: SalesforceAuth,
    /// Email (lowercase) → the record it matched.
    found: Mutex<HashMap<String, Found>>,
}

/// Codes that mean the cached record is gone: look it up again.
const GONE: [&str; 3] = [
    "ENTITY_IS_DELETED",
    "INVALID_CROSS_REFERENCE_KEY",
    "NOT_FOUND",
];

impl SalesforceWriter {
    pub fn new(config: WriterConfig, http: CrmHttp) -> Result<SalesforceWriter, CrmError> {
        Ok(SalesforceWriter {
            auth: SalesforceAuth::new(
                http,
                config.integration.login_host(),
                &config.integration.credentials,
            )?,
            config,
            found: Mutex::new(HashMap::new()),
        })
    }

    /// Runs a SOQL query, following its pages.
    async fn query(&self, soql: &str) -> Result<Vec<Value>, CrmError> {
        let q: String = form_urlencoded::byte_serialize(soql.as_bytes()).collect();
        let mut v = self
            .auth
            .get(&format!("/services/data/{API_VERSION}/query?q={q}"))
            .await?;
        let mut out = Vec::new();
        loop {
            out.extend(v["records"].as_array().cloned().unwrap_or_default());
            match v["nextRecordsUrl"].as_str() {
                Some(next) if v["done"] == false => v = self.auth.get(next).await?,
                _ => return Ok(out),
            }
        }
    }

    /// Looks up the emails not in the cache.
    async fn lookup(&self, batch: &[Delivery]) -> Result<(), CrmError> {
        let mut wanted: Vec<String> = {
            let found = self.found.lock().unwrap();
            batch
                .iter()
                .map(|d| d.email.to_ascii_lowercase())
                .filter(|e| !found.contains_key(e))
                .collect()
        };
        wanted.sort();
        wanted.dedup();
        if wanted.is_empty() {
            return Ok(());
        }
        let list = wanted
            .iter()
            .map(|e| format!("'{}'", soql_text(e)))
            .collect::<Vec<_>>()
            .join(", ");
        let mut hits: HashMap<String, Found> = HashMap::new();
        for r in self
            .query(&format!(
                "SELECT Id, Email FROM Lead WHERE Email IN ({list})"
            ))
            .await?
        {
            if let (Some(id), Some(email)) = (r["Id"].as_str(), r["Email"].as_str()) {
                hits.insert(
                    email.to_ascii_lowercase(),
                    Found {
                        object: "Lead",
                        id: id.to_string(),
                        account_id: None,
                    },
                );
            }
        }
        // Contacts second, so that a Contact wins over a Lead with the same email.
        for r in self
            .query(&format!(
                "SELECT Id, Email, AccountId FROM Contact WHERE Email IN ({list})"
            ))
            .await?
        {
            if let (Some(id), Some(email)) = (r["Id"].as_str(), r["Email"].as_str()) {
                hits.insert(
                    email.to_ascii_lowercase(),
                    Found {
                        object: "Contact",
                        id: id.to_string(),
                        account_id: r["AccountId"].as_str().map(str::to_string),
                    },
                );
            }
        }
        self.found.lock().unwrap().extend(hits);
        Ok(())
    }

    fn values(&self, d: &Delivery) -> serde_json::Map<String, Value> {
        let f = &self.config.fields;
        let mut m = serde_json::Map::new();
        m.insert(f.score.clone(), json!(d.score.as_str()));
        m.insert(f.reasoning.clone(), json!(d.reasoning));
        m.insert(f.evaluated_at.clone(), json!(iso_time(d.evaluated_at)));
        m
    }

    /// Sends records to `composite/sobjects` with `method`; the per-record save results.
    async fn collection(
        &self,
        method: Method,
        records: Vec<Value>,
    ) -> Result<Vec<Value>, CrmError> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let body = json!({"allOrNone": false, "records": records});
        let a = self
            .auth
            .request(
                method,
                &format!("/services/data/{API_VERSION}/composite/sobjects"),
                Some(&body),
                classify,
            )
            .await?;
        let v = a.json()?;
        let results = v.as_array().cloned().unwrap_or_default();
        if results.len() != records_len(&body) {
            return Err(CrmError::Refused {
                status: a.status,
                message: format!(
                    "expected {} save results, got {}",
                    records_len(&body),
                    results.len()
                ),
            });
        }
        Ok(results)
    }

    fn forget(&self, email: &str) {
        self.found
            .lock()
            .unwrap()
            .remove(&email.to_ascii_lowercase());
    }
}

fn records_len(body: &Value) -> usize {
    body["records"].as_array().map_or(0, Vec::len)
}

/// A save result as an outcome.
fn outcome_of(r: &Value, object: &str) -> Result<(String, String), Outcome> {
    if r["success"] == true {
        return Ok((
            object.to_string(),
            r["id"].as_str().unwrap_or("").to_string(),
        ));
    }
    let e = &r["errors"][0];
    let code = e["statusCode"].as_str().unwrap_or("UNKNOWN").to_string();
    let message = e["message"].as_str().unwrap_or("").to_string();
    if retryable(&code, &message) || GONE.contains(&code.as_str()) {
        Err(Outcome::retry(&code, message))
    } else {
        Err(Outcome::failed(&code, message))
    }
}

#[async_trait::async_trait]
impl Writer for SalesforceWriter {
    fn batch_size(&self) -> usize {
        BATCH
    }

    async fn check(&self) -> Result<Vec<FieldProblem>, CrmError> {
        let describe = |o: &str| {
            let path = format!("/services/data/{API_VERSION}/sobjects/{o}/describe");
            async move {
                let v = self.auth.get(&path).await?;
                Ok::<_, CrmError>(name_types(v.get("fields")))
            }
        };
        let account = match &self.config.fields.propensity {
            Some(_) => Some(describe("Account").await?),
            None => None,
        };
        let mut v = Vec::new();
        for o in ["Lead", "Contact"] {
            let fields = describe(o).await?;
            for p in missing_fields(&self.config.fields, o, &fields, "Account", account.as_ref()) {
                if !v.contains(&p) {
                    v.push(p);
                }
            }
        }
        Ok(v)
    }

    async fn write(&self, batch: &[Delivery]) -> Result<Vec<Outcome>, CrmError> {
        self.lookup(batch).await?;
        let found: Vec<Option<Found>> = {
            let f = self.found.lock().unwrap();
            batch
                .iter()
                .map(|d| f.get(&d.email.to_ascii_lowercase()).cloned())
                .collect()
        };
        let mut outcomes: Vec<Option<Outcome>> = vec![None; batch.len()];
        // Updates, Contacts before Leads (one chunk per type), and creations.
        let mut updates: Vec<(usize, Value)> = Vec::new();
        let mut creates: Vec<(usize, Value)> = Vec::new();
        for (i, (d, f)) in batch.iter().zip(&found).enumerate() {
            let mut rec = self.values(d);
            match f {
                Some(f) => {
                    rec.insert("attributes".into(), json!({"type": f.object}));
                    rec.insert("id".into(), json!(f.id));
                    updates.push((i, Value::Object(rec)));
                }
                None if d.create => {
                    rec.insert("attributes".into(), json!({"type": "Lead"}));
                    rec.insert("Email".into(), json!(d.email));
                    rec.insert(
                        "LastName".into(),
                        json!(d.last_name.as_deref().unwrap_or("[not provided]")),
                    );
                    if let Some(first) = &d.first_name {
                        rec.insert("FirstName".into(), json!(first));
                    }
                    let company = d
                        .company
                        .clone()
                        .or_else(|| d.domain.clone())
                        .unwrap_or_else(|| "[not provided]".into());
                    rec.insert("Company".into(), json!(company));
                    creates.push((i, Value::Object(rec)));
                }
                None => {
                    outcomes[i] = Some(Outcome::failed(
                        "not_found",
                        "no Contact or Lead has this email, and record creation is off",
                    ))
                }
            }
        }
        updates.sort_by_key(|(_, r)| r["attributes"]["type"] != "Contact");
        let (order, records): (Vec<usize>, Vec<Value>) = updates.into_iter().unzip();
        let results = self.collection(Method::PATCH, records).await?;
        let delivered = |object: String, record_id: String, created: bool| Outcome::Delivered {
            object,
            record_id,
            created,
            propensity_written: false,
        };
        for (i, r) in order.into_iter().zip(&results) {
            let object = found[i].as_ref().map_or("Lead", |f| f.object);
            outcomes[i] = Some(match outcome_of(r, object) {
                Ok((o, id)) => delivered(o, id, false),
                Err(out) => {
                    if matches!(&out, Outcome::Retry(e) if GONE.contains(&e.code.as_str())) {
                        self.forget(&batch[i].email);
                    }
                    out
                }
            });
        }
        let (order, records): (Vec<usize>, Vec<Value>) = creates.into_iter().unzip();
        let results = self.collection(Method::POST, records).await?;
        for (i, r) in order.into_iter().zip(&results) {
            outcomes[i] = Some(match outcome_of(r, "Lead") {
                Ok((o, id)) => {
                    self.found.lock().unwrap().insert(
                        batch[i].email.to_ascii_lowercase(),
                        Found {
                            object: "Lead",
                            id: id.clone(),
                            account_id: None,
                        },
                    );
                    delivered(o, id, true)
                }
                Err(out) => out,
            });
        }
        // Propensity on the Contacts' Accounts: the batch's latest value per account.
        if let Some(field) = &self.config.fields.propensity {
            let mut accounts: BTreeMap<String, (String, Vec<usize>)> = BTreeMap::new();
            for (i, o) in outcomes.iter().enumerate() {
                if !matches!(o, Some(Outcome::Delivered { .. })) {
                    continue;
                }
                let account = found[i].as_ref().and_then(|f| f.account_id.clone());
                if let (Some(a), Some(p)) = (
                    account,
                    propensity_text(self.config.integration.kind, &batch[i]),
                ) {
                    let e = accounts.entry(a).or_default();
                    e.0 = p;
                    e.1.push(i);
                }
            }
            let records: Vec<Value> = accounts
                .iter()
                .map(|(id, (p, _))| json!({"attributes": {"type": "Account"}, "id": id, field: p}))
                .collect();
            let results = self.collection(Method::PATCH, records).await?;
            for ((_, (_, members)), r) in accounts.iter().zip(&results) {
                if r["success"] != true {
                    tracing::info!(error = %r["errors"], "Salesforce refused an Account's propensity.");
                    continue;
                }
                for i in members {
                    if let Some(Outcome::Delivered {
                        propensity_written, ..
                    }) = &mut outcomes[*i]
                    {
                        *propensity_written = true;
                    }
                }
            }
        }
        Ok(outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Outcome::retry("no_result", "the CRM answered no result")))
            .collect())
    }

    fn rotated(&self) -> Option<String> {
        self.auth.rotated()
    }
}
