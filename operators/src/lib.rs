//! The dataflow operators of trailspark: dedup, identity resolution, mapping rules, signal
//! groups, usage metering, product orgs, lead profiles; each a plain function from
//! collections to collections, tested against a sequential reference.
//!
//! Empty for now: the log and the canonical record they consume exist (`trailspark-core`,
//! the pipeline's log); the operators arrive with the Dataflow issue.
