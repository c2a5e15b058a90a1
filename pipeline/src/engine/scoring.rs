//! What the feeder derives from the log for eligibility: each org's scoring environment
//! (its settings and its clock) and each evaluation's mark on its lead.
//!
//! An org's environment enters when the org is created (default settings, its creation time
//! as its clock) and changes on a settings change or a tick. A tick for every org moves every
//! org's clock; a tick for one org (a manual evaluation) moves that org's only, so one
//! tenant's manual evaluations re-derive none of another's leads.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use trailspark_core::scoring::{Evaluation, ScoringEvent, ScoringSettings};
use trailspark_core::tenancy::ConfigEvent;
use trailspark_operators::eligibility::{Env, EvalMark};
use trailspark_operators::{IdKind, Ident, Org};

#[derive(Default)]
pub(super) struct ScoringFeed {
    env: BTreeMap<Org, Env>,
    /// Evaluations already fed: a retried append of the same evaluation is dropped.
    seen: HashSet<String>,
}

impl ScoringFeed {
    fn set(&mut self, org: Org, next: Env, out: &mut Vec<((Org, Env), isize)>) {
        match self.env.insert(org, next) {
            Some(prev) if prev == next => return,
            Some(prev) => out.push(((org, prev), -1)),
            None => {}
        }
        out.push(((org, next), 1));
    }

    /// The environment changes a config event makes.
    pub fn config(&mut self, e: &ConfigEvent, out: &mut Vec<((Org, Env), isize)>) {
        match e {
            ConfigEvent::OrgCreated(o) => {
                let org = o.id.0;
                if !self.env.contains_key(&org) {
                    let env = Env {
                        settings: ScoringSettings::default(),
                        now: o.created_at,
                    };
                    self.set(org, env, out);
                }
            }
            ConfigEvent::Scoring(ScoringEvent::SettingsSet {
                org_id, settings, ..
            }) => {
                let now = self.env.get(&org_id.0).map_or(0, |e| e.now);
                self.set(
                    org_id.0,
                    Env {
                        settings: *settings,
                        now,
                    },
                    out,
                );
            }
            ConfigEvent::Scoring(ScoringEvent::Tick { at, org_id }) => {
                let orgs: Vec<Org> = match org_id {
                    Some(o) => vec![o.0],
                    None => self.env.keys().copied().collect(),
                };
                for org in orgs {
                    let cur = self.env.get(&org).copied().unwrap_or(Env {
                        settings: ScoringSettings::default(),
                        now: 0,
                    });
                    if *at > cur.now {
                        self.set(org, Env { now: *at, ..cur }, out);
                    }
                }
            }
            _ => {}
        }
    }

    /// An evaluation's mark on its lead, unless it was fed before.
    pub fn evaluation(&mut self, e: &Arc<Evaluation>) -> Option<(Ident, EvalMark)> {
        if !self.seen.insert(e.id.clone()) {
            return None;
        }
        let kind = IdKind::parse(&e.lead.kind)?;
        Some((
            Ident::new(e.org_id.0, kind, e.lead.value.as_str()),
            EvalMark {
                evaluated_at: e.evaluated_at,
                cooldown_until: e.cooldown_until,
                basis_pos: e.basis_pos,
            },
        ))
    }
}
