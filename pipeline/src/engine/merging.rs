//! Idle merging, only while the worker is idle.
//!
//! Differential merges an arrangement's batches as new updates arrive. With an idle merge
//! effort, an arrangement that is not yet one compact batch also does that much merge work
//! each time it is scheduled without input, and stays scheduled until it is compact; this is
//! what frees the memory of retracted state (hot-window evictions, a reprocessed backlog)
//! when no more traffic comes to push the merges along.
//!
//! But "without input" is per arrangement, not per worker: while an epoch moves through the
//! dataflow, every arrangement it has not reached yet, and every one it never touches, did
//! its idle effort on each of the epoch's steps. Measured with `dataflow-bench` (a steady
//! stream of single signals into an engine holding 125,000): at 1,000 signals/s the latency
//! was p50 16.5 ms with an effort of 1,000 per step, against 0.53 ms with idle merging off.
//!
//! So the exertion logic here asks each worker whether it has an epoch in flight
//! ([`set_busy`], a thread-local: a worker is a thread). While it has, an arrangement that
//! wants merging stays scheduled but does no idle work; once the worker is idle, merging
//! resumes at the configured effort. Which arrangements want merging is differential's own
//! test: a merge in progress, or more than one batch.

use std::cell::Cell;
use std::sync::Arc;

use differential_dataflow::trace::ExertionLogic;

thread_local! {
    /// Whether this worker has an epoch in flight.
    static BUSY: Cell<bool> = const { Cell::new(false) };
}

/// Tells the exertion logic whether this worker has an epoch in flight.
pub(super) fn set_busy(busy: bool) {
    BUSY.with(|b| b.set(busy));
}

/// Configures differential for `effort` of idle merging per scheduling of an arrangement,
/// while its worker is idle (`None`: no idle merging).
pub(super) fn configure(config: &mut timely::WorkerConfig, effort: Option<isize>) {
    differential_dataflow::configure(
        config,
        &differential_dataflow::Config::default().idle_merge_effort(effort),
    );
    let Some(effort) = effort else {
        return;
    };
    let effort = effort.max(1) as usize;
    let logic: ExertionLogic = Arc::new(move |layers| {
        wants_merging(layers).then(|| if BUSY.with(Cell::get) { 0 } else { effort })
    });
    config.set("differential/default_exert_logic".to_string(), logic);
}

/// Whether a trace's layers, as `(index, batches, length)`, are not yet one compact batch:
/// a merge in progress, or more than one non-empty layer.
fn wants_merging(layers: &[(usize, usize, usize)]) -> bool {
    let mut non_empty = 0;
    for &(_, batches, length) in layers {
        if batches > 1 {
            return true;
        }
        if length > 0 {
            non_empty += 1;
        }
    }
    non_empty > 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_waits_while_the_worker_is_busy() {
        let mut config = timely::WorkerConfig::default();
        configure(&mut config, Some(1_000));
        let logic = config
            .get::<ExertionLogic>("differential/default_exert_logic")
            .cloned()
            .expect("the logic is set");
        let two_layers = [(1, 1, 10), (0, 1, 3)];
        let compact = [(1, 1, 10), (0, 0, 0)];
        let merging = [(0, 2, 5)];
        set_busy(false);
        assert_eq!(logic(&two_layers), Some(1_000));
        assert_eq!(logic(&merging), Some(1_000));
        assert_eq!(logic(&compact), None, "nothing to merge");
        set_busy(true);
        assert_eq!(
            logic(&two_layers),
            Some(0),
            "stays scheduled, without idle work"
        );
        assert_eq!(logic(&compact), None);
        set_busy(false);
        let mut off = timely::WorkerConfig::default();
        configure(&mut off, None);
        assert!(off
            .get::<ExertionLogic>("differential/default_exert_logic")
            .is_none());
    }
}
