//! The read models' side of the hot window (the engine's hot-window service): which signals the engine has
//! taken out of the dataflow, which identifiers should bring them back, and how the explorer
//! keeps counting them as pending while they are out.
//!
//! A signal moves Hot → Cold (its eviction is queued) → Rehydrating (an identifier it carries
//! joined a lead; its archive lookup runs) → Hot (its rehydration is queued). Each move happens
//! under the models' lock together with queueing its change for the engine, and a signal is
//! busy (no new move starts) until the models have applied the outcome of its last one, so a
//! signal's evictions and rehydrations reach the dataflow alternating, starting with an
//! eviction: the dataflow never holds a signal twice or less than zero times. (Without the
//! wait for landing, a signal rehydrated before its eviction landed still showed its old
//! pending record, and was evicted a second time.)

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use trailspark_operators::identity::SignalKey;
use trailspark_operators::Ident;

/// An evicted signal, as much as rehydrating it needs.
struct ColdSignal {
    received_at: i64,
    idents: Arc<[Ident]>,
}

/// A signal taken for rehydration: its key and receipt time (the lookup's date range).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Taken {
    pub key: SignalKey,
    pub received_at: i64,
}

#[derive(Default)]
pub struct ColdIndex {
    cold: HashMap<SignalKey, ColdSignal>,
    /// Identifier → positions of cold signals carrying it.
    by_ident: HashMap<Ident, Vec<u64>>,
    /// Taken for rehydration, with what they were (to put back if the lookup fails).
    rehydrating: HashMap<SignalKey, ColdSignal>,
    /// Signals whose processed record left the models because they were evicted: the
    /// explorer still counts them as pending (they wait in cold storage).
    out: HashSet<SignalKey>,
    /// Identifiers that joined a lead while cold signals carried them.
    wanted: BTreeSet<Ident>,
    /// Signals whose last move is queued but not yet applied to the models, by its ticket
    /// (the engine's side-change tickets), and the ticket of each.
    in_flight: HashMap<SignalKey, u64>,
    by_ticket: BTreeMap<u64, Vec<SignalKey>>,
}

impl ColdIndex {
    /// Signals out of the dataflow now (the hot window's cold set).
    pub fn len(&self) -> usize {
        self.cold.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cold.is_empty()
    }

    /// Whether `key` is out of the dataflow or on its way in or out.
    pub fn busy(&self, key: &SignalKey) -> bool {
        self.cold.contains_key(key)
            || self.rehydrating.contains_key(key)
            || self.out.contains(key)
            || self.in_flight.contains_key(key)
    }

    /// The moves of `keys` were queued with `ticket`.
    pub fn queued(&mut self, ticket: u64, keys: impl IntoIterator<Item = SignalKey>) {
        let keys: Vec<SignalKey> = keys.into_iter().collect();
        for k in &keys {
            self.in_flight.insert(*k, ticket);
        }
        self.by_ticket.entry(ticket).or_default().extend(keys);
    }

    /// Whether every queued move has landed.
    pub fn settled(&self) -> bool {
        self.in_flight.is_empty()
    }

    /// The models have applied the side epochs up to the `sides`th: the moves queued with
    /// those tickets have landed.
    pub fn landed(&mut self, sides: u64) {
        let later = self.by_ticket.split_off(&(sides + 1));
        for (ticket, keys) in std::mem::replace(&mut self.by_ticket, later) {
            for k in keys {
                if self.in_flight.get(&k) == Some(&ticket) {
                    self.in_flight.remove(&k);
                }
            }
        }
    }

    /// Records that `key`'s eviction has been queued.
    pub fn evict(&mut self, key: SignalKey, received_at: i64, idents: Arc<[Ident]>) {
        for i in idents.iter() {
            self.by_ident.entry(i.clone()).or_default().push(key.1);
        }
        self.cold.insert(
            key,
            ColdSignal {
                received_at,
                idents,
            },
        );
    }

    /// A processed record left the models with no replacement. Only an eviction removes a
    /// signal from the dataflow, so this is one landing. Returns the identifiers of the
    /// signal if it is still cold: the caller checks whether one already belongs to a lead
    /// (an identify that arrived while the eviction was queued).
    pub fn landed_out(&mut self, key: SignalKey) -> Option<Arc<[Ident]>> {
        self.out.insert(key);
        self.cold.get(&key).map(|c| c.idents.clone())
    }

    /// A processed record came back. Returns whether it had been out (so the caller moves its
    /// count from pending to its new status).
    pub fn landed_in(&mut self, key: &SignalKey) -> bool {
        self.out.remove(key)
    }

    /// Whether `key`'s processed record is out of the models because it was evicted.
    pub fn is_out(&self, key: &SignalKey) -> bool {
        self.out.contains(key)
    }

    /// Whether cold signals carry `ident`.
    pub fn carries(&self, ident: &Ident) -> bool {
        self.by_ident.contains_key(ident)
    }

    /// Asks for the cold signals carrying `ident` to be rehydrated.
    pub fn want(&mut self, ident: Ident) {
        if self.carries(&ident) {
            self.wanted.insert(ident);
        }
    }

    pub fn has_wanted(&self) -> bool {
        !self.wanted.is_empty()
    }

    /// Takes the wanted identifiers' cold signals for rehydration, per identifier.
    pub fn take_wanted(&mut self) -> Vec<(Ident, Vec<Taken>)> {
        let mut out = Vec::new();
        for ident in std::mem::take(&mut self.wanted) {
            let Some(positions) = self.by_ident.remove(&ident) else {
                continue;
            };
            let mut taken = Vec::new();
            for pos in positions {
                let key = (ident.org, pos);
                let Some(c) = self.cold.remove(&key) else {
                    continue;
                };
                // The signal's other identifiers no longer lead to it.
                for other in c.idents.iter().filter(|o| **o != ident) {
                    if let Some(v) = self.by_ident.get_mut(other) {
                        v.retain(|p| *p != pos);
                        if v.is_empty() {
                            self.by_ident.remove(other);
                        }
                    }
                }
                taken.push(Taken {
                    key,
                    received_at: c.received_at,
                });
                self.rehydrating.insert(key, c);
            }
            if !taken.is_empty() {
                out.push((ident, taken));
            }
        }
        out
    }

    /// The rehydration of `keys` has been queued.
    pub fn finish(&mut self, keys: impl IntoIterator<Item = SignalKey>) {
        for k in keys {
            self.rehydrating.remove(&k);
        }
    }

    /// The lookup for `keys` failed: they are cold again, and `ident`, if given, stays
    /// wanted (to be tried again).
    pub fn put_back(&mut self, ident: Option<Ident>, keys: impl IntoIterator<Item = SignalKey>) {
        for k in keys {
            if let Some(c) = self.rehydrating.remove(&k) {
                self.evict(k, c.received_at, c.idents);
            }
        }
        if let Some(i) = ident {
            self.want(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trailspark_operators::IdKind;

    fn id(v: &str) -> Ident {
        Ident::new(1, IdKind::AnonymousId, v)
    }

    #[test]
    fn a_signal_is_taken_once_whichever_identifier_asks() {
        let mut c = ColdIndex::default();
        c.evict((1, 5), 10, Arc::from(vec![id("a"), id("d")]));
        c.evict((1, 6), 11, Arc::from(vec![id("a")]));
        assert!(c.busy(&(1, 5)));
        c.want(id("zzz"));
        assert!(!c.has_wanted(), "no cold signal carries it");
        c.want(id("d"));
        let t = c.take_wanted();
        assert_eq!(t.len(), 1);
        assert_eq!(
            t[0].1,
            vec![Taken {
                key: (1, 5),
                received_at: 10
            }]
        );
        // Asking through `a` now brings only the signal still cold.
        c.want(id("a"));
        let t = c.take_wanted();
        assert_eq!(t[0].1.iter().map(|t| t.key).collect::<Vec<_>>(), [(1, 6)]);
        assert!(c.busy(&(1, 5)), "rehydrating until queued");
        c.finish([(1, 5), (1, 6)]);
        c.queued(3, [(1, 5), (1, 6)]);
        assert!(c.busy(&(1, 5)), "busy until the move lands");
        c.landed(2);
        assert!(c.busy(&(1, 5)));
        c.landed(3);
        assert!(!c.busy(&(1, 5)) && !c.busy(&(1, 6)));
        assert!(!c.carries(&id("a")) && !c.carries(&id("d")));
    }

    #[test]
    fn a_failed_lookup_puts_signals_back() {
        let mut c = ColdIndex::default();
        c.evict((1, 5), 10, Arc::from(vec![id("a")]));
        c.want(id("a"));
        let t = c.take_wanted();
        c.put_back(Some(t[0].0.clone()), t[0].1.iter().map(|t| t.key));
        assert!(c.has_wanted());
        assert_eq!(c.take_wanted()[0].1[0].key, (1, 5));
    }

    #[test]
    fn out_records_count_until_they_come_back() {
        let mut c = ColdIndex::default();
        c.evict((1, 5), 10, Arc::from(vec![id("a")]));
        assert_eq!(c.landed_out((1, 5)).as_deref(), Some(&[id("a")][..]));
        assert!(c.is_out(&(1, 5)) && c.carries(&id("a")));
        assert!(c.landed_in(&(1, 5)));
        assert!(!c.landed_in(&(1, 5)));
        assert!(!c.is_out(&(1, 5)) && c.carries(&id("a")), "still cold");
    }
}
