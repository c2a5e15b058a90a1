//! Arrangement sizes, for finding where the dataflow's memory goes.
//!
//! Each worker counts the updates held by every arrangement (from differential's batch, merge
//! and drop events, which balance) and publishes them, summed by operator name, as the
//! `trailspark_arrangement_records` metric about once a second. These events come once per
//! batch and merge, not per record, so counting them is cheap; the operators' names come
//! from timely's own log, of which only the `Operates` events (one per operator, at build)
//! are kept. Bytes are not in differential's events: they are measured by walking each
//! arrangement's batches ([`trailspark_operators::footprint`]) at the same pace.
//!
//! With `TRAILSPARK_ARRANGEMENT_STATS=1` the worker also logs the largest arrangements at
//! most every ten seconds while they change, so the last report after a burst (a replay)
//! shows its final state, and sums the time each operator runs (timely's schedule events),
//! without the time of operators nested in it (an iterative scope's own share is its
//! bookkeeping): where a replay's time goes, by operator.

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
    /// Logging reports and operator times (`TRAILSPARK_ARRANGEMENT_STATS=1`).
    detailed: bool,
    /// When the metric was last published.
    published: Option<Instant>,
    /// Names whose gauge this worker set, so that a name that empties is set to zero.
    shown: HashMap<String, i64>,
    /// The same for the bytes gauge.
    shown_bytes: HashMap<String, i64>,
    /// Time spent in each operator, its nested operators' time excluded.
    busy: HashMap<usize, Duration>,
    /// Operators running now, outermost first: (id, started, time of nested operators).
    running: Vec<(usize, Duration, Duration)>,
}

impl ArrangementStats {
    /// Registers the loggers on `worker`. Must run before the dataflow is built: operators
    /// take their loggers when they are constructed.
    pub fn enable(worker: &mut timely::worker::Worker) -> Option<Rc<RefCell<ArrangementStats>>> {
        let detailed = std::env::var("TRAILSPARK_ARRANGEMENT_STATS")
            .ok()
            .as_deref()
            == Some("1");
        let stats = Rc::new(RefCell::new(ArrangementStats {
            detailed,
            ..ArrangementStats::default()
        }));
        trailspark_operators::footprint::enable();
        let mut registry = worker.log_register()?;
        let s = stats.clone();
        registry.insert::<TimelyEventBuilder, _>("timely", move |_t, data| {
            if let Some(events) = data {
                let mut s = s.borrow_mut();
                for (t, e) in events.iter() {
                    match e {
                        TimelyEvent::Operates(o) => {
                            s.names.insert(o.id, o.name.clone());
                        }
                        TimelyEvent::Schedule(e) if s.detailed => {
                            s.schedule(e.id, *t, e.start_stop)
                        }
                        _ => {}
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

    fn schedule(&mut self, id: usize, t: Duration, ev: timely::logging::StartStop) {
        match ev {
            timely::logging::StartStop::Start => self.running.push((id, t, Duration::ZERO)),
            timely::logging::StartStop::Stop => {
                let Some((op, start, nested)) = self.running.pop() else {
                    return;
                };
                let took = t.saturating_sub(start);
                *self.busy.entry(op).or_default() += took.saturating_sub(nested);
                if let Some(parent) = self.running.last_mut() {
                    parent.2 += took;
                }
                self.changed = true;
            }
        }
    }

    /// Publishes the arrangement sizes (about once a second) and, when detailed, logs the
    /// largest arrangements (at most every ten seconds).
    pub fn report(&mut self, worker: usize, upto: u64) {
        if self
            .published
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
        {
            self.published = Some(Instant::now());
            self.publish(worker);
        }
        if !self.detailed {
            return;
        }
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
        let mut busy: Vec<(Duration, String)> = self
            .busy
            .iter()
            .map(|(op, d)| {
                let name = self.names.get(op).cloned().unwrap_or_default();
                (*d, format!("{name}#{op}"))
            })
            .collect();
        busy.sort_by(|a, b| b.cmp(a));
        let total: Duration = busy.iter().map(|r| r.0).sum();
        let top: Vec<String> = busy
            .iter()
            .take(30)
            .map(|(d, name)| format!("{name}={:.2}", d.as_secs_f64()))
            .collect();
        tracing::info!(worker, upto, busy_s = total.as_secs_f64(), operators = %top.join(" "), "Operator time (s, nested operators excluded).");
    }

    /// Sets `trailspark_arrangement_records` for this worker, summed by operator name, and
    /// `trailspark_arrangement_bytes` from the arrangements' own batches
    /// ([`trailspark_operators::footprint`]).
    fn publish(&mut self, worker: usize) {
        let worker = worker.to_string();
        let records = self.held.iter().map(|(op, n)| {
            let name = self.names.get(op).map_or("unnamed", String::as_str);
            (name.to_string(), *n)
        });
        let records = sum_by_name(&self.shown, records);
        set_changed(
            &crate::metrics::METRICS.arrangement_records,
            &self.shown,
            &records,
            &worker,
        );
        self.shown = records;

        let bytes = trailspark_operators::footprint::measure()
            .into_iter()
            .map(|(name, size)| (name, size.bytes as i64));
        let bytes = sum_by_name(&self.shown_bytes, bytes);
        set_changed(
            &crate::metrics::METRICS.arrangement_bytes,
            &self.shown_bytes,
            &bytes,
            &worker,
        );
        self.shown_bytes = bytes;
    }
}

/// `values` summed by name, with 0 for every name shown before and gone now.
fn sum_by_name(
    shown: &HashMap<String, i64>,
    values: impl Iterator<Item = (String, i64)>,
) -> HashMap<String, i64> {
    let mut by_name: HashMap<String, i64> = shown.keys().map(|k| (k.clone(), 0)).collect();
    for (name, n) in values {
        *by_name.entry(name).or_default() += n;
    }
    by_name
}

/// Sets this worker's series of `gauge` whose value differs from what was shown.
fn set_changed(
    gauge: &prometheus::IntGaugeVec,
    shown: &HashMap<String, i64>,
    now: &HashMap<String, i64>,
    worker: &str,
) {
    for (name, n) in now {
        if shown.get(name) != Some(n) {
            gauge.with_label_values(&[name.as_str(), worker]).set(*n);
        }
    }
}
