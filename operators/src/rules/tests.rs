use super::*;
use crate::signal::SignalFields;
use crate::testing::{run, shuffle_into_batches};
use proptest::prelude::*;
use serde_json::json;

fn signal(pos: u64, payload: Value) -> Signal {
    Signal::new(
        1,
        pos,
        SignalFields {
            dedup: pos as u128,
            source: payload["source"].as_str().unwrap_or("generic").into(),
            event_type: payload["event"].as_str().unwrap_or("unknown").into(),
            event_name: payload["event"].as_str().map(Into::into),
            payload: Arc::from(payload.to_string().as_str()),
            ..Default::default()
        },
        [],
    )
}

fn cond(field: &str, op: Op, value: Option<&str>) -> Condition {
    Condition {
        field: field.into(),
        op,
        value: value.map(|v| Operand::One(v.into())),
    }
}

fn def(name: &str, priority: i32, conditions: Vec<Condition>) -> RuleDef {
    RuleDef {
        name: name.into(),
        signal_type: SignalType::FormFill,
        description: None,
        high_intent: false,
        priority,
        combinator: Combinator::All,
        conditions,
        mappings: vec![FieldMapping {
            field: LeadField::Email,
            path: "traits.email".into(),
        }],
    }
}

#[test]
fn operators() {
    let s = signal(
        1,
        json!({"event": "Form Filled", "properties": {"plan": "Pro", "n": 7, "url": "https://x.io/pricing"}}),
    );
    let holds = |c: Condition| condition_holds(&c, &s);
    assert!(holds(cond("event_type", Op::Equals, Some("Form Filled"))));
    assert!(
        !holds(cond("event_type", Op::Equals, Some("form filled"))),
        "equals is exact"
    );
    assert!(holds(cond("properties.plan", Op::Contains, Some("PR"))));
    assert!(holds(cond(
        "properties.url",
        Op::StartsWith,
        Some("HTTPS://")
    )));
    assert!(holds(cond(
        "properties.url",
        Op::EndsWith,
        Some("/pricing")
    )));
    assert!(holds(cond("properties.n", Op::Gt, Some("6.5"))));
    assert!(!holds(cond("properties.n", Op::Lt, Some("7"))));
    assert!(holds(cond("properties.plan", Op::Exists, None)));
    assert!(holds(cond("properties.missing", Op::NotExists, None)));
    assert!(holds(cond("properties.missing", Op::NotEquals, Some("x"))));
    assert!(!holds(cond("properties.missing", Op::Equals, Some("x"))));
    assert!(holds(cond(
        "properties.url",
        Op::Regex,
        Some(r"^https://[a-z.]+/pri")
    )));
    assert!(holds(Condition {
        field: "properties.plan".into(),
        op: Op::In,
        value: Some(Operand::Many(vec!["Free".into(), "Pro".into()])),
    }));
    assert!(holds(cond("source", Op::Equals, Some("generic"))));
}

#[test]
fn validation() {
    let mut d = def("Demo", 1, vec![]);
    assert!(d.validate().is_ok());
    d.mappings = vec![FieldMapping {
        field: LeadField::Title,
        path: "traits.title".into(),
    }];
    assert!(d.validate().unwrap_err().contains("identifying"));
    d.mappings = vec![FieldMapping {
        field: LeadField::CdpId,
        path: "anonymousId".into(),
    }];
    assert!(d.validate().unwrap_err().contains("cdp_id"));
    d.mappings.push(FieldMapping {
        field: LeadField::Email,
        path: "traits.email".into(),
    });
    assert!(d.validate().is_ok());
    d.name = " ".into();
    assert!(d.validate().is_err());
    let mut d = def("R", 1, vec![cond("x", Op::Regex, Some("(unclosed"))]);
    assert!(d.validate().is_err());
    d.conditions = vec![cond("x", Op::Gt, Some("many"))];
    assert!(d.validate().is_err());
    d.conditions = vec![cond("x", Op::Equals, None)];
    assert!(d.validate().is_err());
}

#[test]
fn extraction_and_errors() {
    let r = RuleVersion {
        org: 1,
        rule_id: 1,
        version: 1,
        created_at: 0,
        from_pos: 0,
        until_pos: None,
        def: Arc::new(def("R", 1, vec![])),
    };
    let m = evaluate(&r, &signal(1, json!({"traits": {"email": " A@B.io "}}))).unwrap();
    assert_eq!(m.ids, vec![(IdKind::Email, "a@b.io".into())]);
    assert_eq!(m.error, None);
    let p = json!({"traits": {"email": {"nested": true}}});
    assert_eq!(
        evaluate(&r, &signal(2, p)).unwrap().error.as_deref(),
        Some("Invalid path")
    );
    let p = json!({});
    let m = evaluate(&r, &signal(3, p)).unwrap();
    assert!(
        m.ids.is_empty() && m.error.is_none(),
        "nothing extracted: the caller decides `No identifying field`"
    );
}

#[test]
fn edits_without_and_with_reprocess() {
    let mut book = RuleBook::default();
    let d1 = def("Old", 1, vec![cond("event", Op::Equals, Some("a"))]);
    book.apply(
        10,
        RuleChange::Create {
            org: 1,
            rule_id: 7,
            created_at: 0,
            def: d1,
            reprocess: false,
        },
    );
    let d2 = def("New", 1, vec![cond("event", Op::Equals, Some("a"))]);
    book.apply(
        20,
        RuleChange::Update {
            rule_id: 7,
            def: d2.clone(),
            reprocess: false,
        },
    );
    let signals: Vec<Signal> = [5, 15, 25]
        .into_iter()
        .map(|p| signal(p, json!({"event": "a"})))
        .collect();
    let versions: Vec<RuleVersion> = book.versions().cloned().collect();
    let m = match_rules_reference(&signals, &versions);
    assert!(!m.contains_key(&(1, 5)), "before the rule existed");
    assert_eq!(&*m[&(1, 15)].rule_name, "Old");
    assert_eq!(&*m[&(1, 25)].rule_name, "New");
    book.apply(
        30,
        RuleChange::Update {
            rule_id: 7,
            def: d2,
            reprocess: true,
        },
    );
    // Until its slices have run, the reprocess reaches only from its own position.
    let versions: Vec<RuleVersion> = book.versions().cloned().collect();
    assert!(!match_rules_reference(&signals, &versions).contains_key(&(1, 5)));
    assert_eq!(book.unsettled(1), Some(30));
    book.settle();
    assert_eq!(book.unsettled(1), None);
    let versions: Vec<RuleVersion> = book.versions().cloned().collect();
    let m = match_rules_reference(&signals, &versions);
    assert_eq!(
        (m[&(1, 15)].rule_name.as_ref(), m[&(1, 15)].version),
        ("New", 3)
    );
    assert_eq!(
        m[&(1, 5)].rule_name.as_ref(),
        "New",
        "an edit with reprocess reaches all history, also before the rule existed"
    );
    // Manual processing of another org changes nothing here.
    book.apply(35, RuleChange::ProcessAll { org: 2 });
    let versions: Vec<RuleVersion> = book.versions().cloned().collect();
    assert_eq!(
        match_rules_reference(&signals, &versions)[&(1, 5)].version,
        3,
        "another org's processing changes nothing here"
    );
    // Manual processing of its own org: the rule already covers everything.
    book.apply(36, RuleChange::ProcessAll { org: 1 });
    let versions: Vec<RuleVersion> = book.versions().cloned().collect();
    let m = match_rules_reference(&signals, &versions);
    assert_eq!(
        (m[&(1, 5)].rule_name.as_ref(), m[&(1, 5)].version),
        ("New", 3)
    );
    assert_eq!(m[&(1, 25)].version, 3);
    book.apply(40, RuleChange::Delete { rule_id: 7 });
    let versions: Vec<RuleVersion> = book.versions().cloned().collect();
    let later = signal(45, json!({"event": "a"}));
    let m = match_rules_reference(&[signals[1].clone(), later], &versions);
    assert!(
        m.contains_key(&(1, 15)) && !m.contains_key(&(1, 45)),
        "deletion keeps the past"
    );
}

#[test]
fn priority_then_creation_decides() {
    let s = vec![signal(
        1,
        json!({"event": "a", "traits": {"email": "x@y.io"}}),
    )];
    let mk = |id, prio, created_at| RuleVersion {
        org: 1,
        rule_id: id,
        version: 1,
        created_at,
        from_pos: 0,
        until_pos: None,
        def: Arc::new(def(
            &format!("r{id}"),
            prio,
            vec![cond("event", Op::Equals, Some("a"))],
        )),
    };
    assert_eq!(
        match_rules_reference(&s, &[mk(1, 2, 0), mk(2, 1, 5)])[&(1, 1)].rule_id,
        2
    );
    assert_eq!(
        match_rules_reference(&s, &[mk(1, 1, 9), mk(2, 1, 5)])[&(1, 1)].rule_id,
        2
    );
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
enum In {
    S(u64, Signal),
    R(RuleVersion),
}

fn arb_payload() -> impl Strategy<Value = Value> {
    (0u8..3, 0u8..3, 0i64..10, any::<bool>()).prop_map(|(e, plan, n, email)| {
        let mut p =
            json!({"event": format!("e{e}"), "properties": {"plan": format!("p{plan}"), "n": n}});
        if email {
            p["traits"] = json!({"email": format!("u{n}@x.io")});
        }
        p
    })
}

fn arb_change() -> impl Strategy<Value = (u8, u8, i32, u8, bool)> {
    // (kind: 0 create / 1 update / 2 delete / 3 process all, rule id, priority, condition
    // variant, reprocess)
    (0u8..4, 0u8..4, 0i32..3, 0u8..4, any::<bool>())
}

fn cond_variant(v: u8) -> Vec<Condition> {
    match v {
        0 => vec![cond("event", Op::Equals, Some("e1"))],
        1 => vec![cond("properties.plan", Op::StartsWith, Some("P1"))],
        2 => vec![
            cond("properties.n", Op::Gt, Some("4")),
            cond("event", Op::NotEquals, Some("e2")),
        ],
        _ => vec![],
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(20))]
    #[test]
    fn matches_reference_with_edits(
        log in proptest::collection::vec(prop_oneof![arb_payload().prop_map(Ok), arb_change().prop_map(Err)], 0..50),
        seed in any::<u64>(),
    ) {
        // Segments of three signals, and slices of reprocessing of random sizes between the
        // log's items, the rest at the end.
        let mut book = RuleBook::with_segment_signals(3);
        let mut inputs: Vec<(In, isize)> = Vec::new();
        let mut signals = Vec::new();
        let mut slice = seed;
        for (i, item) in log.into_iter().enumerate() {
            let pos = i as u64 + 1;
            slice = slice.rotate_left(7) ^ pos;
            if let Some((_, diffs)) = book.advance((slice % 8) as u32) {
                inputs.extend(diffs.into_iter().map(|(r, d)| (In::R(r), d)));
            }
            match item {
                Ok(p) => {
                    let s = signal(pos, p);
                    signals.push(s.clone());
                    inputs.push((In::S(book.stage(1, pos), s), 1));
                }
                Err((kind, id, prio, v, reprocess)) => {
                    let d = def(&format!("r{id}"), prio, cond_variant(v));
                    let change = match kind {
                        0 => RuleChange::Create { org: 1, rule_id: id as u64 + pos * 10, created_at: pos as i64, def: d, reprocess },
                        1 => RuleChange::Update { rule_id: book.latest().map(|r| r.rule_id).nth(id as usize % 3).unwrap_or(0), def: d, reprocess },
                        2 => RuleChange::Delete { rule_id: book.latest().map(|r| r.rule_id).nth(id as usize % 3).unwrap_or(0) },
                        _ => RuleChange::ProcessAll { org: 1 },
                    };
                    inputs.extend(book.apply(pos, change).into_iter().map(|(r, d)| (In::R(r), d)));
                }
            }
        }
        inputs.extend(book.settle().into_iter().map(|(r, d)| (In::R(r), d)));
        let versions: Vec<RuleVersion> = book.versions().cloned().collect();
        let reference: Vec<(SignalKey, Match)> = match_rules_reference(&signals, &versions).into_iter().collect();
        for workers in [1, 2] {
            // Everything arrives shuffled, rule retractions included: the final state depends
            // only on the multiset of updates, which is what differential guarantees.
            let batches = shuffle_into_batches(&inputs, 3, seed);
            let got = run(workers, batches, |input| {
                let signals = input.clone().flat_map(|i| if let In::S(seg, s) = i { Some((seg, s)) } else { None });
                let rules = input.flat_map(|i| if let In::R(r) = i { Some(r) } else { None });
                match_rules(signals, rules)
            });
            // One record per signal, matched or not.
            let keys: Vec<SignalKey> = got.iter().map(|((s, _), r)| { assert_eq!(*r, 1); (s.org, s.pos) }).collect();
            let mut all: Vec<SignalKey> = signals.iter().map(|s| (s.org, s.pos)).collect();
            all.sort();
            prop_assert_eq!(&keys, &all);
            let got: Vec<(SignalKey, Match)> = got
                .into_iter()
                .filter_map(|((s, m), _)| m.map(|m| ((s.org, s.pos), Match::clone(&m))))
                .collect();
            prop_assert_eq!(&got, &reference);
        }
    }
}

thread_local! {
    /// Signals [`match_rules`]'s join evaluated on this thread.
    pub(super) static EVALUATED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// 1,000 signals matched by a rule, then an edit of the rule (with or without reprocess),
/// then one more signal: how many evaluations the edit cost, and the signal after it. A
/// reprocess reaches back over all history at once, or with `slice`, only as far as one
/// slice of that many signals does (in segments of 100).
fn evaluations_of_an_edit(reprocess: bool, slice: Option<u32>) -> (usize, usize) {
    use differential_dataflow::input::Input;
    timely::execute_directly(move |worker| {
        let mut book = RuleBook::with_segment_signals(100);
        let (mut signals, mut rules, probe) = worker.dataflow::<u64, _, _>(|scope| {
            let (si, s) = scope.new_collection::<(u64, Signal), isize>();
            let (ri, r) = scope.new_collection::<RuleVersion, isize>();
            let (probe, _) = match_rules(s, r).probe();
            (si, ri, probe)
        });
        let mut epoch = |signals: &mut differential_dataflow::input::InputSession<_, _, _>,
                         rules: &mut differential_dataflow::input::InputSession<_, _, _>,
                         t: u64| {
            signals.advance_to(t);
            rules.advance_to(t);
            signals.flush();
            rules.flush();
            worker.step_while(|| probe.less_than(&t));
        };
        let create = RuleChange::Create {
            org: 1,
            rule_id: 1,
            created_at: 1,
            def: def("r", 0, cond_variant(0)),
            reprocess: false,
        };
        for (r, d) in book.apply(1, create) {
            rules.update(r, d);
        }
        for pos in 2..1002 {
            let s = signal(pos, json!({"event": format!("e{}", pos % 3)}));
            signals.update((book.stage(1, pos), s), 1);
        }
        epoch(&mut signals, &mut rules, 1);
        EVALUATED.with(|n| n.set(0));
        let edit = RuleChange::Update {
            rule_id: 1,
            def: def("r", 0, cond_variant(3)),
            reprocess,
        };
        let mut diffs = book.apply(1002, edit);
        match slice {
            Some(n) => diffs.extend(book.advance(n).map(|(_, d)| d).unwrap_or_default()),
            None => diffs.extend(book.settle()),
        }
        for (r, d) in diffs {
            rules.update(r, d);
        }
        epoch(&mut signals, &mut rules, 2);
        let by_edit = EVALUATED.with(|n| n.replace(0));
        let s = signal(1003, json!({"event": "e0"}));
        signals.update((book.stage(1, 1003), s), 1);
        epoch(&mut signals, &mut rules, 3);
        (by_edit, EVALUATED.with(|n| n.get()))
    })
}

#[test]
fn an_edit_without_reprocess_evaluates_no_past_signal() {
    let (by_edit, after) = evaluations_of_an_edit(false, None);
    assert_eq!(by_edit, 0, "the edit re-evaluated past signals");
    assert_eq!(after, 1, "the next signal is evaluated once");
}

#[test]
fn an_edit_with_reprocess_evaluates_every_signal_again() {
    let (by_edit, _) = evaluations_of_an_edit(true, None);
    // Each signal's old result is retracted and its new one made.
    assert!(by_edit >= 1000, "{by_edit} evaluations");
}

#[test]
fn a_slice_of_a_reprocess_evaluates_only_the_segments_it_covers() {
    let (by_edit, after) = evaluations_of_an_edit(true, Some(100));
    // The last segment's 100 signals, each retracted and made again: not the other 900.
    assert!((100..=250).contains(&by_edit), "{by_edit} evaluations");
    assert_eq!(after, 1, "the next signal is evaluated once");
}

#[test]
fn a_signal_keeps_its_segment_as_rules_change_after_it() {
    let mut book = RuleBook::default();
    let create = |pos| RuleChange::Create {
        org: 1,
        rule_id: pos,
        created_at: pos as i64,
        def: def("r", 0, vec![]),
        reprocess: false,
    };
    assert_eq!(book.segment(1, 5), 0);
    book.apply(3, create(3));
    book.apply(7, create(7));
    assert_eq!(book.segment(1, 5), 3);
    assert_eq!(book.segment(1, 7), 7);
    assert_eq!(
        book.segment(2, 5),
        0,
        "another org's changes are not its own"
    );
    book.apply(9, RuleChange::ProcessAll { org: 1 });
    assert_eq!(
        book.segment(1, 5),
        3,
        "a later change, even a reprocess, moves no segment"
    );
    // A change that changes nothing (an update of an unknown rule) starts no segment.
    book.apply(
        11,
        RuleChange::Update {
            rule_id: 99,
            def: def("r", 0, vec![]),
            reprocess: false,
        },
    );
    assert_eq!(book.segment(1, 12), 9);
}
