//! The changes downstream consumers hear about (published by the change-event sink), found
//! while the models apply the dataflow's output.

use std::collections::{BTreeSet, HashMap};

use trailspark_operators::identity::SignalKey;
use trailspark_operators::leads::LeadProfile;
use trailspark_operators::status::{Processed, Status};
use trailspark_operators::usage::Meter;
use trailspark_operators::{Ident, Org};

use super::epoch::Batch;
use super::models::Models;

/// A change downstream consumers hear about, derived while the models apply the dataflow's
/// output (published by the change-event sink, `crate::nats_events`).
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// A lead appeared or its merged profile changed.
    Lead {
        lead: Ident,
        created: bool,
        profile: LeadProfile,
    },
    /// An identifier joined another identifier's lead (from `previous`, when it had one).
    IdentityMerged {
        ident: Ident,
        lead: Ident,
        previous: Option<Ident>,
    },
    /// A signal was mapped by a rule (and attributed to a lead, when it has one).
    SignalMapped {
        key: SignalKey,
        processed: Processed,
    },
    /// A lead was evaluated.
    LeadEvaluated(std::sync::Arc<trailspark_core::scoring::Evaluation>),
    /// A usage meter moved.
    Usage {
        org: Org,
        month: u32,
        meter: Meter,
        old: i64,
        new: i64,
    },
}

/// Merges a batch's changes: a lead's last profile (created if any step created it), a
/// signal's last mapping, a meter's first old and last new value; merges are kept in order.
pub fn coalesce(changes: Vec<Change>) -> Vec<Change> {
    let mut out: Vec<Change> = Vec::with_capacity(changes.len());
    let mut leads: HashMap<Ident, usize> = HashMap::new();
    let mut mapped: HashMap<SignalKey, usize> = HashMap::new();
    let mut meters: HashMap<(Org, u32, Meter), usize> = HashMap::new();
    for c in changes {
        match c {
            Change::Lead {
                lead,
                created,
                profile,
            } => match leads.get(&lead) {
                Some(&i) => {
                    if let Change::Lead {
                        created: c0,
                        profile: p0,
                        ..
                    } = &mut out[i]
                    {
                        *c0 |= created;
                        *p0 = profile;
                    }
                }
                None => {
                    leads.insert(lead.clone(), out.len());
                    out.push(Change::Lead {
                        lead,
                        created,
                        profile,
                    });
                }
            },
            Change::SignalMapped { key, processed } => match mapped.get(&key) {
                Some(&i) => out[i] = Change::SignalMapped { key, processed },
                None => {
                    mapped.insert(key, out.len());
                    out.push(Change::SignalMapped { key, processed });
                }
            },
            Change::Usage {
                org,
                month,
                meter,
                old,
                new,
            } => match meters.get(&(org, month, meter)) {
                Some(&i) => {
                    if let Change::Usage { new: n0, .. } = &mut out[i] {
                        *n0 = new;
                    }
                }
                None => {
                    meters.insert((org, month, meter), out.len());
                    out.push(Change::Usage {
                        org,
                        month,
                        meter,
                        old,
                        new,
                    });
                }
            },
            c @ (Change::IdentityMerged { .. } | Change::LeadEvaluated(_)) => out.push(c),
        }
    }
    out
}

/// What a signal's mapping is, for deciding whether a `signal.mapped` event is due.
fn mapping_of(p: &Processed) -> (Status, Option<u64>, Option<Ident>) {
    (p.status, p.rule_id, p.lead.clone())
}

impl Models {
    fn usage(&self, (org, month, meter): (Org, u32, Meter)) -> i64 {
        self.org(org)
            .usage
            .get(&(month, meter))
            .copied()
            .unwrap_or(0)
    }

    /// Applies one update; with `out`, also records the [`Change`]s it made. Changes are
    /// found by comparing the touched keys' values before and after the update, so they do
    /// not depend on how the update's records are ordered.
    pub(super) fn apply_collect(&mut self, update: Batch, out: Option<&mut Vec<Change>>) {
        let Some(out) = out else {
            return self.apply_plain(update);
        };
        match update {
            Batch::Processed(v) => {
                let keys: BTreeSet<SignalKey> = v.iter().map(|((k, _), _)| *k).collect();
                let old: Vec<_> = keys
                    .into_iter()
                    .map(|k| (k, self.processed.get(&k).as_ref().map(mapping_of)))
                    .collect();
                self.apply_plain(Batch::Processed(v));
                for (key, before) in old {
                    if let Some(p) = self.processed.get(&key) {
                        if p.status == Status::Completed
                            && p.rule_id.is_some()
                            && before != Some(mapping_of(&p))
                        {
                            out.push(Change::SignalMapped { key, processed: p });
                        }
                    }
                }
            }
            Batch::Membership(v) => {
                let idents: BTreeSet<Ident> = v.iter().map(|((i, _), _)| i.clone()).collect();
                let old: Vec<_> = idents
                    .into_iter()
                    .map(|i| {
                        let l = self.org(i.org).lead_of.get(&i).cloned();
                        (i, l)
                    })
                    .collect();
                self.apply_plain(Batch::Membership(v));
                for (ident, previous) in old {
                    let Some(lead) = self.org(ident.org).lead_of.get(&ident) else {
                        continue;
                    };
                    let moved = match &previous {
                        Some(p) => p != lead,
                        None => ident != *lead,
                    };
                    if moved {
                        out.push(Change::IdentityMerged {
                            lead: lead.clone(),
                            ident,
                            previous,
                        });
                    }
                }
            }
            Batch::Leads(v) => {
                let keys: BTreeSet<Ident> = v.iter().map(|((l, _), _)| l.clone()).collect();
                let old: Vec<_> = keys
                    .into_iter()
                    .map(|l| {
                        let p = self.org(l.org).leads.get(&l).cloned();
                        (l, p)
                    })
                    .collect();
                self.apply_plain(Batch::Leads(v));
                for (lead, before) in old {
                    if let Some(now) = self.org(lead.org).leads.get(&lead) {
                        if before.as_ref() != Some(now) {
                            out.push(Change::Lead {
                                created: before.is_none(),
                                profile: now.clone(),
                                lead,
                            });
                        }
                    }
                }
            }
            Batch::Usage(v) => {
                let keys: BTreeSet<(Org, u32, Meter)> = v.iter().map(|((k, _), _)| *k).collect();
                let old: Vec<_> = keys.into_iter().map(|k| (k, self.usage(k))).collect();
                self.apply_plain(Batch::Usage(v));
                for (k, before) in old {
                    let now = self.usage(k);
                    if now != before {
                        out.push(Change::Usage {
                            org: k.0,
                            month: k.1,
                            meter: k.2,
                            old: before,
                            new: now,
                        });
                    }
                }
            }
            Batch::Evaluations(v) => {
                for e in v {
                    if self
                        .org_mut(e.org_id.0)
                        .scoring
                        .insert_evaluation(e.clone())
                    {
                        out.push(Change::LeadEvaluated(e));
                    }
                }
            }
            other => self.apply_plain(other),
        }
    }
}
