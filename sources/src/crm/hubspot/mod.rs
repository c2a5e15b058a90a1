//! HubSpot: a private-app token, or OAuth (a refresh token exchanged for access tokens that
//! live 30 minutes, refreshed before `expires_in` runs out, and once more on a 401); changes
//! pulled through the CRM search API on the object's
//! last-modified property, ascending, paged by `after`, under the search limit of 4
//! requests a second per token; fields checked against `GET /crm/v3/properties/{type}`.
//!
//! A `429` names its policy: `TEN_SECONDLY_ROLLING` waits out the window the
//! `X-HubSpot-RateLimit-Interval-Milliseconds` header gives (10 s without it), the search
//! API's secondly limit waits a second, and `DAILY` stops the sync until the next one.

use std::time::Duration;

use serde_json::{json, Value};
use trailspark_core::crm::{CrmObject, CrmRecord};

use super::client::{Answer, CrmHttp, Verdict};
use super::oauth::token_request;
use super::{
    credential, field_problems, name_types, objects_of, standard, text_of, Connector,
    ConnectorConfig, CrmError, Described, FieldProblem, Page, Pull,
};

/// 90% of CRM search's documented 4 requests a second per token: requests sent exactly
/// 250 ms apart can arrive closer, and the limit counts arrivals.
pub const SEARCH_PER_SEC: f64 = 3.6;
/// Other calls: 100 requests per 10 s, the lowest of the documented per-app limits.
pub const CALLS_PER_SEC: f64 = 10.0;
/// Records per search page (the API's maximum is 200).
pub const PAGE: usize = 100;
/// How many results one search can page through.
pub const SEARCH_CAP: usize = 10_000;

pub struct Hubspot {
    config: ConnectorConfig,
    http: CrmHttp,
    auth: Auth,
    scope: String,
}

/// How calls are authorized.
enum Auth {
    Static(String),
    OAuth {
        client_id: String,
        client_secret: String,
        refresh_token: std::sync::Mutex<String>,
        /// The access token and when to refresh it.
        access: tokio::sync::Mutex<Option<(String, tokio::time::Instant)>>,
        rotated: std::sync::Mutex<Option<String>>,
    },
}

fn classify(a: &Answer, oauth: bool) -> Verdict {
    let v: Value = serde_json::from_slice(&a.body).unwrap_or(Value::Null);
    let message = v
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    match a.status {
        200..=299 => Verdict::Done,
        429 => match v.get("policyName").and_then(Value::as_str) {
            Some("DAILY") => Verdict::Fail(CrmError::RateLimited(message)),
            Some("TEN_SECONDLY_ROLLING") => Verdict::Retry(
                a.header("x-hubspot-ratelimit-interval-milliseconds")
                    .and_then(|s| s.parse().ok())
                    .map(Duration::from_millis)
                    .unwrap_or(Duration::from_secs(10)),
            ),
            _ => Verdict::Retry(Duration::from_secs(1)),
        },
        401 if oauth => Verdict::Refresh,
        401 => Verdict::Fail(CrmError::Disconnected(format!(
            "HubSpot refused the token: {message}"
        ))),
        500..=599 => Verdict::Retry(Duration::from_millis(200)),
        s => Verdict::Fail(CrmError::Refused {
            status: s,
            message: format!(
                "{}: {message}",
                v.get("category").and_then(Value::as_str).unwrap_or("error")
            ),
        }),
    }
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
        let (auth, key) = match credential(&config, "private_app_token") {
            Ok(token) => {
                let key = token.clone();
                (Auth::Static(token), key)
            }
            Err(_) => {
                let refresh = credential(&config, "refresh_token").map_err(|_| {
                    CrmError::Invalid(
                        "credentials need `private_app_token`, or OAuth's `client_id`, \
                         `client_secret` and `refresh_token`"
                            .into(),
                    )
                })?;
                (
                    Auth::OAuth {
                        client_id: credential(&config, "client_id")?,
                        client_secret: credential(&config, "client_secret")?,
                        refresh_token: std::sync::Mutex::new(refresh.clone()),
                        access: tokio::sync::Mutex::new(None),
                        rotated: std::sync::Mutex::new(None),
                    },
                    refresh,
                )
            }
        };
        let scope = format!("hubspot:{}", trailspark_core::secret::hash(&key));
        Ok(Hubspot {
            config,
            http,
            auth,
            scope,
        })
    }

    fn oauth(&self) -> bool {
        matches!(self.auth, Auth::OAuth { .. })
    }

    /// The bearer token: the private app's, or a live OAuth access token (refreshed when
    /// `fresh`, or when it is within a minute of its `expires_in`).
    async fn token(&self, fresh: bool) -> Result<String, CrmError> {
        let (client_id, client_secret, refresh_token, access, rotated) = match &self.auth {
            Auth::Static(t) => return Ok(t.clone()),
            Auth::OAuth {
                client_id,
                client_secret,
                refresh_token,
                access,
                rotated,
            } => (client_id, client_secret, refresh_token, access, rotated),
        };
        let mut access = access.lock().await;
        let now = tokio::time::Instant::now();
        if let (false, Some((t, until))) = (fresh, access.as_ref()) {
            if now < *until {
                return Ok(t.clone());
            }
        }
        let refresh = refresh_token.lock().unwrap().clone();
        let url = self.url("/oauth/v1/token");
        let form = [
            ("grant_type", "refresh_token"),
            ("client_id", client_id.as_str()),
            ("client_secret", client_secret.as_str()),
            ("refresh_token", refresh.as_str()),
        ];
        let v = token_request(&self.http, &url, &form, |e| {
            CrmError::Disconnected(format!("the token refresh failed: {e}"))
        })
        .await?;
        let token = v
            .get("access_token")
            .and_then(Value::as_str)
            .ok_or_else(|| CrmError::Invalid("the token answer has no access_token".into()))?
            .to_string();
        let life = v.get("expires_in").and_then(Value::as_u64).unwrap_or(1800);
        let until = now + Duration::from_secs(life.saturating_sub(60).max(1));
        if let Some(new) = v
            .get("refresh_token")
            .and_then(Value::as_str)
            .filter(|t| *t != refresh)
        {
            *refresh_token.lock().unwrap() = new.to_string();
            let mut creds = self.config.credentials.clone();
            creds["refresh_token"] = Value::String(new.to_string());
            *rotated.lock().unwrap() = Some(creds.to_string());
        }
        *access = Some((token.clone(), until));
        Ok(token)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.config.api_base_url.trim_end_matches('/'))
    }

    async fn get(&self, path: &str) -> Result<Value, CrmError> {
        let url = &self.url(path);
        let a = self
            .http
            .call(
                Some((&self.scope, CALLS_PER_SEC)),
                |fresh| async move {
                    let t = self.token(fresh).await?;
                    self.http
                        .send(self.http.client().get(url).bearer_auth(t))
                        .await
                },
                |a| classify(a, self.oauth()),
            )
            .await?;
        a.json()
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
        match &self.auth {
            Auth::OAuth { rotated, .. } => rotated.lock().unwrap().take(),
            Auth::Static(_) => None,
        }
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
        let url = self.url(&format!(
            "/crm/v3/objects/{}/search",
            pull.object.native(self.config.kind)
        ));
        let body = self.search_body(pull);
        let search_scope = format!("{}:search", self.scope);
        let a = self
            .http
            .call(
                Some((&search_scope, SEARCH_PER_SEC)),
                |fresh| {
                    let (url, body) = (&url, &body);
                    async move {
                        let t = self.token(fresh).await?;
                        let req = self.http.client().post(url).bearer_auth(t).json(body);
                        self.http.send(req).await
                    }
                },
                |a| classify(a, self.oauth()),
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
