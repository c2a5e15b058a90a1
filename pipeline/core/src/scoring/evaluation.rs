//! An evaluation: what scoring a lead produced, as the log records it.
//!
//! Evaluations are facts on the log, like signals: the evaluator appends one for each lead it
//! scores, and everything else (a lead's cooldown, its latest score, its account's
//! propensity, the Evaluations meter) is derived from them. A restart replays them and never
//! asks a scorer again.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::tenancy::OrgId;

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Score {
    Hot,
    Warm,
    Cold,
}

impl Score {
    pub fn as_str(self) -> &'static str {
        match self {
            Score::Hot => "hot",
            Score::Warm => "warm",
            Score::Cold => "cold",
        }
    }

    pub fn parse(s: &str) -> Option<Score> {
        match s {
            "hot" => Some(Score::Hot),
            "warm" => Some(Score::Warm),
            "cold" => Some(Score::Cold),
            _ => None,
        }
    }
}

/// Account-level likelihood to buy.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Propensity {
    High,
    Medium,
    Low,
}

impl Propensity {
    pub fn as_str(self) -> &'static str {
        match self {
            Propensity::High => "high",
            Propensity::Medium => "medium",
            Propensity::Low => "low",
        }
    }
}

/// Why an evaluation ran.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// The batch cadence, for a lead never evaluated.
    Batch,
    /// The batch cadence, for a lead evaluated before whose cooldown ended.
    ReEvaluation,
    /// `POST /api/leads/{id}/evaluate`.
    Manual,
    /// A signal of a High Intent mapping rule.
    HighIntent,
}

impl Trigger {
    /// Whether this trigger may evaluate a lead in cooldown.
    pub fn bypasses_cooldown(self) -> bool {
        matches!(self, Trigger::Manual | Trigger::HighIntent)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Batch => "batch",
            Trigger::ReEvaluation => "re_evaluation",
            Trigger::Manual => "manual",
            Trigger::HighIntent => "high_intent",
        }
    }
}

/// Why a lead was not evaluated, in the order the checks run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    InsufficientSignals,
    InsufficientSignalTypes,
    Cooldown,
    ExcludedByRule,
    EvaluationLimitReached,
    NoActiveModel,
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::InsufficientSignals => "insufficient_signals",
            SkipReason::InsufficientSignalTypes => "insufficient_signal_types",
            SkipReason::Cooldown => "cooldown",
            SkipReason::ExcludedByRule => "excluded_by_rule",
            SkipReason::EvaluationLimitReached => "evaluation_limit_reached",
            SkipReason::NoActiveModel => "no_active_model",
        }
    }
}

/// One input's part in a score: what was looked at, the lead's value, the model's weight for
/// it and the points it added (negative for a detractor). The reasoning names only these.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Contribution {
    /// `fit`, `intent` or `usage`.
    pub dimension: String,
    /// What was looked at (`account.industry`, `signal:Demo request`, `product_org.plan_id`).
    pub input: String,
    /// The lead's value for it.
    pub value: String,
    /// The criterion it met or violated (`industry in [saas, software]`).
    pub criterion: String,
    /// The model's weight, −10 to 10.
    pub weight: i32,
    /// Points added to its dimension's 0–100 score.
    pub points: f64,
}

/// The lead an evaluation is about, as the identity graph names it (its smallest persistent
/// identifier), so the dataflow can join evaluations to leads.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LeadKey {
    pub kind: String,
    pub value: String,
}

/// An evaluation as the log records it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub id: String,
    pub org_id: OrgId,
    pub lead_id: String,
    pub lead: LeadKey,
    #[serde(default)]
    pub account_id: Option<String>,
    pub model_id: u64,
    pub model_version: u32,
    /// The stored score: `raw_score` after the confidence gate.
    pub score: Score,
    /// What the scorer answered.
    pub raw_score: Score,
    pub confidence: u32,
    pub confidence_gate_applied: bool,
    pub reasoning: String,
    pub contributions: Vec<Contribution>,
    pub propensity: Option<Propensity>,
    pub trigger: Trigger,
    pub evaluated_at: i64,
    pub cooldown_until: Option<i64>,
    /// The log position of the newest signal of the lead the evaluation considered: a later
    /// signal makes the lead "changed since its last evaluation".
    pub basis_pos: u64,
    /// `deterministic`, or `llm:<model>`.
    pub scorer: String,
    /// The dimension scores behind the tier (0–100), when the scorer reports them.
    #[serde(default)]
    pub dimensions: Dimensions,
}

/// The deterministic scorer's dimension scores, each 0–100: fit to the ICP, intent from
/// signals, and product usage (when the lead has a product org).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dimensions {
    pub fit: Option<u32>,
    pub intent: Option<u32>,
    pub usage: Option<u32>,
}

/// The id of the evaluation of `lead_id` over signals up to `basis_pos` at `at`: the same
/// evaluation always has the same id, so a retried append is recognised.
pub fn evaluation_id(org: OrgId, lead_id: &str, basis_pos: u64, at: i64) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(org.0.to_le_bytes());
    h.update(lead_id.as_bytes());
    h.update(basis_pos.to_le_bytes());
    h.update(at.to_le_bytes());
    let d = h.finalize();
    let hex: String = d[..10].iter().map(|b| format!("{b:02x}")).collect();
    format!("ev_{hex}")
}

/// Applies the confidence gate: a hot or warm answer below `min_confidence` is stored cold.
pub fn gate(raw: Score, confidence: u32, min_confidence: u32) -> (Score, bool) {
    if raw != Score::Cold && confidence < min_confidence {
        (Score::Cold, true)
    } else {
        (raw, false)
    }
}

/// An evaluation as the API, SQL and change events show it: the log's record with times in
/// RFC 3339, the dimension scores at the top level and the basis as `basis_position`. It is
/// what [`EvaluationView::of`] serializes, and its schema is the OpenAPI document's, so the
/// two cannot differ.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct EvaluationView {
    pub id: String,
    pub lead_id: String,
    pub account_id: Option<String>,
    pub score: Score,
    pub raw_score: Score,
    pub confidence: u32,
    pub confidence_gate_applied: bool,
    pub reasoning: String,
    pub contributions: Vec<Contribution>,
    pub propensity: Option<Propensity>,
    pub trigger: Trigger,
    /// RFC 3339.
    pub evaluated_at: Option<String>,
    /// RFC 3339; null when cooling off was disabled.
    pub cooldown_until: Option<String>,
    pub model_id: u64,
    pub model_version: u32,
    /// `deterministic`, or `llm:<model>`.
    pub scorer: String,
    pub fit: Option<u32>,
    pub intent: Option<u32>,
    pub usage: Option<u32>,
    /// The log position of the newest signal the evaluation considered.
    pub basis_position: u64,
}

impl EvaluationView {
    pub fn of(e: &Evaluation) -> EvaluationView {
        EvaluationView {
            id: e.id.clone(),
            lead_id: e.lead_id.clone(),
            account_id: e.account_id.clone(),
            score: e.score,
            raw_score: e.raw_score,
            confidence: e.confidence,
            confidence_gate_applied: e.confidence_gate_applied,
            reasoning: e.reasoning.clone(),
            contributions: e.contributions.clone(),
            propensity: e.propensity,
            trigger: e.trigger,
            evaluated_at: crate::time::rfc3339_text(e.evaluated_at),
            cooldown_until: e.cooldown_until.and_then(crate::time::rfc3339_text),
            model_id: e.model_id,
            model_version: e.model_version,
            scorer: e.scorer.clone(),
            fit: e.dimensions.fit,
            intent: e.dimensions.intent,
            usage: e.dimensions.usage,
            basis_position: e.basis_pos,
        }
    }
}
