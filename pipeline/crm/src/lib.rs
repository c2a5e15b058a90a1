//! The CRM wire layer: what reading a CRM (the CRM sources) and writing to one (the
//! destinations) share. One HTTP client ([`client`]) paces requests under each CRM's
//! documented limit, retries what the CRM says is transient and refreshes tokens; the
//! OAuth pieces ([`oauth`]); and per CRM, its session and how its answers are classified
//! ([`salesforce`], [`hubspot`], [`airtable`]).
//!
//! It sits below both the sources and the sinks crates so that neither depends on the
//! other for it.

pub mod airtable;
pub mod client;
pub mod hubspot;
pub mod oauth;
pub mod salesforce;

use std::collections::BTreeMap;

use serde::Serialize;
use thiserror::Error;
use trailspark_core::crm::{FieldMapping, IntegrationKind};

/// What a CRM reader or writer is built from: the integration's settings and its opened
/// credentials (in memory only).
#[derive(Clone, Debug)]
pub struct IntegrationConfig {
    pub kind: IntegrationKind,
    pub api_base_url: String,
    pub login_url: Option<String>,
    pub settings: BTreeMap<String, String>,
    /// The credentials as the user gave them (JSON object).
    pub credentials: serde_json::Value,
    pub mapping: FieldMapping,
}

impl IntegrationConfig {
    /// Salesforce's token host: the login URL, else the API base.
    pub fn login_host(&self) -> &str {
        self.login_url.as_deref().unwrap_or(&self.api_base_url)
    }
}

/// Why a CRM call failed.
#[derive(Debug, Error)]
pub enum CrmError {
    /// The CRM refuses the credentials for good (`invalid_grant`, a revoked token): the
    /// integration is disconnected with this reason.
    #[error("{0}")]
    Disconnected(String),
    /// The CRM's limit is used up for longer than a call should wait (Salesforce's daily
    /// allocation, HubSpot's daily limit): the work stops where it is and resumes later.
    #[error("rate limited: {0}")]
    RateLimited(String),
    /// The CRM answered an error that retrying will not fix.
    #[error("{status}: {message}")]
    Refused { status: u16, message: String },
    /// The CRM could not be reached, or kept failing after retries.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The credentials or settings given are not usable (missing fields and the like).
    #[error("{0}")]
    Invalid(String),
}

/// A mapped field the CRM does not have, or has with another type.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FieldProblem {
    pub object: String,
    pub field: String,
    /// `missing` or `wrong_type`.
    pub problem: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub found: Option<String>,
}

/// A credential's text from the credentials object, or why it is missing.
pub fn credential(credentials: &serde_json::Value, name: &str) -> Result<String, CrmError> {
    credentials
        .get(name)
        .and_then(serde_json::Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .ok_or_else(|| CrmError::Invalid(format!("credentials need `{name}`")))
}

/// Fields as a CRM's describe endpoint lists them (`[{name, type}]`): name → type.
pub fn name_types(list: Option<&serde_json::Value>) -> std::collections::BTreeMap<String, String> {
    list.and_then(serde_json::Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|f| {
            Some((
                f.get("name")?.as_str()?.to_string(),
                f.get("type")?.as_str()?.to_string(),
            ))
        })
        .collect()
}
