//! The HTTP server: one warp filter that hands every request to the matching area
//! (ingestion, admin, the org API, health) and turns its [`Reply`] into a response.
//!
//! Each area gets the handles it needs from [`Api`], which the topology builds once every
//! part exists: ingestion the ingest handle only, the rest the control plane, the read models,
//! SQL and the services.

pub mod access;
mod admin;
pub(crate) mod answers;
pub mod api;
mod destinations;
mod health;
mod integrations;
pub mod listener;
mod metrics;
pub mod openapi;
pub mod reply;
mod scoring;

use std::sync::Arc;
use std::time::Duration;

use bytes::Buf;
use futures_util::StreamExt;
use serde_json::json;
use tracing::Instrument;
use trailspark_core::tenancy::origin_listed;
use trailspark_queries::{ArchiveLookup, SqlEngine};
use trailspark_sinks::archive::Archiver;
use trailspark_sinks::read_models::ReadModels;
use trailspark_sources::{BodyStream, Ingest, Reply, Request};
use warp::http::{HeaderMap, Method, Response, StatusCode};
use warp::Filter;

pub use self::admin::key_json;
pub use self::health::NatsHealth;
use self::listener::HttpLimits;
use crate::control::Control;
use crate::ingest::IngestHandle;
use crate::log::Log;
use crate::services::retention::RetentionService;

/// What the HTTP API works with.
pub struct Api {
    pub control: Arc<Control>,
    pub ingest: Arc<IngestHandle>,
    pub log: Log,
    pub read: Arc<ReadModels>,
    pub sql: Arc<SqlEngine>,
    /// Payload lookups (signal detail, timeline, retrieval); `None` without an archive.
    pub lookup: Option<ArchiveLookup>,
    pub archiver: Arc<Archiver>,
    pub retention: Arc<RetentionService>,
    pub nats: Option<NatsHealth>,
    /// `None` when evaluation is off.
    pub evaluator: Option<Arc<crate::services::evaluator::Evaluator>>,
    /// CRM integrations and their syncs; `None` in tools that build the API without them.
    pub crm: Option<Arc<crate::services::crm::CrmService>>,
    pub destinations: Option<Arc<crate::services::destinations::DestinationService>>,
    /// Browser origins allowed on the admin and org APIs (`--cors-origin`); the ingestion
    /// endpoints follow each key's own list instead.
    pub cors_origins: Vec<String>,
    /// Whether `/metrics` is served and requests are counted (`--metrics`).
    pub metrics: bool,
    /// Whether `/metrics` is served on its own address (`--metrics-listen`) rather than this
    /// one.
    pub metrics_apart: bool,
}

fn to_response(reply: Reply) -> Response<Vec<u8>> {
    let (content_type, body) = match reply.raw {
        Some((t, bytes)) => (t, bytes),
        None => (
            "application/json",
            serde_json::to_vec(&reply.body).expect("JSON values serialize"),
        ),
    };
    let mut b = Response::builder()
        .status(reply.status)
        .header("content-type", content_type);
    if let Some(s) = reply.retry_after {
        b = b.header("retry-after", s.to_string());
    }
    for (name, value) in reply.headers {
        b = b.header(name, value);
    }
    b.body(body).unwrap_or_else(|_| {
        // A header value built from the request (an echoed origin) that HTTP cannot carry.
        let mut r = Response::new(b"{\"error\":\"internal_error\",\"code\":\"internal_error\",\"message\":\"unencodable response header\"}".to_vec());
        *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        r
    })
}

fn not_found() -> Reply {
    Reply::json(
        StatusCode::NOT_FOUND,
        json!({"error": "not_found", "code": "not_found", "message": "no such endpoint"}),
    )
}

/// Answers a request, with CORS for the admin and org APIs when `--cors-origin` lists the
/// page's origin (the ingestion paths do their own, per key).
async fn handle(api: Arc<Api>, req: Request) -> Reply {
    let path = req.path.as_str();
    let ingestion = is_ingestion(path);
    let origin = match trailspark_sources::cors::origin(&req.headers) {
        Some(o) if !ingestion && origin_listed(&api.cors_origins, o) => Some(o.to_string()),
        _ => None,
    };
    if let Some(o) = &origin {
        if req.method == Method::OPTIONS && trailspark_sources::cors::is_preflight(&req.headers) {
            return trailspark_sources::cors::preflight(o, API_METHODS, &req.headers);
        }
    }
    let path = req.path.clone();
    let mut reply = dispatch(api, req).await;
    // A 405 names what the path takes, from the same table as the OpenAPI document.
    if reply.status == StatusCode::METHOD_NOT_ALLOWED
        && !reply
            .headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("allow"))
    {
        if let Some(allow) = openapi::allowed(&path) {
            reply = reply.with_header("allow", allow);
        }
    }
    if let Some(o) = &origin {
        trailspark_sources::cors::allow(&mut reply, o);
    }
    reply
}

/// The methods the admin and org APIs take from a browser.
const API_METHODS: &str = "GET, POST, PUT, PATCH, DELETE, OPTIONS";

fn is_ingestion(path: &str) -> bool {
    path.starts_with("/api/signal-staging/")
        || path.starts_with("/api/product-orgs/webhook/")
        || path.starts_with("/v1/")
        || path.starts_with("/js/")
}

async fn dispatch(api: Arc<Api>, req: Request) -> Reply {
    let path = req.path.as_str();
    if is_ingestion(path) {
        let ingest: Arc<dyn Ingest> = api.ingest.clone();
        return trailspark_sources::route(ingest, req)
            .await
            .unwrap_or_else(not_found);
    }
    // The operations endpoints take GET and HEAD; `handle` adds their `Allow` from the
    // OpenAPI table, as for every 405.
    let operations = matches!(path, "/healthz" | "/readyz" | "/openapi.json")
        || (path == "/metrics" && api.metrics && !api.metrics_apart);
    if operations && req.method != Method::GET && req.method != Method::HEAD {
        return reply::method_not_allowed(&req.method);
    }
    match path {
        "/healthz" | "/readyz" => return health::health(&api, path == "/readyz").await,
        "/openapi.json" => return openapi::serve(),
        "/metrics" if api.metrics && !api.metrics_apart => return metrics::metrics(&api).await,
        _ => {}
    }
    let trimmed = path.trim_matches('/').to_string();
    let segs: Vec<&str> = trimmed.split('/').collect();
    let Some(("api", rest)) = segs.split_first().map(|(a, r)| (*a, r)) else {
        return not_found();
    };
    match rest {
        ["admin", below @ ..] => match reply::authenticate(&api.control, &req) {
            Ok(p) => admin::dispatch(&api, p, below, req)
                .await
                .unwrap_or_else(|r| r),
            Err(r) => r,
        },
        _ if scoring::handles(rest) => scoring::route(&api, rest, req)
            .await
            .unwrap_or_else(not_found),
        _ if integrations::handles(rest) => integrations::route(&api, rest, req)
            .await
            .unwrap_or_else(not_found),
        _ if destinations::handles(rest) => destinations::route(&api, rest, req)
            .await
            .unwrap_or_else(not_found),
        _ => api::route(&api, rest, req).await.unwrap_or_else(not_found),
    }
}

/// Adapts warp's body stream to plain `Bytes` chunks, ending it with a `TimedOut` error
/// when no data arrives for `idle` (a stalled upload must not hold its connection forever).
fn body_bytes<B: Buf>(
    body: impl futures_util::Stream<Item = Result<B, warp::Error>> + Send + 'static,
    idle: Duration,
) -> impl futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send + 'static {
    let body = Box::pin(body);
    futures_util::stream::unfold(Some(body), move |body| async move {
        let mut body = body?;
        match tokio::time::timeout(idle, body.next()).await {
            Ok(Some(r)) => {
                let item = r
                    .map(|mut b| b.copy_to_bytes(b.remaining()))
                    .map_err(std::io::Error::other);
                Some((item, Some(body)))
            }
            Ok(None) => None,
            Err(_) => {
                let e = std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no body data for {} s", idle.as_secs()),
                );
                Some((Err(e), None))
            }
        }
    })
}

/// The whole HTTP surface as one filter.
pub fn routes(
    api: Arc<Api>,
    body_idle: Duration,
) -> impl Filter<Extract = (Response<Vec<u8>>,), Error = warp::Rejection> + Clone {
    warp::method()
        .and(warp::path::full())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(warp::header::headers_cloned())
        .and(warp::body::stream())
        .then(
            move |method: Method,
                  path: warp::path::FullPath,
                  query: String,
                  headers: HeaderMap,
                  body| {
                let api = api.clone();
                let counted = api.metrics;
                let body: BodyStream = Box::pin(body_bytes(body, body_idle));
                let started = std::time::Instant::now();
                let id =
                    access::request_id(headers.get("x-request-id").and_then(|v| v.to_str().ok()));
                let span = access::span(method.as_str(), &id);
                let route = access::route_template(path.as_str());
                let req = Request {
                    method,
                    path: path.as_str().to_string(),
                    query,
                    headers,
                    body,
                };
                async move {
                    let reply = handle(api, req).instrument(span.clone()).await;
                    let code = (reply.status.as_u16() >= 400)
                        .then(|| reply.body["code"].as_str().map(str::to_string))
                        .flatten();
                    let mut response = to_response(reply);
                    let bytes = response.body().len();
                    if counted {
                        crate::metrics::METRICS.request(
                            &route,
                            response.status().as_u16(),
                            bytes,
                            started.elapsed().as_secs_f64(),
                        );
                    }
                    access::log(
                        &span,
                        &route,
                        response.status().as_u16(),
                        bytes,
                        code.as_deref(),
                        started,
                    );
                    if let Ok(v) = warp::http::HeaderValue::from_str(&id) {
                        response.headers_mut().insert("x-request-id", v);
                    }
                    response
                }
            },
        )
}

/// Serves `GET /metrics` alone (anything else is 404) on the `--metrics-listen` address,
/// until `shutdown` resolves.
pub async fn serve_metrics(
    api: Arc<Api>,
    listener: tokio::net::TcpListener,
    limits: HttpLimits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    use warp::Filter;
    let scrape = warp::path("metrics")
        .and(warp::path::end())
        .and(warp::get().or(warp::head()).unify())
        .then(move || {
            let api = api.clone();
            async move { to_response(metrics::metrics(&api).await) }
        });
    let other = warp::any().map(|| to_response(not_found()));
    let service = warp::service(scrape.or(other).unify());
    listener::serve(listener, limits, service, shutdown).await;
}

/// Serves until `shutdown` resolves, within `limits`.
pub async fn serve(
    api: Arc<Api>,
    listener: tokio::net::TcpListener,
    limits: HttpLimits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let service = warp::service(routes(api, limits.body_idle_timeout));
    listener::serve(listener, limits, service, shutdown).await;
}
