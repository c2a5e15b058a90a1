//! The embedded log: an append-only journal of segment files in the data directory.
//!
//! Format: each segment `NNNNNNNNNNNNNNNNNNNN.log` is named by the position of its first
//! record; a record is `[u32 len][u32 crc32(body)][body]` (little-endian), where the body is a
//! [`LogEntry`] encoding. Positions are dense and start at 1.
//!
//! Durability: one writer thread owns the file. Appenders send their entries over a bounded
//! channel and wait; the writer takes everything queued, writes it, issues one `fdatasync`,
//! and only then answers all of them (group commit: concurrent requests share one fsync, so
//! throughput does not collapse to one fsync per request). A full channel is refused at
//! once, which the HTTP edge answers with 503 and `Retry-After`.
//!
//! Recovery: a crash can leave a partial record at the end of the last segment. On open the
//! last segment is scanned and cut at the first record whose length or checksum does not
//! hold, so a torn tail is never replayed; such damage anywhere else is reported as an error
//! instead, because it is not something a crash produces.
//!
//! Retries: the writer keeps an exact index of every signal's dedup key ([`DedupIndex`]) and
//! answers a retry with the original's position without appending it again.

use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use trailspark_core::log::{DecodeError, Peek};
use trailspark_core::LogEntry;
use trailspark_sources::Receipt;

use super::{DedupIndex, LogError};

const HEADER: usize = 8;
/// No record is larger than this; a larger length field is damage, not data.
const MAX_RECORD: usize = 64 * 1024 * 1024;

/// Called by the writer with every committed entry, in log order, after the fsync. It may
/// block (backpressure: the writer then stops taking appends and the queue fills up).
pub type CommitHook = Arc<dyn Fn(Vec<(u64, LogEntry)>) + Send + Sync>;

/// Settings of the embedded journal.
#[derive(Clone)]
pub struct JournalConfig {
    pub dir: PathBuf,
    /// A segment is closed and a new one started once it reaches this size.
    pub segment_bytes: u64,
    /// Appends that may wait for the writer before new ones are refused.
    pub queue: usize,
    /// Receives committed entries (the dataflow's feed).
    pub on_commit: Option<CommitHook>,
}

impl JournalConfig {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        JournalConfig {
            dir: dir.into(),
            segment_bytes: 64 * 1024 * 1024,
            queue: 16 * 1024,
            on_commit: None,
        }
    }
}

struct AppendRequest {
    entries: Vec<LogEntry>,
    reply: oneshot::Sender<Result<Vec<Receipt>, LogError>>,
}

/// A handle to the journal's writer; cheap to clone.
#[derive(Clone)]
pub struct Journal {
    tx: SyncSender<AppendRequest>,
    head: Arc<AtomicU64>,
    syncs: Arc<AtomicU64>,
    health: Arc<Mutex<JournalHealth>>,
}

/// What went wrong with the writer's last attempts; both `None` when it is healthy.
///
/// The writer never gives up: a failed write answers its own appends with an error and the
/// next group tries again on a reopened segment; a failed roll (a new segment could not be
/// created, e.g. out of file descriptors) keeps writing to the current segment and retries
/// the roll with each group. Each error clears as soon as an attempt succeeds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JournalHealth {
    /// The last write or fsync failed: appends are being refused.
    pub write_error: Option<String>,
    /// The last attempt to start a new segment failed: appends still succeed.
    pub roll_error: Option<String>,
}

fn segment_name(first: u64) -> String {
    format!("{first:020}.log")
}

/// Whether a segment is an empty file left by a roll that failed after creating it: an
/// empty segment before another one (a roll only follows a write), or an empty last one
/// named before the position the previous segment reached.
fn stale(path: &Path, first: u64, is_last: bool, next: u64) -> std::io::Result<bool> {
    Ok(fs::metadata(path)?.len() == 0 && (!is_last || first < next))
}

/// The segments of a journal directory, in order, with their first positions.
fn segments(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut segs = Vec::new();
    if !dir.exists() {
        return Ok(segs);
    }
    for e in fs::read_dir(dir)? {
        let p = e?.path();
        let first = p
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".log"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(first) = first {
            segs.push((first, p));
        }
    }
    segs.sort();
    Ok(segs)
}

/// Where a scan (and an open's replay) hands what it reads: whole entries, or what
/// [`LogEntry::peek`] reads of them.
enum Reading<'a> {
    Entries(&'a mut dyn FnMut(u64, LogEntry) -> Result<(), LogError>),
    Peeks(&'a mut dyn FnMut(u64, Peek) -> Result<(), LogError>),
}

/// Reads one segment, noting each signal in `dedup` when given. Returns the byte length of
/// its valid prefix and whether a damaged record was found after it.
fn scan_segment(
    path: &Path,
    first: u64,
    f: &mut Reading<'_>,
    mut dedup: Option<&mut DedupIndex>,
) -> Result<(u64, u64, bool), LogError> {
    let mut data = Vec::new();
    File::open(path)?.read_to_end(&mut data)?;
    let mut off = 0usize;
    let mut pos = first;
    while off < data.len() {
        let rest = &data[off..];
        if rest.len() < HEADER {
            return Ok((off as u64, pos, true));
        }
        let len = u32::from_le_bytes(rest[0..4].try_into().unwrap()) as usize;
        let crc = u32::from_le_bytes(rest[4..8].try_into().unwrap());
        if len == 0 || len > MAX_RECORD || rest.len() < HEADER + len {
            return Ok((off as u64, pos, true));
        }
        let body = &rest[HEADER..HEADER + len];
        if crc32fast::hash(body) != crc {
            return Ok((off as u64, pos, true));
        }
        let corrupt =
            |e: DecodeError| LogError::Corrupt(format!("{} at offset {off}: {e}", path.display()));
        match f {
            Reading::Entries(f) => {
                let entry = LogEntry::decode(body).map_err(corrupt)?;
                if let (Some(d), LogEntry::Signal(s)) = (dedup.as_deref_mut(), &entry) {
                    d.insert(s.dedup_bits(), pos);
                }
                f(pos, entry)?
            }
            Reading::Peeks(f) => {
                let peek = LogEntry::peek(body).map_err(corrupt)?;
                if let (Some(d), Peek::Signal(s)) = (dedup.as_deref_mut(), &peek) {
                    d.insert(s.dedup, pos);
                }
                f(pos, peek)?
            }
        }
        pos += 1;
        off += HEADER + len;
    }
    Ok((off as u64, pos, false))
}

/// Reads every entry of a journal without changing it (a torn tail is simply where reading
/// stops). Used by `trailspark log dump` and by readers other than the writer.
pub fn read(
    dir: &Path,
    f: &mut dyn FnMut(u64, LogEntry) -> Result<(), LogError>,
) -> Result<u64, LogError> {
    let segs = segments(dir)?;
    let mut next = 1;
    for (i, (first, path)) in segs.iter().enumerate() {
        if i > 0 && stale(path, *first, i + 1 == segs.len(), next)? {
            continue;
        }
        let (_, end, torn) = scan_segment(path, *first, &mut Reading::Entries(f), None)?;
        next = end;
        if torn && i + 1 < segs.len() {
            return Err(LogError::Corrupt(format!(
                "{} is damaged before its end",
                path.display()
            )));
        }
    }
    Ok(next)
}

fn encode_record(entry: &LogEntry, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER]);
    entry.encode_into(out);
    let body = &out[start + HEADER..];
    let len = body.len() as u32;
    let crc = crc32fast::hash(body);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

struct Writer {
    cfg: JournalConfig,
    file: File,
    /// The segment being written.
    path: PathBuf,
    /// Bytes of the segment that are durable: writes go at this offset, so whatever a
    /// failed write left after it is overwritten by the next one.
    seg_len: u64,
    next: u64,
    dedup: DedupIndex,
    head: Arc<AtomicU64>,
    syncs: Arc<AtomicU64>,
    health: Arc<Mutex<JournalHealth>>,
    /// A write failed: reopen the segment and cut it at `seg_len` before the next one (after
    /// a failed fsync the kernel may have dropped the dirty pages, so the file descriptor's
    /// state is not trusted).
    reopen: bool,
    /// The segment is full and a new one could not be started yet.
    roll_due: bool,
    last_roll_log: Option<Instant>,
}

impl Journal {
    /// Opens (or creates) the journal in `cfg.dir`, replays every entry into `replay`, cuts a
    /// torn tail, and starts the writer thread.
    pub fn open(
        cfg: JournalConfig,
        replay: &mut dyn FnMut(u64, LogEntry) -> Result<(), LogError>,
    ) -> Result<Journal, LogError> {
        Journal::open_with(cfg, Reading::Entries(replay))
    }

    /// [`Journal::open`] replaying what [`LogEntry::peek`] reads of each entry: for a reader
    /// that needs the registry and the usage counts but not the signals themselves (an
    /// offline backfill), several times faster than decoding every signal.
    pub fn open_peeking(
        cfg: JournalConfig,
        replay: &mut dyn FnMut(u64, Peek) -> Result<(), LogError>,
    ) -> Result<Journal, LogError> {
        Journal::open_with(cfg, Reading::Peeks(replay))
    }

    fn open_with(cfg: JournalConfig, mut replay: Reading<'_>) -> Result<Journal, LogError> {
        fs::create_dir_all(&cfg.dir)?;
        let mut dedup = DedupIndex::default();
        let mut segs = segments(&cfg.dir)?;
        if segs.is_empty() {
            let p = cfg.dir.join(segment_name(1));
            File::create(&p)?.sync_all()?;
            sync_dir(&cfg.dir)?;
            segs.push((1, p));
        }
        let mut next = 1;
        let mut tail_len = 0;
        // Empty files of failed rolls are removed; the segment before them is the tail.
        let mut kept = Vec::with_capacity(segs.len());
        for (i, seg) in segs.iter().enumerate() {
            let (first, path) = seg;
            if i > 0 && fs::metadata(path)?.len() == 0 && i + 1 < segs.len() {
                tracing::warn!(segment = %path.display(), "Removing an empty journal segment a failed roll left.");
                fs::remove_file(path)?;
                continue;
            }
            kept.push((*first, path.clone()));
        }
        let mut segs = kept;
        let last = segs.len() - 1;
        for (i, (first, path)) in segs.iter().enumerate() {
            if i > 0 && *first != next {
                if i == last && stale(path, *first, true, next)? {
                    tracing::warn!(segment = %path.display(), "Removing an empty journal segment a failed roll left.");
                    fs::remove_file(path)?;
                    break;
                }
                return Err(LogError::Corrupt(format!(
                    "{} starts at position {first}, but the segment before it ends at {}",
                    path.display(),
                    next - 1
                )));
            }
            let (valid, end, torn) = scan_segment(path, *first, &mut replay, Some(&mut dedup))?;
            if torn && i < last {
                return Err(LogError::Corrupt(format!(
                    "{} is damaged before its end",
                    path.display()
                )));
            }
            if torn {
                let size = fs::metadata(path)?.len();
                tracing::warn!(
                    segment = %path.display(),
                    kept_bytes = valid,
                    dropped_bytes = size - valid,
                    "Cut a torn record off the end of the journal."
                );
                let f = OpenOptions::new().write(true).open(path)?;
                f.set_len(valid)?;
                f.sync_all()?;
            }
            next = end;
            tail_len = valid;
        }
        if segs.len() > 1 && !segs[last].1.exists() {
            segs.pop();
        }
        let (first, path) = &segs[segs.len() - 1];
        let file = OpenOptions::new().write(true).open(path)?;
        tracing::info!(dir = %cfg.dir.display(), next_position = next, first_of_segment = first, "Journal opened.");
        let head = Arc::new(AtomicU64::new(next - 1));
        let syncs = Arc::new(AtomicU64::new(0));
        let health = Arc::new(Mutex::new(JournalHealth::default()));
        let (tx, rx) = mpsc::sync_channel(cfg.queue);
        let writer = Writer {
            cfg,
            file,
            path: path.clone(),
            seg_len: tail_len,
            next,
            dedup,
            head: head.clone(),
            syncs: syncs.clone(),
            health: health.clone(),
            reopen: false,
            roll_due: false,
            last_roll_log: None,
        };
        thread::Builder::new()
            .name("journal-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(LogError::from)?;
        Ok(Journal {
            tx,
            head,
            syncs,
            health,
        })
    }

    /// The writer's health (see [`JournalHealth`]).
    pub fn health(&self) -> JournalHealth {
        self.health.lock().unwrap().clone()
    }

    /// Appends entries; resolves once they are fsync'd. Refuses at once when the queue is full.
    pub fn append(
        &self,
        entries: Vec<LogEntry>,
    ) -> impl std::future::Future<Output = Result<Vec<Receipt>, LogError>> + Send + 'static {
        let (reply, rx) = oneshot::channel();
        let sent = self.tx.try_send(AppendRequest { entries, reply });
        async move {
            match sent {
                Ok(()) => rx.await.unwrap_or(Err(LogError::Closed)),
                Err(TrySendError::Full(_)) => Err(LogError::Overloaded),
                Err(TrySendError::Disconnected(_)) => Err(LogError::Closed),
            }
        }
    }

    /// The position of the last durable entry.
    pub fn head(&self) -> u64 {
        self.head.load(Ordering::Acquire)
    }

    /// How many `fdatasync`s the writer has issued (each covers a whole group of appends).
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }
}

impl Writer {
    fn run(mut self, rx: Receiver<AppendRequest>) {
        let mut buf = Vec::with_capacity(1 << 20);
        while let Ok(first) = rx.recv() {
            let mut group = vec![first];
            let mut bytes: usize = 0;
            while group.len() < 4096 && bytes < 8 << 20 {
                match rx.try_recv() {
                    Ok(r) => {
                        bytes += r.entries.len() * 512;
                        group.push(r);
                    }
                    Err(_) => break,
                }
            }
            self.commit(group, &mut buf);
        }
        tracing::info!("Journal writer stopped.");
    }

    fn set_health(&self, f: impl FnOnce(&mut JournalHealth)) {
        f(&mut self.health.lock().unwrap());
    }

    fn commit(&mut self, group: Vec<AppendRequest>, buf: &mut Vec<u8>) {
        if self.reopen {
            if let Err(e) = self.reopen_segment() {
                let e = Arc::new(e);
                tracing::error!(error = %e, "Journal segment could not be reopened; refusing this group.");
                self.set_health(|h| h.write_error = Some(e.to_string()));
                for r in group {
                    let _ = r.reply.send(Err(LogError::Io(e.clone())));
                }
                return;
            }
            self.reopen = false;
        }
        if self.roll_due {
            self.try_roll();
        }
        buf.clear();
        let start_next = self.next;
        let mut added_keys = Vec::new();
        let mut receipts: Vec<Vec<Receipt>> = Vec::with_capacity(group.len());
        for req in &group {
            let mut rs = Vec::with_capacity(req.entries.len());
            for entry in &req.entries {
                if let LogEntry::Signal(s) = entry {
                    let key = s.dedup_bits();
                    if let Some(pos) = self.dedup.get(key) {
                        rs.push(Receipt {
                            position: pos,
                            duplicate: true,
                        });
                        continue;
                    }
                    self.dedup.insert(key, self.next);
                    added_keys.push(key);
                }
                encode_record(entry, buf);
                rs.push(Receipt {
                    position: self.next,
                    duplicate: false,
                });
                self.next += 1;
            }
            receipts.push(rs);
        }
        match self.write_durably(buf) {
            Ok(()) => {
                self.set_health(|h| h.write_error = None);
                self.head.store(self.next - 1, Ordering::Release);
                crate::metrics::METRICS
                    .log_appended
                    .inc_by(self.next - start_next);
                // Before the answers, so that an answered append has its roll behind it.
                if self.seg_len >= self.cfg.segment_bytes {
                    self.roll_due = true;
                    self.try_roll();
                }
                let mut committed = Vec::new();
                for (req, rs) in group.into_iter().zip(receipts) {
                    if self.cfg.on_commit.is_some() {
                        for (entry, r) in req.entries.into_iter().zip(&rs) {
                            if !r.duplicate {
                                committed.push((r.position, entry));
                            }
                        }
                    }
                    let _ = req.reply.send(Ok(rs));
                }
                if let Some(hook) = &self.cfg.on_commit {
                    hook(committed);
                }
            }
            Err(e) => {
                let e = Arc::new(e);
                tracing::error!(error = %e, "Journal write failed; the next group retries on a reopened segment.");
                // Nothing of this group was acknowledged; undo its bookkeeping. The next
                // write goes at `seg_len` again, over whatever this one left.
                self.next = start_next;
                for k in &added_keys {
                    self.dedup.remove(*k);
                }
                self.reopen = true;
                self.set_health(|h| h.write_error = Some(e.to_string()));
                for req in group {
                    let _ = req.reply.send(Err(LogError::Io(e.clone())));
                }
            }
        }
    }

    fn write_durably(&mut self, buf: &[u8]) -> std::io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let started = std::time::Instant::now();
        self.file.write_all_at(buf, self.seg_len)?;
        self.file.sync_data()?;
        crate::metrics::METRICS
            .log_fsync
            .observe(started.elapsed().as_secs_f64());
        self.syncs.fetch_add(1, Ordering::Relaxed);
        self.seg_len += buf.len() as u64;
        Ok(())
    }

    fn reopen_segment(&mut self) -> std::io::Result<()> {
        let file = OpenOptions::new().write(true).open(&self.path)?;
        file.set_len(self.seg_len)?;
        file.sync_all()?;
        self.file = file;
        Ok(())
    }

    /// Starts the next segment, or notes why it could not (and keeps the current one).
    fn try_roll(&mut self) {
        match self.roll() {
            Ok(()) => {
                self.roll_due = false;
                self.set_health(|h| h.roll_error = None);
            }
            Err(e) => {
                let now = Instant::now();
                if self
                    .last_roll_log
                    .is_none_or(|t| now - t > Duration::from_secs(10))
                {
                    tracing::error!(error = %e, segment_bytes = self.seg_len, "Could not start a new journal segment; writing on to the current one and retrying.");
                    self.last_roll_log = Some(now);
                }
                self.set_health(|h| h.roll_error = Some(e.to_string()));
            }
        }
    }

    fn roll(&mut self) -> std::io::Result<()> {
        let path = self.cfg.dir.join(segment_name(self.next));
        // A roll that failed after creating the file (at its directory sync) left it empty;
        // it is taken over rather than refused.
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        if file.metadata()?.len() != 0 {
            return Err(std::io::Error::other(format!(
                "segment {} already holds data",
                path.display()
            )));
        }
        if let Err(e) = file.sync_all().and_then(|()| sync_dir(&self.cfg.dir)) {
            // Writes go on into the current segment, past this one's first position: an
            // empty file named here would be read as the journal's end.
            drop(file);
            let _ = fs::remove_file(&path);
            return Err(e);
        }
        self.file = file;
        self.path = path;
        self.seg_len = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
