//! What every HTTP ingestion endpoint shares: the request and reply types, the size limits,
//! header reading, key checks, and the answer to a multi-item request. The endpoints are in
//! [`crate::routes`] (E1–E5) and [`crate::segment`] (the Segment tracking API).

use serde_json::Value;
use trailspark_core::tenancy::{ApiKey, EndpointType};
use warp::http::{HeaderMap, Method, StatusCode};

use crate::auth;
use crate::body::BodyStream;
use crate::error::IngestError;
use crate::ingest::{Ingest, ItemResults};

/// Largest single event (E1, E2, E5 bodies and each batch/bulk item): 32 KiB.
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
    /// Further response headers (CORS, caching), as (name, value).
    pub headers: Vec<(&'static str, String)>,
}

impl Reply {
    pub fn json(status: StatusCode, body: Value) -> Reply {
        Reply {
            status,
            body,
            retry_after: None,
            raw: None,
            headers: Vec::new(),
        }
    }

    /// Adds a response header.
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Reply {
        self.headers.push((name, value.into()));
        self
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
            headers: Vec::new(),
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

/// Checks the key, its endpoint type, and, for a request from a browser page (one with an
/// `Origin`), that the key allows that origin. A browser's simple requests (`sendBeacon`,
/// a `text/plain` fetch) skip the preflight, so the origin is checked here as well, before
/// anything is stored.
pub(crate) fn authenticate(
    ingest: &dyn Ingest,
    presented: &str,
    wanted: EndpointType,
    headers: &HeaderMap,
) -> Result<ApiKey, IngestError> {
    let key = ingest
        .check_key(presented, now_ms())
        .map_err(auth::rejection)?;
    // The request's span (the server's access log) names the org from here on.
    tracing::Span::current().record("org", key.org_id.0);
    auth::check_type(&key, wanted)?;
    if let Some(origin) = header(headers, "origin") {
        if !key.origin_allowed(origin) {
            return Err(IngestError::OriginNotAllowed(origin.to_string()));
        }
    }
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

/// The answer to a multi-item request: `ok`, or 429 with its `Retry-After` when every item
/// was refused and one at the plan's limit.
pub(crate) fn items_reply(results: &ItemResults, ok: StatusCode, body: Value) -> Reply {
    Reply {
        status: results.status(ok),
        body,
        retry_after: results.retry_after(),
        raw: None,
        headers: Vec::new(),
    }
}
