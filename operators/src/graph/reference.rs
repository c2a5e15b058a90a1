//! The sequential reference of the whole graph: every output computed from the log's signals
//! and rule versions with plain loops, from the same per-record functions the dataflow uses.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::eligibility::Activity;
use crate::groups::{group_row, member, GroupKey, GroupRow, Member};
use crate::ident::{Ident, Org};
use crate::identity::{resolve_reference, signal_idents, IdentityConfig, SignalKey};
use crate::leads::{activity, lead_fact, profile, LeadFact, LeadProfile};
use crate::rules::{match_rules_reference, RuleVersion};
use crate::signal::Signal;
use crate::status::{cold, derive_status, Processed, Status};
use crate::usage::Meter;

/// Dedup's reference: of the signals sharing an org and dedup key, the one with the smallest
/// log position, in any input order (the engine stages it with `trailspark_core::dedup`'s
/// `FirstSeen` as it reads the log in order).
pub fn dedup_reference(signals: &[Signal]) -> Vec<Signal> {
    let mut first = BTreeMap::new();
    for s in signals {
        first
            .entry((s.org, s.dedup))
            .and_modify(|cur: &mut Signal| {
                if s.pos < cur.pos {
                    *cur = s.clone();
                }
            })
            .or_insert_with(|| s.clone());
    }
    let mut out: Vec<Signal> = first.into_values().collect();
    out.sort();
    out
}

/// The final state of every output, as plain sets (the reference's and the dataflow's).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct State {
    pub unique: BTreeSet<Signal>,
    pub processed: BTreeSet<(SignalKey, Processed)>,
    pub membership: BTreeSet<(Ident, Ident)>,
    pub groups: BTreeSet<((Org, GroupKey), GroupRow)>,
    pub usage: BTreeSet<((Org, u32, Meter), isize)>,
    pub leads: BTreeSet<(Ident, LeadProfile)>,
    pub activity: BTreeSet<(Ident, Activity)>,
}

/// Sequential reference of [`super::build`].
pub fn reference(signals: &[Signal], rules: &[RuleVersion], cfg: &IdentityConfig) -> State {
    let unique = dedup_reference(signals);
    let winners = match_rules_reference(&unique, rules);
    let mut facts: Vec<(SignalKey, Ident)> =
        unique.iter().flat_map(|s| signal_idents(s, cfg)).collect();
    for ((org, pos), m) in &winners {
        for (k, v) in &m.ids {
            if cfg.allows(v) {
                facts.push(((*org, *pos), Ident::new(*org, *k, v.clone())));
            }
        }
    }
    facts.sort();
    facts.dedup();
    let identity = resolve_reference(&facts, cfg);
    let lead_of: BTreeMap<SignalKey, Ident> = identity.signal_lead.iter().cloned().collect();

    let mut state = State {
        unique: unique.iter().cloned().collect(),
        membership: identity.membership,
        ..Default::default()
    };
    let mut lead_facts: BTreeMap<Ident, Vec<LeadFact>> = BTreeMap::new();
    let mut usage: BTreeMap<(Org, u32, Meter), isize> = BTreeMap::new();
    let mut active: BTreeSet<(Org, u32, Ident)> = BTreeSet::new();
    let mut members: BTreeMap<(Org, Arc<GroupKey>), Vec<Member>> = BTreeMap::new();
    for s in signals {
        *usage
            .entry((s.org, Signal::month_of(s.received_at), Meter::RawSignals))
            .or_default() += 1;
    }
    for s in &unique {
        let key = (s.org, s.pos);
        let winner = winners.get(&key);
        let p = derive_status(s, cold(s, cfg), winner, lead_of.get(&key));
        let month = Signal::month_of(s.received_at);
        *usage
            .entry((s.org, month, Meter::StagedSignals))
            .or_default() += 1;
        if p.status == Status::Completed {
            *usage
                .entry((s.org, month, Meter::MappedSignals))
                .or_default() += 1;
        }
        if let Some(l) = &p.lead {
            active.insert((s.org, month, l.clone()));
            let fields = winner.map(|m| m.fields.clone()).unwrap_or_default();
            lead_facts
                .entry(l.clone())
                .or_default()
                .push(lead_fact(s, &p, &fields));
        }
        if p.status != Status::Pending {
            let (gk, m) = member(s, winner.is_some());
            members.entry(gk).or_default().push(m);
        }
        state.processed.insert((key, p));
    }
    for (org, month, _) in active {
        *usage.entry((org, month, Meter::Leads)).or_default() += 1;
    }
    state.usage = usage.into_iter().collect();
    state.activity = lead_facts
        .iter()
        .flat_map(|(l, fs)| {
            fs.iter()
                .filter_map(|f| activity(f).map(|a| (l.clone(), a)))
        })
        .collect();
    state.leads = lead_facts
        .into_iter()
        .map(|(l, fs)| {
            let refs: Vec<&LeadFact> = fs.iter().collect();
            (l, profile(&refs))
        })
        .collect();
    state.groups = members
        .into_iter()
        .map(|(k, ms)| {
            let refs: Vec<&Member> = ms.iter().collect();
            ((k.0, GroupKey::clone(&k.1)), group_row(&refs))
        })
        .collect();
    state
}
