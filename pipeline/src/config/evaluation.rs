//! Settings of lead evaluation: whether it runs, its batch cadence, and the optional LLM
//! scorer.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use clap::Args;
use serde::{Deserialize, Serialize};

use crate::services::evaluator::{EvaluatorConfig, LlmConfig};

/// A duration written as seconds (`900`) or with a unit (`90s`, `15m`, `1h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Interval(pub Duration);

impl FromStr for Interval {
    type Err = String;
    fn from_str(s: &str) -> Result<Interval, String> {
        let s = s.trim();
        let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
        let n: u64 = digits
            .parse()
            .map_err(|_| format!("`{s}` is not a duration (900, 90s, 15m, 1h)"))?;
        let secs = match unit {
            "" | "s" => n,
            "m" => n * 60,
            "h" => n * 3600,
            _ => return Err(format!("`{s}`: the unit is s, m or h")),
        };
        if secs == 0 {
            return Err("the interval must be at least 1 second".into());
        }
        Ok(Interval(Duration::from_secs(secs)))
    }
}

impl TryFrom<String> for Interval {
    type Error = String;
    fn try_from(s: String) -> Result<Interval, String> {
        s.parse()
    }
}

impl From<Interval> for String {
    fn from(i: Interval) -> String {
        i.to_string()
    }
}

impl fmt::Display for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}s", self.0.as_secs())
    }
}

/// Lead evaluation.
#[derive(Args, Clone, Debug, Serialize, Deserialize)]
pub struct EvaluationOpts {
    /// Evaluate leads: the dataflow's eligibility stage and the evaluator. `false` runs the
    /// signal pipeline alone.
    #[arg(long, env = "TRAILSPARK_EVALUATION", default_value_t = true, action = clap::ArgAction::Set)]
    pub evaluation: bool,
    /// Time between batch evaluations of the eligible leads (seconds, or 90s, 15m, 1h).
    #[arg(long, env = "TRAILSPARK_EVALUATION_INTERVAL", default_value = "15m")]
    pub evaluation_interval: Interval,
    /// Base URL of an OpenAI-compatible chat-completions API (e.g. https://api.openai.com/v1);
    /// when set, it scores leads instead of the deterministic scorer.
    #[arg(long, env = "TRAILSPARK_LLM_URL")]
    pub llm_url: Option<String>,
    /// The model to ask (with --llm-url).
    #[arg(long, env = "TRAILSPARK_LLM_MODEL", default_value = "gpt-4o-mini")]
    pub llm_model: String,
    /// The API key, sent as a bearer token (best given in the environment).
    #[arg(long, env = "TRAILSPARK_LLM_API_KEY", hide_env_values = true)]
    pub llm_api_key: Option<String>,
    /// Seconds an LLM call may take before it counts as failed (and is retried later).
    #[arg(long, env = "TRAILSPARK_LLM_TIMEOUT_SECS", default_value_t = 30)]
    pub llm_timeout_secs: u64,
}

impl EvaluationOpts {
    pub fn evaluator_config(&self) -> EvaluatorConfig {
        EvaluatorConfig {
            interval: self.evaluation_interval.0,
            llm: self.llm_url.as_ref().map(|url| LlmConfig {
                url: url.clone(),
                model: self.llm_model.clone(),
                api_key: self.llm_api_key.clone(),
                timeout: Duration::from_secs(self.llm_timeout_secs.max(1)),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_read_with_units() {
        assert_eq!(
            "900".parse::<Interval>().unwrap().0,
            Duration::from_secs(900)
        );
        assert_eq!(
            "15m".parse::<Interval>().unwrap().0,
            Duration::from_secs(900)
        );
        assert_eq!(
            "2h".parse::<Interval>().unwrap().0,
            Duration::from_secs(7200)
        );
        assert!("0".parse::<Interval>().is_err());
        assert!("5d".parse::<Interval>().is_err());
        assert!("soon".parse::<Interval>().is_err());
    }
}
