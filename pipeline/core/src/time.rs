//! Times as the APIs show them.

use serde_json::Value;

/// Unix milliseconds as an RFC 3339 UTC timestamp with milliseconds (`null` when out of
/// range).
pub fn rfc3339(ms: i64) -> Value {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)))
        .unwrap_or(Value::Null)
}

/// [`rfc3339`] of an optional time.
pub fn opt_rfc3339(ms: Option<i64>) -> Value {
    ms.map(rfc3339).unwrap_or(Value::Null)
}
