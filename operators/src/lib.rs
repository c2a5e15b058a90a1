//! The dataflow operators of trailspark, each a plain function from differential collections
//! to differential collections (DESIGN.md; STYLE.md rule 3), and each with a sequential
//! reference implementation that the tests hold it to on random inputs, at 1 and 2 workers
//! and in shuffled arrival orders.
//!
//! - [`dedup`]: unique staged signals (a first-seen set the engine keeps as it reads the log).
//! - [`identity`]: identity resolution as connected components, with guard rails, leads and
//!   rehydration of anonymous signals.
//! - [`rules`]: mapping rules as versioned data joined with staged signals.
//! - [`groups`]: the signal-group key and title.
//! - [`product_orgs`]: product-org state, latest value per field by event time.
//! - [`intern`]: shared copies of repeated values (source and event names, group keys).
//! - [`nodes`]: identifiers as numbers inside the dataflow.
//! - [`graph`]: all of it assembled: statuses, lead profiles, usage, signal groups.

pub mod dedup;
pub mod graph;
pub mod groups;
pub mod identity;
pub mod intern;
pub mod nodes;
pub mod product_orgs;
pub mod rules;
pub mod types;

#[cfg(test)]
pub(crate) mod testing;

pub use types::{IdKind, Ident, Org, Signal, Time};
