//! Runs a dataflow function over timed input batches with a number of workers, and returns
//! the final contents of its output, for comparison with a sequential reference.

use std::sync::{Arc, Mutex};

use differential_dataflow::input::Input;
use differential_dataflow::{Data, ExchangeData, VecCollection};

/// Feeds `batches` (one per epoch, in order) into the dataflow built by `build`, on
/// `workers` worker threads (worker 0 feeds everything; operators exchange by key), and
/// returns the output's final contents: records whose accumulated diff is not zero.
pub fn run<I, O>(
    workers: usize,
    batches: Vec<Vec<(I, isize)>>,
    build: impl for<'s> Fn(VecCollection<'s, u64, I, isize>) -> VecCollection<'s, u64, O, isize>
        + Send
        + Sync
        + 'static,
) -> Vec<(O, isize)>
where
    I: ExchangeData + Sync,
    O: Data + Send,
{
    let out: Arc<Mutex<Vec<(O, isize)>>> = Arc::new(Mutex::new(Vec::new()));
    let batches = Arc::new(batches);
    let sink = out.clone();
    timely::execute(timely::Config::process(workers), move |worker| {
        let sink = sink.clone();
        let (mut input, probe) = worker.dataflow::<u64, _, _>(|scope| {
            let (input, coll) = scope.new_collection::<I, isize>();
            let sink = sink.clone();
            let (probe, _) = build(coll)
                .inspect(move |(d, _t, r)| sink.lock().unwrap().push((d.clone(), *r)))
                .probe();
            (input, probe)
        });
        for (epoch, batch) in batches.iter().enumerate() {
            if worker.index() == 0 {
                for (d, r) in batch {
                    input.update(d.clone(), *r);
                }
            }
            input.advance_to(epoch as u64 + 1);
            input.flush();
            worker.step_while(|| probe.less_than(input.time()));
        }
    })
    .expect("timely runs");
    let mut all = std::mem::take(&mut *out.lock().unwrap());
    differential_dataflow::consolidation::consolidate(&mut all);
    all
}

/// Splits `items` into `n` batches at pseudo-random cut points derived from `seed`, after a
/// pseudo-random shuffle: the same facts arriving in another order and grouping.
pub fn shuffle_into_batches<T: Clone>(items: &[T], n: usize, seed: u64) -> Vec<Vec<T>> {
    let mut v: Vec<T> = items.to_vec();
    let mut state = seed | 1;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for i in (1..v.len()).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
    let mut batches = vec![Vec::new(); n.max(1)];
    for item in v {
        let b = (next() % n.max(1) as u64) as usize;
        batches[b].push(item);
    }
    batches
}

/// A signal built the way the pipeline builds them: from a canonical record.
pub fn signal(
    org: u64,
    pos: u64,
    received_at: i64,
    payload: serde_json::Value,
) -> crate::signal::Signal {
    let ctx = trailspark_core::normalize::Context {
        org_id: trailspark_core::OrgId(org),
        api_key_id: 1,
        received_at,
        ..Default::default()
    };
    let rec = trailspark_core::normalize::normalize(&ctx, &payload, payload.to_string());
    crate::signal::Signal::from_record(pos, &rec)
}
