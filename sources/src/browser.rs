//! What a website needs besides the tracking endpoints: the settings analytics.js loads
//! first, a sink for its telemetry, and the first-party snippet `/js/trailspark.js`.
//!
//! analytics.js (`@segment/analytics-next`) starts by fetching
//! `<cdn>/v1/projects/<writeKey>/settings` and sends wherever its `Segment.io` integration's
//! `apiHost` points. Answering that here lets an unmodified `AnalyticsBrowser.load({writeKey,
//! cdnURL})` send to this server, with no destinations and no remote plugins to load.

use std::sync::OnceLock;

use serde_json::json;
use trailspark_core::tenancy::EndpointType;
use warp::http::{HeaderMap, StatusCode};

use crate::body;
use crate::error::IngestError;
use crate::http::{authenticate, content_length, header, Reply, Request, EVENT_LIMIT};
use crate::ingest::Ingest;

/// The snippet, as served (no build step: the file is the source).
pub const SCRIPT: &str = include_str!("../js/trailspark.js");

/// The snippet gzipped once, for clients that accept it.
pub fn script_gzip() -> &'static [u8] {
    static GZ: OnceLock<Vec<u8>> = OnceLock::new();
    GZ.get_or_init(|| {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(SCRIPT.as_bytes()).expect("writing to memory");
        enc.finish().expect("writing to memory")
    })
}

/// `GET /js/trailspark.js`: the snippet, gzipped when the client takes it, cacheable for an
/// hour (a site's pages load it on every view).
pub fn script(headers: &HeaderMap) -> Reply {
    let gzip = header(headers, "accept-encoding").is_some_and(|v| v.contains("gzip"));
    let ctype = "application/javascript; charset=utf-8";
    let reply = if gzip {
        Reply::bytes(StatusCode::OK, ctype, script_gzip().to_vec())
            .with_header("content-encoding", "gzip")
    } else {
        Reply::bytes(StatusCode::OK, ctype, SCRIPT.as_bytes().to_vec())
    };
    reply
        .with_header("cache-control", "public, max-age=3600")
        .with_header("vary", "Accept-Encoding, Origin")
}

/// Where browsers reach this server: `public_url` when configured, else what the request
/// says (`X-Forwarded-Proto`/`X-Forwarded-Host` from a proxy, or `Host`), as (scheme, host
/// with any port and path prefix).
pub fn public_base(public_url: Option<&str>, headers: &HeaderMap) -> (String, String) {
    if let Some(url) = public_url {
        let url = url.trim_end_matches('/');
        if let Some((scheme, rest)) = url.split_once("://") {
            return (scheme.to_string(), rest.to_string());
        }
    }
    let first = |name| {
        header(headers, name)
            .and_then(|v| v.split(',').next())
            .map(str::trim)
    };
    let scheme = first("x-forwarded-proto").unwrap_or("http");
    let host = first("x-forwarded-host")
        .or_else(|| header(headers, "host"))
        .unwrap_or("localhost");
    (scheme.to_string(), host.to_string())
}

/// `GET /v1/projects/{writeKey}/settings`: the settings analytics.js loads, its `Segment.io`
/// integration pointed at this server. The key must be a signal-staging key that allows the
/// page's origin, so a site learns at load time, not on each event, that it is refused.
pub fn settings(ingest: &dyn Ingest, key: &str, headers: &HeaderMap) -> Result<Reply, IngestError> {
    authenticate(ingest, key, EndpointType::SignalStaging, headers)?;
    let (scheme, host) = public_base(ingest.public_url(), headers);
    let api_host = format!("{host}/v1");
    let body = json!({
        "integrations": {
            "Segment.io": {
                "apiKey": key,
                "apiHost": api_host,
                "protocol": scheme,
                "unbundledIntegrations": [],
                "addBundledMetadata": true,
                "maybeBundledConfigIds": {},
            }
        },
        "plan": {
            "track": {"__default": {"enabled": true, "integrations": {}}},
            "identify": {"__default": {"enabled": true}},
            "group": {"__default": {"enabled": true}},
        },
        "edgeFunction": {},
        "analyticsNextEnabled": true,
        "middlewareSettings": {},
        "enabledMiddleware": {},
        // analytics.js samples its own telemetry to `<host>/m`; this server drops it, so it
        // is not asked for.
        "metrics": {"sampleRate": 0, "host": api_host},
        "legacyVideoPluginsEnabled": false,
        "remotePlugins": [],
    });
    Ok(Reply::json(StatusCode::OK, body).with_header("cache-control", "public, max-age=60"))
}

/// `POST /v1/m`: analytics.js's telemetry, read (within one event's size) and dropped.
pub async fn metrics(req: Request) -> Result<Reply, IngestError> {
    let len = content_length(&req.headers);
    body::read_limited(req.body, len, EVENT_LIMIT).await?;
    Ok(Reply::json(StatusCode::OK, json!({"success": true})))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The budget for the snippet: 6 KB gzipped.
    #[test]
    fn snippet_fits_its_budget() {
        let gz = script_gzip();
        assert!(
            gz.len() <= 6 * 1024,
            "snippet is {} bytes gzipped",
            gz.len()
        );
        let mut text = String::new();
        use std::io::Read;
        flate2::read::GzDecoder::new(gz)
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, SCRIPT);
    }

    #[test]
    fn public_base_prefers_configuration_then_proxy_headers() {
        let mut h = HeaderMap::new();
        h.insert("host", "127.0.0.1:9000".parse().unwrap());
        assert_eq!(
            public_base(None, &h),
            ("http".into(), "127.0.0.1:9000".into())
        );
        h.insert("x-forwarded-proto", "https".parse().unwrap());
        h.insert("x-forwarded-host", "t.example.com, inner".parse().unwrap());
        assert_eq!(
            public_base(None, &h),
            ("https".into(), "t.example.com".into())
        );
        assert_eq!(
            public_base(Some("https://ts.example.org/base/"), &h),
            ("https".into(), "ts.example.org/base".into())
        );
    }
}
