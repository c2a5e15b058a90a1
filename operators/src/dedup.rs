//! Deduplication: one staged signal per (org, dedup key), the first by log position.

use differential_dataflow::lattice::Lattice;
use differential_dataflow::VecCollection;
use timely::order::TotalOrder;
use timely::progress::Timestamp;

use crate::types::Signal;

/// Unique staged signals: of the signals sharing an org and dedup key, the one with the
/// smallest log position. A retry that slipped past the edge's window lands here.
pub fn dedup<'s, T>(
    signals: VecCollection<'s, T, Signal, isize>,
) -> VecCollection<'s, T, Signal, isize>
where
    T: Timestamp + Lattice + TotalOrder,
{
    signals
        .map(|s| ((s.org, s.dedup), s))
        .reduce_named("Dedup", |_key, copies, out| {
            // Values arrive sorted; `Signal` orders by (org, pos, …) so the first is the earliest.
            out.push((copies[0].0.clone(), 1));
        })
        .map(|(_, s)| s)
}

/// Sequential reference: the same, over a plain list.
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
    use crate::testing::{run, shuffle_into_batches};
    use proptest::prelude::*;

    fn arb_signal() -> impl Strategy<Value = Signal> {
        (1u64..4, 0u64..200, 0u8..12).prop_map(|(org, pos, key)| Signal {
            org,
            pos,
            dedup: key as u128,
            received_at: 1_700_000_000_000 + pos as i64,
            event_at: 0,
            source: "generic".into(),
            event_type: "e".into(),
            event_name: None,
            ids: Vec::new().into(),
            product_org: None,
            payload: "{}".into(),
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn keeps_the_first_of_each_key(signals in proptest::collection::vec(arb_signal(), 0..80), seed in any::<u64>()) {
            // Positions are unique on a log.
            let mut signals = signals;
            signals.sort_by_key(|s| s.pos);
            signals.dedup_by_key(|s| s.pos);
            let reference = dedup_reference(&signals);
            for workers in [1, 2] {
                let batches = shuffle_into_batches(&signals, 4, seed)
                    .into_iter()
                    .map(|b| b.into_iter().map(|s| (s, 1)).collect())
                    .collect();
                let got = run(workers, batches, dedup);
                let got: Vec<Signal> = got.into_iter().map(|(s, r)| { assert_eq!(r, 1); s }).collect();
                prop_assert_eq!(&got, &reference);
            }
        }
    }
}
