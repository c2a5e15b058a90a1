//! ICP models: what a good customer looks like, in the three dimensions the product uses
//! (account, contact, behaviour), each with a positive side and detractors.
//!
//! A model made in "Describe Manually" mode is free text for each dimension plus structured
//! criteria the deterministic scorer can check. Criteria the author leaves out are read from
//! the text where it names them plainly ([`super::describe`]); the text itself stays in the
//! model and in every evaluation context, where a language model reads it.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::rules::SignalType;
use crate::tenancy::OrgId;

/// An employee-count range, both ends inclusive; an open end is `None`.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(deny_unknown_fields)]
pub struct EmployeeRange {
    #[serde(default)]
    pub min: Option<u64>,
    #[serde(default)]
    pub max: Option<u64>,
}

impl EmployeeRange {
    pub fn contains(&self, n: u64) -> bool {
        self.min.is_none_or(|m| n >= m) && self.max.is_none_or(|m| n <= m)
    }
}

/// A behaviour the model weighs: signals of a rule name and/or a signal type.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignalCriterion {
    /// A mapping rule's name (the signal's name), compared ignoring case.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, rename = "type")]
    pub signal_type: Option<SignalType>,
    /// Importance, 1–10.
    #[serde(default = "default_weight")]
    pub weight: u32,
}

fn default_weight() -> u32 {
    5
}

/// What the deterministic scorer checks. Lists of words match ignoring case, as whole words
/// or phrases inside the lead's or account's value.
#[derive(
    Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(deny_unknown_fields)]
pub struct Criteria {
    #[serde(default)]
    pub industries: Vec<String>,
    #[serde(default)]
    pub excluded_industries: Vec<String>,
    #[serde(default)]
    pub market_segments: Vec<String>,
    #[serde(default)]
    pub employee_ranges: Vec<EmployeeRange>,
    #[serde(default)]
    pub regions: Vec<String>,
    #[serde(default)]
    pub excluded_regions: Vec<String>,
    /// Title keywords of the buying personas (`VP Marketing`, `Head of Growth`).
    #[serde(default)]
    pub titles: Vec<String>,
    /// Seniority keywords (`vp`, `director`, `chief`).
    #[serde(default)]
    pub seniorities: Vec<String>,
    /// Title keywords of contacts that do not convert (`student`, `intern`).
    #[serde(default)]
    pub excluded_titles: Vec<String>,
    #[serde(default)]
    pub positive_signals: Vec<SignalCriterion>,
    #[serde(default)]
    pub negative_signals: Vec<SignalCriterion>,
}

/// `POST /api/icp-models`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewModel {
    pub name: String,
    /// Only `manual` (Describe Manually) is available without a CRM or uploads.
    #[serde(default = "manual")]
    pub method: String,
    /// Ideal customers (required, as the wizard's Accounts step is).
    pub account_profile: String,
    #[serde(default)]
    pub account_detractors: String,
    #[serde(default)]
    pub contact_personas: String,
    #[serde(default)]
    pub contact_detractors: String,
    #[serde(default)]
    pub positive_signals: String,
    #[serde(default)]
    pub negative_signals: String,
    #[serde(default)]
    pub criteria: Option<Criteria>,
}

fn manual() -> String {
    "manual".into()
}

impl NewModel {
    pub fn validate(&self) -> Result<(), String> {
        if self.name.trim().is_empty() || self.name.len() > 200 {
            return Err("`name` must be 1-200 characters".into());
        }
        if self.method != "manual" {
            return Err(format!(
                "`method` `{}` is not available: only `manual` (Describe Manually)",
                self.method
            ));
        }
        if self.account_profile.trim().is_empty() {
            return Err("`account_profile` (ideal customers) is required".into());
        }
        let texts = [
            &self.account_profile,
            &self.account_detractors,
            &self.contact_personas,
            &self.contact_detractors,
            &self.positive_signals,
            &self.negative_signals,
        ];
        if texts.iter().any(|t| t.len() > 20_000) {
            return Err("each description is at most 20,000 characters".into());
        }
        if let Some(c) = &self.criteria {
            for s in c.positive_signals.iter().chain(&c.negative_signals) {
                if !(1..=10).contains(&s.weight) {
                    return Err("a signal criterion's `weight` is 1-10".into());
                }
                if s.name.is_none() && s.signal_type.is_none() {
                    return Err("a signal criterion names a `name` or a `type`".into());
                }
            }
            for r in &c.employee_ranges {
                if let (Some(a), Some(b)) = (r.min, r.max) {
                    if a > b {
                        return Err("an employee range's `min` is above its `max`".into());
                    }
                }
            }
        }
        Ok(())
    }
}

/// Whether a model is the one evaluations use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelStatus {
    Active,
    Inactive,
}

/// A finalized model: its description, the criteria the scorer checks (given, or read from
/// the text) and its place in the org's sequence of models.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IcpModel {
    pub id: u64,
    pub org_id: OrgId,
    /// The org's n-th model: evaluations name the version they were scored with.
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
    #[serde(default)]
    pub derived: Vec<String>,
    pub created_at: i64,
}
