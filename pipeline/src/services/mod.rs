//! The server's background services, each given the narrow handles it works with: the hot
//! window (anonymous signals out of the dataflow and back), retention, and the evaluator.

pub mod evaluator;
pub mod hot;
pub mod retention;
