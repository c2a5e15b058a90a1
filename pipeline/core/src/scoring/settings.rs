//! Site settings for lead scoring (the product's "Lead Scoring Configuration").
//!
//! A change is a config event holding the whole resulting settings, so a replay needs no
//! defaults of the version that wrote it. A lead's cooldown is fixed on its evaluation when it
//! is made (`cooldown_until`), so a later change of the cooldown hours never moves it.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The settings of one org. Field names are the API's.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
pub struct ScoringSettings {
    /// Signals in the lookback window a lead needs before it is evaluated (1–50).
    pub min_signals: u32,
    /// Distinct signal types those signals must cover (1–10).
    pub min_signal_types: u32,
    /// Days of signals an evaluation considers (1–365).
    pub lookback_days: u32,
    /// Confidence (0–100) a hot or warm answer needs; below it the score is cold.
    pub min_confidence_avg: u32,
    /// Whether a lead waits after an evaluation before the next batch evaluation.
    pub cooling_off_enabled: bool,
    /// Hours of cooldown after a hot, warm and cold score (1–8760).
    pub cooldown_hot_hours: u32,
    pub cooldown_warm_hours: u32,
    pub cooldown_cold_hours: u32,
}

impl Default for ScoringSettings {
    fn default() -> Self {
        ScoringSettings {
            min_signals: 3,
            min_signal_types: 2,
            lookback_days: 90,
            min_confidence_avg: 70,
            cooling_off_enabled: true,
            cooldown_hot_hours: 168,
            cooldown_warm_hours: 72,
            cooldown_cold_hours: 336,
        }
    }
}

/// `PUT /api/settings/lead-scoring`: any subset of the fields; the others keep their values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingsChange {
    #[serde(default)]
    pub min_signals: Option<u32>,
    #[serde(default)]
    pub min_signal_types: Option<u32>,
    #[serde(default)]
    pub lookback_days: Option<u32>,
    #[serde(default)]
    pub min_confidence_avg: Option<u32>,
    #[serde(default)]
    pub cooling_off_enabled: Option<bool>,
    #[serde(default)]
    pub cooldown_hot_hours: Option<u32>,
    #[serde(default)]
    pub cooldown_warm_hours: Option<u32>,
    #[serde(default)]
    pub cooldown_cold_hours: Option<u32>,
}

/// A value outside its range: the field and the range, for a 400 naming both.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutOfRange {
    pub field: &'static str,
    pub message: String,
}

fn ranged(
    field: &'static str,
    value: Option<u32>,
    current: u32,
    lo: u32,
    hi: u32,
) -> Result<u32, OutOfRange> {
    match value {
        None => Ok(current),
        Some(v) if (lo..=hi).contains(&v) => Ok(v),
        Some(v) => Err(OutOfRange {
            field,
            message: format!("`{field}` must be between {lo} and {hi} (got {v})"),
        }),
    }
}

impl SettingsChange {
    /// `current` with the given fields replaced, or the first field out of range.
    pub fn apply(&self, current: ScoringSettings) -> Result<ScoringSettings, OutOfRange> {
        let c = current;
        Ok(ScoringSettings {
            min_signals: ranged("min_signals", self.min_signals, c.min_signals, 1, 50)?,
            min_signal_types: ranged(
                "min_signal_types",
                self.min_signal_types,
                c.min_signal_types,
                1,
                10,
            )?,
            lookback_days: ranged("lookback_days", self.lookback_days, c.lookback_days, 1, 365)?,
            min_confidence_avg: ranged(
                "min_confidence_avg",
                self.min_confidence_avg,
                c.min_confidence_avg,
                0,
                100,
            )?,
            cooling_off_enabled: self.cooling_off_enabled.unwrap_or(c.cooling_off_enabled),
            cooldown_hot_hours: ranged(
                "cooldown_hot_hours",
                self.cooldown_hot_hours,
                c.cooldown_hot_hours,
                1,
                8760,
            )?,
            cooldown_warm_hours: ranged(
                "cooldown_warm_hours",
                self.cooldown_warm_hours,
                c.cooldown_warm_hours,
                1,
                8760,
            )?,
            cooldown_cold_hours: ranged(
                "cooldown_cold_hours",
                self.cooldown_cold_hours,
                c.cooldown_cold_hours,
                1,
                8760,
            )?,
        })
    }
}

impl ScoringSettings {
    /// When a lead scored `score` at `at` (ms) may be evaluated again by a batch; `None`
    /// without cooling off.
    pub fn cooldown_until(&self, score: super::Score, at: i64) -> Option<i64> {
        if !self.cooling_off_enabled {
            return None;
        }
        let hours = match score {
            super::Score::Hot => self.cooldown_hot_hours,
            super::Score::Warm => self.cooldown_warm_hours,
            super::Score::Cold => self.cooldown_cold_hours,
        };
        Some(at + i64::from(hours) * 3_600_000)
    }

    /// The start of the lookback window as of `now` (ms): signals at or after it count.
    pub fn window_start(&self, now: i64) -> i64 {
        now - i64::from(self.lookback_days) * 86_400_000
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_keeps_what_it_leaves_out_and_names_a_field_out_of_range() {
        let base = ScoringSettings::default();
        let c: SettingsChange = serde_json::from_str(r#"{"min_signals": 5}"#).unwrap();
        let s = c.apply(base).unwrap();
        assert_eq!((s.min_signals, s.lookback_days), (5, 90));
        let c: SettingsChange = serde_json::from_str(r#"{"lookback_days": 0}"#).unwrap();
        assert_eq!(c.apply(base).unwrap_err().field, "lookback_days");
        let c: SettingsChange = serde_json::from_str(r#"{"cooldown_cold_hours": 8761}"#).unwrap();
        assert_eq!(c.apply(base).unwrap_err().field, "cooldown_cold_hours");
        assert!(serde_json::from_str::<SettingsChange>(r#"{"min_signal": 5}"#).is_err());
        assert!(serde_json::from_str::<SettingsChange>(r#"{"min_signals": 2.5}"#).is_err());
    }

    #[test]
    fn cooldown_follows_the_score_and_the_switch() {
        let mut s = ScoringSettings::default();
        assert_eq!(
            s.cooldown_until(super::super::Score::Warm, 0),
            Some(72 * 3_600_000)
        );
        s.cooling_off_enabled = false;
        assert_eq!(s.cooldown_until(super::super::Score::Hot, 0), None);
    }
}
