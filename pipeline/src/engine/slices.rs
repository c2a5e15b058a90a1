//! How large a slice of reprocessing is (see `trailspark_operators::rules::book`).
//!
//! One slice is in flight at a time: the next goes once the read models have applied the
//! one before (the dataflow's part of a slice is the small one; applying the changed
//! outcomes of its signals to the models is most of it, and another org's epoch waits for
//! both). So another org's epoch waits behind at most one slice, and a slice should cost
//! about as much as an epoch may wait: [`TARGET`]. What a slice costs per signal depends on
//! the rules and on what the signals feed downstream, so the size is measured rather than
//! fixed: from a slice's sending to the models having applied it, and the next slice is
//! scaled to that rate. Epochs of the log sent meanwhile count in that time, which only
//! makes slices smaller while the log is busy.

use std::time::{Duration, Instant};

use trailspark_operators::rules::SEGMENT_SIGNALS;

/// What one slice aims to cost.
const TARGET: Duration = Duration::from_millis(10);
/// The largest slice, in staged signals.
const MAX_SIGNALS: u32 = 128 * SEGMENT_SIGNALS;

/// The size of the next slice, and the one in flight.
pub(super) struct Slicer {
    signals: u32,
    /// The smallest slice: one segment.
    least: u32,
    /// The slice in flight: its epoch's number (counted from 1), and when it went.
    in_flight: Option<(u64, Instant)>,
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
            in_flight: None,
        }
    }

    /// Staged signals the next slice should cover.
    pub fn size(&self) -> u32 {
        self.signals
    }

    /// A slice went as epoch number `seq`.
    pub fn sent(&mut self, seq: u64) {
        self.in_flight = Some((seq, Instant::now()));
    }

    /// Whether the next slice may go: the read models have applied the one in flight (they
    /// have applied `applied` epochs). Sizes the next by what it took.
    pub fn ready(&mut self, applied: u64) -> bool {
        let Some((seq, at)) = self.in_flight else {
            return true;
        };
        if applied < seq {
            return false;
        }
        self.in_flight = None;
        let took = at.elapsed();
        tracing::debug!(
            signals = self.signals,
            took_ms = took.as_secs_f64() * 1e3,
            "A slice of reprocessing was applied."
        );
        self.rescale(took);
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
    fn one_slice_in_flight_and_the_next_scaled_to_its_cost() {
        let mut s = Slicer::default();
        assert!(s.ready(0), "nothing in flight");
        s.sent(3);
        assert!(!s.ready(2), "one slice in flight at a time");
        // Done at once: the size doubles, no more.
        assert!(s.ready(3));
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
        s.sent(9);
        std::thread::sleep(TARGET * 3);
        assert!(s.ready(10));
        assert!(
            s.size() < 4 * SEGMENT_SIGNALS,
            "a slice that took longer than the target shrinks the next"
        );
    }
}
