//! The Parquet archive: every accepted signal, written to an object store in hive partitions
//! by org and receipt date, rolled by row count, size and age.
//!
//! The archive is derived from the log, which is durable before a request is answered: the
//! archiver buffers what the log commits and writes files behind it. A crash loses only
//! buffers, which the next start refills by replaying the log from the checkpoint (the
//! lowest position not yet in a file). Rows a replay offers again are recognised by the
//! partition's largest archived id (file names carry their id range), so a retry never
//! writes a row twice. Each file is one `put`: atomic on S3, and on a local directory a
//! write under `_staging/` and a rename, so a reader never sees a partial file.

pub mod evaluations;
mod files;
mod layout;
mod schema;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{StreamExt, TryStreamExt};

use object_store::ObjectStoreExt;
use trailspark_core::LogEntry;

use self::files::read_checkpoint;
pub use self::files::{encode, list_files, positions_used, read_file};
pub use self::layout::{FileMeta, Kind, Location, Partition};
pub use self::schema::{
    from_batch, text_of, to_batch, to_batch_projected, ArchiveRow, Processing, SCHEMA,
};

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("archive location {0}")]
    BadLocation(String),
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("archive checkpoint is corrupt: {0}")]
    Checkpoint(String),
}

/// When a partition's buffer becomes a file.
#[derive(Clone, Debug)]
pub struct ArchiveConfig {
    pub max_rows: usize,
    pub max_bytes: usize,
    /// The oldest row of a buffer waits at most this long.
    pub max_age: Duration,
    /// How often buffers are checked for age.
    pub tick: Duration,
}

impl Default for ArchiveConfig {
    fn default() -> Self {
        ArchiveConfig {
            max_rows: 250_000,
            max_bytes: 64 << 20,
            max_age: Duration::from_secs(60),
            tick: Duration::from_millis(500),
        }
    }
}

/// What the archiver needs from the rest of the pipeline: processing outcomes.
pub trait Stamper: Send + Sync + 'static {
    /// Resolves once the outcome of every signal up to log position `pos` is known (or a
    /// bounded wait has passed: the archive then records what is known).
    fn ready(&self, pos: u64) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
    /// Fills in `processing` of rows of one org.
    fn stamp(&self, org: u64, rows: &mut [ArchiveRow]);
}

/// A stamper that knows nothing: rows keep an empty `processing` (offline tools).
pub struct NoStamps;

impl Stamper for NoStamps {
    fn ready(&self, _: u64) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(std::future::ready(()))
    }
    fn stamp(&self, _: u64, _: &mut [ArchiveRow]) {}
}

struct Buffer {
    rows: Vec<ArchiveRow>,
    bytes: usize,
    since: Instant,
}

#[derive(Default)]
struct State {
    buffers: BTreeMap<Partition, Buffer>,
    files: BTreeMap<(Kind, u64), Vec<FileMeta>>,
    /// Largest archived id per partition.
    archived: HashMap<Partition, u64>,
    /// Positions below this are archived or not signals (the checkpoint read on start).
    start: u64,
    /// One past the last position offered.
    offered: u64,
    flushing: HashSet<Partition>,
    /// The checkpoint last written.
    checkpoint: u64,
}

impl State {
    fn low_watermark(&self) -> u64 {
        let buffered = self
            .buffers
            .values()
            .filter_map(|b| b.rows.first())
            .map(|r| r.id)
            .min();
        buffered.unwrap_or(self.offered.max(self.start))
    }
}

/// What an org-scoped reader sees of one tree at one instant: the files, and the rows not
/// yet in a file. Together they hold each archived signal exactly once.
pub struct Snapshot {
    pub files: Vec<FileMeta>,
    pub rows: Vec<ArchiveRow>,
    /// For each partition (by day) with rows in `rows`: ids from this one on were not in a
    /// file at the snapshot, so a reader that lists files later must skip them there (they
    /// are in `rows`, or newer than the snapshot).
    pub fences: Vec<(i32, u64)>,
}

/// Counts of what the archiver has done, for health and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ArchiveStats {
    pub files: u64,
    pub buffered_rows: u64,
    /// Positions below this are in files.
    pub checkpoint: u64,
}

/// Shown by where it writes (its buffers and files are state, not identity).
impl std::fmt::Debug for Archiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Archiver")
            .field("store_url", &self.loc.store_url)
            .finish_non_exhaustive()
    }
}

pub struct Archiver {
    loc: Location,
    cfg: ArchiveConfig,
    state: Mutex<State>,
    stamper: Arc<dyn Stamper>,
    wake: tokio::sync::Notify,
    checkpoint_lock: tokio::sync::Mutex<()>,
    /// Distinct for each archiver opened in this process (see [`Archiver::instance`]).
    instance: u64,
}

/// The next archiver's instance number.
static INSTANCES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl Archiver {
    /// A number no other archiver of this process has: caches keyed by a file's path (the
    /// SQL engine's Parquet metadata) tell two archives' files of the same name apart by it.
    pub fn instance(&self) -> u64 {
        self.instance
    }

    /// Opens the archive at `loc`: lists its files and reads its checkpoint. Entries must then
    /// be offered in log order from [`Archiver::start`] on (earlier ones are ignored).
    pub async fn open(
        loc: Location,
        cfg: ArchiveConfig,
        stamper: Arc<dyn Stamper>,
    ) -> Result<Arc<Self>, ArchiveError> {
        loc.clear_staging().await?;
        let files = list_files(&loc).await?;
        let start = read_checkpoint(&loc).await?;
        let mut state = State {
            start,
            offered: start,
            checkpoint: start,
            ..State::default()
        };
        for f in files {
            let w = state.archived.entry(f.partition).or_default();
            *w = (*w).max(f.last);
            state
                .files
                .entry((f.partition.kind, f.partition.org))
                .or_default()
                .push(f);
        }
        Ok(Arc::new(Archiver {
            loc,
            cfg,
            state: Mutex::new(state),
            stamper,
            wake: tokio::sync::Notify::new(),
            checkpoint_lock: tokio::sync::Mutex::new(()),
            instance: INSTANCES.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        }))
    }

    pub fn location(&self) -> &Location {
        &self.loc
    }

    /// The first log position the archiver needs offered.
    pub fn start(&self) -> u64 {
        self.state.lock().unwrap().start
    }

    pub fn stats(&self) -> ArchiveStats {
        let s = self.state.lock().unwrap();
        ArchiveStats {
            files: s.files.values().map(|v| v.len() as u64).sum(),
            buffered_rows: s.buffers.values().map(|b| b.rows.len() as u64).sum(),
            checkpoint: s.checkpoint,
        }
    }

    /// Takes committed log entries, in log order. Cheap: a push under a lock.
    pub fn offer(&self, entries: &[(u64, LogEntry)]) {
        let mut due = false;
        {
            let mut s = self.state.lock().unwrap();
            for (pos, e) in entries {
                let LogEntry::Signal(r) = e else { continue };
                if *pos < s.start {
                    continue;
                }
                let kind = if r.anonymous {
                    Kind::Anonymous
                } else {
                    Kind::Signals
                };
                let p = Partition::of(kind, r.org_id.0, r.received_at);
                if s.archived.get(&p).is_some_and(|w| *pos <= *w) {
                    continue;
                }
                let row = ArchiveRow {
                    id: *pos,
                    record: Arc::new(r.clone()),
                    processing: Processing::default(),
                };
                let b = s.buffers.entry(p).or_insert_with(|| Buffer {
                    rows: Vec::new(),
                    bytes: 0,
                    since: Instant::now(),
                });
                b.bytes += row.approx_bytes();
                b.rows.push(row);
                due |= b.rows.len() >= self.cfg.max_rows || b.bytes >= self.cfg.max_bytes;
            }
            if let Some((last, _)) = entries.last() {
                s.offered = s.offered.max(last + 1);
            }
        }
        if due {
            self.wake.notify_one();
        }
    }

    /// Writes buffers as they become due, until the archiver is dropped elsewhere and this
    /// task aborted. Failures are logged and retried on the next tick; the rows stay
    /// buffered (and in the log) meanwhile.
    pub async fn run(self: Arc<Self>) {
        loop {
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(self.cfg.tick) => {}
            }
            if let Err(e) = self.flush(false).await {
                tracing::warn!(error = %e, "Archiving failed; will retry.");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }

    /// Writes every due buffer, or every buffer when `all`.
    pub async fn flush(&self, all: bool) -> Result<(), ArchiveError> {
        let due: Vec<Partition> = {
            let s = self.state.lock().unwrap();
            s.buffers
                .iter()
                .filter(|(p, b)| {
                    !s.flushing.contains(*p)
                        && (all
                            || b.rows.len() >= self.cfg.max_rows
                            || b.bytes >= self.cfg.max_bytes
                            || b.since.elapsed() >= self.cfg.max_age)
                })
                .map(|(p, _)| *p)
                .collect()
        };
        let mut first_err = None;
        for p in due {
            // A buffer can hold more than one file's rows (after a stall, or when `all`).
            loop {
                if let Err(e) = self.flush_partition(p).await {
                    first_err.get_or_insert(e);
                    break;
                }
                let more = {
                    let s = self.state.lock().unwrap();
                    s.buffers.get(&p).is_some_and(|b| {
                        all || b.rows.len() >= self.cfg.max_rows || b.bytes >= self.cfg.max_bytes
                    })
                };
                if !more {
                    break;
                }
            }
        }
        self.write_checkpoint().await?;
        first_err.map_or(Ok(()), Err)
    }

    async fn flush_partition(&self, p: Partition) -> Result<(), ArchiveError> {
        let mut rows = {
            let mut s = self.state.lock().unwrap();
            let Some(b) = s.buffers.get(&p) else {
                return Ok(());
            };
            let n = b.rows.len().min(self.cfg.max_rows);
            let rows = b.rows[..n].to_vec();
            s.flushing.insert(p);
            rows
        };
        let result = self.write_rows(p, &mut rows).await;
        let mut s = self.state.lock().unwrap();
        s.flushing.remove(&p);
        let meta = result?;
        let b = s.buffers.get_mut(&p).expect("a flushing buffer stays");
        b.rows.drain(..rows.len());
        b.bytes = b.rows.iter().map(ArchiveRow::approx_bytes).sum();
        b.since = Instant::now();
        if b.rows.is_empty() {
            s.buffers.remove(&p);
        }
        s.archived.insert(p, meta.last);
        s.files.entry((p.kind, p.org)).or_default().push(meta);
        Ok(())
    }

    async fn write_rows(
        &self,
        p: Partition,
        rows: &mut [ArchiveRow],
    ) -> Result<FileMeta, ArchiveError> {
        let (first, last) = (rows[0].id, rows[rows.len() - 1].id);
        self.stamper.ready(last).await;
        self.stamper.stamp(p.org, rows);
        let rows_owned = rows.to_vec();
        let bytes = tokio::task::spawn_blocking(move || encode(&rows_owned))
            .await
            .expect("encoding does not panic")?;
        let path = self.loc.file_path(&p, first, last);
        let size = bytes.len() as u64;
        self.loc.put_atomic(&path, bytes).await?;
        tracing::debug!(%path, rows = rows.len(), size, "Archived.");
        Ok(FileMeta {
            partition: p,
            first,
            last,
            size,
            path,
        })
    }

    async fn write_checkpoint(&self) -> Result<(), ArchiveError> {
        let _g = self.checkpoint_lock.lock().await;
        let low = {
            let s = self.state.lock().unwrap();
            let low = s.low_watermark();
            if low <= s.checkpoint {
                return Ok(());
            }
            low
        };
        let path = self.loc.checkpoint_path();
        self.loc.put_atomic(&path, low.to_string().into()).await?;
        self.state.lock().unwrap().checkpoint = low;
        Ok(())
    }

    /// The files of one org's tree and its rows not yet in a file, at one instant, with the
    /// buffered rows stamped with their current outcome.
    pub fn snapshot(&self, kind: Kind, org: u64) -> Snapshot {
        let (files, mut rows, fences) = {
            let s = self.state.lock().unwrap();
            let files = s.files.get(&(kind, org)).cloned().unwrap_or_default();
            let range = Partition {
                kind,
                org,
                day: i32::MIN,
            }..=Partition {
                kind,
                org,
                day: i32::MAX,
            };
            let mut rows = Vec::new();
            let mut fences = Vec::new();
            for (p, b) in s.buffers.range(range) {
                rows.extend(b.rows.iter().cloned());
                fences.push((p.day, s.archived.get(p).map_or(0, |w| w + 1)));
            }
            (files, rows, fences)
        };
        self.stamper.stamp(org, &mut rows);
        Snapshot {
            files,
            rows,
            fences,
        }
    }

    /// Every file, in partition order.
    pub fn files(&self) -> Vec<FileMeta> {
        let s = self.state.lock().unwrap();
        let mut v: Vec<FileMeta> = s.files.values().flatten().cloned().collect();
        v.sort_by_key(|f| (f.partition, f.first));
        v
    }

    /// Merges the files of each partition that has more than one into one file. The merged
    /// file is written before the small ones are deleted; a crash in between leaves files
    /// the merged one covers, which the next open deletes. Returns (partitions, files merged).
    pub async fn compact(&self) -> Result<(usize, usize), ArchiveError> {
        let mut by_part: BTreeMap<Partition, Vec<FileMeta>> = BTreeMap::new();
        for f in self.files() {
            by_part.entry(f.partition).or_default().push(f);
        }
        let (mut parts, mut merged) = (0, 0);
        for (p, files) in by_part.into_iter().filter(|(_, v)| v.len() > 1) {
            let mut rows = Vec::new();
            for f in &files {
                rows.extend(read_file(&self.loc, f).await?);
            }
            rows.sort_by_key(|r| r.id);
            let (first, last) = (rows[0].id, rows[rows.len() - 1].id);
            let bytes = tokio::task::spawn_blocking(move || encode(&rows))
                .await
                .expect("encoding does not panic")?;
            let path = self.loc.file_path(&p, first, last);
            let size = bytes.len() as u64;
            self.loc.put_atomic(&path, bytes).await?;
            {
                let mut s = self.state.lock().unwrap();
                let list = s.files.entry((p.kind, p.org)).or_default();
                list.retain(|f| f.partition != p || f.last > last);
                list.push(FileMeta {
                    partition: p,
                    first,
                    last,
                    size,
                    path: path.clone(),
                });
                list.sort_by_key(|f| (f.partition, f.first));
            }
            for f in files.iter().filter(|f| f.path != path) {
                self.loc.store.delete(&f.path).await?;
            }
            parts += 1;
            merged += files.len();
        }
        Ok((parts, merged))
    }

    /// Permanently deletes every partition received before day `before` (days since the
    /// epoch): the deletion after `PERMANENT_DELETE_DAYS`. Returns the files deleted.
    pub async fn delete_before(&self, before: i32) -> Result<usize, ArchiveError> {
        let old: Vec<FileMeta> = {
            let mut s = self.state.lock().unwrap();
            let mut old = Vec::new();
            for list in s.files.values_mut() {
                list.retain(|f| {
                    let keep = f.partition.day >= before;
                    if !keep {
                        old.push(f.clone());
                    }
                    keep
                });
            }
            old
        };
        // Owned paths and store handles: a future borrowing from the closure's argument is not
        // `Send` for every lifetime, which a server task needs.
        let store = self.loc.store.clone();
        let paths: Vec<object_store::path::Path> = old.iter().map(|f| f.path.clone()).collect();
        futures_util::stream::iter(paths)
            .map(move |path| {
                let store = store.clone();
                async move { store.delete(&path).await }
            })
            .buffer_unordered(8)
            .try_collect::<Vec<_>>()
            .await?;
        Ok(old.len())
    }
}

#[cfg(test)]
mod tests;
