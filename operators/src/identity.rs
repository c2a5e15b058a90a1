//! Identity resolution as connected components over identifiers (docs/ARCHITECTURE.md).
//!
//! Identifiers are nodes; two identifiers carried by the same signal are linked. Components
//! are found by label propagation (every node starts labelled by itself and ends labelled
//! by the smallest node it reaches). A component with a persistent
//! identifier is a lead, keyed by its smallest persistent identifier (emails sort first); one
//! without is anonymous, and its signals stay cold. Because all of this is maintained
//! incrementally, the moment an `identify` links an anonymous id to a lead, every earlier
//! signal of that anonymous id changes lead: that is rehydration, and it does not depend on
//! whether the identify came before or after the anonymous events.
//!
//! Guard rails against bad merges (our choices; the hosted product documents none):
//! - blocked identifier values (`null`, `undefined`, `anonymous`, `-1`, all zeros, empty, and
//!   whatever the config adds) are not identifiers at all;
//! - an identifier that co-occurs with more than `max_emails` distinct emails, or more than
//!   `max_user_ids` distinct user ids, is treated as shared (a family computer, a test
//!   account): its links to identifiers of that kind are refused and reported as conflicts,
//!   not merged. The rule looks only at co-occurrence sets, so it gives the same answer in
//!   any arrival order, which a "first N links win" rule would not.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::Hash;

use differential_dataflow::lattice::Lattice;
use differential_dataflow::operators::arrange::{Arranged, TraceAgent};
use differential_dataflow::operators::iterate::Variable;
use differential_dataflow::trace::implementations::{ValBuilder, ValSpine};
use differential_dataflow::VecCollection;
use serde::{Deserialize, Serialize};
use timely::order::{Product, TotalOrder};
use timely::progress::Timestamp;

use crate::footprint;
use crate::ident::{IdKind, Ident, Org};
use crate::nodes::Node;
use crate::signal::Signal;

/// A signal's key: (org, log position).
pub type SignalKey = (Org, u64);

/// Guard-rail settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityConfig {
    /// Extra blocked values (compared case-insensitively), on top of the built-in ones.
    pub blocked: Vec<String>,
    /// Most distinct emails one identifier may link to.
    pub max_emails: usize,
    /// Most distinct user ids one identifier may link to.
    pub max_user_ids: usize,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        IdentityConfig {
            blocked: Vec::new(),
            max_emails: 5,
            max_user_ids: 1,
        }
    }
}

const BUILTIN_BLOCKED: &[&str] = &[
    "null",
    "undefined",
    "anonymous",
    "none",
    "nil",
    "-1",
    "unknown",
];

impl IdentityConfig {
    /// Whether `value` may be an identifier.
    pub fn allows(&self, value: &str) -> bool {
        let v = value.trim();
        if v.is_empty() || v.bytes().all(|b| b == b'0' || b == b'-' || b == b'.') {
            return false;
        }
        // Checked for every identifier of every signal: compared without a lowercased copy.
        !BUILTIN_BLOCKED.iter().any(|b| b.eq_ignore_ascii_case(v))
            && !self.blocked.iter().any(|b| b.eq_ignore_ascii_case(v))
    }

    /// The most distinct identifiers of `kind` one identifier may link to (`None`: no limit).
    pub fn limit(&self, kind: IdKind) -> Option<usize> {
        match kind {
            IdKind::Email => Some(self.max_emails),
            IdKind::UserId => Some(self.max_user_ids),
            _ => None,
        }
    }
}

/// The (signal, identifier) facts of a signal, blocked values removed.
pub fn signal_idents(signal: &Signal, cfg: &IdentityConfig) -> Vec<(SignalKey, Ident)> {
    signal
        .ids
        .iter()
        .filter(|(_, v)| cfg.allows(v))
        .map(|(k, v)| {
            (
                (signal.org, signal.pos),
                Ident::new(signal.org, *k, v.clone()),
            )
        })
        .collect()
}

/// The identifiers a signal brings to the graph: those it carries and those its winning rule
/// extracted (`mapped`), blocked values removed, without duplicates, smallest first (by kind,
/// then text; persistent kinds sort first). The first is its *anchor*: a signal belongs to
/// the lead of its anchor.
pub fn signal_ids(signal: &Signal, mapped: &[(IdKind, String)], cfg: &IdentityConfig) -> Vec<Node> {
    let mut ids: Vec<(IdKind, &str, Node)> = signal
        .ids
        .iter()
        .zip(signal.nodes.iter())
        .filter(|((_, v), _)| cfg.allows(v))
        .map(|((k, v), n)| (*k, &**v, *n))
        .collect();
    for (k, v) in mapped {
        if cfg.allows(v) {
            ids.push((*k, v, Node::intern(signal.org, *k, v).0));
        }
    }
    if ids.len() > 1 {
        ids.sort_unstable();
        ids.dedup_by_key(|(_, _, n)| *n);
    }
    ids.into_iter().map(|(_, _, n)| n).collect()
}

/// The co-occurrences of one signal's identifiers: every ordered pair of two of them.
pub fn cooccurrences(ids: &[Node]) -> impl Iterator<Item = (Node, Node)> + '_ {
    ids.iter()
        .flat_map(move |&x| ids.iter().filter(move |&&y| y != x).map(move |&y| (x, y)))
}

/// What identity resolution maintains, over [`Node`]s.
pub struct Components<'s, T: Timestamp + Lattice> {
    /// Every identifier with its lead's key, or `None` when its component has no persistent
    /// identifier (an anonymous visitor): exactly one record per identifier, so that joining
    /// with it attributes every signal, pending ones included, without an outer join.
    pub node_lead: VecCollection<'s, T, (Node, Option<Node>), isize>,
    /// Every identifier of a lead, with the lead's key.
    pub membership: VecCollection<'s, T, (Node, Node), isize>,
    /// Identifiers whose links of some kind were refused, with that kind.
    pub conflicts: VecCollection<'s, T, (Node, IdKind), isize>,
}

/// Resolves identities: `nodes` holds each signal's identifiers ([`signal_ids`]) and `pairs`
/// their co-occurrences ([`cooccurrences`]), both with one copy per signal. Every step reads
/// only whether a node or pair is present, so both are made distinct here, before the label
/// propagation's iteration.
pub fn components<'s, T>(
    nodes: VecCollection<'s, T, Node, isize>,
    pairs: VecCollection<'s, T, (Node, Node), isize>,
    cfg: &IdentityConfig,
) -> Components<'s, T>
where
    T: Timestamp + Lattice + TotalOrder + Hash,
{
    let cooc = footprint::distinct(pairs, "Cooccurrences");

    // Identifiers linked to too many distinct identifiers of a limited kind.
    let cfg2 = cfg.clone();
    let conflicts = cooc
        .clone()
        .filter(move |(_, y)| cfg2.limit(y.kind()).is_some())
        .map(|(x, y)| (x, y.kind()));
    let conflicts = footprint::count_total(conflicts, "LinkedKinds")
        .filter({
            let cfg = cfg.clone();
            move |((_, kind), n)| *n as usize > cfg.limit(*kind).unwrap()
        })
        .map(|(xk, _)| xk);

    // Refuse a link when either end is shared for the other end's kind.
    let one_side = footprint::semijoin(
        cooc.clone().map(|(x, y)| ((x, y.kind()), y)),
        conflicts.clone(),
        "SharedLinks",
    )
    .map(|((x, _), y)| (x, y));
    let refused = footprint::distinct(
        one_side.clone().concat(one_side.map(|(x, y)| (y, x))),
        "RefusedLinks",
    );
    // The edges' arrangement consolidates them.
    let edges = cooc.concat(refused.negate());

    // Labels are the smallest node number of each component: any fixed choice names a
    // component; the lead's key below is chosen by text.
    // Each node once: signals repeat their identifiers (a visitor's anonymous id is on all of
    // its signals), and inside the iteration every repetition would re-run the node's label
    // reduce; outside it a repetition costs one cheap distinct.
    let labels = propagate(
        footprint::by_key(edges, "Arrange: Edges"),
        footprint::distinct(nodes, "Nodes").map(|n| (n, n)),
    );

    // A component's lead key: its smallest identifier when that is persistent (nodes sort by
    // kind first, persistent kinds first; among the smallest kind, by text), else none.
    let by_label = footprint::by_key(labels.map(|(n, c)| (c, n)), "Arrange: ByLabel");
    let component_lead = by_label
        .clone()
        .reduce_abelian::<_, ValBuilder<_, _, _, _>, ValSpine<Node, Option<Node>, T, isize>, _, _>(
            "LeadKey",
            |_c, members, out| {
                let kind = members[0].0.kind();
                let lead = kind.persistent().then(|| {
                    Node::smallest(
                        members
                            .iter()
                            .map(|(n, _)| **n)
                            .take_while(|n| n.kind() == kind),
                    )
                    .expect("a component has members")
                });
                out.push((lead, 1))
            },
            footprint::keyed_changes,
        );
    footprint::register("LeadKey", &component_lead.trace);
    let node_lead = by_label.join_core(component_lead, |_c, n, lead| Some((*n, *lead)));
    let membership = node_lead.clone().flat_map(|(n, lead)| lead.map(|l| (n, l)));

    Components {
        node_lead,
        membership,
        conflicts,
    }
}

/// Each node of `nodes` (`(node, itself)`) labelled with the smallest node it reaches along
/// `edges`: in each round, every node takes the least label among its own and those its
/// neighbours had, until no label changes. Differential's `propagate` does the same; this
/// one builds its arrangements through [`footprint`], so that their bytes are measured too.
fn propagate<'s, T>(
    edges: Arranged<'s, TraceAgent<ValSpine<Node, Node, T, isize>>>,
    nodes: VecCollection<'s, T, (Node, Node), isize>,
) -> VecCollection<'s, T, (Node, Node), isize>
where
    T: Timestamp + Lattice + Hash,
{
    let outer = nodes.scope();
    outer.scoped::<Product<T, u32>, _, _>("Propagate", |rounds| {
        let edges = edges.enter(rounds);
        let nodes = nodes.enter(rounds);
        let (next, offered) = Variable::new(rounds, Product::new(Default::default(), 1));
        let labels =
            footprint::reduce_arranged(offered.concat(nodes), "Propagate", |_node, offers, out| {
                out.push((*offers[0].0, 1))
            });
        next.set(
            labels
                .clone()
                .join_core(edges, |_node, label, neighbour| Some((*neighbour, *label))),
        );
        labels.as_collection(|n, l| (*n, *l)).leave(outer)
    })
}

/// What `logic` makes of each anchored record (`(anchor, value)`) and the lead of its anchor,
/// or `None`: `node_lead` has one record per identifier, so `logic` sees every record once.
/// When an identify links an anonymous id to a lead, every record anchored at it changes
/// lead here: that is rehydration.
pub fn attribute<'s, T, V, I, F>(
    anchored: VecCollection<'s, T, (Node, V), isize>,
    node_lead: VecCollection<'s, T, (Node, Option<Node>), isize>,
    mut logic: F,
) -> VecCollection<'s, T, I::Item, isize>
where
    T: Timestamp + Lattice + TotalOrder,
    V: differential_dataflow::ExchangeData,
    I: IntoIterator,
    I::Item: differential_dataflow::Data,
    F: FnMut(&V, Option<Node>) -> I + 'static,
{
    footprint::by_key(anchored, "Arrange: ByAnchor").join_core(
        footprint::by_key(node_lead, "Arrange: NodeLead"),
        move |_a, v, lead| logic(v, *lead),
    )
}

/// Results of the sequential reference.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct IdentityReference {
    pub membership: BTreeSet<(Ident, Ident)>,
    pub signal_lead: BTreeSet<(SignalKey, Ident)>,
    pub conflicts: BTreeSet<(Ident, IdKind)>,
}

/// Sequential reference: the same rules with plain maps and a union-find.
pub fn resolve_reference(facts: &[(SignalKey, Ident)], cfg: &IdentityConfig) -> IdentityReference {
    let mut by_signal: BTreeMap<SignalKey, BTreeSet<Ident>> = BTreeMap::new();
    for (sk, id) in facts {
        by_signal.entry(*sk).or_default().insert(id.clone());
    }
    let mut cooc: BTreeSet<(Ident, Ident)> = BTreeSet::new();
    for ids in by_signal.values() {
        for x in ids {
            for y in ids {
                if x != y {
                    cooc.insert((x.clone(), y.clone()));
                }
            }
        }
    }
    let mut counts: BTreeMap<(Ident, IdKind), usize> = BTreeMap::new();
    for (x, y) in &cooc {
        if cfg.limit(y.kind).is_some() {
            *counts.entry((x.clone(), y.kind)).or_default() += 1;
        }
    }
    let conflicts: BTreeSet<(Ident, IdKind)> = counts
        .into_iter()
        .filter(|((_, k), n)| *n > cfg.limit(*k).unwrap())
        .map(|(xk, _)| xk)
        .collect();
    let refused = |x: &Ident, y: &Ident| {
        conflicts.contains(&(x.clone(), y.kind)) || conflicts.contains(&(y.clone(), x.kind))
    };

    let nodes: BTreeSet<Ident> = facts.iter().map(|(_, n)| n.clone()).collect();
    let index: BTreeMap<&Ident, usize> = nodes.iter().enumerate().map(|(i, n)| (n, i)).collect();
    let mut parent: Vec<usize> = (0..nodes.len()).collect();
    fn find(p: &mut [usize], mut i: usize) -> usize {
        while p[i] != i {
            p[i] = p[p[i]];
            i = p[i];
        }
        i
    }
    for (x, y) in &cooc {
        if !refused(x, y) {
            let (a, b) = (find(&mut parent, index[x]), find(&mut parent, index[y]));
            parent[a.max(b)] = a.min(b);
        }
    }
    let node_list: Vec<&Ident> = nodes.iter().collect();
    let mut lead_of_root: BTreeMap<usize, Ident> = BTreeMap::new();
    for (i, n) in node_list.iter().enumerate() {
        if n.kind.persistent() {
            let r = find(&mut parent, i);
            let e = lead_of_root.entry(r).or_insert_with(|| (*n).clone());
            if **n < *e {
                *e = (*n).clone();
            }
        }
    }
    let mut out = IdentityReference {
        conflicts,
        ..Default::default()
    };
    let mut lead_of: BTreeMap<&Ident, Ident> = BTreeMap::new();
    for (i, n) in node_list.iter().enumerate() {
        if let Some(l) = lead_of_root.get(&find(&mut parent, i)) {
            out.membership.insert(((*n).clone(), l.clone()));
            lead_of.insert(n, l.clone());
        }
    }
    for (sk, ids) in &by_signal {
        let anchor = ids.iter().next().unwrap();
        if let Some(l) = lead_of.get(anchor) {
            out.signal_lead.insert((*sk, l.clone()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{run, shuffle_into_batches};
    use proptest::prelude::*;

    fn id(kind: IdKind, v: &str) -> Ident {
        Ident::new(1, kind, v)
    }

    /// Resolution over facts as the graph does it: each signal's identifiers (gathered here
    /// by a reduce, where the graph has them on the signal) give its nodes, its
    /// co-occurrences and its anchor; the outputs name identifiers again.
    struct Resolved<'s> {
        membership: VecCollection<'s, u64, (Ident, Ident), isize>,
        signal_lead: VecCollection<'s, u64, (SignalKey, Ident), isize>,
        conflicts: VecCollection<'s, u64, (Ident, IdKind), isize>,
    }

    fn resolve<'s>(
        facts: VecCollection<'s, u64, (SignalKey, Ident), isize>,
        cfg: &IdentityConfig,
    ) -> Resolved<'s> {
        let facts = facts.map(|(sk, i)| (sk, Node::of(&i)));
        let ids = facts.clone().reduce(|_sk, ids, out| {
            let mut ids: Vec<Node> = ids.iter().map(|(n, _)| **n).collect();
            let anchor = Node::smallest(ids.iter().copied()).unwrap();
            ids.retain(|n| *n != anchor);
            ids.insert(0, anchor);
            out.push((ids, 1))
        });
        let nodes = facts.map(|(_, n)| n);
        let pairs = ids
            .clone()
            .flat_map(|(_, ids)| cooccurrences(&ids).collect::<Vec<_>>());
        let c = components(nodes, pairs, cfg);
        let signal_lead = attribute(
            ids.map(|(sk, ids)| (ids[0], sk)),
            c.node_lead,
            |sk, lead| lead.map(|l| (*sk, l.ident())),
        );
        Resolved {
            membership: c.membership.map(|(n, l)| (n.ident(), l.ident())),
            signal_lead,
            conflicts: c.conflicts.map(|(n, k)| (n.ident(), k)),
        }
    }

    fn dataflow_results(
        facts: &[(SignalKey, Ident)],
        workers: usize,
        seed: u64,
        cfg: &IdentityConfig,
    ) -> IdentityReference {
        let batches: Vec<Vec<((SignalKey, Ident), isize)>> = shuffle_into_batches(facts, 3, seed)
            .into_iter()
            .map(|b| b.into_iter().map(|f| (f, 1)).collect())
            .collect();
        let (c1, c2, c3) = (cfg.clone(), cfg.clone(), cfg.clone());
        let membership = run(workers, batches.clone(), move |f| {
            resolve(f, &c1).membership
        });
        let signal_lead = run(workers, batches.clone(), move |f| {
            resolve(f, &c2).signal_lead
        });
        let conflicts = run(workers, batches, move |f| resolve(f, &c3).conflicts);
        IdentityReference {
            membership: set(membership),
            signal_lead: set(signal_lead),
            conflicts: set(conflicts),
        }
    }

    fn set<D: Ord>(v: Vec<(D, isize)>) -> BTreeSet<D> {
        assert!(v.iter().all(|(_, r)| *r == 1), "every result exactly once");
        v.into_iter().map(|(d, _)| d).collect()
    }

    #[test]
    fn identify_before_or_after_anonymous_events_gives_one_lead() {
        let facts = vec![
            ((1, 1), id(IdKind::AnonymousId, "A1")),
            ((1, 2), id(IdKind::AnonymousId, "A1")),
            ((1, 3), id(IdKind::AnonymousId, "A1")),
            ((1, 4), id(IdKind::AnonymousId, "A1")),
            ((1, 4), id(IdKind::Email, "x@y.com")),
            ((1, 5), id(IdKind::AnonymousId, "A2")),
            ((1, 6), id(IdKind::AnonymousId, "A2")),
            ((1, 6), id(IdKind::Email, "x@y.com")),
            ((1, 7), id(IdKind::AnonymousId, "A3")),
        ];
        let cfg = IdentityConfig::default();
        let reference = resolve_reference(&facts, &cfg);
        let lead = id(IdKind::Email, "x@y.com");
        let attributed: Vec<u64> = reference
            .signal_lead
            .iter()
            .filter(|(_, l)| *l == lead)
            .map(|(sk, _)| sk.1)
            .collect();
        assert_eq!(
            attributed,
            vec![1, 2, 3, 4, 5, 6],
            "both devices' history joins the lead; A3 stays cold"
        );
        for seed in [1, 2, 3] {
            for workers in [1, 2] {
                assert_eq!(
                    dataflow_results(&facts, workers, seed, &cfg),
                    reference,
                    "seed {seed}, {workers} workers"
                );
            }
        }
    }

    #[test]
    fn blocked_and_shared_identifiers_do_not_merge_people() {
        let facts = vec![
            // A blocked anonymous id seen with two different people.
            ((1, 1), id(IdKind::AnonymousId, "anonymous")),
            ((1, 1), id(IdKind::Email, "a@x.io")),
            ((1, 2), id(IdKind::AnonymousId, "anonymous")),
            ((1, 2), id(IdKind::Email, "b@x.io")),
            // A shared device id seen with two user ids (limit 1).
            ((1, 3), id(IdKind::DeviceId, "kiosk")),
            ((1, 3), id(IdKind::UserId, "u1")),
            ((1, 4), id(IdKind::DeviceId, "kiosk")),
            ((1, 4), id(IdKind::UserId, "u2")),
        ];
        let cfg = IdentityConfig::default();
        let facts: Vec<_> = facts
            .into_iter()
            .filter(|(_, i)| cfg.allows(&i.value))
            .collect();
        let r = resolve_reference(&facts, &cfg);
        let leads: BTreeSet<&Ident> = r.membership.iter().map(|(_, l)| l).collect();
        assert_eq!(leads.len(), 4, "a, b, u1, u2 stay four people: {leads:?}");
        assert!(r
            .conflicts
            .contains(&(id(IdKind::DeviceId, "kiosk"), IdKind::UserId)));
        for workers in [1, 2] {
            assert_eq!(dataflow_results(&facts, workers, 7, &cfg), r);
        }
    }

    #[test]
    fn blocked_values() {
        let cfg = IdentityConfig {
            blocked: vec!["guest".into()],
            ..Default::default()
        };
        for v in [
            "",
            "  ",
            "null",
            "NULL",
            "undefined",
            "anonymous",
            "-1",
            "0",
            "0000-0000",
            "guest",
            "GUEST",
        ] {
            assert!(!cfg.allows(v), "{v:?} is blocked");
        }
        for v in ["A1", "x@y.com", "10", "u-0"] {
            assert!(cfg.allows(v), "{v:?} is allowed");
        }
    }

    fn arb_facts() -> impl Strategy<Value = Vec<(SignalKey, Ident)>> {
        let kinds = prop_oneof![
            Just(IdKind::Email),
            Just(IdKind::UserId),
            Just(IdKind::AnonymousId),
            Just(IdKind::AnonymousId),
            Just(IdKind::DeviceId),
            Just(IdKind::CrmId),
        ];
        // Few orgs, few values per kind, so that links and merges are frequent.
        let fact = (1u64..3, 0u64..30, kinds, 0u8..6).prop_map(|(org, pos, kind, v)| {
            (
                (org, pos),
                Ident::new(org, kind, format!("{}{v}", kind.as_str())),
            )
        });
        proptest::collection::vec(fact, 0..60)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn matches_reference_in_any_order_and_worker_count(facts in arb_facts(), seed in any::<u64>()) {
            // Facts repeat here (few values per kind): resolution must not count them.
            let cfg = IdentityConfig { max_emails: 2, max_user_ids: 1, ..Default::default() };
            let reference = resolve_reference(&facts, &cfg);
            for workers in [1, 2] {
                prop_assert_eq!(&dataflow_results(&facts, workers, seed, &cfg), &reference);
            }
        }
    }
}
