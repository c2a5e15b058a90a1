//! `trailspark backfill`: imports historical events through the same parsing, normalization
//! and log as live ingestion, so the dataflow treats them exactly like live signals.
//!
//! Files are NDJSON (one event per line) or a JSON array (`[...]`, also `{"batch": [...]}`),
//! plain or gzip (by magic bytes): the generic webhook shape, Segment exports and RudderStack
//! exports all arrive as one JSON object per event. They are read as streams, never whole.
//! Event timestamps are kept (`timestamp`, else `originalTimestamp`).
//!
//! Two targets: a running server (items go to the bulk endpoint E4 in chunks, and its
//! per-item answers are counted), or a data directory with the server stopped (items are
//! appended to the journal directly). Either way the log's exact dedup index makes a second
//! run report every event as a duplicate and change nothing.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context as _};
use serde_json::{json, Value};
use trailspark_core::normalize::Context;
use trailspark_core::tenancy::EndpointType;
use trailspark_core::LogEntry;
use trailspark_sources::parse::{Framing, Piece, Splitter};
use trailspark_sources::routes::{item_record, BULK_LIMIT, BULK_MAX_ITEMS};

use crate::log::Log;

/// Items sent or appended together.
const CHUNK: usize = 5_000;

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

/// One event read from a file.
struct Item {
    file: usize,
    line: u64,
    bytes: Vec<u8>,
}

/// Counts the compressed bytes read, for progress.
struct Counting<R> {
    inner: R,
    read: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Opens a file as a stream of plain bytes, gunzipping when it starts with gzip's magic.
fn open(path: &Path, read: Arc<AtomicU64>) -> anyhow::Result<Box<dyn BufRead>> {
    let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut r = BufReader::new(Counting { inner: f, read });
    let gz = r.fill_buf()?.starts_with(&[0x1f, 0x8b]);
    Ok(if gz {
        Box::new(BufReader::new(flate2::read::MultiGzDecoder::new(r)))
    } else {
        Box::new(r)
    })
}

pub struct Backfill {
    pub key: String,
    pub target: Target,
    pub files: Vec<PathBuf>,
    pub rejects: Option<PathBuf>,
    pub progress: bool,
}

impl Backfill {
    pub async fn run(self) -> anyhow::Result<Summary> {
        for f in &self.files {
            if f.extension().is_some_and(|e| e == "parquet") {
                bail!("{}: replaying Parquet archive files is not supported yet (it comes with the archive)", f.display());
            }
        }
        let total: u64 = self
            .files
            .iter()
            .map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0))
            .sum();
        let bar = if self.progress {
            let b = indicatif::ProgressBar::new(total);
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
        let mut rejects: Option<Box<dyn Write>> = match &self.rejects {
            Some(p) => Some(Box::new(std::io::BufWriter::new(
                File::create(p).with_context(|| format!("creating {}", p.display()))?,
            ))),
            None => None,
        };
        let client = reqwest::Client::new();
        let read = Arc::new(AtomicU64::new(0));
        let mut summary = Summary::default();
        let mut pending: Vec<Item> = Vec::with_capacity(CHUNK);
        for (fi, path) in self.files.iter().enumerate() {
            let mut reader = open(path, read.clone())?;
            let framing =
                if reader.fill_buf()?.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
                    Framing::Json
                } else {
                    Framing::Lines
                };
            let mut splitter = Splitter::new(framing, 1 << 20);
            let mut pieces = Vec::new();
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                let n = reader
                    .read(&mut buf)
                    .with_context(|| format!("reading {}", path.display()))?;
                if n == 0 {
                    let s = std::mem::replace(&mut splitter, Splitter::new(framing, 0));
                    s.finish(&mut pieces)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                } else {
                    splitter
                        .feed(&buf[..n], &mut pieces)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                }
                for Piece { line, bytes } in pieces.drain(..) {
                    pending.push(Item {
                        file: fi,
                        line,
                        bytes,
                    });
                    if pending.len() >= CHUNK {
                        self.flush(&client, &mut pending, &mut summary, &mut rejects)
                            .await?;
                        bar.set_position(read.load(Ordering::Relaxed));
                        bar.set_message(format!(
                            "accepted={} duplicates={} rejected={}",
                            summary.accepted, summary.duplicates, summary.rejected
                        ));
                    }
                }
                if n == 0 {
                    break;
                }
            }
        }
        self.flush(&client, &mut pending, &mut summary, &mut rejects)
            .await?;
        bar.finish_and_clear();
        if let Some(w) = rejects.as_mut() {
            w.flush()?;
        }
        Ok(summary)
    }

    fn reject(
        &self,
        summary: &mut Summary,
        rejects: &mut Option<Box<dyn Write>>,
        item: &Item,
        code: &str,
        message: &str,
    ) -> anyhow::Result<()> {
        summary.rejected += 1;
        if let Some(w) = rejects.as_mut() {
            let file = self.files[item.file].display().to_string();
            writeln!(
                w,
                "{}",
                json!({"file": file, "line": item.line, "error": code, "message": message})
            )?;
        }
        Ok(())
    }

    async fn flush(
        &self,
        client: &reqwest::Client,
        items: &mut Vec<Item>,
        summary: &mut Summary,
        rejects: &mut Option<Box<dyn Write>>,
    ) -> anyhow::Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(items);
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
                let mut good = Vec::with_capacity(batch.len());
                for item in &batch {
                    match item_record(&ctx, &item.bytes) {
                        Ok(rec) => {
                            entries.push(LogEntry::Signal(rec));
                            good.push(item);
                        }
                        Err(e) => self.reject(summary, rejects, item, e.code(), &e.to_string())?,
                    }
                }
                if !entries.is_empty() {
                    for r in log.append(entries).await? {
                        if r.duplicate {
                            summary.duplicates += 1;
                        } else {
                            summary.accepted += 1;
                        }
                    }
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
                                self.reject(
                                    summary,
                                    rejects,
                                    item,
                                    "payload_too_large",
                                    "does not fit a bulk request",
                                )?;
                                continue;
                            }
                            Err(e) => {
                                self.reject(
                                    summary,
                                    rejects,
                                    item,
                                    "invalid_json",
                                    &e.to_string(),
                                )?;
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
                        .with_context(|| format!("sending to {url}"))?;
                    if r.status() == 503 {
                        // Overloaded or the log is unavailable: wait and resend (dedup makes
                        // resending safe).
                        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                        continue;
                    }
                    break r;
                };
                let status = resp.status();
                let answer: Value = resp
                    .json()
                    .await
                    .context("reading the bulk endpoint's answer")?;
                if answer.get("results").is_none() {
                    bail!(
                        "the server refused the import ({status}): {}",
                        answer["message"].as_str().unwrap_or("no message")
                    );
                }
                for r in answer["results"].as_array().into_iter().flatten() {
                    let Some(item) = r["index"].as_u64().and_then(|i| sent.get(i as usize)) else {
                        continue;
                    };
                    match r["error"].as_str() {
                        Some(code) => self.reject(
                            summary,
                            rejects,
                            item,
                            code,
                            r["message"].as_str().unwrap_or(""),
                        )?,
                        None if r["duplicate"] == true => summary.duplicates += 1,
                        None => summary.accepted += 1,
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
) -> anyhow::Result<Target> {
    let k = registry
        .check_key(key, chrono::Utc::now().timestamp_millis())
        .map_err(|r| anyhow::anyhow!("the API key is not usable: {r:?}"))?;
    if k.endpoint_type != EndpointType::SignalStaging {
        bail!(
            "backfill needs a signal_staging key, this is a {} key",
            k.endpoint_type.as_str()
        );
    }
    Ok(Target::Log {
        log,
        org_id: k.org_id,
        key_id: k.id,
    })
}
