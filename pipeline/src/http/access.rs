//! Request ids and the access log.
//!
//! Every request runs inside a `request` span carrying its id (the client's `X-Request-Id`
//! when it sends a plain one, else a generated one) and, once authentication has found it,
//! its org; so every log line of that request names both, and the id is echoed in the
//! response. When the request is answered, one line with target `trailspark::access` says
//! what happened: method, route template, status, latency, org, bytes, and for a refusal
//! its error code. The route is a template (`/api/signal-staging/webhook/{key}`), never the
//! path as sent: ingestion paths carry API keys.

use std::time::Instant;

use tracing::Span;

/// The longest client-sent request id kept; a longer or unusual one is replaced.
const MAX_ID: usize = 128;

/// The request's id: the client's `X-Request-Id` when it is 1–128 characters of letters,
/// digits and `-_.:`, else a new random one (so a client cannot inject text into logs).
pub fn request_id(sent: Option<&str>) -> String {
    match sent {
        Some(id)
            if !id.is_empty()
                && id.len() <= MAX_ID
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b)) =>
        {
            id.to_string()
        }
        _ => {
            let bytes: [u8; 16] = rand::random();
            hex::encode(bytes)
        }
    }
}

/// The span a request's work and logs run in.
pub fn span(method: &str, id: &str) -> Span {
    tracing::info_span!("request", request_id = %id, method = %method, org = tracing::field::Empty)
}

/// Records the org a request acts for on its span, once authentication knows it.
pub fn record_org(org: u64) {
    Span::current().record("org", org);
}

/// The route template of `path`: the documented shape with its variable segments named.
/// Keys and tokens are never kept, and an unknown path is `unmatched`, so that the set of
/// values stays bounded (a metric label can use it).
pub fn route_template(path: &str) -> String {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let fixed = match segs.as_slice() {
        ["api", "signal-staging", "webhook", _] => "/api/signal-staging/webhook/{key}",
        ["api", "signal-staging", "webhook", _, "batch"] => {
            "/api/signal-staging/webhook/{key}/batch"
        }
        ["api", "signal-staging", "webhook", _, _] => "/api/signal-staging/webhook/{source}/{key}",
        ["api", "signal-staging", "bulk", _] => "/api/signal-staging/bulk/{key}",
        ["api", "product-orgs", "webhook", _] => "/api/product-orgs/webhook/{key}",
        ["v1", "projects", _, "settings"] => "/v1/projects/{key}/settings",
        ["api", "oauth", "callback", _] => "/api/oauth/callback/{crm}",
        _ => "",
    };
    if !fixed.is_empty() {
        return fixed.to_string();
    }
    let known_words = segs.iter().all(|s| {
        let word = s.len() <= 40
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
            && !s.starts_with("sk_")
            && !s.starts_with("ts_");
        s.is_empty() || word || is_id(s)
    });
    if !known_words || segs.len() > 8 {
        return "unmatched".to_string();
    }
    let mut out = String::new();
    for s in segs.iter().filter(|s| !s.is_empty()) {
        out.push('/');
        out.push_str(if is_id(s) { "{id}" } else { s });
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// A segment that names one record: a number, a prefixed id (`ld_…`, `sg_…`, `ev_…`), a
/// product org's id: anything holding a digit, except the API version `v1`.
fn is_id(s: &str) -> bool {
    s != "v1" && s.bytes().any(|b| b.is_ascii_digit())
}

/// Writes the access line of a request answered with `status` after `started`.
pub fn log(
    span: &Span,
    route: &str,
    status: u16,
    bytes: usize,
    code: Option<&str>,
    started: Instant,
) {
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    let _in = span.enter();
    match code {
        Some(code) => tracing::info!(
            target: "trailspark::access",
            route,
            status,
            latency_ms,
            bytes,
            code,
            "refused"
        ),
        None => tracing::info!(
            target: "trailspark::access",
            route,
            status,
            latency_ms,
            bytes,
            "answered"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_never_keep_keys() {
        assert_eq!(
            route_template("/api/signal-staging/webhook/sk_secret"),
            "/api/signal-staging/webhook/{key}"
        );
        assert_eq!(
            route_template("/api/signal-staging/webhook/web/sk_secret"),
            "/api/signal-staging/webhook/{source}/{key}"
        );
        assert_eq!(
            route_template("/api/leads/ld_12ab/timeline"),
            "/api/leads/{id}/timeline"
        );
        assert_eq!(route_template("/api/admin/keys/12"), "/api/admin/keys/{id}");
        assert_eq!(route_template("/v1/t"), "/v1/t");
        assert_eq!(
            route_template("/api/product-orgs/ws-1"),
            "/api/product-orgs/{id}"
        );
        assert_eq!(route_template("/healthz"), "/healthz");
        assert_eq!(route_template("/"), "/");
        assert_eq!(route_template("/api/admin/sk_oops"), "unmatched");
        assert_eq!(route_template("/Weird/Path"), "unmatched");
    }

    #[test]
    fn request_ids() {
        assert_eq!(request_id(Some("abc-1.2:3_x")), "abc-1.2:3_x");
        assert_eq!(request_id(None).len(), 32);
        assert_eq!(request_id(Some("bad id\nforged")).len(), 32);
        assert_eq!(request_id(Some(&"x".repeat(200))).len(), 32);
    }
}
