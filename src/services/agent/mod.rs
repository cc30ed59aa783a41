//! The workspace agent: a tailnet node serving its HTTP API on port 4 and forwarding
//! other ports to its host.
//!
//! The API's wire types live in [`crate::wire::agent_api`] and its typed client in
//! [`crate::runtime::agent_client`]; both are re-exported here.

pub mod api;
pub mod node;

pub use node::{Agent, AgentConfig};

pub use crate::runtime::agent_client as client;
pub use crate::wire::agent_api as types;
