//! How large a slice of reprocessing is (see `trailspark_operators::rules::book`).
//!
//! One slice is in flight at a time (the next goes once the workers have completed it), so
//! another org's epoch waits behind at most one, and a slice should cost about as much as
//! an epoch may wait: [`TARGET`]. What a slice costs per signal depends on the rules and
//! on what the signals feed downstream, so the size is measured rather than fixed: a slice
//! that ran alone (nothing else in flight from when it went to when it was done) rescales
//! the next one to its measured rate. Slices that shared their time with the log's epochs
//! say nothing of their own cost, and leave the size as it is.

use std::time::{Duration, Instant};

use trailspark_operators::rules::SEGMENT_SIGNALS;

/// What one slice aims to cost.
const TARGET: Duration = Duration::from_millis(20);
/// The largest slice, in staged signals.
const MAX_SIGNALS: u32 = 128 * SEGMENT_SIGNALS;

/// The size of the next slice, and the last one's timing.
pub(super) struct Slicer {
    signals: u32,
    /// The smallest slice: one segment.
    least: u32,
    /// The last slice: its epoch's number (counted from 1), when it went, and whether every
    /// epoch before it was complete then.
    last: Option<(u64, Instant, bool)>,
}

impl Default for Slicer {
    fn default() -> Self {
        Slicer::new(SEGMENT_SIGNALS)
    }
}

impl Slicer {
    /// Slices of at least `segment` signals (the rule book's segment size).
    pub fn new(segment: u32) -> Slicer {
        let least = segment.max(1);
        Slicer {
            signals: least,
            least,
            last: None,
        }
    }

    /// Staged signals the next slice should cover.
    pub fn size(&self) -> u32 {
        self.signals
    }

    /// A slice went as epoch number `seq`, when the workers had completed `completed`.
    pub fn sent(&mut self, seq: u64, completed: u64) {
        self.last = Some((seq, Instant::now(), completed + 1 == seq));
    }

    /// Whether the next slice may go: the workers have completed the last one (they have
    /// completed `completed` of the `sent` epochs sent). Measures it when it ran alone.
    pub fn ready(&mut self, completed: u64, sent: u64) -> bool {
        let Some((seq, at, alone)) = self.last else {
            return true;
        };
        if completed < seq {
            return false;
        }
        self.last = None;
        if alone && sent == seq {
            self.rescale(at.elapsed());
        }
        true
    }

    /// Scales the size to the rate a slice of it ran at: at most doubling, since a slice
    /// may have covered fewer signals than asked (an org's last, or a short segment).
    fn rescale(&mut self, took: Duration) {
        let took = took.max(Duration::from_micros(100)).as_secs_f64();
        let scaled = f64::from(self.signals) * TARGET.as_secs_f64() / took;
        let most = self
            .signals
            .saturating_mul(2)
            .min(MAX_SIGNALS)
            .max(self.least);
        self.signals = scaled.clamp(f64::from(self.least), f64::from(most)) as u32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slice_alone_rescales_the_next_to_the_target() {
        let mut s = Slicer::default();
        assert!(s.ready(0, 0), "nothing in flight");
        s.sent(3, 2);
        assert!(!s.ready(2, 3), "one slice in flight at a time");
        assert!(s.ready(3, 3));
        // Done at once: the size doubles, no more.
        assert_eq!(s.size(), 2 * SEGMENT_SIGNALS);
        s.rescale(TARGET * 4);
        assert_eq!(
            s.size(),
            SEGMENT_SIGNALS,
            "a quarter, but never under one segment"
        );
        s.signals = 8 * SEGMENT_SIGNALS;
        s.rescale(TARGET * 2);
        assert_eq!(
            s.size(),
            4 * SEGMENT_SIGNALS,
            "halved when it took twice the target"
        );
    }

    #[test]
    fn a_slice_that_shared_its_time_leaves_the_size() {
        let mut s = Slicer::default();
        // Epoch 2 was still running when the slice went.
        s.sent(3, 1);
        assert!(s.ready(3, 3));
        assert_eq!(s.size(), SEGMENT_SIGNALS);
        // A log epoch went after the slice.
        s.sent(5, 4);
        assert!(s.ready(6, 6));
        assert_eq!(s.size(), SEGMENT_SIGNALS);
    }
}
