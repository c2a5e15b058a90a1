//! Eligibility against its sequential reference, on random inputs at 1 and 2 workers, and
//! the pipeline's order of checks on hand-made cases.

use std::collections::BTreeMap;

use super::*;
use crate::ident::IdKind;
use crate::testing::{run, shuffle_into_batches};
use proptest::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
enum In {
    A(Ident, Activity),
    M(Ident, EvalMark),
    E(Org, Env),
}

const DAY: i64 = 86_400_000;

fn lead(org: Org, n: u8) -> Ident {
    Ident::new(org, IdKind::Email, format!("p{n}@x.io"))
}

fn types() -> [SignalType; 3] {
    [
        SignalType::PageView,
        SignalType::FormFill,
        SignalType::SalesEvent,
    ]
}

/// The same decision, computed sequentially from the final inputs.
fn reference(items: &[(In, isize)]) -> Vec<((Ident, Eligibility), isize)> {
    let mut acts: BTreeMap<Ident, Vec<(Activity, isize)>> = BTreeMap::new();
    let mut marks: BTreeMap<Ident, Vec<EvalMark>> = BTreeMap::new();
    let mut envs: BTreeMap<(Org, Env), isize> = BTreeMap::new();
    for (i, d) in items {
        match i {
            In::A(l, a) => acts.entry(l.clone()).or_default().push((*a, *d)),
            In::M(l, m) => marks.entry(l.clone()).or_default().push(*m),
            In::E(o, e) => *envs.entry((*o, *e)).or_default() += d,
        }
    }
    let mut out = Vec::new();
    for (l, a) in acts {
        let mut net: BTreeMap<Activity, isize> = BTreeMap::new();
        for (x, d) in a {
            *net.entry(x).or_default() += d;
        }
        net.retain(|_, d| *d != 0);
        if net.is_empty() {
            continue;
        }
        let la = condense(
            net.iter().map(|(a, d)| (a, *d)),
            marks.get(&l).map_or(&[][..], |m| &m[..]),
        );
        for ((o, env), n) in &envs {
            if *o == l.org && *n > 0 {
                if let Some(e) = decide(&la, env) {
                    out.push(((l.clone(), e), *n));
                }
            }
        }
    }
    out.sort();
    out
}

fn scenario() -> impl Strategy<Value = Vec<(In, isize)>> {
    let activity = (
        0u64..2,
        0u8..5,
        0i64..40,
        0u64..200,
        0usize..3,
        any::<bool>(),
    );
    let mark = (
        0u64..2,
        0u8..5,
        0i64..40,
        0u64..200,
        proptest::option::of(0i64..40),
    );
    (
        proptest::collection::vec(activity, 0..40),
        proptest::collection::vec(mark, 0..8),
        (
            1u32..4,
            1u32..3,
            5u32..30,
            any::<bool>(),
            10i64..45,
            10i64..45,
        ),
    )
        .prop_map(|(acts, marks, (min_s, min_t, look, cool, now0, now1))| {
            let mut items = Vec::new();
            for (org, l, day, pos, t, high) in acts {
                let a = Activity {
                    event_at: day * DAY,
                    pos,
                    signal_type: types()[t],
                    high_intent: high,
                };
                items.push((In::A(lead(org, l), a), 1));
            }
            for (org, l, day, pos, until) in marks {
                let m = EvalMark {
                    evaluated_at: day * DAY,
                    cooldown_until: until.map(|u| u * DAY),
                    basis_pos: pos,
                };
                items.push((In::M(lead(org, l), m), 1));
            }
            let settings = ScoringSettings {
                min_signals: min_s,
                min_signal_types: min_t,
                lookback_days: look,
                cooling_off_enabled: cool,
                ..ScoringSettings::default()
            };
            // Each org's clock steps once: the old environment leaves, the new one stays.
            for (org, now) in [(0, now0), (1, now1)] {
                let old = Env {
                    settings: ScoringSettings::default(),
                    now: 0,
                };
                items.push((In::E(org, old), 1));
                items.push((In::E(org, old), -1));
                items.push((
                    In::E(
                        org,
                        Env {
                            settings,
                            now: now * DAY,
                        },
                    ),
                    1,
                ));
            }
            items
        })
}

fn dataflow(
    items: &[(In, isize)],
    workers: usize,
    seed: u64,
) -> Vec<((Ident, Eligibility), isize)> {
    let batches = shuffle_into_batches(items, 4, seed);
    let mut out = run(workers, batches, |input| {
        let acts = input.clone().flat_map(|i| match i {
            In::A(l, a) => Some((l, a)),
            _ => None,
        });
        let marks = input.clone().flat_map(|i| match i {
            In::M(l, m) => Some((l, m)),
            _ => None,
        });
        let env = input.flat_map(|i| match i {
            In::E(o, e) => Some((o, e)),
            _ => None,
        });
        eligibility(acts, marks, env)
    });
    out.sort();
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn matches_the_reference(items in scenario(), seed in any::<u64>()) {
        let expected = reference(&items);
        prop_assert_eq!(dataflow(&items, 1, seed), expected.clone());
        prop_assert_eq!(dataflow(&items, 2, seed ^ 0x5555), expected);
    }
}

fn act(day: i64, pos: u64, t: SignalType, high: bool) -> Activity {
    Activity {
        event_at: day * DAY,
        pos,
        signal_type: t,
        high_intent: high,
    }
}

#[test]
fn checks_run_in_the_pipelines_order() {
    let env = Env {
        settings: ScoringSettings::default(),
        now: 100 * DAY,
    };
    let page = SignalType::PageView;
    let form = SignalType::FormFill;
    let la = |signals: Vec<Activity>, last: Option<EvalMark>| LeadActivity { signals, last };
    let standing = |a: &LeadActivity| decide(a, &env).unwrap().standing;
    // Two signals in the window, one outside it (lookback 90 days).
    let two = la(
        vec![
            act(5, 1, page, false),
            act(50, 2, page, false),
            act(60, 3, form, false),
        ],
        None,
    );
    assert_eq!(
        standing(&two),
        Standing::Skipped(SkipReason::InsufficientSignals)
    );
    let one_type = la(
        vec![
            act(50, 1, page, false),
            act(51, 2, page, false),
            act(52, 3, page, false),
        ],
        None,
    );
    assert_eq!(
        standing(&one_type),
        Standing::Skipped(SkipReason::InsufficientSignalTypes)
    );
    let ready = vec![
        act(50, 1, page, false),
        act(51, 2, page, false),
        act(52, 3, form, false),
    ];
    assert_eq!(
        standing(&la(ready.clone(), None)),
        Standing::Eligible(Trigger::Batch)
    );
    let cooling = EvalMark {
        evaluated_at: 99 * DAY,
        cooldown_until: Some(101 * DAY),
        basis_pos: 2,
    };
    assert_eq!(
        standing(&la(ready.clone(), Some(cooling))),
        Standing::Skipped(SkipReason::Cooldown)
    );
    let cooled = EvalMark {
        cooldown_until: Some(100 * DAY),
        ..cooling
    };
    assert_eq!(
        standing(&la(ready.clone(), Some(cooled))),
        Standing::Eligible(Trigger::ReEvaluation)
    );
    let seen_all = EvalMark {
        basis_pos: 3,
        ..cooled
    };
    assert_eq!(
        standing(&la(ready.clone(), Some(seen_all))),
        Standing::UpToDate
    );
    // A high-intent signal after the evaluation bypasses the cooldown, not the thresholds.
    let mut hot = ready.clone();
    hot.push(act(99, 4, form, true));
    assert_eq!(
        standing(&la(hot, Some(cooling))),
        Standing::Eligible(Trigger::HighIntent)
    );
    let lone = la(vec![act(99, 4, form, true)], None);
    assert_eq!(
        standing(&lone),
        Standing::Skipped(SkipReason::InsufficientSignals)
    );
    // Without cooling off, the cooldown is ignored.
    let off = Env {
        settings: ScoringSettings {
            cooling_off_enabled: false,
            ..env.settings
        },
        ..env
    };
    assert_eq!(
        decide(&la(ready, Some(cooling)), &off).unwrap().standing,
        Standing::Eligible(Trigger::ReEvaluation)
    );
}
