//! Mapping rules (spec 9): which staged signals a rule processes, and what it extracts.
//!
//! Rules are data: an input collection of [`RuleVersion`]s joined with the staged signals of
//! their org. Each version applies to the signals whose log position lies in
//! `[from_pos, until_pos)`. An edit without reprocess closes the old version at the edit's
//! position and opens the new one there, so signals before the edit keep their result; an
//! edit with reprocess replaces every earlier version by one that covers their whole range,
//! so differential re-derives exactly the signals whose match changes. A deletion closes the
//! last version. The config side turns rule events into these versions
//! ([`RuleBook`]); this module only evaluates them.
//!
//! Of the rules that match a signal, the one with the lowest `priority`, then the earliest
//! `created_at`, then the lowest id wins (spec 18).

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use differential_dataflow::lattice::Lattice;
use differential_dataflow::VecCollection;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use timely::order::TotalOrder;
use timely::progress::Timestamp;
use trailspark_core::path;
pub use trailspark_core::rules::{
    Combinator, Condition, FieldMapping, LeadField, Op, Operand, RuleDef, SignalType,
};

use crate::identity::SignalKey;
use crate::types::{IdKind, Org, Signal};

/// One version of a rule, in force for signals at positions `[from_pos, until_pos)`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RuleVersion {
    pub org: Org,
    pub rule_id: u64,
    pub version: u64,
    pub created_at: i64,
    pub from_pos: u64,
    pub until_pos: Option<u64>,
    pub def: Arc<RuleDef>,
}

/// The identity-graph kind of an identifying lead field. `cdp_id` is an anonymous tracking
/// id: it links, but never creates a lead on its own (spec 7.5).
pub fn id_kind(field: &LeadField) -> Option<IdKind> {
    match field {
        LeadField::Email => Some(IdKind::Email),
        LeadField::MapId => Some(IdKind::MapId),
        LeadField::CdpId => Some(IdKind::AnonymousId),
        LeadField::CrmId => Some(IdKind::CrmId),
        LeadField::ProductUserId => Some(IdKind::ProductUserId),
        LeadField::Title | LeadField::Trait(_) => None,
    }
}

/// A field's value as text: strings as they are, numbers and booleans in JSON form.
fn scalar_text(v: &Value) -> Option<Cow<'_, str>> {
    match v {
        Value::String(s) => Some(Cow::Borrowed(s)),
        Value::Number(n) => Some(Cow::Owned(n.to_string())),
        Value::Bool(b) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
        _ => None,
    }
}

/// A condition's field: borrowed from the signal, or the value at a path of its payload
/// (looked up in the payload's text, [`path::lookup`]: conditions are evaluated for every
/// signal against every rule, and most read one or two paths).
enum Field<'a> {
    Text(&'a str),
    Json(Value),
}

impl Field<'_> {
    fn text(&self) -> Option<Cow<'_, str>> {
        match self {
            Field::Text(t) => Some(Cow::Borrowed(t)),
            Field::Json(v) => scalar_text(v),
        }
    }
}

fn field_value<'a>(signal: &'a Signal, field: &str) -> Option<Field<'a>> {
    match field {
        "source" => Some(Field::Text(&signal.source)),
        "event_type" => Some(Field::Text(&signal.event_type)),
        "event_name" => signal.event_name.as_deref().map(Field::Text),
        p => path::lookup(&signal.payload, p)
            .filter(|v| !v.is_null())
            .map(Field::Json),
    }
}

/// Whether a condition reads the payload (rather than a field of the signal).
fn reads_payload(c: &Condition) -> bool {
    !matches!(c.field.as_str(), "source" | "event_type" | "event_name")
}

thread_local! {
    static REGEXES: RefCell<HashMap<String, Option<regex::Regex>>> = RefCell::new(HashMap::new());
}

fn regex_matches(pattern: &str, text: &str) -> bool {
    REGEXES.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some(r) = cache.get(pattern) {
            return r.as_ref().is_some_and(|r| r.is_match(text));
        }
        if cache.len() > 10_000 {
            cache.clear();
        }
        cache
            .entry(pattern.to_string())
            .or_insert_with(|| regex::Regex::new(pattern).ok())
            .as_ref()
            .is_some_and(|r| r.is_match(text))
    })
}

/// Whether one condition holds. `equals` is exact; `contains`, `starts_with`, `ends_with`
/// ignore case (spec 9.2 proposal); `gt`/`lt` compare numerically; a missing field fails
/// every condition except `not_exists` and `not_equals`.
pub fn condition_holds(c: &Condition, signal: &Signal) -> bool {
    let v = field_value(signal, &c.field);
    let one = match &c.value {
        Some(Operand::One(s)) => Some(s.as_str()),
        _ => None,
    };
    match c.op {
        Op::Exists => v.is_some(),
        Op::NotExists => v.is_none(),
        Op::NotEquals => v.as_ref().and_then(Field::text).as_deref() != one,
        op => {
            let Some(text) = v.as_ref().and_then(Field::text) else {
                return false;
            };
            let folded = || {
                (
                    text.to_lowercase(),
                    one.map(str::to_lowercase).unwrap_or_default(),
                )
            };
            match op {
                Op::Equals => Some(&*text) == one,
                Op::Contains => {
                    let (t, o) = folded();
                    t.contains(&o)
                }
                Op::StartsWith => {
                    let (t, o) = folded();
                    t.starts_with(&o)
                }
                Op::EndsWith => {
                    let (t, o) = folded();
                    t.ends_with(&o)
                }
                Op::In => {
                    matches!(&c.value, Some(Operand::Many(list)) if list.iter().any(|x| *x == *text))
                }
                Op::Regex => one.is_some_and(|p| regex_matches(p, &text)),
                Op::Gt | Op::Lt => {
                    let (Ok(a), Some(Ok(b))) = (
                        text.trim().parse::<f64>(),
                        one.map(|s| s.trim().parse::<f64>()),
                    ) else {
                        return false;
                    };
                    if op == Op::Gt {
                        a > b
                    } else {
                        a < b
                    }
                }
                Op::Exists | Op::NotExists | Op::NotEquals => unreachable!(),
            }
        }
    }
}

/// Whether `rule` applies to `signal`: in force at its position, and its conditions hold.
/// Conditions on the signal's own fields are tried before those that read the payload: the
/// answer is the same in any order, and a cheap condition that fails spares the lookups.
pub fn applies(rule: &RuleVersion, signal: &Signal) -> bool {
    if signal.org != rule.org
        || signal.pos < rule.from_pos
        || rule.until_pos.is_some_and(|u| signal.pos >= u)
    {
        return false;
    }
    let conds = &rule.def.conditions;
    let mut ordered = conds
        .iter()
        .filter(|c| !reads_payload(c))
        .chain(conds.iter().filter(|c| reads_payload(c)))
        .map(|c| condition_holds(c, signal));
    match rule.def.combinator {
        Combinator::All => ordered.all(|b| b),
        Combinator::Any => conds.is_empty() || ordered.any(|b| b),
    }
}

/// The winning rule of a signal and what it extracted.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Match {
    /// Sort key: lower wins.
    pub priority: i32,
    pub created_at: i64,
    pub rule_id: u64,
    pub version: u64,
    /// Shared: a match is cloned into several arrangements and into every processed record.
    pub rule_name: Arc<str>,
    pub signal_type: SignalType,
    pub high_intent: bool,
    /// `Invalid path` when a mapping path resolved to an object or array.
    pub error: Option<String>,
    /// Identifiers the mappings extracted (they join the identity graph).
    pub ids: Vec<(IdKind, String)>,
    /// Non-identifying fields the mappings extracted (title, traits).
    pub fields: Vec<(String, String)>,
}

/// Evaluates `rule` on `signal`, if it applies.
pub fn evaluate(rule: &RuleVersion, signal: &Signal) -> Option<Match> {
    if !applies(rule, signal) {
        return None;
    }
    let mut m = Match {
        priority: rule.def.priority,
        created_at: rule.created_at,
        rule_id: rule.rule_id,
        version: rule.version,
        rule_name: Arc::from(rule.def.name.as_str()),
        signal_type: rule.def.signal_type,
        high_intent: rule.def.high_intent,
        error: None,
        ids: Vec::new(),
        fields: Vec::new(),
    };
    for FieldMapping { field, path: p } in &rule.def.mappings {
        match path::lookup(&signal.payload, p) {
            None | Some(Value::Null) => {}
            Some(v) => match scalar_text(&v) {
                None => m.error = Some("Invalid path".into()),
                Some(text) => {
                    let text = text.trim().to_string();
                    if text.is_empty() {
                        continue;
                    }
                    match id_kind(field) {
                        Some(IdKind::Email) => m.ids.push((IdKind::Email, text.to_lowercase())),
                        Some(kind) => m.ids.push((kind, text)),
                        None => m.fields.push((field.name(), text)),
                    }
                }
            },
        }
    }
    m.ids.sort();
    m.ids.dedup();
    // Identifiers the signal carries itself are already its facts in identity resolution:
    // leaving them out spares it a second copy of each.
    m.ids
        .retain(|(k, v)| !signal.ids.iter().any(|(sk, sv)| sk == k && **sv == **v));
    Some(m)
}

/// Every signal with its winning rule, if one applies (see the module docs for the order).
///
/// Each signal is joined with its org's whole rule set (all versions, as one value), so the
/// winner is chosen inside the join without another arrangement; conditions and mappings look
/// their paths up in the payload's text ([`path::lookup`]) instead of parsing it. The price is paid on rule edits, which
/// re-evaluate the org's signals against all its rules: edits are rare, signals are many.
///
/// The output has one record per signal, matched or not (what comes next decides every
/// signal's status from it), so every org with signals has a rule set, empty when it has no
/// rules: the set is reduced from its rules and one marker per org.
pub fn match_rules<'s, T>(
    signals: VecCollection<'s, T, Signal, isize>,
    rules: VecCollection<'s, T, RuleVersion, isize>,
) -> VecCollection<'s, T, (Signal, Option<Arc<Match>>), isize>
where
    T: Timestamp + Lattice + TotalOrder,
{
    let orgs = signals.clone().map(|s| s.org).distinct();
    let by_org = signals.map(|s| (s.org, s)).arrange_by_key();
    let rule_sets = rules
        .map(|r| (r.org, Some(r)))
        .concat(orgs.map(|o| (o, None)))
        .reduce_named("RuleSet", |_org, versions, out| {
            let set: Vec<RuleVersion> = versions.iter().filter_map(|(r, _)| (*r).clone()).collect();
            out.push((set, 1));
        })
        .arrange_by_key();
    by_org.join_core(rule_sets, |_org, s: &Signal, set: &Vec<RuleVersion>| {
        let winner = set
            .iter()
            .filter_map(|r| evaluate(r, s))
            .min()
            .map(Arc::new);
        Some((s.clone(), winner))
    })
}

/// Sequential reference of [`match_rules`].
pub fn match_rules_reference(
    signals: &[Signal],
    rules: &[RuleVersion],
) -> BTreeMap<SignalKey, Match> {
    let mut out = BTreeMap::new();
    for s in signals {
        let best = rules.iter().filter_map(|r| evaluate(r, s)).min();
        if let Some(m) = best {
            out.insert((s.org, s.pos), m);
        }
    }
    out
}

/// A rule's history, turned into versions (the config side of rules).
#[derive(Clone, Debug, Default)]
pub struct RuleBook {
    rules: BTreeMap<u64, Vec<RuleVersion>>,
}

/// How a rule changes.
#[derive(Clone, Debug)]
pub enum RuleChange {
    Create {
        org: Org,
        rule_id: u64,
        created_at: i64,
        def: RuleDef,
        reprocess: bool,
    },
    Update {
        rule_id: u64,
        def: RuleDef,
        reprocess: bool,
    },
    Delete {
        rule_id: u64,
    },
    /// Every live rule of the org covers all of its signals from now on, as if each had been
    /// created with reprocess (manual processing).
    ProcessAll {
        org: Org,
    },
}

impl RuleBook {
    /// Applies a change made at log position `pos`; returns the collection updates.
    pub fn apply(&mut self, pos: u64, change: RuleChange) -> Vec<(RuleVersion, isize)> {
        let mut diffs = Vec::new();
        match change {
            RuleChange::Create {
                org,
                rule_id,
                created_at,
                def,
                reprocess,
            } => {
                let v = RuleVersion {
                    org,
                    rule_id,
                    version: 1,
                    created_at,
                    from_pos: if reprocess { 0 } else { pos },
                    until_pos: None,
                    def: Arc::new(def),
                };
                diffs.push((v.clone(), 1));
                self.rules.insert(rule_id, vec![v]);
            }
            RuleChange::Update {
                rule_id,
                def,
                reprocess,
            } => {
                let Some(versions) = self.rules.get_mut(&rule_id) else {
                    return diffs;
                };
                let Some(last) = versions.last().cloned() else {
                    return diffs;
                };
                if last.until_pos.is_some() {
                    return diffs; // deleted
                }
                let mut next = RuleVersion {
                    version: last.version + 1,
                    def: Arc::new(def),
                    ..last.clone()
                };
                if reprocess {
                    // One version over the whole range of all earlier ones.
                    next.from_pos = versions[0].from_pos;
                    for v in versions.drain(..) {
                        diffs.push((v, -1));
                    }
                } else {
                    let closed = RuleVersion {
                        until_pos: Some(pos),
                        ..last.clone()
                    };
                    diffs.push((last, -1));
                    diffs.push((closed.clone(), 1));
                    *versions.last_mut().unwrap() = closed;
                    next.from_pos = pos;
                }
                diffs.push((next.clone(), 1));
                versions.push(next);
            }
            RuleChange::ProcessAll { org } => {
                for versions in self.rules.values_mut() {
                    let Some(last) = versions.last().cloned() else {
                        continue;
                    };
                    if last.org != org || last.until_pos.is_some() {
                        continue;
                    }
                    if versions.len() == 1 && last.from_pos == 0 {
                        continue; // already covers everything
                    }
                    for v in versions.drain(..) {
                        diffs.push((v, -1));
                    }
                    let next = RuleVersion {
                        version: last.version + 1,
                        from_pos: 0,
                        ..last
                    };
                    diffs.push((next.clone(), 1));
                    versions.push(next);
                }
            }
            RuleChange::Delete { rule_id } => {
                if let Some(versions) = self.rules.get_mut(&rule_id) {
                    if let Some(last) = versions.last().cloned().filter(|l| l.until_pos.is_none()) {
                        let closed = RuleVersion {
                            until_pos: Some(pos),
                            ..last.clone()
                        };
                        diffs.push((last, -1));
                        diffs.push((closed.clone(), 1));
                        *versions.last_mut().unwrap() = closed;
                    }
                }
            }
        }
        diffs
    }

    /// Every version currently in force somewhere.
    pub fn versions(&self) -> impl Iterator<Item = &RuleVersion> {
        self.rules.values().flatten()
    }

    /// The latest version of each rule (deleted ones included, with `until_pos`).
    pub fn latest(&self) -> impl Iterator<Item = &RuleVersion> {
        self.rules.values().filter_map(|v| v.last())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{run, shuffle_into_batches};
    use crate::types::SignalFields;
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
        let versions: Vec<RuleVersion> = book.versions().cloned().collect();
        let m = match_rules_reference(&signals, &versions);
        assert_eq!(
            (m[&(1, 15)].rule_name.as_ref(), m[&(1, 15)].version),
            ("New", 3)
        );
        assert!(
            !m.contains_key(&(1, 5)),
            "reprocess covers the rule's own range only"
        );
        // Manual processing: the rule now covers everything, its latest definition wins.
        book.apply(35, RuleChange::ProcessAll { org: 2 });
        let versions: Vec<RuleVersion> = book.versions().cloned().collect();
        assert!(
            !match_rules_reference(&signals, &versions).contains_key(&(1, 5)),
            "another org's processing changes nothing here"
        );
        book.apply(36, RuleChange::ProcessAll { org: 1 });
        let versions: Vec<RuleVersion> = book.versions().cloned().collect();
        let m = match_rules_reference(&signals, &versions);
        assert_eq!(
            (m[&(1, 5)].rule_name.as_ref(), m[&(1, 5)].version),
            ("New", 4)
        );
        assert_eq!(m[&(1, 25)].version, 4);
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
        S(Signal),
        R(RuleVersion),
    }

    fn arb_payload() -> impl Strategy<Value = Value> {
        (0u8..3, 0u8..3, 0i64..10, any::<bool>()).prop_map(|(e, plan, n, email)| {
            let mut p = json!({"event": format!("e{e}"), "properties": {"plan": format!("p{plan}"), "n": n}});
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
            let mut book = RuleBook::default();
            let mut inputs: Vec<(In, isize)> = Vec::new();
            let mut signals = Vec::new();
            for (i, item) in log.into_iter().enumerate() {
                let pos = i as u64 + 1;
                match item {
                    Ok(p) => {
                        let s = signal(pos, p);
                        signals.push(s.clone());
                        inputs.push((In::S(s), 1));
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
            let versions: Vec<RuleVersion> = book.versions().cloned().collect();
            let reference: Vec<(SignalKey, Match)> = match_rules_reference(&signals, &versions).into_iter().collect();
            for workers in [1, 2] {
                // Everything arrives shuffled, rule retractions included: the final state depends
                // only on the multiset of updates, which is what differential guarantees.
                let batches = shuffle_into_batches(&inputs, 3, seed);
                let got = run(workers, batches, |input| {
                    let signals = input.clone().flat_map(|i| if let In::S(s) = i { Some(s) } else { None });
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
}
