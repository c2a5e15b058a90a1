//! Salesforce: a refresh token exchanged at the login host (production, sandbox or My
//! Domain) for an access token and the `instance_url` every call then goes to; SOQL pulls
//! in `SystemModstamp` order, paged through `nextRecordsUrl`; fields checked against
//! `sobjects/{Object}/describe`.
//!
//! Errors are a JSON array of `{message, errorCode, fields}`. `401 INVALID_SESSION_ID`
//! refreshes the token once per request; `403 REQUEST_LIMIT_EXCEEDED` (the org's daily
//! allocation) stops the sync until the next one; `invalid_grant` disconnects.

use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;
use trailspark_core::crm::{CrmObject, CrmRecord};

use super::client::{Answer, CrmHttp, Verdict};
use super::oauth::token_request;
use super::{
    credential, field_problems, name_types, objects_of, standard, text_of, Connector,
    ConnectorConfig, CrmError, Described, FieldProblem, Page, Pull,
};

/// The REST API version called.
pub const API_VERSION: &str = "v62.0";

#[derive(Clone)]
struct Session {
    access_token: String,
    instance_url: String,
}

pub struct Salesforce {
    config: ConnectorConfig,
    http: CrmHttp,
    login: String,
    client_id: String,
    client_secret: Option<String>,
    refresh_token: Mutex<String>,
    session: tokio::sync::Mutex<Option<Session>>,
    rotated: Mutex<Option<String>>,
}

/// The first error of a Salesforce error array, as `(errorCode, message)`.
fn first_error(a: &Answer) -> (String, String) {
    let v: Value = serde_json::from_slice(&a.body).unwrap_or(Value::Null);
    let e = v.get(0).unwrap_or(&v);
    let code = e.get("errorCode").and_then(Value::as_str).unwrap_or("");
    let msg = e.get("message").and_then(Value::as_str).unwrap_or("");
    (code.to_string(), msg.to_string())
}

fn classify(a: &Answer) -> Verdict {
    match a.status {
        200..=299 => Verdict::Done,
        401 => Verdict::Refresh,
        500 | 502 | 503 | 504 => Verdict::Retry(Duration::from_millis(500)),
        _ => {
            let (code, message) = first_error(a);
            match code.as_str() {
                "REQUEST_LIMIT_EXCEEDED" => Verdict::Fail(CrmError::RateLimited(message)),
                "CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY"
                    if message.contains("UNABLE_TO_LOCK_ROW") =>
                {
                    Verdict::Retry(Duration::from_millis(500))
                }
                _ => Verdict::Fail(CrmError::Refused {
                    status: a.status,
                    message: format!("{code}: {message}"),
                }),
            }
        }
    }
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

fn soql_text(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\'', "\\'")
}

impl Salesforce {
    pub fn new(config: ConnectorConfig, http: CrmHttp) -> Result<Salesforce, CrmError> {
        let client_id = credential(&config, "client_id")?;
        let refresh_token = credential(&config, "refresh_token")?;
        let client_secret = credential(&config, "client_secret").ok();
        let login = config
            .login_url
            .clone()
            .unwrap_or_else(|| config.api_base_url.clone());
        Ok(Salesforce {
            login: login.trim_end_matches('/').to_string(),
            client_id,
            client_secret,
            refresh_token: Mutex::new(refresh_token),
            session: tokio::sync::Mutex::new(None),
            rotated: Mutex::new(None),
            config,
            http,
        })
    }

    /// The current session, refreshed when `fresh` or when there is none.
    async fn session(&self, fresh: bool) -> Result<Session, CrmError> {
        let mut s = self.session.lock().await;
        if let (false, Some(s)) = (fresh, s.as_ref()) {
            return Ok(s.clone());
        }
        let refresh = self.refresh_token.lock().unwrap().clone();
        let url = format!("{}/services/oauth2/token", self.login);
        let mut form = vec![
            ("grant_type", "refresh_token".to_string()),
            ("refresh_token", refresh.clone()),
            ("client_id", self.client_id.clone()),
            ("format", "json".to_string()),
        ];
        if let Some(secret) = &self.client_secret {
            form.push(("client_secret", secret.clone()));
        }
        let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let v = token_request(&self.http, &url, &form, |e| {
            CrmError::Disconnected(format!("the token refresh failed: {e}"))
        })
        .await?;
        let field = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let session = Session {
            access_token: field("access_token")
                .ok_or_else(|| CrmError::Invalid("the token answer has no access_token".into()))?,
            instance_url: field("instance_url")
                .ok_or_else(|| CrmError::Invalid("the token answer has no instance_url".into()))?
                .trim_end_matches('/')
                .to_string(),
        };
        // Refresh-token rotation: the old token is now invalid, so the new one must be kept.
        if let Some(new) = field("refresh_token").filter(|t| *t != refresh) {
            *self.refresh_token.lock().unwrap() = new.clone();
            let mut creds = self.config.credentials.clone();
            creds["refresh_token"] = Value::String(new);
            *self.rotated.lock().unwrap() = Some(creds.to_string());
        }
        *s = Some(session.clone());
        Ok(session)
    }

    /// GETs `path` (below the instance) as JSON.
    async fn get(&self, path: &str) -> Result<Value, CrmError> {
        let a = self
            .http
            .call(
                None,
                |fresh| async move {
                    let s = self.session(fresh).await?;
                    let req = self
                        .http
                        .client()
                        .get(format!("{}{path}", s.instance_url))
                        .bearer_auth(&s.access_token);
                    self.http.send(req).await
                },
                classify,
            )
            .await?;
        a.json()
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
        self.session(true).await?;
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
        self.rotated.lock().unwrap().take()
    }
}
