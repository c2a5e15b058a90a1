//! The whole dataflow, assembled from the operators: from the log's signals and the rule
//! versions to everything the read models show.
//!
//! ```text
//! unique ───────────────────┬─ match_rules(rules) ─ winner ──┬───────────────┐
//!                           ├─ identifiers ──┐               │ mapped ids    │
//!                           │                └─ resolve ◄────┘               │
//!                           │                    │ signal_lead               │
//!                           └────────────────────┴──► status ◄───────────────┘
//!                                                      ├─► usage, lead profiles
//!                           unique + status (not pending) ─► signal groups
//! counted (org, month, meter) ───────────────────────────────► usage
//! ```
//!
//! `unique` holds the first copy of each (org, dedup key) only: the engine deduplicates as it
//! reads the log (see [`crate::dedup`]) and passes, as `counted`, one raw-signal count for
//! every signal read (copies included) and one staged-signal count for every first copy.
//! Those two meters are counted where the log is read, not from `unique`, because `unique`
//! is the *hot* set: the engine takes anonymous signals that wait too long out of it (the
//! hot window) and puts them back when an identify names them, and neither may move a meter.
//! For the same reason a signal that waits cold (pending) is in no signal group: spec 7.2
//! keeps anonymous signals out of staging until they are identified, and groups are buckets
//! of staged signals.
//!
//! The per-record decisions (a signal's status, a group's row, a lead's profile) are plain
//! functions shared with the sequential reference, which checks the plumbing around them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use differential_dataflow::lattice::Lattice;
use differential_dataflow::operators::CountTotal;
use differential_dataflow::{AsCollection, VecCollection};
use serde::{Deserialize, Serialize};
use timely::dataflow::operators::vec::Partition;
use timely::order::TotalOrder;
use timely::progress::Timestamp;

use crate::dedup::dedup_reference;
use crate::groups::GroupKey;
use crate::identity::{
    attribute, components, cooccurrences, resolve_reference, signal_idents, signal_ids,
    IdentityConfig, SignalKey,
};
use crate::nodes::Node;
use crate::rules::{match_rules, match_rules_reference, Match, RuleVersion, SignalType};
use crate::types::{IdKind, Ident, Org, Signal};

/// Processing status (spec 6.2). `Pending` is a signal held cold: anonymous, not yet
/// attributable to a lead.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pending,
    Completed,
    Failed,
    Skipped,
}

/// What processing made of one staged signal.
///
/// Its text is shared (`Arc<str>`) with the signal, the rule match and, for the two fixed
/// error messages, one copy per worker: there is one of these per signal in the status arrangement and in the read
/// models, and a `String` per field made each of them, and each clone, a heap copy.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Processed {
    pub status: Status,
    /// `No identifying field`, `Invalid path`, or `Rule not found` (spec 11).
    pub error: Option<Arc<str>>,
    pub rule_id: Option<u64>,
    pub rule_name: Option<Arc<str>>,
    pub signal_type: Option<SignalType>,
    pub high_intent: bool,
    pub lead: Option<Ident>,
    pub source: Arc<str>,
    pub event_type: Arc<str>,
    pub received_at: i64,
    pub event_at: i64,
}

thread_local! {
    // Every unmapped signal is skipped with the same message: one shared copy per worker.
    static RULE_NOT_FOUND: Arc<str> = Arc::from("Rule not found");
    static NO_IDENTIFYING_FIELD: Arc<str> = Arc::from("No identifying field");
}

/// Whether `s` may wait cold for an identify: it carries an anonymous id that is an identifier
/// (not a blocked value).
fn cold(s: &Signal, cfg: &IdentityConfig) -> bool {
    s.ids
        .iter()
        .any(|(k, v)| *k == IdKind::AnonymousId && cfg.allows(v))
}

/// Decides a signal's status from what is known about it (see `Status`).
pub fn derive_status(
    signal: &Signal,
    cold: bool,
    winner: Option<&Match>,
    lead: Option<&Ident>,
) -> Processed {
    let (status, error) = match (winner, lead) {
        (Some(m), _) if m.error.is_some() => (Status::Failed, m.error.as_deref().map(Arc::from)),
        (Some(_), Some(_)) => (Status::Completed, None),
        (_, None) if cold => (Status::Pending, None),
        (Some(_), None) => (Status::Failed, Some(NO_IDENTIFYING_FIELD.with(Arc::clone))),
        (None, _) => (Status::Skipped, Some(RULE_NOT_FOUND.with(Arc::clone))),
    };
    Processed {
        status,
        error,
        rule_id: winner.map(|m| m.rule_id),
        rule_name: winner.map(|m| m.rule_name.clone()),
        signal_type: winner.map(|m| m.signal_type),
        high_intent: winner.is_some_and(|m| m.high_intent),
        lead: lead.cloned(),
        source: signal.source.clone(),
        event_type: signal.event_type.clone(),
        received_at: signal.received_at,
        event_at: signal.event_at,
    }
}

/// A signal group's row.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct GroupRow {
    pub count: u64,
    /// Signals of the group that no rule maps; 0 puts the group on the mapped tab.
    pub unmapped: u64,
    pub first_seen: i64,
    pub last_seen: i64,
    /// The sample: a signal with an email when the group has one (spec 8), else the earliest.
    pub sample_pos: u64,
    /// Whether the sample lacks an email (so partial rows can be merged by the same rule).
    pub sample_no_email: bool,
    pub sample: Arc<str>,
}

/// One signal as a group member: (mapped, no email?, position, received at, payload). The
/// tuple order makes "has an email, then earliest" the minimum.
pub type Member = (bool, (bool, u64, i64, Arc<str>));

pub fn group_row(members: &[&Member]) -> GroupRow {
    let sample = members
        .iter()
        .map(|(_, m)| m)
        .min()
        .expect("groups are not empty");
    GroupRow {
        count: members.len() as u64,
        unmapped: members.iter().filter(|(mapped, _)| !mapped).count() as u64,
        first_seen: members.iter().map(|(_, m)| m.2).min().unwrap(),
        last_seen: members.iter().map(|(_, m)| m.2).max().unwrap(),
        sample_pos: sample.1,
        sample_no_email: sample.0,
        sample: sample.3.clone(),
    }
}

/// Merges the rows of disjoint parts of one group into the group's row: equal to
/// `group_row` over all the members.
pub fn merge_rows(rows: &[&GroupRow]) -> GroupRow {
    let sample = rows
        .iter()
        .min_by_key(|r| (r.sample_no_email, r.sample_pos))
        .expect("groups are not empty");
    GroupRow {
        count: rows.iter().map(|r| r.count).sum(),
        unmapped: rows.iter().map(|r| r.unmapped).sum(),
        first_seen: rows.iter().map(|r| r.first_seen).min().unwrap(),
        last_seen: rows.iter().map(|r| r.last_seen).max().unwrap(),
        sample_pos: sample.sample_pos,
        sample_no_email: sample.sample_no_email,
        sample: sample.sample.clone(),
    }
}

/// Groups are aggregated in three levels over ranges of log positions: the members of each
/// range of `2^GROUP_FINE_BITS` positions, those rows per range of `2^GROUP_COARSE_BITS`, and
/// those rows per group. Positions grow with the log, so new members land in the newest
/// range: an epoch re-reads at most the fine ranges it touches, 64 rows per coarse range and
/// one row per coarse range of the log, however large the group. Old ranges change only when
/// an old member does (an identify, a rule edit).
///
/// (Buckets by `pos % 128` did not: consecutive positions spread over every bucket, so each
/// epoch re-read every bucket, i.e. the whole group; the cost grew with the square of the log.)
const GROUP_FINE_BITS: u32 = 12;
const GROUP_COARSE_BITS: u32 = 18;

fn member(s: &Signal, mapped: bool) -> ((Org, Arc<GroupKey>), Member) {
    let has_email = s.ids.iter().any(|(k, _)| *k == IdKind::Email);
    (
        (s.org, s.group_key.clone()),
        (
            mapped,
            (!has_email, s.pos, s.received_at, s.payload.clone()),
        ),
    )
}

/// Usage meters, counted per org and calendar month (spec 14).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Meter {
    /// Every signal on the log (retries the edge recognised never reach it).
    RawSignals,
    /// Unique staged signals.
    StagedSignals,
    /// Completed (mapped) signals.
    MappedSignals,
    /// Leads with at least one signal in the month.
    Leads,
}

/// What a lead's profile is made of, per attributed signal.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LeadFact {
    pub event_at: i64,
    pub pos: u64,
    pub signal_type: Option<SignalType>,
    /// Shared, like the signal's text: a fact lives in the status and the lead arrangements.
    pub traits: Arc<[(String, String)]>,
    pub product_org: Option<Arc<str>>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LeadProfile {
    pub signals: u64,
    pub first_activity: i64,
    pub last_activity: i64,
    /// Completed signals by rule signal type.
    pub by_type: Vec<(SignalType, u64)>,
    /// Merged traits: per key, the value of the latest signal by event time (then position).
    pub traits: Vec<(String, String)>,
    /// The latest product org named by the lead's signals.
    pub product_org: Option<String>,
}

pub fn profile(facts: &[&LeadFact]) -> LeadProfile {
    let mut ordered: Vec<&&LeadFact> = facts.iter().collect();
    ordered.sort_by_key(|f| (f.event_at, f.pos));
    // Borrowed while merging, copied once at the end: a profile is recomputed over all of a
    // lead's facts whenever one changes.
    let mut traits: BTreeMap<&str, &str> = BTreeMap::new();
    let mut by_type = BTreeMap::new();
    let mut product_org = None;
    for f in &ordered {
        for (k, v) in f.traits.iter() {
            traits.insert(k, v);
        }
        if let Some(t) = f.signal_type {
            *by_type.entry(t).or_insert(0u64) += 1;
        }
        if f.product_org.is_some() {
            product_org = f.product_org.as_deref();
        }
    }
    LeadProfile {
        signals: facts.len() as u64,
        first_activity: ordered.first().map_or(0, |f| f.event_at),
        last_activity: ordered.last().map_or(0, |f| f.event_at),
        by_type: by_type.into_iter().collect(),
        traits: traits
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        product_org: product_org.map(str::to_string),
    }
}

fn lead_fact(s: &Signal, p: &Processed, rule_fields: &[(String, String)]) -> LeadFact {
    let traits = if rule_fields.is_empty() {
        s.traits.clone()
    } else {
        let mut traits = s.traits.to_vec();
        for (k, v) in rule_fields {
            traits.retain(|(key, _)| key != k);
            traits.push((k.clone(), v.clone()));
        }
        traits.sort();
        Arc::from(traits)
    };
    LeadFact {
        event_at: s.event_at,
        pos: s.pos,
        signal_type: if p.status == Status::Completed {
            p.signal_type
        } else {
            None
        },
        traits,
        product_org: s.product_org.clone(),
    }
}

/// Everything the dataflow maintains.
pub struct Outputs<'s, T: Timestamp + Lattice> {
    pub processed: VecCollection<'s, T, (SignalKey, Processed), isize>,
    pub membership: VecCollection<'s, T, (Ident, Ident), isize>,
    pub conflicts: VecCollection<'s, T, (Ident, IdKind), isize>,
    pub groups: VecCollection<'s, T, ((Org, GroupKey), GroupRow), isize>,
    pub usage: VecCollection<'s, T, ((Org, u32, Meter), isize), isize>,
    pub leads: VecCollection<'s, T, (Ident, LeadProfile), isize>,
}

/// Builds the dataflow over the log's hot unique signals (first copies), the counts of the
/// meters kept where the log is read (`(org, YYYYMM, RawSignals | StagedSignals)`) and the
/// rule versions.
///
/// Each signal flows through two arrangements of its own: by org, for the rules (re-matched on
/// a rule edit), and by anchor (its smallest identifier), for its lead (re-attributed when an
/// identify links its anchor to a lead). Its status is a function of the three (signal,
/// winner, lead), computed where they meet, so there is no per-signal reduce; lead profiles
/// and signal groups aggregate what comes out of it.
pub fn build<'s, T>(
    unique: VecCollection<'s, T, Signal, isize>,
    counted: VecCollection<'s, T, (Org, u32, Meter), isize>,
    rules: VecCollection<'s, T, RuleVersion, isize>,
    cfg: &IdentityConfig,
) -> Outputs<'s, T>
where
    T: Timestamp + Lattice + TotalOrder + std::hash::Hash,
{
    // Every signal with its winning rule (or none).
    let evaluated = match_rules(unique, rules);

    // The identity graph: each signal's identifiers (its own and those its rule extracted)
    // are nodes, and each pair of them an edge; the signal is anchored at the smallest.
    let c = cfg.clone();
    let routed = evaluated.flat_map(move |(s, m)| {
        let mapped = m.as_ref().map_or(&[][..], |m| &m.ids[..]);
        let ids = signal_ids(&s, mapped, &c);
        let mut out: Vec<Routed> = Vec::with_capacity(ids.len() * ids.len() + 1);
        out.extend(cooccurrences(&ids).map(|(x, y)| Routed::Pair(x, y)));
        out.extend(ids.iter().map(|n| Routed::Node(*n)));
        out.push(match ids.first() {
            Some(a) => Routed::Anchored(*a, (s, m)),
            None => Routed::Unanchored((s, m)),
        });
        out
    });
    let [nodes, pairs, anchored, unanchored] = split(routed, Routed::part);
    let identity = components(
        nodes.flat_map(Routed::node),
        pairs.flat_map(Routed::pair),
        cfg,
    );

    // Each signal with its lead (through its anchor, or none when it carries no identifier),
    // and the status decided from it, in the join that brings the lead.
    let c = cfg.clone();
    let decided = attribute(
        anchored.flat_map(Routed::anchored),
        identity.node_lead,
        move |(s, m), lead| decide(s, m.as_deref(), lead, &c),
    );
    let c = cfg.clone();
    let decided = decided.concat(
        unanchored
            .flat_map(Routed::unanchored)
            .flat_map(move |(s, m)| decide(&s, m.as_deref(), None, &c)),
    );
    let [processed, facts, active, members] = split(decided, Part::part);
    let processed = processed.flat_map(|p| match p {
        Part::Processed(k, p) => Some((k, p)),
        _ => None,
    });

    // Lead profiles from attributed signals.
    let leads = facts
        .flat_map(|p| match p {
            Part::Fact(l, f) => Some((l, f)),
            _ => None,
        })
        .reduce_named("LeadProfile", |_lead, facts, out| {
            let facts: Vec<&LeadFact> = facts.iter().map(|(f, _)| *f).collect();
            out.push((profile(&facts), 1));
        })
        .map(|(lead, p): (Node, LeadProfile)| (lead.ident(), p));

    // Usage per org and month.
    let month = Signal::month_of;
    let usage = counted
        .concat(
            processed
                .clone()
                .filter(|(_, p)| p.status == Status::Completed)
                .map(move |((org, _), p)| (org, month(p.received_at), Meter::MappedSignals)),
        )
        .concat(
            active
                .flat_map(|p| match p {
                    Part::Active(org, month, l) => Some((org, month, l)),
                    _ => None,
                })
                .distinct()
                .map(|(org, m, _)| (org, m, Meter::Leads)),
        )
        // `count_total` keeps counts incrementally (times are totally ordered); `count` would
        // re-read every signal of the org and month on each change.
        .count_total();

    // Signal groups: every signal that does not wait cold, mapped when a rule matches it.
    let groups = members
        .flat_map(|p| match p {
            Part::Member(k, m) => Some(((k, m.1 .1 >> GROUP_FINE_BITS), m)),
            _ => None,
        })
        .reduce_named("GroupRanges", |_k, members, out| {
            let members: Vec<&Member> = members.iter().map(|(m, _)| *m).collect();
            out.push((group_row(&members), 1));
        })
        .map(|((k, fine), row)| ((k, fine >> (GROUP_COARSE_BITS - GROUP_FINE_BITS)), row))
        .reduce_named("GroupCoarseRanges", |_k, rows, out| {
            let rows: Vec<&GroupRow> = rows.iter().map(|(r, _)| *r).collect();
            out.push((merge_rows(&rows), 1));
        })
        .map(|((k, _coarse), row)| (k, row))
        .reduce_named("Groups", |_k, rows, out| {
            let rows: Vec<&GroupRow> = rows.iter().map(|(r, _)| *r).collect();
            out.push((merge_rows(&rows), 1));
        })
        .map(|((org, k), row)| ((org, GroupKey::clone(&k)), row));

    Outputs {
        processed,
        membership: identity
            .membership
            .map(|(n, lead)| (n.ident(), lead.ident())),
        conflicts: identity.conflicts.map(|(n, kind)| (n.ident(), kind)),
        groups,
        usage,
        leads,
    }
}

/// What a signal's identifiers send to the identity graph and the lead join.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
enum Routed {
    Node(Node),
    Pair(Node, Node),
    Anchored(Node, Evaluated),
    Unanchored(Evaluated),
}

/// A signal with its winning rule.
type Evaluated = (Signal, Option<Arc<Match>>);

impl Routed {
    fn part(&self) -> usize {
        match self {
            Routed::Node(_) => 0,
            Routed::Pair(..) => 1,
            Routed::Anchored(..) => 2,
            Routed::Unanchored(_) => 3,
        }
    }
    fn node(self) -> Option<Node> {
        match self {
            Routed::Node(n) => Some(n),
            _ => None,
        }
    }
    fn pair(self) -> Option<(Node, Node)> {
        match self {
            Routed::Pair(x, y) => Some((x, y)),
            _ => None,
        }
    }
    fn anchored(self) -> Option<(Node, Evaluated)> {
        match self {
            Routed::Anchored(a, e) => Some((a, e)),
            _ => None,
        }
    }
    fn unanchored(self) -> Option<Evaluated> {
        match self {
            Routed::Unanchored(e) => Some(e),
            _ => None,
        }
    }
}

/// What one signal's decision sends downstream: its processed record, its fact for its
/// lead's profile and its lead's activity in the month (when it has a lead), its group
/// membership (unless it waits cold).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
enum Part {
    Processed(SignalKey, Processed),
    Fact(Node, LeadFact),
    Active(Org, u32, Node),
    Member((Org, Arc<GroupKey>), Member),
}

impl Part {
    fn part(&self) -> usize {
        match self {
            Part::Processed(..) => 0,
            Part::Fact(..) => 1,
            Part::Active(..) => 2,
            Part::Member(..) => 3,
        }
    }
}

/// Splits a collection into `N` by `part`, moving each record into its part (where a
/// `flat_map` per part would clone every record for each).
fn split<'s, T, D, const N: usize>(
    c: VecCollection<'s, T, D, isize>,
    part: fn(&D) -> usize,
) -> [VecCollection<'s, T, D, isize>; N]
where
    T: Timestamp,
    D: differential_dataflow::Data,
{
    let parts: Vec<_> = c
        .inner
        .partition(N as u64, move |(d, t, r)| (part(&d) as u64, (d, t, r)))
        .into_iter()
        .map(|s| s.as_collection())
        .collect();
    parts.try_into().ok().expect("one stream per part")
}

/// The status of signal `s` with its winning rule and lead, and what follows from it (the
/// dataflow's; the reference derives the same from the same functions).
fn decide(
    s: &Signal,
    winner: Option<&Match>,
    lead: Option<Node>,
    cfg: &IdentityConfig,
) -> impl Iterator<Item = Part> {
    let p = derive_status(s, cold(s, cfg), winner, lead.map(Node::ident).as_ref());
    let month = Signal::month_of(s.received_at);
    let fact = lead.map(|l| {
        let fields = winner.map_or(&[][..], |m| &m.fields[..]);
        Part::Fact(l, lead_fact(s, &p, fields))
    });
    let active = lead.map(|l| Part::Active(s.org, month, l));
    let member = (p.status != Status::Pending).then(|| {
        let (k, m) = member(s, winner.is_some());
        Part::Member(k, m)
    });
    [
        Some(Part::Processed((s.org, s.pos), p)),
        fact,
        active,
        member,
    ]
    .into_iter()
    .flatten()
}

/// The final state of every output, as plain sets (the reference's and the dataflow's).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct State {
    pub unique: BTreeSet<Signal>,
    pub processed: BTreeSet<(SignalKey, Processed)>,
    pub membership: BTreeSet<(Ident, Ident)>,
    pub groups: BTreeSet<((Org, GroupKey), GroupRow)>,
    pub usage: BTreeSet<((Org, u32, Meter), isize)>,
    pub leads: BTreeSet<(Ident, LeadProfile)>,
}

/// Sequential reference of [`build`].
pub fn reference(signals: &[Signal], rules: &[RuleVersion], cfg: &IdentityConfig) -> State {
    let unique = dedup_reference(signals);
    let winners = match_rules_reference(&unique, rules);
    let mut facts: Vec<(SignalKey, Ident)> =
        unique.iter().flat_map(|s| signal_idents(s, cfg)).collect();
    for ((org, pos), m) in &winners {
        for (k, v) in &m.ids {
            if cfg.allows(v) {
                facts.push(((*org, *pos), Ident::new(*org, *k, v.clone())));
            }
        }
    }
    facts.sort();
    facts.dedup();
    let identity = resolve_reference(&facts, cfg);
    let lead_of: BTreeMap<SignalKey, Ident> = identity.signal_lead.iter().cloned().collect();

    let mut state = State {
        unique: unique.iter().cloned().collect(),
        membership: identity.membership,
        ..Default::default()
    };
    let mut lead_facts: BTreeMap<Ident, Vec<LeadFact>> = BTreeMap::new();
    let mut usage: BTreeMap<(Org, u32, Meter), isize> = BTreeMap::new();
    let mut active: BTreeSet<(Org, u32, Ident)> = BTreeSet::new();
    let mut members: BTreeMap<(Org, Arc<GroupKey>), Vec<Member>> = BTreeMap::new();
    for s in signals {
        *usage
            .entry((s.org, Signal::month_of(s.received_at), Meter::RawSignals))
            .or_default() += 1;
    }
    for s in &unique {
        let key = (s.org, s.pos);
        let winner = winners.get(&key);
        let p = derive_status(s, cold(s, cfg), winner, lead_of.get(&key));
        let month = Signal::month_of(s.received_at);
        *usage
            .entry((s.org, month, Meter::StagedSignals))
            .or_default() += 1;
        if p.status == Status::Completed {
            *usage
                .entry((s.org, month, Meter::MappedSignals))
                .or_default() += 1;
        }
        if let Some(l) = &p.lead {
            active.insert((s.org, month, l.clone()));
            let fields = winner.map(|m| m.fields.clone()).unwrap_or_default();
            lead_facts
                .entry(l.clone())
                .or_default()
                .push(lead_fact(s, &p, &fields));
        }
        if p.status != Status::Pending {
            let (gk, m) = member(s, winner.is_some());
            members.entry(gk).or_default().push(m);
        }
        state.processed.insert((key, p));
    }
    for (org, month, _) in active {
        *usage.entry((org, month, Meter::Leads)).or_default() += 1;
    }
    state.usage = usage.into_iter().collect();
    state.leads = lead_facts
        .into_iter()
        .map(|(l, fs)| {
            let refs: Vec<&LeadFact> = fs.iter().collect();
            (l, profile(&refs))
        })
        .collect();
    state.groups = members
        .into_iter()
        .map(|(k, ms)| {
            let refs: Vec<&Member> = ms.iter().collect();
            ((k.0, GroupKey::clone(&k.1)), group_row(&refs))
        })
        .collect();
    state
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{
        Combinator, Condition, FieldMapping, LeadField, Op, Operand, RuleBook, RuleChange, RuleDef,
    };
    use crate::testing::{run, shuffle_into_batches};
    use proptest::prelude::*;
    use serde_json::{json, Value};

    #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
    enum In {
        S(Signal),
        Count((Org, u32, Meter)),
        R(RuleVersion),
    }

    /// A signal built the way the pipeline builds them: from a canonical record.
    fn signal(org: u64, pos: u64, received_at: i64, payload: Value) -> Signal {
        let ctx = trailspark_core::normalize::Context {
            org_id: trailspark_core::OrgId(org),
            api_key_id: 1,
            received_at,
            ..Default::default()
        };
        let rec = trailspark_core::normalize::normalize(&ctx, &payload, payload.to_string());
        Signal::from_record(pos, &rec)
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
            high_intent: false,
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
            let mut book = RuleBook::default();
            let mut inputs: Vec<(In, isize)> = Vec::new();
            let mut signals: Vec<Signal> = Vec::new();
            let mut rule_ids = Vec::new();
            // As the engine feeds it: first copies as signals, every copy as a raw count,
            // every first copy as a staged count.
            let mut seen = crate::dedup::FirstSeen::default();
            let mut unique = BTreeSet::new();
            let mut feed = |s: Signal, inputs: &mut Vec<(In, isize)>| {
                let month = Signal::month_of(s.received_at);
                inputs.push((In::Count((s.org, month, Meter::RawSignals)), 1));
                if seen.insert(s.org, s.dedup) {
                    inputs.push((In::Count((s.org, month, Meter::StagedSignals)), 1));
                    unique.insert(s.clone());
                    inputs.push((In::S(s), 1));
                }
            };
            for (i, step) in steps.into_iter().enumerate() {
                let pos = i as u64 + 1;
                match step {
                    Step::Event { org, visitor, kind, month, page } => {
                        let s = signal(org, pos, base + month as i64 * 40 * 86_400_000 + pos as i64, payload(visitor, kind, page));
                        signals.push(s.clone());
                        feed(s, &mut inputs);
                    }
                    Step::Retry => {
                        if let Some(last) = signals.last() {
                            let mut s = last.clone();
                            s.pos = pos;
                            signals.push(s.clone());
                            feed(s, &mut inputs);
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
            }
            let versions: Vec<RuleVersion> = book.versions().cloned().collect();
            let cfg = IdentityConfig::default();
            let expected = reference(&signals, &versions, &cfg);
            for workers in [1, 2] {
                let batches = shuffle_into_batches(&inputs, 3, seed);
                macro_rules! output {
                    ($field:ident) => {{
                        let got = run(workers, batches.clone(), |input| {
                            let signals = input.clone().flat_map(|i| if let In::S(s) = i { Some(s) } else { None });
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
                };
                prop_assert_eq!(&got.unique, &expected.unique);
                prop_assert_eq!(&got.processed, &expected.processed);
                prop_assert_eq!(&got.membership, &expected.membership);
                prop_assert_eq!(&got.groups, &expected.groups);
                prop_assert_eq!(&got.usage, &expected.usage);
                prop_assert_eq!(&got.leads, &expected.leads);
            }
        }
    }

    #[test]
    fn statuses() {
        let s = signal(1, 1, 0, json!({"anonymousId": "a"}));
        let m = Match {
            priority: 0,
            created_at: 0,
            rule_id: 9,
            version: 1,
            rule_name: "R".into(),
            signal_type: SignalType::FormFill,
            high_intent: true,
            error: None,
            ids: vec![],
            fields: vec![],
        };
        let lead = Ident::new(1, IdKind::Email, "x@y.io");
        assert_eq!(
            derive_status(&s, true, Some(&m), None).status,
            Status::Pending
        );
        assert_eq!(
            derive_status(&s, true, Some(&m), Some(&lead)).status,
            Status::Completed
        );
        let failed = derive_status(&s, false, Some(&m), None);
        assert_eq!(
            (failed.status, failed.error.as_deref()),
            (Status::Failed, Some("No identifying field"))
        );
        let skipped = derive_status(&s, false, None, Some(&lead));
        assert_eq!(
            (skipped.status, skipped.error.as_deref()),
            (Status::Skipped, Some("Rule not found"))
        );
        let bad = Match {
            error: Some("Invalid path".into()),
            ..m
        };
        assert_eq!(
            derive_status(&s, true, Some(&bad), Some(&lead))
                .error
                .as_deref(),
            Some("Invalid path")
        );
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
}
