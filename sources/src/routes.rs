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
use crate::{body, browser, cors};

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
    /// analytics.js's settings for a write key.
    Settings {
        key: &'a str,
    },
    /// analytics.js's own telemetry: accepted and dropped.
    Metrics,
    /// The first-party snippet.
    Script,
}

impl Endpoint<'_> {
    /// The methods the endpoint takes, as `Allow` and CORS list them. E1–E3 take PUT and
    /// PATCH as POST because Segment's Webhooks destination offers them.
    fn methods(&self) -> &'static str {
        match self {
            Endpoint::Single { .. } | Endpoint::Batch { .. } => "POST, PUT, PATCH",
            Endpoint::Settings { .. } | Endpoint::Script => "GET, HEAD",
            _ => "POST",
        }
    }

    fn allows(&self, method: &Method) -> bool {
        self.methods().split(", ").any(|m| m == method.as_str())
    }

    /// The key named in the path, which decides a preflight's origin; the Segment paths
    /// carry theirs in a header or the body, which a preflight does not send.
    fn path_key(&self) -> Option<(&str, EndpointType)> {
        match self {
            Endpoint::Single { key, .. } | Endpoint::Batch { key } | Endpoint::Bulk { key } => {
                Some((key, EndpointType::SignalStaging))
            }
            Endpoint::ProductOrg { key } => Some((key, EndpointType::ProductOrg)),
            Endpoint::Settings { key } => Some((key, EndpointType::SignalStaging)),
            Endpoint::Segment { .. } | Endpoint::Metrics | Endpoint::Script => None,
        }
    }
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
        ["v1", "projects", key, "settings"] => Endpoint::Settings { key },
        ["v1", "m"] => Endpoint::Metrics,
        ["v1", kind] => match segment::canonical_kind(kind) {
            Some(kind) => Endpoint::Segment { kind },
            None => return Some(Err(IngestError::NotFound)),
        },
        ["js", "trailspark.js"] => Endpoint::Script,
        ["api", "signal-staging", ..] | ["api", "product-orgs", ..] | ["v1", ..] | ["js", ..] => {
            return Some(Err(IngestError::NotFound))
        }
        _ => return None,
    };
    Some(Ok(ep))
}

/// Handles a request if its path is an ingestion path; `None` lets the server try others.
///
/// A request from a browser page (with an `Origin`) is answered with CORS headers unless
/// the key refuses its origin, and an `OPTIONS` preflight is answered here: for a key in
/// the path, by that key's allowed origins; for the Segment paths, whose key comes with the
/// request itself, by letting it through to be checked then.
pub async fn route(ingest: Arc<dyn Ingest>, mut req: Request) -> Option<Reply> {
    let path = std::mem::take(&mut req.path);
    let endpoint = match match_path(&path)? {
        Ok(ep) => ep,
        Err(e) => return Some(e.into()),
    };
    let origin = cors::origin(&req.headers).map(str::to_string);
    if req.method == Method::OPTIONS {
        return Some(preflight(
            &*ingest,
            &endpoint,
            origin.as_deref(),
            &req.headers,
        ));
    }
    if !endpoint.allows(&req.method) {
        return Some(
            Reply::from(IngestError::MethodNotAllowed(endpoint.methods()))
                .with_header("allow", endpoint.methods()),
        );
    }
    let head = req.method == Method::HEAD;
    let result = match endpoint {
        Endpoint::Single { key, source } => single(&*ingest, key, source, req).await,
        Endpoint::Batch { key } => batch(&*ingest, key, req).await,
        Endpoint::Bulk { key } => bulk(&*ingest, key, req).await,
        Endpoint::ProductOrg { key } => product_org(&*ingest, key, req).await,
        Endpoint::Segment { kind } => segment::handle(&*ingest, kind, req).await,
        Endpoint::Settings { key } => browser::settings(&*ingest, key, &req.headers),
        Endpoint::Metrics => browser::metrics(req).await,
        Endpoint::Script => Ok(browser::script(&req.headers)),
    };
    let mut reply = result.unwrap_or_else(Reply::from);
    if head {
        reply.raw = Some((reply.raw.map_or("application/json", |(t, _)| t), Vec::new()));
    }
    match origin {
        Some(o) if reply.body["code"] != "origin_not_allowed" => cors::allow(&mut reply, &o),
        _ => cors::vary(&mut reply),
    }
    Some(reply)
}

/// The answer to an `OPTIONS` request on `endpoint`.
fn preflight(
    ingest: &dyn Ingest,
    endpoint: &Endpoint<'_>,
    origin: Option<&str>,
    headers: &HeaderMap,
) -> Reply {
    let methods = format!("{}, OPTIONS", endpoint.methods());
    let Some(origin) = origin.filter(|_| cors::is_preflight(headers)) else {
        // Not a browser's preflight: say what the endpoint takes.
        return Reply::json(StatusCode::NO_CONTENT, serde_json::Value::Null)
            .with_header("allow", methods);
    };
    if let Some((key, wanted)) = endpoint.path_key() {
        if let Err(e) = authenticate(ingest, key, wanted, headers) {
            let mut reply = Reply::from(e);
            cors::vary(&mut reply);
            return reply;
        }
    }
    cors::preflight(origin, &methods, headers)
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

/// E1 and E2: one signal, or an array of them handled as E3 handles it.
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
    let key = authenticate(ingest, key, EndpointType::SignalStaging, &req.headers)?;
    // Read to the batch limit: an array here is a batch (Segment's Webhooks destination
    // posts its batches to the one URL it is given). One object stays within EVENT_LIMIT.
    let (headers, raw, body) = read_body(req, BATCH_LIMIT).await?;
    check_secret(&key, &headers, &raw)?;
    if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return submit_batch(ingest, &context(&key, source, &headers), &body).await;
    }
    if body.len() > EVENT_LIMIT {
        return Err(IngestError::TooLarge(EVENT_LIMIT));
    }
    let value = parse::parse_object(&body, "")?;
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
    let key = authenticate(ingest, key, EndpointType::SignalStaging, &req.headers)?;
    let (headers, raw, body) = read_body(req, BATCH_LIMIT).await?;
    check_secret(&key, &headers, &raw)?;
    submit_batch(ingest, &context(&key, None, &headers), &body).await
}

/// Submits a batch body's items (E3, or an array on E1/E2) and answers per item.
async fn submit_batch(
    ingest: &dyn Ingest,
    ctx: &Context<'_>,
    body: &[u8],
) -> Result<Reply, IngestError> {
    let outcomes = batch_items(ctx, body, |n| {
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
    let key = authenticate(ingest, key, EndpointType::SignalStaging, &req.headers)?;
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
    let key = authenticate(ingest, key, EndpointType::ProductOrg, &req.headers)?;
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
    fn browser_paths() {
        for (path, kind) in [
            ("/v1/t", "track"),
            ("/v1/p", "page"),
            ("/v1/i", "identify"),
            ("/v1/g", "group"),
            ("/v1/a", "alias"),
            ("/v1/s", "screen"),
            ("/v1/b", "batch"),
            ("/v1/import", "import"),
        ] {
            match match_path(path) {
                Some(Ok(Endpoint::Segment { kind: k })) => assert_eq!(k, kind, "{path}"),
                _ => panic!("{path} is a Segment path"),
            }
        }
        assert!(matches!(match_path("/v1/m"), Some(Ok(Endpoint::Metrics))));
        assert!(matches!(
            match_path("/v1/projects/sk_1/settings"),
            Some(Ok(Endpoint::Settings { key: "sk_1" }))
        ));
        assert!(matches!(
            match_path("/js/trailspark.js"),
            Some(Ok(Endpoint::Script))
        ));
        assert!(matches!(
            match_path("/js/other.js"),
            Some(Err(IngestError::NotFound))
        ));
        assert!(matches!(
            match_path("/v1/x"),
            Some(Err(IngestError::NotFound))
        ));
        let single = Endpoint::Single {
            key: "k",
            source: None,
        };
        for m in [Method::POST, Method::PUT, Method::PATCH] {
            assert!(single.allows(&m));
        }
        assert!(!single.allows(&Method::GET));
        assert!(
            !Endpoint::Bulk { key: "k" }.allows(&Method::PUT),
            "E4 stays POST only"
        );
        assert!(!Endpoint::ProductOrg { key: "k" }.allows(&Method::PATCH));
    }

    #[test]
    fn source_labels() {
        assert!(valid_source_label("website"));
        assert!(valid_source_label("my-forms_2"));
        assert!(!valid_source_label("a.b"));
        assert!(!valid_source_label(""));
    }
}
