//! The change-event sink: what downstream consumers (a scorer, a CRM sync) need to follow,
//! published to JetStream on `trailspark.events.<org>.<kind>`:
//!
//! | kind | when | data |
//! |---|---|---|
//! | `lead_created` | a lead appears | `lead_id`, `lead` (key identifier), `profile` |
//! | `lead_updated` | its merged profile changes | same |
//! | `identity_merged` | an identifier joins another's lead | `identifier`, `lead_id`, `previous_lead_id` |
//! | `signal_mapped` | a rule maps a signal | `signal_id`, `rule_id`, `rule_name`, `signal_type`, `lead_id`, ... |
//! | `usage_threshold` | a meter crosses 80% or 100% of its plan limit | `meter`, `month`, `threshold_pct`, `used`, `limit` |
//!
//! Each event has a stable id derived from what it says (`ev_` + 32 hex digits), sent as
//! `Nats-Msg-Id` too, so JetStream drops re-publications within its duplicate window and a
//! consumer can dedupe beyond it. Events are published in log order and each batch is
//! retried until JetStream acknowledges all of it: a NATS outage delays events (and, through
//! the bounded channel from the read models, holds the dataflow back), never drops them.
//!
//! After a restart the dataflow replays the log and derives the same changes again. The
//! publisher skips batches at or below its checkpoint, the log position up to which every
//! event was acknowledged, kept as the last message on `trailspark.checkpoints.events` in a
//! stream of its own, `TRAILSPARK_EVENTS_CHECKPOINT`, which keeps one message (written at most
//! once a second, and when idle). Batches past it are published again; their
//! already-published events carry the same ids. The checkpoint is not a message of the events
//! stream, so a consumer that reads the whole stream without a subject filter sees events
//! only. (Earlier versions kept it on `trailspark.events_checkpoint` in the events stream;
//! [`prepare`] carries such a checkpoint over and takes the subject out of the stream.) A
//! stream rather than a KV bucket: a bucket needs a newer server than the one this must run
//! with (NATS 2.9 refuses the bucket configuration current clients send).

mod events;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use tokio::sync::mpsc::Receiver;
use trailspark_operators::usage::Meter;

pub use self::events::{events_of, Event};
use crate::read_models::Change;

pub const STREAM: &str = "TRAILSPARK_EVENTS";
pub const PREFIX: &str = "trailspark.events";
/// The stream of the publisher's checkpoint, and its one subject.
pub const CHECKPOINT_STREAM: &str = "TRAILSPARK_EVENTS_CHECKPOINT";
pub const CHECKPOINT_SUBJECT: &str = "trailspark.checkpoints.events";
/// Where earlier versions kept the checkpoint, inside the events stream.
pub const LEGACY_CHECKPOINT_SUBJECT: &str = "trailspark.events_checkpoint";
pub const POSITION_HEADER: &str = "Trailspark-Log-Position";
/// Usage thresholds announced, in percent of the plan's limit.
pub const THRESHOLDS: [u64; 2] = [80, 100];

/// Settings of the events stream.
#[derive(Clone, Debug)]
pub struct EventSettings {
    pub replicas: usize,
    /// Zero keeps events forever.
    pub max_age: Duration,
    pub max_bytes: i64,
}

impl Default for EventSettings {
    fn default() -> Self {
        EventSettings {
            replicas: 1,
            max_age: Duration::from_secs(7 * 86_400),
            max_bytes: -1,
        }
    }
}

/// Why the events stream could not be prepared or an event published.
#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    #[error("creating or updating the stream {STREAM}: {0}")]
    Stream(String),
    #[error("the checkpoint stream {CHECKPOINT_STREAM}: {0}")]
    Checkpoint(String),
    #[error("publishing: {0}")]
    Publish(String),
}

/// What `/healthz` reports of the publisher.
#[derive(Debug, Default)]
pub struct EventsStatus {
    /// Change events derived but not yet acknowledged by JetStream.
    pub backlog: AtomicU64,
    /// Change events published (acknowledged) by this process.
    pub published: AtomicU64,
}

/// A meter's plan limit for an org (0: none), for the usage thresholds. The server reads it
/// from its tenancy registry, which the log's replay has folded at least up to the position
/// of the changes being published.
pub type PlanLimits = Arc<dyn Fn(u64, Meter) -> u64 + Send + Sync>;

/// Where the publisher keeps its checkpoint, and the position it holds.
pub struct Prepared {
    pub published_upto: u64,
}

/// Makes sure the events stream and the checkpoint bucket exist, and reads the checkpoint.
pub async fn prepare(
    js: &jetstream::Context,
    settings: &EventSettings,
) -> Result<Prepared, EventsError> {
    let config = stream::Config {
        name: STREAM.to_string(),
        subjects: vec![format!("{PREFIX}.>")],
        storage: stream::StorageType::File,
        num_replicas: settings.replicas,
        max_age: settings.max_age,
        max_bytes: settings.max_bytes,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    };
    let stream_err = |e: &dyn std::fmt::Display| EventsError::Stream(e.to_string());
    let mut stream = js
        .get_or_create_stream(config.clone())
        .await
        .map_err(|e| stream_err(&e))?;
    // An events stream of an earlier version also holds the checkpoint: carry it over, then
    // take its subject out of the stream (and the message with it).
    let info = stream.info().await.map_err(|e| stream_err(&e))?.clone();
    let mut legacy = 0;
    if info
        .config
        .subjects
        .iter()
        .any(|s| s == LEGACY_CHECKPOINT_SUBJECT)
    {
        if let Ok(m) = stream
            .get_last_raw_message_by_subject(LEGACY_CHECKPOINT_SUBJECT)
            .await
        {
            legacy = parse_position(&m.payload);
        }
        stream
            .purge()
            .filter(LEGACY_CHECKPOINT_SUBJECT)
            .await
            .map_err(|e| stream_err(&e))?;
        let mut updated = info.config.clone();
        updated.subjects.retain(|s| s != LEGACY_CHECKPOINT_SUBJECT);
        js.update_stream(updated)
            .await
            .map_err(|e| stream_err(&e))?;
    }
    let cp_err = |e: &dyn std::fmt::Display| EventsError::Checkpoint(e.to_string());
    let checkpoint = js
        .get_or_create_stream(stream::Config {
            name: CHECKPOINT_STREAM.to_string(),
            subjects: vec![CHECKPOINT_SUBJECT.to_string()],
            storage: stream::StorageType::File,
            num_replicas: settings.replicas,
            max_messages_per_subject: 1,
            ..Default::default()
        })
        .await
        .map_err(|e| cp_err(&e))?;
    let stored = match checkpoint
        .get_last_raw_message_by_subject(CHECKPOINT_SUBJECT)
        .await
    {
        Ok(m) => parse_position(&m.payload),
        Err(_) => 0,
    };
    let published_upto = stored.max(legacy);
    if published_upto > stored {
        save(js, published_upto).await.map_err(|e| cp_err(&e))?;
    }
    Ok(Prepared { published_upto })
}

/// Writes the checkpoint and waits for JetStream to acknowledge it.
async fn save(js: &jetstream::Context, published_upto: u64) -> Result<(), EventsError> {
    let err = |e: &dyn std::fmt::Display| EventsError::Checkpoint(e.to_string());
    js.publish(CHECKPOINT_SUBJECT, published_upto.to_string().into())
        .await
        .map_err(|e| err(&e))?
        .await
        .map_err(|e| err(&e))?;
    Ok(())
}

fn parse_position(b: &[u8]) -> u64 {
    std::str::from_utf8(b)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Publishes events until the channel closes, skipping batches at or below the checkpoint
/// that [`prepare`] read.
pub async fn run(
    js: jetstream::Context,
    mut rx: Receiver<(u64, Vec<Change>)>,
    prepared: Prepared,
    limits: PlanLimits,
    status: Arc<EventsStatus>,
) {
    let done = prepared.published_upto;
    let mut checkpoint = done;
    let mut published_upto = done;
    let mut last_checkpoint = Instant::now();
    loop {
        let wait = if published_upto > checkpoint {
            Duration::from_millis(200)
        } else {
            Duration::from_secs(3600)
        };
        match tokio::time::timeout(wait, rx.recv()).await {
            Ok(Some((pos, changes))) if pos > done => {
                let events = events_of(pos, &changes, &*limits);
                status
                    .backlog
                    .fetch_add(events.len() as u64, Ordering::Relaxed);
                publish_until_acked(&js, pos, &events).await;
                status
                    .backlog
                    .fetch_sub(events.len() as u64, Ordering::Relaxed);
                status
                    .published
                    .fetch_add(events.len() as u64, Ordering::Relaxed);
                published_upto = pos;
            }
            Ok(Some(_)) => continue,
            Ok(None) => break,
            Err(_) => {}
        }
        // The checkpoint: at most once a second under load, and as soon as things are idle.
        if published_upto > checkpoint
            && (rx.is_empty() || last_checkpoint.elapsed() >= Duration::from_secs(1))
            && save(&js, published_upto).await.is_ok()
        {
            checkpoint = published_upto;
            last_checkpoint = Instant::now();
        }
    }
}

/// Publishes `events` (pipelined) and waits for every ack, retrying the whole batch with a
/// backoff until it goes through; the ids make retried copies duplicates JetStream drops.
async fn publish_until_acked(js: &jetstream::Context, pos: u64, events: &[Event]) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match publish(js, pos, events).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %e, events = events.len(), "Publishing change events failed; retrying.");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

async fn publish(js: &jetstream::Context, pos: u64, events: &[Event]) -> Result<(), EventsError> {
    let err = |e: &dyn std::fmt::Display| EventsError::Publish(e.to_string());
    for chunk in events.chunks(5_000) {
        let mut acks = Vec::with_capacity(chunk.len());
        for e in chunk {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", e.id.as_str());
            headers.insert(POSITION_HEADER, pos.to_string().as_str());
            let body = serde_json::to_vec(&e.body).expect("JSON values serialize");
            acks.push(
                js.publish_with_headers(e.subject.clone(), headers, body.into())
                    .await
                    .map_err(|e| err(&e))?,
            );
        }
        for ack in acks {
            ack.await.map_err(|e| err(&e))?;
        }
    }
    Ok(())
}
