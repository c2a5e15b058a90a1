//! The protocol between the dataflow's workers and the read models.
//!
//! The workers send every change of their outputs here, each with the logical time it happens
//! at; then worker 0 sends the time up to which all changes have been sent, with the log
//! position that covers ([`Update::Applied`]). Changes are held until their time is complete,
//! then consolidated (the diffs of equal records summed) and applied as one net change.
//!
//! Applying changes one by one in arrival order is not enough: one message of a reduce's
//! output holds many times sorted by record, not by time, so a signal whose outcome went
//! a → b → a inside one epoch would land on whichever value came last in record order, and a
//! retraction that arrived after a re-insertion of the same value would remove a live record.
//! Net changes per completed position make the result independent of how the workers batch
//! and order their output.

use std::sync::Arc;

use differential_dataflow::consolidation::consolidate;
use trailspark_core::crm::CrmBatch;
use trailspark_core::scoring::Evaluation;
use trailspark_operators::eligibility::Eligibility;
use trailspark_operators::groups::{GroupKey, GroupRow};
use trailspark_operators::identity::SignalKey;
use trailspark_operators::leads::LeadProfile;
use trailspark_operators::product_orgs::ProductOrg;
use trailspark_operators::status::Processed;
use trailspark_operators::usage::Meter;
use trailspark_operators::{IdKind, Ident, Org};

/// Net changes of one output: records with their diffs.
pub type Changes<D> = Vec<(D, isize)>;

/// Changes of one output as a worker sends them: records, the logical time they happen at,
/// and their diffs.
pub type Timed<D> = Vec<(D, u64, isize)>;

pub type ProcessedRow = (SignalKey, Processed);
pub type MemberRow = (Ident, Ident);
pub type ConflictRow = (Ident, IdKind);
pub type GroupsRow = ((Org, GroupKey), GroupRow);
pub type UsageRow = ((Org, u32, Meter), isize);
pub type LeadRow = (Ident, LeadProfile);
pub type ProductOrgRow = ((Org, String), ProductOrg);
pub type EligibilityRow = (Ident, Eligibility);

/// A change of one output, as sent by a worker.
pub enum Update {
    Processed(Timed<ProcessedRow>),
    Membership(Timed<MemberRow>),
    Conflicts(Timed<ConflictRow>),
    Groups(Timed<GroupsRow>),
    Usage(Timed<UsageRow>),
    Leads(Timed<LeadRow>),
    ProductOrgs(Timed<ProductOrgRow>),
    Eligibility(Timed<EligibilityRow>),
    /// Evaluations read from the log (not a dataflow output: they only ever arrive), with
    /// the time of the epoch they were read in.
    Evaluations(Vec<(Arc<Evaluation>, u64)>),
    /// Pages of CRM records read from the log, and integrations deleted (their records
    /// leave), likewise.
    Crm(Vec<(CrmChange, u64)>),
    /// Every change up to the marker's time has been sent.
    Applied(Marker),
}

/// What an [`Update::Applied`] marker says: every change up to logical time `time` has been
/// sent; the log is applied up to `pos` and the hot window's side epochs up to the `sides`th.
pub struct Marker {
    pub time: u64,
    pub pos: u64,
    pub sides: u64,
    /// The orgs with rule changes or slices at `time`, each with the position of its
    /// earliest edit whose reprocess has not yet reached all its history (`None`: none left).
    pub reprocessing: Vec<(Org, Option<u64>)>,
    /// When the epoch's oldest log entry was committed (`None` for an epoch that holds no
    /// log entry): handed back to [`super::ReadModels::on_progress`] once applied.
    pub committed: Option<std::time::Instant>,
}

/// The net change of one output over completed positions, as the models apply it.
pub enum Batch {
    Processed(Changes<ProcessedRow>),
    Membership(Changes<MemberRow>),
    Conflicts(Changes<ConflictRow>),
    Groups(Changes<GroupsRow>),
    Usage(Changes<UsageRow>),
    Leads(Changes<LeadRow>),
    ProductOrgs(Changes<ProductOrgRow>),
    Eligibility(Changes<EligibilityRow>),
    Evaluations(Vec<Arc<Evaluation>>),
    Crm(Vec<CrmChange>),
}

/// A change of what the CRMs hold.
#[derive(Clone, Debug)]
pub enum CrmChange {
    Page(Arc<CrmBatch>),
    /// An integration deleted: `(org, integration id)`.
    Forget(Org, u64),
}

/// Changes received for positions that are not yet complete.
#[derive(Default)]
pub struct Held {
    processed: Timed<ProcessedRow>,
    membership: Timed<MemberRow>,
    conflicts: Timed<ConflictRow>,
    groups: Timed<GroupsRow>,
    usage: Timed<UsageRow>,
    leads: Timed<LeadRow>,
    product_orgs: Timed<ProductOrgRow>,
    eligibility: Timed<EligibilityRow>,
    evaluations: Vec<(Arc<Evaluation>, u64)>,
    crm: Vec<(CrmChange, u64)>,
}

/// Takes the changes at times up to `upto` out of `held`, consolidated. When all of them are
/// complete (the usual case) the records move into the result in place: an epoch's changes
/// can be large, and holding them twice would double the read thread's peak.
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
    /// Holds a worker's changes; returns an `Applied` marker instead.
    pub fn hold(&mut self, u: Update) -> Option<Marker> {
        match u {
            Update::Processed(v) => self.processed.extend(v),
            Update::Membership(v) => self.membership.extend(v),
            Update::Conflicts(v) => self.conflicts.extend(v),
            Update::Groups(v) => self.groups.extend(v),
            Update::Usage(v) => self.usage.extend(v),
            Update::Leads(v) => self.leads.extend(v),
            Update::ProductOrgs(v) => self.product_orgs.extend(v),
            Update::Eligibility(v) => self.eligibility.extend(v),
            Update::Evaluations(v) => self.evaluations.extend(v),
            Update::Crm(v) => self.crm.extend(v),
            Update::Applied(marker) => return Some(marker),
        }
        None
    }

    /// The net changes up to `upto`, in the order downstream events should follow: a lead
    /// exists before identifiers join it, and both before the signals attributed to it. An
    /// output without changes yields an empty batch, which applies as nothing.
    pub fn settle(&mut self, upto: u64) -> [Batch; 10] {
        let (now, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.evaluations)
            .into_iter()
            .partition(|(_, t)| *t <= upto);
        self.evaluations = later;
        let (crm, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.crm)
            .into_iter()
            .partition(|(_, t)| *t <= upto);
        self.crm = later;
        [
            // CRM records first: an evaluation of the same epoch may read them.
            Batch::Crm(crm.into_iter().map(|(b, _)| b).collect()),
            Batch::Leads(settle(&mut self.leads, upto)),
            Batch::Membership(settle(&mut self.membership, upto)),
            Batch::Conflicts(settle(&mut self.conflicts, upto)),
            Batch::Processed(settle(&mut self.processed, upto)),
            Batch::Groups(settle(&mut self.groups, upto)),
            Batch::Usage(settle(&mut self.usage, upto)),
            Batch::ProductOrgs(settle(&mut self.product_orgs, upto)),
            // Evaluations before the eligibility they change: both land in the same apply.
            Batch::Evaluations(now.into_iter().map(|(e, _)| e).collect()),
            Batch::Eligibility(settle(&mut self.eligibility, upto)),
        ]
    }
}
