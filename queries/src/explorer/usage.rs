//! Usage meters as the API shows them.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;
use trailspark_operators::usage::Meter;
use utoipa::ToSchema;

pub fn parse_period(s: &str) -> Option<u32> {
    let (y, m) = s.split_once('-')?;
    let (y, m): (u32, u32) = (y.parse().ok()?, m.parse().ok()?);
    ((1..=12).contains(&m) && (1970..=9999).contains(&y)).then_some(y * 100 + m)
}

/// Meter colour: green under 80 %, amber from 80 % to under 100 %, red at 100 %.
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

/// Lead scoring's meters of a month: evaluations run and ICP models created.
#[derive(Clone, Copy, Debug, Default)]
pub struct ScoringUsage {
    pub evaluations: u64,
    pub models: u64,
}

/// One meter against its plan limit, as the usage page shows it.
#[derive(Serialize, ToSchema)]
pub struct MeterView {
    pub name: &'static str,
    pub used: i64,
    /// 0 is unlimited.
    pub limit: u64,
    /// Of the limit; null when unlimited.
    pub percent: Option<u64>,
    /// green, amber or red.
    pub colour: &'static str,
    /// `colour`, spelt as the product's API spells it.
    pub color: &'static str,
}

/// `GET /api/usage`: the meters of a month.
#[derive(Serialize, ToSchema)]
pub struct UsageView {
    /// `YYYY-MM`.
    pub period: String,
    pub raw_signals: i64,
    pub staged_signals: i64,
    pub mapped_signals: i64,
    pub leads: i64,
    pub evaluations: u64,
    pub models: u64,
    pub limits: trailspark_core::Plan,
    pub overage: bool,
    pub meters: Vec<MeterView>,
}

pub fn usage_json(
    month: u32,
    used: &BTreeMap<Meter, i64>,
    scoring: ScoringUsage,
    plan: &trailspark_core::Plan,
) -> Value {
    let get = |m| used.get(&m).copied().unwrap_or(0);
    let meter = |name: &'static str, used: i64, limit: u64| MeterView {
        name,
        used,
        limit,
        percent: (used.max(0) as u64 * 100).checked_div(limit),
        colour: colour(used, limit),
        color: colour(used, limit),
    };
    let view = UsageView {
        period: format!("{}-{:02}", month / 100, month % 100),
        raw_signals: get(Meter::RawSignals),
        staged_signals: get(Meter::StagedSignals),
        mapped_signals: get(Meter::MappedSignals),
        leads: get(Meter::Leads),
        evaluations: scoring.evaluations,
        models: scoring.models,
        limits: *plan,
        overage: plan.overage,
        meters: vec![
            meter("raw_signals", get(Meter::RawSignals), plan.raw_signal_limit),
            meter(
                "mapped_signals",
                get(Meter::MappedSignals),
                plan.mapped_signal_limit,
            ),
            meter(
                "evaluations",
                scoring.evaluations as i64,
                plan.evaluation_limit,
            ),
            meter("models", scoring.models as i64, plan.icp_model_limit),
        ],
    };
    serde_json::to_value(view).expect("usage serializes")
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
    fn periods() {
        assert_eq!(parse_period("2026-11"), Some(202611));
        assert_eq!(parse_period("2026-13"), None);
    }
}
