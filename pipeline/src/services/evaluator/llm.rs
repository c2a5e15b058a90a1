//! The optional LLM scorer: an OpenAI-compatible chat-completions endpoint, given the
//! evaluation context and the deterministic scorer's feature table, answering strict JSON.
//!
//! Its answer is validated strictly (exactly `score`, `confidence`, `reasoning`,
//! `propensity`; a tier, an integer 0–100, a non-empty text, a propensity or null). Anything
//! else, a timeout, a 429 or a server error is an [`LlmError`]: the evaluator records it and
//! retries with backoff, and never stores it as an evaluation. The base URL is configurable,
//! so the same code talks to OpenAI, a compatible gateway, or the tests' contract server.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};
use trailspark_core::scoring::{Contribution, Propensity, Score};

/// Where and how to call the model.
#[derive(Clone, Debug)]
pub struct LlmConfig {
    /// The API's base URL, e.g. `https://api.openai.com/v1`.
    pub url: String,
    pub model: String,
    pub api_key: Option<String>,
    pub timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    #[error("the model API is rate limited (429)")]
    RateLimited { retry_after: Option<Duration> },
    #[error("the model API did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the model API answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("the model's answer is invalid: {0}")]
    Invalid(String),
    #[error("calling the model API: {0}")]
    Transport(String),
}

/// The answer a model must give.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Answer {
    score: String,
    confidence: Value,
    reasoning: String,
    propensity: Option<String>,
}

/// A valid answer.
#[derive(Clone, Debug, PartialEq)]
pub struct LlmAnswer {
    pub score: Score,
    pub confidence: u32,
    pub reasoning: String,
    pub propensity: Option<Propensity>,
}

/// Checks a model's message content.
pub fn validate(content: &str) -> Result<LlmAnswer, LlmError> {
    let content = content.trim();
    // Some models wrap JSON in a Markdown fence.
    let content = content
        .strip_prefix("```json")
        .or_else(|| content.strip_prefix("```"))
        .and_then(|c| c.strip_suffix("```"))
        .map_or(content, str::trim);
    let a: Answer = serde_json::from_str(content)
        .map_err(|e| LlmError::Invalid(format!("not the answer's JSON: {e}")))?;
    let score = Score::parse(&a.score).ok_or_else(|| {
        LlmError::Invalid(format!("score `{}` is not hot, warm or cold", a.score))
    })?;
    let confidence = a.confidence.as_u64().filter(|c| *c <= 100).ok_or_else(|| {
        LlmError::Invalid(format!(
            "confidence {} is not an integer 0-100",
            a.confidence
        ))
    })? as u32;
    let reasoning = a.reasoning.trim().to_string();
    if reasoning.is_empty() || reasoning.len() > 8_000 {
        return Err(LlmError::Invalid(
            "reasoning must be 1-8000 characters".into(),
        ));
    }
    let propensity = match a.propensity.as_deref() {
        None => None,
        Some("high") => Some(Propensity::High),
        Some("medium") => Some(Propensity::Medium),
        Some("low") => Some(Propensity::Low),
        Some(other) => {
            return Err(LlmError::Invalid(format!(
                "propensity `{other}` is not high, medium, low or null"
            )))
        }
    };
    Ok(LlmAnswer {
        score,
        confidence,
        reasoning,
        propensity,
    })
}

const INSTRUCTIONS: &str = "You score B2B leads against an ideal customer profile (ICP). \
You are given the evaluation context (the lead, its account, its signals in the lookback window with \
their rules' descriptions, its product usage and the ICP) and the deterministic scorer's feature \
table (each input, the criterion it met or violated, and its points). Answer with one JSON object \
and nothing else: {\"score\": \"hot\"|\"warm\"|\"cold\", \"confidence\": integer 0-100, \
\"reasoning\": a short paragraph naming the evidence, \"propensity\": \"high\"|\"medium\"|\"low\"|null} \
(propensity is the account's likelihood to buy).";

pub struct LlmScorer {
    client: reqwest::Client,
    cfg: LlmConfig,
}

impl LlmScorer {
    pub fn new(cfg: LlmConfig) -> LlmScorer {
        let client = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .build()
            .expect("an HTTP client builds");
        LlmScorer { client, cfg }
    }

    pub fn name(&self) -> String {
        format!("llm:{}", self.cfg.model)
    }

    /// Asks the model to score the lead of `context`.
    pub async fn score(
        &self,
        context: &Value,
        features: &[Contribution],
    ) -> Result<LlmAnswer, LlmError> {
        let user = json!({"context": context, "features": features}).to_string();
        let body = json!({
            "model": self.cfg.model,
            "messages": [
                {"role": "system", "content": INSTRUCTIONS},
                {"role": "user", "content": user},
            ],
            "temperature": 0,
            "response_format": {"type": "json_object"},
        });
        let url = format!("{}/chat/completions", self.cfg.url.trim_end_matches('/'));
        let mut req = self.client.post(url).json(&body);
        if let Some(k) = &self.cfg.api_key {
            req = req.bearer_auth(k);
        }
        let resp = req.send().await.map_err(|e| {
            if e.is_timeout() {
                LlmError::Timeout(self.cfg.timeout)
            } else {
                LlmError::Transport(e.to_string())
            }
        })?;
        let status = resp.status().as_u16();
        if status == 429 {
            let retry_after = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            return Err(LlmError::RateLimited { retry_after });
        }
        let text = resp.text().await.map_err(|e| {
            if e.is_timeout() {
                LlmError::Timeout(self.cfg.timeout)
            } else {
                LlmError::Transport(e.to_string())
            }
        })?;
        if !(200..300).contains(&status) {
            let body: String = text.chars().take(500).collect();
            return Err(LlmError::Status { status, body });
        }
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| LlmError::Invalid(format!("the response is not JSON: {e}")))?;
        let content = v["choices"][0]["message"]["content"]
            .as_str()
            .ok_or_else(|| {
                LlmError::Invalid("the response has no choices[0].message.content".into())
            })?;
        validate(content)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_validated_strictly() {
        let ok = validate(
            r#"{"score":"warm","confidence":78,"reasoning":"Fits.","propensity":"medium"}"#,
        )
        .unwrap();
        assert_eq!((ok.score, ok.confidence), (Score::Warm, 78));
        assert!(validate("```json\n{\"score\":\"hot\",\"confidence\":90,\"reasoning\":\"x\",\"propensity\":null}\n```").is_ok());
        for bad in [
            r#"{"score":"Warm","confidence":78,"reasoning":"x","propensity":null}"#,
            r#"{"score":"warm","confidence":101,"reasoning":"x","propensity":null}"#,
            r#"{"score":"warm","confidence":7.5,"reasoning":"x","propensity":null}"#,
            r#"{"score":"warm","confidence":"78","reasoning":"x","propensity":null}"#,
            r#"{"score":"warm","confidence":78,"reasoning":"","propensity":null}"#,
            r#"{"score":"warm","confidence":78,"reasoning":"x","propensity":"huge"}"#,
            r#"{"score":"warm","confidence":78,"reasoning":"x","propensity":null,"extra":1}"#,
            r#"{"score":"warm","confidence":78}"#,
            "Sure! Here is the score: warm",
        ] {
            assert!(matches!(validate(bad), Err(LlmError::Invalid(_))), "{bad}");
        }
    }
}
