//! Lead profiles: what a lead's attributed signals say about it, merged.
//!
//! Each signal attributed to a lead contributes one [`LeadFact`]; the profile is a function
//! of the lead's facts, recomputed when one of them changes (a reduce per lead).

use std::collections::BTreeMap;
use std::sync::Arc;

use differential_dataflow::lattice::Lattice;
use differential_dataflow::VecCollection;
use serde::{Deserialize, Serialize};
use timely::progress::Timestamp;

use crate::footprint::MeasuredByKey;
use crate::ident::Ident;
use crate::nodes::Node;
use crate::rules::SignalType;
use crate::signal::Signal;
use crate::status::{Processed, Status};

/// What a lead's profile is made of, per attributed signal.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LeadFact {
    pub event_at: i64,
    pub pos: u64,
    pub signal_type: Option<SignalType>,
    /// Its rule is a High Intent rule (completed signals only).
    pub high_intent: bool,
    /// Shared, like the signal's text: a fact lives in the status and the lead arrangements.
    pub traits: Arc<[(String, String)]>,
    pub product_org: Option<Arc<str>>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LeadProfile {
    pub signals: u64,
    pub first_activity: i64,
    pub last_activity: i64,
    /// Completed signals by rule signal type.
    pub by_type: Vec<(SignalType, u64)>,
    /// Merged traits: per key, the value of the latest signal by event time (then position).
    pub traits: Vec<(String, String)>,
    /// The latest product org named by the lead's signals.
    pub product_org: Option<String>,
    /// Every product org the lead's signals name, sorted: a person can belong to several
    /// (a workspace and a sandbox, two teams), and a later one does not end the earlier.
    pub product_orgs: Vec<String>,
}

pub fn profile(facts: &[&LeadFact]) -> LeadProfile {
    let mut ordered: Vec<&&LeadFact> = facts.iter().collect();
    ordered.sort_by_key(|f| (f.event_at, f.pos));
    // Borrowed while merging, copied once at the end: a profile is recomputed over all of a
    // lead's facts whenever one changes.
    let mut traits: BTreeMap<&str, &str> = BTreeMap::new();
    let mut by_type = BTreeMap::new();
    let mut product_org = None;
    let mut product_orgs = std::collections::BTreeSet::new();
    for f in &ordered {
        for (k, v) in f.traits.iter() {
            traits.insert(k, v);
        }
        if let Some(t) = f.signal_type {
            *by_type.entry(t).or_insert(0u64) += 1;
        }
        if let Some(po) = f.product_org.as_deref() {
            product_org = Some(po);
            product_orgs.insert(po);
        }
    }
    LeadProfile {
        signals: facts.len() as u64,
        first_activity: ordered.first().map_or(0, |f| f.event_at),
        last_activity: ordered.last().map_or(0, |f| f.event_at),
        by_type: by_type.into_iter().collect(),
        traits: traits
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        product_org: product_org.map(str::to_string),
        product_orgs: product_orgs.into_iter().map(str::to_string).collect(),
    }
}

/// What a lead's eligibility needs of one of its facts: mapped signals only.
pub fn activity(f: &LeadFact) -> Option<crate::eligibility::Activity> {
    Some(crate::eligibility::Activity {
        event_at: f.event_at,
        pos: f.pos,
        signal_type: f.signal_type?,
        high_intent: f.high_intent,
    })
}

pub fn lead_fact(s: &Signal, p: &Processed, rule_fields: &[(String, String)]) -> LeadFact {
    let traits = if rule_fields.is_empty() {
        s.traits.clone()
    } else {
        let mut traits = s.traits.to_vec();
        for (k, v) in rule_fields {
            traits.retain(|(key, _)| key != k);
            traits.push((k.clone(), v.clone()));
        }
        traits.sort();
        Arc::from(traits)
    };
    LeadFact {
        event_at: s.event_at,
        pos: s.pos,
        signal_type: if p.status == Status::Completed {
            p.signal_type
        } else {
            None
        },
        high_intent: p.status == Status::Completed && p.high_intent,
        traits,
        product_org: s.product_org.clone(),
    }
}

/// The profile of every lead with attributed signals, from each signal's fact.
pub fn lead_profiles<'s, T>(
    facts: VecCollection<'s, T, (Node, LeadFact), isize>,
) -> VecCollection<'s, T, (Ident, LeadProfile), isize>
where
    T: Timestamp + Lattice,
{
    facts
        .reduce_measured("LeadProfile", |_lead, facts, out| {
            let facts: Vec<&LeadFact> = facts.iter().map(|(f, _)| *f).collect();
            out.push((profile(&facts), 1));
        })
        .map(|(lead, p): (Node, LeadProfile)| (lead.ident(), p))
}
