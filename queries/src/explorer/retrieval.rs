//! Retrieval: which archived signals a `POST /api/signals/rehydrate` brings back
//! into the explorer, and the outcome each comes back with. Counting them against the plan
//! and putting them into the models is the server's part.

use std::sync::Arc;

use trailspark_core::Registry;
use trailspark_operators::status::{Processed, Status};
use trailspark_sinks::archive::Kind;
use trailspark_sinks::read_models::ReadModels;

use super::ViewError;
use crate::lookup::{ArchiveLookup, LookupFilter};

/// Most signals one rehydration may bring back.
pub const MAX_REHYDRATE: usize = 100_000;

/// `POST /api/signals/rehydrate`: which archived signals to bring back, and for how long.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RehydrateBody {
    /// First and last receipt date, `YYYY-MM-DD` (UTC), inclusive.
    pub from: String,
    pub to: String,
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub event_type: Option<String>,
    #[serde(default)]
    pub event_name: Option<String>,
    /// `signals` (default) or `anonymous_signals`.
    #[serde(default)]
    pub table: Option<String>,
    /// Refuse when more than this many match (default and most: 100,000).
    #[serde(default)]
    pub limit: Option<usize>,
    /// How long they stay live (default 24, at most 720).
    #[serde(default)]
    pub ttl_hours: Option<u64>,
}

/// What a retrieval found.
pub struct Found {
    /// Archived signals matching the request.
    pub matched: usize,
    /// Those of them not live now, with their archived outcome.
    pub signals: Vec<(u64, Processed)>,
    /// Those of them already live.
    pub already_live: usize,
    /// How long they are to stay live, in hours.
    pub ttl_hours: u64,
}

fn parse_status(s: &str) -> Option<Status> {
    Some(match s {
        "completed" => Status::Completed,
        "failed" => Status::Failed,
        "skipped" => Status::Skipped,
        "pending" => Status::Pending,
        _ => return None,
    })
}

/// Checks the request and finds the archived signals it names, each with the outcome the
/// archive holds (its rule's current name and type from the registry, its lead if the lead
/// still exists).
pub async fn find(
    lookup: Option<&ArchiveLookup>,
    read: &ReadModels,
    registry: &std::sync::RwLock<Registry>,
    org: u64,
    body: &RehydrateBody,
) -> Result<Found, ViewError> {
    let bad = |m: String| ViewError::BadRequest(m);
    let day = |s: &str, name: &str| {
        chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
            .map(|d| d.format("%Y-%m-%d").to_string())
            .map_err(|_| bad(format!("{name} must be a date, YYYY-MM-DD")))
    };
    let (from, to) = (day(&body.from, "from")?, day(&body.to, "to")?);
    if to < from {
        return Err(bad("to is before from".into()));
    }
    let kind = match body.table.as_deref() {
        None | Some("signals") => Kind::Signals,
        Some("anonymous_signals") => Kind::Anonymous,
        Some(other) => {
            return Err(bad(format!(
                "table must be signals or anonymous_signals, not `{other}`"
            )))
        }
    };
    let limit = body.limit.unwrap_or(MAX_REHYDRATE);
    if !(1..=MAX_REHYDRATE).contains(&limit) {
        return Err(bad(format!("limit must be 1-{MAX_REHYDRATE}")));
    }
    let ttl_hours = body.ttl_hours.unwrap_or(24);
    if !(1..=720).contains(&ttl_hours) {
        return Err(bad("ttl_hours must be 1-720".into()));
    }
    let Some(lookup) = lookup else {
        return Err(ViewError::Unavailable("this server has no archive".into()));
    };
    let mut equals = Vec::new();
    for (col, v) in [
        ("source", &body.source),
        ("event_type", &body.event_type),
        ("event_name", &body.event_name),
    ] {
        if let Some(v) = v {
            equals.push((col, v.clone()));
        }
    }
    let filter = LookupFilter {
        dates: Some((from, to)),
        equals,
        with_status: true,
        limit: Some(limit + 1),
        ..Default::default()
    };
    let rows = lookup.rows(org, &[kind], &filter).await?;
    if rows.len() > limit {
        return Err(ViewError::TooMany(format!(
            "more than {limit} archived signals match; narrow the dates or filters"
        )));
    }
    let m = read.read();
    let reg = registry.read().unwrap();
    let mut signals = Vec::new();
    let mut already_live = 0;
    for r in &rows {
        let Some(status) = r.processing.status.as_deref().and_then(parse_status) else {
            continue;
        };
        if m.processed(org, r.id).is_some() {
            already_live += 1;
            continue;
        }
        let rule_id = r.processing.rule_id;
        let rule = rule_id.and_then(|id| reg.rule(id));
        signals.push((
            r.id,
            Processed {
                status,
                error: r.processing.error.as_deref().map(Arc::from),
                rule_id,
                rule_name: rule.map(|r| Arc::from(r.def.name.as_str())),
                signal_type: rule.map(|r| r.def.signal_type),
                high_intent: rule.is_some_and(|r| r.def.high_intent),
                lead: r
                    .processing
                    .lead_id
                    .as_deref()
                    .and_then(|l| m.lead(org, l))
                    .cloned(),
                source: Arc::from(r.record.source.as_str()),
                event_type: Arc::from(r.record.event_type.as_str()),
                received_at: r.record.received_at,
                event_at: r.record.event_at,
            },
        ));
    }
    Ok(Found {
        matched: rows.len(),
        signals,
        already_live,
        ttl_hours,
    })
}
