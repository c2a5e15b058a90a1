//! The server's background services, each given the narrow handles it works with: the hot
//! window (anonymous signals out of the dataflow and back), retention, the evaluator,
//! and the CRM sync service.

pub mod crm;
pub mod evaluator;
pub mod hot;
pub mod retention;
