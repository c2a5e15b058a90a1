//! The NATS source's JetStream half: producers publish signals to
//! `trailspark.signals.<org>.<source>` (captured by the log's stream), and a durable pull
//! consumer (`trailspark-ingest`) reads those raw subjects in stream order, a chunk at a time.
//!
//! Each chunk's messages are checked by the webhook rules ([`super::records`]) and their
//! signals appended to the log as one append, as a batch request's would be; bad messages go
//! to `trailspark.deadletter.<org>.<source>` with the reason in headers. A message is acked
//! only once its signals are durable on the log *and* the read models have applied them
//! ([`Ingest::wait_applied`]), so the consumer's ack floor is a point up to which everything is
//! queryable, and `max_ack_pending` is the flow control between NATS and the dataflow. A crash
//! before the ack redelivers the message after a restart; its signals are then recognised by
//! the log's exact dedup index and not appended twice, so each accepted signal counts exactly
//! once. (The archive is derived from the log and resumes from its own checkpoint, so acks
//! need not wait for files, which roll minutes apart.)

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream, AckKind};
use futures_util::StreamExt;
use trailspark_core::subjects::{
    subject_token, DEADLETTER_PREFIX, DEADLETTER_STREAM, RAW_PREFIX, RAW_SIGNALS, STREAM,
};
use trailspark_core::LogEntry;

use super::{credentials, parse_subject, records, Target};
use crate::{Ingest, IngestError};

pub const CONSUMER: &str = "trailspark-ingest";

/// Why the consumer stopped (it is resubscribed after a pause).
#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    #[error("NATS: {0}")]
    Nats(String),
    #[error("appending to the log: {0}")]
    Log(#[from] IngestError),
    #[error("the acker stopped")]
    AckerStopped,
}

fn nats_err(e: impl std::fmt::Display) -> ConsumerError {
    ConsumerError::Nats(e.to_string())
}

/// What `/healthz` reports of the source.
#[derive(Default)]
pub struct SourceStatus {
    /// The durable consumer, once created (its info is the source's lag).
    pub consumer: Mutex<Option<consumer::PullConsumer>>,
    /// Producer messages accepted / sent to the dead-letter subject.
    pub accepted: AtomicU64,
    pub dead_lettered: AtomicU64,
}

/// Settings of the source's consumer.
#[derive(Clone, Debug)]
pub struct ConsumerSettings {
    /// Most messages delivered and not yet acked: how far NATS may run ahead of the dataflow.
    pub max_ack_pending: i64,
    /// How long before an unacked message is redelivered (progress acks extend it while the
    /// dataflow catches up).
    pub ack_wait: Duration,
    /// Messages handled as one chunk (one log append).
    pub batch: usize,
    /// How long dead letters are kept.
    pub deadletter_max_age: Duration,
}

impl Default for ConsumerSettings {
    fn default() -> Self {
        ConsumerSettings {
            max_ack_pending: 20_000,
            ack_wait: Duration::from_secs(30),
            batch: 1_000,
            deadletter_max_age: Duration::from_secs(30 * 86_400),
        }
    }
}

/// Runs the JetStream source until the process ends, recreating its subscription after
/// errors (a NATS restart) with a backoff.
pub async fn run_consumer(
    ingest: Arc<dyn Ingest>,
    js: jetstream::Context,
    settings: ConsumerSettings,
    status: Arc<SourceStatus>,
) {
    let mut backoff = Duration::from_millis(250);
    loop {
        match consume(&ingest, &js, &settings, &status).await {
            Ok(()) => backoff = Duration::from_millis(250),
            Err(e) => {
                tracing::warn!(error = %e, "The NATS source stopped; resuming shortly.");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Makes sure the dead-letter stream exists.
pub async fn ensure_deadletter_stream(
    js: &jetstream::Context,
    settings: &ConsumerSettings,
) -> Result<(), ConsumerError> {
    js.get_or_create_stream(stream::Config {
        name: DEADLETTER_STREAM.to_string(),
        subjects: vec![format!("{DEADLETTER_PREFIX}.>")],
        storage: stream::StorageType::File,
        max_age: settings.deadletter_max_age,
        ..Default::default()
    })
    .await
    .map_err(nats_err)?;
    Ok(())
}

async fn consume(
    ingest: &Arc<dyn Ingest>,
    js: &jetstream::Context,
    settings: &ConsumerSettings,
    status: &Arc<SourceStatus>,
) -> Result<(), ConsumerError> {
    let stream = js.get_stream(STREAM).await.map_err(nats_err)?;
    let consumer: consumer::PullConsumer = stream
        .get_or_create_consumer(
            CONSUMER,
            consumer::pull::Config {
                durable_name: Some(CONSUMER.to_string()),
                description: Some("trailspark: producers' signals into the log".into()),
                filter_subject: RAW_SIGNALS.to_string(),
                deliver_policy: consumer::DeliverPolicy::All,
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: settings.ack_wait,
                max_ack_pending: settings.max_ack_pending,
                max_deliver: -1,
                ..Default::default()
            },
        )
        .await
        .map_err(nats_err)?;
    *status.consumer.lock().unwrap() = Some(consumer.clone());
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(settings.batch)
        .heartbeat(Duration::from_secs(5))
        .expires(Duration::from_secs(30))
        .messages()
        .await
        .map_err(nats_err)?
        .ready_chunks(settings.batch);
    // Chunks wait for the read models in an acker task, so the next chunk is appended while
    // the dataflow works on this one. The channel's bound (with max_ack_pending) keeps it finite.
    let (ack_tx, mut ack_rx) = tokio::sync::mpsc::channel::<(u64, Vec<jetstream::Message>)>(64);
    let acker = {
        let ingest = ingest.clone();
        let ack_wait = settings.ack_wait;
        tokio::spawn(async move {
            while let Some((pos, msgs)) = ack_rx.recv().await {
                wait_applied(&*ingest, pos, &msgs, ack_wait).await;
                for m in &msgs {
                    if let Err(e) = m.ack().await {
                        tracing::debug!(error = %e, "Ack failed; the message will be redelivered.");
                    }
                }
            }
        })
    };
    let result = async {
        while let Some(chunk) = messages.next().await {
            let mut msgs = Vec::with_capacity(chunk.len());
            for m in chunk {
                match m {
                    Ok(m) => msgs.push(m),
                    Err(e) => {
                        // Handle what was delivered, then let the caller resubscribe.
                        if !msgs.is_empty() {
                            handle_chunk(ingest, js, std::mem::take(&mut msgs), &ack_tx, status)
                                .await?;
                        }
                        return Err(nats_err(format!("reading the consumer: {e}")));
                    }
                }
            }
            handle_chunk(ingest, js, msgs, &ack_tx, status).await?;
        }
        Ok(())
    }
    .await;
    drop(ack_tx);
    let _ = acker.await;
    result
}

/// Waits until the read models reflect `pos`, telling NATS the messages are still in progress
/// meanwhile so they are not redelivered while the dataflow catches up.
async fn wait_applied(
    ingest: &dyn Ingest,
    pos: u64,
    msgs: &[jetstream::Message],
    ack_wait: Duration,
) {
    let step = (ack_wait / 3).max(Duration::from_millis(100));
    while !ingest.wait_applied(pos, step).await {
        for m in msgs {
            let _ = m.ack_with(AckKind::Progress).await;
        }
    }
}

/// Why a message (or one item of it) went to the dead-letter subject.
struct Dead {
    msg: usize,
    item: Option<usize>,
    error: IngestError,
}

async fn handle_chunk(
    ingest: &Arc<dyn Ingest>,
    js: &jetstream::Context,
    msgs: Vec<jetstream::Message>,
    ack_tx: &tokio::sync::mpsc::Sender<(u64, Vec<jetstream::Message>)>,
    status: &SourceStatus,
) -> Result<(), ConsumerError> {
    let mut entries = Vec::new();
    let mut owners = Vec::new();
    let mut dead = Vec::new();
    for (i, m) in msgs.iter().enumerate() {
        let received_at = m
            .info()
            .map(|info| (info.published.unix_timestamp_nanos() / 1_000_000) as i64)
            .unwrap_or_else(|_| chrono::Utc::now().timestamp_millis());
        let outcome = parse_subject(RAW_PREFIX, &m.subject).and_then(|target| {
            records(
                &**ingest,
                &target,
                &credentials(m.headers.as_ref()),
                &m.payload,
                received_at,
            )
        });
        match outcome {
            Ok(items) => {
                for item in items {
                    match item.record {
                        Ok(r) => {
                            entries.push(LogEntry::Signal(r));
                            owners.push((i, item.index));
                        }
                        Err(error) => dead.push(Dead {
                            msg: i,
                            item: Some(item.index),
                            error,
                        }),
                    }
                }
            }
            Err(error) => dead.push(Dead {
                msg: i,
                item: None,
                error,
            }),
        }
    }
    let mut max_pos = 0;
    if !entries.is_empty() {
        let receipts = match ingest.submit(entries).await {
            Ok(r) => r,
            Err(e) => {
                // The log is unavailable: nothing of the chunk is acked; NATS redelivers it.
                for m in &msgs {
                    let _ = m.ack_with(AckKind::Nak(Some(Duration::from_secs(1)))).await;
                }
                return Err(e.into());
            }
        };
        for (r, (msg, item)) in receipts.into_iter().zip(owners) {
            match r {
                Ok(receipt) => {
                    max_pos = max_pos.max(receipt.position);
                    status.accepted.fetch_add(1, Ordering::Relaxed);
                }
                Err(error) => dead.push(Dead {
                    msg,
                    item: Some(item),
                    error,
                }),
            }
        }
    }
    if !dead.is_empty() {
        dead_letter(js, &msgs, &dead).await?;
        status
            .dead_lettered
            .fetch_add(dead.len() as u64, Ordering::Relaxed);
    }
    ack_tx
        .send((max_pos, msgs))
        .await
        .map_err(|_| ConsumerError::AckerStopped)?;
    Ok(())
}

/// Publishes dead letters and waits for JetStream's acks. The payload is the original
/// message's; the reason is in headers; the API key is never copied.
async fn dead_letter(
    js: &jetstream::Context,
    msgs: &[jetstream::Message],
    dead: &[Dead],
) -> Result<(), ConsumerError> {
    let mut acks = Vec::with_capacity(dead.len());
    for d in dead {
        let m = &msgs[d.msg];
        let seq = m.info().map(|i| i.stream_sequence).unwrap_or(0);
        let (org, source) = match parse_subject(RAW_PREFIX, &m.subject) {
            Ok(Target { org, source }) => (org.to_string(), source.unwrap_or("auto".into())),
            Err(_) => ("_".to_string(), "_".to_string()),
        };
        let subject = format!(
            "{DEADLETTER_PREFIX}.{}.{}",
            subject_token(&org),
            subject_token(&source)
        );
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Trailspark-Error", d.error.code());
        headers.insert("Trailspark-Error-Message", d.error.to_string().as_str());
        headers.insert("Trailspark-Original-Subject", m.subject.as_str());
        headers.insert("Trailspark-Stream-Sequence", seq.to_string().as_str());
        let id = match d.item {
            Some(i) => {
                headers.insert("Trailspark-Item-Index", i.to_string().as_str());
                format!("dl-{seq}-{i}")
            }
            None => format!("dl-{seq}"),
        };
        headers.insert("Nats-Msg-Id", id.as_str());
        acks.push(
            js.publish_with_headers(subject, headers, m.payload.clone())
                .await
                .map_err(nats_err)?,
        );
    }
    for ack in acks {
        ack.await.map_err(nats_err)?;
    }
    Ok(())
}
