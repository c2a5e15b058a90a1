//! The org API's actions that change something or run work: manual processing, retrieval,
//! mapping-rule CRUD, and SQL.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use trailspark_core::rules::{Combinator, Condition, FieldMapping, RuleDef, SignalType};
use trailspark_core::tenancy::{MappingRule, OrgId, Principal, Role};
use trailspark_core::time::rfc3339_text;
use trailspark_operators::Signal;
use trailspark_queries::explorer::preview;
use trailspark_queries::explorer::retrieval::{self, RehydrateBody};
use trailspark_queries::output::{encode, Format};
use trailspark_sources::{IngestError, Reply, Request};
use utoipa::ToSchema;
use warp::http::StatusCode;

use crate::http::reply::{error, json_body, not_found, require, sql_error, view_error};
use crate::http::{answers, Api};

/// `POST /api/explorer/process`: processes the org's signals now against every current rule
/// (a logged event makes each live rule cover all of the org's signals, also those from
/// before the rule; the dataflow re-derives exactly the signals whose outcome changes),
/// waits until the dataflow has applied it, and answers the counts.
pub async fn process_now(api: &Api, org: OrgId) -> Result<Reply, Reply> {
    let started = Instant::now();
    let rules = api.control.registry.read().unwrap().rules_of(org).count();
    let last = api.control.process_all(org).await?;
    if !api
        .read
        .wait_settled(Some(org.0), last, Duration::from_secs(300))
        .await
    {
        return Err(error(
            StatusCode::GATEWAY_TIMEOUT,
            "not_yet_applied",
            "processing did not finish within 300 s; it goes on in the background",
        ));
    }
    let s = api.read.read().org(org.0).stats;
    Ok(Reply::json(
        StatusCode::OK,
        answers::json(answers::Processed {
            processed: s.processed + s.failed + s.skipped,
            successful: s.processed,
            failed: s.failed,
            skipped: s.skipped,
            pending: s.pending,
            rules,
            duration_ms: started.elapsed().as_millis() as u64,
            log_position: last,
        }),
    ))
}

/// Spec 13's retrieval: finds archived signals by date range and filters, counts them against
/// the raw-signal limit (a logged event, so usage survives restarts), and brings those not
/// live back into the explorer for `ttl_hours`. The live copy is the server's memory: a
/// restart ends a rehydration early (the usage stays counted).
pub async fn rehydrate(api: &Api, org: OrgId, req: Request) -> Result<Reply, Reply> {
    let body: RehydrateBody = json_body(req).await?;
    let found = retrieval::find(
        api.lookup.as_ref(),
        &api.read,
        &api.control.registry,
        org.0,
        &body,
    )
    .await
    .map_err(view_error)?;
    let n = found.signals.len() as u64;
    let now = chrono::Utc::now().timestamp_millis();
    let month = Signal::month_of(now);
    let plan = api.control.registry.read().unwrap().plan(org);
    api.ingest
        .quota
        .reserve(org, month, &plan, n)
        .map_err(|refused| Reply::from(IngestError::LimitReached(refused)))?;
    let pos = match api.control.commit_rehydration(org, month, n).await {
        Ok(pos) => pos,
        Err(e) => {
            api.ingest.quota.release(org, month, n);
            return Err(e.into());
        }
    };
    let until = now + (found.ttl_hours * 3_600_000) as i64;
    let brought = api.read.rehydrate(org.0, found.signals, until);
    Ok(Reply::json(
        StatusCode::OK,
        answers::json(answers::Rehydrated {
            matched: found.matched,
            rehydrated: brought,
            already_live: found.already_live,
            until: rfc3339_text(until),
            log_position: pos,
        }),
    ))
}

/// A rule body: the definition plus `reprocess` (re-derive affected signals). Not a
/// `#[serde(flatten)]` of the definition: flattening would accept any unknown field.
struct RuleBody {
    def: RuleDef,
    reprocess: bool,
}

impl<'de> Deserialize<'de> for RuleBody {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let mut v = serde_json::Map::<String, Value>::deserialize(d)?;
        let reprocess = match v.remove("reprocess") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => b,
            Some(_) => return Err(D::Error::custom("`reprocess` must be true or false")),
        };
        let def = RuleDef::deserialize(Value::Object(v)).map_err(D::Error::custom)?;
        Ok(RuleBody { def, reprocess })
    }
}

/// A mapping rule as the API shows it: its definition's fields, listed (the definition
/// refuses unknown fields, so a flattened schema would refuse `id`), with its id, version
/// and times.
#[derive(Serialize, ToSchema)]
pub struct RuleView {
    pub id: u64,
    /// Counts the rule's edits, from 1.
    pub version: u64,
    /// RFC 3339.
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
    pub name: String,
    pub signal_type: SignalType,
    pub description: Option<String>,
    pub high_intent: bool,
    pub priority: i32,
    pub combinator: Combinator,
    pub conditions: Vec<Condition>,
    pub mappings: Vec<FieldMapping>,
}

impl RuleView {
    pub fn of(r: &MappingRule) -> RuleView {
        let d = r.def.clone();
        RuleView {
            id: r.id,
            version: r.version,
            created_at: rfc3339_text(r.created_at),
            updated_at: rfc3339_text(r.updated_at),
            name: d.name,
            signal_type: d.signal_type,
            description: d.description,
            high_intent: d.high_intent,
            priority: d.priority,
            combinator: d.combinator,
            conditions: d.conditions,
            mappings: d.mappings,
        }
    }
}

fn rule_json(r: &MappingRule) -> Value {
    serde_json::to_value(RuleView::of(r)).expect("rules serialize")
}

/// A rule change's answer: the rule as it now is, with the log position of the change.
fn rule_reply(status: StatusCode, rule: &MappingRule, pos: u64) -> Reply {
    let mut v = rule_json(rule);
    v["log_position"] = json!(pos);
    Reply::json(status, v)
}

fn rule_id(id: &str) -> Result<u64, Reply> {
    id.parse().map_err(|_| not_found("rule"))
}

/// `POST /api/mapping-rules/preview`: what a rule body would match, saving nothing.
pub async fn preview_rule(api: &Api, p: &Principal, req: Request) -> Result<Reply, Reply> {
    require(p, Role::Editor)?;
    let body: RuleBody = json_body(req).await?;
    let v = preview::preview(
        api.lookup.as_ref(),
        &api.read,
        &api.control.registry,
        p.org_id.0,
        body.def,
        preview::BUDGET,
    )
    .await
    .map_err(view_error)?;
    Ok(Reply::json(StatusCode::OK, v))
}

pub fn list_rules(api: &Api, p: &Principal) -> Result<Reply, Reply> {
    require(p, Role::Editor)?;
    let reg = api.control.registry.read().unwrap();
    let rules: Vec<Value> = reg.rules_of(p.org_id).map(rule_json).collect();
    Ok(Reply::json(StatusCode::OK, json!({"rules": rules})))
}

pub fn get_rule(api: &Api, p: &Principal, id: &str) -> Result<Reply, Reply> {
    require(p, Role::Editor)?;
    let reg = api.control.registry.read().unwrap();
    let rule = id
        .parse()
        .ok()
        .and_then(|id| reg.rule(id))
        .filter(|r| r.org_id == p.org_id && r.deleted_at.is_none());
    Ok(Reply::json(
        StatusCode::OK,
        rule_json(rule.ok_or_else(|| not_found("rule"))?),
    ))
}

pub async fn create_rule(api: &Api, p: &Principal, req: Request) -> Result<Reply, Reply> {
    require(p, Role::Editor)?;
    let body: RuleBody = json_body(req).await?;
    let (rule, pos) = api
        .control
        .create_rule(p.org_id, body.def, body.reprocess)
        .await?;
    Ok(rule_reply(StatusCode::CREATED, &rule, pos))
}

pub async fn update_rule(api: &Api, p: &Principal, id: &str, req: Request) -> Result<Reply, Reply> {
    require(p, Role::Editor)?;
    let id = rule_id(id)?;
    let body: RuleBody = json_body(req).await?;
    let (rule, pos) = api
        .control
        .update_rule(p.org_id, id, body.def, body.reprocess)
        .await?;
    Ok(rule_reply(StatusCode::OK, &rule, pos))
}

pub async fn delete_rule(api: &Api, p: &Principal, id: &str) -> Result<Reply, Reply> {
    require(p, Role::Editor)?;
    let (rule, pos) = api.control.delete_rule(p.org_id, rule_id(id)?).await?;
    Ok(rule_reply(StatusCode::OK, &rule, pos))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SqlBody {
    sql: String,
}

/// `POST /api/sql`: one read query over the caller's org, answered in the format the
/// `Accept` header asks for (JSON by default).
pub async fn sql(api: &Api, org: u64, req: Request) -> Result<Reply, Reply> {
    let accept = req
        .headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body: SqlBody = json_body(req).await?;
    let started = std::time::Instant::now();
    let out = api.sql.query(org, &body.sql).await;
    let m = &crate::metrics::METRICS;
    m.sql_duration.observe(started.elapsed().as_secs_f64());
    let outcome = out.as_ref().map_or_else(|e| e.code(), |_| "ok");
    m.sql_queries.with_label_values(&[outcome]).inc();
    let out = out.map_err(sql_error)?;
    let format = Format::from_accept(accept.as_deref());
    let bytes = encode(&out, format).map_err(|e| {
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            e.to_string(),
        )
    })?;
    Ok(Reply::bytes(StatusCode::OK, format.content_type(), bytes))
}
