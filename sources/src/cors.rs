//! CORS: the headers that let a page on another origin call the server from a browser.
//!
//! Which origins may is decided elsewhere: for ingestion, by the API key
//! ([`trailspark_core::ApiKey::origin_allowed`]); for the admin and org APIs, by the server's
//! `--cors-origin` list. This module only answers preflights and marks replies. The allowed
//! origin is always echoed rather than answered with `*`, so that a page sending
//! credentials is served the same way, and every reply says `Vary: Origin` so that a shared
//! cache never hands one origin's answer to another.

use warp::http::{HeaderMap, StatusCode};

use crate::http::{header, Reply};

/// How long a browser may cache a preflight: Chromium caps it at two hours.
pub const MAX_AGE_SECS: u32 = 7200;
/// Headers a page may read from an answer besides the safelisted ones.
const EXPOSED: &str = "Retry-After, X-Request-Id";
/// Headers allowed when the preflight names none that can be echoed.
const DEFAULT_HEADERS: &str =
    "Content-Type, Content-Encoding, Authorization, X-Api-Secret, X-Signature, X-Source, X-Request-Id";

/// The request's `Origin`, when a browser sent one.
pub fn origin(headers: &HeaderMap) -> Option<&str> {
    header(headers, "origin").filter(|o| !o.is_empty())
}

/// Whether `headers` make the request a preflight (an `OPTIONS` with the method to come).
pub fn is_preflight(headers: &HeaderMap) -> bool {
    header(headers, "access-control-request-method").is_some()
}

/// The answer to a preflight from an allowed `origin`: `204` with the methods, the headers
/// the browser asked for, and how long to cache it.
pub fn preflight(origin: &str, methods: &str, headers: &HeaderMap) -> Reply {
    let mut reply = Reply::json(StatusCode::NO_CONTENT, serde_json::Value::Null);
    reply.raw = Some(("text/plain", Vec::new()));
    allow(&mut reply, origin);
    reply
        .with_header("access-control-allow-methods", methods)
        .with_header("access-control-allow-headers", requested_headers(headers))
        .with_header("access-control-max-age", MAX_AGE_SECS.to_string())
}

/// Lets the page at `origin` read `reply`.
pub fn allow(reply: &mut Reply, origin: &str) {
    reply
        .headers
        .push(("access-control-allow-origin", origin.to_string()));
    reply
        .headers
        .push(("access-control-expose-headers", EXPOSED.to_string()));
    vary(reply);
}

/// Marks a reply whose CORS headers depend on the request's origin.
pub fn vary(reply: &mut Reply) {
    if !reply.headers.iter().any(|(n, _)| *n == "vary") {
        reply.headers.push(("vary", "Origin".to_string()));
    }
}

/// The headers a preflight asks for, echoed when each is a plain header name (what
/// analytics.js and the snippet send, plus any a site adds through their settings), else
/// the list the endpoints read.
fn requested_headers(headers: &HeaderMap) -> String {
    let asked = header(headers, "access-control-request-headers").unwrap_or("");
    let plain = asked.len() <= 1024
        && asked.split(',').all(|h| {
            let h = h.trim();
            !h.is_empty() && h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if plain {
        asked.to_string()
    } else {
        DEFAULT_HEADERS.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find<'a>(r: &'a Reply, name: &str) -> Option<&'a str> {
        r.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn preflight_echoes_origin_and_plain_headers() {
        let mut h = HeaderMap::new();
        h.insert("access-control-request-method", "POST".parse().unwrap());
        h.insert(
            "access-control-request-headers",
            "authorization,content-type".parse().unwrap(),
        );
        let r = preflight("https://a.example", "POST, OPTIONS", &h);
        assert_eq!(r.status, StatusCode::NO_CONTENT);
        assert_eq!(
            find(&r, "access-control-allow-origin"),
            Some("https://a.example")
        );
        assert_eq!(
            find(&r, "access-control-allow-headers"),
            Some("authorization,content-type")
        );
        assert_eq!(find(&r, "access-control-max-age"), Some("7200"));
        assert_eq!(find(&r, "vary"), Some("Origin"));
        h.insert(
            "access-control-request-headers",
            "x-evil\r\nset-cookie: a"
                .parse()
                .unwrap_or_else(|_| "a b".parse().unwrap()),
        );
        let r = preflight("https://a.example", "POST, OPTIONS", &h);
        assert_eq!(
            find(&r, "access-control-allow-headers"),
            Some(DEFAULT_HEADERS)
        );
    }
}
