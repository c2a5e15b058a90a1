//! From a raw JSON payload to a [`SignalRecord`]: source resolution, identifier
//! extraction, event type and time. The content hash it stamps
//! on the record is [`crate::dedup`]'s.

use chrono::DateTime;
use serde_json::Value;

use crate::path;
use crate::signal::{Identifiers, SignalRecord};
use crate::tenancy::OrgId;

/// Segment call types, the values of `type` that mark a payload as Segment-shaped.
pub const SEGMENT_TYPES: &[&str] = &["identify", "track", "page", "screen", "group", "alias"];

/// Where a signal came in and what the request said about its source.
#[derive(Clone, Copy, Debug, Default)]
pub struct Context<'a> {
    pub org_id: OrgId,
    pub api_key_id: u64,
    pub received_at: i64,
    /// The `{source}` segment of the source-specific webhook URL (E2).
    pub url_source: Option<&'a str>,
    /// The `X-Source` header.
    pub header_source: Option<&'a str>,
}

/// Detects the source from the payload's top-level keys (with our order: the
/// vendor keys first, because `type` is a common generic key).
pub fn detect_source(payload: &Value) -> &'static str {
    let Some(obj) = payload.as_object() else {
        return "generic";
    };
    if obj.contains_key("mktLeadId") {
        "marketo"
    } else if obj.contains_key("portalId") || obj.contains_key("hs_object_id") {
        "hubspot"
    } else if obj.contains_key("sObject") {
        "salesforce"
    } else if obj
        .get("type")
        .and_then(Value::as_str)
        .is_some_and(|t| SEGMENT_TYPES.contains(&t))
    {
        if is_rudderstack(obj) {
            "rudderstack"
        } else {
            "segment"
        }
    } else {
        "generic"
    }
}

/// Whether a Segment-shaped message comes from a RudderStack SDK: it carries RudderStack's
/// `rudderId`, or its library says so (`RudderLabs JavaScript SDK`, `rudder-ios-library`,
/// `com.rudderstack.android…`), or it has the top-level `channel` RudderStack's SDKs add
/// (its Python SDK reports Segment's `analytics-python` as its library) and is not from
/// Segment's own browser or Node libraries.
fn is_rudderstack(obj: &serde_json::Map<String, Value>) -> bool {
    let library = obj
        .get("context")
        .and_then(|c| c.get("library"))
        .and_then(|l| l.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_ascii_lowercase();
    obj.contains_key("rudderId")
        || library.contains("rudder")
        || (obj.get("channel").is_some_and(Value::is_string)
            && !library.starts_with("analytics.js")
            && !library.starts_with("@segment/"))
}

/// Resolves the source with the precedence URL > `X-Source` > body `source` > detection.
pub fn resolve_source(ctx: &Context<'_>, payload: &Value) -> String {
    let explicit = [
        ctx.url_source,
        ctx.header_source,
        payload.get("source").and_then(Value::as_str),
    ];
    explicit
        .into_iter()
        .flatten()
        .map(str::trim)
        .find(|s| !s.is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| detect_source(payload).to_string())
}

/// The first non-empty email in the documented lookup order, trimmed and lowercased.
pub fn extract_email(payload: &Value) -> Option<String> {
    [
        "email",
        "traits.email",
        "context.traits.email",
        "properties.email",
    ]
    .iter()
    .find_map(|p| path::get_str(payload, p))
    .map(|e| e.to_lowercase())
}

fn first_str(payload: &Value, paths: &[&str]) -> Option<String> {
    paths.iter().find_map(|p| path::get_str(payload, p))
}

/// Extracts every identifier the pipeline knows, accepting the camelCase spellings of the
/// spec and Segment, and the snake_case ones that generic producers often send.
pub fn extract_identifiers(payload: &Value) -> Identifiers {
    Identifiers {
        email: extract_email(payload),
        anonymous_id: first_str(payload, &["anonymousId", "anonymous_id"]),
        user_id: first_str(payload, &["userId", "user_id"]),
        product_user_id: first_str(
            payload,
            &["productUserId", "product_user_id", "traits.productUserId"],
        ),
        crm_id: first_str(payload, &["crmId", "crm_id", "traits.crmId"]),
        map_id: first_str(payload, &["mapId", "map_id"]),
        device_id: first_str(payload, &["deviceId", "device_id", "context.device.id"]),
        product_org_id: first_str(
            payload,
            &[
                "productOrgId",
                "product_org_id",
                "groupId",
                "context.groupId",
            ],
        ),
        mkt_lead_id: first_str(payload, &["mktLeadId"]),
        phone: first_str(payload, &["phone", "traits.phone", "context.traits.phone"]),
    }
}

/// Segment call type when Segment-shaped, else the `event` field, else `unknown`.
pub fn event_type(payload: &Value) -> String {
    if let Some(t) = payload.get("type").and_then(Value::as_str) {
        if SEGMENT_TYPES.contains(&t) {
            return t.to_string();
        }
    }
    path::get_str(payload, "event").unwrap_or_else(|| "unknown".to_string())
}

/// `event` (track, generic), else `name` (page, screen).
pub fn event_name(payload: &Value) -> Option<String> {
    path::get_str(payload, "event").or_else(|| path::get_str(payload, "name"))
}

/// Parses an RFC 3339 / ISO 8601 timestamp into Unix milliseconds.
pub fn parse_time(s: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(s.trim())
        .ok()
        .map(|t| t.timestamp_millis())
}

/// The event time: `timestamp`, else `originalTimestamp`, else the receipt time.
pub fn event_time(payload: &Value, received_at: i64) -> i64 {
    ["timestamp", "originalTimestamp"]
        .iter()
        .find_map(|f| payload.get(*f).and_then(Value::as_str).and_then(parse_time))
        .unwrap_or(received_at)
}

/// Builds the canonical record of one payload. `raw` is the payload text to store unchanged;
/// `payload` is its parsed form. The payload must be a JSON object (callers check).
pub fn normalize(ctx: &Context<'_>, payload: &Value, raw: String) -> SignalRecord {
    let ids = extract_identifiers(payload);
    let anonymous = ids.anonymous_id.is_some() && !ids.is_identifiable();
    SignalRecord {
        org_id: ctx.org_id,
        api_key_id: ctx.api_key_id,
        received_at: ctx.received_at,
        event_at: event_time(payload, ctx.received_at),
        source: resolve_source(ctx, payload),
        event_type: event_type(payload),
        event_name: event_name(payload),
        message_id: path::get_str(payload, "messageId"),
        content_hash: crate::dedup::content_hash(ctx.org_id, payload),
        anonymous,
        ids,
        payload: raw,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    /// A context of org 1, for tests of records.
    pub(crate) fn ctx() -> Context<'static> {
        Context {
            org_id: OrgId(1),
            api_key_id: 9,
            received_at: 1_700_000_000_000,
            ..Default::default()
        }
    }

    #[test]
    fn detection_follows_the_spec_table() {
        assert_eq!(detect_source(&json!({"mktLeadId": 1})), "marketo");
        assert_eq!(detect_source(&json!({"portalId": 1})), "hubspot");
        assert_eq!(detect_source(&json!({"hs_object_id": 1})), "hubspot");
        assert_eq!(detect_source(&json!({"sObject": "Lead"})), "salesforce");
        assert_eq!(detect_source(&json!({"type": "identify"})), "segment");
        assert_eq!(detect_source(&json!({"type": "form"})), "generic");
        // Vendor keys beat Segment's `type`.
        assert_eq!(
            detect_source(&json!({"type": "track", "sObject": "x"})),
            "salesforce"
        );
        assert_eq!(detect_source(&json!({})), "generic");
    }

    #[test]
    fn source_precedence_is_url_header_body_detection() {
        let p = json!({"mktLeadId": 1, "source": "custom"});
        let mut c = ctx();
        assert_eq!(resolve_source(&c, &p), "custom");
        c.header_source = Some("marketing");
        assert_eq!(resolve_source(&c, &p), "marketing");
        c.url_source = Some("website");
        assert_eq!(resolve_source(&c, &p), "website");
        assert_eq!(resolve_source(&ctx(), &json!({"mktLeadId": 1})), "marketo");
    }

    #[test]
    fn email_lookup_order_and_case() {
        assert_eq!(
            extract_email(&json!({"traits": {"email": " A@B.com "}})).unwrap(),
            "a@b.com"
        );
        assert_eq!(
            extract_email(&json!({"context": {"traits": {"email": "c@d.io"}}})).unwrap(),
            "c@d.io"
        );
        assert_eq!(
            extract_email(&json!({"properties": {"email": "e@f.io"}})).unwrap(),
            "e@f.io"
        );
        assert_eq!(
            extract_email(&json!({"email": "top@x.io", "traits": {"email": "t@x.io"}})).unwrap(),
            "top@x.io"
        );
        assert_eq!(
            extract_email(&json!({"email": "", "traits": {"email": "t@x.io"}})).unwrap(),
            "t@x.io"
        );
    }

    #[test]
    fn anonymous_only_when_nothing_identifies() {
        let r = normalize(&ctx(), &json!({"anonymousId": "A1"}), String::new());
        assert!(r.anonymous);
        let r = normalize(
            &ctx(),
            &json!({"anonymousId": "A1", "phone": "+1"}),
            String::new(),
        );
        assert!(!r.anonymous);
        let r = normalize(&ctx(), &json!({}), String::new());
        assert!(
            !r.anonymous,
            "no anonymousId means nothing to rehydrate by, so not cold"
        );
    }

    #[test]
    fn event_time_falls_back_to_receipt() {
        let r = normalize(
            &ctx(),
            &json!({"timestamp": "2024-01-15T14:30:00Z"}),
            String::new(),
        );
        assert_eq!(r.event_at, 1_705_329_000_000);
        let r = normalize(&ctx(), &json!({"timestamp": "not a time"}), String::new());
        assert_eq!(r.event_at, ctx().received_at);
    }

    #[test]
    fn rudderstack_messages_are_told_from_segment_ones() {
        let lib = |name: &str| json!({"type": "track", "context": {"library": {"name": name}}});
        assert_eq!(detect_source(&lib("analytics-python")), "segment");
        assert_eq!(detect_source(&lib("analytics.js")), "segment");
        assert_eq!(
            detect_source(&lib("RudderLabs JavaScript SDK")),
            "rudderstack"
        );
        let mut python = lib("analytics-python");
        python["channel"] = json!("server");
        assert_eq!(detect_source(&python), "rudderstack");
        let mut browser = lib("analytics.js");
        browser["channel"] = json!("client");
        assert_eq!(detect_source(&browser), "segment");
        assert_eq!(
            detect_source(&json!({"type": "page", "rudderId": "r-1"})),
            "rudderstack"
        );
    }

    #[test]
    fn event_type_and_name() {
        let p = json!({"type": "track", "event": "Signed Up"});
        assert_eq!(event_type(&p), "track");
        assert_eq!(event_name(&p).as_deref(), Some("Signed Up"));
        let p = json!({"type": "page", "name": "Pricing"});
        assert_eq!(event_name(&p).as_deref(), Some("Pricing"));
        assert_eq!(event_type(&json!({"event": "form_submit"})), "form_submit");
        assert_eq!(event_type(&json!({"email": "x"})), "unknown");
    }
}
