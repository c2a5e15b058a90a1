//! Usage meters, counted per org and calendar month.
//!
//! Raw and staged signals are counted where the log is read (see [`crate::graph`]); the
//! dataflow adds mapped signals and active leads, and keeps every meter's count
//! incrementally.

use differential_dataflow::lattice::Lattice;
use differential_dataflow::VecCollection;
use serde::{Deserialize, Serialize};
use timely::order::TotalOrder;
use timely::progress::Timestamp;

use crate::footprint::Measured;
use crate::ident::Org;
use crate::identity::SignalKey;
use crate::nodes::Node;
use crate::signal::Signal;
use crate::status::{Processed, Status};

/// Usage meters, counted per org and calendar month.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Meter {
    /// Every signal on the log (retries the edge recognised never reach it).
    RawSignals,
    /// Unique staged signals.
    StagedSignals,
    /// Completed (mapped) signals.
    MappedSignals,
    /// Leads with at least one signal in the month.
    Leads,
}

/// Every meter's count per org and month: the counts made where the log is read, the
/// completed signals, and the distinct leads active in the month.
pub fn usage<'s, T>(
    counted: VecCollection<'s, T, (Org, u32, Meter), isize>,
    processed: VecCollection<'s, T, (SignalKey, Processed), isize>,
    active: VecCollection<'s, T, (Org, u32, Node), isize>,
) -> VecCollection<'s, T, ((Org, u32, Meter), isize), isize>
where
    T: Timestamp + Lattice + TotalOrder,
{
    let month = Signal::month_of;
    counted
        .concat(
            processed
                .filter(|(_, p)| p.status == Status::Completed)
                .map(move |((org, _), p)| (org, month(p.received_at), Meter::MappedSignals)),
        )
        .concat(
            active
                .distinct_measured("ActiveLeads")
                .map(|(org, m, _)| (org, m, Meter::Leads)),
        )
        // `count_total` keeps counts incrementally (times are totally ordered); `count` would
        // re-read every signal of the org and month on each change.
        .count_total_measured("Usage")
}
