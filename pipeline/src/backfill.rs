//! `trailspark backfill`: imports historical events through the same parsing, normalization
//! and log as live ingestion, so the dataflow treats them exactly like live signals.
//!
//! Files are NDJSON (one event per line) or a JSON array (`[...]`, also `{"batch": [...]}`),
//! plain or gzip (by magic bytes): the generic webhook shape, Segment exports and RudderStack
//! exports all arrive as one JSON object per event. They are read as streams, never whole.
//! Event timestamps are kept (`timestamp`, else `originalTimestamp`).
//!
//! Parquet files in the archive's layout are replayed: each row's raw payload is ingested
//! again, with its original receipt time and source when appending to a data directory (so
//! the records are the ones the archive came from; replaying into the org the archive is of
//! finds them all duplicates). A directory is searched for `*.parquet` files; a URL
//! (`s3://bucket/prefix`, `file:///…`) names one object or every object under a prefix, each
//! streamed to a temporary file first.
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

/// Chunks appended to the log whose answer has not been read: the next chunk is read and
/// normalized while the journal writes and syncs the previous ones (the log keeps appends in
/// order), so the two run on two cores instead of taking turns.
const APPENDS_IN_FLIGHT: usize = 2;

/// Where a run stands: its counts, the rejects file, and the appends to the log not yet
/// answered (oldest first).
struct Progress {
    summary: Summary,
    rejects: Option<Box<dyn Write>>,
    appends: std::collections::VecDeque<crate::log::Appending>,
}

impl Progress {
    /// Reads answers until at most `keep` appends are still in flight.
    async fn drain(&mut self, keep: usize) -> anyhow::Result<()> {
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
    fn reject(&mut self, item: &Item, code: &str, message: &str) -> anyhow::Result<()> {
        self.summary.rejected += 1;
        if let Some(w) = self.rejects.as_mut() {
            let file: &str = &item.file;
            writeln!(
                w,
                "{}",
                json!({"file": file, "line": item.line, "error": code, "message": message})
            )?;
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

/// One event read from a file.
struct Item {
    /// The file's name, for rejects.
    file: Arc<str>,
    /// The line (or, in Parquet, the 1-based row).
    line: u64,
    bytes: Vec<u8>,
    /// From an archive row: its receipt time and resolved source.
    archived: Option<(i64, String)>,
}

/// One file to import, local (possibly a download of an object).
struct Input {
    name: Arc<str>,
    path: PathBuf,
    parquet: bool,
    _download: Option<tempfile::TempPath>,
}

fn is_parquet(name: &str) -> bool {
    name.ends_with(".parquet")
}

/// Every `*.parquet` file under a directory, in name order (archive file names carry their
/// first id, so this is log order within a partition).
fn parquet_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if !name.starts_with('_') && !name.starts_with('.') {
                parquet_files(&p, out)?;
            }
        } else if p.to_str().is_some_and(is_parquet) {
            out.push(p);
        }
    }
    Ok(())
}

/// Orders archive files by their first id (`part-<first>-<last>.parquet`), else by name.
fn archive_order(p: &Path) -> (u64, String) {
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let first = name
        .strip_prefix("part-")
        .and_then(|r| r.split('-').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(u64::MAX);
    (first, p.display().to_string())
}

/// Resolves the command line's files: local files, directories of Parquet files, and
/// object-store URLs (downloaded, streamed, to temporary files).
async fn resolve(args: &[PathBuf]) -> anyhow::Result<Vec<Input>> {
    use futures_util::StreamExt;
    use object_store::ObjectStoreExt;
    let mut out = Vec::new();
    for arg in args {
        let s = arg.to_string_lossy().to_string();
        let local = s.strip_prefix("file://").map(PathBuf::from);
        if s.contains("://") && local.is_none() {
            let loc = trailspark_sinks::archive::Location::parse(&s)
                .map_err(|e| anyhow::anyhow!("{s}: {e}"))?;
            let store = loc.store.clone();
            let objects: Vec<object_store::path::Path> = match store.head(&loc.root).await {
                Ok(m) => vec![m.location],
                Err(object_store::Error::NotFound { .. }) => {
                    let mut v: Vec<_> = store
                        .list(Some(&loc.root))
                        .map(|m| m.map(|m| m.location))
                        .collect::<Vec<_>>()
                        .await
                        .into_iter()
                        .collect::<Result<_, _>>()
                        .with_context(|| format!("listing {s}"))?;
                    v.retain(|p| !p.parts().any(|part| part.as_ref().starts_with('_')));
                    v.sort_by_key(|p| archive_order(Path::new(p.as_ref())));
                    v
                }
                Err(e) => return Err(anyhow::anyhow!("{s}: {e}")),
            };
            if objects.is_empty() {
                bail!("{s}: no objects there");
            }
            for obj in objects {
                let tmp = tempfile::NamedTempFile::new()?;
                let mut f = std::io::BufWriter::new(tmp.reopen()?);
                let mut stream = store
                    .get(&obj)
                    .await
                    .with_context(|| format!("reading {obj}"))?
                    .into_stream();
                while let Some(chunk) = stream.next().await {
                    f.write_all(&chunk.with_context(|| format!("reading {obj}"))?)?;
                }
                f.flush()?;
                let name = format!("{}/{obj}", loc.store_url.trim_end_matches('/'));
                out.push(Input {
                    parquet: is_parquet(&name),
                    name: name.into(),
                    path: tmp.path().to_path_buf(),
                    _download: Some(tmp.into_temp_path()),
                });
            }
            continue;
        }
        let path = local.unwrap_or_else(|| arg.clone());
        if path.is_dir() {
            let mut files = Vec::new();
            parquet_files(&path, &mut files)
                .with_context(|| format!("reading directory {}", path.display()))?;
            if files.is_empty() {
                bail!("{}: no .parquet files in this directory", path.display());
            }
            files.sort_by_key(|p| archive_order(p));
            for f in files {
                out.push(Input {
                    name: f.display().to_string().into(),
                    path: f,
                    parquet: true,
                    _download: None,
                });
            }
        } else {
            out.push(Input {
                name: path.display().to_string().into(),
                parquet: path.to_str().is_some_and(is_parquet),
                path,
                _download: None,
            });
        }
    }
    Ok(out)
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
        let inputs = resolve(&self.files).await?;
        let total: u64 = inputs
            .iter()
            .map(|f| std::fs::metadata(&f.path).map(|m| m.len()).unwrap_or(0))
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
        let rejects: Option<Box<dyn Write>> = match &self.rejects {
            Some(p) => Some(Box::new(std::io::BufWriter::new(
                File::create(p).with_context(|| format!("creating {}", p.display()))?,
            ))),
            None => None,
        };
        let client = reqwest::Client::new();
        let read = Arc::new(AtomicU64::new(0));
        let mut progress = Progress {
            summary: Summary::default(),
            rejects,
            appends: Default::default(),
        };
        let mut pending: Vec<Item> = Vec::with_capacity(CHUNK);
        for input in &inputs {
            if input.parquet {
                let file =
                    File::open(&input.path).with_context(|| format!("opening {}", input.name))?;
                let size = file.metadata()?.len();
                let reader =
                    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                        .with_context(|| format!("{}: not a Parquet file", input.name))?
                        .with_batch_size(CHUNK)
                        .build()?;
                let mut row = 0u64;
                for batch in reader {
                    let batch = batch.with_context(|| format!("reading {}", input.name))?;
                    let rows =
                        trailspark_sinks::archive::from_batch(trailspark_core::OrgId(0), &batch)
                            .with_context(|| {
                                format!("{}: not an archive file of trailspark", input.name)
                            })?;
                    for r in rows {
                        row += 1;
                        pending.push(Item {
                            file: input.name.clone(),
                            line: row,
                            bytes: r.record.payload.as_bytes().to_vec(),
                            archived: Some((r.record.received_at, r.record.source.clone())),
                        });
                        if pending.len() >= CHUNK {
                            self.flush(&client, &mut pending, &mut progress).await?;
                            bar.set_message(progress.message());
                        }
                    }
                }
                read.fetch_add(size, Ordering::Relaxed);
                bar.set_position(read.load(Ordering::Relaxed));
                continue;
            }
            let path = &input.path;
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
                        file: input.name.clone(),
                        line,
                        bytes,
                        archived: None,
                    });
                    if pending.len() >= CHUNK {
                        self.flush(&client, &mut pending, &mut progress).await?;
                        bar.set_position(read.load(Ordering::Relaxed));
                        bar.set_message(progress.message());
                    }
                }
                if n == 0 {
                    break;
                }
            }
        }
        self.flush(&client, &mut pending, &mut progress).await?;
        progress.drain(0).await?;
        bar.finish_and_clear();
        if let Some(w) = progress.rejects.as_mut() {
            w.flush()?;
        }
        Ok(progress.summary)
    }

    async fn flush(
        &self,
        client: &reqwest::Client,
        items: &mut Vec<Item>,
        progress: &mut Progress,
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
