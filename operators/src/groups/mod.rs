//! Signal groups: staged signals bucketed by their group key ([`key`]), each group
//! with its count, how many no rule maps, first and last seen, and a sample.

pub mod key;

pub use self::key::{group_id, group_key, interned, normalize_path, title, ContentType, GroupKey};

use std::sync::Arc;

use differential_dataflow::lattice::Lattice;
use differential_dataflow::VecCollection;
use serde::{Deserialize, Serialize};
use timely::progress::Timestamp;

use crate::footprint::MeasuredByKey;
use crate::ident::{IdKind, Org};
use crate::signal::Signal;

/// A signal group's row.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct GroupRow {
    pub count: u64,
    /// Signals of the group that no rule maps; 0 puts the group on the mapped tab.
    pub unmapped: u64,
    pub first_seen: i64,
    pub last_seen: i64,
    /// Up to [`SAMPLES`] members, best first: those with an email before those without, then
    /// the earliest. The first is the group's sample.
    pub samples: Vec<Sample>,
}

/// A sample member: (no email?, position, payload). The order makes "has an email, then
/// earliest" the least.
pub type Sample = (bool, u64, Arc<str>);

/// Samples a group keeps: enough to see a group's variety, few enough that a group row stays
/// small (groups are few, but every range of the aggregation below holds its own).
pub const SAMPLES: usize = 3;

impl GroupRow {
    /// The group's sample payload (see [`GroupRow::samples`]).
    pub fn sample(&self) -> &str {
        self.samples.first().map_or("{}", |s| &s.2)
    }
}

/// One signal as a group member: (mapped, (no email?, position, received at, payload)).
pub type Member = (bool, (bool, u64, i64, Arc<str>));

/// The best `SAMPLES` of `samples`, in order.
fn best(mut samples: Vec<Sample>) -> Vec<Sample> {
    samples.sort();
    samples.dedup_by_key(|s| s.1);
    samples.truncate(SAMPLES);
    samples
}

pub fn group_row(members: &[&Member]) -> GroupRow {
    assert!(!members.is_empty(), "groups are not empty");
    GroupRow {
        count: members.len() as u64,
        unmapped: members.iter().filter(|(mapped, _)| !mapped).count() as u64,
        first_seen: members.iter().map(|(_, m)| m.2).min().unwrap(),
        last_seen: members.iter().map(|(_, m)| m.2).max().unwrap(),
        samples: best(
            members
                .iter()
                .map(|(_, m)| (m.0, m.1, m.3.clone()))
                .collect(),
        ),
    }
}

/// Merges the rows of disjoint parts of one group into the group's row: equal to
/// `group_row` over all the members.
pub fn merge_rows(rows: &[&GroupRow]) -> GroupRow {
    assert!(!rows.is_empty(), "groups are not empty");
    GroupRow {
        count: rows.iter().map(|r| r.count).sum(),
        unmapped: rows.iter().map(|r| r.unmapped).sum(),
        first_seen: rows.iter().map(|r| r.first_seen).min().unwrap(),
        last_seen: rows.iter().map(|r| r.last_seen).max().unwrap(),
        samples: best(
            rows.iter()
                .flat_map(|r| r.samples.iter().cloned())
                .collect(),
        ),
    }
}

/// Groups are aggregated in three levels over ranges of log positions: the members of each
/// range of `2^GROUP_FINE_BITS` positions, those rows per range of `2^GROUP_COARSE_BITS`, and
/// those rows per group. Positions grow with the log, so new members land in the newest
/// range: an epoch re-reads at most the fine ranges it touches, 64 rows per coarse range and
/// one row per coarse range of the log, however large the group. Old ranges change only when
/// an old member does (an identify, a rule edit).
///
/// (Buckets by `pos % 128` did not: consecutive positions spread over every bucket, so each
/// epoch re-read every bucket, i.e. the whole group; the cost grew with the square of the log.)
const GROUP_FINE_BITS: u32 = 12;
const GROUP_COARSE_BITS: u32 = 18;

pub fn member(s: &Signal, mapped: bool) -> Membership {
    let has_email = s.ids.iter().any(|(k, _)| *k == IdKind::Email);
    (
        (s.org, s.group_key.clone()),
        (
            mapped,
            (!has_email, s.pos, s.received_at, s.payload.clone()),
        ),
    )
}

/// A signal as a member of its org's group.
pub type Membership = ((Org, Arc<GroupKey>), Member);

/// Every group's row, from its members (every signal that does not wait cold, mapped when a
/// rule matches it), aggregated over ranges of log positions (see [`GROUP_FINE_BITS`]).
pub fn signal_groups<'s, T>(
    members: VecCollection<'s, T, Membership, isize>,
) -> VecCollection<'s, T, ((Org, GroupKey), GroupRow), isize>
where
    T: Timestamp + Lattice,
{
    members
        .map(|(k, m)| ((k, m.1 .1 >> GROUP_FINE_BITS), m))
        .reduce_measured("GroupRanges", |_k, members, out| {
            let members: Vec<&Member> = members.iter().map(|(m, _)| *m).collect();
            out.push((group_row(&members), 1));
        })
        .map(|((k, fine), row)| ((k, fine >> (GROUP_COARSE_BITS - GROUP_FINE_BITS)), row))
        .reduce_measured("GroupCoarseRanges", |_k, rows, out| {
            let rows: Vec<&GroupRow> = rows.iter().map(|(r, _)| *r).collect();
            out.push((merge_rows(&rows), 1));
        })
        .map(|((k, _coarse), row)| (k, row))
        .reduce_measured("Groups", |_k, rows, out| {
            let rows: Vec<&GroupRow> = rows.iter().map(|(r, _)| *r).collect();
            out.push((merge_rows(&rows), 1));
        })
        .map(|((org, k), row)| ((org, GroupKey::clone(&k)), row))
}
