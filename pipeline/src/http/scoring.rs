//! The lead-scoring API: site settings, evaluation rules, ICP models, evaluations (a lead's,
//! the org's, and a manual one) and accounts.
//!
//! | route | needs |
//! |---|---|
//! | `GET /api/settings/lead-scoring` | any role |
//! | `PUT`/`PATCH /api/settings/lead-scoring` | Admin or above |
//! | `GET /api/evaluation-rules[/{id}]` | any role |
//! | `POST /api/evaluation-rules`, `PUT`/`DELETE /api/evaluation-rules/{id}` | Editor or above |
//! | `GET /api/icp-models[/{id}]` | any role |
//! | `POST /api/icp-models`, `POST /api/icp-models/{id}/activate` | Editor or above |
//! | `POST /api/leads/{id}/evaluate` | Editor or above |
//! | `GET /api/leads/{id}/evaluations`, `GET /api/evaluations`, `GET /api/accounts[/{id}]` | any role |

use serde_json::json;
use trailspark_core::scoring::{EvalRuleDef, NewModel, SettingsChange};
use trailspark_core::tenancy::{Principal, Role};
use trailspark_queries::explorer::MAX_PAGE;
use trailspark_queries::scoring::accounts::{account_json, accounts, propensity};
use trailspark_queries::scoring::views::{
    eval_rule_json, evaluations_page, lead_evaluations, model_json,
};
use trailspark_sinks::read_models::scoring::evaluation_json;
use trailspark_sources::{Reply, Request};
use warp::http::{Method, StatusCode};

use super::reply::{
    authenticate, bad_request, error, json_body, method_not_allowed, not_found, path_segment,
    query_param, require, view_error, with_position,
};
use super::Api;
use crate::services::evaluator::EvaluateError;

enum Route<'a> {
    Settings,
    EvalRules,
    EvalRule(&'a str),
    Models,
    Model(&'a str),
    Activate(&'a str),
    Evaluate(&'a str),
    LeadEvaluations(&'a str),
    Evaluations,
    Accounts,
    Account(&'a str),
}

impl<'a> Route<'a> {
    fn parse(segs: &[&'a str]) -> Option<Route<'a>> {
        Some(match segs {
            ["settings", "lead-scoring"] => Route::Settings,
            ["evaluation-rules"] => Route::EvalRules,
            ["evaluation-rules", id] => Route::EvalRule(id),
            ["icp-models"] => Route::Models,
            ["icp-models", id] => Route::Model(id),
            ["icp-models", id, "activate"] => Route::Activate(id),
            ["leads", id, "evaluate"] => Route::Evaluate(id),
            ["leads", id, "evaluations"] => Route::LeadEvaluations(id),
            ["evaluations"] => Route::Evaluations,
            ["accounts"] => Route::Accounts,
            ["accounts", id] => Route::Account(id),
            _ => return None,
        })
    }
}

/// Whether `segs` (the path below `/api`) is a scoring route.
pub fn handles(segs: &[&str]) -> bool {
    Route::parse(segs).is_some()
}

/// Handles `segs` (the path below `/api`) if it is a scoring route.
pub async fn route(api: &Api, segs: &[&str], req: Request) -> Option<Reply> {
    let route = Route::parse(segs)?;
    Some(match authenticate(&api.control, &req) {
        Ok(p) => dispatch(api, p, route, req).await.unwrap_or_else(|r| r),
        Err(r) => r,
    })
}

fn id(s: &str, what: &str) -> Result<u64, Reply> {
    s.parse().map_err(|_| not_found(what))
}

async fn dispatch(api: &Api, p: Principal, route: Route<'_>, req: Request) -> Result<Reply, Reply> {
    let method = req.method.clone();
    let query = req.query.clone();
    if method == Method::GET {
        super::api::wait_for(api, p.org_id, &query).await?;
    }
    let org = p.org_id;
    let applied = api.read.applied();
    let scoring = || api.control.registry.read().unwrap().scoring().clone();
    match (route, &method) {
        (Route::Settings, &Method::GET) => {
            let s = scoring().settings(org);
            Ok(with_position(serde_json::to_value(s).unwrap(), applied))
        }
        (Route::Settings, &Method::PUT | &Method::PATCH) => {
            require(&p, Role::Admin)?;
            let change: SettingsChange = json_body(req).await?;
            let (s, pos) = api.control.change_scoring_settings(org, change).await?;
            Ok(with_position(serde_json::to_value(s).unwrap(), pos))
        }
        (Route::EvalRules, &Method::GET) => {
            let rules: Vec<_> = scoring().rules_of(org).map(eval_rule_json).collect();
            Ok(Reply::json(StatusCode::OK, json!({"rules": rules})))
        }
        (Route::EvalRules, &Method::POST) => {
            require(&p, Role::Editor)?;
            let def: EvalRuleDef = json_body(req).await?;
            let (r, pos) = api.control.create_eval_rule(org, def).await?;
            let mut v = eval_rule_json(&r);
            v["log_position"] = json!(pos);
            Ok(Reply::json(StatusCode::CREATED, v))
        }
        (Route::EvalRule(rid), &Method::GET) => {
            let r = api.control.eval_rule(org, id(rid, "evaluation rule")?)?;
            Ok(Reply::json(StatusCode::OK, eval_rule_json(&r)))
        }
        (Route::EvalRule(rid), &Method::PUT) => {
            require(&p, Role::Editor)?;
            let rid = id(rid, "evaluation rule")?;
            let def: EvalRuleDef = json_body(req).await?;
            let (r, pos) = api.control.update_eval_rule(org, rid, def).await?;
            let mut v = eval_rule_json(&r);
            v["log_position"] = json!(pos);
            Ok(Reply::json(StatusCode::OK, v))
        }
        (Route::EvalRule(rid), &Method::DELETE) => {
            require(&p, Role::Editor)?;
            let (r, pos) = api
                .control
                .delete_eval_rule(org, id(rid, "evaluation rule")?)
                .await?;
            let mut v = eval_rule_json(&r);
            v["log_position"] = json!(pos);
            Ok(Reply::json(StatusCode::OK, v))
        }
        (Route::Models, &Method::GET) => {
            let s = scoring();
            let active = s.active_model(org).map(|m| m.id);
            let models: Vec<_> = s
                .models_of(org)
                .map(|m| model_json(m, Some(m.id) == active))
                .collect();
            Ok(Reply::json(StatusCode::OK, json!({"models": models})))
        }
        (Route::Models, &Method::POST) => {
            require(&p, Role::Editor)?;
            let new: NewModel = json_body(req).await?;
            let (m, pos) = api.control.create_model(org, new).await?;
            let mut v = model_json(&m, true);
            v["log_position"] = json!(pos);
            Ok(Reply::json(StatusCode::CREATED, v))
        }
        (Route::Model(mid), &Method::GET) => {
            let m = api.control.model(org, id(mid, "ICP model")?)?;
            let active = scoring().active_model(org).map(|a| a.id) == Some(m.id);
            Ok(Reply::json(StatusCode::OK, model_json(&m, active)))
        }
        (Route::Activate(mid), &Method::POST) => {
            require(&p, Role::Editor)?;
            let (m, pos) = api
                .control
                .activate_model(org, id(mid, "ICP model")?)
                .await?;
            let mut v = model_json(&m, true);
            v["log_position"] = json!(pos);
            Ok(Reply::json(StatusCode::OK, v))
        }
        (Route::Evaluate(lid), &Method::POST) => {
            require(&p, Role::Editor)?;
            let Some(evaluator) = &api.evaluator else {
                return Err(error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "evaluation_disabled",
                    "this server runs with evaluation off (TRAILSPARK_EVALUATION=false)",
                ));
            };
            let lead = api
                .read
                .read()
                .lead(org.0, &path_segment(lid))
                .cloned()
                .ok_or_else(|| not_found("lead"))?;
            match evaluator.evaluate_now(&lead).await {
                Ok(e) => Ok(Reply::json(StatusCode::OK, evaluation_json(&e))),
                Err(EvaluateError::Skipped(s)) => {
                    let mut r = error(
                        StatusCode::CONFLICT,
                        "not_evaluated",
                        match &s.rule {
                            Some((_, name)) => format!("excluded by evaluation rule \"{name}\""),
                            None => format!("not evaluated: {}", s.reason.as_str()),
                        },
                    );
                    r.body["reason"] = json!(s.reason.as_str());
                    if let Some((rid, name)) = s.rule {
                        r.body["rule_id"] = json!(rid);
                        r.body["rule_name"] = json!(name);
                    }
                    Err(r)
                }
                Err(EvaluateError::Scorer(e)) => Err(error(
                    StatusCode::BAD_GATEWAY,
                    "evaluation_error",
                    e.to_string(),
                )),
                Err(EvaluateError::Config(e)) => Err(e.into()),
                Err(EvaluateError::Timeout) => Err(error(
                    StatusCode::GATEWAY_TIMEOUT,
                    "not_yet_applied",
                    "the evaluation was not applied in time; it is on the log and will show",
                )),
            }
        }
        (Route::LeadEvaluations(lid), &Method::GET) => {
            let m = api.read.read();
            let lead = m
                .lead(org.0, &path_segment(lid))
                .ok_or_else(|| not_found("lead"))?;
            Ok(with_position(lead_evaluations(&m, lead), applied))
        }
        (Route::Evaluations, &Method::GET) => {
            let limit = match query_param(&query, "limit") {
                None => 50,
                Some(l) => l
                    .parse()
                    .ok()
                    .filter(|l| (1..=MAX_PAGE).contains(l))
                    .ok_or_else(|| bad_request(format!("limit must be 1-{MAX_PAGE}")))?,
            };
            let v = evaluations_page(
                &api.read.read(),
                org.0,
                query_param(&query, "score").as_deref(),
                query_param(&query, "since").as_deref(),
                limit,
                query_param(&query, "cursor").as_deref(),
            )
            .map_err(view_error)?;
            Ok(with_position(v, applied))
        }
        (Route::Accounts, &Method::GET) => {
            let m = api.read.read();
            let list: Vec<_> = accounts(&m, org.0)
                .iter()
                .map(|a| account_json(a, propensity(&m, a)))
                .collect();
            Ok(with_position(json!({"accounts": list}), applied))
        }
        (Route::Account(aid), &Method::GET) => {
            let m = api.read.read();
            let a = accounts(&m, org.0)
                .into_iter()
                .find(|a| a.id == aid)
                .ok_or_else(|| not_found("account"))?;
            Ok(with_position(account_json(&a, propensity(&m, &a)), applied))
        }
        _ => Err(method_not_allowed(&method)),
    }
}
