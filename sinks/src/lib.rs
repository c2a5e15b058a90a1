//! Where the log and the dataflow's output go: the Parquet [`archive`] (from the log), the
//! [`read_models`] the API and SQL read (from the dataflow), and the change events published
//! to NATS (from the read models); and the [`destinations`] that write evaluations back to
//! CRMs.

pub mod archive;
pub mod destinations;
pub mod nats_events;
pub mod read_models;
