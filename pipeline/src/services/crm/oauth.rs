//! Connecting through OAuth: Salesforce's authorization-code flow with PKCE (S256) and
//! HubSpot's authorization-code flow. Starting one answers the URL to open; the CRM sends
//! the browser back to the callback with a code and the `state` handed out, which is used
//! once, within ten minutes, and carries the PKCE verifier that never left the server.

use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;
use trailspark_core::crm::{Integration, IntegrationKind};
use trailspark_core::tenancy::OrgId;
use trailspark_sources::crm::oauth::{challenge, exchange_code, random_token};

use super::connect::{IntegrationError, NewIntegration};
use super::CrmService;

/// How long a started authorization waits for its callback.
pub const PENDING_FOR: Duration = Duration::from_secs(600);

/// HubSpot's scopes for reading and writing contacts and companies.
pub const HUBSPOT_SCOPES: &str = "crm.objects.contacts.read crm.objects.contacts.write \
     crm.objects.companies.read crm.objects.companies.write crm.schemas.contacts.read";
/// Salesforce's scopes: the REST API, and a refresh token for offline syncs.
pub const SALESFORCE_SCOPES: &str = "api refresh_token";

/// `POST /api/integrations/oauth/{kind}`'s body.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OAuthStart {
    pub client_id: String,
    pub client_secret: Option<String>,
    pub name: Option<String>,
    pub api_base_url: Option<String>,
    /// Salesforce: the login host (production, sandbox or My Domain).
    pub login_url: Option<String>,
    #[serde(default)]
    pub sandbox: bool,
    /// HubSpot: the consent page (default `https://app.hubspot.com/oauth/authorize`).
    pub authorize_url: Option<String>,
    pub mapping: Option<Value>,
}

pub(super) struct Pending {
    org: OrgId,
    kind: IntegrationKind,
    start: OAuthStart,
    verifier: String,
    redirect_uri: String,
    at: Instant,
}

fn text(v: &Option<String>) -> Option<String> {
    v.as_ref()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

impl OAuthStart {
    /// Salesforce's login host: the one given, the sandbox's, or the API base (production
    /// by default), without a trailing slash.
    fn login(&self) -> String {
        let login = match (text(&self.login_url), self.sandbox) {
            (Some(u), _) => u,
            (None, true) => "https://test.salesforce.com".into(),
            (None, false) => text(&self.api_base_url)
                .unwrap_or_else(|| IntegrationKind::Salesforce.default_api_base().to_string()),
        };
        login.trim_end_matches('/').to_string()
    }
}

impl CrmService {
    /// Starts an authorization; answers the URL to open and the `state` that will return.
    pub fn oauth_start(
        &self,
        org: OrgId,
        kind: &str,
        start: OAuthStart,
        redirect_uri: String,
    ) -> Result<(String, String), IntegrationError> {
        let kind = match IntegrationKind::parse(kind) {
            Some(k @ (IntegrationKind::Salesforce | IntegrationKind::Hubspot)) => k,
            _ => {
                return Err(IntegrationError::Invalid(format!(
                    "OAuth connects salesforce or hubspot, not `{kind}` (Airtable takes a \
                     personal access token)"
                )))
            }
        };
        if start.client_id.trim().is_empty() {
            return Err(IntegrationError::Invalid("`client_id` is required".into()));
        }
        if kind == IntegrationKind::Hubspot && text(&start.client_secret).is_none() {
            return Err(IntegrationError::Invalid(
                "`client_secret` is required for HubSpot".into(),
            ));
        }
        let state = random_token(24);
        let verifier = random_token(48);
        let q = |pairs: &[(&str, &str)]| {
            form_urlencoded::Serializer::new(String::new())
                .extend_pairs(pairs)
                .finish()
        };
        let url = match kind {
            IntegrationKind::Salesforce => {
                format!(
                    "{}/services/oauth2/authorize?{}",
                    start.login(),
                    q(&[
                        ("response_type", "code"),
                        ("client_id", start.client_id.trim()),
                        ("redirect_uri", &redirect_uri),
                        ("scope", SALESFORCE_SCOPES),
                        ("code_challenge", &challenge(&verifier)),
                        ("code_challenge_method", "S256"),
                        ("state", &state),
                    ])
                )
            }
            _ => format!(
                "{}?{}",
                text(&start.authorize_url)
                    .unwrap_or_else(|| "https://app.hubspot.com/oauth/authorize".into()),
                q(&[
                    ("client_id", start.client_id.trim()),
                    ("redirect_uri", &redirect_uri),
                    ("scope", HUBSPOT_SCOPES),
                    ("state", &state),
                ])
            ),
        };
        let mut pending = self.pending.lock().unwrap();
        pending.retain(|_, p| p.at.elapsed() < PENDING_FOR);
        pending.insert(
            state.clone(),
            Pending {
                org,
                kind,
                start,
                verifier,
                redirect_uri,
                at: Instant::now(),
            },
        );
        Ok((url, state))
    }

    /// The browser's return: exchanges the code and connects the integration.
    pub async fn oauth_callback(
        &self,
        kind: &str,
        query: &str,
    ) -> Result<Integration, IntegrationError> {
        let params: std::collections::BTreeMap<String, String> =
            form_urlencoded::parse(query.as_bytes())
                .into_owned()
                .collect();
        let state = params.get("state").cloned().unwrap_or_default();
        let p = self
            .pending
            .lock()
            .unwrap()
            .remove(&state)
            .filter(|p| p.at.elapsed() < PENDING_FOR && p.kind.as_str() == kind)
            .ok_or_else(|| {
                IntegrationError::Invalid(
                    "`state` is unknown, used or expired: start the connection again".into(),
                )
            })?;
        if let Some(e) = params.get("error") {
            return Err(IntegrationError::Invalid(format!(
                "the CRM did not authorize: {e} ({})",
                params.get("error_description").map_or("", String::as_str)
            )));
        }
        let code = params
            .get("code")
            .ok_or_else(|| IntegrationError::Invalid("the callback has no `code`".into()))?;
        let client_id = p.start.client_id.trim().to_string();
        let secret = text(&p.start.client_secret);
        let mut form: Vec<(&str, &str)> = vec![
            ("code", code),
            ("client_id", &client_id),
            ("redirect_uri", &p.redirect_uri),
        ];
        if let Some(s) = &secret {
            form.push(("client_secret", s));
        }
        let (token_url, login_url) = match p.kind {
            IntegrationKind::Salesforce => {
                form.push(("code_verifier", &p.verifier));
                let login = p.start.login();
                (format!("{login}/services/oauth2/token"), Some(login))
            }
            _ => {
                let base = text(&p.start.api_base_url)
                    .unwrap_or_else(|| p.kind.default_api_base().to_string());
                (
                    format!("{}/oauth/v1/token", base.trim_end_matches('/')),
                    None,
                )
            }
        };
        let tokens = exchange_code(&self.http, &token_url, &form).await?;
        let refresh = tokens
            .get("refresh_token")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                IntegrationError::Invalid(
                    "the CRM answered no refresh token: the app needs the refresh_token \
                     (offline) scope"
                        .into(),
                )
            })?;
        let mut credentials = serde_json::json!({"client_id": client_id, "refresh_token": refresh});
        if let Some(s) = secret {
            credentials["client_secret"] = Value::String(s);
        }
        let new = NewIntegration {
            kind: p.kind.as_str().to_string(),
            name: p.start.name,
            credentials,
            api_base_url: p.start.api_base_url,
            login_url,
            sandbox: false,
            mapping: p.start.mapping,
        };
        self.create(p.org, new).await
    }
}
