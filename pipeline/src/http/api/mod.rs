//! The org-scoped API over the read models and the control plane: explorer statistics and
//! signals, leads, signal groups, usage, identity conflicts, product orgs, mapping rules, SQL
//! and retrieval.
//!
//! Every GET (and `POST /api/sql`) takes `?wait_for=<log position>`: it first waits (up to
//! 10 s) until the read models reflect that position, so a client that got `log_position` in
//! a 202 can read its own write without sleeping. Answers carry `log_position`, the position
//! they reflect.
//!
//! Routing is in two steps: [`Route::parse`] names the resource from the path alone, and
//! [`dispatch`] matches it with the method, so every path is listed once and a known path
//! with another method is a 405 by construction.

pub(crate) mod actions;

pub(crate) use actions::SqlBody;

use std::time::Duration;

use serde_json::json;
use trailspark_core::tenancy::{OrgId, Principal, Role};
use trailspark_operators::usage::Meter;
use trailspark_operators::{IdKind, Ident, Signal};
use trailspark_queries::explorer::groups::{self, group_json};
use trailspark_queries::explorer::leads::product_org_json;
use trailspark_queries::explorer::leads::{lead_view, IdentView, LeadView};
use trailspark_queries::explorer::signals::{lead_timeline, signal_detail, tab_page};
use trailspark_queries::explorer::usage::{parse_period, usage_json, ScoringUsage};
use trailspark_queries::explorer::Page;
use trailspark_queries::scoring::context::lead_context;
use trailspark_queries::scoring::views::lead_scoring;
use trailspark_sinks::read_models::Models;
use trailspark_sources::{Reply, Request};
use warp::http::{Method, StatusCode};

use super::reply::{
    authenticate, bad_request, error, method_not_allowed, not_found, path_segment, query_param,
    require, view_error, with_position,
};
use super::Api;

const WAIT_LIMIT: Duration = Duration::from_secs(10);

/// A lead with its latest evaluation and why it was last passed over.
/// A lead as `GET /api/leads` answers it: with its latest evaluation and why it was last
/// passed over.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct LeadAnswer {
    #[serde(flatten)]
    lead: LeadView,
    /// The latest evaluation; null before any.
    #[schema(value_type = Option<trailspark_core::scoring::EvaluationView>)]
    evaluation: serde_json::Value,
    /// Why the lead was last not evaluated (`insufficient_signals`, `cooldown`, …); null
    /// when it was.
    #[schema(value_type = Option<String>)]
    last_skip_reason: serde_json::Value,
}

fn lead_with_scoring(m: &Models, lead: &Ident) -> serde_json::Value {
    let (evaluation, last_skip_reason) = lead_scoring(m, lead);
    let answer = LeadAnswer {
        lead: lead_view(m, lead),
        evaluation,
        last_skip_reason,
    };
    serde_json::to_value(answer).expect("leads serialize")
}

/// The resources under `/api` that this module serves.
enum Route<'a> {
    ExplorerStats,
    ExplorerSignals,
    ExplorerSignal(&'a str),
    ExplorerProcess,
    Rehydrate,
    Leads,
    Lead(&'a str),
    LeadTimeline(&'a str),
    LeadContext(&'a str),
    Groups,
    Group(&'a str),
    SuggestedRule(&'a str),
    Conflicts,
    Usage,
    ProductOrg(&'a str),
    Rules,
    RulePreview,
    Rule(&'a str),
    Sql,
}

impl<'a> Route<'a> {
    /// The resource `segs` (the path below `/api`) names, if this module serves it.
    fn parse(segs: &[&'a str]) -> Option<Route<'a>> {
        Some(match segs {
            ["explorer", "stats"] => Route::ExplorerStats,
            ["explorer", "signals"] => Route::ExplorerSignals,
            ["explorer", "signals", id] => Route::ExplorerSignal(id),
            ["explorer", "process"] => Route::ExplorerProcess,
            ["signals", "rehydrate"] => Route::Rehydrate,
            ["leads"] => Route::Leads,
            ["leads", id] => Route::Lead(id),
            ["leads", id, "timeline"] => Route::LeadTimeline(id),
            ["leads", id, "evaluation-context"] => Route::LeadContext(id),
            ["signal-queue", "groups"] => Route::Groups,
            ["signal-queue", "groups", id] => Route::Group(id),
            ["signal-queue", "groups", id, "suggested-rule"] => Route::SuggestedRule(id),
            ["identity", "conflicts"] => Route::Conflicts,
            ["usage"] => Route::Usage,
            ["product-orgs", id] => Route::ProductOrg(id),
            ["mapping-rules"] => Route::Rules,
            ["mapping-rules", "preview"] => Route::RulePreview,
            ["mapping-rules", id] => Route::Rule(id),
            ["sql"] => Route::Sql,
            _ => return None,
        })
    }
}

/// Handles `segs` (the path below `/api`); `None` when no route of this module has that
/// path (a 404, whoever asks).
pub async fn route(api: &Api, segs: &[&str], req: Request) -> Option<Reply> {
    let route = Route::parse(segs)?;
    Some(match authenticate(&api.control, &req) {
        Ok(p) => dispatch(api, p, route, req).await.unwrap_or_else(|r| r),
        Err(r) => r,
    })
}

/// Waits for `?wait_for=`, if given: refused at once past the log's head (it could never be
/// reached by waiting), 504 when the models do not get there in time. The org's own rule
/// edits with reprocess made by then are waited for until they have reached all history
/// (another org's are not).
pub(super) async fn wait_for(api: &Api, org: OrgId, query: &str) -> Result<(), Reply> {
    let Some(w) = query_param(query, "wait_for") else {
        return Ok(());
    };
    let pos: u64 = w
        .parse()
        .map_err(|_| bad_request("wait_for must be a log position"))?;
    let head = api.log.head();
    if pos > head {
        let mut r = bad_request(format!(
            "wait_for {pos} is past the log's head, {head}: no write has that position yet"
        ));
        r.body["log_head"] = json!(head);
        return Err(r);
    }
    if !api.read.wait_settled(Some(org.0), pos, WAIT_LIMIT).await {
        return Err(error(
            StatusCode::GATEWAY_TIMEOUT,
            "not_yet_applied",
            format!(
                "the read models did not reach log position {pos} within {} s",
                WAIT_LIMIT.as_secs()
            ),
        ));
    }
    Ok(())
}

async fn dispatch(api: &Api, p: Principal, route: Route<'_>, req: Request) -> Result<Reply, Reply> {
    let method = req.method.clone();
    let query = req.query.clone();
    if method == Method::GET || matches!(route, Route::Sql) {
        wait_for(api, p.org_id, &query).await?;
    }
    let org = p.org_id.0;
    let applied = api.read.applied();
    let page = || {
        Page::parse(query_param(&query, "limit"), query_param(&query, "cursor")).map_err(view_error)
    };
    match (route, &method) {
        (Route::ExplorerStats, &Method::GET) => {
            require(&p, Role::Editor)?;
            let s = api.read.read().org(org).stats;
            Ok(with_position(serde_json::to_value(s).unwrap(), applied))
        }
        (Route::ExplorerSignals, &Method::GET) => {
            require(&p, Role::Editor)?;
            let tab = query_param(&query, "tab").unwrap_or_else(|| "processed".into());
            let v = tab_page(&api.read.read(), org, &tab, &page()?).map_err(view_error)?;
            Ok(with_position(v, applied))
        }
        (Route::ExplorerSignal(id), &Method::GET) => {
            require(&p, Role::Editor)?;
            let id = id.parse().map_err(|_| not_found("signal"))?;
            let v = signal_detail(api.lookup.as_ref(), &api.read, org, id)
                .await
                .map_err(view_error)?;
            Ok(with_position(v, applied))
        }
        (Route::ExplorerProcess, &Method::POST) => {
            require(&p, Role::Editor)?;
            actions::process_now(api, p.org_id).await
        }
        (Route::Rehydrate, &Method::POST) => {
            require(&p, Role::Admin)?;
            actions::rehydrate(api, p.org_id, req).await
        }
        (Route::LeadTimeline(id), &Method::GET) => {
            // Raw payloads, as in signal detail: the same role.
            require(&p, Role::Editor)?;
            let v = lead_timeline(
                api.lookup.as_ref(),
                &api.read,
                org,
                &path_segment(id),
                &page()?,
            )
            .await
            .map_err(view_error)?;
            Ok(with_position(v, applied))
        }
        (Route::ProductOrg(id), &Method::GET) => {
            let m = api.read.read();
            let id = path_segment(id);
            let po = m
                .org(org)
                .product_orgs
                .get(&id)
                .ok_or_else(|| not_found("product org"))?;
            Ok(with_position(product_org_json(&id, po), applied))
        }
        (Route::LeadContext(id), &Method::GET) => {
            let m = api.read.read();
            let lead = m
                .lead(org, &path_segment(id))
                .ok_or_else(|| not_found("lead"))?;
            let reg = api.control.registry.read().unwrap();
            let days: u32 = match query_param(&query, "lookback_days") {
                Some(d) => d
                    .parse()
                    .ok()
                    .filter(|d| (1..=365).contains(d))
                    .ok_or_else(|| bad_request("lookback_days must be 1-365"))?,
                None => reg.scoring().settings(p.org_id).lookback_days,
            };
            let model = reg.scoring().active_model(p.org_id);
            let now = chrono::Utc::now().timestamp_millis();
            let ctx = lead_context(&m, &reg, lead, days, model, now);
            Ok(with_position(ctx.json, applied))
        }
        (Route::Lead(id), &Method::GET) => {
            let m = api.read.read();
            let lead = m
                .lead(org, &path_segment(id))
                .ok_or_else(|| not_found("lead"))?;
            Ok(with_position(lead_with_scoring(&m, lead), applied))
        }
        (Route::Leads, &Method::GET) => {
            let wanted = [
                ("email", IdKind::Email),
                ("user_id", IdKind::UserId),
                ("anonymous_id", IdKind::AnonymousId),
                ("crm_id", IdKind::CrmId),
            ]
            .into_iter()
            .find_map(|(name, kind)| query_param(&query, name).map(|v| (kind, v)));
            let Some((kind, value)) = wanted else {
                return Err(bad_request(
                    "look leads up by ?email=, ?user_id=, ?anonymous_id= or ?crm_id=",
                ));
            };
            let value = if kind == IdKind::Email {
                value.trim().to_lowercase()
            } else {
                value
            };
            let m = api.read.read();
            let lead = m
                .org(org)
                .lead_of
                .get(&Ident::new(org, kind, value))
                .ok_or_else(|| not_found("lead"))?;
            Ok(with_position(lead_with_scoring(&m, lead), applied))
        }
        (Route::Groups, &Method::GET) => {
            require(&p, Role::Editor)?;
            let mapped = query_param(&query, "tab").as_deref() == Some("mapped");
            let m = api.read.read();
            let groups: Vec<_> = m
                .org(org)
                .groups_of(mapped)
                .into_iter()
                .map(|(k, row)| group_json(org, k, row))
                .collect();
            let tab = if mapped { "mapped" } else { "unmapped" };
            Ok(with_position(
                json!({"tab": tab, "groups": groups}),
                applied,
            ))
        }
        (Route::Group(id), &Method::GET) => {
            require(&p, Role::Editor)?;
            let m = api.read.read();
            let (k, row) = groups::find(&m, org, id).ok_or_else(|| not_found("group"))?;
            Ok(with_position(groups::group_detail(org, k, row), applied))
        }
        (Route::SuggestedRule(id), &Method::GET) => {
            require(&p, Role::Editor)?;
            let m = api.read.read();
            let (k, row) = groups::find(&m, org, id).ok_or_else(|| not_found("group"))?;
            // As a rule body, to post unchanged: no `log_position` in it.
            Ok(Reply::json(StatusCode::OK, groups::suggested_rule(k, row)))
        }
        (Route::Conflicts, &Method::GET) => {
            require(&p, Role::Editor)?;
            let m = api.read.read();
            let conflicts: Vec<_> = m
                .org(org)
                .conflicts
                .iter()
                .map(|(i, kind)| {
                    crate::http::answers::json(crate::http::answers::Conflict {
                        identifier: IdentView::of(i),
                        refused_links_to: kind.as_str(),
                    })
                })
                .collect();
            Ok(with_position(json!({"conflicts": conflicts}), applied))
        }
        (Route::Usage, &Method::GET) => {
            let month = match query_param(&query, "period") {
                Some(s) => parse_period(&s).ok_or_else(|| bad_request("period must be YYYY-MM"))?,
                None => Signal::month_of(chrono::Utc::now().timestamp_millis()),
            };
            let (plan, rehydrated, models) = {
                let reg = api.control.registry.read().unwrap();
                (
                    reg.plan(p.org_id),
                    reg.rehydrated(p.org_id, month),
                    reg.scoring().models_created(p.org_id, month),
                )
            };
            let m = api.read.read();
            let mut used = m.org(org).usage_of(month);
            // Rehydrated archive signals count as raw signals.
            *used.entry(Meter::RawSignals).or_default() += rehydrated as i64;
            let scoring = ScoringUsage {
                evaluations: m.org(org).scoring.evaluations_in(month),
                models,
            };
            Ok(with_position(
                usage_json(month, &used, scoring, &plan),
                applied,
            ))
        }
        (Route::Rules, &Method::GET) => actions::list_rules(api, &p),
        (Route::Rules, &Method::POST) => actions::create_rule(api, &p, req).await,
        (Route::RulePreview, &Method::POST) => actions::preview_rule(api, &p, req).await,
        (Route::Rule(id), &Method::GET) => actions::get_rule(api, &p, id),
        (Route::Rule(id), &Method::PUT) => actions::update_rule(api, &p, id, req).await,
        (Route::Rule(id), &Method::DELETE) => actions::delete_rule(api, &p, id).await,
        (Route::Sql, &Method::POST) => {
            require(&p, Role::Editor)?;
            actions::sql(api, org, req).await
        }
        _ => Err(method_not_allowed(&method)),
    }
}
