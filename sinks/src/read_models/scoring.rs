//! An org's scoring models: each lead's eligibility (from the dataflow), the leads an
//! evaluation may run for now, and the evaluations themselves (from the log), by lead and by
//! time, with the Evaluations meter.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use serde_json::Value;
use trailspark_core::scoring::{month_of, Evaluation, EvaluationView, Trigger};
use trailspark_operators::eligibility::{Eligibility, Standing};
use trailspark_operators::Ident;

/// One org's scoring state.
#[derive(Default)]
pub struct ScoringModels {
    pub eligibility: HashMap<Ident, Eligibility>,
    /// Leads eligible now, with the trigger that makes them so: what the evaluator takes.
    pub candidates: BTreeMap<Ident, Trigger>,
    /// Of those, the ones a high-intent signal made eligible: evaluated at once.
    pub high_intent: std::collections::BTreeSet<Ident>,
    /// Public lead id → its evaluations, oldest first.
    pub by_lead: HashMap<String, Vec<Arc<Evaluation>>>,
    /// Every evaluation by (time, id): the evaluations list pages through it.
    pub by_time: BTreeMap<(i64, String), Arc<Evaluation>>,
    ids: HashSet<String>,
    /// Evaluations per month (`YYYYMM`): the Evaluations meter.
    pub per_month: HashMap<u32, u64>,
    /// Why the evaluator last passed over a lead (the checks it makes outside the dataflow:
    /// evaluation rules, quota, active model, scorer errors). Diagnostic state of this
    /// process: the next batch decides again after a restart.
    pub skips: HashMap<Ident, Skip>,
}

/// The evaluator's last decision not to evaluate a lead.
#[derive(Clone, Debug, PartialEq)]
pub struct Skip {
    /// A skip reason of the pipeline, or `evaluation_error` for a scorer that failed.
    pub reason: String,
    pub detail: Option<String>,
    pub rule_id: Option<u64>,
    pub at: i64,
    /// The lead's newest signal then: a later signal makes the skip stale.
    pub basis_pos: u64,
}

impl ScoringModels {
    pub(super) fn retract_eligibility(&mut self, lead: &Ident, e: &Eligibility) {
        if self.eligibility.get(lead) == Some(e) {
            self.eligibility.remove(lead);
            self.candidates.remove(lead);
            self.high_intent.remove(lead);
        }
    }

    pub(super) fn insert_eligibility(&mut self, lead: Ident, e: Eligibility) {
        match e.standing {
            Standing::Eligible(t) => {
                self.candidates.insert(lead.clone(), t);
                if t == Trigger::HighIntent {
                    self.high_intent.insert(lead.clone());
                } else {
                    self.high_intent.remove(&lead);
                }
            }
            _ => {
                self.candidates.remove(&lead);
                self.high_intent.remove(&lead);
            }
        }
        self.eligibility.insert(lead, e);
    }

    /// Records an evaluation; `false` when its id was recorded already (a retried append).
    pub(super) fn insert_evaluation(&mut self, e: Arc<Evaluation>) -> bool {
        if !self.ids.insert(e.id.clone()) {
            return false;
        }
        *self.per_month.entry(month_of(e.evaluated_at)).or_default() += 1;
        self.by_time
            .insert((e.evaluated_at, e.id.clone()), e.clone());
        let v = self.by_lead.entry(e.lead_id.clone()).or_default();
        let at = v.partition_point(|x| (x.evaluated_at, &x.id) <= (e.evaluated_at, &e.id));
        v.insert(at, e);
        true
    }

    /// The lead's latest evaluation.
    pub fn latest(&self, lead_id: &str) -> Option<&Arc<Evaluation>> {
        self.by_lead.get(lead_id).and_then(|v| v.last())
    }

    /// Evaluations run in `month` (`YYYYMM`).
    pub fn evaluations_in(&self, month: u32) -> u64 {
        self.per_month.get(&month).copied().unwrap_or(0)
    }
}

/// An evaluation as the API, SQL and change events show it.
pub fn evaluation_json(e: &Evaluation) -> Value {
    serde_json::to_value(EvaluationView::of(e)).expect("evaluations serialize")
}
