//! Outputs of trailspark: the Parquet archive on object storage, NATS change events, the
//! read models behind the explorer API, and CRM destinations.
//!
//! Empty for now; filled by the Archive and NATS issues.
