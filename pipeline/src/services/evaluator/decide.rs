//! One lead's evaluation: the checks outside the dataflow (evaluation rules, the quota, the
//! active model), then the scorer, the confidence gate and the cooldown, as one
//! [`Evaluation`] record ready to append.

use serde_json::{json, Value};
use trailspark_core::path;
use trailspark_core::scoring::{
    evaluation_id, gate, month_of, Dimensions, Evaluation, IcpModel, LeadKey, Propensity,
    ScoringSettings, SkipReason, Trigger,
};
use trailspark_core::tenancy::{OrgId, Registry};
use trailspark_operators::eligibility::{manual_check, Standing};
use trailspark_operators::scorer::{reasoning, score, Scored};
use trailspark_operators::{IdKind, Ident};
use trailspark_queries::explorer::leads::product_org_json;
use trailspark_queries::scoring::accounts::account_json;
use trailspark_queries::scoring::context::{lead_context, LeadContext};
use trailspark_sinks::read_models::{lead_id, Models};

/// Why a lead was passed over.
#[derive(Clone, Debug, PartialEq)]
pub struct Skipped {
    pub reason: SkipReason,
    /// The evaluation rule that excluded it.
    pub rule: Option<(u64, String)>,
    pub basis_pos: u64,
}

/// Everything a scorer needs of a lead that passed the checks.
pub struct Prepared {
    pub lead: Ident,
    pub trigger: Trigger,
    pub settings: ScoringSettings,
    pub model: IcpModel,
    pub context: LeadContext,
    pub basis_pos: u64,
    /// The deterministic scorer's answer: the evaluation itself without an LLM, and the
    /// feature table an LLM is given with one.
    pub scored: Scored,
}

/// A condition field's value for a lead, for evaluation rules: `lead.*` (its email, title,
/// identifiers and traits), `traits.*`, `product_org.*` (its latest product org) and
/// `account.*`, and `crm.contact.*` / `crm.lead.*` / `crm.account.*` (the raw fields of the
/// lead's CRM records).
fn field(m: &Models, ctx: &LeadContext, lead: &Ident, name: &str) -> Option<Value> {
    let o = m.org(lead.org);
    let profile = o.leads.get(lead);
    let traits = |k: &str| {
        profile
            .and_then(|p| p.traits.iter().find(|(n, _)| n == k))
            .map(|(_, v)| json!(v))
    };
    if let Some(k) = name.strip_prefix("lead.") {
        return match k {
            "id" => Some(json!(lead_id(lead))),
            "email" => ctx.input.email.clone().map(Value::from),
            "title" => ctx.input.title.clone().map(Value::from),
            k => IdKind::parse(k)
                .and_then(|kind| {
                    o.members
                        .get(lead)
                        .into_iter()
                        .flatten()
                        .find(|i| i.kind == kind)
                        .map(|i| json!(i.value))
                })
                .or_else(|| traits(k)),
        };
    }
    if let Some(k) = name.strip_prefix("traits.") {
        return traits(k);
    }
    if let Some(p) = name.strip_prefix("product_org.") {
        let id = profile?.product_org.as_ref()?;
        let po = o.product_orgs.get(id)?;
        let mut v = product_org_json(id, po);
        v["custom"] = v["custom_fields"].clone();
        return path::get(&v, p).filter(|v| !v.is_null()).cloned();
    }
    if let Some(k) = name.strip_prefix("crm.") {
        return ctx.crm.field(k);
    }
    if let Some(k) = name.strip_prefix("account.") {
        let a = ctx.account.as_ref()?;
        let f = &a.fields;
        let v = match k {
            "id" => Some(json!(a.id)),
            "name" => f.name.clone().map(Value::from),
            "domain" | "website_domain" | "websiteDomain" => f.domain.clone().map(Value::from),
            "industry" => f.industry.clone().map(Value::from),
            "market_segment" | "marketSegment" => f.market_segment.clone().map(Value::from),
            "employee_count" | "employeeCount" => f.employee_count.map(Value::from),
            "region" => f.region.clone().map(Value::from),
            other => path::get(&account_json(a, None), other).cloned(),
        };
        return v.filter(|v| !v.is_null());
    }
    None
}

/// The checks of the evaluation pipeline for `lead` under `trigger`, in its order; the
/// prepared evaluation when it passes them.
pub fn prepare(
    m: &Models,
    reg: &Registry,
    lead: &Ident,
    trigger: Trigger,
    now: i64,
) -> Result<Option<Prepared>, Skipped> {
    let org = OrgId(lead.org);
    let settings = reg.scoring().settings(org);
    let s = &m.org(lead.org).scoring;
    let skip = |reason, basis_pos| Skipped {
        reason,
        rule: None,
        basis_pos,
    };
    let Some(e) = s.eligibility.get(lead) else {
        return Err(skip(SkipReason::InsufficientSignals, 0));
    };
    // A batch or high-intent run records the trigger the dataflow found.
    let trigger = match (trigger, e.standing) {
        (Trigger::Manual, _) => {
            manual_check(e, &settings).map_err(|r| skip(r, e.basis_pos))?;
            Trigger::Manual
        }
        (_, Standing::Eligible(t)) => t,
        (_, Standing::Skipped(r)) => return Err(skip(r, e.basis_pos)),
        (_, Standing::UpToDate) => return Ok(None),
    };
    let model = reg.scoring().active_model(org).cloned();
    let context = lead_context(m, reg, lead, settings.lookback_days, model.as_ref(), now);
    for rule in reg.scoring().rules_of(org) {
        if !rule.def.passes(&|f| field(m, &context, lead, f)) {
            return Err(Skipped {
                reason: SkipReason::ExcludedByRule,
                rule: Some((rule.id, rule.def.name.clone())),
                basis_pos: e.basis_pos,
            });
        }
    }
    let plan = reg.plan(org);
    if !plan.allows(plan.evaluation_limit, s.evaluations_in(month_of(now))) {
        return Err(skip(SkipReason::EvaluationLimitReached, e.basis_pos));
    }
    let Some(model) = model else {
        return Err(skip(SkipReason::NoActiveModel, e.basis_pos));
    };
    let scored = score(&context.input, &model.criteria);
    Ok(Some(Prepared {
        lead: lead.clone(),
        trigger,
        settings,
        model,
        context,
        basis_pos: e.basis_pos,
        scored,
    }))
}

/// What a scorer answered.
pub struct Answer {
    pub score: trailspark_core::scoring::Score,
    pub confidence: u32,
    /// `None`: render it from the contributions.
    pub reasoning: Option<String>,
    pub propensity: Option<Propensity>,
    pub scorer: String,
}

/// The evaluation record of a prepared lead and its scorer's answer, at `now`.
pub fn record(p: &Prepared, a: Answer, now: i64) -> Evaluation {
    let org = OrgId(p.lead.org);
    let lid = lead_id(&p.lead);
    let (stored, gated) = gate(a.score, a.confidence, p.settings.min_confidence_avg);
    let reasoning = match a.reasoning {
        Some(r) if gated => format!(
            "{r} (Stored as cold: confidence {}% is below the {}% minimum.)",
            a.confidence, p.settings.min_confidence_avg
        ),
        Some(r) => r,
        None => reasoning(&p.scored, stored, p.settings.min_confidence_avg),
    };
    Evaluation {
        id: evaluation_id(org, &lid, p.basis_pos, now),
        org_id: org,
        lead_id: lid,
        lead: LeadKey {
            kind: p.lead.kind.as_str().into(),
            value: p.lead.value.to_string(),
        },
        account_id: p.context.account.as_ref().map(|a| a.id.clone()),
        model_id: p.model.id,
        model_version: p.model.version,
        score: stored,
        raw_score: a.score,
        confidence: a.confidence,
        confidence_gate_applied: gated,
        reasoning,
        contributions: p.scored.contributions.clone(),
        propensity: a.propensity,
        trigger: p.trigger,
        evaluated_at: now,
        cooldown_until: p.settings.cooldown_until(stored, now),
        basis_pos: p.basis_pos,
        scorer: a.scorer,
        dimensions: Dimensions {
            fit: Some(p.scored.fit),
            intent: Some(p.scored.intent),
            usage: p.scored.usage,
        },
    }
}

/// The deterministic scorer's answer.
pub fn deterministic(p: &Prepared) -> Answer {
    Answer {
        score: p.scored.score,
        confidence: p.scored.confidence,
        reasoning: None,
        propensity: Some(p.scored.propensity),
        scorer: "deterministic".into(),
    }
}
