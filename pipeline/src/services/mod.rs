//! The server's background services, each given the narrow handles it works with: the hot
//! window (anonymous signals out of the dataflow and back), retention, the evaluator,
//! the CRM sync service and the delivery service of destinations.

pub mod crm;
pub mod destinations;
pub mod evaluator;
pub mod hot;
pub mod retention;
