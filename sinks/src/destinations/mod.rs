//! Destinations: evaluations written back to a CRM, one folder per CRM, over the shared CRM
//! client of `trailspark-crm` (pacing, retries, token refresh).
//!
//! A [`Writer`] takes a batch of [`Delivery`]s no larger than its CRM's batch limit and
//! answers one [`Outcome`] per delivery, in order: written, refused for good (with the CRM's
//! code and message), or to be tried again. A failure of the whole request is a
//! [`CrmError`]: the delivery service decides what it means (wait, pause, fail the batch).
//! Writers keep no delivery state; they only cache what they looked up in the CRM.

pub mod airtable;
pub mod hubspot;
pub mod salesforce;

use std::collections::BTreeMap;

use trailspark_core::crm::destination::{propensity_value, DeliveryError};
use trailspark_core::crm::{DestinationFields, IntegrationKind};
use trailspark_core::scoring::{Propensity, Score};
use trailspark_crm::client::CrmHttp;
pub use trailspark_crm::{CrmError, FieldProblem, IntegrationConfig};

/// One evaluation on its way to one destination.
#[derive(Clone, Debug, PartialEq)]
pub struct Delivery {
    pub lead_id: String,
    /// The lead's email: how the CRM record is found.
    pub email: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    /// The account's name and domain (a created record's company; HubSpot's company key).
    pub company: Option<String>,
    pub domain: Option<String>,
    /// The account's record in this CRM, when a sync has linked it.
    pub account_record: Option<String>,
    pub score: Score,
    pub reasoning: String,
    pub evaluated_at: i64,
    pub propensity: Option<Propensity>,
    /// Whether a record may be created when none matches.
    pub create: bool,
}

/// What became of one delivery.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Delivered {
        object: String,
        record_id: String,
        created: bool,
        propensity_written: bool,
    },
    /// Refused for good.
    Failed(DeliveryError),
    /// Refused for now (a locked row, a transient error of this record).
    Retry(DeliveryError),
}

impl Outcome {
    pub fn failed(code: &str, message: impl Into<String>) -> Outcome {
        Outcome::Failed(DeliveryError {
            code: code.to_string(),
            message: message.into(),
        })
    }

    pub fn retry(code: &str, message: impl Into<String>) -> Outcome {
        Outcome::Retry(DeliveryError {
            code: code.to_string(),
            message: message.into(),
        })
    }
}

/// What a writer is built from: its integration (settings, opened credentials, and the
/// mapping that says where emails and domains are), and the destination's field mapping.
#[derive(Clone, Debug)]
pub struct WriterConfig {
    pub integration: IntegrationConfig,
    pub fields: DestinationFields,
}

/// What every destination does.
#[async_trait::async_trait]
pub trait Writer: Send + Sync {
    /// The most deliveries one [`Writer::write`] takes (the CRM's batch limit).
    fn batch_size(&self) -> usize;
    /// Checks the credentials and that every mapped field exists, by the CRM's describe.
    async fn check(&self) -> Result<Vec<FieldProblem>, CrmError>;
    /// Writes a batch; one outcome per delivery, in order.
    async fn write(&self, batch: &[Delivery]) -> Result<Vec<Outcome>, CrmError>;
    /// Creates the mapped fields the CRM lacks, where its API allows (HubSpot's custom
    /// properties); answers those created.
    async fn create_fields(&self) -> Result<Vec<String>, CrmError> {
        Err(CrmError::Invalid(
            "this CRM's fields are created in its own setup, not through its API".into(),
        ))
    }
    /// New credentials to store, when the CRM rotated them during a call (taken once).
    fn rotated(&self) -> Option<String> {
        None
    }
}

/// Builds the writer for `config`'s CRM.
pub fn writer(config: WriterConfig, http: CrmHttp) -> Result<Box<dyn Writer>, CrmError> {
    Ok(match config.integration.kind {
        IntegrationKind::Salesforce => Box::new(salesforce::SalesforceWriter::new(config, http)?),
        IntegrationKind::Hubspot => Box::new(hubspot::HubspotWriter::new(config, http)?),
        IntegrationKind::Airtable => Box::new(airtable::AirtableWriter::new(config, http)?),
    })
}

/// An evaluation time as ISO 8601 UTC with milliseconds.
pub fn iso_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

/// The propensity text `kind` takes, if the delivery has one.
pub fn propensity_text(kind: IntegrationKind, d: &Delivery) -> Option<String> {
    d.propensity.map(|p| propensity_value(kind, p))
}

/// Problems of the destination's own fields against a describe answer (`name → type`) of
/// the person and account objects.
pub fn missing_fields(
    fields: &DestinationFields,
    person_object: &str,
    person: &BTreeMap<String, String>,
    account_object: &str,
    account: Option<&BTreeMap<String, String>>,
) -> Vec<FieldProblem> {
    let mut v = Vec::new();
    for f in [&fields.score, &fields.reasoning, &fields.evaluated_at] {
        if !person.contains_key(f) {
            v.push(FieldProblem {
                object: person_object.to_string(),
                field: f.clone(),
                problem: "missing",
                expected: None,
                found: None,
            });
        }
    }
    if let (Some(p), Some(account)) = (&fields.propensity, account) {
        if !account.contains_key(p) {
            v.push(FieldProblem {
                object: account_object.to_string(),
                field: p.clone(),
                problem: "missing",
                expected: None,
                found: None,
            });
        }
    }
    v
}
