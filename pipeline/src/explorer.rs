//! The Signal Explorer (spec 11) beyond its statistics: the processed and failed tabs with
//! cursor pagination, one signal with its raw payload, a lead's timeline, and manual
//! processing.
//!
//! Outcomes come from the read models (they are current: a rule edit with reprocess changes
//! them at once), payloads from the SQL engine's `signals` and `anonymous_signals` tables
//! (archive files plus the rows not yet in a file), so the explorer reads what SQL reads.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use trailspark_core::tenancy::OrgId;
use trailspark_operators::graph::{Processed, Status};
use warp::http::StatusCode;

use crate::admin::{error, rfc3339};
use crate::engine::read::{lead_id, Models, Tab};
use crate::engine::Engine;
use crate::sql::status_str;
use crate::state::AppState;
use trailspark_sources::routes::Reply;

/// Most rows one page may have.
pub const MAX_PAGE: usize = 500;
const DEFAULT_PAGE: usize = 50;

/// The page size and cursor of a list request.
pub struct Page {
    pub limit: usize,
    /// Rows strictly older (smaller id) than this; the first page when `None`.
    pub cursor: Option<u64>,
}

impl Page {
    pub fn parse(limit: Option<String>, cursor: Option<String>) -> Result<Page, Reply> {
        let limit = match limit {
            None => DEFAULT_PAGE,
            Some(l) => l
                .parse()
                .ok()
                .filter(|l| (1..=MAX_PAGE).contains(l))
                .ok_or_else(|| bad(format!("limit must be 1-{MAX_PAGE}")))?,
        };
        let cursor = cursor
            .map(|c| {
                c.parse()
                    .map_err(|_| bad("cursor must be the next_cursor of a previous page"))
            })
            .transpose()?;
        Ok(Page { limit, cursor })
    }
}

fn bad(msg: impl Into<String>) -> Reply {
    error(StatusCode::BAD_REQUEST, "invalid_request", msg)
}

fn status_badge(s: Status) -> &'static str {
    match s {
        Status::Completed => "Processed",
        Status::Failed => "Failed",
        Status::Skipped => "Skipped",
        Status::Pending => "Pending",
    }
}

/// One row of a tab. `processed_at`/`failed_at` are when the signal entered processing: the
/// dataflow decides an outcome in the epoch the signal arrives in (or, after a rule edit
/// with reprocess, the epoch of the edit), so it is the receipt time to within that epoch.
fn row_json(id: u64, p: &Processed) -> Value {
    match Tab::of(p.status) {
        Tab::Processed => json!({
            "id": id,
            "signal_name": p.rule_name.clone().unwrap_or_else(|| p.event_type.clone()),
            "source": p.source,
            "lead_id": p.lead.as_ref().map(lead_id),
            "processed_at": rfc3339(p.received_at),
            "rule_id": p.rule_id,
            "rule": p.rule_name,
            "signal_type": p.signal_type,
        }),
        Tab::Failed => json!({
            "id": id,
            "event_type": p.event_type,
            "source": p.source,
            "status": status_badge(p.status),
            "error": p.error,
            "failed_at": rfc3339(p.received_at),
            "rule_id": p.rule_id,
        }),
        Tab::Pending => json!({
            "id": id,
            "event_type": p.event_type,
            "source": p.source,
            "status": status_badge(p.status),
            "received_at": rfc3339(p.received_at),
        }),
    }
}

/// `GET /api/explorer/signals?tab=processed|failed|pending&limit=&cursor=`: newest first.
pub fn tab_page(m: &Models, org: u64, tab: &str, page: &Page) -> Result<Value, Reply> {
    let t = match tab {
        "processed" => Tab::Processed,
        "failed" => Tab::Failed,
        "pending" => Tab::Pending,
        other => {
            return Err(bad(format!(
                "tab must be processed, failed or pending, not `{other}`"
            )))
        }
    };
    let hi = page.cursor.unwrap_or(u64::MAX);
    let ids: Vec<u64> = m
        .tabs
        .range((org, t, 0)..(org, t, hi))
        .rev()
        .take(page.limit + 1)
        .map(|(_, _, id)| *id)
        .collect();
    let more = ids.len() > page.limit;
    let rows: Vec<Value> = ids
        .iter()
        .take(page.limit)
        .filter_map(|id| m.processed.get(&(org, *id)).map(|p| row_json(*id, &p)))
        .collect();
    let next = more.then(|| ids[page.limit - 1].to_string());
    Ok(json!({"tab": tab, "signals": rows, "next_cursor": next}))
}

/// The archived (or buffered) records with these ids, as JSON objects keyed by column, with
/// the payload parsed. Ids are numbers, so the query is built from them safely.
async fn records(
    state: &AppState,
    org: u64,
    ids: &[u64],
) -> Result<Vec<Map<String, Value>>, Reply> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let Some(sql) = state.sql.get() else {
        return Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "this server has no archive to read payloads from",
        ));
    };
    let list = ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
    let q = format!(
        "SELECT * FROM signals WHERE id IN ({list}) \
         UNION ALL SELECT * FROM anonymous_signals WHERE id IN ({list})"
    );
    let out = sql
        .query(org, &q, Vec::new())
        .await
        .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.code(), e.to_string()))?;
    let v = trailspark_queries::output::to_json(&out).map_err(|e| {
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            e.to_string(),
        )
    })?;
    let cols: Vec<String> = v["columns"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c.as_str().map(str::to_string))
        .collect();
    Ok(v["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|row| {
            let mut obj = Map::new();
            for (c, val) in cols.iter().zip(row.as_array().into_iter().flatten()) {
                let val = if c == "payload" {
                    val.as_str()
                        .and_then(|s| serde_json::from_str(s).ok())
                        .unwrap_or_else(|| val.clone())
                } else {
                    val.clone()
                };
                obj.insert(c.clone(), val);
            }
            obj
        })
        .collect())
}

/// Overlays a record with its current outcome (the archive holds the outcome at archive
/// time; a later rule edit or identify may have changed it).
fn overlay(m: &Models, org: u64, rec: &mut Map<String, Value>) {
    let Some(id) = rec.get("id").and_then(Value::as_u64) else {
        return;
    };
    match m.processed.get(&(org, id)) {
        Some(p) => {
            rec.insert("status".into(), json!(status_str(p.status)));
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

/// `GET /api/explorer/signals/{id}`: one signal with its raw payload and current outcome.
pub async fn signal_detail(
    state: &AppState,
    engine: &Engine,
    org: u64,
    id: u64,
) -> Result<Value, Reply> {
    let mut recs = records(state, org, &[id]).await?;
    let Some(mut rec) = recs.pop() else {
        return Err(error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no signal {id}"),
        ));
    };
    overlay(&engine.read.read(), org, &mut rec);
    Ok(Value::Object(rec))
}

/// `GET /api/leads/{id}/timeline?limit=&cursor=`: the lead's signals, newest first, each with
/// its payload and outcome.
pub async fn lead_timeline(
    state: &AppState,
    engine: &Engine,
    org: u64,
    lead: &str,
    page: &Page,
) -> Result<Value, Reply> {
    let (ids, more) = {
        let m = engine.read.read();
        let key = m
            .lead_ids
            .get(lead)
            .filter(|l| l.org == org)
            .ok_or_else(|| error(StatusCode::NOT_FOUND, "not_found", "no such lead"))?;
        let hi = page.cursor.unwrap_or(u64::MAX);
        let ids: Vec<u64> = m
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
    let mut recs = records(state, org, &ids).await?;
    {
        let m = engine.read.read();
        for r in &mut recs {
            overlay(&m, org, r);
        }
    }
    recs.sort_by_key(|r| std::cmp::Reverse(r.get("id").and_then(Value::as_u64)));
    let next = (more && !ids.is_empty()).then(|| ids[ids.len() - 1].to_string());
    Ok(json!({"lead_id": lead, "signals": recs, "next_cursor": next}))
}

/// `POST /api/explorer/process`: processes the org's signals now against every current rule
/// (a logged event makes each live rule cover all of the org's signals, also those from
/// before the rule; the dataflow re-derives exactly the signals whose outcome changes),
/// waits until the dataflow has applied it, and answers the counts.
pub async fn process_now(state: &AppState, engine: &Engine, org: OrgId) -> Result<Value, Reply> {
    let started = Instant::now();
    let rules = state.registry.read().unwrap().rules_of(org).count();
    let last = state.process_all(org).await?;
    if !engine.read.wait_for(last, Duration::from_secs(300)).await {
        return Err(error(
            StatusCode::GATEWAY_TIMEOUT,
            "not_yet_applied",
            "processing did not finish within 300 s; it goes on in the background",
        ));
    }
    let s = engine
        .read
        .read()
        .stats
        .get(&org.0)
        .copied()
        .unwrap_or_default();
    Ok(json!({
        "processed": s.processed + s.failed + s.skipped,
        "successful": s.processed,
        "failed": s.failed,
        "skipped": s.skipped,
        "pending": s.pending,
        "rules": rules,
        "duration_ms": started.elapsed().as_millis() as u64,
        "log_position": last,
    }))
}

/// Most signals one rehydration may bring back.
pub const MAX_REHYDRATE: usize = 100_000;

/// `POST /api/signals/rehydrate`: which archived signals to bring back, and for how long.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RehydrateBody {
    /// First and last receipt date, `YYYY-MM-DD` (UTC), inclusive.
    from: String,
    to: String,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    event_type: Option<String>,
    #[serde(default)]
    event_name: Option<String>,
    /// `signals` (default) or `anonymous_signals`.
    #[serde(default)]
    table: Option<String>,
    /// Refuse when more than this many match (default and most: 100,000).
    #[serde(default)]
    limit: Option<usize>,
    /// How long they stay live (default 24, at most 720).
    #[serde(default)]
    ttl_hours: Option<u64>,
}

fn sql_str(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
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

/// Spec 13's retrieval: finds archived signals by date range and filters, counts them against
/// the raw-signal limit (a logged event, so usage survives restarts), and brings those not
/// live back into the explorer for `ttl_hours`. The live copy is the server's memory: a
/// restart ends a rehydration early (the usage stays counted).
pub async fn rehydrate(
    state: &AppState,
    engine: &Engine,
    org: OrgId,
    body: RehydrateBody,
) -> Result<Value, Reply> {
    let day = |s: &str, name: &str| {
        chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
            .map(|d| d.format("%Y-%m-%d").to_string())
            .map_err(|_| bad(format!("{name} must be a date, YYYY-MM-DD")))
    };
    let (from, to) = (day(&body.from, "from")?, day(&body.to, "to")?);
    if to < from {
        return Err(bad("to is before from"));
    }
    let table = match body.table.as_deref() {
        None | Some("signals") => "signals",
        Some("anonymous_signals") => "anonymous_signals",
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
    let ttl = body.ttl_hours.unwrap_or(24);
    if !(1..=720).contains(&ttl) {
        return Err(bad("ttl_hours must be 1-720"));
    }
    let mut q = format!(
        "SELECT id, CAST(received_at AS BIGINT) AS received_at, CAST(event_at AS BIGINT) AS event_at, \
         source, event_type, status, rule_id, lead_id, error FROM {table} \
         WHERE date >= {} AND date <= {} AND status IS NOT NULL",
        sql_str(&from),
        sql_str(&to)
    );
    for (col, v) in [
        ("source", &body.source),
        ("event_type", &body.event_type),
        ("event_name", &body.event_name),
    ] {
        if let Some(v) = v {
            q.push_str(&format!(" AND {col} = {}", sql_str(v)));
        }
    }
    q.push_str(&format!(" ORDER BY id LIMIT {}", limit + 1));
    let Some(sql) = state.sql.get() else {
        return Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "this server has no archive",
        ));
    };
    let out = sql
        .query(org.0, &q, Vec::new())
        .await
        .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.code(), e.to_string()))?;
    let v = trailspark_queries::output::to_json(&out).map_err(|e| {
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            e.to_string(),
        )
    })?;
    let rows = v["rows"].as_array().cloned().unwrap_or_default();
    if rows.len() > limit {
        return Err(error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "too_many_signals",
            format!("more than {limit} archived signals match; narrow the dates or filters"),
        ));
    }
    // The archive's outcome of each, as live state holds outcomes.
    let (signals, already_live) = {
        let m = engine.read.read();
        let reg = state.registry.read().unwrap();
        let mut signals = Vec::new();
        let mut live = 0;
        for r in &rows {
            let (Some(id), Some(status)) = (r[0].as_u64(), r[5].as_str().and_then(parse_status))
            else {
                continue;
            };
            if m.processed.contains_key(&(org.0, id)) {
                live += 1;
                continue;
            }
            let rule_id = r[6].as_u64();
            let rule = rule_id.and_then(|id| reg.rule(id));
            signals.push((
                id,
                Processed {
                    status,
                    error: r[8].as_str().map(Arc::from),
                    rule_id,
                    rule_name: rule.map(|r| Arc::from(r.def.name.as_str())),
                    signal_type: rule.map(|r| r.def.signal_type),
                    high_intent: rule.is_some_and(|r| r.def.high_intent),
                    lead: r[7].as_str().and_then(|l| m.lead_ids.get(l)).cloned(),
                    source: Arc::from(r[3].as_str().unwrap_or_default()),
                    event_type: Arc::from(r[4].as_str().unwrap_or_default()),
                    received_at: r[1].as_i64().unwrap_or_default(),
                    event_at: r[2].as_i64().unwrap_or_default(),
                },
            ));
        }
        (signals, live)
    };
    let n = signals.len() as u64;
    let now = chrono::Utc::now().timestamp_millis();
    let month = trailspark_operators::Signal::month_of(now);
    let plan = state.registry.read().unwrap().plan(org);
    state
        .quota
        .reserve_n(org, month, &plan, n)
        .map_err(Reply::from)?;
    let pos = match state.commit_rehydration(org, month, n).await {
        Ok(pos) => pos,
        Err(e) => {
            state.quota.release_n(org, month, n);
            return Err(e.into());
        }
    };
    let until = now + (ttl * 3_600_000) as i64;
    let brought = engine.read.rehydrate(org.0, signals, until);
    Ok(json!({
        "matched": rows.len(),
        "rehydrated": brought,
        "already_live": already_live,
        "until": rfc3339(until),
        "log_position": pos,
    }))
}
