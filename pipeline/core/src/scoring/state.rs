//! Scoring configuration as config events, and its fold.
//!
//! Settings, evaluation rules and ICP models change through the API like mapping rules do:
//! each change is validated, then appended to the log, and [`ScoringState::apply`] folds the
//! events in log order, so a replay rebuilds the same state.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::eval_rules::EvalRuleDef;
use super::icp::IcpModel;
use super::settings::ScoringSettings;
use crate::tenancy::OrgId;

/// A change to scoring configuration, as written to the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "scoring", rename_all = "snake_case")]
pub enum ScoringEvent {
    /// The whole resulting settings of an org.
    SettingsSet {
        org_id: OrgId,
        settings: ScoringSettings,
        at: i64,
    },
    EvalRuleCreated {
        org_id: OrgId,
        rule_id: u64,
        at: i64,
        def: EvalRuleDef,
    },
    EvalRuleUpdated {
        org_id: OrgId,
        rule_id: u64,
        at: i64,
        def: EvalRuleDef,
    },
    EvalRuleDeleted {
        org_id: OrgId,
        rule_id: u64,
        at: i64,
    },
    /// A finalized ICP model; it becomes the org's active one.
    ModelCreated { model: Box<IcpModel> },
    ModelActivated {
        org_id: OrgId,
        model_id: u64,
        at: i64,
    },
    /// The evaluator's clock: a batch evaluation as of `at` (ms), for every org, or for one
    /// (a manual evaluation). The dataflow measures lookback windows and cooldowns against
    /// the latest tick, so a replay derives the same eligible leads the evaluator saw.
    Tick {
        at: i64,
        #[serde(default)]
        org_id: Option<OrgId>,
    },
}

/// An evaluation rule as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvalRule {
    pub id: u64,
    pub org_id: OrgId,
    pub created_at: i64,
    pub updated_at: i64,
    #[serde(flatten)]
    pub def: EvalRuleDef,
}

/// The fold of all scoring events.
#[derive(Clone, Debug, Default)]
pub struct ScoringState {
    settings: BTreeMap<OrgId, ScoringSettings>,
    rules: BTreeMap<u64, EvalRule>,
    models: BTreeMap<u64, IcpModel>,
    active: BTreeMap<OrgId, u64>,
    /// Models created per (org, month `YYYYMM`): the Models meter.
    created: HashMap<(OrgId, u32), u64>,
    /// The latest tick.
    clock: i64,
}

/// `YYYYMM` of a time in ms.
pub fn month_of(at: i64) -> u32 {
    use chrono::Datelike;
    let d = chrono::DateTime::from_timestamp_millis(at).unwrap_or_default();
    d.year() as u32 * 100 + d.month()
}

impl ScoringState {
    pub fn apply(&mut self, event: &ScoringEvent) {
        match event {
            ScoringEvent::SettingsSet {
                org_id, settings, ..
            } => {
                self.settings.insert(*org_id, *settings);
            }
            ScoringEvent::EvalRuleCreated {
                org_id,
                rule_id,
                at,
                def,
            } => {
                self.rules.insert(
                    *rule_id,
                    EvalRule {
                        id: *rule_id,
                        org_id: *org_id,
                        created_at: *at,
                        updated_at: *at,
                        def: def.clone(),
                    },
                );
            }
            ScoringEvent::EvalRuleUpdated {
                rule_id, at, def, ..
            } => {
                if let Some(r) = self.rules.get_mut(rule_id) {
                    r.def = def.clone();
                    r.updated_at = *at;
                }
            }
            ScoringEvent::EvalRuleDeleted { rule_id, .. } => {
                self.rules.remove(rule_id);
            }
            ScoringEvent::ModelCreated { model } => {
                *self
                    .created
                    .entry((model.org_id, month_of(model.created_at)))
                    .or_default() += 1;
                self.active.insert(model.org_id, model.id);
                self.models.insert(model.id, IcpModel::clone(model));
            }
            ScoringEvent::ModelActivated {
                org_id, model_id, ..
            } => {
                if self
                    .models
                    .get(model_id)
                    .is_some_and(|m| m.org_id == *org_id)
                {
                    self.active.insert(*org_id, *model_id);
                }
            }
            ScoringEvent::Tick { at, .. } => self.clock = self.clock.max(*at),
        }
    }

    pub fn settings(&self, org: OrgId) -> ScoringSettings {
        self.settings.get(&org).copied().unwrap_or_default()
    }

    /// Every org with settings of its own.
    pub fn all_settings(&self) -> impl Iterator<Item = (OrgId, ScoringSettings)> + '_ {
        self.settings.iter().map(|(o, s)| (*o, *s))
    }

    pub fn rule(&self, id: u64) -> Option<&EvalRule> {
        self.rules.get(&id)
    }

    pub fn rules_of(&self, org: OrgId) -> impl Iterator<Item = &EvalRule> {
        self.rules.values().filter(move |r| r.org_id == org)
    }

    pub fn next_rule_id(&self) -> u64 {
        self.rules.keys().next_back().map_or(1, |k| k + 1)
    }

    pub fn model(&self, id: u64) -> Option<&IcpModel> {
        self.models.get(&id)
    }

    pub fn models_of(&self, org: OrgId) -> impl Iterator<Item = &IcpModel> {
        self.models.values().filter(move |m| m.org_id == org)
    }

    pub fn active_model(&self, org: OrgId) -> Option<&IcpModel> {
        self.active.get(&org).and_then(|id| self.models.get(id))
    }

    pub fn next_model_id(&self) -> u64 {
        self.models.keys().next_back().map_or(1, |k| k + 1)
    }

    /// The version the org's next model gets.
    pub fn next_version(&self, org: OrgId) -> u32 {
        self.models_of(org).map(|m| m.version).max().unwrap_or(0) + 1
    }

    /// Models the org created in `month` (`YYYYMM`).
    pub fn models_created(&self, org: OrgId, month: u32) -> u64 {
        self.created.get(&(org, month)).copied().unwrap_or(0)
    }

    /// The latest batch tick (ms), 0 before the first.
    pub fn clock(&self) -> i64 {
        self.clock
    }
}
