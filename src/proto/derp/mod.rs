//! DERP's rules: the client session (login, pings, timeouts) and the server registry
//! (login, routing, PeerGone, mesh gating, counters).
//!
//! The same protocol is `wire::derp` (frames), `runtime::derp` (the client's shell) and
//! `services::derp` (the relay server) in the other layers.

pub mod client;
pub mod server;
