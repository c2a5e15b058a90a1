//! The read models' processed records, one per live signal, stored compactly by log position.
//!
//! This is the read models' largest structure: one record per signal. As a
//! `HashMap<SignalKey, Processed>` each entry took about 170 bytes plus the table's slack
//! (290–400 bytes a signal in the 2026-11-23 heap profile), and growing the table past a
//! power of two held the old and the new table at once, which set the server's peak memory
//! (at 10 million signals, about 4 GB for the moment of the copy). Here a record is a fixed
//! 56-byte slot in pages of `PAGE` slots indexed by log position (positions are dense: one per
//! log entry, and nearly every entry is a signal), and its text and lead are numbers into
//! interners: a few distinct sources, event types, rule names and error messages, and one
//! entry per lead. A page is allocated when a position in it first gets a record and freed
//! when its last record leaves (retention, the hot window), so growing never copies records.
//!
//! The interners only grow: a rule renamed or a lead merged away leaves its old entry. They
//! hold one entry per distinct value ever recorded, which is bounded by the number of leads
//! and of distinct names, both far below the number of signals.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;

use trailspark_operators::identity::SignalKey;
use trailspark_operators::rules::SignalType;
use trailspark_operators::status::{Processed, Status};
use trailspark_operators::{Ident, Org};

/// Slots per page: 4,096 × 56 bytes, a little over 200 KiB.
const PAGE: usize = 4096;

/// "None" for an interned reference.
const NONE: u32 = u32::MAX;

/// Values numbered in order of first appearance.
struct Interner<T> {
    values: Vec<T>,
    index: HashMap<T, u32>,
}

impl<T> Default for Interner<T> {
    fn default() -> Self {
        Interner {
            values: Vec::new(),
            index: HashMap::new(),
        }
    }
}

impl<T: Clone + Eq + Hash> Interner<T> {
    fn id(&mut self, v: &T) -> u32 {
        if let Some(&i) = self.index.get(v) {
            return i;
        }
        let i = u32::try_from(self.values.len()).expect("fewer than 2^32 distinct values");
        assert!(i != NONE, "fewer than 2^32 - 1 distinct values");
        self.values.push(v.clone());
        self.index.insert(v.clone(), i);
        i
    }

    fn opt(&mut self, v: Option<&T>) -> u32 {
        v.map_or(NONE, |v| self.id(v))
    }

    fn get(&self, i: u32) -> Option<&T> {
        (i != NONE).then(|| &self.values[i as usize])
    }
}

/// One record: what `Processed` holds, with its text and lead as interner numbers.
#[derive(Clone, Copy)]
struct Slot {
    org: Org,
    received_at: i64,
    event_at: i64,
    rule_id: u64,
    lead: u32,
    source: u32,
    event_type: u32,
    rule_name: u32,
    error: u32,
    status: Status,
    signal_type: Option<SignalType>,
    high_intent: bool,
    /// `PRESENT`, `HAS_RULE`.
    flags: u8,
}

const PRESENT: u8 = 1;
const HAS_RULE: u8 = 2;

const EMPTY: Slot = Slot {
    org: 0,
    received_at: 0,
    event_at: 0,
    rule_id: 0,
    lead: NONE,
    source: NONE,
    event_type: NONE,
    rule_name: NONE,
    error: NONE,
    status: Status::Pending,
    signal_type: None,
    high_intent: false,
    flags: 0,
};

struct Page {
    slots: Box<[Slot]>,
    live: usize,
}

/// Processed records by signal key (see the module's documentation).
#[derive(Default)]
pub struct ProcessedMap {
    pages: Vec<Option<Page>>,
    text: Interner<Arc<str>>,
    leads: Interner<Ident>,
}

fn at(pos: u64) -> (usize, usize) {
    let pos = usize::try_from(pos).expect("log positions fit in usize");
    (pos / PAGE, pos % PAGE)
}

impl ProcessedMap {
    fn slot(&self, key: &SignalKey) -> Option<&Slot> {
        let (page, i) = at(key.1);
        let s = &self.pages.get(page)?.as_ref()?.slots[i];
        (s.flags & PRESENT != 0 && s.org == key.0).then_some(s)
    }

    fn expand(&self, s: &Slot) -> Processed {
        let text = |i| self.text.get(i).cloned();
        // Every record has a source and an event type.
        let required = |i: u32| self.text.values[i as usize].clone();
        Processed {
            status: s.status,
            error: text(s.error),
            rule_id: (s.flags & HAS_RULE != 0).then_some(s.rule_id),
            rule_name: text(s.rule_name),
            signal_type: s.signal_type,
            high_intent: s.high_intent,
            lead: self.leads.get(s.lead).cloned(),
            source: required(s.source),
            event_type: required(s.event_type),
            received_at: s.received_at,
            event_at: s.event_at,
        }
    }

    /// The record of `key`, rebuilt (its text and lead are shared, not copied).
    pub fn get(&self, key: &SignalKey) -> Option<Processed> {
        self.slot(key).map(|s| self.expand(s))
    }

    pub fn contains_key(&self, key: &SignalKey) -> bool {
        self.slot(key).is_some()
    }

    /// How many records there are (a sum over the pages: for tests and diagnostics).
    pub fn len(&self) -> usize {
        self.pages.iter().flatten().map(|p| p.live).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.pages.iter().all(Option::is_none)
    }

    /// Sets `key`'s record, returning the one it replaces. A position holds one signal, so a
    /// record of another org at the same position is replaced too (that cannot happen with
    /// keys from one log).
    pub fn insert(&mut self, key: SignalKey, p: Processed) -> Option<Processed> {
        let slot = Slot {
            org: key.0,
            received_at: p.received_at,
            event_at: p.event_at,
            rule_id: p.rule_id.unwrap_or(0),
            lead: self.leads.opt(p.lead.as_ref()),
            source: self.text.id(&p.source),
            event_type: self.text.id(&p.event_type),
            rule_name: self.text.opt(p.rule_name.as_ref()),
            error: self.text.opt(p.error.as_ref()),
            status: p.status,
            signal_type: p.signal_type,
            high_intent: p.high_intent,
            flags: PRESENT | if p.rule_id.is_some() { HAS_RULE } else { 0 },
        };
        let (page, i) = at(key.1);
        if self.pages.len() <= page {
            self.pages.resize_with(page + 1, || None);
        }
        let pg = self.pages[page].get_or_insert_with(|| Page {
            slots: vec![EMPTY; PAGE].into_boxed_slice(),
            live: 0,
        });
        let old = std::mem::replace(&mut pg.slots[i], slot);
        if old.flags & PRESENT != 0 {
            Some(self.expand(&old))
        } else {
            pg.live += 1;
            None
        }
    }

    /// Removes `key`'s record, returning it.
    pub fn remove(&mut self, key: &SignalKey) -> Option<Processed> {
        self.remove_if(key, |_| true)
    }

    /// Removes `key`'s record if `pred` holds for it, returning it (the record is rebuilt
    /// once, for both).
    pub fn remove_if(
        &mut self,
        key: &SignalKey,
        pred: impl FnOnce(&Processed) -> bool,
    ) -> Option<Processed> {
        let old = self.get(key).filter(pred)?;
        let (page, i) = at(key.1);
        let pg = self.pages[page].as_mut().expect("the slot is in a page");
        pg.slots[i] = EMPTY;
        pg.live -= 1;
        if pg.live == 0 {
            self.pages[page] = None;
        }
        Some(old)
    }

    /// Every record's key, in position order.
    pub fn keys(&self) -> impl Iterator<Item = SignalKey> + '_ {
        self.slots().map(|(pos, s)| (s.org, pos))
    }

    /// Every record, in position order.
    pub fn iter(&self) -> impl Iterator<Item = (SignalKey, Processed)> + '_ {
        self.slots().map(|(pos, s)| ((s.org, pos), self.expand(s)))
    }

    fn slots(&self) -> impl Iterator<Item = (u64, &Slot)> + '_ {
        self.pages
            .iter()
            .enumerate()
            .filter_map(|(n, p)| p.as_ref().map(|p| (n, p)))
            .flat_map(|(n, p)| {
                p.slots
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.flags & PRESENT != 0)
                    .map(move |(i, s)| ((n * PAGE + i) as u64, s))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use trailspark_operators::IdKind;

    fn record(x: u64) -> Processed {
        let statuses = [
            Status::Pending,
            Status::Completed,
            Status::Failed,
            Status::Skipped,
        ];
        Processed {
            status: statuses[(x % 4) as usize],
            error: x
                .is_multiple_of(3)
                .then(|| Arc::from(format!("error {}", x % 5))),
            rule_id: x.is_multiple_of(2).then_some(x % 7),
            rule_name: x
                .is_multiple_of(2)
                .then(|| Arc::from(format!("rule {}", x % 7))),
            signal_type: x.is_multiple_of(5).then_some(SignalType::FormFill),
            high_intent: x.is_multiple_of(11),
            lead: (!x.is_multiple_of(4))
                .then(|| Ident::new(1 + x % 2, IdKind::Email, format!("{}@x", x % 13))),
            source: Arc::from(["segment", "marketo", ""][(x % 3) as usize]),
            event_type: Arc::from(format!("e{}", x % 9)),
            received_at: x as i64 * 1000 - 5,
            event_at: -(x as i64),
        }
    }

    /// The map behaves as a `BTreeMap` of the same records under random inserts, removals
    /// and replacements, across page boundaries and with pages emptied and refilled.
    #[test]
    fn behaves_as_a_map() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut rnd = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let mut m = ProcessedMap::default();
        let mut want: BTreeMap<SignalKey, Processed> = BTreeMap::new();
        for _ in 0..20_000 {
            let pos = rnd(3 * PAGE as u64);
            let org = 1 + rnd(2);
            let key = (org, pos);
            match rnd(3) {
                0 => {
                    let got = m.remove(&key);
                    assert_eq!(got, want.remove(&key));
                }
                _ => {
                    let p = record(rnd(1000));
                    // A position holds one signal: another org's record there goes.
                    let other = (3 - org, pos);
                    let replaced_other = want.remove(&other);
                    let got = m.insert(key, p.clone());
                    let prior = want.insert(key, p);
                    assert_eq!(got, prior.or(replaced_other));
                }
            }
            assert_eq!(m.len(), want.len());
            let probe = (1 + rnd(2), rnd(3 * PAGE as u64));
            assert_eq!(m.get(&probe), want.get(&probe).cloned());
            assert_eq!(m.contains_key(&probe), want.contains_key(&probe));
        }
        let all: BTreeMap<SignalKey, Processed> = m.iter().collect();
        assert_eq!(all, want);
        let keys: Vec<SignalKey> = m.keys().collect();
        let mut sorted = keys.clone();
        sorted.sort_by_key(|k| k.1);
        assert_eq!(keys, sorted);
        for k in keys {
            m.remove(&k);
        }
        assert!(m.is_empty());
        assert!(m.pages.iter().all(Option::is_none), "empty pages are freed");
    }

    #[test]
    fn a_slot_is_small() {
        assert!(std::mem::size_of::<Slot>() <= 56);
    }
}
