//! Connecting, editing and testing integrations: the API's body checked by name, the
//! credentials sealed before anything is stored, and the view the API answers (never with
//! a secret).

use super::view::{ConnectionTest, IntegrationView, SyncCursor, SyncState};
use std::collections::BTreeMap;

use serde_json::{json, Value};
use trailspark_core::crm::{FieldMapping, Integration, IntegrationKind, Status};
use trailspark_core::tenancy::OrgId;
use trailspark_sources::crm::{CrmError, FieldProblem};

use super::CrmService;
use crate::control::{now_ms, ConfigError};

#[derive(Debug, thiserror::Error)]
pub enum IntegrationError {
    /// The body is wrong: the message names the field.
    #[error("{0}")]
    Invalid(String),
    /// Mapped fields the CRM does not have (or has with another type).
    #[error("the CRM does not have these mapped fields")]
    UnknownFields(Vec<FieldProblem>),
    /// The CRM could not answer the check.
    #[error("{0}")]
    Crm(#[from] CrmError),
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// `POST /api/integrations`'s body.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewIntegration {
    pub kind: String,
    pub name: Option<String>,
    pub credentials: Value,
    pub api_base_url: Option<String>,
    pub login_url: Option<String>,
    #[serde(default)]
    pub sandbox: bool,
    pub mapping: Option<Value>,
}

/// A PATCH of an integration: any of these.
#[derive(Debug, Default, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IntegrationChange {
    pub name: Option<String>,
    pub credentials: Option<Value>,
    pub api_base_url: Option<String>,
    pub login_url: Option<String>,
    pub mapping: Option<Value>,
}

/// What each CRM's credentials hold, as (name, secret, required).
fn credential_fields(kind: IntegrationKind) -> &'static [(&'static str, bool, bool)] {
    match kind {
        IntegrationKind::Salesforce => &[
            ("client_id", false, true),
            ("client_secret", true, false),
            ("refresh_token", true, true),
        ],
        // A private app's token, or OAuth's client and refresh token (checked below).
        IntegrationKind::Hubspot => &[
            ("private_app_token", true, false),
            ("client_id", false, false),
            ("client_secret", true, false),
            ("refresh_token", true, false),
        ],
        IntegrationKind::Airtable => &[
            ("personal_access_token", true, true),
            ("base_id", false, true),
            ("tables", false, true),
        ],
    }
}

/// Checks credentials by name; answers the settings that are not secret.
fn check_credentials(
    kind: IntegrationKind,
    c: &Value,
) -> Result<BTreeMap<String, String>, IntegrationError> {
    let obj = c
        .as_object()
        .ok_or_else(|| IntegrationError::Invalid("`credentials` is a JSON object".into()))?;
    let fields = credential_fields(kind);
    for k in obj.keys() {
        if !fields.iter().any(|(n, _, _)| n == k) {
            return Err(IntegrationError::Invalid(format!(
                "`credentials.{k}` is not a {} credential (expected: {})",
                kind.as_str(),
                fields.iter().map(|f| f.0).collect::<Vec<_>>().join(", ")
            )));
        }
    }
    let mut settings = BTreeMap::new();
    for (name, secret, required) in fields {
        match obj.get(*name) {
            None | Some(Value::Null) if *required => {
                return Err(IntegrationError::Invalid(format!(
                    "`credentials.{name}` is required"
                )))
            }
            None | Some(Value::Null) => {}
            Some(Value::Object(tables)) if *name == "tables" => {
                for role in ["contacts", "companies"] {
                    let named = tables.get(role).and_then(Value::as_str);
                    if named.is_none_or(|s| s.trim().is_empty()) {
                        return Err(IntegrationError::Invalid(format!(
                            "`credentials.tables.{role}` names the table holding {role}"
                        )));
                    }
                }
                for (role, t) in tables {
                    let t = t.as_str().ok_or_else(|| {
                        IntegrationError::Invalid(format!("`credentials.tables.{role}` is text"))
                    })?;
                    settings.insert(format!("tables.{role}"), t.trim().to_string());
                }
            }
            Some(Value::String(s)) if !s.trim().is_empty() && s.len() <= 4096 => {
                if !secret {
                    settings.insert(name.to_string(), s.trim().to_string());
                }
            }
            Some(_) => {
                return Err(IntegrationError::Invalid(format!(
                    "`credentials.{name}` is non-empty text"
                )))
            }
        }
    }
    if kind == IntegrationKind::Hubspot {
        let has = |k: &str| obj.get(k).is_some_and(|v| !v.is_null());
        let oauth = has("client_id") && has("client_secret") && has("refresh_token");
        if has("private_app_token") == oauth {
            return Err(IntegrationError::Invalid(
                "HubSpot `credentials` are `private_app_token`, or OAuth's `client_id`, \
                 `client_secret` and `refresh_token`"
                    .into(),
            ));
        }
    }
    Ok(settings)
}

fn check_url(field: &str, url: &str) -> Result<String, IntegrationError> {
    let u = url.trim().trim_end_matches('/');
    if !(u.starts_with("https://") || u.starts_with("http://")) || u.len() > 2048 {
        return Err(IntegrationError::Invalid(format!(
            "`{field}` is an http(s) URL"
        )));
    }
    Ok(u.to_string())
}

fn check_name(name: &str) -> Result<String, IntegrationError> {
    let n = name.trim();
    if n.is_empty() || n.chars().count() > 200 {
        return Err(IntegrationError::Invalid(
            "`name` is 1 to 200 characters".into(),
        ));
    }
    Ok(n.to_string())
}

impl CrmService {
    /// Connects a CRM: checks and seals the credentials, stores the integration, and starts
    /// its first sync.
    pub async fn create(
        &self,
        org: OrgId,
        new: NewIntegration,
    ) -> Result<Integration, IntegrationError> {
        let kind = IntegrationKind::parse(&new.kind).ok_or_else(|| {
            IntegrationError::Invalid(format!(
                "`kind` is salesforce, hubspot or airtable, not `{}`",
                new.kind
            ))
        })?;
        let settings = check_credentials(kind, &new.credentials)?;
        let name = check_name(new.name.as_deref().unwrap_or(kind.as_str()))?;
        let api_base_url = match &new.api_base_url {
            Some(u) => check_url("api_base_url", u)?,
            None => kind.default_api_base().to_string(),
        };
        let login_url = match (kind, &new.login_url) {
            (IntegrationKind::Salesforce, Some(u)) => Some(check_url("login_url", u)?),
            (IntegrationKind::Salesforce, None) if new.sandbox => {
                Some("https://test.salesforce.com".to_string())
            }
            (IntegrationKind::Salesforce, None) => Some(api_base_url.clone()),
            (_, Some(_)) => {
                return Err(IntegrationError::Invalid(
                    "`login_url` is only for salesforce".into(),
                ))
            }
            (_, None) => None,
        };
        let mut mapping = FieldMapping::defaults(kind);
        if let Some(m) = &new.mapping {
            mapping = mapping.change(kind, m).map_err(IntegrationError::Invalid)?;
        }
        let sealed = self.seal.seal(&new.credentials.to_string());
        let now = now_ms();
        let (i, _) = self
            .control
            .create_integration(|id| Integration {
                id,
                org_id: org,
                kind,
                name,
                api_base_url,
                login_url,
                settings,
                sealed,
                mapping,
                status: Status::Connected,
                reason: None,
                created_at: now,
                updated_at: now,
            })
            .await?;
        self.request_sync(i.id);
        Ok(i)
    }

    /// Edits an integration. New credentials reconnect it; new credentials or a new
    /// mapping restart its syncs from the beginning. A mapping is checked against the CRM.
    pub async fn update(
        &self,
        org: OrgId,
        id: u64,
        change: IntegrationChange,
    ) -> Result<Integration, IntegrationError> {
        let mut i = self.control.integration(org, id)?;
        let mut reset = false;
        if let Some(n) = &change.name {
            i.name = check_name(n)?;
        }
        if let Some(u) = &change.api_base_url {
            i.api_base_url = check_url("api_base_url", u)?;
        }
        if let Some(u) = &change.login_url {
            if i.kind != IntegrationKind::Salesforce {
                return Err(IntegrationError::Invalid(
                    "`login_url` is only for salesforce".into(),
                ));
            }
            i.login_url = Some(check_url("login_url", u)?);
        }
        if let Some(c) = &change.credentials {
            i.settings = check_credentials(i.kind, c)?;
            i.sealed = self.seal.seal(&c.to_string());
            i.status = Status::Connected;
            i.reason = None;
            reset = true;
        }
        if let Some(m) = &change.mapping {
            i.mapping = i
                .mapping
                .clone()
                .change(i.kind, m)
                .map_err(IntegrationError::Invalid)?;
            let problems = self.connector(&i)?.check().await?;
            if !problems.is_empty() {
                return Err(IntegrationError::UnknownFields(problems));
            }
            reset = true;
        }
        i.updated_at = now_ms();
        let (i, _) = self.control.update_integration(i, reset).await?;
        if i.status == Status::Connected {
            self.request_sync(i.id);
        }
        Ok(i)
    }

    /// Checks the credentials and every mapped field against the CRM. Refused credentials
    /// disconnect the integration; good ones reconnect it.
    pub async fn test(&self, org: OrgId, id: u64) -> Result<ConnectionTest, IntegrationError> {
        let i = self.control.integration(org, id)?;
        let result = match self.connector(&i) {
            Ok(c) => {
                let r = c.check().await;
                if let Some(new) = c.rotated() {
                    self.control
                        .rotate_integration_credentials(id, self.seal.seal(&new))
                        .await?;
                }
                r
            }
            Err(e) => Err(e),
        };
        Ok(match result {
            Ok(problems) => {
                if i.status == Status::Disconnected {
                    self.control
                        .set_integration_status(id, Status::Connected, None)
                        .await?;
                    self.request_sync(id);
                }
                ConnectionTest {
                    ok: problems.is_empty(),
                    connected: true,
                    fields: Some(json!(problems)),
                    error: None,
                }
            }
            Err(CrmError::Disconnected(reason)) => {
                self.control
                    .set_integration_status(id, Status::Disconnected, Some(reason.clone()))
                    .await?;
                ConnectionTest {
                    ok: false,
                    connected: false,
                    fields: None,
                    error: Some(reason),
                }
            }
            Err(e) => ConnectionTest {
                ok: false,
                connected: i.status == Status::Connected,
                fields: None,
                error: Some(e.to_string()),
            },
        })
    }

    /// The integration as the API shows it: no credential, only settings that are not
    /// secret, the mapping, and how its syncs stand.
    pub fn view(&self, i: &Integration) -> IntegrationView {
        let reg = self.control.registry.read().unwrap();
        let cursors = i
            .kind
            .objects()
            .iter()
            .filter_map(|o| {
                reg.integrations().cursor(i.id, *o).map(|c| {
                    let at = chrono::DateTime::from_timestamp_millis(c.at).map(|d| d.to_rfc3339());
                    let cursor = SyncCursor {
                        modified_at: at,
                        complete: c.complete,
                    };
                    (o.as_str().to_string(), cursor)
                })
            })
            .collect();
        IntegrationView {
            id: i.id,
            kind: json!(i.kind),
            name: i.name.clone(),
            status: json!(i.status),
            reason: i.reason.clone(),
            api_base_url: i.api_base_url.clone(),
            login_url: i.login_url.clone(),
            settings: i.settings.clone(),
            mapping: i.mapping.to_json(i.kind),
            created_at: i.created_at,
            updated_at: i.updated_at,
            sync: SyncState {
                running: self.is_running(i.id),
                last_committed_at: reg.integrations().last_sync(i.id),
                cursors,
                last: self.report(i.id),
            },
            records: None,
        }
    }
}
