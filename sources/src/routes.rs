//! The ingestion endpoints E1–E5 (spec 4) and their dispatch.
//!
//! Dispatch is an explicit match on path segments rather than a tree of warp filters: the
//! spec's routes overlap (`/webhook/{key}/batch` versus `/webhook/{source}/{key}`), and an
//! explicit match makes the precedence, the 404s and the 405s plain to read and to test.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::{json, Value};
use trailspark_core::normalize::{self, Context};
use trailspark_core::tenancy::{ApiKey, EndpointType};
use trailspark_core::{product_org, LogEntry, ProductOrgRecord};
use warp::http::{HeaderMap, Method, StatusCode};

use crate::auth;
use crate::body::{self, BodyStream};
use crate::error::IngestError;
use crate::ingest::{accepted_body, submit_items, Ingest, ItemOutcome, ItemResults};
use crate::parse::{self, Framing, Splitter};
use crate::segment;

/// Largest single event (E1, E2, E5 bodies and each batch/bulk item): 32 KiB (spec 18).
pub const EVENT_LIMIT: usize = 32 * 1024;
/// Largest batch request (E3): 500 KiB.
pub const BATCH_LIMIT: usize = 500 * 1024;
/// Most items in one batch request.
pub const BATCH_MAX_ITEMS: usize = 500;
/// Largest bulk request (E4), read as a stream: 25 MiB.
pub const BULK_LIMIT: usize = 25 * 1024 * 1024;
/// Most items in one bulk request.
pub const BULK_MAX_ITEMS: usize = 10_000;

/// An HTTP request as the routes see it.
pub struct Request {
    pub method: Method,
    pub path: String,
    /// The raw query string (without `?`), empty when there is none.
    pub query: String,
    pub headers: HeaderMap,
    pub body: BodyStream,
}

/// A reply: JSON, or raw bytes of another content type (SQL results as CSV, Arrow, Parquet).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
    pub retry_after: Option<u32>,
    /// When set, sent instead of `body`: (content type, bytes).
    pub raw: Option<(&'static str, Vec<u8>)>,
}

impl Reply {
    pub fn json(status: StatusCode, body: Value) -> Reply {
        Reply {
            status,
            body,
            retry_after: None,
            raw: None,
        }
    }

    pub fn bytes(status: StatusCode, content_type: &'static str, bytes: Vec<u8>) -> Reply {
        Reply {
            raw: Some((content_type, bytes)),
            ..Reply::json(status, Value::Null)
        }
    }
}

impl From<IngestError> for Reply {
    fn from(e: IngestError) -> Reply {
        Reply {
            status: e.status(),
            body: e.body(),
            retry_after: e.retry_after(),
            raw: None,
        }
    }
}

pub(crate) fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

pub(crate) fn content_length(headers: &HeaderMap) -> Option<u64> {
    header(headers, "content-length").and_then(|v| v.trim().parse().ok())
}

pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

enum Endpoint<'a> {
    Single {
        key: &'a str,
        source: Option<&'a str>,
    },
    Batch {
        key: &'a str,
    },
    Bulk {
        key: &'a str,
    },
    ProductOrg {
        key: &'a str,
    },
    Segment {
        kind: &'a str,
    },
}

/// Matches an ingestion path. `None`: not an ingestion path at all; `Some(Err)`: under an
/// ingestion prefix but no such endpoint.
fn match_path(path: &str) -> Option<Result<Endpoint<'_>, IngestError>> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let ep = match segs.as_slice() {
        ["api", "signal-staging", "webhook", key] => Endpoint::Single { key, source: None },
        ["api", "signal-staging", "webhook", key, "batch"] => Endpoint::Batch { key },
        ["api", "signal-staging", "webhook", source, key] => Endpoint::Single {
            key,
            source: Some(source),
        },
        ["api", "signal-staging", "bulk", key] => Endpoint::Bulk { key },
        ["api", "product-orgs", "webhook", key] => Endpoint::ProductOrg { key },
        ["v1", kind] if segment::KINDS.contains(kind) => Endpoint::Segment { kind },
        ["api", "signal-staging", ..] | ["api", "product-orgs", ..] | ["v1", ..] => {
            return Some(Err(IngestError::NotFound))
        }
        _ => return None,
    };
    Some(Ok(ep))
}

/// Handles a request if its path is an ingestion path; `None` lets the server try others.
pub async fn route(ingest: Arc<dyn Ingest>, mut req: Request) -> Option<Reply> {
    let path = std::mem::take(&mut req.path);
    let endpoint = match match_path(&path)? {
        Ok(ep) => ep,
        Err(e) => return Some(e.into()),
    };
    if req.method != Method::POST {
        return Some(IngestError::MethodNotAllowed.into());
    }
    let result = match endpoint {
        Endpoint::Single { key, source } => single(&*ingest, key, source, req).await,
        Endpoint::Batch { key } => batch(&*ingest, key, req).await,
        Endpoint::Bulk { key } => bulk(&*ingest, key, req).await,
        Endpoint::ProductOrg { key } => product_org(&*ingest, key, req).await,
        Endpoint::Segment { kind } => segment::handle(&*ingest, kind, req).await,
    };
    Some(result.unwrap_or_else(Reply::from))
}

/// Checks the key and its endpoint type.
pub(crate) fn authenticate(
    ingest: &dyn Ingest,
    presented: &str,
    wanted: EndpointType,
) -> Result<ApiKey, IngestError> {
    let key = ingest
        .check_key(presented, now_ms())
        .map_err(auth::rejection)?;
    auth::check_type(&key, wanted)?;
    Ok(key)
}

pub(crate) fn check_secret(
    key: &ApiKey,
    headers: &HeaderMap,
    raw: &[u8],
) -> Result<(), IngestError> {
    auth::check_secret(
        key,
        header(headers, "x-api-secret"),
        header(headers, "x-signature"),
        raw,
    )
}

/// A source label from the URL must be a plain token: it becomes part of NATS subjects.
fn valid_source_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn context<'a>(key: &ApiKey, url_source: Option<&'a str>, headers: &'a HeaderMap) -> Context<'a> {
    Context {
        org_id: key.org_id,
        api_key_id: key.id,
        received_at: now_ms(),
        url_source,
        header_source: header(headers, "x-source"),
    }
}

/// Normalizes one item's raw text (size, JSON, object checks, then normalization); errors
/// are per item. Shared by the batch and bulk endpoints and by backfill.
pub fn item_record(
    ctx: &Context<'_>,
    raw: &[u8],
) -> Result<trailspark_core::SignalRecord, IngestError> {
    if raw.len() > EVENT_LIMIT {
        return Err(IngestError::TooLarge(EVENT_LIMIT));
    }
    let value = parse::parse_object(raw, "")?;
    Ok(normalize::normalize(ctx, &value, payload_text(raw)?))
}

/// The payload as stored: the body's text, trimmed (it already parsed as JSON, so only a
/// non-UTF-8 body can fail here).
fn payload_text(raw: &[u8]) -> Result<String, IngestError> {
    let text =
        std::str::from_utf8(raw).map_err(|_| IngestError::InvalidJson("not UTF-8".into()))?;
    Ok(text.trim().to_string())
}

/// Reads a body of at most `limit` bytes as sent (`raw`, what an HMAC signs) and decoded by
/// its `Content-Encoding` (gzip or none; anything else is 415 before the body is read),
/// the decoded body also within `limit`.
async fn read_body(req: Request, limit: usize) -> Result<(HeaderMap, Bytes, Bytes), IngestError> {
    let len = content_length(&req.headers);
    let encoding = header(&req.headers, "content-encoding").map(str::to_string);
    body::check_encoding(encoding.as_deref())?;
    let raw = body::read_limited(req.body, len, limit).await?;
    let decoded = body::decode(encoding.as_deref(), raw.clone(), limit)?;
    Ok((req.headers, raw, decoded))
}

/// E1 and E2: one signal.
async fn single(
    ingest: &dyn Ingest,
    key: &str,
    source: Option<&str>,
    req: Request,
) -> Result<Reply, IngestError> {
    if let Some(s) = source {
        if !valid_source_label(s) {
            return Err(IngestError::BadRequest(format!(
                "source `{s}` in the URL must be 1-64 letters, digits, `_` or `-`"
            )));
        }
    }
    let key = authenticate(ingest, key, EndpointType::SignalStaging)?;
    let (headers, raw, body) = read_body(req, EVENT_LIMIT).await?;
    check_secret(&key, &headers, &raw)?;
    let value = parse::parse_object(&body, "; send arrays to the /batch endpoint")?;
    let record = normalize::normalize(
        &context(&key, source, &headers),
        &value,
        payload_text(&body)?,
    );
    let mut results = ingest
        .submit(vec![LogEntry::Signal(record.clone())])
        .await?;
    let receipt = results
        .pop()
        .ok_or_else(|| IngestError::Internal("missing receipt".into()))??;
    Ok(Reply::json(
        StatusCode::ACCEPTED,
        accepted_body(&record, receipt),
    ))
}

/// Splits a batch body (an array, or an object with a `batch` or `signals` array) into
/// per-item records by E3's rules; more than [`BATCH_MAX_ITEMS`] items is refused with the
/// message `too_many(count)`. Shared with the NATS source's array messages.
pub fn batch_items(
    ctx: &Context<'_>,
    raw: &[u8],
    too_many: impl FnOnce(usize) -> String,
) -> Result<Vec<ItemOutcome>, IngestError> {
    let items = parse::split_batch(raw)?;
    if items.len() > BATCH_MAX_ITEMS {
        return Err(IngestError::TooManyItems(too_many(items.len())));
    }
    Ok(items
        .iter()
        .enumerate()
        .map(|(index, item)| ItemOutcome {
            index,
            line: None,
            record: item_record(ctx, item.get().as_bytes()),
        })
        .collect())
}

/// E3: an array of signals, each through the E1 logic, with per-item results.
async fn batch(ingest: &dyn Ingest, key: &str, req: Request) -> Result<Reply, IngestError> {
    let key = authenticate(ingest, key, EndpointType::SignalStaging)?;
    let (headers, raw, body) = read_body(req, BATCH_LIMIT).await?;
    check_secret(&key, &headers, &raw)?;
    let outcomes = batch_items(&context(&key, None, &headers), &body, |n| {
        format!("a batch holds at most {BATCH_MAX_ITEMS} items, got {n}; use the bulk endpoint")
    })?;
    let mut results = ItemResults::new();
    submit_items(ingest, outcomes, &mut results).await?;
    Ok(Reply::json(
        results.status(StatusCode::ACCEPTED),
        results.to_json(),
    ))
}

/// E4: a bulk body (JSON array, NDJSON, a sequence of JSON values, or one `{"batch": […]}`
/// wrapper), read whole up to [`BULK_LIMIT`] and committed in one append, or refused whole:
/// a body over the size or item limit, one that cannot be read, or one whose structure is
/// broken stores nothing. Reading stops at the first item past [`BULK_MAX_ITEMS`], so an
/// oversized request costs no more than the limit (it used to answer a result for every
/// item of the body). Items that are bad on their own (not JSON, too large, …) are refused
/// one by one in the per-item results, as in E3.
async fn bulk(ingest: &dyn Ingest, key: &str, req: Request) -> Result<Reply, IngestError> {
    let key = authenticate(ingest, key, EndpointType::SignalStaging)?;
    let ctype = header(&req.headers, "content-type")
        .unwrap_or("")
        .to_ascii_lowercase();
    let framing =
        if ctype.contains("ndjson") || ctype.contains("jsonl") || ctype.contains("jsonlines") {
            Framing::Lines
        } else {
            Framing::Json
        };
    let (headers, raw, body) = read_body(req, BULK_LIMIT).await?;
    check_secret(&key, &headers, &raw)?;
    let items = bulk_items(framing, &body)?;
    let ctx = context(&key, None, &headers);
    let outcomes: Vec<ItemOutcome> = items
        .into_iter()
        .enumerate()
        .map(|(index, (line, bytes))| ItemOutcome {
            index,
            line: (framing == Framing::Lines).then_some(line),
            record: item_record(&ctx, &bytes),
        })
        .collect();
    let mut results = ItemResults::new();
    submit_items(ingest, outcomes, &mut results).await?;
    let first_position = results
        .results
        .iter()
        .find_map(|r| r["log_position"].as_u64());
    let mut reply = results.to_json();
    reply["job_id"] = json!(format!("bulk-{}", first_position.unwrap_or(0)));
    Ok(Reply::json(results.status(StatusCode::ACCEPTED), reply))
}

/// The items of a bulk body with the line each starts on. A body that is one JSON object
/// with a `batch` or `signals` array is a wrapper of its items; nothing else is unwrapped
/// (an NDJSON line or array item with such a field is an event like any other).
pub fn bulk_items(framing: Framing, body: &[u8]) -> Result<Vec<(u64, Vec<u8>)>, IngestError> {
    let too_many = || {
        IngestError::TooManyItems(format!(
            "a bulk request holds at most {BULK_MAX_ITEMS} items; reading stopped at item {}, \
             and nothing was stored",
            BULK_MAX_ITEMS + 1
        ))
    };
    let mut splitter = Splitter::new(framing, EVENT_LIMIT);
    let mut pieces = Vec::new();
    // Fed in slices so that reading stops soon after the item limit is passed.
    for chunk in body.chunks(64 << 10) {
        splitter.feed(chunk, &mut pieces)?;
        if pieces.len() > BULK_MAX_ITEMS {
            return Err(too_many());
        }
    }
    splitter.finish(&mut pieces)?;
    if pieces.len() > BULK_MAX_ITEMS {
        return Err(too_many());
    }
    let wrapped = framing == Framing::Json
        && pieces.len() == 1
        && body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    let no_items = || {
        IngestError::BadRequest(
            "the body holds no items; send a JSON array, NDJSON or {\"batch\": [...]}".into(),
        )
    };
    if wrapped {
        if let Ok(items) = parse::split_batch(body) {
            if items.len() > BULK_MAX_ITEMS {
                return Err(too_many());
            }
            if items.is_empty() {
                return Err(no_items());
            }
            let line = pieces[0].line;
            return Ok(items
                .into_iter()
                .map(|i| (line, i.get().as_bytes().to_vec()))
                .collect());
        }
    }
    if pieces.is_empty() {
        return Err(no_items());
    }
    // A piece longer than an event is cut at EVENT_LIMIT + 1 bytes: refused as too large.
    Ok(pieces.into_iter().map(|p| (p.line, p.bytes)).collect())
}

/// E5: a product-org update. The key's template is applied now (see
/// `trailspark_core::product_org`): no ID → 422 naming the path; a field of the wrong type is
/// reported in `field_errors` and left out, the rest applies.
async fn product_org(ingest: &dyn Ingest, key: &str, req: Request) -> Result<Reply, IngestError> {
    let key = authenticate(ingest, key, EndpointType::ProductOrg)?;
    let (headers, raw, body) = read_body(req, EVENT_LIMIT).await?;
    check_secret(&key, &headers, &raw)?;
    let value = parse::parse_object(&body, "")?;
    let template = key.template.as_ref().ok_or_else(|| {
        IngestError::Unprocessable(
            "this key has no payload template; set one with PUT /api/admin/keys/{id}/template"
                .into(),
        )
    })?;
    let received_at = now_ms();
    let extracted =
        product_org::extract(template, &value, received_at).map_err(IngestError::Unprocessable)?;
    let product_org_id = extracted.product_org_id.clone();
    let (entry, errors) = product_org_entry(&key, received_at, extracted, payload_text(&body)?);
    let mut results = ingest.submit(vec![entry]).await?;
    let r = results
        .pop()
        .ok_or_else(|| IngestError::Internal("missing receipt".into()))??;
    Ok(Reply::json(
        StatusCode::ACCEPTED,
        json!({
            "id": r.position,
            "product_org_id": product_org_id,
            "message": "Product org update received and queued for processing",
            "log_position": r.position,
            "duplicate": r.duplicate,
            "field_errors": errors,
        }),
    ))
}

/// The log entry of an extracted update, and its per-field errors as a JSON object.
pub(crate) fn product_org_entry(
    key: &ApiKey,
    received_at: i64,
    e: product_org::Extracted,
    payload: String,
) -> (LogEntry, Value) {
    let errors: serde_json::Map<String, Value> = e
        .errors
        .into_iter()
        .map(|(f, why)| (f, Value::String(why)))
        .collect();
    let entry = LogEntry::ProductOrgUpdate(ProductOrgRecord {
        org_id: key.org_id,
        api_key_id: key.id,
        received_at,
        product_org_id: e.product_org_id,
        event_at: e.event_at,
        fields: e.fields,
        payload,
    });
    (entry, Value::Object(errors))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_route_wins_over_source_route() {
        assert!(matches!(
            match_path("/api/signal-staging/webhook/sk_1/batch"),
            Some(Ok(Endpoint::Batch { key: "sk_1" }))
        ));
        assert!(matches!(
            match_path("/api/signal-staging/webhook/website/sk_1"),
            Some(Ok(Endpoint::Single {
                key: "sk_1",
                source: Some("website")
            }))
        ));
        assert!(matches!(
            match_path("/api/signal-staging/nope"),
            Some(Err(IngestError::NotFound))
        ));
        assert!(match_path("/api/admin/keys").is_none());
        assert!(matches!(
            match_path("/v1/batch"),
            Some(Ok(Endpoint::Segment { kind: "batch" }))
        ));
        assert!(matches!(
            match_path("/v1/nope"),
            Some(Err(IngestError::NotFound))
        ));
    }

    #[test]
    fn source_labels() {
        assert!(valid_source_label("website"));
        assert!(valid_source_label("my-forms_2"));
        assert!(!valid_source_label("a.b"));
        assert!(!valid_source_label(""));
    }
}
