//! The workspace agent: a tailnet node serving its HTTP API on port 4.

pub mod client;
pub mod types;
