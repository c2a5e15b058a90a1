//! The config side of rules: a rule's history turned into [`RuleVersion`]s, the segments
//! signals meet them in, and reprocessing cut into slices.
//!
//! **Segments.** Each signal enters [`super::match_rules`] with its segment: the start of the
//! stretch of its org's log it lies in. A stretch ends at every rule change of the org, and
//! after every [`SEGMENT_SIGNALS`] staged signals. Versions begin and end only at segment
//! starts, so all signals of a segment see the same versions in force, and the join
//! re-evaluates a segment's signals only when its set of versions changes.
//!
//! **Slices.** An edit with reprocess reaches the org's whole history. Made in one step it
//! re-evaluates every signal of the org in one epoch, and every other org's signals wait
//! behind that epoch (seconds, at 100,000 signals). So a reprocess starts like an edit
//! without one, at its own position, and [`RuleBook::advance`] then moves the new version's
//! start back over the older segments a slice at a time, retiring the versions it covers.
//! The engine sends each slice as an epoch of its own between the log's epochs. When the
//! start reaches 0 the versions are what a one-step reprocess would have made: one version
//! over all history, the older ones gone.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use super::{RuleDef, RuleVersion};
use crate::ident::Org;

/// Staged signals after which an org's segment ends even without a rule change: the most a
/// slice of a reprocess re-evaluates per segment it covers. Smaller segments mean finer
/// slices, but more rule sets to keep (one per segment) and to join on each rule change.
pub const SEGMENT_SIGNALS: u32 = 512;

/// Collection updates of rule versions.
pub type VersionChanges = Vec<(RuleVersion, isize)>;

/// A rule's history, turned into versions.
#[derive(Clone, Debug)]
pub struct RuleBook {
    rules: BTreeMap<u64, Vec<RuleVersion>>,
    /// Per org, its segments in log order; the first starts at 0.
    segments: BTreeMap<Org, Vec<Segment>>,
    /// Per org, the reprocessing versions whose start has not yet reached 0.
    reprocessing: BTreeMap<Org, Vec<Extension>>,
    /// The org the last slice served: slices go round the reprocessing orgs in turn.
    last_sliced: Option<Org>,
    segment_signals: u32,
}

#[derive(Clone, Copy, Debug)]
struct Segment {
    start: u64,
    /// Staged signals in it.
    signals: u32,
}

/// A reprocessing version on its way back to position 0.
#[derive(Clone, Copy, Debug)]
struct Extension {
    rule_id: u64,
    version: u64,
    /// The position of the edit that asked for the reprocess.
    since: u64,
    /// Where the version starts now.
    from: u64,
}

/// How a rule changes.
#[derive(Clone, Debug)]
pub enum RuleChange {
    Create {
        org: Org,
        rule_id: u64,
        created_at: i64,
        def: RuleDef,
        reprocess: bool,
    },
    Update {
        rule_id: u64,
        def: RuleDef,
        reprocess: bool,
    },
    Delete {
        rule_id: u64,
    },
    /// Every live rule of the org covers all of its signals from now on, as if each had been
    /// created with reprocess (manual processing).
    ProcessAll {
        org: Org,
    },
}

impl Default for RuleBook {
    fn default() -> Self {
        RuleBook::with_segment_signals(SEGMENT_SIGNALS)
    }
}

impl RuleBook {
    /// A book whose segments end after `n` staged signals (tests use small ones to cut
    /// reprocessing into many slices).
    pub fn with_segment_signals(n: u32) -> RuleBook {
        RuleBook {
            rules: BTreeMap::new(),
            segments: BTreeMap::new(),
            reprocessing: BTreeMap::new(),
            last_sliced: None,
            segment_signals: n.max(1),
        }
    }

    /// Applies a change made at log position `pos`; returns the collection updates. A
    /// reprocess takes effect from `pos` at once and reaches back over history through
    /// [`RuleBook::advance`].
    pub fn apply(&mut self, pos: u64, change: RuleChange) -> VersionChanges {
        let mut reprocess = Vec::new();
        let diffs = self.versions_after(pos, change, &mut reprocess);
        if let Some((v, _)) = diffs.first() {
            let segments = self.segments_of(v.org);
            if segments.last().is_some_and(|s| s.start < pos) {
                segments.push(Segment {
                    start: pos,
                    signals: 0,
                });
            }
        }
        // At position 0 there is no history to reach.
        for (org, rule_id, version) in reprocess.into_iter().filter(|_| pos > 0) {
            let exts = self.reprocessing.entry(org).or_default();
            // A newer reprocess of the rule covers all that an older one would have.
            exts.retain(|e| e.rule_id != rule_id);
            exts.push(Extension {
                rule_id,
                version,
                since: pos,
                from: pos,
            });
        }
        diffs
    }

    /// The segment of a signal of `org` staged at `pos`, in log order: counts it, and starts
    /// a new segment at it when the current one is full.
    pub fn stage(&mut self, org: Org, pos: u64) -> u64 {
        let n = self.segment_signals;
        let segments = self.segments_of(org);
        let last = segments.last().copied().expect("a first segment");
        if last.signals >= n && last.start < pos {
            segments.push(Segment {
                start: pos,
                signals: 0,
            });
        }
        let last = segments.last_mut().expect("a segment");
        last.signals += 1;
        last.start
    }

    /// The segment of a signal of `org` at log position `pos` (see the module doc): the start
    /// of the org's last segment at or before `pos`. Segments start in log order, after every
    /// signal before them, so a signal's segment never changes once it has been staged: an
    /// eviction and a later rehydration find the same.
    pub fn segment(&self, org: Org, pos: u64) -> u64 {
        let Some(segments) = self.segments.get(&org) else {
            return 0;
        };
        match segments.partition_point(|s| s.start <= pos) {
            0 => 0,
            i => segments[i - 1].start,
        }
    }

    fn segments_of(&mut self, org: Org) -> &mut Vec<Segment> {
        self.segments.entry(org).or_insert_with(|| {
            vec![Segment {
                start: 0,
                signals: 0,
            }]
        })
    }

    /// Whether a reprocess is still reaching back over history.
    pub fn reprocessing(&self) -> bool {
        !self.reprocessing.is_empty()
    }

    /// Orgs with a reprocess still reaching back over history.
    pub fn reprocessing_orgs(&self) -> usize {
        self.reprocessing.len()
    }

    /// The position of the org's earliest edit whose reprocess has not yet reached all its
    /// history, if any.
    pub fn unsettled(&self, org: Org) -> Option<u64> {
        self.reprocessing
            .get(&org)
            .and_then(|exts| exts.iter().map(|e| e.since).min())
    }

    /// One slice of reprocessing: in the next reprocessing org (in turn), moves the start of
    /// its reprocessing versions back over at least one segment and until the segments
    /// covered hold `signals` staged signals. Returns the org and the collection updates;
    /// `None` when nothing is reprocessing.
    pub fn advance(&mut self, signals: u32) -> Option<(Org, VersionChanges)> {
        let org = self
            .reprocessing
            .range((
                self.last_sliced.map_or(Bound::Unbounded, Bound::Excluded),
                Bound::Unbounded,
            ))
            .chain(self.reprocessing.iter())
            .map(|(o, _)| *o)
            .next()?;
        self.last_sliced = Some(org);
        let mut exts = self.reprocessing.remove(&org).unwrap_or_default();
        let back = exts.iter().map(|e| e.from).max().unwrap_or(0);
        let to = self.slice_start(org, back, signals);
        let mut diffs = Vec::new();
        for e in exts.iter_mut().filter(|e| e.from > to) {
            diffs.extend(self.extend(e.rule_id, e.version, to));
            e.from = to;
        }
        exts.retain(|e| e.from > 0);
        if !exts.is_empty() {
            self.reprocessing.insert(org, exts);
        }
        Some((org, diffs))
    }

    /// Every slice left, at once (a sequential reference, or a batch that nobody reads
    /// while it runs).
    pub fn settle(&mut self) -> VersionChanges {
        let mut diffs = Vec::new();
        while let Some((_, d)) = self.advance(u32::MAX) {
            diffs.extend(d);
        }
        diffs
    }

    /// Where a slice that reaches back from `back` ends: the start of the earliest segment it
    /// covers, walking back from `back` until the segments covered hold `signals` signals.
    fn slice_start(&self, org: Org, back: u64, signals: u32) -> u64 {
        let Some(segments) = self.segments.get(&org) else {
            return 0;
        };
        let mut covered = 0u32;
        for s in segments[..segments.partition_point(|s| s.start < back)]
            .iter()
            .rev()
        {
            covered = covered.saturating_add(s.signals);
            if covered >= signals {
                return s.start;
            }
        }
        0
    }

    /// Moves the start of a rule's `version` back to `to`: the older versions it now covers
    /// leave, and one that straddles `to` ends there.
    fn extend(&mut self, rule_id: u64, version: u64, to: u64) -> VersionChanges {
        let mut diffs = Vec::new();
        let Some(versions) = self.rules.get_mut(&rule_id) else {
            return diffs;
        };
        let Some(at) = versions.iter().position(|v| v.version == version) else {
            return diffs;
        };
        let mut kept = Vec::with_capacity(versions.len());
        for (i, v) in versions.drain(..).enumerate() {
            let changed = match i.cmp(&at) {
                std::cmp::Ordering::Less if v.from_pos >= to => None,
                std::cmp::Ordering::Less if v.until_pos.is_some_and(|u| u > to) => {
                    Some(RuleVersion {
                        until_pos: Some(to),
                        ..v.clone()
                    })
                }
                std::cmp::Ordering::Equal => Some(RuleVersion {
                    from_pos: to,
                    ..v.clone()
                }),
                _ => {
                    kept.push(v);
                    continue;
                }
            };
            diffs.push((v, -1));
            if let Some(c) = changed {
                diffs.push((c.clone(), 1));
                kept.push(c);
            }
        }
        *versions = kept;
        diffs
    }

    /// What [`RuleBook::apply`] changes in the versions; the reprocesses it starts go to
    /// `reprocess` as (org, rule, version).
    fn versions_after(
        &mut self,
        pos: u64,
        change: RuleChange,
        reprocess: &mut Vec<(Org, u64, u64)>,
    ) -> VersionChanges {
        let mut diffs = Vec::new();
        match change {
            RuleChange::Create {
                org,
                rule_id,
                created_at,
                def,
                reprocess: r,
            } => {
                let v = RuleVersion {
                    org,
                    rule_id,
                    version: 1,
                    created_at,
                    from_pos: pos,
                    until_pos: None,
                    def: Arc::new(def),
                };
                diffs.push((v.clone(), 1));
                self.rules.insert(rule_id, vec![v]);
                if r {
                    reprocess.push((org, rule_id, 1));
                }
            }
            RuleChange::Update {
                rule_id,
                def,
                reprocess: r,
            } => {
                if let Some(next) = self.succeed(rule_id, pos, Some(def), &mut diffs) {
                    if r {
                        reprocess.push((next.org, rule_id, next.version));
                    }
                }
            }
            RuleChange::ProcessAll { org } => {
                let live: Vec<u64> = self
                    .rules
                    .iter()
                    .filter_map(|(id, versions)| {
                        let last = versions.last()?;
                        let covers_all = versions.len() == 1 && last.from_pos == 0;
                        let on_its_way = self.reprocessing.get(&org).is_some_and(|exts| {
                            exts.iter()
                                .any(|e| e.rule_id == *id && e.version == last.version)
                        });
                        (last.org == org && last.until_pos.is_none() && !covers_all && !on_its_way)
                            .then_some(*id)
                    })
                    .collect();
                for rule_id in live {
                    if let Some(next) = self.succeed(rule_id, pos, None, &mut diffs) {
                        reprocess.push((org, rule_id, next.version));
                    }
                }
            }
            RuleChange::Delete { rule_id } => {
                if let Some(versions) = self.rules.get_mut(&rule_id) {
                    close_last(versions, pos, &mut diffs);
                }
            }
        }
        diffs
    }

    /// Closes a live rule's last version at `pos` and opens the next there, with `def` or
    /// the same definition; `None` when the rule is unknown or deleted.
    fn succeed(
        &mut self,
        rule_id: u64,
        pos: u64,
        def: Option<RuleDef>,
        diffs: &mut VersionChanges,
    ) -> Option<RuleVersion> {
        let versions = self.rules.get_mut(&rule_id)?;
        let last = close_last(versions, pos, diffs)?;
        let next = RuleVersion {
            version: last.version + 1,
            from_pos: pos,
            def: def.map(Arc::new).unwrap_or_else(|| last.def.clone()),
            ..last
        };
        diffs.push((next.clone(), 1));
        versions.push(next.clone());
        Some(next)
    }

    /// Every version currently in force somewhere.
    pub fn versions(&self) -> impl Iterator<Item = &RuleVersion> {
        self.rules.values().flatten()
    }

    /// The latest version of each rule (deleted ones included, with `until_pos`).
    pub fn latest(&self) -> impl Iterator<Item = &RuleVersion> {
        self.rules.values().filter_map(|v| v.last())
    }
}

/// Closes a live rule's last version at `pos` (an update or a deletion there); returns the
/// version as it was, or `None` when the rule is already deleted.
fn close_last(
    versions: &mut [RuleVersion],
    pos: u64,
    diffs: &mut VersionChanges,
) -> Option<RuleVersion> {
    let last = versions.last_mut().filter(|l| l.until_pos.is_none())?;
    let open = last.clone();
    last.until_pos = Some(pos);
    diffs.push((open.clone(), -1));
    diffs.push((last.clone(), 1));
    Some(open)
}

#[cfg(test)]
#[path = "book_tests.rs"]
mod tests;
