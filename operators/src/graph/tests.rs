//! The whole graph against its sequential reference, on random logs at 1 and 2 workers.

use std::collections::BTreeSet;

use super::*;
use crate::rules::SignalType;
use crate::rules::{
    Combinator, Condition, FieldMapping, LeadField, Op, Operand, RuleBook, RuleChange, RuleDef,
};
use crate::testing::{run, shuffle_into_batches, signal};
use proptest::prelude::*;
use serde_json::{json, Value};

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
enum In {
    S(u64, Signal),
    Count((Org, u32, Meter)),
    R(RuleVersion),
}

fn rule_def(variant: u8, prio: i32) -> RuleDef {
    let (conds, mappings) = match variant {
        0 => (
            vec![("event", "Form Filled")],
            vec![FieldMapping {
                field: LeadField::Email,
                path: "traits.email".to_string(),
            }],
        ),
        1 => (
            vec![("type", "page")],
            vec![
                FieldMapping {
                    field: LeadField::Email,
                    path: "context.traits.email".to_string(),
                },
                FieldMapping {
                    field: LeadField::Title,
                    path: "properties.title".to_string(),
                },
            ],
        ),
        2 => (
            vec![("type", "identify")],
            vec![FieldMapping {
                field: LeadField::Email,
                path: "traits.email".to_string(),
            }],
        ),
        _ => (
            vec![],
            vec![
                FieldMapping {
                    field: LeadField::CrmId,
                    path: "properties.crm".to_string(),
                },
                FieldMapping {
                    field: LeadField::Email,
                    path: "traits".to_string(),
                },
            ],
        ),
    };
    RuleDef {
        name: format!("rule{variant}"),
        signal_type: if variant == 1 {
            SignalType::PageView
        } else {
            SignalType::FormFill
        },
        description: None,
        high_intent: variant == 0,
        priority: prio,
        combinator: Combinator::All,
        conditions: conds
            .into_iter()
            .map(|(f, v)| Condition {
                field: f.into(),
                op: Op::Equals,
                value: Some(Operand::One(v.into())),
            })
            .collect(),
        mappings,
    }
}

#[derive(Clone, Debug)]
enum Step {
    Event {
        org: u64,
        visitor: u8,
        kind: u8,
        month: u8,
        page: u8,
    },
    Retry,
    Rule {
        kind: u8,
        variant: u8,
        prio: i32,
        reprocess: bool,
    },
}

fn arb_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (1u64..3, 0u8..6, 0u8..4, 0u8..2, 0u8..3).prop_map(|(org, visitor, kind, month, page)| Step::Event { org, visitor, kind, month, page }),
        1 => Just(Step::Retry),
        2 => (0u8..3, 0u8..4, 0i32..3, any::<bool>()).prop_map(|(kind, variant, prio, reprocess)| Step::Rule { kind, variant, prio, reprocess }),
    ]
}

fn payload(visitor: u8, kind: u8, page: u8) -> Value {
    let anon = format!("anon-{visitor}");
    // Visitors 0 and 3 are one person on two devices; visitor 5's anonymous id is blocked.
    let email = format!("person{}@x.io", visitor % 3);
    let anon = if visitor == 5 {
        "undefined".to_string()
    } else {
        anon
    };
    match kind {
        0 => {
            json!({"type": "page", "anonymousId": anon, "properties": {"url": format!("/p{page}"), "title": "T"}})
        }
        1 => {
            json!({"type": "track", "event": "Form Filled", "anonymousId": anon, "properties": {"form_name": "Demo", "crm": format!("c{page}")}})
        }
        2 => {
            json!({"type": "identify", "anonymousId": anon, "traits": {"email": email, "plan": format!("p{page}")}})
        }
        _ => {
            json!({"event": "form_submit", "email": email, "properties": {"form_name": "Contact"}})
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10))]
    #[test]
    fn whole_graph_matches_reference(steps in proptest::collection::vec(arb_step(), 0..40), seed in any::<u64>()) {
        let base = 1_767_225_600_000i64; // 2026-01-01
        // Segments of two signals: a reprocess reaches back in many slices, one after each
        // step, and the rest at the end.
        let mut book = RuleBook::with_segment_signals(2);
        let mut inputs: Vec<(In, isize)> = Vec::new();
        let mut signals: Vec<Signal> = Vec::new();
        let mut rule_ids = Vec::new();
        // As the engine feeds it: first copies as signals, every copy as a raw count,
        // every first copy as a staged count.
        let mut seen = trailspark_core::dedup::FirstSeen::default();
        let mut unique = BTreeSet::new();
        let mut feed = |s: Signal, seg: u64, inputs: &mut Vec<(In, isize)>| {
            let month = Signal::month_of(s.received_at);
            inputs.push((In::Count((s.org, month, Meter::RawSignals)), 1));
            if seen.insert(s.org, s.dedup) {
                inputs.push((In::Count((s.org, month, Meter::StagedSignals)), 1));
                unique.insert(s.clone());
                inputs.push((In::S(seg, s), 1));
            }
        };
        for (i, step) in steps.into_iter().enumerate() {
            let pos = i as u64 + 1;
            match step {
                Step::Event { org, visitor, kind, month, page } => {
                    let s = signal(org, pos, base + month as i64 * 40 * 86_400_000 + pos as i64, payload(visitor, kind, page));
                    signals.push(s.clone());
                    feed(s, book.stage(org, pos), &mut inputs);
                }
                Step::Retry => {
                    if let Some(last) = signals.last() {
                        let mut s = last.clone();
                        s.pos = pos;
                        signals.push(s.clone());
                        let seg = book.stage(s.org, pos);
                        feed(s, seg, &mut inputs);
                    }
                }
                Step::Rule { kind, variant, prio, reprocess } => {
                    let change = match (kind, rule_ids.last()) {
                        (1, Some(&id)) => RuleChange::Update { rule_id: id, def: rule_def(variant, prio), reprocess },
                        (2, Some(&id)) => RuleChange::Delete { rule_id: id },
                        _ => {
                            rule_ids.push(pos);
                            RuleChange::Create { org: 1 + (variant as u64 % 2), rule_id: pos, created_at: pos as i64, def: rule_def(variant, prio), reprocess }
                        }
                    };
                    inputs.extend(book.apply(pos, change).into_iter().map(|(r, d)| (In::R(r), d)));
                }
            }
            if let Some((_, diffs)) = book.advance(1) {
                inputs.extend(diffs.into_iter().map(|(r, d)| (In::R(r), d)));
            }
        }
        inputs.extend(book.settle().into_iter().map(|(r, d)| (In::R(r), d)));
        let versions: Vec<RuleVersion> = book.versions().cloned().collect();
        let cfg = IdentityConfig::default();
        let expected = reference(&signals, &versions, &cfg);
        for workers in [1, 2] {
            let batches = shuffle_into_batches(&inputs, 3, seed);
            macro_rules! output {
                ($field:ident) => {{
                    let got = run(workers, batches.clone(), |input| {
                        let signals = input.clone().flat_map(|i| if let In::S(seg, s) = i { Some((seg, s)) } else { None });
                        let counted = input.clone().flat_map(|i| if let In::Count(m) = i { Some(m) } else { None });
                        let rules = input.flat_map(|i| if let In::R(r) = i { Some(r) } else { None });
                        build(signals, counted, rules, &IdentityConfig::default()).$field
                    });
                    got.into_iter().map(|(d, r)| { assert_eq!(r, 1, "{:?}", d); d }).collect::<BTreeSet<_>>()
                }};
            }
            let got = State {
                unique: unique.clone(),
                processed: output!(processed),
                membership: output!(membership),
                groups: output!(groups),
                usage: output!(usage),
                leads: output!(leads),
                activity: output!(activity),
            };
            prop_assert_eq!(&got.unique, &expected.unique);
            prop_assert_eq!(&got.processed, &expected.processed);
            prop_assert_eq!(&got.membership, &expected.membership);
            prop_assert_eq!(&got.groups, &expected.groups);
            prop_assert_eq!(&got.usage, &expected.usage);
            prop_assert_eq!(&got.leads, &expected.leads);
            prop_assert_eq!(&got.activity, &expected.activity);
        }
    }
}

#[test]
fn anonymous_history_is_processed_when_identified_in_any_order() {
    let pv = |pos| {
        signal(
            1,
            pos,
            0,
            json!({"type": "page", "anonymousId": "A1", "properties": {"url": format!("/p{pos}")}}),
        )
    };
    let identify = signal(
        1,
        10,
        0,
        json!({"type": "identify", "anonymousId": "A1", "traits": {"email": "X@Y.com"}}),
    );
    let mut book = RuleBook::default();
    let d = rule_def(1, 0);
    let versions: Vec<RuleVersion> = book
        .apply(
            0,
            RuleChange::Create {
                org: 1,
                rule_id: 1,
                created_at: 0,
                def: d,
                reprocess: true,
            },
        )
        .into_iter()
        .map(|(r, _)| r)
        .collect();
    let before = reference(
        &[pv(1), pv(2), pv(3)],
        &versions,
        &IdentityConfig::default(),
    );
    assert!(
        before
            .processed
            .iter()
            .all(|(_, p)| p.status == Status::Pending),
        "held cold"
    );
    assert!(before.leads.is_empty());
    for order in [
        vec![pv(1), pv(2), pv(3), identify.clone()],
        vec![identify.clone(), pv(1), pv(2), pv(3)],
    ] {
        let after = reference(&order, &versions, &IdentityConfig::default());
        let done: Vec<_> = after
            .processed
            .iter()
            .filter(|(_, p)| p.status == Status::Completed)
            .collect();
        assert_eq!(
            done.len(),
            3,
            "the three page views are mapped once identified"
        );
        assert_eq!(after.leads.len(), 1);
        let (lead, profile) = after.leads.iter().next().unwrap();
        assert_eq!(&*lead.value, "x@y.com");
        assert_eq!(profile.signals, 4);
        assert!(profile.traits.contains(&("email".into(), "X@Y.com".into())));
    }
}
