//! Servers built on the runtime. Each server is `run(listener, shutdown)` or a router
//! that `agentwire serve` mounts.

pub mod admin;
pub mod agent;
pub mod client;
pub mod control;
pub mod coord;
pub mod demo;
pub mod derp;
pub mod forward;
pub mod http;
pub mod hub;
pub mod mcp;
pub mod metrics;
pub mod oauth;
pub mod public_url;
pub mod replica;
pub mod secrets;
pub mod serve;
pub mod store;
pub mod stun;
pub mod time;
pub mod user_api;
