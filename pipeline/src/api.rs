//! The org-scoped API over the dataflow's read models: explorer statistics, leads, signal
//! groups, usage, identity conflicts, and the mapping-rule CRUD (config events on the log).
//!
//! Every GET takes `?wait_for=<log position>`: it first waits (up to 10 s) until the read
//! models reflect that position, so a client that got `log_position` in a 202 can read its
//! own write without sleeping. Answers carry `log_position`, the position they reflect.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};
use trailspark_core::rules::RuleDef;
use trailspark_core::tenancy::{MappingRule, Principal, Role};
use trailspark_operators::graph::{GroupRow, Meter, Status};
use trailspark_operators::groups::{title, GroupKey};
use trailspark_operators::product_orgs::ProductOrg;
use trailspark_operators::{IdKind, Ident, Signal};
use trailspark_sources::routes::{Reply, Request};
use warp::http::{Method, StatusCode};

use crate::admin::{authenticate, error, json_body, require, rfc3339};
use crate::engine::read::{lead_id, Models};
use crate::engine::Engine;
use crate::explorer::{self, Page};
use crate::state::AppState;
use trailspark_queries::output::Format;

const WAIT_LIMIT: Duration = Duration::from_secs(10);

/// A query parameter, decoded as `application/x-www-form-urlencoded` (how clients send
/// query strings); the first one when it is repeated.
fn query_param(query: &str, name: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// A path segment, percent-decoded.
fn path_segment(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// Handles `/api/explorer/…`, `/api/leads…`, `/api/signal-queue/…`, `/api/usage`,
/// `/api/mapping-rules…`; `None` for other paths.
pub async fn route(state: Arc<AppState>, req: Request) -> Option<Reply> {
    let path = req.path.trim_matches('/').to_string();
    let segs: Vec<&str> = path.split('/').collect();
    let ours = matches!(
        segs.as_slice(),
        ["api", "explorer", ..]
            | ["api", "leads", ..]
            | ["api", "signal-queue", ..]
            | ["api", "usage"]
            | ["api", "identity", ..]
            | ["api", "product-orgs", ..]
            | ["api", "mapping-rules", ..]
            | ["api", "sql"]
            | ["api", "signals", "rehydrate"]
    );
    if !ours {
        return None;
    }
    Some(match authenticate(&state, &req) {
        Ok(principal) => dispatch(&state, principal, &segs[1..], req)
            .await
            .unwrap_or_else(|r| r),
        Err(r) => r,
    })
}

async fn dispatch(
    state: &AppState,
    p: Principal,
    segs: &[&str],
    req: Request,
) -> Result<Reply, Reply> {
    let Some(engine) = state.engine.clone() else {
        return Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the dataflow is not running",
        ));
    };
    let method = req.method.clone();
    let query = req.query.clone();
    if method == Method::GET || segs == ["sql"] {
        if let Some(w) = query_param(&query, "wait_for") {
            let pos: u64 = w.parse().map_err(|_| {
                error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "wait_for must be a log position",
                )
            })?;
            if !engine.read.wait_for(pos, WAIT_LIMIT).await {
                return Err(error(
                    StatusCode::GATEWAY_TIMEOUT,
                    "not_yet_applied",
                    format!(
                        "the read models did not reach log position {pos} within {} s",
                        WAIT_LIMIT.as_secs()
                    ),
                ));
            }
        }
    }
    let org = p.org_id.0;
    let applied = engine.read.applied();
    let with_pos = |mut v: Value| {
        v["log_position"] = json!(applied);
        Reply::json(StatusCode::OK, v)
    };
    match (segs, &method) {
        (["explorer", "stats"], &Method::GET) => {
            require(&p, Role::Editor)?;
            let s = engine
                .read
                .read()
                .stats
                .get(&org)
                .copied()
                .unwrap_or_default();
            Ok(with_pos(serde_json::to_value(s).unwrap()))
        }
        (["explorer", "signals"], &Method::GET) => {
            require(&p, Role::Editor)?;
            let page = Page::parse(query_param(&query, "limit"), query_param(&query, "cursor"))?;
            let tab = query_param(&query, "tab").unwrap_or_else(|| "processed".into());
            let v = explorer::tab_page(&engine.read.read(), org, &tab, &page)?;
            Ok(with_pos(v))
        }
        (["explorer", "signals", id], &Method::GET) => {
            require(&p, Role::Editor)?;
            let id = id.parse().map_err(|_| not_found("signal"))?;
            Ok(with_pos(
                explorer::signal_detail(state, &engine, org, id).await?,
            ))
        }
        (["explorer", "process"], &Method::POST) => {
            require(&p, Role::Editor)?;
            let v = explorer::process_now(state, &engine, p.org_id).await?;
            Ok(Reply::json(StatusCode::OK, v))
        }
        (["signals", "rehydrate"], &Method::POST) => {
            require(&p, Role::Admin)?;
            let body: explorer::RehydrateBody = json_body(req).await?;
            let v = explorer::rehydrate(state, &engine, p.org_id, body).await?;
            Ok(Reply::json(StatusCode::OK, v))
        }
        (["leads", id, "timeline"], &Method::GET) => {
            // Raw payloads, as in signal detail: the same role.
            require(&p, Role::Editor)?;
            let page = Page::parse(query_param(&query, "limit"), query_param(&query, "cursor"))?;
            let v = explorer::lead_timeline(state, &engine, org, &path_segment(id), &page).await?;
            Ok(with_pos(v))
        }
        (["product-orgs", id], &Method::GET) => {
            let m = engine.read.read();
            let key = (org, path_segment(id));
            let po = m
                .product_orgs
                .get(&key)
                .ok_or_else(|| not_found("product org"))?;
            Ok(with_pos(product_org_json(&key.1, po)))
        }
        (["leads", id, "evaluation-context"], &Method::GET) => {
            let m = engine.read.read();
            let lead = lead_by_id(&m, org, id)?;
            let days: i64 = match query_param(&query, "lookback_days") {
                Some(d) => d
                    .parse()
                    .ok()
                    .filter(|d| (1..=365).contains(d))
                    .ok_or_else(|| {
                        error(
                            StatusCode::BAD_REQUEST,
                            "invalid_request",
                            "lookback_days must be 1-365",
                        )
                    })?,
                None => 90,
            };
            Ok(with_pos(evaluation_context(&m, lead, days)))
        }
        (["leads", id], &Method::GET) => {
            let m = engine.read.read();
            let lead = lead_by_id(&m, org, id)?;
            Ok(with_pos(lead_json(&m, lead)))
        }
        (["leads"], &Method::GET) => {
            let m = engine.read.read();
            let wanted = [
                ("email", IdKind::Email),
                ("user_id", IdKind::UserId),
                ("anonymous_id", IdKind::AnonymousId),
                ("crm_id", IdKind::CrmId),
            ]
            .into_iter()
            .find_map(|(name, kind)| query_param(&query, name).map(|v| (kind, v)));
            let Some((kind, value)) = wanted else {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "look leads up by ?email=, ?user_id=, ?anonymous_id= or ?crm_id=",
                ));
            };
            let value = if kind == IdKind::Email {
                value.trim().to_lowercase()
            } else {
                value
            };
            let lead = m
                .lead_of
                .get(&Ident::new(org, kind, value))
                .ok_or_else(|| not_found("lead"))?;
            Ok(with_pos(lead_json(&m, lead)))
        }
        (["signal-queue", "groups"], &Method::GET) => {
            require(&p, Role::Editor)?;
            let mapped = query_param(&query, "tab").as_deref() == Some("mapped");
            let m = engine.read.read();
            let groups: Vec<Value> = m
                .groups_of(org, mapped)
                .into_iter()
                .map(|(k, row)| group_json(k, row))
                .collect();
            Ok(with_pos(
                json!({"tab": if mapped { "mapped" } else { "unmapped" }, "groups": groups}),
            ))
        }
        (["identity", "conflicts"], &Method::GET) => {
            require(&p, Role::Editor)?;
            let m = engine.read.read();
            let conflicts: Vec<Value> = m
                .conflicts
                .iter()
                .filter(|(i, _)| i.org == org)
                .map(|(i, kind)| json!({"identifier": ident_json(i), "refused_links_to": kind.as_str()}))
                .collect();
            Ok(with_pos(json!({"conflicts": conflicts})))
        }
        (["usage"], &Method::GET) => {
            let month = match query_param(&query, "period") {
                Some(pstr) => parse_period(&pstr).ok_or_else(|| {
                    error(
                        StatusCode::BAD_REQUEST,
                        "invalid_request",
                        "period must be YYYY-MM",
                    )
                })?,
                None => Signal::month_of(chrono::Utc::now().timestamp_millis()),
            };
            let (plan, rehydrated) = {
                let reg = state.registry.read().unwrap();
                (reg.plan(p.org_id), reg.rehydrated(p.org_id, month))
            };
            let mut used = engine.read.read().usage_of(org, month);
            // Rehydrated archive signals count as raw signals (spec 13).
            *used.entry(Meter::RawSignals).or_default() += rehydrated as i64;
            Ok(with_pos(usage_json(month, &used, &plan)))
        }
        (["mapping-rules"], &Method::GET) => {
            require(&p, Role::Editor)?;
            let reg = state.registry.read().unwrap();
            let rules: Vec<Value> = reg.rules_of(p.org_id).map(rule_json).collect();
            Ok(Reply::json(StatusCode::OK, json!({"rules": rules})))
        }
        (["mapping-rules"], &Method::POST) => {
            require(&p, Role::Editor)?;
            let body: RuleBody = json_body(req).await?;
            let (rule, pos) = state
                .create_rule(p.org_id, body.def, body.reprocess)
                .await?;
            Ok(rule_reply(StatusCode::CREATED, &rule, pos))
        }
        (["mapping-rules", id], &Method::GET) => {
            require(&p, Role::Editor)?;
            let reg = state.registry.read().unwrap();
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
        (["mapping-rules", id], &Method::PUT) => {
            require(&p, Role::Editor)?;
            let id = id.parse().map_err(|_| not_found("rule"))?;
            let body: RuleBody = json_body(req).await?;
            let (rule, pos) = state
                .update_rule(p.org_id, id, body.def, body.reprocess)
                .await?;
            Ok(rule_reply(StatusCode::OK, &rule, pos))
        }
        (["mapping-rules", id], &Method::DELETE) => {
            require(&p, Role::Editor)?;
            let id = id.parse().map_err(|_| not_found("rule"))?;
            let (rule, pos) = state.delete_rule(p.org_id, id).await?;
            Ok(rule_reply(StatusCode::OK, &rule, pos))
        }
        (
            ["explorer", "stats"]
            | ["explorer", "signals"]
            | ["explorer", "signals", _]
            | ["explorer", "process"]
            | ["signals", "rehydrate"]
            | ["leads", ..]
            | ["signal-queue", "groups"]
            | ["usage"]
            | ["identity", "conflicts"]
            | ["product-orgs", _]
            | ["mapping-rules"]
            | ["mapping-rules", _],
            _,
        ) => Err(error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{method} is not allowed here"),
        )),
        (["sql"], &Method::POST) => {
            require(&p, Role::Editor)?;
            let accept = req
                .headers
                .get("accept")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let body: SqlBody = json_body(req).await?;
            run_sql(state, &engine, org, &body.sql, accept.as_deref()).await
        }
        _ => Err(not_found("endpoint")),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SqlBody {
    sql: String,
}

/// `POST /api/sql`: one read query over the caller's org, answered in the format the
/// `Accept` header asks for (JSON by default).
async fn run_sql(
    state: &AppState,
    engine: &Engine,
    org: u64,
    sql: &str,
    accept: Option<&str>,
) -> Result<Reply, Reply> {
    let Some(sql_engine) = state.sql.get() else {
        return Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "SQL is not available on this server",
        ));
    };
    let live = |reads: &dyn Fn(&str) -> bool| {
        let m = engine.read.read();
        let reg = state.registry.read().unwrap();
        crate::sql::live_tables(&m, &reg, org, reads)
    };
    let out = sql_engine.query_with(org, sql, live).await.map_err(|e| {
        let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
        let mut r = error(status, e.code(), e.to_string());
        r.retry_after = e.retry_after();
        r
    })?;
    let format = Format::from_accept(accept);
    let bytes = trailspark_queries::output::encode(&out, format).map_err(|e| {
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            e.to_string(),
        )
    })?;
    Ok(Reply::bytes(StatusCode::OK, format.content_type(), bytes))
}

/// The lead with public id `id`, if it belongs to `org`.
fn lead_by_id<'m>(m: &'m Models, org: u64, id: &str) -> Result<&'m Ident, Reply> {
    m.lead_ids
        .get(id)
        .filter(|l| l.org == org)
        .ok_or_else(|| not_found("lead"))
}

/// A rule change's answer: the rule as it now is, with the log position of the change.
fn rule_reply(status: StatusCode, rule: &MappingRule, pos: u64) -> Reply {
    let mut v = rule_json(rule);
    v["log_position"] = json!(pos);
    Reply::json(status, v)
}

fn not_found(what: &str) -> Reply {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no such {what}"),
    )
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

fn rule_json(r: &MappingRule) -> Value {
    let mut v = serde_json::to_value(&r.def).expect("rules serialize");
    v["id"] = json!(r.id);
    v["version"] = json!(r.version);
    v["created_at"] = rfc3339(r.created_at);
    v["updated_at"] = rfc3339(r.updated_at);
    v
}

fn ident_json(i: &Ident) -> Value {
    json!({"kind": i.kind.as_str(), "value": i.value})
}

fn lead_json(m: &Models, lead: &Ident) -> Value {
    let profile = m.leads.get(lead).cloned().unwrap_or_default();
    let identifiers: Vec<Value> = m
        .members
        .get(lead)
        .into_iter()
        .flatten()
        .map(ident_json)
        .collect();
    let mut recent: Vec<Value> = m
        .lead_signals
        .get(lead)
        .into_iter()
        .flatten()
        .rev()
        .take(50)
        .filter_map(|pos| m.processed.get(&(lead.org, *pos)).map(|p| (pos, p)))
        .map(|(pos, p)| {
            json!({
                "id": pos,
                "status": p.status,
                "rule_id": p.rule_id,
                "signal_name": p.rule_name.clone().unwrap_or_else(|| p.event_type.clone()),
                "signal_type": p.signal_type,
                "source": p.source,
                "event_type": p.event_type,
                "event_at": rfc3339(p.event_at),
            })
        })
        .collect();
    recent.reverse();
    let traits: BTreeMap<String, String> = profile.traits.iter().cloned().collect();
    let by_type: BTreeMap<String, u64> = profile
        .by_type
        .iter()
        .map(|(t, n)| {
            (
                serde_json::to_value(t)
                    .unwrap()
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                *n,
            )
        })
        .collect();
    json!({
        "id": lead_id(lead),
        "key": ident_json(lead),
        "identifiers": identifiers,
        "signals": profile.signals,
        "first_activity": rfc3339(profile.first_activity),
        "last_activity": rfc3339(profile.last_activity),
        "signal_types": by_type,
        "traits": traits,
        "product_org_id": profile.product_org,
        "productOrgInfo": product_org_info(m, lead.org, profile.product_org.as_deref()),
        "recent_signals": recent,
    })
}

/// A product org's fields, parsed back from their JSON text.
fn product_org_fields(po: &ProductOrg) -> (BTreeMap<&str, Value>, serde_json::Map<String, Value>) {
    let mut core = BTreeMap::new();
    let mut custom = serde_json::Map::new();
    for (k, v) in &po.fields {
        let v: Value = serde_json::from_str(v).unwrap_or(Value::Null);
        match k.strip_prefix("custom.") {
            Some(name) => {
                custom.insert(name.to_string(), v);
            }
            None => {
                core.insert(k.as_str(), v);
            }
        }
    }
    (core, custom)
}

fn product_org_json(id: &str, po: &ProductOrg) -> Value {
    let (core, custom) = product_org_fields(po);
    let f = |k: &str| core.get(k).cloned().unwrap_or(Value::Null);
    json!({
        "product_org_id": id,
        "name": f("name"),
        "plan_id": f("plan_id"),
        "plan_name": f("plan_name"),
        "user_count": f("user_count"),
        "mrr": f("mrr"),
        "trial_status": f("trial_status"),
        "last_active_at": f("last_active_at"),
        "feature_flags": f("feature_flags"),
        "custom_fields": custom,
        "last_updated_at": rfc3339(po.last_updated_at),
        "updates": po.updates,
    })
}

/// `productOrgInfo` in the evaluation-context shape (scoring spec 2.2, issue 6); `null` when
/// the lead names no product org or no update for it has arrived.
fn product_org_info(m: &Models, org: u64, id: Option<&str>) -> Value {
    let Some(id) = id else { return Value::Null };
    let Some(po) = m.product_orgs.get(&(org, id.to_string())) else {
        return Value::Null;
    };
    let (core, custom) = product_org_fields(po);
    let f = |k: &str| core.get(k).cloned().unwrap_or(Value::Null);
    json!({
        "productOrgId": id,
        "name": f("name"),
        "planId": f("plan_id"),
        "planName": f("plan_name"),
        "userCount": f("user_count"),
        "mrr": f("mrr"),
        "trialStatus": f("trial_status"),
        "lastActiveAt": f("last_active_at"),
        "featureFlags": f("feature_flags"),
        "customFields": custom,
    })
}

/// What an evaluation of the lead would see: identifiers, traits, its completed signals
/// within the lookback window, and its product org.
fn evaluation_context(m: &Models, lead: &Ident, lookback_days: i64) -> Value {
    let profile = m.leads.get(lead).cloned().unwrap_or_default();
    let now = chrono::Utc::now().timestamp_millis();
    let since = now - lookback_days * 86_400_000;
    let signals: Vec<Value> = m
        .lead_signals
        .get(lead)
        .into_iter()
        .flatten()
        .filter_map(|pos| m.processed.get(&(lead.org, *pos)))
        .filter(|p| p.status == Status::Completed && p.event_at >= since)
        .map(|p| {
            json!({
                "name": p.rule_name,
                "type": p.signal_type,
                "source": p.source,
                "occurredAt": rfc3339(p.event_at),
                "highIntent": p.high_intent,
            })
        })
        .collect();
    let traits: BTreeMap<String, String> = profile.traits.iter().cloned().collect();
    let identifiers: Vec<Value> = m
        .members
        .get(lead)
        .into_iter()
        .flatten()
        .map(ident_json)
        .collect();
    let email = m
        .members
        .get(lead)
        .into_iter()
        .flatten()
        .find(|i| i.kind == IdKind::Email)
        .map(|i| i.value.clone());
    json!({
        "lead": {"id": lead_id(lead), "email": email, "identifiers": identifiers, "traits": traits},
        "signals": signals,
        "productOrgInfo": product_org_info(m, lead.org, profile.product_org.as_deref()),
        "window": {"lookbackDays": lookback_days, "asOf": rfc3339(now)},
    })
}

fn group_json(k: &GroupKey, row: &GroupRow) -> Value {
    json!({
        "title": title(k),
        "source": k.source,
        "event_type": k.event,
        "path": k.path,
        "form": k.form,
        "descriptor": k.descriptor,
        "content_type": k.content_type.as_str(),
        "count": row.count,
        "unmapped": row.unmapped,
        "first_seen": rfc3339(row.first_seen),
        "last_seen": rfc3339(row.last_seen),
        "sample": serde_json::from_str::<Value>(&row.sample).unwrap_or(Value::Null),
    })
}

fn parse_period(s: &str) -> Option<u32> {
    let (y, m) = s.split_once('-')?;
    let (y, m): (u32, u32) = (y.parse().ok()?, m.parse().ok()?);
    ((1..=12).contains(&m) && (1970..=9999).contains(&y)).then_some(y * 100 + m)
}

/// Meter colour (spec 14): green under 80 %, amber from 80 % to under 100 %, red at 100 %.
pub fn colour(used: i64, limit: u64) -> &'static str {
    if limit == 0 {
        return "green";
    }
    let (used, limit) = (used.max(0) as u128 * 100, limit as u128);
    if used >= 100 * limit {
        "red"
    } else if used >= 80 * limit {
        "amber"
    } else {
        "green"
    }
}

fn usage_json(month: u32, used: &BTreeMap<Meter, i64>, plan: &trailspark_core::Plan) -> Value {
    let get = |m| used.get(&m).copied().unwrap_or(0);
    let meter = |name: &str, used: i64, limit: u64| {
        json!({
            "name": name,
            "used": used,
            "limit": limit,
            "percent": (used.max(0) as u64 * 100).checked_div(limit),
            "colour": colour(used, limit),
            "color": colour(used, limit),
        })
    };
    json!({
        "period": format!("{}-{:02}", month / 100, month % 100),
        "raw_signals": get(Meter::RawSignals),
        "staged_signals": get(Meter::StagedSignals),
        "mapped_signals": get(Meter::MappedSignals),
        "leads": get(Meter::Leads),
        "limits": plan,
        "overage": plan.overage,
        "meters": [
            meter("raw_signals", get(Meter::RawSignals), plan.raw_signal_limit),
            meter("mapped_signals", get(Meter::MappedSignals), plan.mapped_signal_limit),
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meter_colours_follow_the_spec() {
        assert_eq!(colour(79, 100), "green");
        assert_eq!(colour(80, 100), "amber");
        assert_eq!(colour(99, 100), "amber");
        assert_eq!(colour(100, 100), "red");
        assert_eq!(colour(5, 0), "green", "0 means unlimited");
        assert_eq!(colour(7, 9), "green"); // 77.8 %
        assert_eq!(colour(8, 10), "amber");
    }

    #[test]
    fn periods_and_decoding() {
        assert_eq!(parse_period("2026-11"), Some(202611));
        assert_eq!(parse_period("2026-13"), None);
        assert_eq!(
            query_param("email=a%40b.io&x=100%", "email").as_deref(),
            Some("a@b.io")
        );
        assert_eq!(
            query_param("email=a%40b.io&x=100%", "x").as_deref(),
            Some("100%")
        );
        assert_eq!(path_segment("ws%2F1+a"), "ws/1+a");
    }
}
