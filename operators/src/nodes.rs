//! Identifiers as numbers inside the dataflow.
//!
//! Identity resolution keeps every identifier in several arrangements (the nodes and edges of
//! the label propagation, the labels by component, each node's lead, the signals by anchor),
//! and arrangements compare, clone and drop their records on every merge. As text
//! (`Ident`: org, kind, shared string) each comparison was a string compare behind a pointer
//! and each clone an atomic reference-count update; a profile of a replay found string
//! compares alone at 14% of the worker's time. So the dataflow numbers identifiers once, where
//! a signal is built or a rule extracts one, and carries the number, a [`Node`]: eight bytes,
//! copied and compared as an integer. The text is looked up where it is needed: to choose a
//! lead's key and a signal's anchor (the smallest identifier *by text*, as the documented order
//! is defined on identifiers, not on numbers) and in the outputs, which name identifiers.
//!
//! The table is the process's, shared by every engine and thread, and append-only: a number
//! is never reused for another identifier, so a signal rebuilt from the archive (the hot
//! window's moves) gets the numbers it had. It holds each distinct identifier once (its text
//! is shared with the signals that carry it), about as much as the per-thread text interning
//! it replaces held while the identifier was live.

use std::hash::{Hash, Hasher};
use std::sync::{Arc, LazyLock, RwLock};

use hashbrown::HashTable;
use rustc_hash::FxHasher;
use serde::{Deserialize, Serialize};

use crate::ident::{IdKind, Ident, Org};

/// An identifier, as a number into the process's table of identifiers. Its kind is in the top
/// bits, so nodes order by kind first (persistent kinds first), then by when they were first
/// seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Node(u64);

const KIND_SHIFT: u32 = 56;

const KINDS: [IdKind; 7] = [
    IdKind::Email,
    IdKind::UserId,
    IdKind::ProductUserId,
    IdKind::CrmId,
    IdKind::MapId,
    IdKind::AnonymousId,
    IdKind::DeviceId,
];

#[derive(Default)]
struct Table {
    /// By sequence number.
    idents: Vec<Ident>,
    /// The nodes, found by the hash of their identifier and compared through `idents`, so
    /// the index holds eight bytes a node instead of a second copy of each key.
    index: HashTable<Node>,
}

static TABLE: LazyLock<RwLock<Table>> = LazyLock::new(Default::default);

fn hash(org: Org, kind: IdKind, text: &str) -> u64 {
    let mut h = FxHasher::default();
    org.hash(&mut h);
    kind.hash(&mut h);
    text.hash(&mut h);
    h.finish()
}

impl Table {
    fn find(&self, h: u64, org: Org, kind: IdKind, text: &str) -> Option<Node> {
        self.index
            .find(h, |n| {
                let i = &self.idents[n.seq()];
                i.org == org && i.kind == kind && *i.value == *text
            })
            .copied()
    }
}

impl Node {
    /// The node of an identifier, numbered on first sight, with the table's copy of its text
    /// (share it rather than keeping another).
    pub fn intern(org: Org, kind: IdKind, text: &str) -> (Node, Arc<str>) {
        let h = hash(org, kind, text);
        {
            let t = TABLE.read().unwrap();
            if let Some(n) = t.find(h, org, kind, text) {
                return (n, t.idents[n.seq()].value.clone());
            }
        }
        let mut t = TABLE.write().unwrap();
        if let Some(n) = t.find(h, org, kind, text) {
            return (n, t.idents[n.seq()].value.clone());
        }
        let n = Node(((kind as u64) << KIND_SHIFT) | t.idents.len() as u64);
        let value: Arc<str> = Arc::from(text);
        t.idents.push(Ident::new(org, kind, value.clone()));
        let Table { idents, index } = &mut *t;
        index.insert_unique(h, n, |m| {
            let i = &idents[m.seq()];
            hash(i.org, i.kind, &i.value)
        });
        (n, value)
    }

    /// The node of `ident`.
    pub fn of(ident: &Ident) -> Node {
        Node::intern(ident.org, ident.kind, &ident.value).0
    }

    fn seq(self) -> usize {
        (self.0 & ((1 << KIND_SHIFT) - 1)) as usize
    }

    pub fn kind(self) -> IdKind {
        KINDS[(self.0 >> KIND_SHIFT) as usize]
    }

    /// The identifier this node numbers.
    pub fn ident(self) -> Ident {
        TABLE.read().unwrap().idents[self.seq()].clone()
    }

    /// Of `nodes`, the smallest identifier: by kind, then by text (what "smallest" means for
    /// a lead's key and a signal's anchor). `None` for no nodes.
    pub fn smallest(nodes: impl IntoIterator<Item = Node>) -> Option<Node> {
        let mut nodes = nodes.into_iter();
        let mut best = nodes.next()?;
        let t = TABLE.read().unwrap();
        for n in nodes {
            let (a, b) = (n.kind(), best.kind());
            if a < b
                || (a == b && n != best && t.idents[n.seq()].value < t.idents[best.seq()].value)
            {
                best = n;
            }
        }
        Some(best)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_each_identifier_once_and_orders_by_kind_then_text() {
        let (a, text) = Node::intern(7, IdKind::AnonymousId, "nodes-test-a1");
        assert_eq!(Node::intern(7, IdKind::AnonymousId, "nodes-test-a1").0, a);
        assert!(Arc::ptr_eq(
            &text,
            &Node::intern(7, IdKind::AnonymousId, "nodes-test-a1").1
        ));
        assert_ne!(Node::intern(8, IdKind::AnonymousId, "nodes-test-a1").0, a);
        assert_ne!(Node::intern(7, IdKind::DeviceId, "nodes-test-a1").0, a);
        assert_eq!(a.kind(), IdKind::AnonymousId);
        assert_eq!(
            a.ident(),
            Ident::new(7, IdKind::AnonymousId, "nodes-test-a1")
        );
        // Numbered in the order first seen, but the smallest is by kind, then text.
        let z = Node::of(&Ident::new(7, IdKind::Email, "nodes-test-z@x.io"));
        let b = Node::of(&Ident::new(7, IdKind::Email, "nodes-test-b@x.io"));
        let u = Node::of(&Ident::new(7, IdKind::UserId, "nodes-test-0"));
        assert!(z < b, "numbered in arrival order");
        assert_eq!(Node::smallest([u, a, z, b]), Some(b));
        assert_eq!(Node::smallest([a, u]), Some(u));
        assert_eq!(Node::smallest([]), None);
        for k in KINDS {
            assert_eq!(Node::intern(7, k, "nodes-test-kind").0.kind(), k);
        }
    }

    #[test]
    fn threads_agree_on_the_numbers() {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(|| {
                    (0..2_000)
                        .map(|i| Node::intern(9, IdKind::Email, &format!("t{i}@nodes.test")).0)
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let all: Vec<Vec<Node>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert!(all.windows(2).all(|w| w[0] == w[1]));
        let mut distinct = all[0].clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), 2_000);
    }
}
