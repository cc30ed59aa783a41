//! The coordinator protocol's rules: the client's session (replay after reconnect,
//! backoff) and the server's registry (peers, tunnels, authorization, fan-out).
//!
//! The same protocol is `wire::coord` (messages), `runtime::coord` (the client's
//! websocket shell) and `services::coord` (the server's) in the other layers.

pub mod client;
pub mod server;
