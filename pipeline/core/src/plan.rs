//! An org's plan: the limits its meters are checked against.
//!
//! Plans are configuration data (the product publishes no per-tier numbers), set per org with
//! `PUT`/`PATCH /api/admin/plan` and carried on the log as config events. Every limit is a
//! count per calendar month, and 0 means unlimited.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// An org's plan limits. A limit of 0 means unlimited.
///
/// Clients change a plan with [`PlanChange`], which refuses unknown fields; a `Plan` is read
/// only from the log and shown in answers, so it takes unknown fields (a log written by a
/// later version stays readable) and its answers may add `log_position`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Plan {
    pub raw_signal_limit: u64,
    pub mapped_signal_limit: u64,
    /// Usage overages: ingestion goes on past the limit and the excess is billed.
    pub overage: bool,
    /// Days a processed signal stays in live state before only the archive holds it
    /// (`signalRetentionPeriod`); 0 means the default, 30.
    #[serde(default)]
    pub signal_retention_days: u32,
    /// Lead evaluations a month (the Evaluations meter). At the limit, without overages, no
    /// new evaluation runs.
    #[serde(default)]
    pub evaluation_limit: u64,
    /// ICP models created a month (the Models meter). At the limit, without overages,
    /// creating one is refused.
    #[serde(default)]
    pub icp_model_limit: u64,
}

/// Without a configured plan, signals are retained for 30 days (the product's default).
pub const DEFAULT_RETENTION_DAYS: u32 = 30;

/// A change of some of a plan's fields: the ones given replace theirs, the others keep
/// their values (`PUT` and `PATCH /api/admin/plan`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanChange {
    #[serde(default)]
    pub raw_signal_limit: Option<u64>,
    #[serde(default)]
    pub mapped_signal_limit: Option<u64>,
    #[serde(default)]
    pub overage: Option<bool>,
    #[serde(default)]
    pub signal_retention_days: Option<u32>,
    #[serde(default)]
    pub evaluation_limit: Option<u64>,
    #[serde(default)]
    pub icp_model_limit: Option<u64>,
}

impl PlanChange {
    /// `plan` with the given fields replaced.
    pub fn apply(&self, plan: Plan) -> Plan {
        Plan {
            raw_signal_limit: self.raw_signal_limit.unwrap_or(plan.raw_signal_limit),
            mapped_signal_limit: self.mapped_signal_limit.unwrap_or(plan.mapped_signal_limit),
            overage: self.overage.unwrap_or(plan.overage),
            signal_retention_days: self
                .signal_retention_days
                .unwrap_or(plan.signal_retention_days),
            evaluation_limit: self.evaluation_limit.unwrap_or(plan.evaluation_limit),
            icp_model_limit: self.icp_model_limit.unwrap_or(plan.icp_model_limit),
        }
    }
}

impl Plan {
    pub fn retention_days(&self) -> u32 {
        if self.signal_retention_days == 0 {
            DEFAULT_RETENTION_DAYS
        } else {
            self.signal_retention_days
        }
    }

    /// Whether one more unit fits under `limit` after `used` (the N-th unit of a limit of N
    /// is allowed, the next is not; overages and 0 allow everything).
    pub fn allows(&self, limit: u64, used: u64) -> bool {
        limit == 0 || self.overage || used < limit
    }
}
