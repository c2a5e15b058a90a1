//! Configuring destinations: the API's body checked by name, the mapped fields checked
//! against the CRM's describe answers, and the views the API answers (the destination, its
//! status, its deliveries). Errors are the integrations' ([`IntegrationError`]): the same
//! kinds of refusal, answered the same way.

use super::DestinationService;
use crate::control::{now_ms, ConfigError};
pub use crate::services::crm::IntegrationError;
use serde_json::{json, Value};
use trailspark_core::crm::destination::DeliveryStatus;
use trailspark_core::crm::{DeliveryEvent, Destination, DestinationFields, Status};
use trailspark_core::scoring::Score;
use trailspark_core::tenancy::OrgId;
use trailspark_core::time::rfc3339_text;

use super::view::{Deliveries, DestinationStatus, DestinationView, Retried};

/// `POST /api/destinations`'s body, and a `PATCH`'s (any of these).
#[derive(Debug, Default, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DestinationInput {
    /// The integration's id, as a number or its text.
    pub integration_id: Option<Value>,
    pub send_evaluations: Option<bool>,
    pub field_mapping: Option<Value>,
    pub create_records: Option<bool>,
    /// `hot`, `warm`, `cold`: the scores for which records are created (all by default).
    pub create_for_scores: Option<Vec<String>>,
    /// Create the mapped fields the CRM lacks, where its API allows (HubSpot).
    pub create_properties: Option<bool>,
}

fn fields(v: &Value) -> Result<DestinationFields, IntegrationError> {
    let f: DestinationFields = serde_json::from_value(v.clone()).map_err(|e| {
        IntegrationError::Invalid(format!(
            "`field_mapping` is {{\"score\", \"reasoning\", \"evaluated_at\", \"propensity\"?}}, \
             each a CRM field name: {e}"
        ))
    })?;
    let named = [
        ("score", Some(&f.score)),
        ("reasoning", Some(&f.reasoning)),
        ("evaluated_at", Some(&f.evaluated_at)),
        ("propensity", f.propensity.as_ref()),
    ];
    for (k, name) in named {
        if let Some(n) = name {
            if n.trim().is_empty() || n.len() > 255 {
                return Err(IntegrationError::Invalid(format!(
                    "`field_mapping.{k}` is a CRM field name of 1 to 255 characters"
                )));
            }
        }
    }
    Ok(f)
}

fn scores(v: &[String]) -> Result<Vec<Score>, IntegrationError> {
    let mut out: Vec<Score> = v
        .iter()
        .map(|s| {
            Score::parse(&s.to_ascii_lowercase()).ok_or_else(|| {
                IntegrationError::Invalid(format!(
                    "`create_for_scores` holds hot, warm or cold, not `{s}`"
                ))
            })
        })
        .collect::<Result<_, _>>()?;
    out.sort();
    out.dedup();
    Ok(out)
}

fn integration_id(v: &Value) -> Result<u64, IntegrationError> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .ok_or_else(|| IntegrationError::Invalid("`integration_id` is an integration's id".into()))
}

impl DestinationService {
    /// Checks the destination's fields against the CRM, creating them first when asked.
    async fn check_fields(
        &self,
        d: &Destination,
        create: bool,
    ) -> Result<Vec<String>, IntegrationError> {
        let i = self.control.integration(d.org_id, d.integration_id)?;
        let w = self.build_writer(d, &i)?;
        let created = if create {
            w.create_fields().await?
        } else {
            Vec::new()
        };
        let problems = w.check().await?;
        if !problems.is_empty() {
            return Err(IntegrationError::UnknownFields(problems));
        }
        Ok(created)
    }

    /// Creates a destination for one of the org's integrations (one per integration).
    pub async fn create(
        &self,
        org: OrgId,
        input: DestinationInput,
    ) -> Result<(Destination, Vec<String>), IntegrationError> {
        let integration =
            integration_id(input.integration_id.as_ref().ok_or_else(|| {
                IntegrationError::Invalid("`integration_id` is required".into())
            })?)?;
        let i = self.control.integration(org, integration).map_err(|_| {
            IntegrationError::Invalid(format!(
                "`integration_id` {integration} is not an integration of this org"
            ))
        })?;
        if self
            .control
            .registry
            .read()
            .unwrap()
            .destinations()
            .of_org(org)
            .any(|d| d.integration_id == integration)
        {
            return Err(ConfigError::Conflict(format!(
                "integration {integration} already has a destination"
            ))
            .into());
        }
        let field_mapping = fields(
            input
                .field_mapping
                .as_ref()
                .ok_or_else(|| IntegrationError::Invalid("`field_mapping` is required".into()))?,
        )?;
        let now = now_ms();
        let mut d = Destination {
            id: 0,
            org_id: org,
            integration_id: integration,
            kind: i.kind,
            send_evaluations: input.send_evaluations.unwrap_or(true),
            field_mapping,
            create_records: input.create_records.unwrap_or(false),
            create_for_scores: match &input.create_for_scores {
                Some(v) => scores(v)?,
                None => vec![Score::Hot, Score::Warm, Score::Cold],
            },
            created_at: now,
            updated_at: now,
        };
        let created = self
            .check_fields(&d, input.create_properties.unwrap_or(false))
            .await?;
        let (made, _) = self
            .control
            .create_destination(|id| {
                d.id = id;
                d
            })
            .await?;
        Ok((made, created))
    }

    /// Edits a destination; a new field mapping is checked against the CRM.
    pub async fn update(
        &self,
        org: OrgId,
        id: u64,
        input: DestinationInput,
    ) -> Result<(Destination, Vec<String>), IntegrationError> {
        let mut d = self.control.destination(org, id)?;
        if let Some(v) = &input.integration_id {
            if integration_id(v)? != d.integration_id {
                return Err(IntegrationError::Invalid(
                    "`integration_id` cannot change: create another destination".into(),
                ));
            }
        }
        if let Some(s) = input.send_evaluations {
            d.send_evaluations = s;
        }
        if let Some(c) = input.create_records {
            d.create_records = c;
        }
        if let Some(v) = &input.create_for_scores {
            d.create_for_scores = scores(v)?;
        }
        let mut created = Vec::new();
        if let Some(m) = &input.field_mapping {
            d.field_mapping = fields(m)?;
        }
        if input.field_mapping.is_some() || input.create_properties == Some(true) {
            created = self
                .check_fields(&d, input.create_properties.unwrap_or(false))
                .await?;
        }
        d.updated_at = now_ms();
        let (d, _) = self.control.update_destination(d).await?;
        self.ledger.wake.notify_one();
        Ok((d, created))
    }

    pub async fn delete(&self, org: OrgId, id: u64) -> Result<u64, IntegrationError> {
        Ok(self.control.delete_destination(org, id).await?)
    }

    /// Queues the failed records again (of `leads`, or all), and lifts a pause.
    pub async fn retry(
        &self,
        org: OrgId,
        id: u64,
        leads: Vec<String>,
    ) -> Result<Value, IntegrationError> {
        self.control.destination(org, id)?;
        let failed = self.ledger.failed_leads(id);
        let queued = if leads.is_empty() {
            failed.len()
        } else {
            leads.iter().filter(|l| failed.contains(l)).count()
        };
        let pos = self
            .control
            .commit_delivery(DeliveryEvent::Retry {
                org_id: org,
                destination_id: id,
                at: now_ms(),
                lead_ids: leads,
            })
            .await?;
        self.ledger.wait_applied(pos).await;
        self.update_runtime(id);
        self.ledger.wake.notify_one();
        let retried = Retried {
            queued,
            log_position: pos,
        };
        Ok(serde_json::to_value(retried).expect("serializes"))
    }

    fn update_runtime(&self, id: u64) {
        let mut rt = self.runtime.lock().unwrap();
        if let Some(r) = rt.get_mut(&id) {
            r.paused_until = None;
            r.reason = None;
            r.retry_at = None;
            r.attempts.clear();
        }
    }

    /// The destination as the API shows it.
    pub fn view(&self, d: &Destination) -> Value {
        let view = DestinationView {
            id: d.id,
            integration_id: d.integration_id,
            kind: json!(d.kind),
            send_evaluations: d.send_evaluations,
            field_mapping: json!(d.field_mapping),
            create_records: d.create_records,
            create_for_scores: json!(d.create_for_scores),
            created_at: d.created_at,
            updated_at: d.updated_at,
        };
        serde_json::to_value(view).expect("destinations serialize")
    }

    /// `GET /api/destinations/{id}/status`.
    pub fn status(&self, d: &Destination) -> Value {
        let c = self.ledger.counts(d.id);
        let rt = self.runtime(d.id);
        let now = now_ms();
        let integration = self
            .control
            .registry
            .read()
            .unwrap()
            .integrations()
            .get(d.integration_id)
            .cloned();
        let disconnected = integration
            .as_ref()
            .is_none_or(|i| i.status != Status::Connected);
        let paused = rt.paused_until.filter(|t| *t > now);
        let backing_off = rt.retry_at.filter(|t| *t > now);
        let (state, reason) = if !d.send_evaluations {
            ("disabled", Some("Send Evaluations is off".to_string()))
        } else if disconnected {
            (
                "paused",
                Some(format!(
                    "the integration is disconnected: {}",
                    integration
                        .and_then(|i| i.reason)
                        .unwrap_or_else(|| "reconnect it".into())
                )),
            )
        } else if paused.is_some() {
            ("paused", rt.reason.clone())
        } else if backing_off.is_some() {
            ("retrying", rt.last_error.clone())
        } else if rt.in_flight > 0 || c.queued > 0 {
            ("delivering", None)
        } else {
            ("idle", None)
        };
        let status = DestinationStatus {
            id: d.id,
            integration_id: d.integration_id,
            kind: json!(d.kind),
            send_evaluations: d.send_evaluations,
            state,
            paused: state == "paused",
            reason,
            paused_until: paused.and_then(rfc3339_text),
            next_attempt_at: backing_off.and_then(rfc3339_text),
            queued: c.queued,
            in_flight: rt.in_flight,
            delivered: c.delivered,
            failed: c.failed,
            unchanged: c.unchanged,
            delivered_through: c.delivered_through,
            last_result_at: c.last_result_at.and_then(rfc3339_text),
            last_attempt_at: rt.last_attempt_at.and_then(rfc3339_text),
            last_error: rt.last_error.clone(),
        };
        serde_json::to_value(status).expect("statuses serialize")
    }

    /// `GET /api/destinations/{id}/deliveries`.
    pub fn deliveries(
        &self,
        d: &Destination,
        status: Option<&str>,
        lead: Option<&str>,
        limit: usize,
    ) -> Result<Value, IntegrationError> {
        let status = match status {
            None | Some("all") => None,
            Some("failed") => Some(DeliveryStatus::Failed),
            Some("delivered") => Some(DeliveryStatus::Delivered),
            Some(s) => {
                return Err(IntegrationError::Invalid(format!(
                    "`status` is failed, delivered or all, not `{s}`"
                )))
            }
        };
        let v = self.ledger.results(d.id, status, lead, limit);
        let count = v.len();
        Ok(serde_json::to_value(Deliveries {
            deliveries: v,
            count,
        })
        .expect("serializes"))
    }
}
