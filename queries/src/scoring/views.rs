//! Settings, evaluation rules, models and evaluations as the API shows them, and the scoring
//! part of a lead: its latest evaluation and why it was last passed over.

use serde::Serialize;
use serde_json::{json, Value};
use trailspark_core::rules::Combinator;
use trailspark_core::scoring::{Criteria, EvalRule, IcpModel, RuleCondition, Score};
use trailspark_core::time::rfc3339_text;
use trailspark_operators::eligibility::Standing;
use trailspark_operators::Ident;
use trailspark_sinks::read_models::scoring::evaluation_json;
use trailspark_sinks::read_models::{lead_id, Models};
use utoipa::ToSchema;

use crate::explorer::ViewError;

/// An evaluation rule as the API shows it. The definition's fields are listed rather than
/// flattened: the definition refuses unknown fields, so a flattened schema would refuse
/// `id` and the times.
#[derive(Serialize, ToSchema)]
pub struct EvalRuleView {
    pub id: u64,
    pub org_id: u64,
    /// RFC 3339.
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
    pub name: String,
    pub description: Option<String>,
    pub combinator: Combinator,
    pub conditions: Vec<RuleCondition>,
}

impl EvalRuleView {
    pub fn of(r: &EvalRule) -> EvalRuleView {
        EvalRuleView {
            id: r.id,
            org_id: r.org_id.0,
            created_at: rfc3339_text(r.created_at),
            updated_at: rfc3339_text(r.updated_at),
            name: r.def.name.clone(),
            description: r.def.description.clone(),
            combinator: r.def.combinator,
            conditions: r.def.conditions.clone(),
        }
    }
}

pub fn eval_rule_json(r: &EvalRule) -> Value {
    serde_json::to_value(EvalRuleView::of(r)).expect("rules serialize")
}

/// An ICP model as the API shows it.
#[derive(Serialize, ToSchema)]
pub struct ModelView {
    pub id: u64,
    pub org_id: u64,
    /// The org's n-th model; evaluations name the version they were scored with.
    pub version: u32,
    pub name: String,
    pub method: String,
    pub account_profile: String,
    pub account_detractors: String,
    pub contact_personas: String,
    pub contact_detractors: String,
    pub positive_signals: String,
    pub negative_signals: String,
    pub criteria: Criteria,
    /// Which criteria were read from the text rather than given.
    pub derived_criteria: Vec<String>,
    /// RFC 3339.
    pub created_at: Option<String>,
    /// `active` or `inactive`.
    pub status: String,
}

impl ModelView {
    pub fn of(m: &IcpModel, active: bool) -> ModelView {
        ModelView {
            id: m.id,
            org_id: m.org_id.0,
            version: m.version,
            name: m.name.clone(),
            method: m.method.clone(),
            account_profile: m.account_profile.clone(),
            account_detractors: m.account_detractors.clone(),
            contact_personas: m.contact_personas.clone(),
            contact_detractors: m.contact_detractors.clone(),
            positive_signals: m.positive_signals.clone(),
            negative_signals: m.negative_signals.clone(),
            criteria: m.criteria.clone(),
            derived_criteria: m.derived.clone(),
            created_at: rfc3339_text(m.created_at),
            status: if active { "active" } else { "inactive" }.into(),
        }
    }
}

pub fn model_json(m: &IcpModel, active: bool) -> Value {
    serde_json::to_value(ModelView::of(m, active)).expect("models serialize")
}

/// The lead's latest evaluation (or null) and why it was last not evaluated (or null): the
/// evaluator's own reason when it passed over the lead since its newest signal, else the
/// dataflow's (signal thresholds, cooldown).
pub fn lead_scoring(m: &Models, lead: &Ident) -> (Value, Value) {
    let s = &m.org(lead.org).scoring;
    let latest = s.latest(&lead_id(lead));
    let evaluation = latest.map_or(Value::Null, |e| evaluation_json(e));
    let elig = s.eligibility.get(lead);
    let evaluator = s.skips.get(lead).filter(|k| {
        latest.is_none_or(|e| k.at >= e.evaluated_at)
            && elig.is_none_or(|e| k.basis_pos >= e.basis_pos)
    });
    let reason = match (evaluator, elig.map(|e| e.standing)) {
        (Some(k), _) => json!(k.reason),
        (None, Some(Standing::Skipped(r))) => json!(r.as_str()),
        (None, None) if latest.is_none() => json!("insufficient_signals"),
        _ => Value::Null,
    };
    (evaluation, reason)
}

/// A lead's evaluations, newest first.
pub fn lead_evaluations(m: &Models, lead: &Ident) -> Value {
    let evals: Vec<Value> = m
        .org(lead.org)
        .scoring
        .by_lead
        .get(&lead_id(lead))
        .into_iter()
        .flatten()
        .rev()
        .map(|e| evaluation_json(e))
        .collect();
    json!({"evaluations": evals})
}

/// `GET /api/evaluations`: the org's evaluations, newest first, optionally of one score and
/// since a time, `limit` a page, continuing before `cursor` (a previous page's
/// `next_cursor`).
pub fn evaluations_page(
    m: &Models,
    org: u64,
    score: Option<&str>,
    since: Option<&str>,
    limit: usize,
    cursor: Option<&str>,
) -> Result<Value, ViewError> {
    let score = score
        .map(|s| {
            Score::parse(s)
                .ok_or_else(|| ViewError::BadRequest("score must be hot, warm or cold".into()))
        })
        .transpose()?;
    let since = since
        .map(|s| {
            chrono::DateTime::parse_from_rfc3339(s)
                .map(|t| t.timestamp_millis())
                .or_else(|_| {
                    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").map(|d| {
                        d.and_hms_opt(0, 0, 0)
                            .expect("midnight")
                            .and_utc()
                            .timestamp_millis()
                    })
                })
                .map_err(|_| {
                    ViewError::BadRequest("since must be an RFC 3339 time or a date".into())
                })
        })
        .transpose()?;
    let upper = cursor
        .map(|c| {
            let (at, id) = c
                .split_once('_')
                .and_then(|(at, id)| Some((at.parse::<i64>().ok()?, id.to_string())))
                .ok_or_else(|| {
                    ViewError::BadRequest(
                        "cursor must be the next_cursor of a previous page".into(),
                    )
                })?;
            Ok::<_, ViewError>((at, format!("ev_{id}")))
        })
        .transpose()?;
    let s = &m.org(org).scoring;
    let range = match &upper {
        Some(u) => s.by_time.range(..u.clone()),
        None => s.by_time.range(..),
    };
    let mut out = Vec::new();
    let mut next = None;
    for ((at, _), e) in range.rev() {
        if since.is_some_and(|t| *at < t) {
            break;
        }
        if score.is_some_and(|sc| e.score != sc) {
            continue;
        }
        if out.len() == limit {
            let last: &Value = out.last().expect("a full page");
            next = last["cursor"].as_str().map(str::to_string);
            break;
        }
        let mut v = evaluation_json(e);
        v["cursor"] = json!(format!(
            "{}_{}",
            e.evaluated_at,
            e.id.trim_start_matches("ev_")
        ));
        out.push(v);
    }
    for v in &mut out {
        v.as_object_mut().map(|o| o.remove("cursor"));
    }
    Ok(json!({"evaluations": out, "next_cursor": next}))
}
