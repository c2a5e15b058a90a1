//! The models themselves, keyed by org first: everything one tenant's reads touch lives in its
//! own [`OrgModels`], so a query walks that tenant's maps and no other's.
//!
//! Two structures stay shared, each indexed so that a read reaches only its own org's
//! entries: the processed records, stored by log position (a position belongs to one org, and
//! per-org pages would be mostly empty when orgs interleave on the log; every read checks the
//! record's org), and the hot window's index of cold signals (engine bookkeeping, keyed by
//! signal).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::Serialize;
use sha2::{Digest, Sha256};
use trailspark_operators::groups::{GroupKey, GroupRow};
use trailspark_operators::identity::SignalKey;
use trailspark_operators::leads::LeadProfile;
use trailspark_operators::product_orgs::ProductOrg;
use trailspark_operators::status::{Processed, Status};
use trailspark_operators::usage::Meter;
use trailspark_operators::{IdKind, Ident, Org};

use super::cold::ColdIndex;
use super::epoch::{Batch, CrmChange};
use super::processed::ProcessedMap;

/// Explorer statistics of one org.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Stats {
    /// Unique staged signals, anonymous ones included.
    pub total: i64,
    /// Held cold: anonymous, waiting for an identify.
    pub pending: i64,
    /// Completed.
    pub processed: i64,
    pub failed: i64,
    pub skipped: i64,
    /// Of `pending`, those the hot window took out of the dataflow: they wait in the
    /// archive until an identify brings them back.
    pub cold: i64,
}

/// Counts `by` signals of `status` into an org's statistics.
pub fn bump(stats: &mut Stats, status: Status, by: i64) {
    stats.total += by;
    match status {
        Status::Pending => stats.pending += by,
        Status::Completed => stats.processed += by,
        Status::Failed => stats.failed += by,
        Status::Skipped => stats.skipped += by,
    }
}

/// The explorer tab a signal shows on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tab {
    Processed,
    Failed,
    Pending,
}

impl Tab {
    pub fn of(s: Status) -> Tab {
        match s {
            Status::Completed => Tab::Processed,
            Status::Failed | Status::Skipped => Tab::Failed,
            Status::Pending => Tab::Pending,
        }
    }
}

/// The public id of a lead: stable for as long as its key identifier stays its smallest.
pub fn lead_id(lead: &Ident) -> String {
    let mut h = Sha256::new();
    h.update(lead.org.to_le_bytes());
    h.update(lead.kind.as_str().as_bytes());
    h.update([0]);
    h.update(lead.value.as_bytes());
    format!("ld_{}", &hex::encode(h.finalize())[..20])
}

/// Where an org's retention stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Retention {
    /// The time of the pass (Unix ms): rehydrations that end before it end.
    pub now_ms: i64,
    /// Signals received before this (Unix ms) ...
    pub cutoff_ms: i64,
    /// ... and at a log position below this (in an archive file) are retired.
    pub below_pos: u64,
}

impl Retention {
    pub fn retires(&self, pos: u64, p: &Processed) -> bool {
        p.status != Status::Pending && p.received_at < self.cutoff_ms && pos < self.below_pos
    }
}

/// One org's models.
#[derive(Default)]
pub struct OrgModels {
    pub stats: Stats,
    /// Lead key → its identifiers.
    pub members: HashMap<Ident, BTreeSet<Ident>>,
    /// Identifier → the key of its lead.
    pub lead_of: HashMap<Ident, Ident>,
    pub leads: HashMap<Ident, LeadProfile>,
    /// Public lead id → lead key.
    pub lead_ids: HashMap<String, Ident>,
    pub groups: HashMap<GroupKey, GroupRow>,
    /// (month `YYYYMM`, meter) → count.
    pub usage: HashMap<(u32, Meter), i64>,
    pub conflicts: BTreeSet<(Ident, IdKind)>,
    pub product_orgs: HashMap<String, ProductOrg>,
    /// Per lead: its signals' positions (for the lead's timeline).
    pub lead_signals: HashMap<Ident, BTreeSet<u64>>,
    /// Every decided signal by (explorer tab, id): the explorer's pages are range scans.
    pub tabs: BTreeSet<(Tab, u64)>,
    /// The retention cutoff: processed signals received before it and below its
    /// position (archived) have left live state; changes that would bring them back (a
    /// reprocess) are not applied.
    pub retention: Retention,
    /// Archived signals brought back into live state, by id, until when (Unix ms).
    pub rehydrated: HashMap<u64, i64>,
    /// Eligibility, evaluation candidates and evaluations.
    pub scoring: super::scoring::ScoringModels,
    /// Records pulled from the org's CRMs.
    pub crm: super::crm::CrmModels,
}

impl OrgModels {
    /// Groups on the `mapped` or unmapped tab, sorted by count descending, then event type
    /// ascending.
    pub fn groups_of(&self, mapped: bool) -> Vec<(&GroupKey, &GroupRow)> {
        let mut v: Vec<_> = self
            .groups
            .iter()
            .filter(|(_, row)| (row.unmapped == 0) == mapped)
            .collect();
        v.sort_by(|a, b| {
            b.1.count
                .cmp(&a.1.count)
                .then_with(|| a.0.event.cmp(&b.0.event))
                .then_with(|| a.0.cmp(b.0))
        });
        v
    }

    /// Usage in a month (`YYYYMM`).
    pub fn usage_of(&self, month: u32) -> BTreeMap<Meter, i64> {
        self.usage
            .iter()
            .filter(|((m, _), _)| *m == month)
            .map(|((_, meter), n)| (*meter, *n))
            .collect()
    }
}

/// Every org's models, and the two shared indexes (see the module docs).
#[derive(Default)]
pub struct Models {
    pub(super) processed: ProcessedMap,
    /// Anonymous signals out of the dataflow (the hot window).
    pub cold: ColdIndex,
    pub(super) orgs: HashMap<Org, OrgModels>,
}

/// No models: what an org without any signal reads.
static EMPTY: std::sync::LazyLock<OrgModels> = std::sync::LazyLock::new(OrgModels::default);

impl Models {
    /// An org's models (empty when nothing of it has been applied).
    pub fn org(&self, org: Org) -> &OrgModels {
        self.orgs.get(&org).unwrap_or(&EMPTY)
    }

    pub(super) fn org_mut(&mut self, org: Org) -> &mut OrgModels {
        self.orgs.entry(org).or_default()
    }

    /// Entries of each model, all orgs together (the `trailspark_read_model_entries`
    /// metric): a count per model, not bytes, read by walking the orgs.
    pub fn entry_counts(&self) -> Vec<(&'static str, u64)> {
        let mut c = [0usize; 8];
        for o in self.orgs.values() {
            c[0] += o.leads.len();
            c[1] += o.lead_of.len();
            c[2] += o.groups.len();
            c[3] += o.product_orgs.len();
            c[4] += o.scoring.by_time.len();
            c[5] += o.crm.len();
            c[6] += o.usage.len();
            c[7] += o.conflicts.len();
        }
        let names = [
            "leads",
            "identifiers",
            "signal_groups",
            "product_orgs",
            "evaluations",
            "crm_records",
            "usage_counters",
            "identity_conflicts",
        ];
        let mut out: Vec<(&'static str, u64)> =
            names.into_iter().zip(c.map(|n| n as u64)).collect();
        out.push(("processed_signals", self.processed.len() as u64));
        out.push(("cold_signals", self.cold.len() as u64));
        out.push(("orgs", self.orgs.len() as u64));
        out
    }

    /// The orgs that have models, in no order.
    pub fn orgs(&self) -> impl Iterator<Item = Org> + '_ {
        self.orgs.keys().copied()
    }

    /// The processed record of signal `pos`, if it is `org`'s and live.
    pub fn processed(&self, org: Org, pos: u64) -> Option<Processed> {
        self.processed.get(&(org, pos))
    }

    /// Every live processed record, of every org, by position (for tests and checks that
    /// span the whole log).
    pub fn all_processed(&self) -> impl Iterator<Item = (SignalKey, Processed)> + '_ {
        self.processed.iter()
    }

    /// An org's scoring models, for the evaluator's own records (its skips).
    pub fn scoring_mut(&mut self, org: Org) -> &mut super::scoring::ScoringModels {
        &mut self.org_mut(org).scoring
    }

    /// The lead with public id `id`, if it is `org`'s.
    pub fn lead(&self, org: Org, id: &str) -> Option<&Ident> {
        self.org(org).lead_ids.get(id)
    }

    /// Applies one net change.
    pub(super) fn apply_plain(&mut self, update: Batch) {
        // Retractions first, so that a key's old value is removed before its new one lands.
        fn ordered<T>(mut v: Vec<(T, isize)>) -> Vec<(T, isize)> {
            v.sort_by_key(|(_, d)| *d);
            v
        }
        match update {
            Batch::Processed(v) => {
                // A record retracted without a replacement is a signal leaving the dataflow,
                // which only the hot window does.
                let replaced: HashSet<SignalKey> = v
                    .iter()
                    .filter(|(_, d)| *d > 0)
                    .map(|((k, _), _)| *k)
                    .collect();
                for ((key, p), d) in ordered(v) {
                    if d < 0 {
                        self.retract_processed(key, p, replaced.contains(&key));
                    } else {
                        self.insert_processed(key, p);
                    }
                }
            }
            Batch::Membership(v) => {
                for ((ident, lead), d) in ordered(v) {
                    let org = self.orgs.entry(ident.org).or_default();
                    let set = org.members.entry(lead.clone()).or_default();
                    if d < 0 {
                        set.remove(&ident);
                        if set.is_empty() {
                            org.members.remove(&lead);
                        }
                        if org.lead_of.get(&ident) == Some(&lead) {
                            org.lead_of.remove(&ident);
                        }
                    } else {
                        set.insert(ident.clone());
                        self.cold.want(ident.clone());
                        org.lead_of.insert(ident, lead);
                    }
                }
            }
            Batch::Conflicts(v) => {
                for (c, d) in v {
                    let org = self.org_mut(c.0.org);
                    if d < 0 {
                        org.conflicts.remove(&c);
                    } else {
                        org.conflicts.insert(c);
                    }
                }
            }
            Batch::Groups(v) => {
                for (((org, k), row), d) in ordered(v) {
                    let groups = &mut self.org_mut(org).groups;
                    if d < 0 {
                        if groups.get(&k) == Some(&row) {
                            groups.remove(&k);
                        }
                    } else {
                        groups.insert(k, row);
                    }
                }
            }
            Batch::Usage(v) => {
                for (((org, month, meter), n), d) in ordered(v) {
                    let usage = &mut self.org_mut(org).usage;
                    let k = (month, meter);
                    if d < 0 {
                        if usage.get(&k) == Some(&(n as i64)) {
                            usage.remove(&k);
                        }
                    } else {
                        usage.insert(k, n as i64);
                    }
                }
            }
            Batch::Leads(v) => {
                for ((lead, profile), d) in ordered(v) {
                    let org = self.org_mut(lead.org);
                    if d < 0 {
                        if org.leads.get(&lead) == Some(&profile) {
                            org.leads.remove(&lead);
                            org.lead_ids.remove(&lead_id(&lead));
                        }
                    } else {
                        org.lead_ids.insert(lead_id(&lead), lead.clone());
                        org.leads.insert(lead, profile);
                    }
                }
            }
            Batch::ProductOrgs(v) => {
                for (((org, id), po), d) in ordered(v) {
                    let orgs = &mut self.org_mut(org).product_orgs;
                    if d < 0 {
                        if orgs.get(&id) == Some(&po) {
                            orgs.remove(&id);
                        }
                    } else {
                        orgs.insert(id, po);
                    }
                }
            }
            Batch::Eligibility(v) => {
                for ((lead, e), d) in ordered(v) {
                    let scoring = &mut self.org_mut(lead.org).scoring;
                    if d < 0 {
                        scoring.retract_eligibility(&lead, &e);
                    } else {
                        scoring.insert_eligibility(lead, e);
                    }
                }
            }
            Batch::Evaluations(v) => {
                for e in v {
                    self.org_mut(e.org_id.0).scoring.insert_evaluation(e);
                }
            }
            Batch::Crm(v) => {
                for c in v {
                    match c {
                        CrmChange::Page(b) => self.org_mut(b.org_id.0).crm.apply(&b),
                        CrmChange::Forget(org, id) => self.org_mut(org).crm.forget(id),
                    }
                }
            }
        }
    }

    /// A processed record retracted; `replaced` when the same change inserts its new value.
    fn retract_processed(&mut self, key: SignalKey, p: Processed, replaced: bool) {
        let org = self.orgs.entry(key.0).or_default();
        if self.processed.remove_if(&key, |old| *old == p).is_none() {
            return;
        }
        org.tabs.remove(&(Tab::of(p.status), key.1));
        bump(&mut org.stats, p.status, -1);
        if !replaced {
            // Left the dataflow (the hot window): still pending, in the archive.
            bump(&mut org.stats, Status::Pending, 1);
            org.stats.cold += 1;
            if let Some(idents) = self.cold.landed_out(key) {
                // An identify that came while the eviction was queued.
                for i in idents.iter() {
                    if org.lead_of.contains_key(i) {
                        self.cold.want(i.clone());
                    }
                }
            }
        }
        if let Some(l) = &p.lead {
            if let Some(set) = org.lead_signals.get_mut(l) {
                set.remove(&key.1);
            }
        }
    }

    fn insert_processed(&mut self, key: SignalKey, p: Processed) {
        let org = self.orgs.entry(key.0).or_default();
        if self.cold.landed_in(&key) {
            bump(&mut org.stats, Status::Pending, -1);
            org.stats.cold -= 1;
        }
        if !org.rehydrated.contains_key(&key.1) && org.retention.retires(key.1, &p) {
            // Retired: only the archive holds it now.
            if let Some(old) = self.processed.remove(&key) {
                bump(&mut org.stats, old.status, -1);
                org.tabs.remove(&(Tab::of(old.status), key.1));
            }
            return;
        }
        bump(&mut org.stats, p.status, 1);
        if let Some(l) = &p.lead {
            org.lead_signals.entry(l.clone()).or_default().insert(key.1);
        }
        let tab = (Tab::of(p.status), key.1);
        if let Some(old) = self.processed.insert(key, p) {
            bump(&mut org.stats, old.status, -1);
            org.tabs.remove(&(Tab::of(old.status), key.1));
        }
        org.tabs.insert(tab);
    }
}
