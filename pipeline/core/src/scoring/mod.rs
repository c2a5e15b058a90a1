//! Lead scoring's shared definitions: site settings, evaluation rules, ICP models, the
//! evaluation record, and the config events that carry them on the log.
//!
//! How a lead becomes eligible and how it is scored live with the dataflow
//! (`trailspark-operators`); the evaluator that runs the scorer is a service of the server.
//! These types are here because the API validates them, the log carries them and every crate
//! reads them.

pub mod describe;
pub mod eval_rules;
pub mod evaluation;
pub mod icp;
pub mod settings;
pub mod state;

pub use eval_rules::{EvalRuleDef, Literal, RuleCondition, RuleOp};
pub use evaluation::{
    evaluation_id, gate, Contribution, Dimensions, Evaluation, EvaluationView, LeadKey, Propensity,
    Score, SkipReason, Trigger,
};
pub use icp::{Criteria, EmployeeRange, IcpModel, ModelStatus, NewModel, SignalCriterion};
pub use settings::{OutOfRange, ScoringSettings, SettingsChange};
pub use state::{month_of, EvalRule, ScoringEvent, ScoringState};
