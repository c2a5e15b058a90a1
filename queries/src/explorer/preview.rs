//! "Preview matching signals": what a mapping rule would match, before it is saved.
//!
//! The rule is evaluated by the dataflow's own function ([`evaluate`]) over the org's
//! history as the archive holds it (every accepted signal is archived as it arrives, the rows
//! not yet in a file included), so a preview reaches signals that retention or the hot window
//! took out of the live state. It stays cheap on a large org: conditions that pin a column
//! (`equals` on `source`, `event_type` or `event_name`, in an `all` rule) become filters the
//! scan prunes files and row groups with; the answer keeps a bounded sample; and the scan
//! stops when its time is up, saying how far it got.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;
use trailspark_core::rules::{Combinator, Op, Operand, RuleDef};
use trailspark_core::tenancy::SharedRegistry;
use trailspark_core::time::rfc3339_text;
use trailspark_core::OrgId;
use trailspark_operators::identity::IdentityConfig;
use trailspark_operators::rules::{evaluate, RuleVersion};
use trailspark_operators::status::{cold, derive_status};
use trailspark_operators::{Ident, Signal};
use trailspark_sinks::archive::{from_batch, Kind};
use trailspark_sinks::read_models::{lead_id, ReadModels};

use super::ViewError;
use crate::lookup::{ArchiveLookup, LookupFilter};
use utoipa::ToSchema;

/// Signals shown in a preview's sample.
pub const SAMPLE: usize = 20;
/// How long a preview may scan.
pub const BUDGET: Duration = Duration::from_secs(10);

/// The scan's filters implied by the rule: only what every matching signal must satisfy.
fn pinned(def: &RuleDef) -> Vec<(&'static str, String)> {
    if def.combinator != Combinator::All {
        return Vec::new();
    }
    def.conditions
        .iter()
        .filter(|c| c.op == Op::Equals)
        .filter_map(|c| {
            let col = match c.field.as_str() {
                "source" => "source",
                "event_type" => "event_type",
                "event_name" => "event_name",
                _ => return None,
            };
            match &c.value {
                Some(Operand::One(v)) => Some((col, v.clone())),
                _ => None,
            }
        })
        .collect()
}

/// `POST /api/mapping-rules/preview`: what the rule would match, saving nothing.
#[derive(Serialize, ToSchema)]
pub struct Preview {
    /// Signals the rule matches.
    pub matched: usize,
    /// Signals looked at.
    pub scanned: usize,
    /// Whether every signal was looked at (false when the time bound cut the scan).
    pub complete: bool,
    /// Up to 20 matched signals.
    pub sample: Vec<PreviewRow>,
    pub duration_ms: u64,
}

/// A matched signal: what it is now and what the rule would make of it.
#[derive(Serialize, ToSchema)]
pub struct PreviewRow {
    pub id: u64,
    pub source: String,
    pub event_type: String,
    pub event_name: Option<String>,
    pub received_at: Option<String>,
    /// The status the signal would have: the rule's outcome when the rule would take it,
    /// else the current one.
    pub status: Option<String>,
    pub error: Option<String>,
    pub current_status: Option<String>,
    pub current_rule_id: Option<u64>,
    /// Whether the rule would take the signal from the rule that holds it now.
    pub wins: bool,
    pub lead_id: Option<String>,
    /// The signal as sent.
    #[schema(value_type = serde_json::Value)]
    pub payload: Value,
}

/// What a preview found so far.
struct Found {
    matched: usize,
    scanned: usize,
    sample: Vec<PreviewRow>,
}

/// `POST /api/mapping-rules/preview`: how many of the org's signals `def` matches, and a
/// sample of them with the status each would get, without saving anything.
pub async fn preview(
    lookup: Option<&ArchiveLookup>,
    read: &Arc<ReadModels>,
    registry: &SharedRegistry,
    org: u64,
    def: RuleDef,
    budget: Duration,
) -> Result<Value, ViewError> {
    def.validate().map_err(ViewError::BadRequest)?;
    let Some(lookup) = lookup else {
        return Err(ViewError::Unavailable(
            "this server has no archive to preview over".into(),
        ));
    };
    let started = Instant::now();
    let now = chrono::Utc::now().timestamp_millis();
    let filter = LookupFilter {
        equals: pinned(&def),
        ..Default::default()
    };
    let rule = RuleVersion {
        org,
        rule_id: 0,
        version: 0,
        created_at: now,
        from_pos: 0,
        until_pos: None,
        def: Arc::new(def),
    };
    let (read, registry) = (read.clone(), registry.clone());
    let state = Arc::new(std::sync::Mutex::new(Found {
        matched: 0,
        scanned: 0,
        sample: Vec::new(),
    }));
    let shared = state.clone();
    let each = move |batch: &arrow::array::RecordBatch| {
        let mut found = shared.lock().unwrap();
        let Ok(rows) = from_batch(OrgId(org), batch) else {
            return false;
        };
        // Evaluated without a lock; the models are read only for what matched.
        let matches: Vec<_> = rows
            .into_iter()
            .filter_map(|row| {
                let signal = Signal::from_record(row.id, &row.record);
                evaluate(&rule, &signal).map(|m| (row, signal, m))
            })
            .collect();
        found.scanned += batch.num_rows();
        if matches.is_empty() {
            return true;
        }
        let m = read.read();
        let reg = registry.read().unwrap();
        for (row, signal, matched) in matches {
            let current = m.processed(org, row.id);
            // A retry the log took in but never staged: not a signal of its own.
            if current.is_none() && row.processing.status.is_none() {
                continue;
            }
            found.matched += 1;
            if found.sample.len() >= SAMPLE {
                continue;
            }
            // It takes a signal only from a rule it outranks: a lower priority wins, and at an
            // equal one the older rule keeps it (this one would be the newest).
            let holder = current
                .as_ref()
                .and_then(|p| p.rule_id)
                .and_then(|id| reg.rule(id));
            let wins = holder.is_none_or(|r| rule.def.priority < r.def.priority);
            let lead: Option<Ident> = current.as_ref().and_then(|p| p.lead.clone()).or_else(|| {
                matched
                    .ids
                    .first()
                    .map(|(k, v)| Ident::new(org, *k, v.as_str()))
            });
            let would = derive_status(
                &signal,
                cold(&signal, &IdentityConfig::default()),
                Some(&matched),
                lead.as_ref(),
            );
            let current_status = current
                .as_ref()
                .map(|p| p.status.as_str())
                .or(row.processing.status.as_deref());
            let status = if wins {
                Some(would.status.as_str())
            } else {
                current_status
            };
            found.sample.push(PreviewRow {
                id: row.id,
                source: row.record.source.to_string(),
                event_type: row.record.event_type.to_string(),
                event_name: row.record.event_name.as_deref().map(str::to_string),
                received_at: rfc3339_text(row.record.received_at),
                status: status.map(str::to_string),
                error: if wins { would.error.as_deref() } else { None }.map(str::to_string),
                current_status: current_status.map(str::to_string),
                current_rule_id: holder.map(|r| r.id),
                wins,
                lead_id: lead.as_ref().map(lead_id),
                payload: serde_json::from_str::<Value>(&row.record.payload).unwrap_or(Value::Null),
            });
        }
        true
    };
    let (each, complete) = lookup
        .scan(
            org,
            &[Kind::Signals, Kind::Anonymous],
            &filter,
            budget,
            each,
        )
        .await?;
    drop(each);
    let found = std::mem::replace(
        &mut *state.lock().unwrap(),
        Found {
            matched: 0,
            scanned: 0,
            sample: Vec::new(),
        },
    );
    let preview = Preview {
        matched: found.matched,
        scanned: found.scanned,
        complete,
        sample: found.sample,
        duration_ms: started.elapsed().as_millis() as u64,
    };
    Ok(serde_json::to_value(preview).expect("previews serialize"))
}
