//! Interning: one shared copy of each distinct value, so that records repeating it (every
//! signal of a visitor carries its anonymous id; every member of a group its key) hold a
//! pointer instead of a copy.
//!
//! Values no one else holds any more are swept out whenever the table has doubled since the
//! last sweep, so the table stays within about twice the live values (and is never swept below
//! 1,024 entries, so a small table is not swept on every call). The sweep is amortized: it
//! visits the table once per doubling.

use std::borrow::Borrow;
use std::collections::HashSet;
use std::hash::Hash;
use std::sync::Arc;

/// A table of shared values.
#[derive(Debug)]
pub struct Interner<T: ?Sized> {
    values: HashSet<Arc<T>>,
    sweep_at: usize,
}

impl<T: ?Sized> Default for Interner<T> {
    fn default() -> Self {
        Interner {
            values: HashSet::new(),
            sweep_at: 1024,
        }
    }
}

impl<T: ?Sized + Hash + Eq> Interner<T> {
    /// The shared copy of `v`, if there is one.
    pub fn get<Q: ?Sized + Hash + Eq>(&self, v: &Q) -> Option<Arc<T>>
    where
        Arc<T>: Borrow<Q>,
    {
        self.values.get(v).cloned()
    }

    /// Makes `v` the shared copy of its value (callers check [`Interner::get`] first).
    pub fn insert(&mut self, v: Arc<T>) -> Arc<T> {
        if self.values.len() >= self.sweep_at {
            self.values.retain(|v| Arc::strong_count(v) > 1);
            self.sweep_at = (self.values.len() * 2).max(1024);
        }
        self.values.insert(v.clone());
        v
    }

    /// How many values the table holds (swept or not).
    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

impl Interner<str> {
    /// The shared copy of `s`, made on first sight.
    pub fn str(&mut self, s: &str) -> Arc<str> {
        match self.get(s) {
            Some(v) => v,
            None => self.insert(Arc::from(s)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_equal_values_and_sweeps_unheld_ones() {
        let mut t: Interner<str> = Interner::default();
        let a = t.str("anon-1");
        let b = t.str("anon-1");
        assert!(Arc::ptr_eq(&a, &b));
        // Fill past the first sweep with values nobody holds: the sweep drops them but keeps
        // the held one, and the next sweep waits for twice what survived.
        for i in 0..2000 {
            t.str(&format!("v{i}"));
        }
        assert!(t.len() < 2000, "unheld values were swept, {} left", t.len());
        assert!(
            Arc::ptr_eq(&t.str("anon-1"), &a),
            "a held value survives sweeps"
        );
    }
}
