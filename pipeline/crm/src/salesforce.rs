//! Salesforce's session and error classes.
//!
//! A refresh token is exchanged at the login host (production, sandbox or My Domain) for an
//! access token and the `instance_url` every call then goes to. Errors are a JSON array of
//! `{message, errorCode, fields}`: `401 INVALID_SESSION_ID` refreshes the token once per
//! request, `403 REQUEST_LIMIT_EXCEEDED` (the org's daily allocation) is a rate limit that
//! stops the work until later, `UNABLE_TO_LOCK_ROW` and `SERVER_UNAVAILABLE` are retried,
//! and `invalid_grant` disconnects.

use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;

use crate::client::{Answer, CrmHttp, Verdict};
use crate::oauth::token_request;
use crate::{credential, CrmError};

/// The REST API version called.
pub const API_VERSION: &str = "v62.0";

/// A live access token and the instance it is for.
#[derive(Clone, Debug)]
pub struct Session {
    pub access_token: String,
    pub instance_url: String,
}

/// One integration's Salesforce credentials, refreshed as needed. Shared by the reader and
/// the writer of an integration.
pub struct SalesforceAuth {
    http: CrmHttp,
    login: String,
    client_id: String,
    client_secret: Option<String>,
    credentials: Value,
    refresh_token: Mutex<String>,
    session: tokio::sync::Mutex<Option<Session>>,
    rotated: Mutex<Option<String>>,
}

/// The first error of a Salesforce error array, as `(errorCode, message)`.
pub fn first_error(body: &[u8]) -> (String, String) {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let e = v.get(0).unwrap_or(&v);
    let code = e.get("errorCode").and_then(Value::as_str).unwrap_or("");
    let msg = e.get("message").and_then(Value::as_str).unwrap_or("");
    (code.to_string(), msg.to_string())
}

/// Whether an error (code and message) is one Salesforce says to try again: a locked row.
pub fn retryable(code: &str, message: &str) -> bool {
    code == "UNABLE_TO_LOCK_ROW"
        || (code == "CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY"
            && message.contains("UNABLE_TO_LOCK_ROW"))
        || code == "SERVER_UNAVAILABLE"
}

/// How an answer of the REST API is handled.
pub fn classify(a: &Answer) -> Verdict {
    match a.status {
        200..=299 => Verdict::Done,
        401 => Verdict::Refresh,
        500 | 502 | 503 | 504 => Verdict::Retry(Duration::from_millis(500)),
        _ => {
            let (code, message) = first_error(&a.body);
            match code.as_str() {
                "REQUEST_LIMIT_EXCEEDED" => Verdict::Fail(CrmError::RateLimited(message)),
                _ if retryable(&code, &message) => Verdict::Retry(Duration::from_millis(500)),
                _ => Verdict::Fail(CrmError::Refused {
                    status: a.status,
                    message: format!("{code}: {message}"),
                }),
            }
        }
    }
}

/// A text as a SOQL string literal's content.
pub fn soql_text(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\'', "\\'")
}

impl SalesforceAuth {
    /// `login` is the token host; `credentials` hold `client_id`, `refresh_token` and
    /// optionally `client_secret`.
    pub fn new(
        http: CrmHttp,
        login: &str,
        credentials: &Value,
    ) -> Result<SalesforceAuth, CrmError> {
        Ok(SalesforceAuth {
            client_id: credential(credentials, "client_id")?,
            refresh_token: Mutex::new(credential(credentials, "refresh_token")?),
            client_secret: credential(credentials, "client_secret").ok(),
            login: login.trim_end_matches('/').to_string(),
            credentials: credentials.clone(),
            session: tokio::sync::Mutex::new(None),
            rotated: Mutex::new(None),
            http,
        })
    }

    pub fn http(&self) -> &CrmHttp {
        &self.http
    }

    /// The current session, refreshed when `fresh` or when there is none.
    pub async fn session(&self, fresh: bool) -> Result<Session, CrmError> {
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
            let mut creds = self.credentials.clone();
            creds["refresh_token"] = Value::String(new);
            *self.rotated.lock().unwrap() = Some(creds.to_string());
        }
        *s = Some(session.clone());
        Ok(session)
    }

    /// Sends `method path` (below the instance, or a full URL path the API gave) with an
    /// optional JSON body, refreshing the session once on a 401; `classify` judges answers.
    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        classify: impl Fn(&Answer) -> Verdict,
    ) -> Result<Answer, CrmError> {
        self.http
            .call(
                None,
                |fresh| {
                    let method = method.clone();
                    async move {
                        let s = self.session(fresh).await?;
                        let mut req = self
                            .http
                            .client()
                            .request(method, format!("{}{path}", s.instance_url))
                            .bearer_auth(&s.access_token);
                        if let Some(b) = body {
                            req = req.json(b);
                        }
                        self.http.send(req).await
                    }
                },
                classify,
            )
            .await
    }

    /// GETs `path` (below the instance) as JSON.
    pub async fn get(&self, path: &str) -> Result<Value, CrmError> {
        self.request(reqwest::Method::GET, path, None, classify)
            .await?
            .json()
    }

    /// New credentials to store, when a refresh rotated the refresh token (taken once).
    pub fn rotated(&self) -> Option<String> {
        self.rotated.lock().unwrap().take()
    }
}
