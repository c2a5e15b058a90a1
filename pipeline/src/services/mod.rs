//! The server's background services, each given the narrow handles it works with: the hot
//! window (anonymous signals out of the dataflow and back) and retention.

pub mod hot;
pub mod retention;
