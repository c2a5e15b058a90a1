//! Read models: what the HTTP API reads, kept current from the dataflow's output changes.
//!
//! The dataflow's workers send every change of their outputs here, each with the logical time
//! it happens at, then worker 0 sends the time up to which all changes have been sent, with
//! the log position that covers (`Applied`). The read thread holds changes until their time is complete,
//! consolidates them (sums the diffs of equal records) and applies the net change. Applying
//! changes one by one in arrival order is not enough: one message of a reduce's output holds
//! many times sorted by record, not by time, so a signal whose outcome went a → b → a inside
//! one epoch would land on whichever value came last in record order, and a retraction that
//! arrived after a re-insertion of the same value would remove a live record. Net changes per
//! completed position make the result independent of how the workers batch and order their
//! output. Readers see a consistent state: models change under one lock per completed
//! position, and a reader can wait until `applied` reaches the position of a write it made.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::RwLock;
use std::time::Duration;

use differential_dataflow::consolidation::consolidate;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::{watch, Notify};
use trailspark_operators::graph::{GroupRow, LeadProfile, Meter, Processed, Status};
use trailspark_operators::groups::GroupKey;
use trailspark_operators::identity::SignalKey;
use trailspark_operators::product_orgs::ProductOrg;
use trailspark_operators::{IdKind, Ident, Org};

use super::cold::ColdIndex;
use super::processed::ProcessedMap;

/// Net changes of one output: records with their diffs.
pub type Changes<D> = Vec<(D, isize)>;

/// Changes of one output as a worker sends them: records, the log position they happen at,
/// and their diffs.
pub type Timed<D> = Vec<(D, u64, isize)>;

type ProcessedRow = (SignalKey, Processed);
type MemberRow = (Ident, Ident);
type ConflictRow = (Ident, IdKind);
type GroupsRow = ((Org, GroupKey), GroupRow);
type UsageRow = ((Org, u32, Meter), isize);
type LeadRow = (Ident, LeadProfile);
type ProductOrgRow = ((Org, String), ProductOrg);

/// A change of one output, as sent by a worker.
pub enum Update {
    Processed(Timed<ProcessedRow>),
    Membership(Timed<MemberRow>),
    Conflicts(Timed<ConflictRow>),
    Groups(Timed<GroupsRow>),
    Usage(Timed<UsageRow>),
    Leads(Timed<LeadRow>),
    ProductOrgs(Timed<ProductOrgRow>),
    /// Every change up to logical time `time` has been sent; the log is applied up to `pos`
    /// and the hot window's side epochs up to the `sides`th.
    Applied {
        time: u64,
        pos: u64,
        sides: u64,
    },
}

/// The net change of one output over completed positions, as the models apply it.
enum Batch {
    Processed(Changes<ProcessedRow>),
    Membership(Changes<MemberRow>),
    Conflicts(Changes<ConflictRow>),
    Groups(Changes<GroupsRow>),
    Usage(Changes<UsageRow>),
    Leads(Changes<LeadRow>),
    ProductOrgs(Changes<ProductOrgRow>),
}

/// Changes received for positions that are not yet complete.
#[derive(Default)]
struct Held {
    processed: Timed<ProcessedRow>,
    membership: Timed<MemberRow>,
    conflicts: Timed<ConflictRow>,
    groups: Timed<GroupsRow>,
    usage: Timed<UsageRow>,
    leads: Timed<LeadRow>,
    product_orgs: Timed<ProductOrgRow>,
}

/// Takes the changes at positions up to `upto` out of `held`, consolidated. When all of them
/// are complete (the usual case) the records move into the result in place: an epoch's
/// changes can be large, and holding them twice would double the read thread's peak.
fn settle<D: Ord>(held: &mut Timed<D>, upto: u64) -> Changes<D> {
    let mut now: Changes<D> = if held.iter().all(|(_, t, _)| *t <= upto) {
        std::mem::take(held)
            .into_iter()
            .map(|(d, _, r)| (d, r))
            .collect()
    } else {
        let (now, later): (Timed<D>, Timed<D>) = std::mem::take(held)
            .into_iter()
            .partition(|(_, t, _)| *t <= upto);
        *held = later;
        now.into_iter().map(|(d, _, r)| (d, r)).collect()
    };
    consolidate(&mut now);
    now
}

impl Held {
    /// Holds a worker's changes; returns an `Applied` marker's time, position and side
    /// epochs instead.
    fn hold(&mut self, u: Update) -> Option<(u64, u64, u64)> {
        match u {
            Update::Processed(v) => self.processed.extend(v),
            Update::Membership(v) => self.membership.extend(v),
            Update::Conflicts(v) => self.conflicts.extend(v),
            Update::Groups(v) => self.groups.extend(v),
            Update::Usage(v) => self.usage.extend(v),
            Update::Leads(v) => self.leads.extend(v),
            Update::ProductOrgs(v) => self.product_orgs.extend(v),
            Update::Applied { time, pos, sides } => return Some((time, pos, sides)),
        }
        None
    }

    /// The net changes up to `upto`, in the order downstream events should follow: a lead
    /// exists before identifiers join it, and both before the signals attributed to it. An
    /// output without changes yields an empty batch, which applies as nothing.
    fn settle(&mut self, upto: u64) -> [Batch; 7] {
        [
            Batch::Leads(settle(&mut self.leads, upto)),
            Batch::Membership(settle(&mut self.membership, upto)),
            Batch::Conflicts(settle(&mut self.conflicts, upto)),
            Batch::Processed(settle(&mut self.processed, upto)),
            Batch::Groups(settle(&mut self.groups, upto)),
            Batch::Usage(settle(&mut self.usage, upto)),
            Batch::ProductOrgs(settle(&mut self.product_orgs, upto)),
        ]
    }
}

/// A change downstream consumers hear about, derived while the models apply the dataflow's
/// output (published by `crate::nats::events`).
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
            merged @ Change::IdentityMerged { .. } => out.push(merged),
        }
    }
    out
}

/// Explorer statistics of one org (spec 11).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
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

#[derive(Default)]
pub struct Models {
    pub processed: ProcessedMap,
    pub stats: HashMap<Org, Stats>,
    /// Lead key → its identifiers.
    pub members: HashMap<Ident, BTreeSet<Ident>>,
    /// Identifier → the key of its lead.
    pub lead_of: HashMap<Ident, Ident>,
    pub leads: HashMap<Ident, LeadProfile>,
    /// Public lead id → lead key.
    pub lead_ids: HashMap<String, Ident>,
    pub groups: HashMap<(Org, GroupKey), GroupRow>,
    pub usage: HashMap<(Org, u32, Meter), i64>,
    pub conflicts: BTreeSet<(Ident, IdKind)>,
    pub product_orgs: HashMap<(Org, String), ProductOrg>,
    /// Per lead: its signals' positions (for the lead's timeline).
    pub lead_signals: HashMap<Ident, BTreeSet<u64>>,
    /// Every decided signal by (org, explorer tab, id): the explorer's pages are range scans.
    pub tabs: BTreeSet<(Org, Tab, u64)>,
    /// Per org, the retention cutoff (spec 13): processed signals received before it and below
    /// `retired_below` (log position: archived) have left live state; changes that would
    /// bring them back (a reprocess) are not applied to the live models.
    pub retention: HashMap<Org, Retention>,
    /// Archived signals brought back into live state, until when (Unix ms).
    pub rehydrated: HashMap<SignalKey, i64>,
    /// Anonymous signals out of the dataflow (the hot window).
    pub cold: ColdIndex,
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
    fn retires(&self, pos: u64, p: &Processed) -> bool {
        p.status != Status::Pending && p.received_at < self.cutoff_ms && pos < self.below_pos
    }
}

/// The explorer tab a signal shows on (spec 11).
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

/// What a signal's mapping is, for deciding whether a `signal.mapped` event is due.
fn mapping_of(p: &Processed) -> (Status, Option<u64>, Option<Ident>) {
    (p.status, p.rule_id, p.lead.clone())
}

impl Models {
    #[cfg(test)]
    fn apply(&mut self, update: Batch) {
        self.apply_collect(update, None)
    }

    /// Applies one update; with `out`, also records the [`Change`]s it made. Changes are
    /// found by comparing the touched keys' values before and after the update, so they do
    /// not depend on how the update's records are ordered.
    fn apply_collect(&mut self, update: Batch, out: Option<&mut Vec<Change>>) {
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
                        let l = self.lead_of.get(&i).cloned();
                        (i, l)
                    })
                    .collect();
                self.apply_plain(Batch::Membership(v));
                for (ident, previous) in old {
                    let Some(lead) = self.lead_of.get(&ident) else {
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
                        let p = self.leads.get(&l).cloned();
                        (l, p)
                    })
                    .collect();
                self.apply_plain(Batch::Leads(v));
                for (lead, before) in old {
                    if let Some(now) = self.leads.get(&lead) {
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
                let old: Vec<_> = keys
                    .into_iter()
                    .map(|k| (k, self.usage.get(&k).copied().unwrap_or(0)))
                    .collect();
                self.apply_plain(Batch::Usage(v));
                for (k, before) in old {
                    let now = self.usage.get(&k).copied().unwrap_or(0);
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
            other => self.apply_plain(other),
        }
    }

    fn apply_plain(&mut self, update: Batch) {
        // Retractions first, so that a key's old value is removed before its new one lands.
        fn ordered<T>(mut v: Vec<(T, isize)>) -> Vec<(T, isize)> {
            v.sort_by_key(|(_, d)| *d);
            v
        }
        match update {
            Batch::Processed(v) => {
                // A record retracted without a replacement is a signal leaving the dataflow,
                // which only the hot window does.
                let replaced: std::collections::HashSet<SignalKey> = v
                    .iter()
                    .filter(|(_, d)| *d > 0)
                    .map(|((k, _), _)| *k)
                    .collect();
                for ((key, p), d) in ordered(v) {
                    let stats = self.stats.entry(key.0).or_default();
                    if d < 0 {
                        if self.processed.remove_if(&key, |old| *old == p).is_some() {
                            self.tabs.remove(&(key.0, Tab::of(p.status), key.1));
                            bump(stats, p.status, -1);
                            if !replaced.contains(&key) {
                                // Still pending, in the archive: counted as such.
                                bump(stats, Status::Pending, 1);
                                stats.cold += 1;
                                if let Some(idents) = self.cold.landed_out(key) {
                                    // An identify that came while the eviction was queued.
                                    for i in idents.iter() {
                                        if self.lead_of.contains_key(i) {
                                            self.cold.want(i.clone());
                                        }
                                    }
                                }
                            }
                            if let Some(l) = &p.lead {
                                if let Some(set) = self.lead_signals.get_mut(l) {
                                    set.remove(&key.1);
                                }
                            }
                        }
                    } else {
                        if self.cold.landed_in(&key) {
                            bump(stats, Status::Pending, -1);
                            stats.cold -= 1;
                        }
                        if !self.rehydrated.contains_key(&key)
                            && self
                                .retention
                                .get(&key.0)
                                .is_some_and(|r| r.retires(key.1, &p))
                        {
                            // Retired: only the archive holds it now.
                            if let Some(old) = self.processed.remove(&key) {
                                bump(stats, old.status, -1);
                                self.tabs.remove(&(key.0, Tab::of(old.status), key.1));
                            }
                            continue;
                        }
                        bump(stats, p.status, 1);
                        if let Some(l) = &p.lead {
                            self.lead_signals
                                .entry(l.clone())
                                .or_default()
                                .insert(key.1);
                        }
                        let tab = (key.0, Tab::of(p.status), key.1);
                        if let Some(old) = self.processed.insert(key, p) {
                            bump(stats, old.status, -1);
                            self.tabs.remove(&(tab.0, Tab::of(old.status), tab.2));
                        }
                        self.tabs.insert(tab);
                    }
                }
            }
            Batch::Membership(v) => {
                for ((ident, lead), d) in ordered(v) {
                    let set = self.members.entry(lead.clone()).or_default();
                    if d < 0 {
                        set.remove(&ident);
                        if set.is_empty() {
                            self.members.remove(&lead);
                        }
                        if self.lead_of.get(&ident) == Some(&lead) {
                            self.lead_of.remove(&ident);
                        }
                    } else {
                        set.insert(ident.clone());
                        self.cold.want(ident.clone());
                        self.lead_of.insert(ident, lead);
                    }
                }
            }
            Batch::Conflicts(v) => {
                for (c, d) in v {
                    if d < 0 {
                        self.conflicts.remove(&c);
                    } else {
                        self.conflicts.insert(c);
                    }
                }
            }
            Batch::Groups(v) => {
                for ((k, row), d) in ordered(v) {
                    if d < 0 {
                        if self.groups.get(&k) == Some(&row) {
                            self.groups.remove(&k);
                        }
                    } else {
                        self.groups.insert(k, row);
                    }
                }
            }
            Batch::Usage(v) => {
                for ((k, n), d) in ordered(v) {
                    if d < 0 {
                        if self.usage.get(&k) == Some(&(n as i64)) {
                            self.usage.remove(&k);
                        }
                    } else {
                        self.usage.insert(k, n as i64);
                    }
                }
            }
            Batch::Leads(v) => {
                for ((lead, profile), d) in ordered(v) {
                    if d < 0 {
                        if self.leads.get(&lead) == Some(&profile) {
                            self.leads.remove(&lead);
                            self.lead_ids.remove(&lead_id(&lead));
                        }
                    } else {
                        self.lead_ids.insert(lead_id(&lead), lead.clone());
                        self.leads.insert(lead, profile);
                    }
                }
            }
            Batch::ProductOrgs(v) => {
                for ((k, po), d) in ordered(v) {
                    if d < 0 {
                        if self.product_orgs.get(&k) == Some(&po) {
                            self.product_orgs.remove(&k);
                        }
                    } else {
                        self.product_orgs.insert(k, po);
                    }
                }
            }
        }
    }

    /// Moves an org's retention cutoff forward and retires what it now covers from the live
    /// models (the processed map, the explorer's tabs and statistics). Lead records, their
    /// profiles, usage and the lead timeline's index stay (spec 13: leads, and the signals'
    /// contributions, are preserved). Returns how many signals were retired.
    pub fn retire(&mut self, org: Org, r: Retention) -> usize {
        let cur = self.retention.entry(org).or_default();
        cur.cutoff_ms = cur.cutoff_ms.max(r.cutoff_ms);
        cur.below_pos = cur.below_pos.max(r.below_pos);
        let r = *cur;
        self.rehydrated
            .retain(|(o, _), until| *o != org || *until > r.now_ms);
        let mut gone = Vec::new();
        for tab in [Tab::Processed, Tab::Failed] {
            for &(_, _, id) in self.tabs.range((org, tab, 0)..(org, tab, r.below_pos)) {
                if self.rehydrated.contains_key(&(org, id)) {
                    continue;
                }
                if let Some(p) = self.processed.get(&(org, id)) {
                    if r.retires(id, &p) {
                        gone.push((id, tab, p.status));
                    }
                }
            }
        }
        let stats = self.stats.entry(org).or_default();
        for (id, tab, status) in &gone {
            self.processed.remove(&(org, *id));
            self.tabs.remove(&(org, *tab, *id));
            bump(stats, *status, -1);
        }
        gone.len()
    }

    /// Brings archived signals back into live state until `until` (Unix ms); signals already
    /// live are left alone. Returns how many came back.
    pub fn rehydrate(&mut self, org: Org, signals: Vec<(u64, Processed)>, until: i64) -> usize {
        let mut n = 0;
        for (id, p) in signals {
            let key = (org, id);
            // A signal the hot window holds cold comes back with its identify, through the
            // dataflow; it is counted as pending meanwhile.
            if self.processed.contains_key(&key) || self.cold.busy(&key) {
                continue;
            }
            bump(self.stats.entry(org).or_default(), p.status, 1);
            self.tabs.insert((org, Tab::of(p.status), id));
            self.processed.insert(key, p);
            self.rehydrated.insert(key, until);
            n += 1;
        }
        n
    }

    /// Groups of an org on the `mapped` or unmapped tab, sorted by count descending, then
    /// event type ascending (spec 8).
    pub fn groups_of(&self, org: Org, mapped: bool) -> Vec<(&GroupKey, &GroupRow)> {
        let mut v: Vec<_> = self
            .groups
            .iter()
            .filter(|((o, _), row)| *o == org && (row.unmapped == 0) == mapped)
            .map(|((_, k), row)| (k, row))
            .collect();
        v.sort_by(|a, b| {
            b.1.count
                .cmp(&a.1.count)
                .then_with(|| a.0.event.cmp(&b.0.event))
                .then_with(|| a.0.cmp(b.0))
        });
        v
    }

    /// An org's usage in a month (`YYYYMM`).
    pub fn usage_of(&self, org: Org, month: u32) -> BTreeMap<Meter, i64> {
        self.usage
            .iter()
            .filter(|((o, m, _), _)| *o == org && *m == month)
            .map(|((_, _, meter), n)| (*meter, *n))
            .collect()
    }
}

/// Where the models send their [`Change`]s, tagged with the log position they reflect.
pub type ChangeSink = tokio::sync::mpsc::Sender<(u64, Vec<Change>)>;

/// The read models and their applied position.
pub struct ReadModels {
    models: RwLock<Models>,
    /// Woken when cold signals are wanted back (see [`crate::hot`]).
    pub wanted: Notify,
    applied: watch::Sender<u64>,
    changes: std::sync::OnceLock<ChangeSink>,
    /// The log's head when the server opened it: the models are ready once past it.
    started_at_head: std::sync::atomic::AtomicU64,
}

impl Default for ReadModels {
    fn default() -> Self {
        ReadModels {
            models: RwLock::new(Models::default()),
            wanted: Notify::new(),
            applied: watch::channel(0).0,
            changes: std::sync::OnceLock::new(),
            started_at_head: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

impl ReadModels {
    /// Makes the models send their changes to `sink`, from the next update on. The send
    /// blocks when the sink is full: a stalled consumer of changes (NATS down) holds the
    /// dataflow back rather than dropping changes or growing memory.
    pub fn attach_changes(&self, sink: ChangeSink) {
        let _ = self.changes.set(sink);
    }

    /// See [`Models::rehydrate`].
    pub fn rehydrate(&self, org: Org, signals: Vec<(u64, Processed)>, until: i64) -> usize {
        self.models.write().unwrap().rehydrate(org, signals, until)
    }

    /// See [`Models::retire`].
    pub fn retire(&self, org: Org, r: Retention) -> usize {
        self.models.write().unwrap().retire(org, r)
    }

    /// Applies changes from the workers until the channel closes: holds each worker's
    /// changes until an `Applied` marker says their position is complete, then applies the
    /// net change (see the module's doc).
    pub fn run(&self, rx: std::sync::mpsc::Receiver<Update>) {
        let mut held = Held::default();
        let mut pending: Vec<Change> = Vec::new();
        let mut ready: Vec<(u64, Vec<Change>)> = Vec::new();
        while let Ok(first) = rx.recv() {
            let mut settled: Vec<(u64, [Batch; 7])> = Vec::new();
            let mut sides = 0;
            let mut next = Some(first);
            while let Some(u) = next {
                if let Some((time, pos, s)) = held.hold(u) {
                    settled.push((pos, held.settle(time)));
                    sides = s;
                }
                next = rx.try_recv().ok();
            }
            let Some(&(applied, _)) = settled.last() else {
                continue;
            };
            let sink = self.changes.get();
            let mut m = self.models.write().unwrap();
            for (p, batches) in settled {
                for b in batches {
                    m.apply_collect(b, sink.is_some().then_some(&mut pending));
                }
                if !pending.is_empty() {
                    ready.push((p, coalesce(std::mem::take(&mut pending))));
                }
            }
            m.cold.landed(sides);
            let wanted = m.cold.has_wanted();
            drop(m);
            if wanted {
                self.wanted.notify_one();
            }
            if let Some(sink) = sink {
                for batch in ready.drain(..) {
                    if sink.blocking_send(batch).is_err() {
                        tracing::warn!("The change-event publisher has stopped.");
                    }
                }
            }
            self.applied.send_if_modified(|cur| {
                let changed = applied > *cur;
                *cur = (*cur).max(applied);
                changed
            });
        }
    }

    pub fn read(&self) -> std::sync::RwLockReadGuard<'_, Models> {
        self.models.read().unwrap()
    }

    /// The models for a change made outside the dataflow's updates (the hot window's moves,
    /// which must happen under the lock that orders them).
    pub fn write(&self) -> std::sync::RwLockWriteGuard<'_, Models> {
        self.models.write().unwrap()
    }

    /// Records the log's head at open, which the replay must reach before readiness.
    pub fn set_started_at_head(&self, head: u64) {
        self.started_at_head
            .store(head, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn started_at_head(&self) -> u64 {
        self.started_at_head
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The log position the models reflect.
    pub fn applied(&self) -> u64 {
        *self.applied.borrow()
    }

    /// Waits until the models reflect log position `pos`, or `timeout` passes; returns whether
    /// they do.
    pub async fn wait_for(&self, pos: u64, timeout: Duration) -> bool {
        let mut rx = self.applied.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|p| *p >= pos))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn processed(status: Status, received_at: i64) -> Processed {
        Processed {
            status,
            error: None,
            rule_id: None,
            rule_name: None,
            signal_type: None,
            high_intent: false,
            lead: None,
            source: "generic".into(),
            event_type: "e".into(),
            received_at,
            event_at: received_at,
        }
    }

    /// The explorer's index and statistics always agree with the processed map, through any
    /// mix of dataflow changes (outcome changes arrive as a retraction and an insertion),
    /// retention passes and rehydrations; and nothing retired comes back except by
    /// rehydration.
    #[test]
    fn tabs_and_stats_follow_processed_under_retention_and_rehydration() {
        let statuses = [
            Status::Pending,
            Status::Completed,
            Status::Failed,
            Status::Skipped,
        ];
        let mut x: u64 = 0x1234_5678_9abc_def1;
        let mut rnd = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        for _run in 0..50 {
            let mut m = Models::default();
            let mut retired: BTreeSet<SignalKey> = BTreeSet::new();
            for step in 0..300u64 {
                // A log position holds one signal, of one org.
                let id = rnd(40);
                let org = 1 + id % 2;
                let key = (org, id);
                match rnd(10) {
                    0 => {
                        let r = Retention {
                            now_ms: step as i64,
                            cutoff_ms: step as i64 - 50,
                            below_pos: rnd(40),
                        };
                        let before: BTreeSet<SignalKey> = m.processed.keys().collect();
                        m.retire(org, r);
                        let after: BTreeSet<SignalKey> = m.processed.keys().collect();
                        retired.extend(before.difference(&after));
                    }
                    1 => {
                        let p = processed(statuses[rnd(3) as usize + 1], rnd(300) as i64);
                        let n = m.rehydrate(org, vec![(id, p)], step as i64 + 20);
                        if n == 1 {
                            retired.remove(&key);
                        }
                    }
                    _ => {
                        // A change of outcome, as differential sends it.
                        let p = processed(statuses[rnd(4) as usize], step as i64);
                        let mut v = Vec::new();
                        if let Some(old) = m.processed.get(&key) {
                            v.push(((key, old.clone()), -1));
                        }
                        v.push(((key, p), 1));
                        m.apply(Batch::Processed(v));
                    }
                }
                // The index and the statistics, recomputed from the processed map.
                let tabs: BTreeSet<(Org, Tab, u64)> = m
                    .processed
                    .iter()
                    .map(|((o, i), p)| (o, Tab::of(p.status), i))
                    .collect();
                assert_eq!(m.tabs, tabs);
                for o in [1, 2] {
                    let mut want = Stats::default();
                    for ((po, _), p) in m.processed.iter() {
                        if po == o {
                            bump(&mut want, p.status, 1);
                        }
                    }
                    assert_eq!(m.stats.get(&o).copied().unwrap_or_default(), want);
                }
                for k in &retired {
                    if let Some(p) = m.processed.get(k) {
                        assert!(
                            m.rehydrated.contains_key(k) || !m.retention[&k.0].retires(k.1, &p),
                            "{k:?} came back"
                        );
                    }
                }
            }
        }
    }

    /// However the workers split and order their output (changes of an epoch in any order,
    /// in messages of any size, some of the next epoch's ahead of the marker), the models end
    /// on the sequential result: each signal's last outcome, statistics that count each signal
    /// once, and the leads that exist at the end. Outcomes go back and forth between a few
    /// values inside one epoch (a → b → a), the case that arrival-order application got wrong.
    #[test]
    fn models_follow_the_net_change_whatever_the_arrival_order() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut rnd = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let statuses = [Status::Pending, Status::Completed, Status::Failed];
        for _run in 0..200 {
            // Each signal's outcome and each lead's profile over time, as the dataflow would
            // change them: a retraction of the old value and an insertion of the new one.
            let mut outcome: BTreeMap<SignalKey, Processed> = BTreeMap::new();
            let mut lead: BTreeMap<Ident, LeadProfile> = BTreeMap::new();
            let mut epochs: Vec<(u64, Vec<Update>)> = Vec::new();
            let mut t = 0u64;
            for _epoch in 0..1 + rnd(6) {
                let mut sent: Vec<Update> = Vec::new();
                for _ in 0..rnd(30) {
                    t += 1 + rnd(3);
                    // A log position holds one signal, of one org.
                    let pos = rnd(12);
                    let key = (1 + pos % 2, pos);
                    let new = processed(statuses[rnd(3) as usize], rnd(2) as i64);
                    let mut v = Vec::new();
                    if let Some(old) = outcome.insert(key, new.clone()) {
                        v.push(((key, old), t, -1));
                    }
                    v.push(((key, new), t, 1));
                    sent.push(Update::Processed(v));
                    let id = Ident::new(1, IdKind::Email, format!("v{}@x.example", rnd(4)));
                    let mut v = Vec::new();
                    let old = lead.remove(&id);
                    if let Some(old) = &old {
                        v.push(((id.clone(), old.clone()), t, -1));
                    }
                    if rnd(3) > 0 {
                        let p = LeadProfile {
                            signals: rnd(3),
                            ..Default::default()
                        };
                        lead.insert(id.clone(), p.clone());
                        v.push(((id, p), t, 1));
                    }
                    if !v.is_empty() {
                        sent.push(Update::Leads(v));
                    }
                }
                epochs.push((t, sent));
            }
            // Split each worker message into single records and shuffle each epoch's.
            let mut shuffled: Vec<Vec<Update>> = Vec::new();
            for (_, sent) in epochs.iter_mut() {
                let mut single: Vec<Update> = Vec::new();
                for u in sent.drain(..) {
                    match u {
                        Update::Processed(v) => {
                            single.extend(v.into_iter().map(|r| Update::Processed(vec![r])))
                        }
                        Update::Leads(v) => {
                            single.extend(v.into_iter().map(|r| Update::Leads(vec![r])))
                        }
                        _ => unreachable!(),
                    }
                }
                for j in (1..single.len()).rev() {
                    single.swap(j, rnd(j as u64 + 1) as usize);
                }
                shuffled.push(single);
            }
            // Each epoch's records, then some of the next epoch's (a worker may run ahead of
            // the marker), then the marker.
            let mut messages: Vec<Update> = Vec::new();
            for i in 0..shuffled.len() {
                let mine = std::mem::take(&mut shuffled[i]);
                messages.extend(mine);
                if let Some(next) = shuffled.get_mut(i + 1) {
                    let early = rnd(next.len() as u64 + 1) as usize;
                    messages.extend(next.drain(..early));
                }
                messages.push(Update::Applied {
                    time: epochs[i].0,
                    pos: epochs[i].0,
                    sides: 0,
                });
            }
            let read = ReadModels::default();
            let (tx, rx) = std::sync::mpsc::channel();
            for m in messages {
                tx.send(m).unwrap();
            }
            drop(tx);
            read.run(rx);
            let m = read.read();
            let got: BTreeMap<SignalKey, Processed> = m.processed.iter().collect();
            assert_eq!(got, outcome);
            for o in [1, 2] {
                let mut want = Stats::default();
                for ((po, _), p) in &outcome {
                    if *po == o {
                        bump(&mut want, p.status, 1);
                    }
                }
                assert_eq!(m.stats.get(&o).copied().unwrap_or_default(), want);
            }
            let got: BTreeMap<Ident, LeadProfile> = m
                .leads
                .iter()
                .map(|(k, p)| (k.clone(), p.clone()))
                .collect();
            assert_eq!(got, lead);
            assert_eq!(read.applied(), epochs.last().map(|e| e.0).unwrap_or(0));
        }
    }
}
