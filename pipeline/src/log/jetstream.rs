//! The log on NATS JetStream.
//!
//! One stream, `TRAILSPARK_SIGNALS`, holds every log entry so that its sequence numbers are
//! one total order, as the journal's positions are: accepted signals on
//! `trailspark.log.signals.<org>.<source>`, product-org updates on
//! `trailspark.product_orgs.<org>`, config events on `trailspark.config`. A signal's
//! `Nats-Msg-Id` is its dedup key, so JetStream's duplicate window absorbs retries and answers
//! them with the original sequence. An append resolves only after the publish acks of all its
//! entries, which is what makes a 202 mean "durable".
//!
//! The same stream also captures what producers publish straight to NATS on
//! `trailspark.signals.<org>.<source>` (see `trailspark_sources::nats`). Those raw messages are not
//! log entries: they carry no `Trailspark-Encoding` header, readers of the log skip them, and
//! the NATS source turns each into an accepted signal on the log (or a dead letter). Keeping
//! accepted signals on their own subjects lets the source's durable consumer filter on the raw
//! subjects and never see its own output.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, consumer, message::PublishMessage, stream};
use futures_util::StreamExt;
use trailspark_core::subjects::{subject_of, STREAM, SUBJECTS};
use trailspark_core::LogEntry;
use trailspark_sources::Receipt;

use super::{nats_err, DedupIndex, LogError};

const ENCODING_HEADER: &str = "Trailspark-Encoding";
const ENCODING: &str = "entry-v1";

/// Stream settings (operators tune them per deployment).
#[derive(Clone, Debug)]
pub struct StreamSettings {
    pub replicas: usize,
    /// Zero keeps messages forever.
    pub max_age: Duration,
    /// Negative means unlimited.
    pub max_bytes: i64,
    pub duplicate_window: Duration,
}

impl Default for StreamSettings {
    fn default() -> Self {
        StreamSettings {
            replicas: 1,
            max_age: Duration::ZERO,
            max_bytes: -1,
            duplicate_window: Duration::from_secs(120),
        }
    }
}

#[derive(Clone)]
pub struct JetStreamLog {
    client: async_nats::Client,
    js: jetstream::Context,
    head: Arc<AtomicU64>,
    /// Exact dedup index over the stream's signals: retries older than JetStream's duplicate
    /// window are still recognised. Filled by replay, appends and the tail.
    index: Arc<Mutex<DedupIndex>>,
}

/// Whether a stream message is a log entry (rather than a producer's raw signal).
fn is_entry(msg: &async_nats::jetstream::Message) -> bool {
    msg.headers
        .as_ref()
        .and_then(|h| h.get(ENCODING_HEADER))
        .is_some_and(|v| v.as_str() == ENCODING)
}

impl JetStreamLog {
    /// Connects and makes sure the stream exists.
    pub async fn connect(
        client: async_nats::Client,
        settings: &StreamSettings,
    ) -> Result<JetStreamLog, LogError> {
        let js = jetstream::new(client.clone());
        let mut stream = js
            .get_or_create_stream(stream::Config {
                name: STREAM.to_string(),
                subjects: SUBJECTS.iter().map(|s| s.to_string()).collect(),
                storage: stream::StorageType::File,
                num_replicas: settings.replicas,
                max_age: settings.max_age,
                max_bytes: settings.max_bytes,
                duplicate_window: settings.duplicate_window,
                ..Default::default()
            })
            .await
            .map_err(nats_err)?;
        // A stream made by an earlier version may lack subjects added since.
        let mut config = stream.cached_info().config.clone();
        let missing: Vec<String> = SUBJECTS
            .iter()
            .filter(|s| !config.subjects.iter().any(|c| c == *s))
            .map(|s| s.to_string())
            .collect();
        if !missing.is_empty() {
            config.subjects.extend(missing);
            js.update_stream(config).await.map_err(nats_err)?;
            stream.info().await.map_err(nats_err)?;
        }
        let last = stream.cached_info().state.last_sequence;
        Ok(JetStreamLog {
            client,
            js,
            head: Arc::new(AtomicU64::new(last)),
            index: Default::default(),
        })
    }

    pub fn head(&self) -> u64 {
        self.head.load(Ordering::Acquire)
    }

    /// Whether the connection to NATS is up. Appends fail at once while it is not, so that
    /// the edge answers 503 promptly instead of waiting out a publish timeout.
    pub fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Records an entry seen on the stream (replay, tail) in the dedup index.
    pub fn note(&self, pos: u64, entry: &LogEntry) {
        if let LogEntry::Signal(s) = entry {
            self.index.lock().unwrap().insert(s.dedup_bits(), pos);
        }
    }

    /// Publishes the entries in order (pipelined), then waits for every ack. Signals already
    /// on the stream are answered with their position and not published again.
    pub async fn append(&self, entries: Vec<LogEntry>) -> Result<Vec<Receipt>, LogError> {
        if !self.connected() {
            return Err(nats_err("not connected to NATS"));
        }
        let mut known: Vec<Option<u64>> = Vec::with_capacity(entries.len());
        {
            let index = self.index.lock().unwrap();
            for e in &entries {
                known.push(match e {
                    LogEntry::Signal(s) => index.get(s.dedup_bits()),
                    _ => None,
                });
            }
        }
        let mut acks = Vec::with_capacity(entries.len());
        for (entry, _) in entries.iter().zip(&known).filter(|(_, k)| k.is_none()) {
            let mut msg = PublishMessage::build()
                .payload(entry.encode().into())
                .header(ENCODING_HEADER, ENCODING);
            if let LogEntry::Signal(s) = entry {
                msg = msg.message_id(s.dedup_key());
            }
            acks.push(
                self.js
                    .send_publish(subject_of(entry), msg)
                    .await
                    .map_err(nats_err)?,
            );
        }
        let mut published = Vec::with_capacity(acks.len());
        let started = std::time::Instant::now();
        for ack in acks {
            let ack = ack.await.map_err(nats_err)?;
            if !ack.duplicate {
                crate::metrics::METRICS.log_appended.inc();
            }
            self.head.fetch_max(ack.sequence, Ordering::AcqRel);
            published.push(Receipt {
                position: ack.sequence,
                duplicate: ack.duplicate,
            });
        }
        // JetStream's acknowledgement is its durability: the counterpart of the journal's
        // fsync, timed per append.
        crate::metrics::METRICS
            .log_fsync
            .observe(started.elapsed().as_secs_f64());
        let mut published = published.into_iter();
        let mut index = self.index.lock().unwrap();
        let receipts = entries
            .iter()
            .zip(known)
            .map(|(e, k)| match k {
                Some(position) => Receipt {
                    position,
                    duplicate: true,
                },
                None => {
                    let r = published.next().expect("one ack per published entry");
                    if let LogEntry::Signal(s) = e {
                        index.insert(s.dedup_bits(), r.position);
                    }
                    r
                }
            })
            .collect();
        Ok(receipts)
    }

    /// Follows the stream from `start` on, forever, handing each entry to `f` in order.
    /// After an error (a NATS restart, a lost connection) it resubscribes from the entry
    /// after the last one handed over, so nothing is skipped or handed over twice.
    pub async fn tail(
        &self,
        start: u64,
        f: impl Fn(u64, LogEntry) + Send + 'static,
    ) -> Result<(), LogError> {
        let mut next = start.max(1);
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.follow(&mut next, &f).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    tracing::warn!(error = %e, next, "Following the JetStream log failed; resubscribing.");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    /// One subscription of [`Self::tail`]; `next` tracks the next sequence to hand over.
    async fn follow(
        &self,
        next: &mut u64,
        f: &(impl Fn(u64, LogEntry) + Send + 'static),
    ) -> Result<(), LogError> {
        let stream = self.js.get_stream(STREAM).await.map_err(nats_err)?;
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig {
                deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: *next,
                },
                ..Default::default()
            })
            .await
            .map_err(nats_err)?;
        let mut messages = consumer.messages().await.map_err(nats_err)?;
        while let Some(msg) = messages.next().await {
            let msg = msg.map_err(nats_err)?;
            let seq = msg.info().map_err(nats_err)?.stream_sequence;
            if seq < *next {
                continue;
            }
            *next = seq + 1;
            if !is_entry(&msg) {
                continue;
            }
            match LogEntry::decode(&msg.payload) {
                Ok(entry) => f(seq, entry),
                Err(e) => tracing::error!(seq, error = %e, "Skipped an undecodable log entry."),
            }
        }
        Ok(())
    }

    /// Reads every entry on `filter` (all subjects when `None`) from the start of the stream
    /// up to its current end, in order.
    pub async fn read(
        &self,
        filter: Option<&str>,
        f: &mut (dyn FnMut(u64, LogEntry) -> Result<(), LogError> + Send),
    ) -> Result<(), LogError> {
        let mut stream = self.js.get_stream(STREAM).await.map_err(nats_err)?;
        let info = stream.info().await.map_err(nats_err)?;
        if info.state.messages == 0 {
            return Ok(());
        }
        if let Some(subject) = filter {
            if stream
                .get_last_raw_message_by_subject(subject)
                .await
                .is_err()
            {
                return Ok(());
            }
        }
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: filter.unwrap_or("").to_string(),
                deliver_policy: consumer::DeliverPolicy::All,
                ..Default::default()
            })
            .await
            .map_err(nats_err)?;
        let mut messages = consumer.messages().await.map_err(nats_err)?;
        while let Some(msg) = tokio::time::timeout(Duration::from_secs(30), messages.next())
            .await
            .map_err(|_| nats_err("timed out reading the stream"))?
        {
            let msg = msg.map_err(nats_err)?;
            let info = msg.info().map_err(nats_err)?;
            let (seq, pending) = (info.stream_sequence, info.pending);
            if is_entry(&msg) {
                let entry = LogEntry::decode(&msg.payload)
                    .map_err(|e| LogError::Corrupt(format!("stream sequence {seq}: {e}")))?;
                f(seq, entry)?;
            }
            if pending == 0 {
                break;
            }
        }
        Ok(())
    }
}
