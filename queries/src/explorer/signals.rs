//! The explorer's signals: the processed, failed and pending tabs with cursor
//! pagination, one signal with its raw payload, and a lead's timeline.
//!
//! Outcomes come from the read models (they are current: a rule edit with reprocess changes
//! them at once), payloads from the archive (files plus the rows not yet in a file), through
//! the same tables SQL reads.

use serde::Serialize;
use serde_json::{json, Map, Value};
use trailspark_core::rules::SignalType;
use trailspark_core::time::rfc3339_text;
use trailspark_operators::status::{Processed, Status};
use trailspark_sinks::archive::{Kind, SCHEMA};
use trailspark_sinks::read_models::{lead_id, Models, ReadModels, Tab};

use super::{Page, ViewError};
use crate::lookup::{ArchiveLookup, LookupFilter};
use utoipa::ToSchema;

/// A status as the explorer's badges spell it.
fn status_badge(s: Status) -> &'static str {
    match s {
        Status::Completed => "Processed",
        Status::Failed => "Failed",
        Status::Skipped => "Skipped",
        Status::Pending => "Pending",
    }
}

/// A row of the processed tab.
#[derive(Serialize, ToSchema)]
pub struct ProcessedRow {
    pub id: u64,
    /// The rule's name, or the event type when none matched.
    pub signal_name: String,
    pub source: String,
    pub lead_id: Option<String>,
    pub processed_at: Option<String>,
    pub rule_id: Option<u64>,
    pub rule: Option<String>,
    pub signal_type: Option<SignalType>,
}

/// A row of the failed tab.
#[derive(Serialize, ToSchema)]
pub struct FailedRow {
    pub id: u64,
    pub event_type: String,
    pub source: String,
    /// The badge.
    #[schema(value_type = String, pattern = "^(Failed|Skipped)$")]
    pub status: &'static str,
    pub error: Option<String>,
    pub failed_at: Option<String>,
    pub rule_id: Option<u64>,
}

/// A row of the pending tab.
#[derive(Serialize, ToSchema)]
pub struct PendingRow {
    pub id: u64,
    pub event_type: String,
    pub source: String,
    /// The badge.
    #[schema(value_type = String, pattern = "^Pending$")]
    pub status: &'static str,
    pub received_at: Option<String>,
}

/// A row of one of the explorer's tabs; which one the page's `tab` says.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum SignalRow {
    Processed(ProcessedRow),
    Failed(FailedRow),
    Pending(PendingRow),
}

/// One row of a tab. `processed_at`/`failed_at` are when the signal entered processing: the
/// dataflow decides an outcome in the epoch the signal arrives in (or, after a rule edit
/// with reprocess, the epoch of the edit), so it is the receipt time to within that epoch.
fn row(id: u64, p: &Processed) -> SignalRow {
    let text = |s: &Option<std::sync::Arc<str>>| s.as_deref().map(str::to_string);
    match Tab::of(p.status) {
        Tab::Processed => SignalRow::Processed(ProcessedRow {
            id,
            signal_name: text(&p.rule_name).unwrap_or_else(|| p.event_type.to_string()),
            source: p.source.to_string(),
            lead_id: p.lead.as_ref().map(lead_id),
            processed_at: rfc3339_text(p.received_at),
            rule_id: p.rule_id,
            rule: text(&p.rule_name),
            signal_type: p.signal_type,
        }),
        Tab::Failed => SignalRow::Failed(FailedRow {
            id,
            event_type: p.event_type.to_string(),
            source: p.source.to_string(),
            status: status_badge(p.status),
            error: text(&p.error),
            failed_at: rfc3339_text(p.received_at),
            rule_id: p.rule_id,
        }),
        Tab::Pending => SignalRow::Pending(PendingRow {
            id,
            event_type: p.event_type.to_string(),
            source: p.source.to_string(),
            status: status_badge(p.status),
            received_at: rfc3339_text(p.received_at),
        }),
    }
}

/// `GET /api/explorer/signals?tab=processed|failed|pending&limit=&cursor=`: newest first.
pub fn tab_page(m: &Models, org: u64, tab: &str, page: &Page) -> Result<Value, ViewError> {
    let t = match tab {
        "processed" => Tab::Processed,
        "failed" => Tab::Failed,
        "pending" => Tab::Pending,
        other => {
            return Err(ViewError::BadRequest(format!(
                "tab must be processed, failed or pending, not `{other}`"
            )))
        }
    };
    let hi = page.cursor.unwrap_or(u64::MAX);
    let ids: Vec<u64> = m
        .org(org)
        .tabs
        .range((t, 0)..(t, hi))
        .rev()
        .take(page.limit + 1)
        .map(|(_, id)| *id)
        .collect();
    let more = ids.len() > page.limit;
    let rows: Vec<SignalRow> = ids
        .iter()
        .take(page.limit)
        .filter_map(|id| m.processed(org, *id).map(|p| row(*id, &p)))
        .collect();
    let next = more.then(|| ids[page.limit - 1].to_string());
    Ok(json!({"tab": tab, "signals": rows, "next_cursor": next}))
}

/// The archived (or buffered) records with these ids, as JSON objects keyed by column, with
/// the payload parsed.
async fn records(
    lookup: Option<&ArchiveLookup>,
    org: u64,
    ids: &[u64],
) -> Result<Vec<Map<String, Value>>, ViewError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let Some(lookup) = lookup else {
        return Err(ViewError::Unavailable(
            "this server has no archive to read payloads from".into(),
        ));
    };
    let filter = LookupFilter {
        ids: Some(ids.to_vec()),
        ..Default::default()
    };
    let batches = lookup
        .batches(org, &[Kind::Signals, Kind::Anonymous], &filter)
        .await?;
    let mut objects = crate::output::to_objects(&batches)
        .map_err(|e| ViewError::Lookup(crate::SqlError::Internal(e.to_string())))?;
    for obj in &mut objects {
        if let Some(p) = obj.get_mut("payload") {
            if let Some(parsed) = p.as_str().and_then(|s| serde_json::from_str(s).ok()) {
                *p = parsed;
            }
        }
    }
    Ok(objects)
}

/// Overlays a record with its current outcome (the archive holds the outcome at archive
/// time; a later rule edit or identify may have changed it).
fn overlay(m: &Models, org: u64, rec: &mut Map<String, Value>) {
    let Some(id) = rec.get("id").and_then(Value::as_u64) else {
        return;
    };
    match m.processed(org, id) {
        Some(p) => {
            rec.insert("status".into(), json!(p.status.as_str()));
            rec.insert("rule_id".into(), json!(p.rule_id));
            rec.insert("rule_name".into(), json!(p.rule_name));
            rec.insert("signal_type".into(), json!(p.signal_type));
            rec.insert("error".into(), json!(p.error));
            rec.insert("lead_id".into(), json!(p.lead.as_ref().map(lead_id)));
        }
        // Not in live state: waiting cold outside the dataflow (the hot window), retired by
        // retention (the archived outcome stands), or on the log but never staged (a retry of
        // an earlier signal: the archive has no outcome).
        None => {
            let archived = rec.get("status").is_some_and(|s| !s.is_null());
            if m.cold.busy(&(org, id)) {
                rec.insert("cold".into(), json!(true));
            } else if archived {
                rec.insert("retired".into(), json!(true));
            } else {
                rec.insert("status".into(), json!("duplicate"));
            }
        }
    }
}

/// The JSON Schema of a signal record as the explorer and a lead's timeline answer it: the
/// archive's columns ([`SCHEMA`], so a column added there is documented too) as
/// [`crate::output::to_objects`] writes them, the table's `org_id` and `date`, the payload
/// parsed, and the outcome the read models hold (`signal_type`; `cold` or `retired` when the
/// signal is not in live state).
pub fn record_schema() -> Value {
    use arrow::datatypes::DataType;
    let mut properties = Map::new();
    let mut required = Vec::new();
    for f in SCHEMA.fields() {
        let ty = match f.data_type() {
            DataType::UInt64 | DataType::Int64 | DataType::UInt32 | DataType::Int32 => "integer",
            DataType::Boolean => "boolean",
            _ => "string",
        };
        let schema = match f.name().as_str() {
            "payload" => json!({"description": "the signal as it was sent"}),
            _ if f.is_nullable() => json!({"type": [ty, "null"]}),
            _ => json!({"type": ty}),
        };
        properties.insert(f.name().clone(), schema);
        required.push(f.name().clone());
    }
    properties.insert("org_id".into(), json!({"type": "integer"}));
    properties.insert(
        "date".into(),
        json!({"type": "string", "description": "the day received, YYYY-MM-DD"}),
    );
    properties.insert("signal_type".into(), json!({"type": ["string", "null"]}));
    properties.insert(
        "cold".into(),
        json!({"type": "boolean", "description": "waiting outside the dataflow for an identify"}),
    );
    properties.insert("retired".into(), json!({"type": "boolean", "description": "retired from live state by retention; the archived outcome stands"}));
    json!({"type": "object", "required": required, "properties": properties})
}

/// `GET /api/explorer/signals/{id}`: one signal with its raw payload and current outcome.
pub async fn signal_detail(
    lookup: Option<&ArchiveLookup>,
    read: &ReadModels,
    org: u64,
    id: u64,
) -> Result<Value, ViewError> {
    let mut recs = records(lookup, org, &[id]).await?;
    let Some(mut rec) = recs.pop() else {
        return Err(ViewError::NotFound(format!("no signal {id}")));
    };
    overlay(&read.read(), org, &mut rec);
    Ok(Value::Object(rec))
}

/// `GET /api/leads/{id}/timeline?limit=&cursor=`: the lead's signals, newest first, each with
/// its payload and outcome.
pub async fn lead_timeline(
    lookup: Option<&ArchiveLookup>,
    read: &ReadModels,
    org: u64,
    lead: &str,
    page: &Page,
) -> Result<Value, ViewError> {
    let (ids, more) = {
        let m = read.read();
        let key = m
            .lead(org, lead)
            .ok_or_else(|| ViewError::NotFound("no such lead".into()))?;
        let hi = page.cursor.unwrap_or(u64::MAX);
        let ids: Vec<u64> = m
            .org(org)
            .lead_signals
            .get(key)
            .into_iter()
            .flat_map(|s| s.range(..hi).rev())
            .take(page.limit + 1)
            .copied()
            .collect();
        let more = ids.len() > page.limit;
        (ids.into_iter().take(page.limit).collect::<Vec<_>>(), more)
    };
    let mut recs = records(lookup, org, &ids).await?;
    {
        let m = read.read();
        for r in &mut recs {
            overlay(&m, org, r);
        }
    }
    recs.sort_by_key(|r| std::cmp::Reverse(r.get("id").and_then(Value::as_u64)));
    let next = (more && !ids.is_empty()).then(|| ids[ids.len() - 1].to_string());
    Ok(json!({"lead_id": lead, "signals": recs, "next_cursor": next}))
}
