//! Airtable's limits and error classes: 5 requests a second per base, and a `429` holds the
//! base for 30 s. Error bodies carry `error` as an object `{type, message}` or a bare
//! string.

use std::time::Duration;

use serde_json::Value;

use crate::client::{Answer, Verdict};
use crate::{credential, CrmError, IntegrationConfig};

/// Under the documented 5 requests a second per base, with room for timers' jitter: a
/// 429 costs the whole base 30 s.
pub const PER_BASE_PER_SEC: f64 = 4.5;
/// How long a base is held after a 429.
pub const PENALTY: Duration = Duration::from_secs(30);

/// The token and base of an Airtable integration, which must name its contacts and
/// companies tables.
pub fn token_and_base(config: &IntegrationConfig) -> Result<(String, String), CrmError> {
    let token = credential(&config.credentials, "personal_access_token")?;
    let base = config
        .settings
        .get("base_id")
        .cloned()
        .ok_or_else(|| CrmError::Invalid("credentials need `base_id`".into()))?;
    for role in ["contacts", "companies"] {
        if !config.settings.contains_key(&format!("tables.{role}")) {
            return Err(CrmError::Invalid(format!(
                "credentials need `tables.{role}`, the table holding {role}"
            )));
        }
    }
    Ok((token, base))
}

/// The pacing scope of a base's requests.
pub fn scope(base: &str) -> String {
    format!("airtable:{base}")
}

/// An error body as text: `type: message`, or the bare string.
pub fn error_text(a: &Answer) -> String {
    let v: Value = serde_json::from_slice(&a.body).unwrap_or(Value::Null);
    match v.get("error") {
        Some(Value::String(s)) => s.clone(),
        Some(e) => format!(
            "{}: {}",
            e.get("type").and_then(Value::as_str).unwrap_or("error"),
            e.get("message").and_then(Value::as_str).unwrap_or("")
        ),
        None => format!("HTTP {}", a.status),
    }
}

pub fn classify(a: &Answer) -> Verdict {
    match a.status {
        200..=299 => Verdict::Done,
        429 => Verdict::Retry(PENALTY),
        401 => Verdict::Fail(CrmError::Disconnected(format!(
            "Airtable refused the token: {}",
            error_text(a)
        ))),
        500..=599 => Verdict::Retry(Duration::from_millis(300)),
        s => Verdict::Fail(CrmError::Refused {
            status: s,
            message: error_text(a),
        }),
    }
}
