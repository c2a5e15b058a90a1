//! What each arrangement holds, in updates and bytes, measured from its trace.
//!
//! Differential logs how many updates each arrangement's batches hold, but not their bytes:
//! its batch events carry lengths only. So every arrangement the dataflow builds is made
//! here, through functions that arrange as differential's own (`arrange_by_key`,
//! `distinct`, `reduce`, `semijoin`, `count_total`) do, and that register the trace with
//! this worker's [`measure`]. A registered trace is read by walking its batches and summing
//! the bytes their containers hold.
//!
//! The bytes are the batches' own allocations (keys, values, times, differences and the
//! offsets between them, at their capacity). What a record points to (a string's text, a
//! shared `Arc`) is not counted: it can be shared between arrangements and with the read
//! models, so that no arrangement owns it; process memory counts it once.
//!
//! The registry is per thread, and so per timely worker. The reader kept for measuring
//! allows any compaction (its frontiers are empty), so it holds nothing back.

use std::cell::RefCell;
use std::hash::Hash;
use std::mem::size_of;
use std::rc::Rc;

use differential_dataflow::hashable::Hashable;
use differential_dataflow::lattice::Lattice;
use differential_dataflow::operators::arrange::{Arranged, TraceAgent};
use differential_dataflow::operators::CountTotal;
use differential_dataflow::trace::implementations::ord_neu::{OrdKeyBatch, OrdValBatch, Upds};
use differential_dataflow::trace::implementations::spine_fueled::SpineBatch;
use differential_dataflow::trace::implementations::{
    KeyBuilder, KeySpine, Layout, OffsetList, ValBuilder, ValSpine,
};
use differential_dataflow::trace::TraceReader;
use differential_dataflow::{Data, ExchangeData, VecCollection};
use timely::order::TotalOrder;
use timely::progress::frontier::AntichainRef;
use timely::progress::Timestamp;

/// Bytes a batch or container has allocated, not counting what its elements point to.
pub trait Footprint {
    fn bytes(&self) -> usize;
}

impl<T> Footprint for Vec<T> {
    fn bytes(&self) -> usize {
        self.capacity() * size_of::<T>()
    }
}

impl Footprint for OffsetList {
    fn bytes(&self) -> usize {
        self.smol.capacity() * size_of::<u32>() + self.chonk.capacity() * size_of::<u64>()
    }
}

impl<L: Layout> Footprint for OrdValBatch<L>
where
    L::KeyContainer: Footprint,
    L::ValContainer: Footprint,
    L::TimeContainer: Footprint,
    L::DiffContainer: Footprint,
    L::OffsetContainer: Footprint,
{
    fn bytes(&self) -> usize {
        let s = &self.storage;
        s.keys.bytes() + s.vals.offs.bytes() + s.vals.vals.bytes() + s.upds.bytes()
    }
}

impl<L: Layout> Footprint for OrdKeyBatch<L>
where
    L::KeyContainer: Footprint,
    L::TimeContainer: Footprint,
    L::DiffContainer: Footprint,
    L::OffsetContainer: Footprint,
{
    fn bytes(&self) -> usize {
        self.storage.keys.bytes() + self.storage.upds.bytes()
    }
}

/// The updates of a batch of either kind: their offsets, times and differences.
impl<O: Footprint, T: Footprint, D: Footprint> Footprint for Upds<O, T, D> {
    fn bytes(&self) -> usize {
        self.offs.bytes() + self.times.bytes() + self.diffs.bytes()
    }
}

impl<B: Footprint> Footprint for Rc<B> {
    fn bytes(&self) -> usize {
        (**self).bytes()
    }
}

/// One arrangement's size.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Size {
    /// Updates held in its batches.
    pub updates: usize,
    /// Bytes its batches allocated.
    pub bytes: usize,
}

struct Registered {
    name: String,
    measure: Box<dyn Fn() -> Size>,
}

thread_local! {
    /// `None` until [`enable`]: a dataflow nobody measures keeps no readers.
    static TRACES: RefCell<Option<Vec<Registered>>> = const { RefCell::new(None) };
}

/// Starts registering the arrangements this thread builds from now on.
pub fn enable() {
    TRACES.with(|t| *t.borrow_mut() = Some(Vec::new()));
}

/// Forgets this thread's arrangements and stops registering (a worker whose dataflow has
/// ended): their readers are dropped, so the traces can be freed.
pub fn clear() {
    TRACES.with(|t| *t.borrow_mut() = None);
}

/// Registers `trace` under `name` (its operator's name) with this thread's registry, when
/// [`enable`]d.
pub fn register<Tr>(name: &str, trace: &TraceAgent<Tr>)
where
    Tr: TraceReader + 'static,
    Tr::Batch: Footprint + SpineBatch,
{
    if TRACES.with(|t| t.borrow().is_none()) {
        return;
    }
    let mut reader = trace.clone();
    reader.set_logical_compaction(AntichainRef::new(&[]));
    reader.set_physical_compaction(AntichainRef::new(&[]));
    let measure = Box::new(move || {
        let mut size = Size::default();
        reader.map_spans(|span| {
            if let Some(batch) = &span.inner {
                size.updates += batch.len();
                size.bytes += batch.bytes();
            }
        });
        size
    });
    TRACES.with(|t| {
        if let Some(traces) = t.borrow_mut().as_mut() {
            traces.push(Registered {
                name: name.to_string(),
                measure,
            })
        }
    });
}

/// The size of every arrangement registered on this thread, with its name. Must not run
/// while the dataflow is being stepped (the traces are borrowed).
pub fn measure() -> Vec<(String, Size)> {
    TRACES.with(|t| {
        t.borrow()
            .iter()
            .flatten()
            .map(|r| (r.name.clone(), (r.measure)()))
            .collect()
    })
}

/// `arrange_by_key_named`, measured.
pub fn by_key<'s, T, K, V>(
    c: VecCollection<'s, T, (K, V), isize>,
    name: &str,
) -> Arranged<'s, TraceAgent<ValSpine<K, V, T, isize>>>
where
    T: Timestamp + Lattice,
    K: ExchangeData + Hashable,
    V: ExchangeData,
{
    let a = c.arrange_by_key_named(name);
    register(name, &a.trace);
    a
}

/// `arrange_by_self_named`, measured.
pub fn by_self<'s, T, K>(
    c: VecCollection<'s, T, K, isize>,
    name: &str,
) -> Arranged<'s, TraceAgent<KeySpine<K, T, isize>>>
where
    T: Timestamp + Lattice,
    K: ExchangeData + Hashable,
{
    let a = c.arrange_by_self_named(name);
    register(name, &a.trace);
    a
}

/// How a reduce's output changes for `key` enter its output arrangement's builder: each
/// `(value, time, diff)` as `((key, value), time, diff)`, replacing what `out` held.
pub fn keyed_changes<K: Clone, V, T, R>(
    out: &mut Vec<((K, V), T, R)>,
    key: &K,
    changes: &mut Vec<(V, T, R)>,
) {
    out.clear();
    out.extend(changes.drain(..).map(|(v, t, r)| ((key.clone(), v), t, r)));
}

/// Each distinct record once, as `distinct` does; `name` names the reduce, and its input
/// arrangement is "Arrange: `name`".
pub fn distinct<'s, T, K>(
    c: VecCollection<'s, T, K, isize>,
    name: &str,
) -> VecCollection<'s, T, K, isize>
where
    T: Timestamp + Lattice,
    K: ExchangeData + Hashable,
{
    let out = by_self(c, &format!("Arrange: {name}"))
        .reduce_abelian::<_, KeyBuilder<K, T, isize>, KeySpine<K, T, isize>, _, _>(
            name,
            |_k, _present, out| out.push(((), 1)),
            keyed_changes,
        );
    register(name, &out.trace);
    out.as_collection(|k, _| k.clone())
}

/// The values `logic` makes of each key's values, as `reduce_named` does; its input
/// arrangement is "Arrange: `name`".
pub fn reduce<'s, T, K, V, V2, L>(
    c: VecCollection<'s, T, (K, V), isize>,
    name: &str,
    logic: L,
) -> VecCollection<'s, T, (K, V2), isize>
where
    T: Timestamp + Lattice,
    K: ExchangeData + Hashable,
    V: ExchangeData,
    V2: Data,
    L: FnMut(&K, &[(&V, isize)], &mut Vec<(V2, isize)>) + 'static,
{
    reduce_arranged(c, name, logic).as_collection(|k, v| (k.clone(), v.clone()))
}

/// [`reduce`], answering its output arrangement.
pub fn reduce_arranged<'s, T, K, V, V2, L>(
    c: VecCollection<'s, T, (K, V), isize>,
    name: &str,
    logic: L,
) -> Arranged<'s, TraceAgent<ValSpine<K, V2, T, isize>>>
where
    T: Timestamp + Lattice,
    K: ExchangeData + Hashable,
    V: ExchangeData,
    V2: Data,
    L: FnMut(&K, &[(&V, isize)], &mut Vec<(V2, isize)>) + 'static,
{
    let out = by_key(c, &format!("Arrange: {name}"))
        .reduce_abelian::<_, ValBuilder<K, V2, T, isize>, ValSpine<K, V2, T, isize>, _, _>(
            name,
            logic,
            keyed_changes,
        );
    register(name, &out.trace);
    out
}

/// The records of `c` whose key is in `keys`, as `semijoin` does.
pub fn semijoin<'s, T, K, V>(
    c: VecCollection<'s, T, (K, V), isize>,
    keys: VecCollection<'s, T, K, isize>,
    name: &str,
) -> VecCollection<'s, T, (K, V), isize>
where
    T: Timestamp + Lattice,
    K: ExchangeData + Hashable,
    V: ExchangeData,
{
    by_key(c, &format!("Arrange: {name}"))
        .join_core(by_self(keys, &format!("Arrange: {name}Keys")), |k, v, _| {
            Some((k.clone(), v.clone()))
        })
}

/// Each record with its count, kept incrementally (times are totally ordered), as
/// `count_total` does; its input arrangement is "Arrange: `name`".
pub fn count_total<'s, T, K>(
    c: VecCollection<'s, T, K, isize>,
    name: &str,
) -> VecCollection<'s, T, (K, isize), isize>
where
    T: Timestamp + Lattice + TotalOrder,
    K: ExchangeData + Hashable + Hash,
{
    by_self(c, &format!("Arrange: {name}")).count_total()
}

/// The measured arrangements as methods of a keyed collection, for operator chains.
pub trait MeasuredByKey<'s, T: Timestamp + Lattice, K: ExchangeData + Hashable, V: ExchangeData> {
    /// [`by_key`].
    fn arrange_by_key_measured(
        self,
        name: &str,
    ) -> Arranged<'s, TraceAgent<ValSpine<K, V, T, isize>>>;
    /// [`reduce`].
    fn reduce_measured<V2, L>(self, name: &str, logic: L) -> VecCollection<'s, T, (K, V2), isize>
    where
        V2: Data,
        L: FnMut(&K, &[(&V, isize)], &mut Vec<(V2, isize)>) + 'static;
}

impl<'s, T, K, V> MeasuredByKey<'s, T, K, V> for VecCollection<'s, T, (K, V), isize>
where
    T: Timestamp + Lattice,
    K: ExchangeData + Hashable,
    V: ExchangeData,
{
    fn arrange_by_key_measured(
        self,
        name: &str,
    ) -> Arranged<'s, TraceAgent<ValSpine<K, V, T, isize>>> {
        by_key(self, name)
    }
    fn reduce_measured<V2, L>(self, name: &str, logic: L) -> VecCollection<'s, T, (K, V2), isize>
    where
        V2: Data,
        L: FnMut(&K, &[(&V, isize)], &mut Vec<(V2, isize)>) + 'static,
    {
        reduce(self, name, logic)
    }
}

/// The measured distinct and count as methods of a collection, for operator chains.
pub trait Measured<'s, T: Timestamp + Lattice, K: ExchangeData + Hashable> {
    /// [`distinct`].
    fn distinct_measured(self, name: &str) -> VecCollection<'s, T, K, isize>;
    /// [`count_total`].
    fn count_total_measured(self, name: &str) -> VecCollection<'s, T, (K, isize), isize>
    where
        T: TotalOrder,
        K: Hash;
}

impl<'s, T, K> Measured<'s, T, K> for VecCollection<'s, T, K, isize>
where
    T: Timestamp + Lattice,
    K: ExchangeData + Hashable,
{
    fn distinct_measured(self, name: &str) -> VecCollection<'s, T, K, isize> {
        distinct(self, name)
    }
    fn count_total_measured(self, name: &str) -> VecCollection<'s, T, (K, isize), isize>
    where
        T: TotalOrder,
        K: Hash,
    {
        count_total(self, name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use differential_dataflow::input::Input;

    /// Arranges 1,000 `(key, value)` pairs over 10 keys and reduces them, then measures.
    fn run(enabled: bool) -> Vec<(String, Size)> {
        timely::execute_directly(move |worker| {
            if enabled {
                enable();
            } else {
                clear();
            }
            let (mut input, probe) = worker.dataflow::<u64, _, _>(|scope| {
                let (input, pairs) = scope.new_collection::<(u64, u64), isize>();
                let (probe, _) = reduce(pairs, "Count", |_k, vals, out| {
                    out.push((vals.len() as u64, 1))
                })
                .probe();
                (input, probe)
            });
            for i in 0..1000u64 {
                input.update((i % 10, i), 1);
            }
            input.advance_to(1);
            input.flush();
            worker.step_while(|| probe.less_than(input.time()));
            let sizes = measure();
            clear();
            assert!(measure().is_empty(), "clear forgets the traces");
            sizes
        })
    }

    #[test]
    fn measures_the_updates_and_bytes_of_each_arrangement() {
        let sizes: std::collections::BTreeMap<String, Size> = run(true).into_iter().collect();
        let input = &sizes["Arrange: Count"];
        assert_eq!(input.updates, 1000);
        // Per update at least a value, a time and a difference of 8 bytes each, and per key
        // its 8 bytes.
        assert!(input.bytes >= 1000 * 24 + 10 * 8, "{input:?}");
        let output = &sizes["Count"];
        assert_eq!(output.updates, 10);
        assert!(output.bytes >= 10 * 32, "{output:?}");
        assert_eq!(sizes.len(), 2, "{sizes:?}");
    }

    #[test]
    fn a_dataflow_nobody_measures_registers_nothing() {
        assert!(run(false).is_empty());
    }
}
