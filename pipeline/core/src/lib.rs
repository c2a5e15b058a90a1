//! Shared types of trailspark.
//!
//! Everything that more than one crate must agree on lives here: the canonical signal record
//! ([`signal::SignalRecord`]), how a raw payload becomes one ([`normalize`]), how retries are
//! recognised ([`dedup`]), dot-path access
//! into payloads ([`path`]), tenancy and its config events ([`tenancy`]), the entries of the
//! durable log and their byte encoding ([`log`]), secret handling ([`secret`]), plans
//! ([`plan`]), lead scoring's settings, rules, models and evaluations ([`scoring`]) and CRM
//! integrations with the records they pull ([`crm`]).
//!
//! The crate is deliberately free of I/O and async: it is pure data and pure functions, so the
//! HTTP edge, the log, the dataflow and the tests all share one definition of each rule.

pub mod admission;
pub mod crm;
pub mod dedup;
pub mod fuzz_input;
pub mod log;
pub mod normalize;
pub mod path;
pub mod plan;
pub mod product_org;
pub mod rules;
pub mod scoring;
pub mod secret;
pub mod signal;
pub mod subjects;
pub mod tenancy;
pub mod time;

pub use log::{LogEntry, ProductOrgRecord};
pub use signal::{Identifiers, SignalRecord};
pub use tenancy::{ApiKey, ConfigEvent, EndpointType, OrgId, Plan, Registry, Role};
