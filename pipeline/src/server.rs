//! The HTTP server: one warp filter that hands every request to the matching area (ingestion,
//! admin, health) and turns its [`Reply`] into a response.

use std::sync::Arc;
use std::time::Duration;

use bytes::Buf;
use futures_util::StreamExt;
use serde_json::json;
use trailspark_sources::routes::{Reply, Request};
use trailspark_sources::{BodyStream, Ingest};
use warp::http::{HeaderMap, Method, Response, StatusCode};
use warp::Filter;

use crate::listener::HttpLimits;
use crate::state::AppState;
use crate::{admin, api};

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
    b.body(body).expect("static headers are valid")
}

fn not_found() -> Reply {
    Reply::json(
        StatusCode::NOT_FOUND,
        json!({"error": "not_found", "code": "not_found", "message": "no such endpoint"}),
    )
}

async fn handle(state: Arc<AppState>, req: Request) -> Reply {
    let path = req.path.as_str();
    if path.starts_with("/api/signal-staging/")
        || path.starts_with("/api/product-orgs/webhook/")
        || path.starts_with("/v1/")
    {
        let ingest: Arc<dyn Ingest> = state;
        return trailspark_sources::route(ingest, req)
            .await
            .unwrap_or_else(not_found);
    }
    if path == "/api/admin" || path.starts_with("/api/admin/") {
        return admin::route(state, req).await.unwrap_or_else(not_found);
    }
    if path.starts_with("/api/") {
        return api::route(state, req).await.unwrap_or_else(not_found);
    }
    if path == "/healthz" || path == "/readyz" {
        if req.method != Method::GET && req.method != Method::HEAD {
            return Reply::json(
                StatusCode::METHOD_NOT_ALLOWED,
                json!({"error": "method_not_allowed", "code": "method_not_allowed", "message": "use GET"}),
            );
        }
        return health(&state, path == "/readyz").await;
    }
    not_found()
}

/// `/healthz` (the process works: 503 only when the log refuses writes or NATS is away)
/// and `/readyz` (it should take traffic: also 503 until the read models have caught up
/// with the log as it was when the server started).
async fn health(state: &AppState, readiness: bool) -> Reply {
    let applied = state.engine.as_ref().map(|e| e.read.applied());
    let head = state.log.head();
    let mut body = json!({"status": "ok", "log": state.log.kind(), "log_head": head, "read_models_position": applied});
    let mut status = StatusCode::OK;
    let log = state.log.health();
    if let Some(e) = &log.roll_error {
        // Appends still succeed (into the current segment); the next roll retries.
        body["status"] = json!("degraded");
        body["log_warning"] = json!(format!("cannot start a new journal segment: {e}"));
    }
    if let Some(e) = &log.write_error {
        body["status"] = json!("failed");
        body["log_error"] = json!(e);
        status = StatusCode::SERVICE_UNAVAILABLE;
    }
    if let Some(nats) = state.nats.get() {
        let n = nats.health().await;
        if n["connected"] != true {
            // Ingestion answers 503 meanwhile; say so here too, for load balancers.
            body["status"] = json!("degraded");
            status = StatusCode::SERVICE_UNAVAILABLE;
        }
        body["nats"] = n;
    }
    if readiness && status == StatusCode::OK {
        let caught_up = match (applied, state.engine.as_ref()) {
            (Some(a), Some(e)) => a >= e.read.started_at_head(),
            _ => true,
        };
        if !caught_up {
            body["status"] = json!("replaying");
            body["reason"] = json!("the read models have not caught up with the log yet");
            status = StatusCode::SERVICE_UNAVAILABLE;
        }
    }
    Reply::json(status, body)
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
    state: Arc<AppState>,
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
                let state = state.clone();
                let body: BodyStream = Box::pin(body_bytes(body, body_idle));
                async move {
                    let req = Request {
                        method,
                        path: path.as_str().to_string(),
                        query,
                        headers,
                        body,
                    };
                    to_response(handle(state, req).await)
                }
            },
        )
}

/// Serves until `shutdown` resolves, within `limits`.
pub async fn serve(
    state: Arc<AppState>,
    listener: tokio::net::TcpListener,
    limits: HttpLimits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let service = warp::service(routes(state, limits.body_idle_timeout));
    crate::listener::serve(listener, limits, service, shutdown).await;
}
