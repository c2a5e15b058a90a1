//! The ingestion edges of trailspark: webhook endpoints E1–E5, the Segment HTTP
//! tracking API (with what analytics.js and the first-party snippet need in a browser, and CORS), payload parsing with size and depth bounds, API-key authentication, and
//! the CRM connectors that read Salesforce, HubSpot and Airtable ([`crm`]).
//!
//! The crate knows nothing of how signals become durable: it hands normalized log entries to
//! an [`Ingest`] implementation (the pipeline's log) and answers once that says they are
//! durable.

pub mod auth;
pub mod backfill;
pub mod body;
pub mod browser;
pub mod cors;
pub mod crm;
pub mod error;
pub mod http;
pub mod ingest;
pub mod items;
pub mod nats;
pub mod parse;
pub mod routes;
pub mod segment;

pub use body::BodyStream;
pub use error::IngestError;
pub use http::{Reply, Request};
pub use ingest::{Ingest, Receipt, SubmitFuture};
pub use routes::route;
