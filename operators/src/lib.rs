//! The dataflow operators of trailspark, each a plain function from differential collections
//! to differential collections (docs/ARCHITECTURE.md), and each with a sequential
//! reference implementation that the tests hold it to on random inputs, at 1 and 2 workers
//! and in shuffled arrival orders.
//!
//! - [`identity`]: identity resolution as connected components, with guard rails, leads and
//!   rehydration of anonymous signals.
//! - [`rules`]: mapping rules as versioned data joined with staged signals.
//! - [`status`]: a signal's processing status, decided from its rule and its lead.
//! - [`leads`]: lead profiles from the signals attributed to each lead.
//! - [`usage`]: the usage meters per org and month.
//! - [`groups`]: signal groups, their key and title.
//! - [`product_orgs`]: product-org state, latest value per field by event time.
//! - [`intern`]: shared copies of repeated values (source and event names, group keys).
//! - [`nodes`]: identifiers as numbers inside the dataflow.
//! - [`eligibility`]: which leads an evaluation may run for, and why the others wait.
//! - [`scorer`]: the deterministic, explainable scorer of an evaluation.
//! - [`graph`]: all of it assembled, and its sequential reference.
//!
//! Deduplication is not an operator: the engine stages the first copy of each key as it reads
//! the log (`trailspark_core::dedup`).

pub mod eligibility;
pub mod footprint;
pub mod graph;
pub mod groups;
pub mod ident;
pub mod identity;
pub mod intern;
pub mod leads;
pub mod nodes;
pub mod product_orgs;
pub mod rules;
pub mod scorer;
pub mod signal;
pub mod status;
pub mod usage;

#[cfg(test)]
pub(crate) mod testing;

pub use ident::{IdKind, Ident, Org, Time};
pub use signal::{Signal, SignalFields};
