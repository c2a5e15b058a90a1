//! Outputs of trailspark: the Parquet archive on object storage (and, with later issues, NATS
//! change events and CRM destinations).

pub mod archive;
