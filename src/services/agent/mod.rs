//! The workspace agent: a tailnet node serving its HTTP API on port 4 and forwarding
//! other ports to its host.
//!
//! The API's wire types live in [`crate::wire::agent_api`] (re-exported as `types`); its
//! typed client is [`client`], and [`pool`] shares keep-alive connections among the calls
//! to one agent.

pub mod api;
pub mod budget;
pub mod client;
pub mod node;
pub mod pool;

pub use node::{Agent, AgentConfig};

pub use crate::wire::agent_api as types;
