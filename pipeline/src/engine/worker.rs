//! A timely worker: builds the dataflow, feeds it the epochs the feeder sends, and reports
//! its outputs' changes and completed positions to the read models.

use std::collections::VecDeque;
use std::sync::mpsc::{Sender, TryRecvError};
use std::time::{Duration, Instant};

use differential_dataflow::input::Input;
use timely::dataflow::ProbeHandle;
use trailspark_operators::eligibility::{eligibility, Env, EvalMark};
use trailspark_operators::graph::build;
use trailspark_operators::identity::IdentityConfig;
use trailspark_operators::product_orgs::{product_orgs, ProductOrgUpdate};
use trailspark_operators::rules::RuleVersion;
use trailspark_operators::usage::Meter;
use trailspark_operators::{Ident, Org, Signal};
use trailspark_sinks::read_models::{Marker, Update};

use super::channel::FeedRx;
use super::feeder::{Epoch, Feed};
use super::stats;

/// Told, on worker 0, each time an epoch is complete in the whole dataflow.
pub(super) type OnComplete = std::sync::Arc<dyn Fn() + Send + Sync>;

pub(super) fn run(
    worker: &mut timely::worker::Worker,
    rx: FeedRx<Feed>,
    tx: Sender<Update>,
    on_complete: Option<OnComplete>,
    identity: &IdentityConfig,
    with_eligibility: bool,
) {
    let index = worker.index();
    let stats = stats::ArrangementStats::enable(worker);
    let probe = ProbeHandle::new();
    let (mut signals_in, mut counted_in, mut rules_in, mut orgs_in, mut marks_in, mut env_in) =
        worker.dataflow::<u64, _, _>(|scope| {
            let (signals_in, signals) = scope.new_collection::<(u64, Signal), isize>();
            let (counted_in, counted) = scope.new_collection::<(Org, u32, Meter), isize>();
            let (rules_in, rules) = scope.new_collection::<RuleVersion, isize>();
            let (orgs_in, updates) = scope.new_collection::<ProductOrgUpdate, isize>();
            let (marks_in, marks) = scope.new_collection::<(Ident, EvalMark), isize>();
            let (env_in, env) = scope.new_collection::<(Org, Env), isize>();
            let out = build(signals, counted, rules, identity);
            // Without evaluation the stage is not built (its inputs stay empty).
            let eligible = with_eligibility.then(|| eligibility(out.activity, marks, env));
            macro_rules! sink {
                ($coll:expr, $variant:ident) => {{
                    let tx = tx.clone();
                    $coll
                        .inspect_batch(move |_t, updates| {
                            let v = updates
                                .iter()
                                .map(|(d, t, r)| (d.clone(), *t, *r))
                                .collect();
                            let _ = tx.send(Update::$variant(v));
                        })
                        .probe_with(&probe);
                }};
            }
            sink!(out.processed, Processed);
            sink!(out.membership, Membership);
            sink!(out.conflicts, Conflicts);
            sink!(out.groups, Groups);
            sink!(out.usage, Usage);
            sink!(out.leads, Leads);
            sink!(product_orgs(updates), ProductOrgs);
            if let Some(eligible) = eligible {
                sink!(eligible, Eligibility);
            }
            (signals_in, counted_in, rules_in, orgs_in, marks_in, env_in)
        });
    // Epochs fed and not yet complete.
    let mut closing: VecDeque<(Marker, Instant)> = VecDeque::new();
    let mut completed = 0u64;
    rx.register();
    loop {
        let fed = match rx.rx.try_recv() {
            Ok(Feed::Batch(Epoch {
                signals,
                counted,
                rules,
                product_orgs,
                evaluations,
                crm,
                marks,
                env,
                reprocessing,
                upto,
                side,
                sides,
                committed,
                ..
            })) => {
                // Everything enters at the epoch's time (see the module doc).
                let now = *signals_in.time();
                for (s, d) in signals {
                    signals_in.update_at(s, now, d);
                }
                for (m, n) in counted {
                    counted_in.update_at(m, now, n);
                }
                for (r, d) in rules {
                    rules_in.update_at(r, now, d);
                }
                for u in product_orgs {
                    orgs_in.update_at(u, now, 1);
                }
                for m in marks {
                    marks_in.update_at(m, now, 1);
                }
                for (e, d) in env {
                    env_in.update_at(e, now, d);
                }
                if !crm.is_empty() {
                    let v = crm.into_iter().map(|b| (b, now)).collect();
                    let _ = tx.send(Update::Crm(v));
                }
                if !evaluations.is_empty() {
                    let v = evaluations.into_iter().map(|e| (e, now)).collect();
                    let _ = tx.send(Update::Evaluations(v));
                }
                let next = if side {
                    now + 1
                } else {
                    (2 * upto + 1).max(now + 1)
                };
                signals_in.advance_to(next);
                counted_in.advance_to(next);
                rules_in.advance_to(next);
                orgs_in.advance_to(next);
                marks_in.advance_to(next);
                env_in.advance_to(next);
                signals_in.flush();
                counted_in.flush();
                rules_in.flush();
                orgs_in.flush();
                marks_in.flush();
                env_in.flush();
                // What the read models are told once it is complete, and when it was fed.
                let marker = Marker {
                    time: next - 1,
                    pos: upto,
                    sides,
                    reprocessing,
                    committed,
                };
                closing.push_back((marker, Instant::now()));
                true
            }
            Err(TryRecvError::Empty) => false,
            Err(TryRecvError::Disconnected) => break,
        };
        super::merging::set_busy(!closing.is_empty());
        if fed {
            worker.step();
        } else {
            // Nothing new: step what is active, or park until the feeder or another worker
            // wakes this one (see `super::channel`). Idle merging keeps arrangements activated,
            // so they are still compacted while no epoch is in flight. The timeout only
            // bounds how long a missed wake-up could cost.
            worker.step_or_park(Some(Duration::from_millis(50)));
        }
        while let Some((marker, _)) = closing.front() {
            if probe.less_than(&(marker.time + 1)) {
                break;
            }
            let (marker, fed_at) = closing.pop_front().expect("a front");
            completed = marker.pos;
            if index == 0 {
                let metrics = &crate::metrics::METRICS;
                metrics
                    .epoch_duration
                    .observe(fed_at.elapsed().as_secs_f64());
                if let Some(at) = marker.committed {
                    crate::metrics::since(&metrics.freshness.complete, at);
                }
                let _ = tx.send(Update::Applied(marker));
            }
            if let Some(done) = &on_complete {
                done();
            }
        }
        if let Some(s) = &stats {
            s.borrow_mut().report(index, completed);
        }
    }
    trailspark_operators::footprint::clear();
}
