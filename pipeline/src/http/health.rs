//! `/healthz` (the process works: 503 only when the log refuses writes or NATS is away) and
//! `/readyz` (it should take traffic: also 503 until the read models have caught up with the
//! log as it was when the server started, and while the archive cannot take a write).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use trailspark_sinks::nats_events::EventsStatus;
use trailspark_sources::nats::consumer::SourceStatus;
use trailspark_sources::Reply;
use warp::http::StatusCode;

use super::Api;

/// What `/healthz` reports about NATS: the connection, and the source and publisher that run
/// over it.
pub struct NatsHealth {
    pub client: async_nats::Client,
    pub source: Option<Arc<SourceStatus>>,
    pub events: Option<Arc<EventsStatus>>,
}

impl NatsHealth {
    /// The `nats` object: connectivity, the source consumer's lag, the event backlog.
    pub async fn report(&self) -> Value {
        let state = self.client.connection_state();
        let connected = state == async_nats::connection::State::Connected;
        let consumer = self
            .source
            .as_ref()
            .and_then(|s| s.consumer.lock().unwrap().clone());
        let mut lag = Value::Null;
        if let (true, Some(mut c)) = (connected, consumer) {
            if let Ok(Ok(info)) = tokio::time::timeout(Duration::from_secs(2), c.info()).await {
                lag = json!({
                    "name": info.name,
                    "pending": info.num_pending,
                    "ack_pending": info.num_ack_pending,
                    "redelivered": info.num_redelivered,
                    "delivered_stream_seq": info.delivered.stream_sequence,
                    "ack_floor_stream_seq": info.ack_floor.stream_sequence,
                });
            }
        }
        let count = |n: Option<u64>| n.unwrap_or(0);
        let source = self.source.as_deref();
        let events = self.events.as_deref();
        json!({
            "connected": connected,
            "state": state.to_string(),
            "source_consumer": lag,
            "source_accepted": count(source.map(|s| s.accepted.load(Ordering::Relaxed))),
            "source_dead_lettered": count(source.map(|s| s.dead_lettered.load(Ordering::Relaxed))),
            "events_backlog": count(events.map(|e| e.backlog.load(Ordering::Relaxed))),
            "events_published": count(events.map(|e| e.published.load(Ordering::Relaxed))),
        })
    }
}

pub async fn health(api: &Api, readiness: bool) -> Reply {
    let applied = api.read.applied();
    let head = api.log.head();
    let mut body = json!({"status": "ok", "log": api.log.kind(), "log_head": head, "read_models_position": applied});
    let mut status = StatusCode::OK;
    let log = api.log.health();
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
    if let Some(nats) = &api.nats {
        let n = nats.report().await;
        if n["connected"] != true {
            // Ingestion answers 503 meanwhile; say so here too, for load balancers.
            body["status"] = json!("degraded");
            status = StatusCode::SERVICE_UNAVAILABLE;
        }
        body["nats"] = n;
    }
    if readiness && status == StatusCode::OK && applied < api.read.started_at_head() {
        body["status"] = json!("replaying");
        body["reason"] = json!("the read models have not caught up with the log yet");
        status = StatusCode::SERVICE_UNAVAILABLE;
    }
    if readiness && status == StatusCode::OK {
        if let Err(e) = archive_writable(api).await {
            body["status"] = json!("archive_unwritable");
            body["reason"] = json!(format!("the archive cannot take a write: {e}"));
            status = StatusCode::SERVICE_UNAVAILABLE;
        }
    }
    Reply::json(status, body)
}

/// How long a probe's outcome answers readiness checks: probes write to the object store,
/// and load balancers ask every few seconds.
const PROBE_TTL: Duration = Duration::from_secs(5);

/// The last archive probe: when, and its outcome.
static PROBE: Mutex<Option<(Instant, Result<(), String>)>> = Mutex::new(None);

/// Whether the archive took a small write lately (within [`PROBE_TTL`]); probes it if not,
/// waiting at most two seconds.
async fn archive_writable(api: &Api) -> Result<(), String> {
    if let Some((at, r)) = PROBE.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
        if at.elapsed() < PROBE_TTL {
            return r.clone();
        }
    }
    let probe = api.archiver.location().probe_writable();
    let r = match tokio::time::timeout(Duration::from_secs(2), probe).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer within 2 s".to_string()),
    };
    *PROBE.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), r.clone()));
    r
}
