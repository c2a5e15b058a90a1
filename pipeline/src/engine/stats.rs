//! Arrangement sizes, for finding where the dataflow's memory goes.
//!
//! With `TRAILSPARK_ARRANGEMENT_STATS=1` each worker counts the updates held by every
//! arrangement (from differential's batch, merge and drop events, which balance) and logs the
//! largest, by operator name, at most every ten seconds while they change, so the last report
//! after a burst (a replay) shows its final state. Off by default: timely's own log, which
//! names the operators, reports every operator activation.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use differential_dataflow::logging::{DifferentialEvent, DifferentialEventBuilder};
use timely::logging::{TimelyEvent, TimelyEventBuilder};

/// Updates held per arrangement operator, with the operators' names.
#[derive(Default)]
pub struct ArrangementStats {
    names: HashMap<usize, String>,
    held: HashMap<usize, i64>,
    last: Option<Instant>,
    /// Whether anything changed since the last report.
    changed: bool,
}

impl ArrangementStats {
    /// Registers the loggers on `worker` if the environment asks for them. Must run before
    /// the dataflow is built: operators take their loggers when they are constructed.
    pub fn enable(worker: &mut timely::worker::Worker) -> Option<Rc<RefCell<ArrangementStats>>> {
        if std::env::var("TRAILSPARK_ARRANGEMENT_STATS")
            .ok()
            .as_deref()
            != Some("1")
        {
            return None;
        }
        let stats = Rc::new(RefCell::new(ArrangementStats::default()));
        let mut registry = worker.log_register()?;
        let s = stats.clone();
        registry.insert::<TimelyEventBuilder, _>("timely", move |_t, data| {
            if let Some(events) = data {
                for (_, e) in events.iter() {
                    if let TimelyEvent::Operates(o) = e {
                        s.borrow_mut().names.insert(o.id, o.name.clone());
                    }
                }
            }
        });
        let s = stats.clone();
        registry.insert::<DifferentialEventBuilder, _>("differential/arrange", move |_t, data| {
            if let Some(events) = data {
                let mut s = s.borrow_mut();
                for (_, e) in events.iter() {
                    let (op, change) = match e {
                        DifferentialEvent::Batch(b) => (b.operator, b.length as i64),
                        DifferentialEvent::Merge(m) => match m.complete {
                            Some(n) => (m.operator, n as i64 - (m.length1 + m.length2) as i64),
                            None => continue,
                        },
                        DifferentialEvent::Drop(d) => (d.operator, -(d.length as i64)),
                        _ => continue,
                    };
                    *s.held.entry(op).or_default() += change;
                    s.changed |= change != 0;
                }
            }
        });
        Some(stats)
    }

    /// Logs the largest arrangements, at most every ten seconds.
    pub fn report(&mut self, worker: usize, upto: u64) {
        if self
            .last
            .is_some_and(|t| t.elapsed() < Duration::from_secs(10))
        {
            return;
        }
        self.last = Some(Instant::now());
        let mut rows: Vec<(i64, String)> = self
            .held
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(op, n)| {
                let name = self.names.get(op).cloned().unwrap_or_default();
                (*n, format!("{name}#{op}"))
            })
            .collect();
        if rows.is_empty() {
            return;
        }
        rows.sort_by(|a, b| b.cmp(a));
        let total: i64 = rows.iter().map(|r| r.0).sum();
        let top: Vec<String> = rows
            .iter()
            .take(25)
            .map(|(n, name)| format!("{name}={n}"))
            .collect();
        tracing::info!(worker, upto, total, arrangements = %top.join(" "), "Arrangement sizes (updates held).");
    }
}
