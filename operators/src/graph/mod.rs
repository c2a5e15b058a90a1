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
//! reads the log (see `trailspark_core::dedup`) and passes, as `counted`, one raw-signal count for
//! every signal read (copies included) and one staged-signal count for every first copy.
//! Those two meters are counted where the log is read, not from `unique`, because `unique`
//! is the *hot* set: the engine takes anonymous signals that wait too long out of it (the
//! hot window) and puts them back when an identify names them, and neither may move a meter.
//! For the same reason a signal that waits cold (pending) is in no signal group: the product
//! keeps anonymous signals out of staging until they are identified, and groups are buckets
//! of staged signals.
//!
//! The per-record decisions (a signal's status, a group's row, a lead's profile) are plain
//! functions in the operators' own modules ([`crate::status`], [`crate::groups`],
//! [`crate::leads`], [`crate::usage`]), shared with the sequential reference
//! ([`reference`]), which checks the plumbing around them.

pub mod reference;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use differential_dataflow::lattice::Lattice;
use differential_dataflow::{AsCollection, VecCollection};
use serde::{Deserialize, Serialize};
use timely::dataflow::operators::vec::Partition;
use timely::order::TotalOrder;
use timely::progress::Timestamp;

use crate::eligibility::Activity;
use crate::groups::{member, signal_groups, GroupKey, GroupRow, Member};
use crate::ident::{IdKind, Ident, Org};
use crate::identity::{
    attribute, components, cooccurrences, signal_ids, IdentityConfig, SignalKey,
};
use crate::leads::{activity, lead_fact, lead_profiles, LeadFact, LeadProfile};
use crate::nodes::Node;
use crate::rules::{match_rules, Match, RuleVersion};
use crate::signal::Signal;
use crate::status::{cold, derive_status, Processed, Status};
use crate::usage::{usage, Meter};

pub use self::reference::{reference, State};

/// Everything the dataflow maintains.
pub struct Outputs<'s, T: Timestamp + Lattice> {
    pub processed: VecCollection<'s, T, (SignalKey, Processed), isize>,
    pub membership: VecCollection<'s, T, (Ident, Ident), isize>,
    pub conflicts: VecCollection<'s, T, (Ident, IdKind), isize>,
    pub groups: VecCollection<'s, T, ((Org, GroupKey), GroupRow), isize>,
    pub usage: VecCollection<'s, T, ((Org, u32, Meter), isize), isize>,
    pub leads: VecCollection<'s, T, (Ident, LeadProfile), isize>,
    /// Every lead's mapped signals, for [`crate::eligibility`].
    pub activity: VecCollection<'s, T, (Ident, Activity), isize>,
}

/// Builds the dataflow over the log's hot unique signals (first copies, each with its rule
/// segment: [`crate::rules::RuleBook::segment`]), the counts of the meters kept where the
/// log is read (`(org, YYYYMM, RawSignals | StagedSignals)`) and the rule versions.
///
/// Each signal flows through two arrangements of its own: by rule segment, for the rules
/// (re-matched on a rule edit with reprocess), and by anchor (its smallest identifier), for
/// its lead (re-attributed when an identify links its anchor to a lead). Its status is a function of the three (signal,
/// winner, lead), computed where they meet, so there is no per-signal reduce; lead profiles
/// and signal groups aggregate what comes out of it.
pub fn build<'s, T>(
    unique: VecCollection<'s, T, (u64, Signal), isize>,
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

    // Lead profiles from attributed signals, and their mapped signals for eligibility.
    let facts = facts.flat_map(|p| match p {
        Part::Fact(l, f) => Some((l, f)),
        _ => None,
    });
    let activity = facts
        .clone()
        .flat_map(|(l, f)| activity(&f).map(|a| (l.ident(), a)));
    let leads = lead_profiles(facts);

    // Usage per org and month.
    let usage = usage(
        counted,
        processed.clone(),
        active.flat_map(|p| match p {
            Part::Active(org, month, l) => Some((org, month, l)),
            _ => None,
        }),
    );

    // Signal groups: every signal that does not wait cold, mapped when a rule matches it.
    let groups = signal_groups(members.flat_map(|p| match p {
        Part::Member(k, m) => Some((k, m)),
        _ => None,
    }));

    Outputs {
        processed,
        membership: identity
            .membership
            .map(|(n, lead)| (n.ident(), lead.ident())),
        conflicts: identity.conflicts.map(|(n, kind)| (n.ident(), kind)),
        groups,
        usage,
        leads,
        activity,
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
