//! The ingestion endpoints E1–E5 and their dispatch.
//!
//! Dispatch is an explicit match on path segments rather than a tree of warp filters: the
//! documented routes overlap (`/webhook/{key}/batch` versus `/webhook/{source}/{key}`), and an
//! explicit match makes the precedence, the 404s and the 405s plain to read and to test.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::json;
use trailspark_core::normalize::{self, Context};
use trailspark_core::tenancy::{ApiKey, EndpointType};
use trailspark_core::{product_org, LogEntry};
use warp::http::{HeaderMap, Method, StatusCode};

use crate::body;
use crate::error::IngestError;
use crate::http::{authenticate, check_secret, content_length, header, items_reply, now_ms};
pub use crate::http::{
    Reply, Request, BATCH_LIMIT, BATCH_MAX_ITEMS, BULK_LIMIT, BULK_MAX_ITEMS, EVENT_LIMIT,
};
use crate::ingest::{accepted_body, cold_storage, submit_items, Ingest, ItemOutcome, ItemResults};
pub use crate::items::{batch_items, item_record};
use crate::items::{payload_text, product_org_entry};
use crate::parse::{self, Framing, Splitter};
use crate::segment;

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
    let cold = cold_storage(ingest, &record);
    let mut results = ingest
        .submit(vec![LogEntry::Signal(record.clone())])
        .await?;
    let receipt = results
        .pop()
        .ok_or_else(|| IngestError::Internal("missing receipt".into()))??;
    Ok(Reply::json(
        StatusCode::ACCEPTED,
        accepted_body(&record, receipt, cold),
    ))
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
    let body = results.to_json();
    Ok(items_reply(&results, StatusCode::ACCEPTED, body))
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
    Ok(items_reply(&results, StatusCode::ACCEPTED, reply))
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
/// `trailspark_core::product_org`), or, for a Segment `group` call on a key without one, the
/// documented group mapping: no ID → 422 naming the path; a field of the wrong type is
/// reported in `field_errors` and left out, the rest applies; an unusual value that is kept
/// is reported in `warnings`.
async fn product_org(ingest: &dyn Ingest, key: &str, req: Request) -> Result<Reply, IngestError> {
    let key = authenticate(ingest, key, EndpointType::ProductOrg)?;
    let (headers, raw, body) = read_body(req, EVENT_LIMIT).await?;
    check_secret(&key, &headers, &raw)?;
    let value = parse::parse_object(&body, "")?;
    let group_call = value.get("type").and_then(|t| t.as_str()) == Some("group");
    let built_in = product_org::segment_group_template();
    let template =
        match &key.template {
            Some(t) => t,
            None if group_call => &built_in,
            None => return Err(IngestError::Unprocessable(
                "this key has no payload template; set one with PUT /api/admin/keys/{id}/template"
                    .into(),
            )),
        };
    let received_at = now_ms();
    let extracted =
        product_org::extract(template, &value, received_at).map_err(IngestError::Unprocessable)?;
    let product_org_id = extracted.product_org_id.clone();
    let (entry, errors, warnings) =
        product_org_entry(&key, received_at, extracted, payload_text(&body)?);
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
            "warnings": warnings,
        }),
    ))
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
