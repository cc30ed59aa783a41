//! The workspace agent: a tailnet node serving its HTTP API on port 4 and forwarding
//! other ports to its host.
//!
//! The API's wire types live in [`crate::wire::agent_api`] (re-exported as `types`); its
//! typed client is [`client`], [`pool`] shares keep-alive connections among the calls
//! to one agent, and [`tenant`] bounds one user's large reads across all its agents.

pub mod api;
pub mod budget;
pub mod client;
pub mod node;
pub mod pool;
pub mod tenant;

pub use node::{Agent, AgentConfig};

pub use crate::wire::agent_api as types;
