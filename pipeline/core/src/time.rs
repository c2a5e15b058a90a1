//! Times as the APIs show them.

use serde_json::Value;

/// Unix milliseconds as an RFC 3339 UTC timestamp with milliseconds (`null` when out of
/// range).
pub fn rfc3339(ms: i64) -> Value {
    rfc3339_text(ms).map_or(Value::Null, Value::String)
}

/// [`rfc3339`] as text, for the API's typed answers (`None` out of chrono's range).
pub fn rfc3339_text(ms: i64) -> Option<String> {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

/// [`rfc3339`] of an optional time.
pub fn opt_rfc3339(ms: Option<i64>) -> Value {
    ms.map(rfc3339).unwrap_or(Value::Null)
}
