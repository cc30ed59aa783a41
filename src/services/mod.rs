//! Servers built on the runtime. Each server is `run(listener, shutdown)` or a router
//! that `agentwire serve` mounts.

pub mod agent;
pub mod control;
pub mod coordinator;
pub mod derp_server;
pub mod forward;
pub mod http;
pub mod hub;
pub mod mcp;
pub mod metrics;
pub mod presence;
pub mod public_url;
pub mod serve;
pub mod stun;
