//! Making the journal agree with the archive after its tail was lost.

use trailspark_core::LogEntry;
use trailspark_sinks::archive::{positions_used, read_file, ArchiveError, Location};

use super::{Journal, LogError};

/// Why reconciling failed.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("reading the archive's positions: {0}")]
    Archive(#[from] ArchiveError),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("reconciling with the archive: position {expected} was appended at {got} (duplicate: {duplicate})")]
    Misplaced {
        expected: u64,
        got: u64,
        duplicate: bool,
    },
}

/// What [`reconcile`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Positions whose entries came back from the archive.
    pub restored: Vec<u64>,
    /// Positions the archive could not restore (config events, product-org updates,
    /// signals not yet in a file): marked lost, never reused.
    pub lost: Vec<u64>,
}

/// `1-4, 7, 9-12`: positions as ranges, for the log.
fn ranges(positions: &[u64]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut iter = positions.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end = iter.next().unwrap();
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    out.join(", ")
}

/// Makes the journal agree with the archive after its tail was lost.
///
/// A crash cuts at most a torn record, which was never acknowledged. But a disk fault or a
/// snapshot restore can lose acknowledged entries the archive already holds; the next
/// append then reused their positions as ids, so SQL showed the lost payload under the new
/// signal's id, the new signal was never archived (its id was "already archived"), and the
/// explorer and SQL disagreed. Here every position the archive has used past the journal's
/// head is appended again, in order: the archived signal when a file holds it, else an
/// [`EntryLost`](trailspark_core::ConfigEvent::EntryLost) marker. The journal then holds
/// what the archive holds, and new entries get positions past it.
pub async fn reconcile(
    journal: &Journal,
    archive: &Location,
) -> Result<Reconciled, ReconcileError> {
    let head = journal.head();
    let (used, files) = positions_used(archive).await?;
    if used <= head {
        return Ok(Reconciled::default());
    }
    let mut found = std::collections::BTreeMap::new();
    for f in files.iter().filter(|f| f.last > head && f.first <= used) {
        for row in read_file(archive, f).await? {
            if row.id > head && row.id <= used {
                found.insert(row.id, row.record);
            }
        }
    }
    let at = chrono::Utc::now().timestamp_millis();
    let mut done = Reconciled::default();
    let mut entries = Vec::with_capacity((used - head) as usize);
    for position in head + 1..=used {
        match found.remove(&position) {
            Some(record) => {
                done.restored.push(position);
                entries.push(LogEntry::Signal((*record).clone()));
            }
            None => {
                done.lost.push(position);
                entries.push(LogEntry::Config(trailspark_core::ConfigEvent::EntryLost {
                    position,
                    at,
                }));
            }
        }
    }
    tracing::warn!(
        journal_head = head,
        archive_used_through = used,
        restored = %ranges(&done.restored),
        lost = %ranges(&done.lost),
        "The journal ended before positions the archive holds; restored what the archive has and marked the rest lost, so no id is reused."
    );
    let mut next = head + 1;
    for chunk in entries.chunks(10_000) {
        let receipts = journal.append(chunk.to_vec()).await?;
        for r in receipts {
            if r.duplicate || r.position != next {
                return Err(ReconcileError::Misplaced {
                    expected: next,
                    got: r.position,
                    duplicate: r.duplicate,
                });
            }
            next += 1;
        }
    }
    Ok(done)
}
