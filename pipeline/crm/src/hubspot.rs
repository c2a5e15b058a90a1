//! HubSpot's authorization and error classes.
//!
//! A private-app token, or OAuth: a refresh token exchanged for access tokens that live 30
//! minutes, refreshed before `expires_in` runs out, and once more on a 401. A `429` names
//! its policy: `TEN_SECONDLY_ROLLING` waits out the window the
//! `X-HubSpot-RateLimit-Interval-Milliseconds` header gives (10 s without it), the search
//! API's secondly limit waits a second, and `DAILY` is a rate limit that stops the work
//! until the limit resets.

use std::time::Duration;

use serde_json::Value;

use crate::client::{Answer, CrmHttp, Verdict};
use crate::oauth::token_request;
use crate::{credential, CrmError};

/// Calls other than search: 90% of 100 requests per 10 s, the lowest of the documented
/// per-app limits (requests sent exactly at the limit's spacing can arrive closer, and the
/// limit counts arrivals).
pub const CALLS_PER_SEC: f64 = 9.0;

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

/// One integration's HubSpot credentials and the scope its requests are paced under (one
/// per token: HubSpot's limits are per app and account).
pub struct HubspotAuth {
    http: CrmHttp,
    base: String,
    credentials: Value,
    auth: Auth,
    scope: String,
}

/// How an answer is handled; `oauth` when a 401 may be cured by a refresh.
pub fn classify(a: &Answer, oauth: bool) -> Verdict {
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

impl HubspotAuth {
    /// `credentials` hold `private_app_token`, or OAuth's `client_id`, `client_secret` and
    /// `refresh_token`; `base` is the API's base URL.
    pub fn new(http: CrmHttp, base: &str, credentials: &Value) -> Result<HubspotAuth, CrmError> {
        let (auth, key) = match credential(credentials, "private_app_token") {
            Ok(token) => {
                let key = token.clone();
                (Auth::Static(token), key)
            }
            Err(_) => {
                let refresh = credential(credentials, "refresh_token").map_err(|_| {
                    CrmError::Invalid(
                        "credentials need `private_app_token`, or OAuth's `client_id`, \
                         `client_secret` and `refresh_token`"
                            .into(),
                    )
                })?;
                (
                    Auth::OAuth {
                        client_id: credential(credentials, "client_id")?,
                        client_secret: credential(credentials, "client_secret")?,
                        refresh_token: std::sync::Mutex::new(refresh.clone()),
                        access: tokio::sync::Mutex::new(None),
                        rotated: std::sync::Mutex::new(None),
                    },
                    refresh,
                )
            }
        };
        Ok(HubspotAuth {
            scope: format!("hubspot:{}", trailspark_core::secret::hash(&key)),
            base: base.trim_end_matches('/').to_string(),
            credentials: credentials.clone(),
            auth,
            http,
        })
    }

    pub fn http(&self) -> &CrmHttp {
        &self.http
    }

    /// The pacing scope of this token's requests.
    pub fn scope(&self) -> &str {
        &self.scope
    }

    pub fn oauth(&self) -> bool {
        matches!(self.auth, Auth::OAuth { .. })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The bearer token: the private app's, or a live OAuth access token (refreshed when
    /// `fresh`, or when it is within a minute of its `expires_in`).
    pub async fn token(&self, fresh: bool) -> Result<String, CrmError> {
        let Auth::OAuth {
            client_id,
            client_secret,
            refresh_token,
            access,
            rotated,
        } = &self.auth
        else {
            let Auth::Static(t) = &self.auth else {
                unreachable!()
            };
            return Ok(t.clone());
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
            let mut creds = self.credentials.clone();
            creds["refresh_token"] = Value::String(new.to_string());
            *rotated.lock().unwrap() = Some(creds.to_string());
        }
        *access = Some((token.clone(), until));
        Ok(token)
    }

    /// Sends `method path` with an optional JSON body, paced at `per_sec` under `scope`
    /// (this token's own scope unless given), refreshing once when told to.
    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        pace: Option<(&str, f64)>,
        classify: impl Fn(&Answer) -> Verdict,
    ) -> Result<Answer, CrmError> {
        let url = &self.url(path);
        let pace = pace.unwrap_or((&self.scope, CALLS_PER_SEC));
        self.http
            .call(
                Some(pace),
                |fresh| {
                    let method = method.clone();
                    async move {
                        let t = self.token(fresh).await?;
                        let mut req = self.http.client().request(method, url).bearer_auth(t);
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

    /// New credentials to store, when a refresh rotated the refresh token (taken once).
    pub fn rotated(&self) -> Option<String> {
        match &self.auth {
            Auth::OAuth { rotated, .. } => rotated.lock().unwrap().take(),
            Auth::Static(_) => None,
        }
    }
}
