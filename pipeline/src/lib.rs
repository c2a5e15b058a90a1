//! The trailspark server: its [`topology`] builds, in order, from one typed [`config`]:
//! the durable [`log`], the dataflow [`engine`] and its read models, the archive, the
//! [`control`] plane and the [`ingest`] handle, the background [`services`], and the
//! [`http`] API. The binary's CLI (`src/cli/`) runs it and the offline tools.

pub mod backfill;
pub mod config;
pub mod control;
pub mod engine;
pub mod http;
pub mod ingest;
pub mod json_log;
pub mod log;
pub mod metrics;
pub mod services;
pub mod topology;
