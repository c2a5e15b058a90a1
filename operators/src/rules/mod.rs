//! Mapping rules: which staged signals a rule processes, and what it extracts.
//!
//! Rules are data: an input collection of [`RuleVersion`]s joined with the staged signals of
//! their org. Each version applies to the signals whose log position lies in
//! `[from_pos, until_pos)`. An edit without reprocess closes the old version at the edit's
//! position and opens the new one there, so signals before the edit keep their result; an
//! edit with reprocess ends with one version that covers all of the org's history (also what
//! came before the rule was created, as a rule created with reprocess does), reached a slice
//! at a time, so differential re-derives exactly the signals whose match changes. A deletion
//! closes the last version. The config side turns rule events into these versions
//! ([`RuleBook`], in `book`); this module only evaluates them.
//!
//! Of the rules that match a signal, the one with the lowest `priority`, then the earliest
//! `created_at`, then the lowest id wins.

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

mod book;

pub use book::{RuleBook, RuleChange, SEGMENT_SIGNALS};

use crate::footprint::{Measured, MeasuredByKey};
use crate::ident::{IdKind, Org};
use crate::identity::SignalKey;
use crate::signal::Signal;

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
/// id: it links, but never creates a lead on its own.
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
/// ignore case; `gt`/`lt` compare numerically; a missing field fails
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
    if signal.org != rule.org || !in_force_at(rule, signal.pos) {
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
/// Each signal comes with its *segment*: the start of the stretch of its org's log it lies in
/// ([`RuleBook::stage`]). Rule versions begin and end only at segment starts, so every signal
/// of a segment sees the same versions in force. Signals are joined with the
/// rule set of their segment (all versions in force there, as one value), so the winner is
/// chosen inside the join without another arrangement; conditions and mappings look their
/// paths up in the payload's text ([`path::lookup`]) instead of parsing it.
///
/// An edit without reprocess ends a version at its position and starts another there: past
/// segments keep the same versions in force (a segment's set holds them without their
/// bounds, which only the segment's choice depends on), so their sets do not change and no
/// past signal is evaluated again; only the org's segments are revisited (one record per
/// [`SEGMENT_SIGNALS`] signals at most). An edit with
/// reprocess changes the versions in force in the segments each of its slices covers, and
/// re-evaluates their signals, as it must.
///
/// The output has one record per signal, matched or not (what comes next decides every
/// signal's status from it), so every segment with signals has a rule set, empty when no
/// rule is in force there: the set is reduced from its versions and one marker per segment.
pub fn match_rules<'s, T>(
    signals: VecCollection<'s, T, (u64, Signal), isize>,
    rules: VecCollection<'s, T, RuleVersion, isize>,
) -> VecCollection<'s, T, (Signal, Option<Arc<Match>>), isize>
where
    T: Timestamp + Lattice + TotalOrder,
{
    let segments = signals
        .clone()
        .map(|(seg, s)| (s.org, seg))
        .distinct_measured("RuleSegments");
    let by_segment = signals
        .map(|(seg, s)| ((s.org, seg), s))
        .arrange_by_key_measured("Arrange: SignalsBySegment");
    let in_force = segments
        .clone()
        .arrange_by_key_measured("Arrange: SegmentsByOrg")
        .join_core(
            rules
                .map(|r| (r.org, r))
                .arrange_by_key_measured("Arrange: RulesByOrg"),
            |org, seg, r: &RuleVersion| {
                in_force_at(r, *seg).then(|| {
                    let unbounded = RuleVersion {
                        from_pos: 0,
                        until_pos: None,
                        ..r.clone()
                    };
                    ((*org, *seg), Some(unbounded))
                })
            },
        );
    let rule_sets = in_force
        .concat(segments.map(|k| (k, None)))
        .reduce_measured("RuleSet", |_seg, versions, out| {
            let set: Vec<RuleVersion> = versions.iter().filter_map(|(r, _)| (*r).clone()).collect();
            out.push((set, 1));
        })
        .arrange_by_key_measured("Arrange: RuleSetBySegment");
    by_segment.join_core(rule_sets, |_seg, s: &Signal, set: &Vec<RuleVersion>| {
        #[cfg(test)]
        tests::EVALUATED.with(|n| n.set(n.get() + 1));
        let winner = set
            .iter()
            .filter_map(|r| evaluate(r, s))
            .min()
            .map(Arc::new);
        Some((s.clone(), winner))
    })
}

/// Whether `rule` is in force at log position `pos`.
fn in_force_at(rule: &RuleVersion, pos: u64) -> bool {
    rule.from_pos <= pos && rule.until_pos.is_none_or(|u| pos < u)
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

#[cfg(test)]
mod tests;
