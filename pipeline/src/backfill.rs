//! Importing historical events (`trailspark backfill`) through the same parsing,
//! normalization and log as live ingestion, so the dataflow treats them exactly like live
//! signals. The files are read by the backfill source (`trailspark_sources::backfill`:
//! NDJSON, JSON arrays, gzip, archive Parquet files, object-store URLs); this module sends
//! what it reads to a target.
//!
//! Two targets: a running server (items go to the bulk endpoint E4 in chunks, and its
//! per-item answers are counted), or a stopped server's log (items are appended directly).
//! Either way the log's exact dedup index makes a second run report every event as a
//! duplicate and change nothing. Event timestamps are kept; an archive row also keeps its
//! receipt time and source when appended to a log.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;

use serde_json::{json, Value};
use trailspark_core::normalize::Context;
use trailspark_core::tenancy::EndpointType;
use trailspark_core::LogEntry;
use trailspark_sources::backfill::{Item, Reader};
use trailspark_sources::routes::{item_record, BULK_LIMIT, BULK_MAX_ITEMS};

use crate::log::{Appending, Log, LogError};

/// Why an import stopped.
#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    #[error(transparent)]
    Read(#[from] trailspark_sources::backfill::BackfillError),
    #[error("writing the rejects file: {0}")]
    Rejects(#[source] std::io::Error),
    #[error("appending to the log: {0}")]
    Log(#[from] LogError),
    #[error("sending to {url}: {source}")]
    Server {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Key(String),
}

/// Items sent or appended together.
const CHUNK: usize = 5_000;

/// Chunks appended to the log whose answer has not been read: the next chunk is read and
/// normalized while the journal writes and syncs the previous ones (the log keeps appends in
/// order), so the two run on two cores instead of taking turns.
const APPENDS_IN_FLIGHT: usize = 2;

/// Where a run stands: its counts, the rejects file, and the appends to the log not yet
/// answered (oldest first).
struct Progress {
    summary: Summary,
    rejects: Option<Box<dyn Write>>,
    appends: std::collections::VecDeque<Appending>,
}

impl Progress {
    /// Reads answers until at most `keep` appends are still in flight.
    async fn drain(&mut self, keep: usize) -> Result<(), BackfillError> {
        while self.appends.len() > keep {
            let receipts = self.appends.pop_front().expect("not empty").await?;
            for r in receipts {
                if r.duplicate {
                    self.summary.duplicates += 1;
                } else {
                    self.summary.accepted += 1;
                }
            }
        }
        Ok(())
    }

    /// Counts `item` as rejected and writes it to the rejects file, if there is one.
    fn reject(&mut self, item: &Item, code: &str, message: &str) -> Result<(), BackfillError> {
        self.summary.rejected += 1;
        if let Some(w) = self.rejects.as_mut() {
            let file: &str = &item.file;
            writeln!(
                w,
                "{}",
                json!({"file": file, "line": item.line, "error": code, "message": message})
            )
            .map_err(BackfillError::Rejects)?;
        }
        Ok(())
    }

    /// The progress bar's message.
    fn message(&self) -> String {
        let s = &self.summary;
        format!(
            "accepted={} duplicates={} rejected={}",
            s.accepted, s.duplicates, s.rejected
        )
    }
}

/// Where the events go.
pub enum Target {
    /// A running server's base URL.
    Server(String),
    /// An opened log (the server must be stopped), with the key's org and id.
    Log {
        log: Log,
        org_id: trailspark_core::OrgId,
        key_id: u64,
    },
}

/// What happened to the events.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub accepted: u64,
    pub duplicates: u64,
    pub rejected: u64,
}

pub struct Backfill {
    pub key: String,
    pub target: Target,
    pub files: Vec<PathBuf>,
    pub rejects: Option<PathBuf>,
    pub progress: bool,
}

impl Backfill {
    pub async fn run(self) -> Result<Summary, BackfillError> {
        let mut reader = Reader::open(&self.files).await?;
        let bar = if self.progress {
            let b = indicatif::ProgressBar::new(reader.total_bytes());
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} | {msg}",
                )
                .expect("the template is valid"),
            );
            b
        } else {
            indicatif::ProgressBar::hidden()
        };
        let rejects: Option<Box<dyn Write>> = match &self.rejects {
            Some(p) => Some(Box::new(std::io::BufWriter::new(
                File::create(p).map_err(BackfillError::Rejects)?,
            ))),
            None => None,
        };
        let client = reqwest::Client::new();
        let mut progress = Progress {
            summary: Summary::default(),
            rejects,
            appends: Default::default(),
        };
        loop {
            let chunk = tokio::task::block_in_place(|| reader.next_chunk(CHUNK))?;
            let Some(chunk) = chunk else { break };
            self.flush(&client, chunk, &mut progress).await?;
            bar.set_position(reader.read_bytes());
            bar.set_message(progress.message());
        }
        progress.drain(0).await?;
        bar.finish_and_clear();
        if let Some(w) = progress.rejects.as_mut() {
            w.flush().map_err(BackfillError::Rejects)?;
        }
        Ok(progress.summary)
    }

    async fn flush(
        &self,
        client: &reqwest::Client,
        batch: Vec<Item>,
        progress: &mut Progress,
    ) -> Result<(), BackfillError> {
        match &self.target {
            Target::Log {
                log,
                org_id,
                key_id,
            } => {
                let ctx = Context {
                    org_id: *org_id,
                    api_key_id: *key_id,
                    received_at: chrono::Utc::now().timestamp_millis(),
                    ..Default::default()
                };
                let mut entries = Vec::with_capacity(batch.len());
                for item in &batch {
                    // An archived row keeps its receipt time and source.
                    let ctx = match &item.archived {
                        Some((at, source)) => Context {
                            received_at: *at,
                            url_source: Some(source),
                            ..ctx
                        },
                        None => ctx,
                    };
                    match item_record(&ctx, &item.bytes) {
                        Ok(rec) => entries.push(LogEntry::Signal(rec)),
                        Err(e) => progress.reject(item, e.code(), &e.to_string())?,
                    }
                }
                if !entries.is_empty() {
                    progress.appends.push_back(log.append(entries));
                    progress.drain(APPENDS_IN_FLIGHT).await?;
                }
            }
            Target::Server(base) => {
                // Items the bulk endpoint would refuse for size are refused here, so the
                // request itself stays under its limits.
                let mut body = Vec::with_capacity(batch.len() * 256);
                let mut sent = Vec::with_capacity(batch.len());
                for item in &batch {
                    if item.bytes.contains(&b'\n')
                        || body.len() + item.bytes.len() + 1 > BULK_LIMIT
                        || sent.len() >= BULK_MAX_ITEMS
                    {
                        // Pretty-printed array items are re-serialized onto one line.
                        match serde_json::from_slice::<Value>(&item.bytes) {
                            Ok(v) if body.len() + item.bytes.len() < BULK_LIMIT => {
                                body.extend_from_slice(v.to_string().as_bytes());
                            }
                            Ok(_) => {
                                progress.reject(
                                    item,
                                    "payload_too_large",
                                    "does not fit a bulk request",
                                )?;
                                continue;
                            }
                            Err(e) => {
                                progress.reject(item, "invalid_json", &e.to_string())?;
                                continue;
                            }
                        }
                    } else {
                        body.extend_from_slice(&item.bytes);
                    }
                    body.push(b'\n');
                    sent.push(item);
                }
                let url = format!(
                    "{}/api/signal-staging/bulk/{}",
                    base.trim_end_matches('/'),
                    self.key
                );
                let resp = loop {
                    let r = client
                        .post(&url)
                        .header("content-type", "application/x-ndjson")
                        .body(body.clone())
                        .send()
                        .await
                        .map_err(|source| BackfillError::Server {
                            url: url.clone(),
                            source,
                        })?;
                    if r.status() == 503 {
                        // Overloaded or the log is unavailable: wait and resend (dedup makes
                        // resending safe).
                        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                        continue;
                    }
                    break r;
                };
                let status = resp.status();
                let answer: Value = resp.json().await.map_err(|source| BackfillError::Server {
                    url: url.clone(),
                    source,
                })?;
                if answer.get("results").is_none() {
                    return Err(BackfillError::Refused(format!(
                        "the server refused the import ({status}): {}",
                        answer["message"].as_str().unwrap_or("no message")
                    )));
                }
                for r in answer["results"].as_array().into_iter().flatten() {
                    let Some(item) = r["index"].as_u64().and_then(|i| sent.get(i as usize)) else {
                        continue;
                    };
                    match r["error"].as_str() {
                        Some(code) => {
                            progress.reject(item, code, r["message"].as_str().unwrap_or(""))?
                        }
                        None if r["duplicate"] == true => progress.summary.duplicates += 1,
                        None => progress.summary.accepted += 1,
                    }
                }
            }
        }
        Ok(())
    }
}

/// Resolves the target for an offline import: checks the key against the log's registry.
pub fn offline_target(
    log: Log,
    registry: &trailspark_core::Registry,
    key: &str,
) -> Result<Target, BackfillError> {
    let k = registry
        .check_key(key, chrono::Utc::now().timestamp_millis())
        .map_err(|r| BackfillError::Key(format!("the API key is not usable: {r:?}")))?;
    if k.endpoint_type != EndpointType::SignalStaging {
        return Err(BackfillError::Key(format!(
            "backfill needs a signal_staging key, this is a {} key",
            k.endpoint_type.as_str()
        )));
    }
    Ok(Target::Log {
        log,
        org_id: k.org_id,
        key_id: k.id,
    })
}
