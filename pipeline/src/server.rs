//! The HTTP server: one warp filter that hands every request to the matching area (ingestion,
//! admin, health) and turns its [`Reply`] into a response.

use std::sync::Arc;

use bytes::Buf;
use futures_util::StreamExt;
use serde_json::json;
use trailspark_sources::routes::{Reply, Request};
use trailspark_sources::{BodyStream, Ingest};
use warp::http::{HeaderMap, Method, Response, StatusCode};
use warp::Filter;

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
    if path == "/healthz" {
        if req.method != Method::GET && req.method != Method::HEAD {
            return Reply::json(
                StatusCode::METHOD_NOT_ALLOWED,
                json!({"error": "method_not_allowed", "code": "method_not_allowed", "message": "use GET"}),
            );
        }
        let applied = state.engine.as_ref().map(|e| e.read.applied());
        let mut body = json!({"status": "ok", "log": state.log.kind(), "log_head": state.log.head(), "read_models_position": applied});
        let mut status = StatusCode::OK;
        if let Some(nats) = state.nats.get() {
            let n = nats.health().await;
            if n["connected"] != true {
                // Ingestion answers 503 meanwhile; say so here too, for load balancers.
                body["status"] = json!("degraded");
                status = StatusCode::SERVICE_UNAVAILABLE;
            }
            body["nats"] = n;
        }
        return Reply::json(status, body);
    }
    not_found()
}

/// Adapts warp's body stream to plain `Bytes` chunks.
fn body_bytes<B: Buf>(
    body: impl futures_util::Stream<Item = Result<B, warp::Error>> + Send + 'static,
) -> impl futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send + 'static {
    body.map(|r| {
        r.map(|mut b| b.copy_to_bytes(b.remaining()))
            .map_err(std::io::Error::other)
    })
}

/// The whole HTTP surface as one filter.
pub fn routes(
    state: Arc<AppState>,
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
                let body: BodyStream = Box::pin(body_bytes(body));
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

/// Serves until `shutdown` resolves.
pub async fn serve(
    state: Arc<AppState>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    warp::serve(routes(state))
        .incoming(listener)
        .graceful(shutdown)
        .run()
        .await;
}
