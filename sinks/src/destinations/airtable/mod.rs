//! Airtable: contacts written with `PATCH /v0/{base}/{table}` (at most 10 records), with
//! `performUpsert` merging on the contacts' email field and `typecast` on, under the
//! documented 5 requests a second per base (a `429` holds the base 30 s).
//!
//! An upsert creates what it does not find, so when creation is off the writer first
//! looks the emails up (`filterByFormula`, cached per email) and upserts only the records
//! that exist, merging on the email as the table holds it. Propensity goes to the
//! Companies table's record that a sync linked to the lead's account.

use std::collections::HashMap;
use std::sync::Mutex;

use reqwest::Method;
use serde_json::{json, Value};
use trailspark_core::crm::{CrmObject, StdField};
use trailspark_crm::airtable::{classify, scope, PER_BASE_PER_SEC};
use trailspark_crm::client::{Answer, CrmHttp};
use trailspark_crm::{name_types, CrmError, FieldProblem};

use super::{iso_time, missing_fields, propensity_text, Delivery, Outcome, Writer, WriterConfig};

/// Records per request.
pub const BATCH: usize = 10;

pub struct AirtableWriter {
    config: WriterConfig,
    http: CrmHttp,
    token: String,
    base: String,
    scope: String,
    /// Email (lowercase) → the email as the table holds it.
    found: Mutex<HashMap<String, String>>,
}

/// A text as an Airtable formula string literal.
fn formula_text(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

impl AirtableWriter {
    pub fn new(config: WriterConfig, http: CrmHttp) -> Result<AirtableWriter, CrmError> {
        let (token, base) = trailspark_crm::airtable::token_and_base(&config.integration)?;
        Ok(AirtableWriter {
            scope: scope(&base),
            config,
            http,
            token,
            base,
            found: Mutex::new(HashMap::new()),
        })
    }

    fn table(&self, object: CrmObject) -> &str {
        let role = object.native(self.config.integration.kind);
        self.config.integration.settings[&format!("tables.{role}")].as_str()
    }

    /// The contacts' email field, as the integration maps it.
    fn email_field(&self) -> String {
        self.config
            .integration
            .mapping
            .std_fields_of(CrmObject::Contact)
            .into_iter()
            .find(|(f, _)| *f == StdField::Email)
            .map_or_else(|| "Email".to_string(), |(_, name)| name.to_string())
    }

    fn url(&self, path: &str) -> String {
        format!(
            "{}{path}",
            self.config.integration.api_base_url.trim_end_matches('/')
        )
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Answer, CrmError> {
        let url = self.url(path);
        self.http
            .call(
                Some((&self.scope, PER_BASE_PER_SEC)),
                |_| {
                    let mut req = self
                        .http
                        .client()
                        .request(method.clone(), &url)
                        .bearer_auth(&self.token);
                    if let Some(b) = body {
                        req = req.json(b);
                    }
                    self.http.send(req)
                },
                classify,
            )
            .await
    }

    fn table_path(&self, object: CrmObject) -> String {
        let t: String =
            form_urlencoded::byte_serialize(self.table(object).as_bytes()).collect::<String>();
        format!("/v0/{}/{}", self.base, t.replace('+', "%20"))
    }

    /// Looks up the emails not in the cache (creation off).
    async fn lookup(&self, emails: &[String]) -> Result<(), CrmError> {
        let wanted: Vec<&String> = {
            let found = self.found.lock().unwrap();
            emails.iter().filter(|e| !found.contains_key(*e)).collect()
        };
        if wanted.is_empty() {
            return Ok(());
        }
        let field = self.email_field();
        let formula = format!(
            "OR({})",
            wanted
                .iter()
                .map(|e| format!("LOWER({{{field}}})={}", formula_text(e)))
                .collect::<Vec<_>>()
                .join(",")
        );
        let mut offset: Option<String> = None;
        loop {
            let mut q: Vec<(&str, String)> = vec![
                ("filterByFormula", formula.clone()),
                ("fields[]", field.clone()),
                ("pageSize", "100".into()),
            ];
            if let Some(o) = &offset {
                q.push(("offset", o.clone()));
            }
            let qs: String = form_urlencoded::Serializer::new(String::new())
                .extend_pairs(q)
                .finish();
            let v = self
                .call(
                    Method::GET,
                    &format!("{}?{qs}", self.table_path(CrmObject::Contact)),
                    None,
                )
                .await?
                .json()?;
            let mut found = self.found.lock().unwrap();
            for r in v["records"].as_array().into_iter().flatten() {
                if let Some(e) = r["fields"].get(&field).and_then(Value::as_str) {
                    found.insert(e.to_ascii_lowercase(), e.to_string());
                }
            }
            drop(found);
            match v["offset"].as_str() {
                Some(o) => offset = Some(o.to_string()),
                None => return Ok(()),
            }
        }
    }
}

#[async_trait::async_trait]
impl Writer for AirtableWriter {
    fn batch_size(&self) -> usize {
        BATCH
    }

    async fn check(&self) -> Result<Vec<FieldProblem>, CrmError> {
        let v = self
            .call(
                Method::GET,
                &format!("/v0/meta/bases/{}/tables", self.base),
                None,
            )
            .await?
            .json()?;
        let tables = v["tables"].as_array().cloned().unwrap_or_default();
        let fields_of = |object: CrmObject| {
            let name = self.table(object);
            tables
                .iter()
                .find(|t| t["name"].as_str() == Some(name) || t["id"].as_str() == Some(name))
                .map(|t| name_types(t.get("fields")))
        };
        let Some(contacts) = fields_of(CrmObject::Contact) else {
            return Ok(vec![FieldProblem {
                object: self.table(CrmObject::Contact).to_string(),
                field: String::new(),
                problem: "missing",
                expected: Some("object"),
                found: None,
            }]);
        };
        let companies = self
            .config
            .fields
            .propensity
            .as_ref()
            .map(|_| fields_of(CrmObject::Account).unwrap_or_default());
        Ok(missing_fields(
            &self.config.fields,
            self.table(CrmObject::Contact),
            &contacts,
            self.table(CrmObject::Account),
            companies.as_ref(),
        ))
    }

    async fn write(&self, batch: &[Delivery]) -> Result<Vec<Outcome>, CrmError> {
        let f = &self.config.fields;
        let email_field = self.email_field();
        let lookups: Vec<String> = batch
            .iter()
            .filter(|d| !d.create)
            .map(|d| d.email.to_ascii_lowercase())
            .collect();
        self.lookup(&lookups).await?;
        let mut outcomes: Vec<Option<Outcome>> = vec![None; batch.len()];
        let mut sent: Vec<(usize, Value)> = Vec::new();
        {
            let found = self.found.lock().unwrap();
            for (i, d) in batch.iter().enumerate() {
                let email = match found.get(&d.email.to_ascii_lowercase()) {
                    Some(stored) => stored.clone(),
                    None if d.create => d.email.clone(),
                    None => {
                        outcomes[i] = Some(Outcome::failed(
                            "not_found",
                            "no contact has this email, and record creation is off",
                        ));
                        continue;
                    }
                };
                let fields = json!({
                    &email_field: email,
                    &f.score: d.score.as_str(),
                    &f.reasoning: d.reasoning,
                    &f.evaluated_at: iso_time(d.evaluated_at),
                });
                sent.push((i, json!({"fields": fields})));
            }
        }
        if !sent.is_empty() {
            let body = json!({
                "performUpsert": {"fieldsToMergeOn": [email_field]},
                "typecast": true,
                "records": sent.iter().map(|(_, r)| r.clone()).collect::<Vec<_>>(),
            });
            let v = self
                .call(
                    Method::PATCH,
                    &self.table_path(CrmObject::Contact),
                    Some(&body),
                )
                .await?
                .json()?;
            let created: Vec<&str> = v["createdRecords"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let records = v["records"].as_array().cloned().unwrap_or_default();
            for ((i, _), r) in sent
                .iter()
                .zip(records.iter().map(Some).chain(std::iter::repeat(None)))
            {
                outcomes[*i] = Some(match r.and_then(|r| r["id"].as_str()) {
                    Some(id) => {
                        self.found.lock().unwrap().insert(
                            batch[*i].email.to_ascii_lowercase(),
                            r.and_then(|r| r["fields"].get(&email_field))
                                .and_then(Value::as_str)
                                .unwrap_or(&batch[*i].email)
                                .to_string(),
                        );
                        Outcome::Delivered {
                            object: self.table(CrmObject::Contact).to_string(),
                            record_id: id.to_string(),
                            created: created.contains(&id),
                            propensity_written: false,
                        }
                    }
                    None => Outcome::retry("no_result", "the CRM answered no record"),
                });
            }
        }
        // Propensity on the linked Companies records (the batch's latest value per record).
        if let Some(field) = &f.propensity {
            let mut by_record: Vec<(String, String, Vec<usize>)> = Vec::new();
            for (i, d) in batch.iter().enumerate() {
                if !matches!(outcomes[i], Some(Outcome::Delivered { .. })) {
                    continue;
                }
                if let (Some(rec), Some(p)) = (
                    &d.account_record,
                    propensity_text(self.config.integration.kind, d),
                ) {
                    match by_record.iter_mut().find(|(r, _, _)| r == rec) {
                        Some(e) => {
                            e.1 = p;
                            e.2.push(i);
                        }
                        None => by_record.push((rec.clone(), p, vec![i])),
                    }
                }
            }
            for chunk in by_record.chunks(BATCH) {
                let body = json!({"typecast": true, "records": chunk.iter()
                    .map(|(rec, p, _)| json!({"id": rec, "fields": {field: p}}))
                    .collect::<Vec<_>>()});
                match self
                    .call(
                        Method::PATCH,
                        &self.table_path(CrmObject::Account),
                        Some(&body),
                    )
                    .await
                {
                    Ok(_) => {
                        for i in chunk.iter().flat_map(|(_, _, m)| m) {
                            if let Some(Outcome::Delivered {
                                propensity_written, ..
                            }) = &mut outcomes[*i]
                            {
                                *propensity_written = true;
                            }
                        }
                    }
                    Err(CrmError::Refused { message, .. }) => {
                        tracing::info!(%message, "Airtable refused a company's propensity.");
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Outcome::retry("no_result", "the CRM answered no result")))
            .collect())
    }
}
