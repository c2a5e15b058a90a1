//! The trailspark server: the durable log ([`log`]), server state and config operations
//! ([`state`]), the admin API ([`admin`]), the HTTP server ([`server`]) and start-up
//! ([`open`]), what the archive and SQL need from them ([`sql`]), and NATS as a source and a change-event sink
//! ([`nats`]). The binary in `main.rs` is the CLI over these.

pub mod admin;
pub mod api;
pub mod backfill;
pub mod engine;
pub mod explorer;
pub mod hot;
pub mod listener;
pub mod log;
pub mod nats;
pub mod open;
pub mod retention;
pub mod server;
pub mod sql;
pub mod state;
