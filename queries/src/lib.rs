//! Queries over trailspark's data: a DataFusion catalog over the Parquet archive and the live
//! read models, org-scoped SQL sessions, and the explorer API handlers.
//!
//! Empty for now; filled by the Archive and SQL issue.
