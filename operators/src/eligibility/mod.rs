//! Eligibility: which leads an evaluation may run for, and why the others wait.
//!
//! Per lead the dataflow keeps its mapped signals (time, position, signal type, high intent)
//! and its latest evaluation, read back from the log. Joined with its org's scoring
//! environment (site settings and the evaluator's clock), that decides the lead's
//! [`Eligibility`]: the first checks of the product's evaluation pipeline (minimum signals
//! and signal types in the lookback window, the cooldown), and whether anything changed
//! since the last evaluation. The evaluator applies the rest (evaluation rules, the quota,
//! the active model), which need state outside the dataflow.
//!
//! Time: the window and the cooldown are measured against the org's clock, which moves only
//! when the log says so (a batch tick, or a manual evaluation's tick), never with the wall
//! clock. A replay therefore derives the same eligibility the evaluator saw, and a clock step
//! re-derives only that org's leads. Between ticks a signal that ages out of the window still
//! counts; the next tick removes it.

use std::collections::BTreeSet;

use differential_dataflow::lattice::Lattice;
use differential_dataflow::VecCollection;
use serde::{Deserialize, Serialize};
use timely::order::TotalOrder;
use timely::progress::Timestamp;
use trailspark_core::scoring::{ScoringSettings, SkipReason, Trigger};

use crate::footprint::MeasuredByKey;
use crate::ident::{Ident, Org};
use crate::rules::SignalType;

/// A mapped signal of a lead, as eligibility needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Activity {
    pub event_at: i64,
    pub pos: u64,
    pub signal_type: SignalType,
    pub high_intent: bool,
}

/// What a lead's latest evaluation fixed: when it ran, its cooldown and the newest signal it
/// considered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EvalMark {
    pub evaluated_at: i64,
    pub cooldown_until: Option<i64>,
    pub basis_pos: u64,
}

/// An org's scoring environment: its settings and its clock (ms).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Env {
    pub settings: ScoringSettings,
    pub now: i64,
}

/// Where a lead stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Standing {
    /// Nothing new since its last evaluation.
    UpToDate,
    /// Held back by one of the dataflow's checks.
    Skipped(SkipReason),
    /// May be evaluated now, by this trigger.
    Eligible(Trigger),
}

/// A lead's eligibility as of its org's clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Eligibility {
    /// Mapped signals in the lookback window, and their distinct signal types.
    pub window_signals: u32,
    pub window_types: u32,
    /// High-intent signals in the window that arrived after the last evaluation.
    pub new_high_intent: u32,
    /// The newest mapped signal's log position: an evaluation records it as its basis.
    pub basis_pos: u64,
    pub standing: Standing,
    pub last: Option<EvalMark>,
    /// The clock it was decided at.
    pub as_of: i64,
}

/// What one lead's reduce holds: its mapped signals and its evaluations.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
enum Item {
    Signal(Activity),
    Evaluated(EvalMark),
}

/// A lead's signals and latest evaluation, condensed.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LeadActivity {
    /// Sorted by time.
    pub signals: Vec<Activity>,
    pub last: Option<EvalMark>,
}

/// The latest of a lead's evaluations: by time, then by basis.
pub fn latest(marks: impl IntoIterator<Item = EvalMark>) -> Option<EvalMark> {
    marks
        .into_iter()
        .max_by_key(|m| (m.evaluated_at, m.basis_pos))
}

/// A lead's eligibility, decided in the order of the product's evaluation pipeline (the
/// checks the dataflow can make: signals, signal types, cooldown), for a batch trigger.
/// High intent bypasses the cooldown only; nothing bypasses the signal thresholds.
pub fn decide(a: &LeadActivity, env: &Env) -> Option<Eligibility> {
    let basis_pos = a.signals.iter().map(|s| s.pos).max()?;
    let start = env.settings.window_start(env.now);
    let seen = a.last.map_or(0, |m| m.basis_pos);
    let window = a.signals.iter().filter(|s| s.event_at >= start);
    let (mut n, mut high) = (0u32, 0u32);
    let mut types = BTreeSet::new();
    for s in window {
        n += 1;
        types.insert(s.signal_type);
        if s.high_intent && (a.last.is_none() || s.pos > seen) {
            high += 1;
        }
    }
    let s = &env.settings;
    let standing = if a.last.is_some() && basis_pos <= seen {
        Standing::UpToDate
    } else if n < s.min_signals {
        Standing::Skipped(SkipReason::InsufficientSignals)
    } else if (types.len() as u32) < s.min_signal_types {
        Standing::Skipped(SkipReason::InsufficientSignalTypes)
    } else if high > 0 {
        Standing::Eligible(Trigger::HighIntent)
    } else if s.cooling_off_enabled
        && a.last
            .and_then(|m| m.cooldown_until)
            .is_some_and(|until| env.now < until)
    {
        Standing::Skipped(SkipReason::Cooldown)
    } else if a.last.is_some() {
        Standing::Eligible(Trigger::ReEvaluation)
    } else {
        Standing::Eligible(Trigger::Batch)
    };
    Some(Eligibility {
        window_signals: n,
        window_types: types.len() as u32,
        new_high_intent: high,
        basis_pos,
        standing,
        last: a.last,
        as_of: env.now,
    })
}

/// The checks a manual evaluation must pass: those of [`decide`] but the cooldown and the
/// "nothing new" test (a user may ask for a fresh evaluation at any time).
pub fn manual_check(e: &Eligibility, settings: &ScoringSettings) -> Result<(), SkipReason> {
    if e.window_signals < settings.min_signals {
        Err(SkipReason::InsufficientSignals)
    } else if e.window_types < settings.min_signal_types {
        Err(SkipReason::InsufficientSignalTypes)
    } else {
        Ok(())
    }
}

/// Condenses one lead's items.
pub fn condense<'a>(
    items: impl IntoIterator<Item = (&'a Activity, isize)>,
    marks: &[EvalMark],
) -> LeadActivity {
    let mut signals = Vec::new();
    for (a, n) in items {
        for _ in 0..n.max(0) {
            signals.push(*a);
        }
    }
    signals.sort();
    LeadActivity {
        signals,
        last: latest(marks.iter().copied()),
    }
}

/// The eligibility of every lead with mapped signals, from its activity, its evaluations and
/// its org's environment.
pub fn eligibility<'s, T>(
    activity: VecCollection<'s, T, (Ident, Activity), isize>,
    marks: VecCollection<'s, T, (Ident, EvalMark), isize>,
    env: VecCollection<'s, T, (Org, Env), isize>,
) -> VecCollection<'s, T, (Ident, Eligibility), isize>
where
    T: Timestamp + Lattice + TotalOrder,
{
    let leads = activity
        .map(|(l, a)| (l, Item::Signal(a)))
        .concat(marks.map(|(l, m)| (l, Item::Evaluated(m))))
        .reduce_measured("LeadActivity", |_lead, items, out| {
            let mut signals = Vec::new();
            let mut marks = Vec::new();
            for (item, n) in items {
                match item {
                    Item::Signal(a) => signals.push((a, *n)),
                    Item::Evaluated(m) => marks.push(*m),
                }
            }
            if signals.is_empty() {
                return;
            }
            out.push((condense(signals, &marks), 1));
        });
    leads
        .map(|(lead, a)| (lead.org, (lead, a)))
        .arrange_by_key_measured("Arrange: LeadsByOrg")
        .join_core(
            env.arrange_by_key_measured("Arrange: ScoringEnv"),
            |_org, (lead, a), env| decide(a, env).map(|e| (lead.clone(), e)),
        )
}

#[cfg(test)]
mod tests;
