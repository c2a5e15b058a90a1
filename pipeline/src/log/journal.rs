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
                tracing::error!(error = %e, "Journal segment could not be reopened; refusing this group.");
                self.set_health(|h| h.write_error = Some(e.to_string()));
                for r in group {
                    let _ = r.reply.send(Err(LogError::Io(e.to_string())));
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
                    let _ = req.reply.send(Err(LogError::Io(e.to_string())));
                }
            }
        }
    }

    fn write_durably(&mut self, buf: &[u8]) -> std::io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        self.file.write_all_at(buf, self.seg_len)?;
        self.file.sync_data()?;
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
mod tests {
    use super::*;
    use std::io::Write;
    use trailspark_core::normalize::{normalize, Context};
    use trailspark_core::tenancy::OrgId;

    fn signal(n: u64) -> LogEntry {
        let payload = serde_json::json!({"event": "e", "n": n});
        let ctx = Context {
            org_id: OrgId(1),
            api_key_id: 1,
            received_at: chrono::Utc::now().timestamp_millis(),
            ..Default::default()
        };
        LogEntry::Signal(normalize(&ctx, &payload, payload.to_string()))
    }

    fn collect(dir: &Path) -> Vec<(u64, LogEntry)> {
        let mut out = Vec::new();
        read(dir, &mut |p, e| {
            out.push((p, e));
            Ok(())
        })
        .unwrap();
        out
    }

    #[tokio::test]
    async fn appends_replay_in_order_across_segments_and_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = JournalConfig::new(dir.path());
        cfg.segment_bytes = 300; // force several segments
        let j = Journal::open(cfg.clone(), &mut |_, _| Ok(())).unwrap();
        for n in 0..20 {
            let r = j.append(vec![signal(n)]).await.unwrap();
            assert_eq!(
                r[0],
                Receipt {
                    position: n + 1,
                    duplicate: false
                }
            );
        }
        assert!(segments(dir.path()).unwrap().len() > 2);
        drop(j);
        let mut seen = Vec::new();
        let j = Journal::open(cfg, &mut |p, _| {
            seen.push(p);
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, (1..=20).collect::<Vec<_>>());
        // Retries within the window are answered with the original position, also after a restart.
        let r = j.append(vec![signal(3), signal(100)]).await.unwrap();
        assert_eq!(
            r,
            vec![
                Receipt {
                    position: 4,
                    duplicate: true
                },
                Receipt {
                    position: 21,
                    duplicate: false
                }
            ]
        );
        assert_eq!(j.head(), 21);
    }

    #[tokio::test]
    async fn torn_tail_is_cut_and_appends_continue() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = JournalConfig::new(dir.path());
        let j = Journal::open(cfg.clone(), &mut |_, _| Ok(())).unwrap();
        j.append(vec![signal(1), signal(2)]).await.unwrap();
        drop(j);
        let seg = segments(dir.path()).unwrap()[0].1.clone();
        let good = fs::metadata(&seg).unwrap().len();
        // A crash mid-write: a header promising more bytes than follow, then garbage.
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, b'S', 1, 2])
            .unwrap();
        drop(f);
        assert_eq!(
            collect(dir.path()).len(),
            2,
            "readers stop at the torn tail"
        );
        let j = Journal::open(cfg.clone(), &mut |_, _| Ok(())).unwrap();
        assert_eq!(fs::metadata(&seg).unwrap().len(), good);
        let r = j.append(vec![signal(3)]).await.unwrap();
        assert_eq!(r[0].position, 3);
        drop(j);
        assert_eq!(collect(dir.path()).len(), 3);
    }

    #[tokio::test]
    async fn empty_segments_of_failed_rolls_are_not_read_as_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = JournalConfig::new(dir.path());
        cfg.segment_bytes = 1000; // several records a segment
        let j = Journal::open(cfg.clone(), &mut |_, _| Ok(())).unwrap();
        for n in 0..12 {
            j.append(vec![signal(n)]).await.unwrap();
        }
        drop(j);
        let mut segs = segments(dir.path()).unwrap();
        // When the last roll made an empty segment at 13, take it away, so that the tail is
        // the segment holding 12.
        if fs::metadata(&segs[segs.len() - 1].1).unwrap().len() == 0 {
            fs::remove_file(segs.pop().unwrap().1).unwrap();
        }
        let tail_first = segs[segs.len() - 1].0;
        assert!(segs[1].0 > 2 && tail_first < 12, "{segs:?}");
        // Rolls that created their file and then failed, while writes went on into the
        // current segment: one empty file in the middle, one named before the end.
        let empty = |pos: u64| {
            File::create_new(dir.path().join(segment_name(pos))).unwrap();
        };
        empty(segs[1].0 - 1);
        empty(tail_first + 1);
        let mut seen = Vec::new();
        let j = Journal::open(cfg.clone(), &mut |p, _| {
            seen.push(p);
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, (1..=12).collect::<Vec<_>>());
        assert_eq!(j.append(vec![signal(99)]).await.unwrap()[0].position, 13);
        drop(j);
        assert_eq!(collect(dir.path()).len(), 13);
        let segs = segments(dir.path()).unwrap();
        assert!(
            segs[..segs.len() - 1]
                .iter()
                .all(|(_, p)| fs::metadata(p).unwrap().len() > 0),
            "only a fresh last segment may be empty: {segs:?}"
        );
    }

    #[tokio::test]
    async fn flipped_bit_in_last_record_is_cut_not_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = JournalConfig::new(dir.path());
        let j = Journal::open(cfg.clone(), &mut |_, _| Ok(())).unwrap();
        j.append(vec![signal(1)]).await.unwrap();
        j.append(vec![signal(2)]).await.unwrap();
        drop(j);
        let seg = segments(dir.path()).unwrap()[0].1.clone();
        let mut bytes = fs::read(&seg).unwrap();
        let n = bytes.len();
        bytes[n - 3] ^= 0x40;
        fs::write(&seg, bytes).unwrap();
        let mut count = 0;
        Journal::open(cfg, &mut |_, _| {
            count += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(count, 1);
    }

    #[tokio::test]
    async fn a_stalled_consumer_makes_appends_refused_not_queued_without_bound() {
        let dir = tempfile::tempdir().unwrap();
        let (stall_tx, stall_rx) = std::sync::mpsc::channel::<()>();
        let stall_rx = std::sync::Mutex::new(stall_rx);
        let mut cfg = JournalConfig::new(dir.path());
        cfg.queue = 1;
        // The downstream consumer stalls on the first commit until released.
        cfg.on_commit = Some(Arc::new(move |_| {
            let _ = stall_rx.lock().unwrap().recv();
        }));
        let j = Journal::open(cfg, &mut |_, _| Ok(())).unwrap();
        let first = tokio::spawn(j.append(vec![signal(1)]));
        // Wait until the writer is inside the stalled hook (the first append is answered).
        first.await.unwrap().unwrap();
        let second = tokio::spawn(j.append(vec![signal(2)])); // fills the queue of one
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let third = j.append(vec![signal(3)]).await;
        assert!(matches!(third, Err(LogError::Overloaded)), "{third:?}");
        let as_http = trailspark_sources::IngestError::from(LogError::Overloaded);
        assert_eq!(
            (as_http.status().as_u16(), as_http.retry_after()),
            (503, Some(1))
        );
        stall_tx.send(()).unwrap();
        stall_tx.send(()).unwrap();
        assert_eq!(second.await.unwrap().unwrap()[0].position, 2);
    }

    #[tokio::test]
    async fn concurrent_appends_share_fsyncs_and_get_distinct_positions() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(JournalConfig::new(dir.path()), &mut |_, _| Ok(())).unwrap();
        let tasks: Vec<_> = (0..200)
            .map(|n| tokio::spawn(j.append(vec![signal(n)])))
            .collect();
        let mut positions = Vec::new();
        for t in tasks {
            positions.push(t.await.unwrap().unwrap()[0].position);
        }
        positions.sort();
        assert_eq!(positions, (1..=200).collect::<Vec<_>>());
        // Group commit: the 200 waiting appends were made durable by far fewer fsyncs.
        assert!(
            j.syncs() < 50,
            "{} fsyncs for 200 concurrent appends",
            j.syncs()
        );
    }
}
