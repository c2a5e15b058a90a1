//! Deduplication: one staged signal per (org, dedup key), the first by log position.
//!
//! The log is append-only and the engine reads it in position order, so the first copy of a
//! key is the first one read: dedup is a set of the keys seen so far, kept where the log is
//! read, and only first copies enter the dataflow. An in-dataflow `reduce` did the same with
//! two arrangements of every whole signal (its input and its output), several hundred bytes a
//! signal against the ~20–40 bytes of a set entry, and did it again for each retry.

use rustc_hash::FxHashSet;
use std::collections::HashMap;

use crate::types::{Org, Signal};

/// The (org, dedup key) pairs already staged. Keys are the first 128 bits of a SHA-256
/// (`SignalRecord::dedup_bits`), so a fast non-keyed hash spreads them well.
#[derive(Debug, Default)]
pub struct FirstSeen {
    by_org: HashMap<Org, FxHashSet<u128>>,
    len: usize,
}

impl FirstSeen {
    /// Records `(org, key)`; true if it had not been seen, i.e. this is the copy to stage.
    /// Callers offer signals in log order.
    pub fn insert(&mut self, org: Org, key: u128) -> bool {
        let new = self.by_org.entry(org).or_default().insert(key);
        self.len += usize::from(new);
        new
    }

    /// How many distinct keys have been staged.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Sequential reference: of the signals sharing an org and dedup key, the one with the
/// smallest log position, in any input order.
pub fn dedup_reference(signals: &[Signal]) -> Vec<Signal> {
    let mut first = std::collections::BTreeMap::new();
    for s in signals {
        first
            .entry((s.org, s.dedup))
            .and_modify(|cur: &mut Signal| {
                if s.pos < cur.pos {
                    *cur = s.clone();
                }
            })
            .or_insert_with(|| s.clone());
    }
    let mut out: Vec<Signal> = first.into_values().collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The first copies, in log order: what the engine feeds the dataflow.
    fn first_copies(signals: &[Signal]) -> Vec<Signal> {
        let mut sorted: Vec<&Signal> = signals.iter().collect();
        sorted.sort_by_key(|s| s.pos);
        let mut seen = FirstSeen::default();
        sorted
            .into_iter()
            .filter(|s| seen.insert(s.org, s.dedup))
            .cloned()
            .collect()
    }

    fn arb_signal() -> impl Strategy<Value = Signal> {
        (1u64..4, 0u64..200, 0u8..12).prop_map(|(org, pos, key)| {
            Signal::new(
                org,
                pos,
                crate::types::SignalFields {
                    dedup: key as u128,
                    received_at: 1_700_000_000_000 + pos as i64,
                    source: "generic".into(),
                    event_type: "e".into(),
                    payload: "{}".into(),
                    ..Default::default()
                },
                [],
            )
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn keeps_the_first_of_each_key(signals in proptest::collection::vec(arb_signal(), 0..80)) {
            // Positions are unique on a log.
            let mut signals = signals;
            signals.sort_by_key(|s| s.pos);
            signals.dedup_by_key(|s| s.pos);
            signals.reverse();
            let mut got = first_copies(&signals);
            got.sort();
            prop_assert_eq!(got, dedup_reference(&signals));
        }
    }

    #[test]
    fn counts_distinct_keys_per_org() {
        let mut seen = FirstSeen::default();
        assert!(seen.insert(1, 7));
        assert!(!seen.insert(1, 7));
        assert!(seen.insert(2, 7), "keys are scoped to the org");
        assert_eq!(seen.len(), 2);
    }
}
