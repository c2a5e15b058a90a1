//! The Segment HTTP tracking API (`/v1/batch`, `/v1/track`, …), so that unmodified Segment and
//! RudderStack SDKs can send to trailspark by pointing their host at it.
//!
//! Authentication is the API key as the Basic-auth username (how the SDKs send their write
//! key) or `writeKey` in the body. Bodies may be gzip-encoded (RudderStack's SDK does so by
//! default). Batch-level `context` is merged into each message (the message's own keys win).
//! Success is `200 {"success": true, …}`, the status the SDKs treat as delivered.
//!
//! Bodies are read as JSON whatever their `Content-Type`: analytics.js and `sendBeacon`
//! send `text/plain` (a CORS-safelisted type, so no preflight), with `writeKey` inside.

use base64::Engine;
use serde_json::{json, Map, Value};
use trailspark_core::normalize;
use trailspark_core::tenancy::EndpointType;
use warp::http::{HeaderMap, StatusCode};

use crate::body;
use crate::error::IngestError;
use crate::http::{authenticate, check_secret, content_length, header, items_reply, now_ms};
use crate::http::{Reply, Request, BATCH_LIMIT, BATCH_MAX_ITEMS, EVENT_LIMIT};
use crate::ingest::{submit_items, Ingest, ItemOutcome, ItemResults};
use crate::parse;

/// The path kinds served under `/v1/`; `import` is Segment's alias of `batch`.
pub const KINDS: &[&str] = &[
    "batch", "import", "track", "identify", "page", "screen", "group", "alias",
];

/// The kind a `/v1/` path segment names: one of [`KINDS`], or the one-letter short form
/// analytics.js posts to (`/v1/t` is track, `/v1/b` a batch, …).
pub fn canonical_kind(segment: &str) -> Option<&'static str> {
    let short = match segment {
        "t" => "track",
        "p" => "page",
        "i" => "identify",
        "g" => "group",
        "a" => "alias",
        "s" => "screen",
        "b" => "batch",
        other => other,
    };
    KINDS.iter().copied().find(|k| *k == short)
}

/// The write key from `Authorization: Basic base64(key:)`.
fn basic_user(headers: &HeaderMap) -> Option<String> {
    let v = header(headers, "authorization")?.trim();
    let b64 = v
        .strip_prefix("Basic ")
        .or_else(|| v.strip_prefix("basic "))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let user = text.split(':').next().unwrap_or("");
    (!user.is_empty()).then(|| user.to_string())
}

/// Most keys of a batch-level `context`; SDKs send a dozen or so.
pub const MAX_CONTEXT_KEYS: usize = 256;

/// A batch `context` is copied into each of up to 500 messages: one of 28,000 keys cost a
/// second of CPU. Past [`MAX_CONTEXT_KEYS`] keys, or larger than one event may be (no
/// message could carry it), the batch is refused.
fn check_batch_context(ctx: Map<String, Value>) -> Result<Map<String, Value>, IngestError> {
    if ctx.len() > MAX_CONTEXT_KEYS {
        return Err(IngestError::BadRequest(format!(
            "the batch `context` has {} keys; at most {MAX_CONTEXT_KEYS} are merged into each message",
            ctx.len()
        )));
    }
    let size = serde_json::to_vec(&ctx)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if size > EVENT_LIMIT {
        return Err(IngestError::BadRequest(format!(
            "the batch `context` is {size} bytes; a message carrying it would exceed the \
             {EVENT_LIMIT}-byte event limit"
        )));
    }
    Ok(ctx)
}

fn merge_context(item: &mut Map<String, Value>, batch_ctx: Option<&Map<String, Value>>) -> bool {
    let Some(bctx) = batch_ctx else { return false };
    match item.get_mut("context") {
        Some(Value::Object(ictx)) => {
            let mut changed = false;
            for (k, v) in bctx {
                if !ictx.contains_key(k) {
                    ictx.insert(k.clone(), v.clone());
                    changed = true;
                }
            }
            changed
        }
        _ => {
            item.insert("context".into(), Value::Object(bctx.clone()));
            true
        }
    }
}

pub(crate) async fn handle(
    ingest: &dyn Ingest,
    kind: &str,
    req: Request,
) -> Result<Reply, IngestError> {
    let is_batch = kind == "batch" || kind == "import";
    let limit = if is_batch { BATCH_LIMIT } else { EVENT_LIMIT };
    let len = content_length(&req.headers);
    let headers = req.headers;
    let raw = body::read_limited(req.body, len, limit).await?;
    let decoded = body::decode(header(&headers, "content-encoding"), raw.clone(), limit)?;
    let value = parse::parse_object(&decoded, "")?;
    let presented = basic_user(&headers)
        .or_else(|| {
            value
                .get("writeKey")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .ok_or(IngestError::InvalidApiKey)?;
    let key = authenticate(ingest, &presented, EndpointType::SignalStaging, &headers)?;
    check_secret(&key, &headers, &raw)?;

    let ctx = normalize::Context {
        org_id: key.org_id,
        api_key_id: key.id,
        received_at: now_ms(),
        url_source: None,
        header_source: header(&headers, "x-source"),
    };
    let Value::Object(body) = value else {
        unreachable!("parse_object returns objects")
    };
    let (outcomes, org_updates) = messages(&ctx, &key, kind, body)?;
    let mut results = ItemResults::new();
    submit_items(ingest, outcomes, &mut results).await?;
    if results.accepted > 0 && !org_updates.is_empty() {
        for r in ingest.submit(org_updates).await? {
            r?;
        }
    }
    let mut body = results.to_json();
    if results.status(StatusCode::OK) == StatusCode::TOO_MANY_REQUESTS {
        let first = &results.results[0];
        body["code"] = first["error"].clone();
        body["message"] = first["message"].clone();
        return Ok(items_reply(&results, StatusCode::OK, body));
    }
    if results.accepted == 0 && results.rejected > 0 {
        let first = &results.results[0];
        body["error"] = first["error"].clone();
        body["code"] = first["error"].clone();
        body["message"] = first["message"].clone();
        return Ok(Reply::json(StatusCode::BAD_REQUEST, body));
    }
    body["success"] = json!(true);
    Ok(Reply::json(StatusCode::OK, body))
}

/// The Segment normalizer: a request body of `kind` (`batch`, `track`, …) into one outcome
/// per message (normalized, or why not) and the product-org updates its group calls make.
/// Transport-free, so that the NATS path and the fuzz target use it as the HTTP one does.
pub fn messages(
    ctx: &normalize::Context<'_>,
    key: &trailspark_core::ApiKey,
    kind: &str,
    mut body: Map<String, Value>,
) -> Result<(Vec<ItemOutcome>, Vec<trailspark_core::LogEntry>), IngestError> {
    let is_batch = kind == "batch" || kind == "import";
    let (messages, batch_ctx) = if is_batch {
        let items = match body.remove("batch") {
            Some(Value::Array(items)) => items,
            _ => {
                return Err(IngestError::BadRequest(
                    "body must have a `batch` array".into(),
                ))
            }
        };
        if items.len() > BATCH_MAX_ITEMS {
            return Err(IngestError::TooManyItems(format!(
                "a batch holds at most {BATCH_MAX_ITEMS} messages"
            )));
        }
        let bctx = match body.remove("context") {
            Some(Value::Object(m)) => Some(check_batch_context(m)?),
            _ => None,
        };
        (items, bctx)
    } else {
        body.entry("type")
            .or_insert_with(|| Value::String(kind.to_string()));
        (vec![Value::Object(body)], None)
    };

    // Group calls also update the product org they name, read with the Segment
    // group template; they are appended after the signals.
    let mut org_updates = Vec::new();
    let outcomes: Vec<ItemOutcome> = messages
        .into_iter()
        .enumerate()
        .map(|(index, msg)| {
            if msg.get("type").and_then(Value::as_str) == Some("group") {
                let template = trailspark_core::product_org::segment_group_template();
                if let Ok(e) =
                    trailspark_core::product_org::extract(&template, &msg, ctx.received_at)
                {
                    org_updates.push(
                        crate::items::product_org_entry(key, ctx.received_at, e, msg.to_string()).0,
                    );
                }
            }
            let record = match msg {
                Value::Object(mut m) => {
                    merge_context(&mut m, batch_ctx.as_ref());
                    if !m
                        .get("type")
                        .and_then(Value::as_str)
                        .is_some_and(|t| normalize::SEGMENT_TYPES.contains(&t))
                    {
                        Err(IngestError::BadRequest(
                            "message `type` must be a Segment call type".into(),
                        ))
                    } else {
                        m.remove("writeKey");
                        let v = Value::Object(m);
                        let text = serde_json::to_string(&v).expect("values serialize");
                        if text.len() > EVENT_LIMIT {
                            Err(IngestError::TooLarge(EVENT_LIMIT))
                        } else {
                            Ok(normalize::normalize(ctx, &v, text))
                        }
                    }
                }
                other => Err(IngestError::NotAnObject(format!(
                    "message must be an object, got {}",
                    parse::kind(&other)
                ))),
            };
            ItemOutcome {
                index,
                line: None,
                record,
            }
        })
        .collect();
    Ok((outcomes, org_updates))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_auth_username_is_the_key() {
        let mut h = HeaderMap::new();
        let enc = base64::engine::general_purpose::STANDARD.encode("sk_abc:");
        h.insert("authorization", format!("Basic {enc}").parse().unwrap());
        assert_eq!(basic_user(&h).as_deref(), Some("sk_abc"));
        h.insert("authorization", "Bearer x".parse().unwrap());
        assert_eq!(basic_user(&h), None);
    }

    #[test]
    fn context_merge_keeps_item_keys() {
        let bctx = json!({"library": {"name": "lib"}, "ip": "1.1.1.1"});
        let mut item = json!({"context": {"ip": "2.2.2.2"}})
            .as_object()
            .unwrap()
            .clone();
        merge_context(&mut item, bctx.as_object());
        assert_eq!(item["context"]["ip"], "2.2.2.2");
        assert_eq!(item["context"]["library"]["name"], "lib");
        let mut bare = Map::new();
        merge_context(&mut bare, bctx.as_object());
        assert_eq!(bare["context"]["ip"], "1.1.1.1");
    }
}
