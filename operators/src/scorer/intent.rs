//! Intent from signals, and engagement from product usage.
//!
//! Each signal in the window adds its importance times `1 − age / lookback` (linear decay to
//! zero at the window's edge, as MadKudu's Likelihood to Buy does), doubled for a High Intent
//! rule. Importance is a base per signal type plus the weights of the ICP's positive and
//! negative signal criteria it matches. Each signal type adds at most 40 points, so a flood
//! of page views alone cannot make a lead hot.

use std::collections::BTreeMap;

use trailspark_core::rules::SignalType;
use trailspark_core::scoring::{Contribution, Criteria, SignalCriterion};

use super::{LeadInput, SignalInput};

pub(super) struct Dimension {
    pub score: f64,
    pub contributions: Vec<Contribution>,
}

const PER_TYPE_CAP: f64 = 40.0;
const DAY: f64 = 86_400_000.0;

/// What a signal of each type is worth before decay.
pub(super) fn base(t: SignalType) -> f64 {
    match t {
        SignalType::PageView => 2.0,
        SignalType::EmailOpen => 1.0,
        SignalType::EmailClick => 3.0,
        SignalType::FormFill => 8.0,
        SignalType::ProductActivity => 5.0,
        SignalType::SalesEvent => 12.0,
    }
}

fn matches(c: &SignalCriterion, s: &SignalInput) -> bool {
    let name_ok = c
        .name
        .as_ref()
        .is_none_or(|n| s.name.to_lowercase().contains(&n.to_lowercase()));
    let type_ok = c.signal_type.is_none_or(|t| t == s.signal_type);
    name_ok && type_ok
}

fn type_name(t: SignalType) -> String {
    serde_json::to_value(t)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

pub(super) fn intent(lead: &LeadInput, c: &Criteria) -> Dimension {
    let lookback = f64::from(lead.lookback_days.max(1)) * DAY;
    // Per rule name: count, points, weight applied, latest time.
    struct Agg {
        t: SignalType,
        count: u32,
        high: u32,
        points: f64,
        weight: i32,
        criterion: String,
        latest: i64,
    }
    let mut by_name: BTreeMap<&str, Agg> = BTreeMap::new();
    for s in &lead.signals {
        let age = (lead.now - s.event_at).max(0) as f64;
        let decay = (1.0 - age / lookback).max(0.0);
        let mut importance = base(s.signal_type);
        let mut weight = 0i32;
        let mut criteria = Vec::new();
        for p in c.positive_signals.iter().filter(|p| matches(p, s)) {
            importance += f64::from(p.weight);
            weight += p.weight as i32;
            criteria.push(format!("positive signal {}", describe(p)));
        }
        for n in c.negative_signals.iter().filter(|n| matches(n, s)) {
            importance -= 2.0 * f64::from(n.weight);
            weight -= n.weight as i32;
            criteria.push(format!("negative signal {}", describe(n)));
        }
        if s.high_intent {
            importance *= 2.0;
        }
        let a = by_name.entry(&s.name).or_insert(Agg {
            t: s.signal_type,
            count: 0,
            high: 0,
            points: 0.0,
            weight,
            criterion: String::new(),
            latest: s.event_at,
        });
        a.count += 1;
        a.high += u32::from(s.high_intent);
        a.points += importance * decay;
        a.latest = a.latest.max(s.event_at);
        if a.criterion.is_empty() {
            let mut text = format!(
                "{} signal, base {}",
                type_name(s.signal_type),
                base(s.signal_type)
            );
            if !criteria.is_empty() {
                text.push_str(", ");
                text.push_str(&criteria.join(", "));
            }
            if s.high_intent {
                text.push_str(", high intent ×2");
            }
            a.criterion = text;
        }
    }
    // The per-type cap scales each type's contributions down to at most the cap.
    let mut per_type: BTreeMap<SignalType, f64> = BTreeMap::new();
    for a in by_name.values() {
        *per_type.entry(a.t).or_default() += a.points.max(0.0);
    }
    let mut total = 0.0;
    let mut out = Vec::new();
    for (name, a) in by_name {
        let positive_total = per_type[&a.t];
        let scale = if positive_total > PER_TYPE_CAP && a.points > 0.0 {
            PER_TYPE_CAP / positive_total
        } else {
            1.0
        };
        let points = (a.points * scale * 10.0).round() / 10.0;
        total += points;
        let days = ((lead.now - a.latest).max(0) as f64 / DAY).floor() as i64;
        let mut value = format!(
            "{} signal{}, latest {} day{} ago",
            a.count,
            if a.count == 1 { "" } else { "s" },
            days,
            if days == 1 { "" } else { "s" }
        );
        if a.high > 0 {
            value.push_str(&format!(", {} high intent", a.high));
        }
        let mut criterion = a.criterion;
        if scale < 1.0 {
            criterion.push_str(&format!(", capped at {PER_TYPE_CAP} per signal type"));
        }
        out.push(Contribution {
            dimension: "intent".into(),
            input: format!("signal:{name}"),
            value,
            criterion,
            weight: a.weight.clamp(-10, 10),
            points,
        });
    }
    Dimension {
        score: total,
        contributions: out,
    }
}

fn describe(c: &SignalCriterion) -> String {
    match (&c.name, c.signal_type) {
        (Some(n), Some(t)) => format!("\"{n}\" ({})", type_name(t)),
        (Some(n), None) => format!("\"{n}\""),
        (None, Some(t)) => type_name(t),
        (None, None) => "any".into(),
    }
}

/// Engagement from the lead's product orgs (the most engaged one counts), or `None` without
/// product data.
pub(super) fn usage(lead: &LeadInput) -> Option<Dimension> {
    lead.product_orgs
        .iter()
        .map(|p| {
            let mut out = Vec::new();
            let mut add =
                |input: &str, value: String, criterion: &str, weight: i32, points: f64| {
                    out.push(Contribution {
                        dimension: "usage".into(),
                        input: format!("product_org.{input}"),
                        value,
                        criterion: criterion.into(),
                        weight,
                        points,
                    })
                };
            let mut score = 30.0;
            match p.trial_status.as_deref() {
                Some("converted") => {
                    score += 25.0;
                    add(
                        "trial_status",
                        "converted".into(),
                        "converted from trial",
                        8,
                        25.0,
                    );
                }
                Some("active") => {
                    score += 15.0;
                    add(
                        "trial_status",
                        "active".into(),
                        "trial in progress",
                        5,
                        15.0,
                    );
                }
                Some("expired") => {
                    score -= 10.0;
                    add("trial_status", "expired".into(), "trial expired", -4, -10.0);
                }
                _ => {}
            }
            if let Some(mrr) = p.mrr.filter(|m| *m > 0) {
                score += 20.0;
                add(
                    "mrr",
                    format!("{:.2}", mrr as f64 / 100.0),
                    "paying (MRR above 0)",
                    7,
                    20.0,
                );
            }
            match p.user_count {
                Some(n) if n >= 10 => {
                    score += 15.0;
                    add("user_count", n.to_string(), "10 or more users", 5, 15.0);
                }
                Some(n) if n >= 3 => {
                    score += 8.0;
                    add("user_count", n.to_string(), "3 or more users", 3, 8.0);
                }
                _ => {}
            }
            if let Some(at) = p.last_active_at {
                let days = (lead.now - at).max(0) / 86_400_000;
                let (points, weight, criterion) = match days {
                    0..=7 => (15.0, 5, "active in the last 7 days"),
                    8..=30 => (5.0, 2, "active in the last 30 days"),
                    _ => (-10.0, -4, "inactive for over 30 days"),
                };
                score += points;
                add(
                    "last_active_at",
                    format!("{days} days ago"),
                    criterion,
                    weight,
                    points,
                );
            }
            Dimension {
                score,
                contributions: out,
            }
        })
        .max_by(|a, b| a.score.total_cmp(&b.score))
}
