use std::collections::BTreeSet;

use proptest::prelude::*;

use super::*;
use crate::rules::{Combinator, SignalType};

fn def(name: &str) -> RuleDef {
    RuleDef {
        name: name.into(),
        signal_type: SignalType::FormFill,
        description: None,
        high_intent: false,
        priority: 0,
        combinator: Combinator::All,
        conditions: vec![],
        mappings: vec![],
    }
}

fn create(org: Org, rule_id: u64, reprocess: bool) -> RuleChange {
    RuleChange::Create {
        org,
        rule_id,
        created_at: rule_id as i64,
        def: def(&format!("r{rule_id}")),
        reprocess,
    }
}

/// The versions' bounds, per rule and version.
fn bounds(book: &RuleBook) -> Vec<(u64, u64, u64, Option<u64>)> {
    book.versions()
        .map(|v| (v.rule_id, v.version, v.from_pos, v.until_pos))
        .collect()
}

#[test]
fn a_reprocess_reaches_back_a_slice_at_a_time() {
    let mut book = RuleBook::with_segment_signals(2);
    book.apply(1, create(1, 1, false));
    // Segments start at 0 (empty), 1, 4, 6, 8 and 10, two signals each.
    let segs: Vec<u64> = (2..12).map(|p| book.stage(1, p)).collect();
    assert_eq!(segs, [1, 1, 4, 4, 6, 6, 8, 8, 10, 10]);
    book.apply(
        12,
        RuleChange::Update {
            rule_id: 1,
            def: def("new"),
            reprocess: true,
        },
    );
    assert_eq!(bounds(&book), [(1, 1, 1, Some(12)), (1, 2, 12, None)]);
    assert_eq!(book.unsettled(1), Some(12));
    let mut starts = Vec::new();
    while let Some((org, diffs)) = book.advance(2) {
        assert_eq!(org, 1);
        // Every slice retracts what it changes and adds its replacement.
        assert!(diffs.iter().any(|(_, d)| *d < 0) && diffs.iter().any(|(_, d)| *d > 0));
        let v = book.versions().find(|v| v.version == 2).unwrap();
        starts.push(v.from_pos);
    }
    assert_eq!(
        starts,
        [10, 8, 6, 4, 1, 0],
        "one segment of two signals per slice"
    );
    assert_eq!(
        bounds(&book),
        [(1, 2, 0, None)],
        "in the end, one version over all history"
    );
    assert!(!book.reprocessing());
    assert_eq!(book.unsettled(1), None);
}

#[test]
fn slices_take_turns_between_orgs_and_cover_the_signals_asked_for() {
    let mut book = RuleBook::with_segment_signals(2);
    for org in [1, 2] {
        book.apply(org, create(org, org, false));
    }
    for p in 3..23 {
        book.stage(1 + p % 2, p);
    }
    book.apply(23, RuleChange::ProcessAll { org: 1 });
    book.apply(24, RuleChange::ProcessAll { org: 2 });
    let orgs: Vec<Org> = std::iter::from_fn(|| book.advance(4).map(|(o, _)| o)).collect();
    // Ten signals per org in segments of two: three slices of four signals, the last
    // reaching 0.
    assert_eq!(orgs, [1, 2, 1, 2, 1, 2]);
}

/// A version in the one-step reference: (org, version, from, until).
type Plain = (Org, u64, u64, Option<u64>);

/// How versions come out when every change takes effect at once, as before reprocessing
/// was sliced: the reference the book must settle to.
fn one_step(changes: &[(u64, RuleChange)]) -> BTreeSet<(u64, u64, u64, Option<u64>)> {
    let mut rules: BTreeMap<u64, Vec<Plain>> = BTreeMap::new();
    let succeed = |versions: &mut Vec<Plain>, pos: u64, reprocess: bool| {
        let Some(&(org, version, _, None)) = versions.last() else {
            return;
        };
        if reprocess {
            versions.clear();
            versions.push((org, version + 1, 0, None));
        } else {
            versions.last_mut().unwrap().3 = Some(pos);
            versions.push((org, version + 1, pos, None));
        }
    };
    for (pos, change) in changes {
        match change {
            RuleChange::Create {
                org,
                rule_id,
                reprocess,
                ..
            } => {
                let from = if *reprocess { 0 } else { *pos };
                rules.insert(*rule_id, vec![(*org, 1, from, None)]);
            }
            RuleChange::Update {
                rule_id, reprocess, ..
            } => {
                if let Some(v) = rules.get_mut(rule_id) {
                    succeed(v, *pos, *reprocess);
                }
            }
            RuleChange::ProcessAll { org } => {
                for v in rules.values_mut() {
                    let whole = v.len() == 1 && v[0].2 == 0;
                    if v.last().is_some_and(|l| l.0 == *org) && !whole {
                        succeed(v, *pos, true);
                    }
                }
            }
            RuleChange::Delete { rule_id } => {
                if let Some(last) = rules.get_mut(rule_id).and_then(|v| v.last_mut()) {
                    if last.3.is_none() {
                        last.3 = Some(*pos);
                    }
                }
            }
        }
    }
    rules
        .into_iter()
        .flat_map(|(id, v)| v.into_iter().map(move |(_, n, f, u)| (id, n, f, u)))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    /// Random changes and signals in two orgs, with slices of random sizes in between: once
    /// settled, the versions are the one-step reference's, and the collection updates sent
    /// along the way add up to exactly them.
    #[test]
    fn settles_to_the_one_step_versions(
        log in proptest::collection::vec((0u8..6, 0u8..4, any::<bool>(), 0u32..6), 1..60),
    ) {
        let mut book = RuleBook::with_segment_signals(2);
        let mut changes = Vec::new();
        let mut sent: Vec<(RuleVersion, isize)> = Vec::new();
        for (i, (kind, id, reprocess, slice)) in log.into_iter().enumerate() {
            let pos = i as u64 + 1;
            let rule_id = u64::from(id);
            let org = 1 + rule_id % 2;
            let change = match kind {
                0 | 1 => { book.stage(org, pos); None }
                2 => Some(create(org, rule_id + 10 * pos, reprocess)),
                3 => Some(RuleChange::Update { rule_id: book.latest().map(|r| r.rule_id).nth(id as usize).unwrap_or(0), def: def("u"), reprocess }),
                4 => Some(RuleChange::Delete { rule_id: book.latest().map(|r| r.rule_id).nth(id as usize).unwrap_or(0) }),
                _ => Some(RuleChange::ProcessAll { org }),
            };
            if let Some(c) = change {
                sent.extend(book.apply(pos, c.clone()));
                changes.push((pos, c));
            }
            if slice > 0 {
                sent.extend(book.advance(slice).map(|(_, d)| d).unwrap_or_default());
            }
        }
        sent.extend(book.settle());
        differential_dataflow::consolidation::consolidate(&mut sent);
        prop_assert!(sent.iter().all(|(_, d)| *d == 1));
        let sent: BTreeSet<_> = sent.iter().map(|(v, _)| (v.rule_id, v.version, v.from_pos, v.until_pos)).collect();
        let settled: BTreeSet<_> = bounds(&book).into_iter().collect();
        prop_assert_eq!(&sent, &settled);
        prop_assert_eq!(settled, one_step(&changes));
    }
}
